//! The emulator process: where its Python is, starting it, its port and stderr.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// How long the emulator may take to print its READY line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Most of the emulator's stderr kept for error messages.
const STDERR_KEEP: usize = 16 * 1024;

/// The repository root (this crate lives in `tests/harness`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// The Python that runs the emulator: `$KBHA_PYTHON`, else `<repo>/.venv/bin/python`.
pub fn emulator_python() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KBHA_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = repo_root().join(".venv/bin/python");
    if venv.exists() {
        Ok(venv)
    } else {
        bail!(
            "no python for the AWS emulator at `{}`: run `bash tests/emulator/setup.sh` first \
             (or set KBHA_PYTHON to a python with moto[server] installed)",
            venv.display()
        )
    }
}

/// A running emulator process; killed when dropped.
pub struct Emulator {
    child: Child,
    // Held open: the emulator exits when its stdin closes, so even a test killed
    // without running destructors leaves no orphan.
    _stdin: ChildStdin,
    port: u16,
    stderr: Arc<Mutex<String>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator").field("port", &self.port).finish_non_exhaustive()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keep_tail(buf: &Mutex<String>, line: &str) {
    if let Ok(mut b) = buf.lock() {
        b.push_str(line);
        if b.len() > STDERR_KEEP {
            let cut = b.len() - STDERR_KEEP;
            let cut = (cut..b.len()).find(|i| b.is_char_boundary(*i)).unwrap_or(cut);
            b.drain(..cut);
        }
    }
}

impl Emulator {
    /// Starts a fresh emulator on a free loopback port and waits until it is ready.
    pub fn start() -> Result<Emulator> {
        let python = emulator_python()?;
        let script = repo_root().join("tests/emulator/kbha_emulator.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .arg("--port")
            .arg("0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run `{}`", python.display()))?;
        let stdin = child.stdin.take().context("emulator stdin")?;
        let stdout = child.stdout.take().context("emulator stdout")?;
        let mut stderr_pipe = child.stderr.take().context("emulator stderr")?;

        // Drain stderr for the process's whole life: a full pipe would block the emulator.
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                keep_tail(&sink, &String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if !sent && let Some(port) = line.strip_prefix("KBHA_EMULATOR_READY ") {
                    let _ = tx.send(port.trim().parse::<u16>().ok());
                    sent = true;
                }
            }
        });

        let mut emu = Emulator { child, _stdin: stdin, port: 0, stderr };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(port)) => {
                emu.port = port;
                Ok(emu)
            }
            Ok(None) => bail!("emulator printed a malformed READY line; stderr:\n{}", emu.stderr_tail()),
            Err(_) => {
                let status = emu.child.try_wait().ok().flatten();
                std::thread::sleep(Duration::from_millis(200));
                bail!(
                    "emulator did not become ready within {START_TIMEOUT:?} (exit: {status:?}); \
                     if moto is missing run `bash tests/emulator/setup.sh`; stderr:\n{}",
                    emu.stderr_tail()
                )
            }
        }
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`: the endpoint override for every service.
    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the emulator wrote to stderr lately (for failure messages).
    pub fn stderr_tail(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}
