//! Small constructors and the logging helper.

use crate::types::{Alert, Severity};

/// An alert with the given severity. `summary` names the condition and what it is about
/// (`` kbha: failover to `secondary` blocked by RPO ``); put ages, counts and times in
/// `detail`. The failover host identifies a standing condition by its summary without its
/// numbers, and announces it once while it lasts.
pub fn new_alert(severity: Severity, summary: impl Into<String>, detail: impl Into<String>) -> Alert {
    Alert { severity, summary: summary.into(), detail: detail.into() }
}

/// A `critical` alert (pages someone now).
pub fn critical(summary: impl Into<String>, detail: impl Into<String>) -> Alert {
    new_alert(Severity::Critical, summary, detail)
}

/// A `warning` alert (needs attention during working hours).
pub fn warning(summary: impl Into<String>, detail: impl Into<String>) -> Alert {
    new_alert(Severity::Warning, summary, detail)
}

/// An `info` alert (for the record).
pub fn info(summary: impl Into<String>, detail: impl Into<String>) -> Alert {
    new_alert(Severity::Info, summary, detail)
}

/// Sends one line to the host log; used by [`log!`](crate::log!).
///
/// On wasm32 this calls the `host.log` import. Natively (unit tests) the
/// generated import is a stub that panics, so the line goes to stderr instead.
pub fn write_log(level: crate::types::Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[policy {level:?}] {message}");
}

/// Logs a formatted line through the host: `log!(Info, "shifted {}", n)`.
///
/// The first argument is a [`Level`](crate::types::Level) variant name
/// (`Debug`, `Info`, `Warn`, `Error`). The host keeps a per-decision line
/// budget; lines beyond it are dropped.
#[macro_export]
macro_rules! log {
    ($level:ident, $($arg:tt)+) => {
        $crate::helpers_write_log($crate::types::Level::$level, &::std::format!($($arg)+))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_set_severity() {
        assert_eq!(critical("a", "b").severity, Severity::Critical);
        assert_eq!(warning("a", "b").severity, Severity::Warning);
        let i = info("s", "d");
        assert_eq!((i.severity, i.summary.as_str(), i.detail.as_str()), (Severity::Info, "s", "d"));
    }

    #[test]
    fn log_macro_runs_natively() {
        // Natively the line goes to stderr instead of the (absent) host import.
        crate::log!(Info, "decided {}", 1);
    }
}
