//! Golden cases: every `cases/<name>/input.json` (a `kbha_core::AlertInput`) must
//! produce `cases/<name>/expected.json`, natively here and as a component in
//! `kbha-policy-host`'s tests.
//!
//! Regenerate deliberately with `KBHA_BLESS=1 cargo test -p kbha-policy-alert-default --test golden`
//! and review the diff.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kbha_core::{AlertDecision, AlertInput, PolicyRefusal};
use serde::{Deserialize, Serialize};

/// What a case expects: a decision or a refusal.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Expected {
    Decision(AlertDecision),
    Refused(PolicyRefusal),
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cases")
}

fn run(input: AlertInput) -> Expected {
    match kbha_policy_alert_default::decide(&input.into()) {
        Ok(d) => Expected::Decision(d.into()),
        Err(e) => Expected::Refused(e.into()),
    }
}

#[test]
fn golden_cases() -> Result<()> {
    let bless = std::env::var_os("KBHA_BLESS").is_some();
    let mut names = vec![];
    for entry in std::fs::read_dir(cases_dir())? {
        let dir = entry?.path();
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let input: AlertInput = serde_json::from_slice(&std::fs::read(dir.join("input.json"))?)
            .with_context(|| format!("case `{name}`: input.json"))?;
        let got = run(input);
        let expected_path = dir.join("expected.json");
        if bless {
            std::fs::write(&expected_path, serde_json::to_string_pretty(&got)? + "\n")?;
        } else {
            let expected: Expected = serde_json::from_slice(
                &std::fs::read(&expected_path)
                    .with_context(|| format!("case `{name}`: expected.json"))?,
            )
            .with_context(|| format!("case `{name}`: expected.json"))?;
            assert_eq!(got, expected, "case `{name}`");
        }
        names.push(name);
    }
    // The cases must exist, so deleting one fails here.
    for required in [
        "critical-alarm-routes-to-critical",
        "maintenance-window-suppresses",
        "region-down-inhibits-same-region",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "missing golden case `{required}`"
        );
    }
    Ok(())
}
