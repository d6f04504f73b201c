//! Opening restored backup files as their data store would, for the restore test: SQLite
//! (ChromaDB's `chroma.sqlite3`) through SQLite itself, Redis RDB snapshots, AOF files and
//! Redis 7 AOF manifests by their formats.
//!
//! Synchronous and pure apart from reading files. Redis files can be GBs, so they are
//! streamed: memory stays bounded by the read buffer whatever the file size.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

/// What a restored file is, for the restore test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Store {
    /// A SQLite database (ChromaDB keeps its catalogue in one).
    Sqlite,
    /// A Redis RDB snapshot (`dump.rdb`, or the `.base.rdb` of a multi-part AOF).
    RedisRdb,
    /// A Redis append-only file, whole (before Redis 7) or one part of a multi-part AOF.
    RedisAof,
    /// Redis 7's multi-part AOF manifest (`appendonly.aof.manifest`).
    AofManifest,
    /// Anything else: not opened.
    Other,
}

const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";
const RDB_MAGIC: &[u8] = b"REDIS";
/// `REDIS` + 4 ASCII digits.
const RDB_HEADER_LEN: usize = 9;
/// Redis 7.0 writes 10, 7.2 writes 11, 7.4 and later 12.
const RDB_MAX_VERSION: u32 = 12;
/// The first version with the CRC-64 trailer.
const RDB_CRC_VERSION: u32 = 5;
const RDB_EOF: u8 = 0xFF;
const READ_BUFFER: usize = 64 * 1024;
/// Redis's own manifest lines are short; anything this big is not a manifest.
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;
/// `*<n>\r\n` and `$<len>\r\n` lines: a sign, 19 digits, CRLF and the prefix fit.
const MAX_HEADER_LINE: usize = 32;
const MAX_LISTED_NAMES: usize = 10;

/// Classifies a file by its name and its first bytes (`head`: up to the first 16 bytes, fewer if the file is shorter).
///
/// SQLite: `head` starts with `b"SQLite format 3\0"` (whatever the name). RDB: `head` starts with
/// `b"REDIS"` and the name does not end in `.aof`. AOF: the name ends in `.aof`. AofManifest: the
/// name ends in `.aof.manifest` (Redis 7 multi-part AOF). Otherwise Other.
pub fn classify(name: &str, head: &[u8]) -> Store {
    if head.starts_with(SQLITE_MAGIC) {
        Store::Sqlite
    } else if name.ends_with(".aof.manifest") {
        Store::AofManifest
    } else if name.ends_with(".aof") {
        Store::RedisAof
    } else if head.starts_with(RDB_MAGIC) {
        Store::RedisRdb
    } else {
        Store::Other
    }
}

/// Opens `path` as its store would.
///
/// `Ok(detail)` when it passes (one short human line, e.g. "integrity ok; 2 collections: docs, faq"
/// or "rdb version 10, crc64 ok, 1.2 MB"), `Err(problem)` when it does not (lowercase, says what is
/// wrong). [`Store::Other`] is not opened and returns `Ok`.
pub fn check(store: Store, path: &Path) -> Result<String, String> {
    match store {
        Store::Sqlite => check_sqlite(path),
        Store::RedisRdb => check_rdb(path),
        Store::RedisAof => check_aof(path),
        Store::AofManifest => check_manifest(path),
        Store::Other => Ok("not opened (no check for this kind of file)".to_owned()),
    }
}

/// Redis's CRC-64 (Jones polynomial 0xad93d23594c935a9, reflected in and out, init 0, no final xor):
/// `crc64(0, b"123456789") == 0xe9c6d914c4b8d9ca`.
///
/// `crc` is the value so far, so a stream can be checksummed in pieces: start with 0.
pub fn crc64(crc: u64, bytes: &[u8]) -> u64 {
    // Slicing-by-8, as Redis's crcspeed: RDB files can be GBs and the Lambda has a timeout.
    let t = &CRC64_TABLES;
    let mut crc = crc;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut le = [0u8; 8];
        le.copy_from_slice(word);
        crc ^= u64::from_le_bytes(le);
        crc = t[7][(crc & 0xff) as usize]
            ^ t[6][((crc >> 8) & 0xff) as usize]
            ^ t[5][((crc >> 16) & 0xff) as usize]
            ^ t[4][((crc >> 24) & 0xff) as usize]
            ^ t[3][((crc >> 32) & 0xff) as usize]
            ^ t[2][((crc >> 40) & 0xff) as usize]
            ^ t[1][((crc >> 48) & 0xff) as usize]
            ^ t[0][(crc >> 56) as usize];
    }
    for &b in words.remainder() {
        crc = t[0][((crc ^ u64::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// 0xad93d23594c935a9 bit-reversed: the reflected algorithm shifts right.
const CRC64_POLY_REFLECTED: u64 = 0x95ac_9329_ac4b_c9b5;

static CRC64_TABLES: [[u64; 256]; 8] = crc64_tables();

const fn crc64_tables() -> [[u64; 256]; 8] {
    let mut t = [[0u64; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ CRC64_POLY_REFLECTED } else { crc >> 1 };
            bit += 1;
        }
        t[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    t
}

// --- SQLite ---

fn check_sqlite(path: &Path) -> Result<String, String> {
    // Read-only: the restore test must not change what it checks (nor create a missing file).
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| format!("sqlite cannot open the file: {e}"))?;
    let rows = integrity_rows(&conn).map_err(|e| format!("sqlite integrity check did not run: {e}"))?;
    if rows != ["ok"] {
        return Err(format!("sqlite integrity check failed: {}", listed(&rows, 3, "; ")));
    }
    let has_collections: bool = conn
        .query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'collections')", [], |r| r.get(0))
        .map_err(|e| format!("sqlite cannot read its schema: {e}"))?;
    if !has_collections {
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0))
            .map_err(|e| format!("sqlite cannot read its schema: {e}"))?;
        return Ok(format!("integrity ok; {tables} tables"));
    }
    let (count, names) = collections(&conn).map_err(|e| format!("cannot list chromadb collections: {e}"))?;
    if count == 0 {
        return Ok("integrity ok; 0 collections".to_owned());
    }
    let more = count - names.len() as u64;
    let tail = if more > 0 { format!(" and {more} more") } else { String::new() };
    Ok(format!("integrity ok; {count} collections: {}{tail}", names.join(", ")))
}

fn integrity_rows(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.collect()
}

/// The number of collections and the first few names (ChromaDB: `collections(id, name, ...)`).
fn collections(conn: &Connection) -> rusqlite::Result<(u64, Vec<String>)> {
    let mut stmt = conn.prepare("SELECT name FROM collections ORDER BY name")?;
    let mut rows = stmt.query([])?;
    let (mut count, mut names) = (0u64, Vec::new());
    while let Some(row) = rows.next()? {
        let name: Option<String> = row.get(0)?;
        count += 1;
        if names.len() < MAX_LISTED_NAMES {
            names.push(name.unwrap_or_else(|| "(null)".to_owned()));
        }
    }
    Ok((count, names))
}

// --- Redis RDB ---

fn check_rdb(path: &Path) -> Result<String, String> {
    let mut reader = BufReader::with_capacity(READ_BUFFER, open(path)?);
    let mut header = [0u8; RDB_HEADER_LEN];
    let got = read_head(&mut reader, &mut header)?;
    if got < RDB_HEADER_LEN {
        if !header[..got].starts_with(&RDB_MAGIC[..got.min(RDB_MAGIC.len())]) {
            return Err(format!("not an rdb file: it starts with \"{}\" instead of \"REDIS\"", header[..got].escape_ascii()));
        }
        return Err(format!("truncated: {got} bytes, shorter than the 9-byte rdb header"));
    }
    let version = rdb_version(&header)?;
    let mut tail = Tail::default();
    tail.feed(&header);
    loop {
        let buf = reader.fill_buf().map_err(|e| format!("read error at byte {}: {e}", tail.total))?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        tail.feed(buf);
        reader.consume(n);
    }
    let size = human_size(tail.total);
    if version < RDB_CRC_VERSION {
        // No trailer before version 5: the EOF opcode is the last byte.
        if tail.total < RDB_HEADER_LEN as u64 + 1 {
            return Err(format!("truncated: {} bytes, no room for the eof marker after the header", tail.total));
        }
        if tail.last() != Some(RDB_EOF) {
            return Err("no eof marker: the file is truncated".to_owned());
        }
        return Ok(format!("rdb version {version}, eof marker ok (no checksum before version 5), {size}"));
    }
    if tail.total < RDB_HEADER_LEN as u64 + 1 + 8 {
        return Err(format!("truncated: {} bytes, shorter than the rdb header, eof marker and checksum", tail.total));
    }
    if tail.before_trailer != Some(RDB_EOF) {
        return Err("no eof marker: the file is truncated".to_owned());
    }
    let stored = u64::from_le_bytes(tail.trailer);
    if stored == 0 {
        // Redis writes 0 when `rdbchecksum no`, and skips the check when loading.
        return Ok(format!("rdb version {version}, checksum disabled (rdbchecksum no), {size}"));
    }
    if stored != tail.crc {
        return Err(format!("crc64 trailer 0x{stored:016x} does not match 0x{:016x} computed", tail.crc));
    }
    Ok(format!("rdb version {version}, crc64 ok, {size}"))
}

/// The RDB version from `REDIS` + 4 ASCII digits.
fn rdb_version(header: &[u8; RDB_HEADER_LEN]) -> Result<u32, String> {
    if !header.starts_with(RDB_MAGIC) {
        return Err(format!("not an rdb file: it starts with \"{}\" instead of \"REDIS\"", header[..5].escape_ascii()));
    }
    let digits = &header[5..];
    let version = std::str::from_utf8(digits).ok().filter(|s| s.bytes().all(|b| b.is_ascii_digit())).and_then(|s| s.parse::<u32>().ok());
    match version {
        None => Err(format!("unsupported rdb version \"{}\": not a number", digits.escape_ascii())),
        Some(v) if v == 0 || v > RDB_MAX_VERSION => {
            Err(format!("unsupported rdb version {v}; versions 1 to {RDB_MAX_VERSION} are known (redis 7.4 and later write 12)"))
        }
        Some(v) => Ok(v),
    }
}

/// The CRC of every byte but the last 8, and those last 8 (the trailer) with the byte before them.
#[derive(Default)]
struct Tail {
    total: u64,
    crc: u64,
    /// The last `held` bytes seen, not yet checksummed; 8 once 8 bytes have been seen.
    trailer: [u8; 8],
    held: usize,
    /// The last checksummed byte: the EOF opcode in a whole file.
    before_trailer: Option<u8>,
}

impl Tail {
    fn feed(&mut self, buf: &[u8]) {
        self.total += buf.len() as u64;
        let avail = self.held + buf.len();
        if avail <= 8 {
            self.trailer[self.held..avail].copy_from_slice(buf);
            self.held = avail;
            return;
        }
        // Checksum all but the last 8 bytes of held + buf, held bytes first.
        let to_hash = avail - 8;
        let from_held = to_hash.min(self.held);
        let from_buf = to_hash - from_held;
        self.crc = crc64(self.crc, &self.trailer[..from_held]);
        self.crc = crc64(self.crc, &buf[..from_buf]);
        self.before_trailer = Some(if from_buf > 0 { buf[from_buf - 1] } else { self.trailer[from_held - 1] });
        let kept = self.held - from_held;
        let mut next = [0u8; 8];
        next[..kept].copy_from_slice(&self.trailer[from_held..self.held]);
        next[kept..].copy_from_slice(&buf[from_buf..]);
        self.trailer = next;
        self.held = 8;
    }

    /// The last byte of the file.
    fn last(&self) -> Option<u8> {
        self.held.checked_sub(1).map(|i| self.trailer[i])
    }
}

// --- Redis AOF ---

fn check_aof(path: &Path) -> Result<String, String> {
    let mut reader = BufReader::with_capacity(READ_BUFFER, open(path)?);
    let mut head = [0u8; RDB_HEADER_LEN];
    let got = read_head(&mut reader, &mut head)?;
    if head[..got].starts_with(RDB_MAGIC) {
        // `aof-use-rdb-preamble`: finding where the RDB part ends means parsing it, so only its header is checked.
        if got < RDB_HEADER_LEN {
            return Err(format!("truncated: {got} bytes, the rdb preamble's header is cut short"));
        }
        let version = rdb_version(&head)?;
        return Ok(format!("rdb preamble (rdb version {version}): header only"));
    }
    let mut resp = Resp { r: Read::chain(&head[..got], reader), pos: 0, line: Vec::with_capacity(MAX_HEADER_LINE) };
    let commands = resp.commands()?;
    Ok(format!("{commands} commands"))
}

/// A streaming reader of AOF commands (RESP arrays of bulk strings) that counts bytes for the messages.
struct Resp<R> {
    r: R,
    pos: u64,
    line: Vec<u8>,
}

enum Line {
    Complete,
    Eof,
    TooLong,
}

impl<R: BufRead> Resp<R> {
    /// Counts the commands to the end of the file.
    fn commands(&mut self) -> Result<u64, String> {
        let mut count = 0u64;
        loop {
            let start = self.pos;
            match self.peek()? {
                None => return Ok(count),
                Some(b'#') => {
                    // Redis 7's `#TS:<unix time>` annotations, between commands.
                    if !self.skip_line()? {
                        return Err(format!("annotation at byte {start} has no end of line: the file is truncated"));
                    }
                }
                Some(b'*') => {
                    count += 1;
                    self.command().map_err(|e| format!("command {count} at byte {start}: {e}"))?;
                }
                Some(other) => {
                    return Err(format!("byte {start}: expected '*' to start command {}, found \"{}\"", count + 1, [other].escape_ascii()));
                }
            }
        }
    }

    /// One `*<n>\r\n` followed by n `$<len>\r\n<len bytes>\r\n`.
    fn command(&mut self) -> Result<(), String> {
        let argc = self.header(b'*')?;
        if argc < 1 {
            return Err(format!("bad argument count {argc}"));
        }
        for arg in 1..=argc {
            let at = self.pos;
            let len = self.header(b'$').map_err(|e| format!("argument {arg} of {argc}: {e}"))?;
            let len = u64::try_from(len).map_err(|_| format!("argument {arg} of {argc}: bad length {len} at byte {at}"))?;
            let skipped =
                io::copy(&mut self.r.by_ref().take(len), &mut io::sink()).map_err(|e| format!("read error at byte {}: {e}", self.pos))?;
            self.pos += skipped;
            if skipped < len {
                return Err(format!("eof inside argument {arg} of {argc} ({skipped} of {len} bytes): the file is truncated"));
            }
            let mut crlf = [0u8; 2];
            let end = self.pos;
            let got = read_head(&mut self.r, &mut crlf)?;
            self.pos += got as u64;
            if got < 2 {
                return Err(format!("eof after argument {arg} of {argc}: the file is truncated"));
            }
            if crlf != *b"\r\n" {
                return Err(format!(
                    "argument {arg} of {argc} is not followed by \\r\\n at byte {end} (found \"{}\"): its length {len} is wrong",
                    crlf.escape_ascii()
                ));
            }
        }
        Ok(())
    }

    /// A `<prefix><integer>\r\n` line.
    fn header(&mut self, prefix: u8) -> Result<i64, String> {
        let at = self.pos;
        match self.read_line()? {
            Line::Complete => {}
            Line::Eof => return Err("eof inside the command: the file is truncated".to_owned()),
            Line::TooLong => return Err(format!("no end of line within {MAX_HEADER_LINE} bytes at byte {at}")),
        }
        let line = &self.line;
        if line.first() != Some(&prefix) {
            return Err(format!("expected '{}' at byte {at}, found \"{}\"", char::from(prefix), line[..1].escape_ascii()));
        }
        let Some(number) = line.strip_suffix(b"\r\n") else {
            return Err(format!("line at byte {at} does not end in \\r\\n"));
        };
        let number = &number[1..];
        std::str::from_utf8(number)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| format!("bad length \"{}\" at byte {at}", number.escape_ascii()))
    }

    fn peek(&mut self) -> Result<Option<u8>, String> {
        let buf = self.r.fill_buf().map_err(|e| format!("read error at byte {}: {e}", self.pos))?;
        Ok(buf.first().copied())
    }

    /// Reads through the next `\n` into `self.line`, at most [`MAX_HEADER_LINE`] bytes.
    fn read_line(&mut self) -> Result<Line, String> {
        self.line.clear();
        loop {
            let buf = self.r.fill_buf().map_err(|e| format!("read error at byte {}: {e}", self.pos))?;
            if buf.is_empty() {
                return Ok(Line::Eof);
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if self.line.len() + take > MAX_HEADER_LINE {
                return Ok(Line::TooLong);
            }
            self.line.extend_from_slice(&buf[..take]);
            self.r.consume(take);
            self.pos += take as u64;
            if done {
                return Ok(Line::Complete);
            }
        }
    }

    /// Skips through the next `\n` without keeping the line; false at EOF before one.
    fn skip_line(&mut self) -> Result<bool, String> {
        loop {
            let buf = self.r.fill_buf().map_err(|e| format!("read error at byte {}: {e}", self.pos))?;
            if buf.is_empty() {
                return Ok(false);
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            self.r.consume(take);
            self.pos += take as u64;
            if done {
                return Ok(true);
            }
        }
    }
}

// --- Redis 7 AOF manifest ---

fn check_manifest(path: &Path) -> Result<String, String> {
    let size = std::fs::metadata(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?.len();
    if size > MAX_MANIFEST_BYTES {
        return Err(format!("{} is too large for an aof manifest", human_size(size)));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the manifest: {e}"))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let (mut listed_files, mut missing) = (0usize, Vec::new());
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let tokens = split_args(line).map_err(|e| format!("manifest line {n}: {e}"))?;
        if tokens.len() % 2 != 0 {
            return Err(format!("manifest line {n}: keys and values do not pair up"));
        }
        let Some(file) = tokens.chunks_exact(2).find(|kv| kv[0] == "file").map(|kv| &kv[1]) else {
            return Err(format!("manifest line {n}: no file key"));
        };
        // Redis refuses paths here: every part sits beside the manifest.
        if file.is_empty() || file == "." || file == ".." || file.contains('/') {
            return Err(format!("manifest line {n}: {file:?} is not a plain file name"));
        }
        listed_files += 1;
        if !dir.join(file).is_file() {
            missing.push(file.clone());
        }
    }
    if listed_files == 0 {
        return Err("the manifest lists no files".to_owned());
    }
    if !missing.is_empty() {
        return Err(format!("{} of {listed_files} files listed are missing: {}", missing.len(), listed(&missing, MAX_LISTED_NAMES, ", ")));
    }
    Ok(format!("{listed_files} files listed, all present"))
}

/// Splits a manifest line as Redis's `sdssplitargs` does, for its simple forms: bare words and
/// double-quoted strings with `\"`, `\\`, `\n`, `\r`, `\t` and `\xHH` escapes (what `sdscatrepr` writes).
fn split_args(line: &str) -> Result<Vec<String>, String> {
    let bytes = line.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    loop {
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if i >= bytes.len() {
            return Ok(tokens);
        }
        let mut token = Vec::new();
        if bytes[i] == b'"' {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return Err("unterminated quoted string".to_owned()),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let (byte, used) = match bytes.get(i + 1) {
                            Some(b'n') => (b'\n', 2),
                            Some(b'r') => (b'\r', 2),
                            Some(b't') => (b'\t', 2),
                            Some(b'x') => {
                                let hex = bytes.get(i + 2..i + 4).and_then(|h| std::str::from_utf8(h).ok());
                                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                                    Some(b) => (b, 4),
                                    None => return Err("bad \\x escape in a quoted string".to_owned()),
                                }
                            }
                            Some(&other) => (other, 2),
                            None => return Err("unterminated quoted string".to_owned()),
                        };
                        token.push(byte);
                        i += used;
                    }
                    Some(&b) => {
                        token.push(b);
                        i += 1;
                    }
                }
            }
            if bytes.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                return Err("closing quote must be followed by a space".to_owned());
            }
        } else {
            while let Some(&b) = bytes.get(i).filter(|b| !b.is_ascii_whitespace()) {
                token.push(b);
                i += 1;
            }
        }
        tokens.push(String::from_utf8(token).map_err(|_| "a quoted name is not utf-8".to_owned())?);
    }
}

// --- helpers ---

fn open(path: &Path) -> Result<File, String> {
    File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))
}

/// Reads up to `buf.len()` bytes, fewer only at EOF.
fn read_head(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, String> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read error: {e}")),
        }
    }
    Ok(got)
}

/// The first `max` items joined, with how many were left out.
fn listed(items: &[String], max: usize, sep: &str) -> String {
    let shown = items.iter().take(max).map(String::as_str).collect::<Vec<_>>().join(sep);
    if items.len() > max { format!("{shown}{sep}and {} more", items.len() - max) } else { shown }
}

/// Decimal units, one decimal: "1.2 MB".
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("kbha-datastores-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            Self(dir)
        }

        fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, bytes).expect("write file");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The bit-at-a-time definition, to check the table-driven one against.
    fn crc64_bitwise(mut crc: u64, bytes: &[u8]) -> u64 {
        for &b in bytes {
            crc ^= u64::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ CRC64_POLY_REFLECTED } else { crc >> 1 };
            }
        }
        crc
    }

    /// Deterministic noise.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 33) as u8
            })
            .collect()
    }

    /// An RDB body as Redis writes it: an aux field, select db 0, resize db, one string key.
    fn rdb_body() -> Vec<u8> {
        let mut body = vec![0xFA, 9];
        body.extend_from_slice(b"redis-ver");
        body.push(5);
        body.extend_from_slice(b"7.2.4");
        body.extend_from_slice(&[0xFE, 0x00, 0xFB, 0x01, 0x00, 0x00, 3]);
        body.extend_from_slice(b"foo");
        body.push(3);
        body.extend_from_slice(b"bar");
        body
    }

    /// `REDIS<version>` + body + EOF opcode + the CRC-64 of all that, little-endian.
    fn rdb(version: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut file = b"REDIS".to_vec();
        file.extend_from_slice(version);
        file.extend_from_slice(body);
        file.push(RDB_EOF);
        let crc = crc64(0, &file);
        file.extend_from_slice(&crc.to_le_bytes());
        file
    }

    #[test]
    fn crc64_test_vector() {
        assert_eq!(crc64(0, b"123456789"), 0xe9c6d914c4b8d9ca);
        assert_eq!(crc64_bitwise(0, b"123456789"), 0xe9c6d914c4b8d9ca);
        assert_eq!(crc64(0, b""), 0);
    }

    #[test]
    fn crc64_table_matches_bitwise_and_chains() {
        let data = noise(1000, 7);
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000] {
            assert_eq!(crc64(0, &data[..len]), crc64_bitwise(0, &data[..len]), "len {len}");
        }
        let whole = crc64(0, &data);
        for split in [0, 1, 3, 8, 13, 500, 999, 1000] {
            assert_eq!(crc64(crc64(0, &data[..split]), &data[split..]), whole, "split {split}");
        }
    }

    #[test]
    fn classify_cases() {
        assert_eq!(classify("chroma.sqlite3", b"SQLite format 3\0"), Store::Sqlite);
        assert_eq!(classify("anything.bin", b"SQLite format 3\0\x10\x00"), Store::Sqlite);
        assert_eq!(classify("x.sqlite3", b"SQLite format 3"), Store::Other);
        assert_eq!(classify("dump.rdb", b"REDIS0011\xfa"), Store::RedisRdb);
        assert_eq!(classify("appendonly.aof.1.base.rdb", b"REDIS0011"), Store::RedisRdb);
        assert_eq!(classify("appendonly.aof", b"REDIS0011"), Store::RedisAof);
        assert_eq!(classify("appendonly.aof.1.incr.aof", b"*2\r\n$6\r\nSELECT"), Store::RedisAof);
        assert_eq!(classify("empty.aof", b""), Store::RedisAof);
        assert_eq!(classify("appendonly.aof.manifest", b"file appendonly"), Store::AofManifest);
        assert_eq!(classify("notes.txt", b"hello"), Store::Other);
        assert_eq!(classify("short", b"RED"), Store::Other);
    }

    #[test]
    fn store_serialises_snake_case() {
        assert_eq!(serde_json::to_string(&Store::RedisRdb).expect("serialise"), "\"redis_rdb\"");
        assert_eq!(serde_json::from_str::<Store>("\"aof_manifest\"").expect("deserialise"), Store::AofManifest);
    }

    #[test]
    fn other_is_not_opened() {
        let detail = check(Store::Other, Path::new("/nonexistent/file")).expect("not opened");
        assert_eq!(detail, "not opened (no check for this kind of file)");
    }

    #[test]
    fn rdb_valid_passes() {
        let dir = TempDir::new("rdb-ok");
        let path = dir.write("dump.rdb", &rdb(b"0010", &rdb_body()));
        let detail = check(Store::RedisRdb, &path).expect("valid rdb");
        assert!(detail.starts_with("rdb version 10, crc64 ok, "), "{detail}");
    }

    #[test]
    fn rdb_larger_than_the_read_buffer_passes() {
        // Several buffer fills, and a length that is not a multiple of 8.
        let dir = TempDir::new("rdb-big");
        let body = noise(3 * READ_BUFFER + 5, 11);
        let path = dir.write("dump.rdb", &rdb(b"0012", &body));
        let detail = check(Store::RedisRdb, &path).expect("valid rdb");
        assert_eq!(detail, "rdb version 12, crc64 ok, 196.6 kB");
    }

    #[test]
    fn rdb_truncated_by_one_byte_fails() {
        let dir = TempDir::new("rdb-cut");
        let file = rdb(b"0010", &rdb_body());
        let path = dir.write("dump.rdb", &file[..file.len() - 1]);
        let err = check(Store::RedisRdb, &path).expect_err("truncated");
        assert_eq!(err, "no eof marker: the file is truncated");
    }

    #[test]
    fn rdb_flipped_bit_fails() {
        let dir = TempDir::new("rdb-flip");
        let mut file = rdb(b"0011", &rdb_body());
        file[14] ^= 0x04;
        let path = dir.write("dump.rdb", &file);
        let err = check(Store::RedisRdb, &path).expect_err("corrupt");
        assert!(err.starts_with("crc64 trailer 0x") && err.ends_with(" computed"), "{err}");
    }

    #[test]
    fn rdb_checksum_disabled_passes() {
        let dir = TempDir::new("rdb-nocrc");
        let mut file = rdb(b"0010", &rdb_body());
        let len = file.len();
        file[len - 8..].fill(0);
        let path = dir.write("dump.rdb", &file);
        let detail = check(Store::RedisRdb, &path).expect("checksum disabled");
        assert!(detail.contains("checksum disabled"), "{detail}");
    }

    #[test]
    fn rdb_unknown_versions_fail() {
        let dir = TempDir::new("rdb-version");
        let path = dir.write("dump.rdb", &rdb(b"0099", &rdb_body()));
        let err = check(Store::RedisRdb, &path).expect_err("version 99");
        assert!(err.starts_with("unsupported rdb version 99; "), "{err}");
        let path = dir.write("odd.rdb", &rdb(b"00x1", &rdb_body()));
        let err = check(Store::RedisRdb, &path).expect_err("not a number");
        assert!(err.starts_with("unsupported rdb version \"00x1\""), "{err}");
    }

    #[test]
    fn rdb_old_version_checks_the_eof_marker_only() {
        let dir = TempDir::new("rdb-old");
        let mut file = b"REDIS0004".to_vec();
        file.extend_from_slice(&rdb_body());
        file.push(RDB_EOF);
        let path = dir.write("dump.rdb", &file);
        let detail = check(Store::RedisRdb, &path).expect("version 4");
        assert!(detail.starts_with("rdb version 4, eof marker ok"), "{detail}");
        let path = dir.write("cut.rdb", &file[..file.len() - 1]);
        assert_eq!(check(Store::RedisRdb, &path).expect_err("no eof"), "no eof marker: the file is truncated");
    }

    #[test]
    fn rdb_short_or_foreign_files_fail() {
        let dir = TempDir::new("rdb-short");
        let path = dir.write("a.rdb", b"REDIS00");
        assert!(check(Store::RedisRdb, &path).expect_err("short header").starts_with("truncated: 7 bytes"));
        let path = dir.write("b.rdb", b"REDIS0010\xff\x00\x00");
        assert!(check(Store::RedisRdb, &path).expect_err("no trailer").starts_with("truncated: 12 bytes"));
        let path = dir.write("c.rdb", b"hello world, not redis");
        assert!(check(Store::RedisRdb, &path).expect_err("foreign").starts_with("not an rdb file"));
        assert!(check(Store::RedisRdb, &dir.0.join("missing.rdb")).expect_err("missing").starts_with("cannot open "));
    }

    #[test]
    fn sqlite_chroma_passes_then_a_corrupt_page_fails() {
        let dir = TempDir::new("sqlite");
        let path = dir.0.join("chroma.sqlite3");
        {
            let mut conn = Connection::open(&path).expect("create db");
            conn.execute_batch(
                "CREATE TABLE collections (id TEXT PRIMARY KEY, name TEXT);
                 INSERT INTO collections VALUES ('c2', 'faq'), ('c1', 'docs');
                 CREATE TABLE embeddings (id INTEGER PRIMARY KEY, document TEXT);",
            )
            .expect("schema");
            let tx = conn.transaction().expect("transaction");
            {
                let mut insert = tx.prepare("INSERT INTO embeddings (document) VALUES (?1)").expect("prepare");
                for i in 0..2000 {
                    insert.execute([format!("{i:0>200}")]).expect("insert");
                }
            }
            tx.commit().expect("commit");
        }
        let mut head = [0u8; 16];
        read_head(&mut File::open(&path).expect("open"), &mut head).expect("head");
        assert_eq!(classify("chroma.sqlite3", &head), Store::Sqlite);
        let detail = check(Store::Sqlite, &path).expect("healthy db");
        assert_eq!(detail, "integrity ok; 2 collections: docs, faq");

        let mut bytes = std::fs::read(&path).expect("read db");
        assert!(bytes.len() > 4096 * 20, "the table spans many pages");
        bytes[4096 * 5..4096 * 6].fill(0x55);
        std::fs::write(&path, &bytes).expect("corrupt db");
        let err = check(Store::Sqlite, &path).expect_err("corrupt db");
        assert!(err.starts_with("sqlite "), "{err}");
    }

    #[test]
    fn sqlite_without_collections_lists_tables() {
        let dir = TempDir::new("sqlite-plain");
        let path = dir.0.join("app.db");
        Connection::open(&path).expect("create db").execute_batch("CREATE TABLE t (x); CREATE TABLE u (y);").expect("schema");
        assert_eq!(check(Store::Sqlite, &path).expect("healthy db"), "integrity ok; 2 tables");
    }

    #[test]
    fn sqlite_non_database_fails() {
        let dir = TempDir::new("sqlite-noise");
        let bytes = noise(8192, 3);
        let path = dir.write("x.sqlite3", &bytes);
        assert_eq!(classify("x.sqlite3", &bytes[..16]), Store::Other);
        let err = check(Store::Sqlite, &path).expect_err("not a database");
        assert!(err.contains("not a database"), "{err}");
        // Read-only: a missing file is an error, not a new empty database.
        let missing = dir.0.join("missing.sqlite3");
        assert!(check(Store::Sqlite, &missing).is_err());
        assert!(!missing.exists());
    }

    const AOF: &[u8] = b"#TS:1700000000\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*3\r\n$3\r\nSET\r\n$3\r\nfoo\r\n$3\r\nbar\r\n";

    #[test]
    fn aof_two_commands_with_an_annotation_pass() {
        let dir = TempDir::new("aof-ok");
        let path = dir.write("appendonly.aof.1.incr.aof", AOF);
        assert_eq!(check(Store::RedisAof, &path).expect("valid aof"), "2 commands");
        let path = dir.write("empty.aof", b"");
        assert_eq!(check(Store::RedisAof, &path).expect("empty aof"), "0 commands");
    }

    #[test]
    fn aof_large_bulk_passes() {
        let dir = TempDir::new("aof-big");
        let value = noise(2 * READ_BUFFER + 3, 5);
        let mut file = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n", value.len()).into_bytes();
        file.extend_from_slice(&value);
        file.extend_from_slice(b"\r\n");
        let path = dir.write("appendonly.aof", &file);
        assert_eq!(check(Store::RedisAof, &path).expect("valid aof"), "1 commands");
    }

    #[test]
    fn aof_truncated_mid_bulk_fails() {
        let dir = TempDir::new("aof-cut");
        let path = dir.write("appendonly.aof", &AOF[..AOF.len() - 3]);
        let err = check(Store::RedisAof, &path).expect_err("truncated");
        assert!(err.starts_with("command 2 at byte 39: eof inside argument 3 of 3"), "{err}");
    }

    #[test]
    fn aof_bad_length_fails() {
        let dir = TempDir::new("aof-len");
        let path = dir.write("a.aof", b"*1\r\n$x\r\nPING\r\n");
        let err = check(Store::RedisAof, &path).expect_err("not a number");
        assert!(err.starts_with("command 1 at byte 0: argument 1 of 1: bad length \"x\""), "{err}");
        let path = dir.write("b.aof", b"*1\r\n$6\r\nPING\r\n*1\r\n$4\r\nPING\r\n");
        let err = check(Store::RedisAof, &path).expect_err("wrong length");
        assert!(err.contains("its length 6 is wrong"), "{err}");
        let path = dir.write("c.aof", b"*0\r\n");
        assert!(check(Store::RedisAof, &path).expect_err("no arguments").contains("bad argument count 0"));
        let path = dir.write("d.aof", b"*1\r\n$-1\r\n");
        assert!(check(Store::RedisAof, &path).expect_err("negative").contains("bad length -1"));
    }

    #[test]
    fn aof_garbage_between_commands_fails() {
        let dir = TempDir::new("aof-garbage");
        let mut file = AOF.to_vec();
        file.extend_from_slice(b"SET x y\r\n");
        let path = dir.write("appendonly.aof", &file);
        let err = check(Store::RedisAof, &path).expect_err("inline command");
        assert_eq!(err, format!("byte {}: expected '*' to start command 3, found \"S\"", AOF.len()));
    }

    #[test]
    fn aof_rdb_preamble_checks_the_header() {
        let dir = TempDir::new("aof-preamble");
        let mut file = rdb(b"0011", &rdb_body());
        file.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        let path = dir.write("appendonly.aof", &file);
        assert_eq!(check(Store::RedisAof, &path).expect("preamble"), "rdb preamble (rdb version 11): header only");
        let path = dir.write("bad.aof", b"REDIS0042\xff");
        assert!(check(Store::RedisAof, &path).expect_err("bad version").starts_with("unsupported rdb version 42"));
    }

    #[test]
    fn manifest_with_all_files_present_passes() {
        let dir = TempDir::new("manifest-ok");
        dir.write("appendonly.aof.1.base.rdb", b"REDIS0011");
        dir.write("appendonly.aof.1.incr.aof", b"");
        dir.write("my aof.2.incr.aof", b"");
        let path = dir.write(
            "appendonly.aof.manifest",
            b"file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n\nfile \"my\\x20aof.2.incr.aof\" seq 2 type i\n",
        );
        assert_eq!(check(Store::AofManifest, &path).expect("all present"), "3 files listed, all present");
    }

    #[test]
    fn manifest_missing_file_fails() {
        let dir = TempDir::new("manifest-missing");
        dir.write("appendonly.aof.1.base.rdb", b"REDIS0011");
        let path = dir.write(
            "appendonly.aof.manifest",
            b"file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n",
        );
        let err = check(Store::AofManifest, &path).expect_err("missing part");
        assert_eq!(err, "1 of 2 files listed are missing: appendonly.aof.1.incr.aof");
    }

    #[test]
    fn manifest_malformed_fails() {
        let dir = TempDir::new("manifest-bad");
        let path = dir.write("empty.aof.manifest", b"\n");
        assert_eq!(check(Store::AofManifest, &path).expect_err("empty"), "the manifest lists no files");
        let path = dir.write("path.aof.manifest", b"file ../etc/passwd seq 1 type b\n");
        assert!(check(Store::AofManifest, &path).expect_err("path").contains("not a plain file name"));
        let path = dir.write("odd.aof.manifest", b"file a seq\n");
        assert!(check(Store::AofManifest, &path).expect_err("odd").contains("do not pair up"));
        let path = dir.write("quote.aof.manifest", b"file \"a seq 1 type b\n");
        assert!(check(Store::AofManifest, &path).expect_err("quote").contains("unterminated"));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_200_000), "1.2 MB");
        assert_eq!(human_size(999_999), "1.0 MB");
        assert_eq!(human_size(3_400_000_000), "3.4 GB");
    }
}
