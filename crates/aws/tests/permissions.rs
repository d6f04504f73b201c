//! Every AWS SDK operation this crate calls is listed in `infra/permissions.toml` with the
//! IAM actions it needs, and every listed operation is still called: the template's roles
//! are checked against that list (infra/check_template.py), so a call added here without
//! its permission fails this test rather than AccessDenied in AWS.

use std::collections::BTreeSet;
use std::path::Path;

/// The `client.<operation>()` calls in `src`, whitespace and line breaks allowed around the dot.
fn operations_called(src: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = src;
    while let Some(at) = rest.find("client") {
        rest = &rest[at + "client".len()..];
        let after = rest.trim_start();
        let Some(after) = after.strip_prefix('.') else { continue };
        let after = after.trim_start();
        let name: String = after.chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        if !name.is_empty() && after[name.len()..].starts_with("()") {
            found.insert(name);
        }
    }
    found
}

#[test]
fn the_scanner_finds_calls_across_lines_and_ignores_fields() {
    let src = "let a = self\n    .client\n    .get_object()\n; client.put_object().send(); self.client.clone_from; client . head_object ()";
    let got: Vec<_> = operations_called(src).into_iter().collect();
    assert_eq!(got, ["get_object", "put_object"]);
}

#[test]
fn every_sdk_call_has_its_permissions_listed_and_every_listed_call_is_made() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut called = BTreeSet::new();
    for entry in std::fs::read_dir(root.join("src"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            called.extend(operations_called(&std::fs::read_to_string(&path)?));
        }
    }
    assert!(called.len() >= 10, "the scan found only {called:?}: has the calling style changed?");
    let perms: toml::Table = std::fs::read_to_string(root.join("../../infra/permissions.toml"))?.parse()?;
    let listed: BTreeSet<String> = perms["operations"].as_table().map(|t| t.keys().cloned().collect()).unwrap_or_default();
    let unlisted: Vec<_> = called.difference(&listed).collect();
    assert!(unlisted.is_empty(), "SDK calls without permissions in infra/permissions.toml [operations]: {unlisted:?}");
    let stale: Vec<_> = listed.difference(&called).collect();
    assert!(stale.is_empty(), "infra/permissions.toml lists operations nothing calls: {stale:?}");
    Ok(())
}
