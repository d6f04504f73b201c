//! kbha's fuzz targets: the bodies (shared with the corpus replay in `cargo test`) and
//! the alert router's message normaliser, compiled in from its source so the fuzz build
//! does not pull in the router's AWS SDK and wasmtime dependencies.

pub mod bodies;

/// `functions/alert-router/src/normalise.rs`, unchanged.
#[path = "../../functions/alert-router/src/normalise.rs"]
pub mod alert_normalise;
