//! The replication verifier Lambda binary.
//!
//! Locally: `cargo lambda watch -p kbha-replication-verifier` with the `KBHA_*` variables
//! set (see docs/replication.md), then `cargo lambda invoke kbha-replication-verifier --data-file
//! samples/events/s3-object-created.json`. Or without a runtime:
//! `cargo kbha replay replication --event samples/events/s3-object-created.json`.

use std::sync::Arc;

use kbha_lambda::lambda;
use serde_json::Value;

/// The name in the init record and the metrics' `Function` dimension.
const FUNCTION: &str = "replication-verifier";

// Without its built-in policy the function would only fail at init, in AWS: refuse to build.
const _: () =
    assert!(kbha_policy_lifecycle::BUILTINS_EMBEDDED, "no built-in policies to embed: run `cargo xtask policies`, then build again");

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let mut init = lambda::InitTimer::start();
    // The same start as `kbha replay`'s; an error fails init, naming what is wrong.
    let started = kbha_replication_verifier::start(&mut init).await?;
    println!("{}", init.record(FUNCTION));
    let function = started.function;
    lambda::serve(FUNCTION, started.swap, started.store, move |event: Value, inv| {
        let function = Arc::clone(&function);
        async move { function.handle(&event, inv).await }
    })
    .await
}
