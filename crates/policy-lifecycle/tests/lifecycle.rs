//! Policy lifecycle against the S3 emulator: hot swap while decisions run, tampered and
//! wrong-world objects refused with the last good policy kept, S3 outages survived.
//! Needs `cargo xtask policies` (target/policies/*.wasm).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, Result};
use ed25519_dalek::{Signer, SigningKey};
use kbha_aws::S3Store;
use kbha_policy_lifecycle::{Checked, Failover, Fallback, Kind, Lifecycle, PolicySource, load_swappable};
use kbha_test_harness::{Emulator, Fault, repo_root};

const BUCKET: &str = "policies";
const KEY: &str = "failover/current.wasm";

fn artifact(name: &str) -> Result<Vec<u8>> {
    let path = repo_root().join("target/policies").join(format!("{name}.wasm"));
    std::fs::read(&path).with_context(|| format!("{}: run `cargo xtask policies`", path.display()))
}

async fn setup() -> Result<(Emulator, S3Store)> {
    let emu = Emulator::start()?;
    emu.create_bucket(BUCKET).await?;
    let store = S3Store::from_conf(&emu.sdk_config().await);
    Ok((emu, store))
}

fn every(seconds: u64) -> Lifecycle {
    Lifecycle { check_every_s: seconds, ..Lifecycle::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_object_is_picked_up_by_the_next_check_while_decisions_run() -> Result<()> {
    let (emu, store) = setup().await?;
    let v1 = artifact("failover-default")?;
    let v2 = artifact("hostile")?;
    emu.put_bytes(BUCKET, KEY, v1.clone()).await?;
    let source = PolicySource::s3(BUCKET, KEY);
    let (policies, swap) = load_swappable::<Failover, _>(&source, Fallback::Hold, &every(30), &store, 0).await?;
    let swap = swap.context("an S3 source swaps")?;
    assert_eq!(swap.current_digest(), kbha_policy_host::digest(&v1));

    // Decisions run on other threads the whole time; none may fault.
    let input = Arc::new(Failover::smoke_input().map_err(anyhow::Error::msg)?);
    let stop = Arc::new(AtomicBool::new(false));
    let (made, faulted) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (policies, input, stop, made, faulted) =
                (policies.clone(), Arc::clone(&input), Arc::clone(&stop), Arc::clone(&made), Arc::clone(&faulted));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let d = policies.decide(&input);
                    made.fetch_add(1, Ordering::Relaxed);
                    if !d.faults.is_empty() || d.decided_by == "hold" {
                        faulted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    emu.put_bytes(BUCKET, KEY, v2.clone()).await?;
    assert_eq!(swap.refresh(&store, 10_000).await, Checked::NotDue, "checks at most every 30 s");
    assert_eq!(swap.refresh(&store, 30_000).await, Checked::Swapped(kbha_policy_host::digest(&v2)));
    // The emulator answers the conditional GET with 304 while the object is unchanged.
    assert_eq!(swap.refresh(&store, 60_000).await, Checked::Unchanged);
    let after = policies.decide(&input);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().map_err(|_| anyhow::anyhow!("a decision thread panicked"))?;
    }
    assert_eq!(after.digest, kbha_policy_host::digest(&v2));
    assert!(made.load(Ordering::Relaxed) > 0);
    assert_eq!(faulted.load(Ordering::Relaxed), 0, "no decision may fault during the swap");
    Ok(())
}

#[tokio::test]
async fn tampered_wrong_world_and_unreachable_keep_the_last_good_policy() -> Result<()> {
    let (emu, store) = setup().await?;
    let good = artifact("failover-default")?;
    let signer = SigningKey::from_bytes(&[42u8; 32]);
    let sig_key = format!("{KEY}.sig");
    emu.put_bytes(BUCKET, KEY, good.clone()).await?;
    emu.put_bytes(BUCKET, &sig_key, hex::encode(signer.sign(&good).to_bytes()).into_bytes()).await?;
    let lifecycle = Lifecycle { public_key: Some(signer.verifying_key()), check_every_s: 0, shadow: None };
    let (policies, swap) = load_swappable::<Failover, _>(&PolicySource::s3(BUCKET, KEY), Fallback::Builtin, &lifecycle, &store, 0).await?;
    let swap = swap.context("an S3 source swaps")?;
    let good_digest = kbha_policy_host::digest(&good);
    assert!(swap.usable());
    let input = Failover::smoke_input().map_err(anyhow::Error::msg)?;

    // Tampered: the content changed, the signature did not.
    let mut tampered = good.clone();
    tampered.extend_from_slice(&[0, 4, 3, b'k', b'b', b'h']); // a custom section: still a component
    emu.put_bytes(BUCKET, KEY, tampered.clone()).await?;
    match swap.refresh(&store, 1).await {
        Checked::Refused(d, why) => {
            assert_eq!(d, kbha_policy_host::digest(&tampered));
            assert!(why.contains("signature does not verify"), "{why}");
        }
        other => anyhow::bail!("tampered object not refused: {other:?}"),
    }
    assert_eq!(swap.current_digest(), good_digest);
    let d = policies.decide(&input);
    assert_eq!(d.digest, good_digest, "the last good policy decides");
    let alert = d.decision.alerts.iter().find(|a| a.summary.contains("refused")).context("the refusal alert goes with the decision")?;
    assert!(alert.detail.contains(&kbha_policy_host::digest(&tampered)) && alert.detail.contains(KEY), "{alert:?}");
    assert!(policies.decide(&input).decision.alerts.iter().all(|a| !a.summary.contains("refused")), "alerted once");

    // Wrong world, correctly signed: refused by the engine.
    let alert_world = artifact("alert-default")?;
    emu.put_bytes(BUCKET, &sig_key, signer.sign(&alert_world).to_bytes().to_vec()).await?;
    emu.put_bytes(BUCKET, KEY, alert_world).await?;
    match swap.refresh(&store, 2).await {
        Checked::Refused(_, why) => assert!(why.contains("component was refused"), "{why}"),
        other => anyhow::bail!("wrong-world object not refused: {other:?}"),
    }
    assert_eq!(policies.decide(&input).digest, good_digest);

    // S3 unreachable: nothing changes, decisions go on.
    emu.inject(&Fault::error("s3", 503, "ServiceUnavailable").times(50)).await?;
    assert!(matches!(swap.refresh(&store, 3).await, Checked::Unreachable(_)));
    let d = policies.decide(&input);
    assert_eq!((d.digest.as_str(), d.faults.len()), (good_digest.as_str(), 0));
    emu.clear_faults().await?;
    Ok(())
}

#[tokio::test]
async fn a_cold_start_with_a_pin_mismatch_uses_the_fallback_and_alerts() -> Result<()> {
    let (emu, store) = setup().await?;
    let good = artifact("failover-default")?;
    emu.put_bytes(BUCKET, KEY, good.clone()).await?;
    let pinned: PolicySource = format!("s3://{BUCKET}/{KEY}#sha256:{}", "0".repeat(64)).parse()?;
    let (policies, swap) = load_swappable::<Failover, _>(&pinned, Fallback::Builtin, &every(30), &store, 0).await?;
    assert!(!swap.context("an S3 source swaps")?.usable());
    let d = policies.decide(&Failover::smoke_input().map_err(anyhow::Error::msg)?);
    assert_eq!(d.decided_by, "builtin");
    assert_eq!(d.faults.first().map(|f| f.kind.as_str()), Some("unavailable"));
    assert!(d.decision.alerts.iter().any(|a| a.detail.contains("is not the pinned")), "{:?}", d.decision.alerts);

    // The right pin loads.
    let right: PolicySource = format!("s3://{BUCKET}/{KEY}#{}", kbha_policy_host::digest(&good)).parse()?;
    let (_, swap) = load_swappable::<Failover, _>(&right, Fallback::Hold, &every(30), &store, 0).await?;
    assert!(swap.context("an S3 source swaps")?.usable());
    Ok(())
}

#[tokio::test]
async fn a_shadow_from_s3_is_asked_never_applied_and_its_disagreements_counted() -> Result<()> {
    let (emu, store) = setup().await?;
    let shadow = artifact("hostile")?;
    emu.put_bytes(BUCKET, "failover/next.wasm", shadow.clone()).await?;
    let lifecycle = Lifecycle { shadow: Some(PolicySource::s3(BUCKET, "failover/next.wasm")), ..Lifecycle::default() };
    let (policies, swap) = load_swappable::<Failover, _>(&PolicySource::Builtin, Fallback::Hold, &lifecycle, &store, 0).await?;
    assert!(swap.is_none(), "a built-in policy does not swap");
    let d = policies.decide(&Failover::smoke_input().map_err(anyhow::Error::msg)?);
    assert_eq!(d.decided_by, "builtin", "the shadow is never applied");
    assert_eq!(d.shadow_digest, Some(kbha_policy_host::digest(&shadow)));
    assert_eq!(d.shadow_agrees, Some(false), "the hostile policy's reason differs: {:?}", d.decision);
    assert_eq!(policies.shadow_disagreements.load(Ordering::Relaxed), 1);
    Ok(())
}
