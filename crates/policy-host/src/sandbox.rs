//! The sandbox one decision runs in: its store data ([`State`]), the memory and
//! table limiter, the `host` interface (`log`), and the empty WASI context (with
//! the `wasi` feature).

#[cfg(feature = "wasi")]
use std::time::Duration;

use crate::bindings;
use crate::{Limits, LogLine};

/// Store data for one decision.
pub struct State {
    /// The empty WASI sandbox; built on first use, so policies that do not
    /// import WASI never pay for it.
    #[cfg(feature = "wasi")]
    wasi: Option<WasiState>,
    /// What the sandbox's wall clock reads: the decision input's `now`.
    #[cfg_attr(not(feature = "wasi"), allow(dead_code))]
    now_ms: i64,
    memory_limit: usize,
    /// Whether the limiter refused to grow a memory past `memory_limit`.
    pub(crate) memory_limit_hit: bool,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) logs_dropped: usize,
    log_lines: usize,
    log_line_bytes: usize,
}

impl State {
    /// The data of a fresh store for one decision taken at `now_ms`.
    pub(crate) fn new(limits: &Limits, now_ms: i64) -> Self {
        State {
            #[cfg(feature = "wasi")]
            wasi: None,
            now_ms,
            memory_limit: limits.memory_bytes,
            memory_limit_hit: false,
            logs: vec![],
            logs_dropped: 0,
            log_lines: limits.log_lines,
            log_line_bytes: limits.log_line_bytes,
        }
    }
}

impl wasmtime::ResourceLimiter for State {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        // Refuse rather than trap here, and remember why, so the trap the
        // guest then raises (allocation failure aborts) is reported as a
        // memory limit and not a generic trap.
        if desired > self.memory_limit {
            self.memory_limit_hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl bindings::host::Host for State {
    fn log(&mut self, level: bindings::types::Level, mut message: String) {
        if self.logs.len() >= self.log_lines {
            self.logs_dropped += 1;
            return;
        }
        if message.len() > self.log_line_bytes {
            let mut cut = self.log_line_bytes;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        self.logs.push((level.into(), message));
    }
}

impl bindings::types::Host for State {}

/// A [`WasiCtx`](wasmtime_wasi::WasiCtx) and its resource table.
#[cfg(feature = "wasi")]
struct WasiState {
    ctx: wasmtime_wasi::WasiCtx,
    table: wasmtime_wasi::ResourceTable,
}

/// A wall clock stopped at the decision input's `now`.
#[cfg(feature = "wasi")]
struct FixedWallClock(Duration);

#[cfg(feature = "wasi")]
impl wasmtime_wasi::HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

/// A monotonic clock that never moves: durations measured inside a policy are 0.
#[cfg(feature = "wasi")]
struct StoppedMonotonicClock;

#[cfg(feature = "wasi")]
impl wasmtime_wasi::HostMonotonicClock for StoppedMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Random bytes a policy gets: a fixed sequence, so decisions replay.
#[cfg(feature = "wasi")]
const WASI_RANDOM_BYTES: &[u8] = b"kbha-policy-deterministic-random";

#[cfg(feature = "wasi")]
impl WasiState {
    /// The empty sandbox (see the crate docs), its wall clock at `now_ms`.
    fn empty(now_ms: i64) -> Self {
        use wasmtime_wasi::p2::pipe::{ClosedInputStream, SinkOutputStream};
        // Before the epoch a WASI wall clock cannot go: such inputs read 0.
        let wall = Duration::from_millis(u64::try_from(now_ms).unwrap_or(0));
        let mut b = wasmtime_wasi::WasiCtxBuilder::new();
        b.stdin(ClosedInputStream)
            .stdout(SinkOutputStream)
            .stderr(SinkOutputStream)
            .wall_clock(FixedWallClock(wall))
            .monotonic_clock(StoppedMonotonicClock)
            .secure_random(wasmtime_wasi::Deterministic::new(WASI_RANDOM_BYTES.to_vec()))
            .insecure_random(wasmtime_wasi::Deterministic::new(WASI_RANDOM_BYTES.to_vec()))
            .insecure_random_seed(0)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        Self { ctx: b.build(), table: wasmtime_wasi::ResourceTable::new() }
    }
}

#[cfg(feature = "wasi")]
impl wasmtime_wasi::WasiView for State {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        let now_ms = self.now_ms;
        let w = self.wasi.get_or_insert_with(|| WasiState::empty(now_ms));
        wasmtime_wasi::WasiCtxView { ctx: &mut w.ctx, table: &mut w.table }
    }
}
