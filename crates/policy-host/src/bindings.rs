//! The only `bindgen!` over `wit/`: one module per world, sharing the `types`
//! and `host` interfaces generated in the failover module.

#![allow(missing_docs)]

pub mod failover {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "kbha:policy/failover-policy@0.3.0",
    });
}

pub mod replication {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "kbha:policy/replication-policy@0.3.0",
        with: {
            "kbha:policy/types@0.3.0": super::failover::kbha::policy::types,
            "kbha:policy/host@0.3.0": super::failover::kbha::policy::host,
        },
    });
}

pub mod alert {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "kbha:policy/alert-policy@0.3.0",
        with: {
            "kbha:policy/types@0.3.0": super::failover::kbha::policy::types,
            "kbha:policy/host@0.3.0": super::failover::kbha::policy::host,
        },
    });
}

pub use failover::kbha::policy::{host, types};
