//! The alert router Lambda binary.
//!
//! Locally: `cargo lambda watch -p kbha-alert-router` with the `KBHA_*` variables set
//! (see docs/alerting.md), then `cargo lambda invoke kbha-alert-router --data-file
//! samples/events/cloudwatch-alarm-sns.json`. Or without a runtime:
//! `cargo kbha replay alerting --event samples/events/cloudwatch-alarm-sns.json`.

use std::sync::Arc;

use kbha_lambda::lambda;
use serde_json::Value;

/// The name in the init record and the metrics' `Function` dimension.
const FUNCTION: &str = "alert-router";

// Without its built-in policy the function would only fail at init, in AWS: refuse to build.
const _: () =
    assert!(kbha_policy_lifecycle::BUILTINS_EMBEDDED, "no built-in policies to embed: run `cargo xtask policies`, then build again");

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let mut init = lambda::InitTimer::start();
    // The same start as `kbha replay`'s; an error fails init, naming what is wrong.
    let started = kbha_alert_router::start(&mut init).await?;
    println!("{}", init.record(FUNCTION));
    let router = started.function;
    lambda::serve(FUNCTION, started.swap, started.store, move |event: Value, inv| {
        let router = Arc::clone(&router);
        async move { router.handle(&event, inv).await }
    })
    .await
}
