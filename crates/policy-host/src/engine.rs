//! The engine: wasmtime's configuration (fuel, the pooling allocator, no
//! component-model concurrency), the linker with the host's imports, and a fresh
//! store per decision.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, Store};

use crate::sandbox::State;
use crate::{Limits, PolicyError, bindings};

/// The wasmtime engine plus kbha's limits; cheap to clone, share one per
/// process.
#[derive(Clone)]
pub struct PolicyEngine {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<State>>,
    pub(crate) limits: Limits,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// A wasmtime failure that is the host's, not the policy's.
pub(crate) fn host_err(e: wasmtime::Error) -> PolicyError {
    PolicyError::Host(format!("{e:#}"))
}

impl PolicyEngine {
    /// An engine with fuel metering, the pooling allocator sized from
    /// `limits`, and no component-model concurrency (policies are plain
    /// synchronous functions).
    pub fn new(limits: Limits) -> Result<Self, PolicyError> {
        if limits.wasi && !crate::WASI_BUILT_IN {
            return Err(PolicyError::Host(format!(
                "WASI was asked for (`Limits::wasi`, `KBHA_POLICY_WASI=on`), but {}",
                crate::WASI_NOT_BUILT_IN
            )));
        }
        let engine = Engine::new(&config(&limits)).map_err(host_err)?;
        let mut linker = Linker::new(&engine);
        bindings::host::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s).map_err(host_err)?;
        #[cfg(feature = "wasi")]
        if limits.wasi {
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(host_err)?;
        }
        Ok(Self { engine, linker: Arc::new(linker), limits })
    }
}

/// wasmtime's configuration for `limits`: one function, so an engine compiling for another
/// target ([`PolicyEngine::precompile_for_target`]) makes artifacts this engine accepts.
pub(crate) fn config(limits: &Limits) -> wasmtime::Config {
    {
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
            .max_memory_size(limits.memory_bytes);
        // Fiber stacks serve async calls only, which policies never make; the default
        // 1000 slots cost ~1000 mprotect calls at engine creation (cold start). They
        // exist with wasmtime's `async` feature, which only wasmtime-wasi turns on.
        #[cfg(feature = "wasi")]
        pool.total_stacks(n);
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
        // Measured and not kept: explicit bounds checks instead of guard pages
        // (`signals_based_traps(false)`, `memory_guard_size(0)`) saved ~5 µs of a fresh
        // instance (no mprotect and TLB flush when a grown memory's slot is reused), but
        // wasmtime then needs Cranelift's Spectre heap mitigation off; the sandbox keeps it.
        config.consume_fuel(true).concurrency_support(false).allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        config
    }
}

impl PolicyEngine {
    /// The limits every evaluation runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A fresh store for one decision taken at `now_ms`.
    pub(crate) fn store(&self, now_ms: i64) -> Result<Store<State>, PolicyError> {
        let mut store = Store::new(&self.engine, State::new(&self.limits, now_ms));
        store.limiter(|s| s);
        store.set_fuel(self.limits.fuel).map_err(host_err)?;
        Ok(store)
    }
}
