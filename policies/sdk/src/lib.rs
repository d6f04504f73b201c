//! Guest SDK for kbha policies.
//!
//! A policy is a WebAssembly component implementing one world of
//! `wit/kbha.wit`. This crate carries the generated bindings and a few helpers,
//! so a policy crate only writes its decision function:
//!
//! ```ignore
//! use kbha_policy_sdk::failover::{FailoverDecision, FailoverInput, Guest};
//! use kbha_policy_sdk::types::PolicyError;
//!
//! struct MyPolicy;
//! impl Guest for MyPolicy {
//!     fn decide(input: FailoverInput) -> Result<FailoverDecision, PolicyError> { todo!() }
//! }
//! #[cfg(target_arch = "wasm32")]
//! kbha_policy_sdk::export_failover_policy!(MyPolicy);
//! ```
//!
//! Enable exactly one world feature per guest crate (`failover`, `replication`
//! or `alert`): a component carries only the world it implements.
//! The `testing` feature (native only) converts between these generated types
//! and `kbha-core`'s JSON types, for unit tests and golden cases.

// The export macros name this crate by path; this makes that path resolve
// inside the crate too.
extern crate self as kbha_policy_sdk;

mod config;
#[cfg(all(target_arch = "wasm32", feature = "allocator"))]
mod heap;
mod helpers;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::Config;
#[doc(hidden)]
pub use helpers::write_log as helpers_write_log;
pub use helpers::{critical, info, new_alert, warning};

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Bindings shared by every world: the `types` interface and the `host.log`
/// import. Generated once, so helpers work whatever world a policy implements.
#[allow(missing_docs)]
mod shared {
    wit_bindgen::generate!({
        path: "../../wit",
        inline: "
            package kbha:sdk;
            world shared {
                import kbha:policy/host@0.3.0;
                use kbha:policy/types@0.3.0.{config-entry};
            }
        ",
        world: "kbha:sdk/shared",
        runtime_path: "kbha_policy_sdk::__wit_bindgen::rt",
        generate_all,
        generate_unused_types: true,
        additional_derives: [PartialEq, Eq],
    });
}

/// The shared WIT types (`kbha:policy/types@0.3.0`).
pub use shared::kbha::policy::types;

/// The host import (`kbha:policy/host@0.3.0`); prefer [`log!`] over calling it.
pub use shared::kbha::policy::host;

/// The `failover-policy` world: implement [`failover::Guest`] and export it
/// with [`export_failover_policy!`].
#[cfg(feature = "failover")]
pub mod failover {
    #![allow(missing_docs)]
    wit_bindgen::generate!({
        path: "../../wit",
        world: "kbha:policy/failover-policy@0.3.0",
        runtime_path: "kbha_policy_sdk::__wit_bindgen::rt",
        with: {
            "kbha:policy/types@0.3.0": crate::types,
            "kbha:policy/host@0.3.0": crate::host,
        },
        pub_export_macro: true,
        export_macro_name: "export_failover_policy",
        default_bindings_module: "kbha_policy_sdk::failover",
    });
}

/// The `replication-policy` world: implement [`replication::Guest`] and export
/// it with [`export_replication_policy!`].
#[cfg(feature = "replication")]
pub mod replication {
    #![allow(missing_docs)]
    wit_bindgen::generate!({
        path: "../../wit",
        world: "kbha:policy/replication-policy@0.3.0",
        runtime_path: "kbha_policy_sdk::__wit_bindgen::rt",
        with: {
            "kbha:policy/types@0.3.0": crate::types,
            "kbha:policy/host@0.3.0": crate::host,
        },
        pub_export_macro: true,
        export_macro_name: "export_replication_policy",
        default_bindings_module: "kbha_policy_sdk::replication",
    });
}

/// The `alert-policy` world: implement [`alert::Guest`] and export it with
/// [`export_alert_policy!`].
#[cfg(feature = "alert")]
pub mod alert {
    #![allow(missing_docs)]
    wit_bindgen::generate!({
        path: "../../wit",
        world: "kbha:policy/alert-policy@0.3.0",
        runtime_path: "kbha_policy_sdk::__wit_bindgen::rt",
        with: {
            "kbha:policy/types@0.3.0": crate::types,
            "kbha:policy/host@0.3.0": crate::host,
        },
        pub_export_macro: true,
        export_macro_name: "export_alert_policy",
        default_bindings_module: "kbha_policy_sdk::alert",
    });
}

/// Exports a [`failover::Guest`] implementation as the component's `decide`:
/// `kbha_policy_sdk::export_failover_policy!(MyPolicy);` (on wasm32 only).
#[cfg(feature = "failover")]
#[macro_export]
macro_rules! export_failover_policy {
    ($ty:ident) => {
        $crate::failover::export_failover_policy!($ty);
    };
}

/// Exports a [`replication::Guest`] implementation as the component's
/// `decide`: `kbha_policy_sdk::export_replication_policy!(MyPolicy);`.
#[cfg(feature = "replication")]
#[macro_export]
macro_rules! export_replication_policy {
    ($ty:ident) => {
        $crate::replication::export_replication_policy!($ty);
    };
}

/// Exports an [`alert::Guest`] implementation as the component's `decide`:
/// `kbha_policy_sdk::export_alert_policy!(MyPolicy);`.
#[cfg(feature = "alert")]
#[macro_export]
macro_rules! export_alert_policy {
    ($ty:ident) => {
        $crate::alert::export_alert_policy!($ty);
    };
}
