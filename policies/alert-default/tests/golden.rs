//! Golden cases: every `cases/<name>/input.json` (a `kbha_core::AlertInput`) must
//! produce `cases/<name>/expected.json`, natively here and as a component in
//! `kbha-policy-host`'s tests.
//!
//! Regenerate deliberately with `KBHA_BLESS=1 cargo test -p kbha-policy-alert-default --test golden`
//! and review the diff.

use std::path::Path;

use kbha_core::{AlertDecision, AlertInput};
use kbha_policy_sdk::testing::golden::{Expected, check};

#[test]
fn golden_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cases");
    // The cases must exist, so deleting one fails here.
    let required = ["critical-alarm-routes-to-critical", "maintenance-window-suppresses", "region-down-inhibits-same-region"];
    check(&dir, &required, |input: AlertInput| match kbha_policy_alert_default::decide(&input.into()) {
        Ok(d) => Expected::Decision(AlertDecision::from(d)),
        Err(e) => Expected::Refused(e.into()),
    });
}
