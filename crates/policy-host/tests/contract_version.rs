//! A component built against an older version of the contract (`wit/v0.1.0/`, `wit/v0.2.0/`, frozen)
//! is refused at load with an error that names both versions, and one built against the
//! current `wit/kbha.wit` loads. The components are made here from the WIT alone
//! (`wit_component::dummy_module`), so the test needs no guest toolchain.

use anyhow::Result;
use kbha_policy_host::{AlertWorld, CONTRACT_VERSION, FailoverWorld, Limits, PolicyEngine, PolicyError, ReplicationWorld};
use wit_component::{ComponentEncoder, StringEncoding, dummy_module, embed_component_metadata};
use wit_parser::{ManglingAndAbi, Resolve};

/// A component implementing `world` of the WIT package in `dir` (relative to the repository).
fn component(dir: &str, world: &str) -> Result<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve.push_dir(root.join(dir))?;
    let world = resolve.select_world(&[pkg], Some(world))?;
    let mut module = dummy_module(&resolve, world, ManglingAndAbi::Standard32);
    embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8, false)?;
    ComponentEncoder::default().module(&module)?.validate(true).encode()
}

#[test]
fn a_component_of_the_previous_contract_is_refused_naming_both_versions() -> Result<()> {
    let engine = PolicyEngine::new(Limits::default())?;
    for (version, world) in
        ["0.1.0", "0.2.0"].into_iter().flat_map(|v| ["failover-policy", "replication-policy", "alert-policy"].map(|w| (v, w)))
    {
        let old = component(&format!("wit/v{version}"), world)?;
        let err = match world {
            "failover-policy" => engine.load::<FailoverWorld>(&old).err(),
            "replication-policy" => engine.load::<ReplicationWorld>(&old).err(),
            _ => engine.load::<AlertWorld>(&old).err(),
        };
        let Some(err) = err else { panic!("a {version} {world} component loaded") };
        assert!(matches!(err, PolicyError::ContractVersion { .. }), "{world}: {err}");
        let text = err.to_string();
        assert!(text.contains(&format!("kbha:policy@{version}")) && text.contains(&format!("kbha:policy@{CONTRACT_VERSION}")), "{text}");
        assert_eq!(err.kind(), "contract_version");
    }
    Ok(())
}

#[test]
fn a_component_of_the_current_contract_loads() -> Result<()> {
    let engine = PolicyEngine::new(Limits::default())?;
    let current = component("wit", "failover-policy")?;
    engine.load::<FailoverWorld>(&current).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
