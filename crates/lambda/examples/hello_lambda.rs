//! The smallest `lambda_runtime` function: the cold-start baseline of `kbha bench`.
//! An example of this crate so `cargo test`/`cargo build --examples` build it with the
//! same profile as the functions, and so it is not taken for a function to deploy.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move { Ok::<Value, lambda_runtime::Error>(event.payload) })).await
}
