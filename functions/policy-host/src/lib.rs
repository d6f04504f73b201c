//! kbha-policy-host: loads, validates and runs kbha policy components.
//!
//! This is the only crate that depends on wasmtime. A policy is a component
//! implementing one world of `wit/kbha.wit`; it imports nothing but
//! `kbha:policy/host@0.3.0` (its `log`), and every call gets a fresh store with
//! a fuel budget, a memory cap and an output-size cap.
//!
//! An engine built with [`Limits::wasi`] on (see [`Limits::python`]) also
//! offers WASI 0.2, for interpreted policies such as CPython components built
//! with componentize-py, which import it whether they use it or not. That WASI
//! is an empty sandbox, built fresh for each decision: no preopened
//! directories, no environment variables, no arguments, an empty stdin,
//! stdout and stderr discarded, no network (TCP, UDP and name lookup refused,
//! every socket address denied), a wall clock that always reads the input's
//! `now`, a monotonic clock that always reads 0, and random bytes from a fixed
//! sequence, so a replayed decision is still the same decision.
//!
//! ```no_run
//! # fn main() -> Result<(), kbha_policy_host::PolicyError> {
//! # let component_bytes: Vec<u8> = vec![];
//! # let input: kbha_core::FailoverInput = todo!();
//! let engine = kbha_policy_host::PolicyEngine::new(kbha_policy_host::Limits::default())?;
//! let policy = engine.load_failover(&component_bytes)?;
//! let eval = policy.decide(&input)?;
//! println!("{} -> {:?} ({} fuel)", policy.digest(), eval.decision, eval.fuel_used);
//! # Ok(()) }
//! ```

mod bindings;
mod convert;
mod error;
pub mod guests;

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Engine, Store, Trap};

pub use error::PolicyError;

use convert::OutputSize;

/// The version of the `kbha:policy` package (wit/kbha.wit) this host serves.
pub const CONTRACT_VERSION: &str = "0.3.0";

/// Import names a policy component may have; everything else is refused.
pub const ALLOWED_IMPORTS: &[&str] = &["kbha:policy/host@0.3.0", "kbha:policy/types@0.3.0"];

/// WASI 0.2 interfaces an engine with [`Limits::wasi`] on also accepts, as
/// `wasi:<package>/<interface>` (any `@0.2.x` version): the ones
/// `wasmtime_wasi::p2::add_to_linker_sync` provides, each backed by the empty
/// sandbox described in the crate docs. Any other interface (`wasi:http`,
/// `wasi:keyvalue`, WASI 0.3, anything foreign) stays refused.
pub const WASI_IMPORTS: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// Whether `name` is one of [`WASI_IMPORTS`] at a 0.2 version.
fn is_offered_wasi(name: &str) -> bool {
    name.split_once("@0.2.").is_some_and(|(interface, _)| WASI_IMPORTS.contains(&interface))
}

/// Per-evaluation limits, fixed for an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Fuel per decision (roughly one unit per wasm instruction). Fuel, not a
    /// wall clock, so a replayed decision fails or succeeds the same way.
    pub fuel: u64,
    /// Largest linear memory a policy may have, in bytes.
    pub memory_bytes: usize,
    /// Largest decision, in bytes of strings plus a small cost per list entry.
    pub output_bytes: usize,
    /// Log lines kept per decision; later lines are counted and dropped.
    pub log_lines: usize,
    /// Longest log line kept, in bytes; longer lines are cut.
    pub log_line_bytes: usize,
    /// Policy instances alive at once across the engine (pooling allocator
    /// slots); one per concurrent decision.
    pub max_concurrent: u32,
    /// Offer the empty WASI 0.2 sandbox (see the crate docs) to policies that
    /// import it. Off by default: a policy importing WASI is then refused with
    /// [`PolicyError::ForbiddenImport`]. Turn it on only for an engine that
    /// runs interpreted policies ([`Limits::python`]); Rust policies never need it.
    pub wasi: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 50_000_000,
            memory_bytes: 64 << 20,
            output_bytes: 256 << 10,
            log_lines: 64,
            log_line_bytes: 2048,
            max_concurrent: 8,
            wasi: false,
        }
    }
}

impl Limits {
    /// The limits for the `KBHA_POLICY_WASI` setting: unset or `off` gives
    /// [`Limits::default`] (WASI refused), `on` gives [`Limits::python`].
    pub fn for_wasi_setting(value: Option<&str>) -> Result<Self, PolicyError> {
        match value.map(str::trim) {
            None | Some("") | Some("off") => Ok(Self::default()),
            Some("on") => Ok(Self::python()),
            Some(other) => Err(PolicyError::Host(format!("`KBHA_POLICY_WASI` must be `on` or `off`, got `{other}`"))),
        }
    }

    /// Limits for a CPython component (componentize-py): WASI on and
    /// 100 million units of fuel. The sample's decision burns ~0.5 million
    /// (the Rust sample ~14 thousand: CPython interprets, and its start-up is
    /// snapshotted into the component at build time, so it costs no fuel), so
    /// this leaves 200x headroom for heavier policies, while an endless Python
    /// loop (tests/python.rs) is stopped after about 20 ms. Memory stays at the
    /// default 64 MiB: the sample decides within 16 MiB, and a policy
    /// allocating without end gets [`PolicyError::MemoryLimit`].
    pub fn python() -> Self {
        Self { fuel: 100_000_000, wasi: true, ..Self::default() }
    }
}

/// A log line written by a policy.
pub type LogLine = (kbha_core::Level, String);

/// One decision and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation<D> {
    /// The policy's answer.
    pub decision: D,
    /// Lines the policy logged, up to [`Limits::log_lines`].
    pub logs: Vec<LogLine>,
    /// Lines dropped beyond the budget.
    pub logs_dropped: usize,
    /// Fuel consumed.
    pub fuel_used: u64,
    /// Wall time of instantiation plus the call.
    pub duration: Duration,
}

/// The world of a policy component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    /// `failover-policy`.
    Failover,
    /// `replication-policy`.
    Replication,
    /// `alert-policy`.
    Alert,
}

impl World {
    /// Every world, in a fixed order.
    pub const ALL: [World; 3] = [World::Failover, World::Replication, World::Alert];

    /// The WIT world name.
    pub fn wit_name(self) -> &'static str {
        match self {
            World::Failover => "failover-policy",
            World::Replication => "replication-policy",
            World::Alert => "alert-policy",
        }
    }

    /// Parses `failover`, `replication` or `alert` (or the WIT world name).
    pub fn parse(s: &str) -> Option<World> {
        World::ALL.into_iter().find(|w| s == w.wit_name() || w.wit_name().strip_suffix("-policy") == Some(s))
    }
}

/// `sha256:<hex>` of some bytes; the policy digest is this of the component.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// What a component looks like from outside, for `kbha policy check`.
#[derive(Debug)]
pub struct Inspection {
    /// `sha256:<hex>` of the bytes.
    pub digest: String,
    /// Size in bytes.
    pub size_bytes: usize,
    /// Import names.
    pub imports: Vec<String>,
    /// Export names.
    pub exports: Vec<String>,
    /// The world it implements, when one of kbha's matches.
    pub world: Option<World>,
    /// Problems found (forbidden imports, no matching world); empty when
    /// the component would load.
    pub problems: Vec<PolicyError>,
}

/// Store data for one decision.
struct State {
    /// The empty WASI sandbox; built on first use, so policies that do not
    /// import WASI never pay for it.
    wasi: Option<WasiState>,
    /// What the sandbox's wall clock reads: the decision input's `now`.
    now_ms: i64,
    memory_limit: usize,
    memory_limit_hit: bool,
    logs: Vec<LogLine>,
    logs_dropped: usize,
    log_lines: usize,
    log_line_bytes: usize,
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
struct WasiState {
    ctx: wasmtime_wasi::WasiCtx,
    table: wasmtime_wasi::ResourceTable,
}

/// A wall clock stopped at the decision input's `now`.
struct FixedWallClock(Duration);

impl wasmtime_wasi::HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

/// A monotonic clock that never moves: durations measured inside a policy are 0.
struct StoppedMonotonicClock;

impl wasmtime_wasi::HostMonotonicClock for StoppedMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Random bytes a policy gets: a fixed sequence, so decisions replay.
const WASI_RANDOM_BYTES: &[u8] = b"kbha-policy-deterministic-random";

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

impl wasmtime_wasi::WasiView for State {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        let now_ms = self.now_ms;
        let w = self.wasi.get_or_insert_with(|| WasiState::empty(now_ms));
        wasmtime_wasi::WasiCtxView { ctx: &mut w.ctx, table: &mut w.table }
    }
}

/// The wasmtime engine plus kbha's limits; cheap to clone, share one per
/// process.
#[derive(Clone)]
pub struct PolicyEngine {
    engine: Engine,
    linker: std::sync::Arc<Linker<State>>,
    limits: Limits,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine").field("limits", &self.limits).finish_non_exhaustive()
    }
}

fn host_err(e: wasmtime::Error) -> PolicyError {
    PolicyError::Host(format!("{e:#}"))
}

impl PolicyEngine {
    /// An engine with fuel metering, the pooling allocator sized from
    /// `limits`, and no component-model concurrency (policies are plain
    /// synchronous functions).
    pub fn new(limits: Limits) -> Result<Self, PolicyError> {
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        let n = limits.max_concurrent.max(1);
        // A wit-component component holds its module plus small shim modules;
        // a few core instances and tables each is plenty. A componentize-py
        // component links CPython, libc and the WASI adapter as separate core
        // modules: more instances, memories and tables, and a larger table.
        let per = if limits.wasi { 16 } else { 4 };
        pool.total_component_instances(n)
            .total_core_instances(n * per)
            .total_memories(n * if limits.wasi { 4 } else { 1 })
            .total_tables(n * per)
            // Fiber stacks serve async calls only, which policies never make; the
            // default 1000 slots cost ~1000 mprotect calls at engine creation (cold start).
            .total_stacks(n)
            .max_memory_size(limits.memory_bytes);
        if limits.wasi {
            pool.max_memories_per_component(4).max_tables_per_component(16).table_elements(100_000);
        }
        // A fresh instance per decision reuses a pool slot; by default wasmtime
        // resets it with madvise and the next decision page-faults its pages back.
        // Kept resident, tables are reset with a memset instead (kbha bench:
        // fresh-instance p50 about -4 µs). With the PAGEMAP_SCAN ioctl (Linux >= 6.7)
        // memories too: only the pages a decision dirtied are restored, so keeping the
        // whole memory resident costs nothing extra (p50 35 -> 18 µs). Without the
        // ioctl wasmtime would memset all `keep_resident` bytes, so memories stay as is.
        pool.table_keep_resident(64 << 10);
        if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.pagemap_scan(wasmtime::Enabled::Yes).linear_memory_keep_resident(limits.memory_bytes);
        }
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true).concurrency_support(false).allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(host_err)?;
        let mut linker = Linker::new(&engine);
        bindings::host::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s).map_err(host_err)?;
        if limits.wasi {
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(host_err)?;
        }
        Ok(Self { engine, linker: std::sync::Arc::new(linker), limits })
    }

    /// The limits every evaluation runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Loads a `failover-policy` component.
    pub fn load_failover(&self, bytes: &[u8]) -> Result<FailoverPolicy, PolicyError> {
        let (pre, digest) = self.compile_and_link(bytes, World::Failover)?;
        let pre = bindings::failover::FailoverPolicyPre::new(pre).map_err(|e| wrong(World::Failover, e))?;
        Ok(FailoverPolicy { inner: Loaded { wasi: self.imports_wasi(pre.instance_pre().component()), engine: self.clone(), digest, pre } })
    }

    /// Loads a `replication-policy` component.
    pub fn load_replication(&self, bytes: &[u8]) -> Result<ReplicationPolicy, PolicyError> {
        let (pre, digest) = self.compile_and_link(bytes, World::Replication)?;
        let pre = bindings::replication::ReplicationPolicyPre::new(pre).map_err(|e| wrong(World::Replication, e))?;
        Ok(ReplicationPolicy {
            inner: Loaded { wasi: self.imports_wasi(pre.instance_pre().component()), engine: self.clone(), digest, pre },
        })
    }

    /// Loads an `alert-policy` component.
    pub fn load_alert(&self, bytes: &[u8]) -> Result<AlertPolicy, PolicyError> {
        let (pre, digest) = self.compile_and_link(bytes, World::Alert)?;
        let pre = bindings::alert::AlertPolicyPre::new(pre).map_err(|e| wrong(World::Alert, e))?;
        Ok(AlertPolicy { inner: Loaded { wasi: self.imports_wasi(pre.instance_pre().component()), engine: self.clone(), digest, pre } })
    }

    /// Loads a failover policy from [`PolicyEngine::precompile`] output whose
    /// component digest must equal `expected_digest`.
    pub fn load_failover_precompiled(&self, artifact: &[u8], expected_digest: &str) -> Result<FailoverPolicy, PolicyError> {
        let component = self.deserialize(artifact, expected_digest)?;
        let pre = self.link(&component, World::Failover)?;
        let pre = bindings::failover::FailoverPolicyPre::new(pre).map_err(|e| wrong(World::Failover, e))?;
        Ok(FailoverPolicy {
            inner: Loaded {
                wasi: self.imports_wasi(pre.instance_pre().component()),
                engine: self.clone(),
                digest: expected_digest.to_string(),
                pre,
            },
        })
    }

    /// Loads a replication policy from [`PolicyEngine::precompile`] output.
    pub fn load_replication_precompiled(&self, artifact: &[u8], expected_digest: &str) -> Result<ReplicationPolicy, PolicyError> {
        let component = self.deserialize(artifact, expected_digest)?;
        let pre = self.link(&component, World::Replication)?;
        let pre = bindings::replication::ReplicationPolicyPre::new(pre).map_err(|e| wrong(World::Replication, e))?;
        Ok(ReplicationPolicy {
            inner: Loaded {
                wasi: self.imports_wasi(pre.instance_pre().component()),
                engine: self.clone(),
                digest: expected_digest.to_string(),
                pre,
            },
        })
    }

    /// Loads an alert policy from [`PolicyEngine::precompile`] output.
    pub fn load_alert_precompiled(&self, artifact: &[u8], expected_digest: &str) -> Result<AlertPolicy, PolicyError> {
        let component = self.deserialize(artifact, expected_digest)?;
        let pre = self.link(&component, World::Alert)?;
        let pre = bindings::alert::AlertPolicyPre::new(pre).map_err(|e| wrong(World::Alert, e))?;
        Ok(AlertPolicy {
            inner: Loaded {
                wasi: self.imports_wasi(pre.instance_pre().component()),
                engine: self.clone(),
                digest: expected_digest.to_string(),
                pre,
            },
        })
    }

    /// Compiles a component for this engine (and this host's CPU) into an
    /// artifact for the `load_*_precompiled` functions. The component is
    /// validated first: only loadable policies are precompiled.
    pub fn precompile(&self, bytes: &[u8]) -> Result<Vec<u8>, PolicyError> {
        let inspection = self.inspect(bytes)?;
        if let Some(p) = inspection.problems.into_iter().next() {
            return Err(p);
        }
        let code = self.engine.precompile_component(bytes).map_err(|e| PolicyError::Compile(format!("{e:#}")))?;
        Ok(envelope(&digest(bytes), &code))
    }

    /// Describes a component: digest, imports, exports, matching world and
    /// problems. Fails only when the bytes are no component at all.
    pub fn inspect(&self, bytes: &[u8]) -> Result<Inspection, PolicyError> {
        check_header(bytes)?;
        let component = Component::new(&self.engine, bytes).map_err(|e| PolicyError::Compile(format!("{e:#}")))?;
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(&self.engine).map(|(n, _)| n.to_string()).collect();
        let exports: Vec<String> = ty.exports(&self.engine).map(|(n, _)| n.to_string()).collect();
        let mut problems: Vec<PolicyError> = forbidden_imports(&imports, self.limits.wasi).collect();
        let world = if problems.is_empty() {
            let pre = self.linker.instantiate_pre(&component).map_err(|e| PolicyError::Compile(format!("{e:#}")))?;
            World::ALL.into_iter().find(|w| match w {
                World::Failover => bindings::failover::FailoverPolicyPre::new(pre.clone()).is_ok(),
                World::Replication => bindings::replication::ReplicationPolicyPre::new(pre.clone()).is_ok(),
                World::Alert => bindings::alert::AlertPolicyPre::new(pre.clone()).is_ok(),
            })
        } else {
            None
        };
        if world.is_none() && problems.is_empty() {
            problems.push(PolicyError::WrongWorld {
                expected: "failover-policy | replication-policy | alert-policy",
                detail: format!("exports are [{}]", exports.join(", ")),
            });
        }
        Ok(Inspection { digest: digest(bytes), size_bytes: bytes.len(), imports, exports, world, problems })
    }

    fn compile_and_link(&self, bytes: &[u8], world: World) -> Result<(InstancePre<State>, String), PolicyError> {
        check_header(bytes)?;
        let component = Component::new(&self.engine, bytes).map_err(|e| PolicyError::Compile(format!("{e:#}")))?;
        Ok((self.link(&component, world)?, digest(bytes)))
    }

    /// Whether `component` imports any WASI interface.
    fn imports_wasi(&self, component: &Component) -> bool {
        component.component_type().imports(&self.engine).any(|(n, _)| n.starts_with("wasi:"))
    }

    /// Checks imports and exports and builds the `InstancePre`.
    fn link(&self, component: &Component, world: World) -> Result<InstancePre<State>, PolicyError> {
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(&self.engine).map(|(n, _)| n.to_string()).collect();
        if let Some(e) = forbidden_imports(&imports, self.limits.wasi).next() {
            return Err(e);
        }
        if ty.get_export(&self.engine, "decide").is_none() {
            let exports: Vec<String> = ty.exports(&self.engine).map(|(n, _)| n.to_string()).collect();
            return Err(PolicyError::WrongWorld {
                expected: world.wit_name(),
                detail: format!("no `decide` export (exports are [{}])", exports.join(", ")),
            });
        }
        self.linker.instantiate_pre(component).map_err(|e| PolicyError::Compile(format!("{e:#}")))
    }

    /// Turns a precompiled artifact back into a component.
    ///
    /// The artifact layout is `MAGIC | policy digest (71 bytes) | sha256 of
    /// code (32 bytes) | code`, written only by [`PolicyEngine::precompile`].
    #[allow(unsafe_code)]
    fn deserialize(&self, artifact: &[u8], expected_digest: &str) -> Result<Component, PolicyError> {
        let bad = |m: &str| PolicyError::Precompiled(m.to_string());
        let rest = artifact.strip_prefix(PRECOMPILED_MAGIC).ok_or_else(|| bad("not a kbha precompiled policy (bad magic)"))?;
        if rest.len() < DIGEST_LEN + 32 {
            return Err(bad("truncated header"));
        }
        let (recorded, rest) = rest.split_at(DIGEST_LEN);
        let (code_hash, code) = rest.split_at(32);
        if recorded != expected_digest.as_bytes() {
            return Err(PolicyError::Precompiled(format!(
                "artifact is of policy `{}`, expected `{expected_digest}`",
                String::from_utf8_lossy(recorded)
            )));
        }
        if Sha256::digest(code).as_slice() != code_hash {
            return Err(bad("code does not match its recorded sha256 (corrupt file)"));
        }
        // SAFETY: `Component::deserialize` trusts the bytes to be wasmtime's
        // own compiled code. These bytes carry the envelope only
        // `PolicyEngine::precompile` writes, their sha256 was just checked
        // against the envelope, and they are of the policy the caller pinned
        // by digest. Callers load artifacts only from their own build output
        // (never from S3 or any shared location; remote policies arrive as
        // `.wasm` and go through `load_*`). wasmtime itself rejects artifacts
        // of another version, configuration or CPU.
        unsafe { Component::deserialize(&self.engine, code) }.map_err(|e| PolicyError::Precompiled(format!("{e:#}")))
    }

    /// A fresh store for one decision taken at `now_ms`.
    fn store(&self, now_ms: i64) -> Result<Store<State>, PolicyError> {
        let l = &self.limits;
        let mut store = Store::new(
            &self.engine,
            State {
                wasi: None,
                now_ms,
                memory_limit: l.memory_bytes,
                memory_limit_hit: false,
                logs: vec![],
                logs_dropped: 0,
                log_lines: l.log_lines,
                log_line_bytes: l.log_line_bytes,
            },
        );
        store.limiter(|s| s);
        store.set_fuel(l.fuel).map_err(host_err)?;
        Ok(store)
    }
}

const PRECOMPILED_MAGIC: &[u8] = b"kbha-precompiled-policy/1\0";
/// `sha256:` plus 64 hex digits.
const DIGEST_LEN: usize = 7 + 64;

fn wrong(world: World, e: wasmtime::Error) -> PolicyError {
    PolicyError::WrongWorld { expected: world.wit_name(), detail: format!("{e:#}") }
}

fn forbidden_imports(imports: &[String], wasi: bool) -> impl Iterator<Item = PolicyError> + '_ {
    imports
        .iter()
        .filter(move |n| {
            let offered = ALLOWED_IMPORTS.contains(&n.as_str()) || (wasi && is_offered_wasi(n));
            !offered
        })
        .map(|n| match n.strip_prefix("kbha:policy/").and_then(|rest| rest.split_once('@')) {
            // Our own interface at another version: say which versions, not "forbidden".
            Some((_, found)) => PolicyError::ContractVersion { found: found.to_owned(), served: CONTRACT_VERSION },
            None => PolicyError::ForbiddenImport { name: n.clone() },
        })
}

/// Tells a component from a core module (or garbage) before compiling, so
/// the error says which it is.
fn check_header(bytes: &[u8]) -> Result<(), PolicyError> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(PolicyError::NotWasm);
    }
    // Bytes 4..8: version and layer; layer 0 is a core module, 1 a component.
    match (&bytes[4..6], &bytes[6..8]) {
        (_, [0, 0]) => Err(PolicyError::NotAComponent),
        (_, [1, 0]) => Ok(()),
        _ => Err(PolicyError::NotWasm),
    }
}

/// The precompiled artifact layout `deserialize` reads: `MAGIC | policy digest |
/// sha256 of code | code`.
fn envelope(digest: &str, code: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(code.len() + 128);
    out.extend_from_slice(PRECOMPILED_MAGIC);
    out.extend_from_slice(digest.as_bytes());
    out.extend_from_slice(&Sha256::digest(code));
    out.extend_from_slice(code);
    out
}

/// A loaded policy of any world: digest, engine and the `InstancePre`.
struct Loaded<P> {
    /// Whether the component imports WASI (only possible on a WASI engine).
    wasi: bool,
    engine: PolicyEngine,
    digest: String,
    pre: P,
}

impl<P> Loaded<P> {
    /// Runs one decision taken at `now_ms` in a fresh store and turns every
    /// failure into its typed error.
    fn run<W, D>(
        &self,
        now_ms: i64,
        call: impl FnOnce(&P, &mut Store<State>) -> wasmtime::Result<Result<W, bindings::types::PolicyError>> + Send,
    ) -> Result<Evaluation<D>, PolicyError>
    where
        D: From<W> + OutputSize,
        W: Send,
        P: Sync,
    {
        let start = Instant::now();
        let limits = &self.engine.limits;
        let body = || -> Result<_, PolicyError> {
            let mut store = self.engine.store(now_ms)?;
            let result = call(&self.pre, &mut store);
            let fuel_used = limits.fuel - store.get_fuel().unwrap_or(0);
            Ok((result, fuel_used, store.into_data()))
        };
        // wasmtime-wasi's synchronous bindings enter a tokio runtime for some
        // calls (streams, poll), which panics on a thread already inside one,
        // as a Lambda handler is. A WASI decision therefore runs on its own
        // short-lived thread (tens of microseconds, next to milliseconds of
        // CPython); a policy without WASI imports (any Rust one) runs inline,
        // on a WASI engine too.
        let (result, fuel_used, state) = if self.wasi {
            std::thread::scope(|s| s.spawn(body).join()).map_err(|_| PolicyError::Host("the policy's thread panicked".to_string()))??
        } else {
            body()?
        };
        let duration = start.elapsed();
        let decision = match result {
            Ok(Ok(d)) => D::from(d),
            Ok(Err(refusal)) => return Err(PolicyError::Refused(refusal.into())),
            Err(e) => return Err(classify(e, &state, limits)),
        };
        let size = decision.output_bytes();
        if size > limits.output_bytes {
            return Err(PolicyError::OutputTooLarge { size_bytes: size, limit_bytes: limits.output_bytes });
        }
        Ok(Evaluation { decision, logs: state.logs, logs_dropped: state.logs_dropped, fuel_used, duration })
    }
}

fn classify(e: wasmtime::Error, state: &State, limits: &Limits) -> PolicyError {
    if state.memory_limit_hit {
        return PolicyError::MemoryLimit { limit_bytes: limits.memory_bytes };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => PolicyError::OutOfFuel { fuel: limits.fuel },
        Some(Trap::AllocationTooLarge) => PolicyError::MemoryLimit { limit_bytes: limits.memory_bytes },
        Some(trap) => PolicyError::Trap(trap.to_string()),
        // Not a trap: lifting the result failed (bad utf-8, bad discriminant,
        // pointer out of bounds) or the pool is exhausted.
        None => {
            let text = format!("{e:#}");
            if text.contains("maximum concurrent") || text.contains("instance limit") {
                PolicyError::Host(text)
            } else {
                PolicyError::MalformedOutput(text)
            }
        }
    }
}

macro_rules! policy_type {
    ($(#[$doc:meta])* $name:ident, $pre:ty, $input:ty, $decision:ty) => {
        $(#[$doc])*
        pub struct $name {
            inner: Loaded<$pre>,
        }

        impl $name {
            /// `sha256:<hex>` of the component bytes.
            pub fn digest(&self) -> &str {
                &self.inner.digest
            }

            /// This policy's compiled code as a [`PolicyEngine::precompile`]-style
            /// artifact, without compiling again: what a compiled-module cache keeps.
            pub fn artifact(&self) -> Result<Vec<u8>, PolicyError> {
                let code = self.inner.pre.instance_pre().component().serialize().map_err(host_err)?;
                Ok(envelope(&self.inner.digest, &code))
            }

            /// Runs the policy on `input` in a fresh store under the engine's
            /// limits.
            pub fn decide(&self, input: &$input) -> Result<Evaluation<$decision>, PolicyError> {
                let wit_input = input.clone().into();
                self.inner.run(input.now_ms, |pre, store| {
                    let instance = pre.instantiate(&mut *store)?;
                    instance.call_decide(&mut *store, &wit_input)
                })
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).field("digest", &self.inner.digest).finish_non_exhaustive()
            }
        }
    };
}

policy_type!(
    /// A loaded `failover-policy` component.
    FailoverPolicy,
    bindings::failover::FailoverPolicyPre<State>,
    kbha_core::FailoverInput,
    kbha_core::FailoverDecision
);
impl FailoverPolicy {
    /// **Bench-only**: one instance kept for many decisions, to measure what
    /// instantiation costs (`kbha bench`, `cargo bench -p kbha-policy-host`).
    /// Production code uses [`FailoverPolicy::decide`]: a fresh store per
    /// decision, so no state leaks from one decision into the next.
    pub fn reused_instance(&self) -> Result<ReusedFailoverInstance<'_>, PolicyError> {
        // The sandbox's wall clock (WASI policies only) reads the epoch.
        let mut store = self.inner.engine.store(0)?;
        let instance = self.inner.pre.instantiate(&mut store).map_err(host_err)?;
        Ok(ReusedFailoverInstance { policy: self, store, instance })
    }
}

/// **Bench-only**: a failover policy instance that decides many times in
/// one store (see [`FailoverPolicy::reused_instance`]). Fuel is refilled and
/// logs cleared before each decision; guest memory is not reset.
pub struct ReusedFailoverInstance<'a> {
    policy: &'a FailoverPolicy,
    store: Store<State>,
    instance: bindings::failover::FailoverPolicy,
}

impl std::fmt::Debug for ReusedFailoverInstance<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReusedFailoverInstance").field("digest", &self.policy.digest()).finish_non_exhaustive()
    }
}

impl ReusedFailoverInstance<'_> {
    /// Runs the policy on `input` in this instance's store.
    pub fn decide(&mut self, input: &kbha_core::FailoverInput) -> Result<kbha_core::FailoverDecision, PolicyError> {
        let limits = &self.policy.inner.engine.limits;
        self.store.set_fuel(limits.fuel).map_err(host_err)?;
        self.store.data_mut().logs.clear();
        let wit_input = input.clone().into();
        match self.instance.call_decide(&mut self.store, &wit_input) {
            Ok(Ok(d)) => Ok(d.into()),
            Ok(Err(refusal)) => Err(PolicyError::Refused(refusal.into())),
            Err(e) => Err(classify(e, self.store.data(), limits)),
        }
    }
}

policy_type!(
    /// A loaded `replication-policy` component.
    ReplicationPolicy,
    bindings::replication::ReplicationPolicyPre<State>,
    kbha_core::ReplicationInput,
    kbha_core::ReplicationDecision
);
policy_type!(
    /// A loaded `alert-policy` component.
    AlertPolicy,
    bindings::alert::AlertPolicyPre<State>,
    kbha_core::AlertInput,
    kbha_core::AlertDecision
);

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn policies_can_live_in_an_arc_across_threads() {
        assert_send_sync::<PolicyEngine>();
        assert_send_sync::<FailoverPolicy>();
        assert_send_sync::<ReplicationPolicy>();
        assert_send_sync::<AlertPolicy>();
    }

    #[test]
    fn header_tells_module_from_component() {
        assert!(matches!(check_header(b"\0asm\x01\0\0\0"), Err(PolicyError::NotAComponent)));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(matches!(check_header(b"{\"json\": 1}"), Err(PolicyError::NotWasm)));
    }

    #[test]
    fn worlds_parse_short_and_wit_names() {
        assert_eq!(World::parse("failover"), Some(World::Failover));
        assert_eq!(World::parse("alert-policy"), Some(World::Alert));
        assert_eq!(World::parse("nope"), None);
    }

    #[test]
    fn wasi_setting_is_on_off_or_refused() {
        assert_eq!(Limits::for_wasi_setting(None).ok(), Some(Limits::default()));
        assert_eq!(Limits::for_wasi_setting(Some("off")).ok(), Some(Limits::default()));
        assert_eq!(Limits::for_wasi_setting(Some("on")).ok(), Some(Limits::python()));
        assert!(Limits::for_wasi_setting(Some("yes")).is_err());
    }

    #[test]
    fn offered_wasi_is_the_0_2_set() {
        assert!(is_offered_wasi("wasi:cli/environment@0.2.9"));
        assert!(is_offered_wasi("wasi:sockets/tcp@0.2.0"));
        assert!(!is_offered_wasi("wasi:cli/environment@0.3.0"));
        assert!(!is_offered_wasi("wasi:http/outgoing-handler@0.2.0"));
        assert!(!is_offered_wasi("wasi:cli/environment"));
    }

    #[test]
    fn digest_is_prefixed_sha256() {
        let d = digest(b"");
        assert_eq!(d, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(d.len(), DIGEST_LEN);
    }
}
