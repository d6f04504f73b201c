//! Golden cases: every `cases/<name>/input.json` (a `kbha_core::FailoverInput`)
//! must produce `cases/<name>/expected.json`, natively here and as a component
//! in `kbha-policy-host`'s tests.
//!
//! Regenerate deliberately with `KBHA_BLESS=1 cargo test -p kbha-policy-failover-default`
//! and review the diff.

use std::path::Path;

use kbha_core::{FailoverDecision, FailoverInput};
use kbha_policy_sdk::testing::golden::{Expected, check};

#[test]
fn golden_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cases");
    // The "done when" cases must exist, so deleting one fails here.
    check(&dir, &["primary-alarm-shifts-to-secondary", "both-unhealthy-holds"], |input: FailoverInput| {
        match kbha_policy_failover_default::decide(&input.into()) {
            Ok(d) => Expected::Decision(FailoverDecision::from(d)),
            Err(e) => Expected::Refused(e.into()),
        }
    });
}
