//! The Lambda entry the three function binaries share: JSON logs, the init record
//! (where cold-start time goes), and the runtime loop that checks a warm S3 policy
//! for a new version before each event.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use kbha_aws::ObjectStore;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{Kind, SwappablePolicy};

/// JSON logs filtered by `RUST_LOG`; the time is left out because Lambda's log adds it.
pub fn init_logging() {
    tracing_subscriber::fmt().json().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).without_time().init();
}

/// Wall-clock milliseconds since the Unix epoch: the `now` every decision is made at.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Times the steps of a function's init, so a slow cold start says which step it was.
#[derive(Debug)]
pub struct InitTimer {
    start: Instant,
    last: Instant,
    steps: Vec<(&'static str, f64)>,
}

impl Default for InitTimer {
    fn default() -> Self {
        Self::start()
    }
}

impl InitTimer {
    /// Starts timing; the first step runs from here.
    pub fn start() -> InitTimer {
        let now = Instant::now();
        InitTimer { start: now, last: now, steps: Vec::new() }
    }

    /// Ends the current step under `name`; the next one starts now.
    pub fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.steps.push((name, (now - self.last).as_secs_f64() * 1e3));
        self.last = now;
    }

    /// The `kbha.init` record: each step's milliseconds by name, and the total.
    pub fn record(&self, function: &str) -> Value {
        let steps: Map<String, Value> = self.steps.iter().map(|(name, ms)| ((*name).to_owned(), json!(round3(*ms)))).collect();
        json!({
            "record": "kbha.init",
            "function": function,
            "steps_ms": steps,
            "total_ms": round3((self.last - self.start).as_secs_f64() * 1e3),
        })
    }
}

fn round3(ms: f64) -> f64 {
    (ms * 1e3).round() / 1e3
}

/// Runs the Lambda loop. Before each event an S3 policy (if any) is checked for a new
/// version, at most every `KBHA_POLICY_CHECK_SECONDS`; events in flight keep the policy
/// they started with. `handle` gets the raw event and the time it is decided at; after
/// it, one EMF line ([`crate::emf`]) counts the decisions for `function`'s metrics.
pub async fn serve<K, S, F, Fut, R, E>(
    function: &'static str,
    swap: Option<Arc<SwappablePolicy<K>>>,
    store: S,
    handle: F,
) -> Result<(), lambda_runtime::Error>
where
    K: Kind,
    S: ObjectStore + Clone + Send + Sync + 'static,
    F: Fn(Value, i64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send,
    R: Serialize + Send,
    E: Into<Diagnostic> + std::fmt::Debug,
{
    let handle = Arc::new(handle);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (handle, swap, store) = (Arc::clone(&handle), swap.clone(), store.clone());
        async move {
            if let Some(swap) = &swap {
                swap.refresh(&store, now_ms()).await;
            }
            let now = now_ms();
            let output = handle(event.payload, now).await?;
            match serde_json::to_value(&output) {
                Ok(records) => println!("{}", crate::emf::metrics_line(function, &records, now)),
                Err(e) => tracing::warn!(error = %e, "decision records do not serialise; no metrics for this invocation"),
            }
            Ok::<R, E>(output)
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_record_names_each_step_and_they_add_up_to_the_total() {
        let mut t = InitTimer::start();
        std::thread::sleep(std::time::Duration::from_millis(3));
        t.mark("config");
        std::thread::sleep(std::time::Duration::from_millis(2));
        t.mark("policy");
        let r = t.record("failover");
        assert_eq!(r["record"], "kbha.init");
        assert_eq!(r["function"], "failover");
        let steps = r["steps_ms"].as_object().expect("steps");
        assert_eq!(steps.len(), 2, "{r}");
        let config = steps["config"].as_f64().expect("ms");
        let policy = steps["policy"].as_f64().expect("ms");
        assert!(config >= 3.0 && policy >= 2.0, "{r}");
        let total = r["total_ms"].as_f64().expect("ms");
        assert!((total - (config + policy)).abs() < 0.01, "{r}");
    }

    #[test]
    fn now_is_after_this_code_was_written() {
        // 2026-01-01T00:00:00Z: a clock reading before it means the conversion is wrong.
        assert!(now_ms() > 1_767_225_600_000);
    }
}
