//! Faults the emulator injects into matching requests.

use anyhow::Result;

use crate::Emulator;

impl Emulator {
    /// Arms a fault: the next matching requests fail or stall (see [`Fault`]).
    pub async fn inject(&self, fault: &Fault) -> Result<()> {
        self.control("POST", "/_kbha/faults", Some(&fault.to_json())).await.map(drop)
    }

    /// Drops every fault not yet consumed.
    pub async fn clear_faults(&self) -> Result<()> {
        self.control("DELETE", "/_kbha/faults", None).await.map(drop)
    }

    /// Faults not yet consumed.
    pub async fn pending_faults(&self) -> Result<Vec<serde_json::Value>> {
        let v = self.control("GET", "/_kbha/faults", None).await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }
}

/// A fault the emulator applies to the next `count` matching requests, before moto
/// sees them.
///
/// ```
/// # use kbha_test_harness::Fault;
/// let f = Fault::error("route53", 400, "PriorRequestNotComplete").method("POST").path("/rrset/?$").times(2);
/// assert_eq!(f.count, 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fault {
    /// Signing name of the service (`route53`, `s3`, `sns`, `sqs`, `monitoring` for
    /// CloudWatch); `None`: any.
    pub service: Option<String>,
    /// HTTP method; `None`: any.
    pub method: Option<String>,
    /// Regex searched in the request path; `None`: any.
    pub path_regex: Option<String>,
    /// Exact `X-Amz-Target` header (JSON protocols); `None`: any.
    pub target: Option<String>,
    /// HTTP status of the error answer (default 400).
    pub status: Option<u16>,
    /// Error code to answer with; `None`: pass the request on after the delay.
    pub code: Option<String>,
    /// Error message.
    pub message: Option<String>,
    /// Hold the request this long first.
    pub delay_ms: Option<u64>,
    /// Reset the connection (TCP RST, no answer): `before` moto sees the request, or
    /// `after` it handled it (the change is made, the answer is lost).
    pub reset: Option<String>,
    /// How many requests it applies to.
    pub count: u32,
    /// Matching requests let through untouched before it applies.
    pub skip: u32,
}

impl Fault {
    /// Answer once with HTTP `status` and error `code`.
    pub fn error(service: &str, status: u16, code: &str) -> Fault {
        Fault { service: Some(service.into()), status: Some(status), code: Some(code.into()), count: 1, ..Fault::default() }
    }

    /// Hold one request `ms` milliseconds, then pass it on.
    pub fn delay(service: &str, ms: u64) -> Fault {
        Fault { service: Some(service.into()), delay_ms: Some(ms), count: 1, ..Fault::default() }
    }

    /// Reset the connection of one request before the emulator handles it: the
    /// request never arrives.
    pub fn reset(service: &str) -> Fault {
        Fault { service: Some(service.into()), reset: Some("before".into()), count: 1, ..Fault::default() }
    }

    /// Reset the connection of one request after the emulator handled it: the
    /// change is made but the client never hears so.
    pub fn reset_after(service: &str) -> Fault {
        Fault { service: Some(service.into()), reset: Some("after".into()), count: 1, ..Fault::default() }
    }

    /// Only requests with this HTTP method.
    pub fn method(mut self, method: &str) -> Fault {
        self.method = Some(method.into());
        self
    }

    /// Only requests whose path matches this regex.
    pub fn path(mut self, regex: &str) -> Fault {
        self.path_regex = Some(regex.into());
        self
    }

    /// Lets the first `k` matching requests through, then applies (e.g. the second
    /// write of an object, not the first).
    pub fn after(mut self, k: u32) -> Fault {
        self.skip = k;
        self
    }

    /// Applies to `n` requests.
    pub fn times(mut self, n: u32) -> Fault {
        self.count = n;
        self
    }

    fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: serde_json::Value| {
            if !v.is_null() {
                m.insert(k.into(), v);
            }
        };
        put("service", serde_json::json!(self.service));
        put("method", serde_json::json!(self.method));
        put("path_regex", serde_json::json!(self.path_regex));
        put("target", serde_json::json!(self.target));
        put("status", serde_json::json!(self.status));
        put("code", serde_json::json!(self.code));
        put("message", serde_json::json!(self.message));
        put("delay_ms", serde_json::json!(self.delay_ms));
        put("reset", serde_json::json!(self.reset));
        put("count", serde_json::json!(self.count));
        if self.skip > 0 {
            put("skip", serde_json::json!(self.skip));
        }
        serde_json::Value::Object(m)
    }
}
