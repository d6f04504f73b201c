//! Golden cases: every `cases/<name>/input.json` must produce `cases/<name>/expected.json`,
//! natively here, as a component in `kbha-policy-host`'s tests, and through
//! `kbha policy test` in the CLI's tests.
//!
//! Regenerate deliberately with `KBHA_BLESS=1 cargo test -p kbha-policy-business-hours`
//! and review the diff.

use std::path::Path;

use kbha_core::{FailoverDecision, FailoverInput};
use kbha_policy_sdk::testing::golden::{Expected, check};

#[test]
fn golden_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cases");
    check(
        &dir,
        &[
            "alarm-at-night-fails-over",
            "failback-at-noon",
            "failback-in-the-evening-holds",
            "failback-at-0900-exactly",
            "failback-at-1700-exactly-holds",
            "failback-just-before-0900-holds",
            "failback-just-before-1700",
            "evacuation-to-primary-at-night-goes",
        ],
        |input: FailoverInput| match kbha_policy_business_hours::decide(&input.into()) {
            Ok(d) => Expected::Decision(FailoverDecision::from(d)),
            Err(e) => Expected::Refused(e.into()),
        },
    );
}
