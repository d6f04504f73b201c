//! Backup verification throughput: `stream::scan` over a generated `.tar.gz` file against
//! command-line tools on the same file in the same run. The goal compares with the slower
//! of `sha256sum` (what hashing alone costs) and `igzip -t` (ISA-L's inflater with the
//! CRC check: what inflating alone costs); GNU `gzip -t` and `sha256sum f && tar tzf f`
//! are context (what a shell script would do).

use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Row, mib, peak_rss_kib, reset_peak_rss, row};

/// Deterministic, partly compressible bytes (log-like lines with a counter),
/// so gzip does real work both ways.
struct Generated {
    left: u64,
    counter: u64,
    line: Vec<u8>,
    pos: usize,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        if self.pos == self.line.len() {
            self.counter = self.counter.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.line = format!("{:016x} chroma vector shard {} upsert ok\n", self.counter, self.counter >> 52).into_bytes();
            self.pos = 0;
        }
        let n = buf.len().min(self.line.len() - self.pos).min(self.left as usize);
        buf[..n].copy_from_slice(&self.line[self.pos..self.pos + n]);
        self.pos += n;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes a `.tar.gz` of about `bytes` uncompressed bytes in 64 MiB entries.
fn write_archive(path: &Path, bytes: u64) -> Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    // gzip's default level, as `tar czf` writes backups (the compressed size, which
    // sha256sum reads, then does not depend on flate2's backend).
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let entry = 64u64 << 20;
    let mut done = 0;
    let mut i = 0;
    while done < bytes {
        let size = entry.min(bytes - done);
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, format!("chroma/part-{i:04}.log"), Generated { left: size, counter: i, line: vec![], pos: 0 })?;
        done += size;
        i += 1;
    }
    tar.into_inner()?.finish()?.flush()?;
    Ok(())
}

pub(super) fn verification_rows(dir: &Path, bytes: u64, rows: &mut Vec<Row>) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("bench-{}.tar.gz", std::process::id()));
    write_archive(&path, bytes)?;
    let result = measure_verification(&path, bytes, rows);
    let _ = std::fs::remove_file(&path);
    result
}

/// A command-line reference run on the archive.
struct Tool {
    what: &'static str,
    program: &'static str,
    args: Vec<String>,
    /// Best time so far; `None` until it ran.
    best: Option<Duration>,
    /// Why it has no figure (not installed).
    skipped: Option<String>,
}

impl Tool {
    fn new(what: &'static str, program: &'static str, args: &[&str], path: &Path) -> Tool {
        let args = args.iter().map(|a| a.replace("{}", &path.to_string_lossy())).collect();
        Tool { what, program, args, best: None, skipped: None }
    }

    /// Runs it once (stdout captured: `sha256sum` prints the digest); `None` when skipped.
    fn run(&mut self) -> Result<Option<Vec<u8>>> {
        if self.skipped.is_some() {
            return Ok(None);
        }
        let start = Instant::now();
        let out = match Command::new(self.program).args(&self.args).stdin(Stdio::null()).output() {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.skipped = Some(match self.program {
                    "igzip" => "skipped: igzip not installed (apt-get install isal)".into(),
                    p => format!("skipped: {p} not installed"),
                });
                return Ok(None);
            }
            Err(e) => return Err(e).with_context(|| format!("running {}", self.what)),
        };
        let took = start.elapsed();
        if !out.status.success() {
            bail!("{} failed ({}): {}", self.what, out.status, String::from_utf8_lossy(&out.stderr));
        }
        self.best = Some(self.best.map_or(took, |b| b.min(took)));
        Ok(Some(out.stdout))
    }
}

fn measure_verification(path: &Path, bytes: u64, rows: &mut Vec<Row>) -> Result<()> {
    let size = std::fs::metadata(path)?.len();
    let mut sha256sum = Tool::new("sha256sum", "sha256sum", &["{}"], path);
    let mut igzip = Tool::new("igzip -t", "igzip", &["-t", "{}"], path);
    let mut context = [
        Tool::new("gzip -t", "gzip", &["-t", "{}"], path),
        // What a shell script checking a backup would run: two passes over the file.
        Tool::new("sha256sum f && tar tzf f", "sh", &["-c", "sha256sum \"$0\" >/dev/null && tar tzf \"$0\" >/dev/null", "{}"], path),
    ];
    // Everything reads the file the generator just wrote (page cache warm for all);
    // best of two rounds each, alternating, to damp noise from shared cores.
    let mut best_scan = Duration::MAX;
    let mut scan_rss = None;
    for _ in 0..2 {
        let out = sha256sum.run()?.context("sha256sum is needed to check scan's digest")?;
        let want = String::from_utf8_lossy(&out).split_whitespace().next().unwrap_or_default().to_string();
        igzip.run()?;
        for tool in &mut context {
            tool.run()?;
        }

        reset_peak_rss();
        let start = Instant::now();
        let file = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
        let facts = kbha_replication_verifier::stream::scan(file, kbha_replication_verifier::stream::Layout::TarGz, false)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        best_scan = best_scan.min(start.elapsed());
        scan_rss = scan_rss.max(peak_rss_kib());
        if facts.sha256 != want {
            bail!("scan and sha256sum disagree: {} vs {want}", facts.sha256);
        }
        if !matches!(facts.archive, kbha_core::ArchiveCheck::Valid { .. }) {
            bail!("scan finds the generated archive invalid: {:?}", facts.archive);
        }
    }
    let rate = |d: Duration| format!("{:.0} MiB/s", size as f64 / (1 << 20) as f64 / d.as_secs_f64());
    let share = |d: Duration| format!("{:.0} %", 100.0 * d.as_secs_f64() / best_scan.as_secs_f64());
    // The goal's reference: the slower of the two (the longer time); sha256sum alone
    // when igzip is not installed, and the row says so.
    let (reference, base) = match (sha256sum.best, igzip.best) {
        (Some(s), Some(i)) if i > s => (i, format!("slower of sha256sum {} and igzip -t {}: igzip -t", rate(s), rate(i))),
        (Some(s), Some(i)) => (s, format!("slower of sha256sum {} and igzip -t {}: sha256sum", rate(s), rate(i))),
        (Some(s), None) => (s, format!("sha256sum {} (igzip -t skipped: not installed, apt-get install isal)", rate(s))),
        (None, _) => bail!("sha256sum did not run"),
    };
    rows.push(row(
        &format!(
            "verification throughput ({:.0} MiB gz of {:.0} MiB tar: sha256 + gunzip + tar walk)",
            size as f64 / (1 << 20) as f64,
            bytes as f64 / (1 << 20) as f64
        ),
        rate(best_scan),
        base,
        share(reference),
        ">= 90 % of the slower of sha256sum and igzip -t",
    ));
    for tool in [&sha256sum, &igzip].into_iter().chain(&context) {
        let (value, ratio) = match (tool.best, &tool.skipped) {
            (Some(d), _) => (rate(d), share(d)),
            (None, Some(why)) => (why.clone(), "-".into()),
            (None, None) => ("did not run".into(), "-".into()),
        };
        rows.push(row(&format!("  same file: `{}`", tool.what), value, "kbha scan (ratio: kbha as % of it)".into(), ratio, "-"));
    }
    rows.push(row("peak RSS during verification", mib(scan_rss), "-".into(), "-".into(), "constant, < 64 MiB"));
    Ok(())
}
