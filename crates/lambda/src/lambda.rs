//! The Lambda entry the three function binaries share: logging as Lambda's logging
//! configuration asks, the init record (where cold-start time goes), and the runtime loop
//! that checks a warm S3 policy for a new version before each event and hands each event
//! to the function with its [`Invocation`] (decision time and request id).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use kbha_aws::ObjectStore;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::record::Invocation;
use kbha_policy_lifecycle::{Kind, LoadError, SwappablePolicy};

use crate::SettingError;

/// Why a function could not start. Its Lambda init fails with it, and `kbha replay`, which
/// starts the function the same way, exits with it.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A configuration variable is missing or wrong; the message names it.
    #[error("{0}")]
    Config(Box<dyn std::error::Error + Send + Sync>),
    /// The configured policy could not be loaded and its fallback does not allow a start.
    #[error(transparent)]
    Policy(#[from] LoadError),
}

impl From<SettingError> for InitError {
    fn from(e: SettingError) -> Self {
        InitError::Config(Box::new(e))
    }
}

/// A function as its Lambda `main` starts it: the handler, the policy to re-check while
/// warm (an S3 policy; `None` for the built-in one) and the store that re-check reads.
pub struct Started<F, K: Kind, S> {
    /// The function, ready for events.
    pub function: Arc<F>,
    /// Its S3 policy, re-checked and swapped while warm ([`serve`]).
    pub swap: Option<Arc<SwappablePolicy<K>>>,
    /// The store the policy is read from.
    pub store: S,
}

/// How the `tracing` lines are logged: the variables `lambda_runtime`'s default subscriber
/// reads (`lambda_runtime::tracing::init_default_subscriber`), which Lambda sets from the
/// function's `LoggingConfig`, with two differences: `AWS_LAMBDA_LOG_LEVEL` does take
/// precedence over `RUST_LOG` (there it is only the default when `RUST_LOG` is unset, and the
/// functions deploy with `RUST_LOG=info`), and lines are JSON unless `AWS_LAMBDA_LOG_FORMAT`
/// asks for text (there text unless it asks for JSON, with ANSI colours). Decision records,
/// the init record and the EMF lines are printed whole, whatever these say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// `tracing_subscriber::EnvFilter` directives.
    pub filter: String,
    /// JSON lines (else plain text, without colours).
    pub json: bool,
}

impl LogSettings {
    /// From the process environment: `AWS_LAMBDA_LOG_LEVEL`, `RUST_LOG`, `AWS_LAMBDA_LOG_FORMAT`.
    pub fn from_env() -> LogSettings {
        let var = |name: &str| std::env::var(name).ok();
        Self::from_vars(var("AWS_LAMBDA_LOG_LEVEL").as_deref(), var("RUST_LOG").as_deref(), var("AWS_LAMBDA_LOG_FORMAT").as_deref())
    }

    /// `level` (`AWS_LAMBDA_LOG_LEVEL`: `TRACE`, `DEBUG`, `INFO`, `WARN`, `ERROR`, `FATAL`,
    /// any case) when set, for every target (`FATAL` is `error`, tracing has no higher level;
    /// an unknown level is `info`); else the `rust_log` directives; else `info`. JSON unless
    /// `format` (`AWS_LAMBDA_LOG_FORMAT`) is `Text`.
    pub fn from_vars(level: Option<&str>, rust_log: Option<&str>, format: Option<&str>) -> LogSettings {
        fn set(v: Option<&str>) -> Option<&str> {
            v.map(str::trim).filter(|v| !v.is_empty())
        }
        let filter = match set(level).map(str::to_ascii_lowercase) {
            Some(l) => match l.as_str() {
                "trace" | "debug" | "info" | "warn" | "error" => l,
                "fatal" => "error".to_owned(),
                _ => "info".to_owned(),
            },
            None => set(rust_log).unwrap_or("info").to_owned(),
        };
        let json = !set(format).is_some_and(|f| f.eq_ignore_ascii_case("text"));
        LogSettings { filter, json }
    }
}

/// Logs `tracing` lines on stdout as [`LogSettings::from_env`] says; the time is left out
/// because Lambda's log adds it.
pub fn init_logging() {
    use lambda_runtime::tracing::subscriber::{EnvFilter, filter::LevelFilter, fmt};
    let settings = LogSettings::from_env();
    let filter = EnvFilter::builder().with_default_directive(LevelFilter::INFO.into()).parse_lossy(&settings.filter);
    let subscriber = fmt().with_env_filter(filter).with_ansi(false).without_time();
    if settings.json {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
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
/// they started with. `handle` gets the raw event and its [`Invocation`]: the time it is
/// decided at and Lambda's request id, which each decision record carries; after it, one
/// EMF line ([`crate::emf`]) counts the decisions for `function`'s metrics.
pub async fn serve<K, S, F, Fut, R, E>(
    function: &'static str,
    swap: Option<Arc<SwappablePolicy<K>>>,
    store: S,
    handle: F,
) -> Result<(), lambda_runtime::Error>
where
    K: Kind,
    S: ObjectStore + Clone + Send + Sync + 'static,
    F: Fn(Value, Invocation) -> Fut + Send + Sync + 'static,
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
            invoke(function, &*handle, event, now_ms()).await
        }
    }))
    .await
}

/// One event, decided at `now_ms`: `handle` gets its payload and the [`Invocation`] with the
/// request id of its context; then the EMF line.
async fn invoke<F, Fut, R, E>(function: &str, handle: &F, event: LambdaEvent<Value>, now_ms: i64) -> Result<R, E>
where
    F: Fn(Value, Invocation) -> Fut,
    Fut: Future<Output = Result<R, E>>,
    R: Serialize,
{
    let (payload, context) = event.into_parts();
    let output = handle(payload, Invocation::lambda(now_ms, context.request_id)).await?;
    match serde_json::to_value(&output) {
        Ok(records) => println!("{}", crate::emf::metrics_line(function, &records, now_ms)),
        Err(e) => tracing::warn!(error = %e, "decision records do not serialise; no metrics for this invocation"),
    }
    Ok(output)
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

    #[tokio::test]
    async fn the_handler_gets_the_lambda_request_id_and_the_decision_time() {
        let mut context = lambda_runtime::Context::default();
        context.request_id = "8f5e2c1a-0d3b-4c7e-9a61-2b4f7d9e0c13".to_owned();
        let event = LambdaEvent::new(json!({"id": "e-1"}), context);
        // A handler that records what it was given, as the functions' handlers do.
        let handle = |payload: Value, inv: Invocation| async move {
            Ok::<_, std::convert::Infallible>(vec![json!({
                "record": "kbha.decision", "function": "failover", "event_id": payload["id"], "request_id": inv.request_id,
                "now_ms": inv.now_ms, "policy": null,
            })])
        };
        let records = invoke("failover", &handle, event, 1_767_225_600_000).await.unwrap_or_default();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0]["request_id"], "8f5e2c1a-0d3b-4c7e-9a61-2b4f7d9e0c13");
        assert_eq!((records[0]["event_id"].clone(), records[0]["now_ms"].clone()), (json!("e-1"), json!(1_767_225_600_000_i64)));
    }

    #[test]
    fn an_invocation_outside_lambda_has_no_request_id_and_an_empty_one_is_none() {
        assert_eq!(Invocation::at(5), Invocation { now_ms: 5, request_id: None });
        assert_eq!(Invocation::lambda(5, "r-1").request_id.as_deref(), Some("r-1"));
        assert_eq!(Invocation::lambda(5, "").request_id, None);
    }

    #[test]
    fn the_lambda_log_level_wins_over_rust_log_and_lines_are_json_unless_text_is_asked() {
        let s = |level, rust_log, format| LogSettings::from_vars(level, rust_log, format);
        let ls = |filter: &str, json| LogSettings { filter: filter.to_owned(), json };
        // Nothing set (a local run, a function without a LoggingConfig): info, JSON.
        assert_eq!(s(None, None, None), ls("info", true));
        assert_eq!(s(None, Some("kbha_failover=debug,info"), None), ls("kbha_failover=debug,info", true));
        // ApplicationLogLevel DEBUG while the template still sets RUST_LOG=info: DEBUG.
        assert_eq!(s(Some("DEBUG"), Some("info"), Some("JSON")), ls("debug", true));
        assert_eq!(s(Some("WARN"), None, Some("json")), ls("warn", true));
        assert_eq!(s(Some("FATAL"), None, None), ls("error", true));
        assert_eq!(s(Some("LOUD"), Some("trace"), None), ls("info", true), "an unknown level is info");
        assert_eq!(s(Some(" "), Some("trace"), None), ls("trace", true), "blank is unset");
        assert_eq!(s(None, None, Some("Text")), ls("info", false));
        assert_eq!(s(None, None, Some("TEXT")), ls("info", false));
    }

    #[test]
    fn now_is_after_this_code_was_written() {
        // 2026-01-01T00:00:00Z: a clock reading before it means the conversion is wrong.
        assert!(now_ms() > 1_767_225_600_000);
    }
}
