//! Golden cases: every `cases/<name>/input.json` (a `kbha_core::ReplicationInput`) must
//! produce `cases/<name>/expected.json`, natively here and as a component in
//! `kbha-policy-host`'s tests.
//!
//! Regenerate deliberately with `KBHA_BLESS=1 cargo test -p kbha-policy-replication-default --test golden`
//! and review the diff.

use std::path::Path;

use kbha_core::{ReplicationDecision, ReplicationInput};
use kbha_policy_sdk::testing::golden::{Expected, check};

#[test]
fn golden_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cases");
    check(&dir, &["good-backup-ok", "checksum-mismatch-corrupt", "dead-man-no-backup-breach"], |input: ReplicationInput| {
        match kbha_policy_replication_default::decide(&input.into()) {
            Ok(d) => Expected::Decision(ReplicationDecision::from(d)),
            Err(e) => Expected::Refused(e.into()),
        }
    });
}
