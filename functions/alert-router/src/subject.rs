//! The SNS Subject of a delivery: readable in a mail client's list, within SNS's
//! limits (ASCII printable, no line breaks, fewer than 100 characters).

use kbha_core::Severity;

use crate::dedup::DeliveryKind;

/// SNS wants subjects shorter than 100 characters.
pub const MAX_SUBJECT_CHARS: usize = 99;

/// `[kbha critical] ALARM: kbha-api-primary-unhealthy in us-east-1`, with
/// `[kbha critical, repeat]` for a repeat and `[kbha resolved]` for a resolution.
pub fn subject(kind: DeliveryKind, severity: Severity, summary: &str) -> String {
    let tag = match kind {
        DeliveryKind::Firing => format!("[kbha {}]", severity.as_str()),
        DeliveryKind::Repeat => format!("[kbha {}, repeat]", severity.as_str()),
        DeliveryKind::Resolved => "[kbha resolved]".to_owned(),
    };
    sns_safe(&format!("{tag} {summary}"))
}

/// ASCII printable only (other characters become `?`, line breaks and tabs spaces,
/// runs of spaces one), trimmed, cut to [`MAX_SUBJECT_CHARS`] with `...`, never empty.
pub fn sns_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(128));
    for c in s.chars() {
        let c = match c {
            ' '..='~' => c,
            '\r' | '\n' | '\t' => ' ',
            _ => '?',
        };
        if !(c == ' ' && (out.is_empty() || out.ends_with(' '))) {
            out.push(c);
        }
    }
    let out = out.trim_end();
    // ASCII only by now, so byte length is character count.
    let cut = if out.len() > MAX_SUBJECT_CHARS { format!("{}...", out[..MAX_SUBJECT_CHARS - 3].trim_end()) } else { out.to_owned() };
    if cut.is_empty() { "kbha alert".to_owned() } else { cut }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_say_severity_and_kind() {
        let s = "ALARM: kbha-api-primary-unhealthy in us-east-1";
        assert_eq!(subject(DeliveryKind::Firing, Severity::Critical, s), "[kbha critical] ALARM: kbha-api-primary-unhealthy in us-east-1");
        assert!(subject(DeliveryKind::Repeat, Severity::Warning, s).starts_with("[kbha warning, repeat] ALARM"));
        assert!(subject(DeliveryKind::Resolved, Severity::Critical, "OK: x").starts_with("[kbha resolved] OK: x"));
    }

    #[test]
    fn subjects_stay_within_sns_limits() {
        let long = subject(DeliveryKind::Firing, Severity::Info, &format!("été\n{}\tend", "x".repeat(300)));
        assert_eq!(long.len(), MAX_SUBJECT_CHARS);
        assert!(long.ends_with("..."));
        assert!(long.starts_with("[kbha info] ?t? xxx"), "{long}");
        assert!(long.chars().all(|c| (' '..='~').contains(&c)));
        assert_eq!(sns_safe(" \n "), "kbha alert");
        assert_eq!(sns_safe("a   b"), "a b");
    }
}
