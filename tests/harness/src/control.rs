//! The emulator's control API (`/_kbha/...`): health-check status, change
//! propagation, and the change batches a zone accepted.

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Emulator;

impl Emulator {
    /// Sends one request to the emulator's control API and returns the JSON answer.
    pub async fn control(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> Result<serde_json::Value> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream =
            tokio::net::TcpStream::connect(("127.0.0.1", self.port())).await.context("connecting to the emulator's control API")?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port(),
            body.len()
        );
        stream.write_all(req.as_bytes()).await?;
        let mut resp = Vec::new();
        stream.read_to_end(&mut resp).await?;
        let resp = String::from_utf8_lossy(&resp);
        let (head, payload) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if status != "200" {
            bail!("control {method} {path} answered {status}: {payload}");
        }
        serde_json::from_str(payload).with_context(|| format!("control answer: {payload}"))
    }

    /// Makes every checker of `health_check_id` report success (`true`) or failure.
    pub async fn set_health(&self, health_check_id: &str, healthy: bool) -> Result<()> {
        let status = if healthy { "healthy" } else { "unhealthy" };
        self.control("PUT", &format!("/_kbha/health-checks/{health_check_id}"), Some(&serde_json::json!({ "status": status })))
            .await
            .map(drop)
    }

    /// Makes `failing` of the emulator's 8 checkers report failure for the health check.
    pub async fn set_failing_checkers(&self, health_check_id: &str, failing: u32) -> Result<()> {
        self.control("PUT", &format!("/_kbha/health-checks/{health_check_id}"), Some(&serde_json::json!({ "failing_checkers": failing })))
            .await
            .map(drop)
    }

    /// How many GetChange reads report a change PENDING before INSYNC, for changes made
    /// afterwards (the emulator's default is 1; 0: INSYNC at once).
    pub async fn set_change_pending_reads(&self, n: u32) -> Result<()> {
        self.control("PUT", "/_kbha/change-propagation", Some(&serde_json::json!({ "pending_reads": n }))).await.map(drop)
    }

    /// Comments of every change batch `zone_id` accepted, in order: counts changes,
    /// which the records' end state cannot (a repeated change leaves the same weights).
    pub async fn change_comments(&self, zone_id: &str) -> Result<Vec<String>> {
        let v = self.control("GET", &format!("/_kbha/changes/{zone_id}"), None).await?;
        Ok(v["comments"].as_array().map(|a| a.iter().map(|c| c.as_str().unwrap_or_default().to_owned()).collect()).unwrap_or_default())
    }
}
