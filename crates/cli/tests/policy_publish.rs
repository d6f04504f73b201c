//! `kbha policy keygen` + `kbha policy publish --sign` against the S3 emulator, then the
//! printed configuration loaded through kbha-policy-lifecycle exactly as a function loads it; a
//! tampered object is refused. Needs `cargo xtask policies` (target/policies).

use std::process::Command;

use anyhow::{Context, Result, bail};
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use kbha_aws::S3Store;
use kbha_lambda::Env;
use kbha_policy_lifecycle::{Failover, Kind, PolicySource, load_swappable};
use kbha_test_harness::{Emulator, repo_root};

const BUCKET: &str = "policies";
const KEY: &str = "failover/current.wasm";

/// Runs kbha with the emulator's credentials; returns (success, stdout, stderr).
fn kbha(emu: &Emulator, args: &[&str]) -> Result<(bool, String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_kbha"))
        .args(args)
        .current_dir(repo_root())
        .env("AWS_ENDPOINT_URL", emu.endpoint_url())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()
        .context("run kbha")?;
    Ok((out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// The function's view of a set of `NAME=value` lines.
fn settings(lines: &[(String, String)]) -> Env<impl Fn(&str) -> Option<String> + '_> {
    Env::new(move |k: &str| lines.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
}

/// The policy source a publish printed.
fn env_of(stdout: &str) -> Result<PolicySource> {
    let lines = config_lines(stdout);
    Ok(settings(&lines).policy_source()?)
}

fn config_lines(stdout: &str) -> Vec<(String, String)> {
    stdout.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_publish_loads_as_a_function_loads_it_and_tampering_is_refused() -> Result<()> {
    let component = repo_root().join("target/policies/failover-default.wasm");
    let bytes = std::fs::read(&component).with_context(|| format!("{}: run `cargo xtask policies`", component.display()))?;
    let emu = Emulator::start()?;
    emu.create_bucket(BUCKET).await?;
    let versioning = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
    emu.s3().await.put_bucket_versioning().bucket(BUCKET).versioning_configuration(versioning).send().await?;
    let store = S3Store::from_conf(&emu.sdk_config().await);

    let keys = std::env::temp_dir().join(format!("kbha-publish-test-{}", std::process::id()));
    std::fs::create_dir_all(&keys)?;
    let prefix = keys.join("signing");
    let prefix = prefix.to_str().context("utf-8 temp path")?;
    let (ok, _, err) = kbha(&emu, &["policy", "keygen", prefix])?;
    anyhow::ensure!(ok, "keygen failed: {err}");

    let to = format!("s3://{BUCKET}/{KEY}");
    let private = format!("{prefix}.key");
    let component_arg = component.to_str().context("utf-8 path")?;
    let (ok, out, err) = kbha(&emu, &["policy", "publish", component_arg, "--to", &to, "--sign", &private])?;
    anyhow::ensure!(ok, "publish failed: {err}\n{out}");
    let lines = config_lines(&out);
    let env = settings(&lines);
    let source = env.policy_source()?;
    let digest = kbha_policy_host::digest(&bytes);
    let PolicySource::S3 { version_id: Some(_), sha256: Some(pin), .. } = &source else {
        bail!("the printed source pins no version or digest: {source}");
    };
    assert_eq!(format!("sha256:{pin}"), digest);
    let lifecycle = env.policy_lifecycle()?;
    assert!(lifecycle.public_key.is_some(), "the public key line is printed: {out}");
    // The signature object is what the verifier reads: `<key>.sig` beside the component.
    assert!(emu.s3().await.head_object().bucket(BUCKET).key(format!("{KEY}.sig")).send().await.is_ok());

    // Loaded as a function loads it: it decides, nothing faults.
    let input = Failover::smoke_input().map_err(anyhow::Error::msg)?;
    let (policies, swap) = load_swappable::<Failover, _>(&source, env.policy_fallback()?, &lifecycle, &store, 0).await?;
    assert!(swap.context("an S3 source")?.usable());
    let d = policies.decide(&input);
    assert_eq!((d.decided_by.as_str(), d.digest.as_str(), d.faults.len()), (source.to_string().as_str(), digest.as_str(), 0));

    // Tampered in place (a custom section appended: still a valid component).
    let mut tampered = bytes.clone();
    tampered.extend_from_slice(&[0, 4, 3, b'k', b'b', b'h']);
    emu.put_bytes(BUCKET, KEY, tampered).await?;
    let refused = |why: &'static str| {
        move |d: kbha_policy_lifecycle::Decided<kbha_core::FailoverDecision>| {
            assert_eq!(d.decided_by, "builtin", "the fallback decides");
            let fault = d.faults.first().map(|f| f.message.clone()).unwrap_or_default();
            assert!(fault.contains(why), "expected `{why}` in {fault:?}");
        }
    };
    // Signed but unpinned: the signature no longer verifies.
    let unpinned = PolicySource::s3(BUCKET, KEY);
    let (policies, _) = load_swappable::<Failover, _>(&unpinned, env.policy_fallback()?, &lifecycle, &store, 0).await?;
    refused("signature does not verify")(policies.decide(&input));
    // Digest-pinned, no key: the pin refuses it.
    let pinned: PolicySource = format!("{to}#{digest}").parse()?;
    let (policies, _) = load_swappable::<Failover, _>(&pinned, env.policy_fallback()?, &Default::default(), &store, 0).await?;
    refused("is not the pinned")(policies.decide(&input));
    // The printed source names the published version: still exactly what was published.
    let (policies, _) = load_swappable::<Failover, _>(&source, env.policy_fallback()?, &lifecycle, &store, 0).await?;
    assert_eq!(policies.decide(&input).digest, digest);
    // Another component published and signed over it replaces `<key>.sig`; the source
    // pinned to the first version still verifies, by the signature kept under its digest.
    let other = repo_root().join("target/policies/business-hours.wasm");
    let (ok, out, err) = kbha(&emu, &["policy", "publish", other.to_str().context("utf-8 path")?, "--to", &to, "--sign", &private])?;
    anyhow::ensure!(ok, "second publish failed: {err}\n{out}");
    let (policies, _) = load_swappable::<Failover, _>(&source, env.policy_fallback()?, &lifecycle, &store, 0).await?;
    let d = policies.decide(&input);
    assert_eq!((d.digest.as_str(), d.faults.len()), (digest.as_str(), 0), "{:?}", d.faults);
    let newest = env_of(&out)?;
    let (policies, _) = load_swappable::<Failover, _>(&newest, env.policy_fallback()?, &lifecycle, &store, 0).await?;
    assert_eq!(policies.decide(&input).faults.len(), 0, "the new version loads too");

    // A component the host would refuse is not uploaded.
    let (ok, _, err) = kbha(&emu, &["policy", "publish", "Cargo.toml", "--to", &format!("s3://{BUCKET}/bad.wasm")])?;
    assert!(!ok, "a non-component must not publish");
    assert!(emu.s3().await.head_object().bucket(BUCKET).key("bad.wasm").send().await.is_err(), "{err}");
    std::fs::remove_dir_all(&keys)?;
    Ok(())
}
