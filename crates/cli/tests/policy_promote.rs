//! `kbha policy promote` / `kbha policy rollback` against the emulator's Lambda: a policy
//! published with `kbha policy publish` is promoted on a function, read back through the
//! Lambda API (every other variable kept), promoted again (no change), rolled back twice,
//! and the refusals (unpinned source, nothing to roll back to) change nothing. Needs
//! `cargo xtask policies` (target/policies).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use aws_sdk_lambda::types::{Environment, FunctionCode, Runtime};
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use kbha_test_harness::{Emulator, repo_root};
use serde_json::Value;

const BUCKET: &str = "policies";
const KEY: &str = "failover/current.wasm";
const ROLE: &str = "kbha-promote-test";

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

/// Runs kbha, expecting success and one JSON record on stdout.
fn record(emu: &Emulator, args: &[&str]) -> Result<Value> {
    let (ok, out, err) = kbha(emu, args)?;
    ensure!(ok, "kbha {args:?} failed: {err}\n{out}");
    ensure!(out.lines().count() == 1, "one line on stdout, got: {out}");
    serde_json::from_str(out.trim()).with_context(|| format!("the record: {out}"))
}

/// moto checks that a function's role exists; IAM is created with one raw awsQuery request
/// (moto reads the service from the credential scope and does not check signatures).
fn create_role(emu: &Emulator) -> Result<String> {
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { char::from(b).to_string() } else { format!("%{b:02X}") })
            .collect()
    };
    let body = format!("Action=CreateRole&Version=2010-05-08&RoleName={ROLE}&AssumeRolePolicyDocument={}", encode(trust));
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", emu.port())).context("connect to the emulator")?;
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        emu.port(),
        body.len()
    )?;
    let mut resp = String::new();
    stream.read_to_string(&mut resp)?;
    let arn = resp.split("<Arn>").nth(1).and_then(|r| r.split("</Arn>").next()).with_context(|| format!("CreateRole answered: {resp}"))?;
    Ok(arn.to_owned())
}

/// A zip holding one file `bootstrap` (stored, mode 0755): the smallest valid code package.
fn bootstrap_zip() -> Vec<u8> {
    let (name, data): (&[u8], &[u8]) = (b"bootstrap", b"#!/bin/sh\nexit 1\n");
    let mut crc = flate2::Crc::new();
    crc.update(data);
    let (crc, size, name_len) = (crc.sum(), u32::try_from(data.len()).unwrap_or(0), u16::try_from(name.len()).unwrap_or(0));
    let mut z = Vec::new();
    let common = |z: &mut Vec<u8>| {
        for v in [20u16, 0, 0, 0, 0x21] {
            z.extend_from_slice(&v.to_le_bytes()); // version needed, flags, stored, time, date 1980-01-01
        }
        for v in [crc, size, size] {
            z.extend_from_slice(&v.to_le_bytes());
        }
        z.extend_from_slice(&name_len.to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes()); // extra
    };
    z.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    common(&mut z);
    z.extend_from_slice(name);
    z.extend_from_slice(data);
    let cd_offset = u32::try_from(z.len()).unwrap_or(0);
    z.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    z.extend_from_slice(&(3u16 << 8 | 20).to_le_bytes()); // made by: unix
    common(&mut z);
    for v in [0u16, 0, 0] {
        z.extend_from_slice(&v.to_le_bytes()); // comment, disk, internal attributes
    }
    z.extend_from_slice(&((0o100_755u32) << 16).to_le_bytes());
    z.extend_from_slice(&0u32.to_le_bytes()); // local header offset
    z.extend_from_slice(name);
    let cd_size = u32::try_from(z.len()).unwrap_or(0) - cd_offset;
    z.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    for v in [0u16, 0, 1, 1] {
        z.extend_from_slice(&v.to_le_bytes());
    }
    z.extend_from_slice(&cd_size.to_le_bytes());
    z.extend_from_slice(&cd_offset.to_le_bytes());
    z.extend_from_slice(&0u16.to_le_bytes());
    z
}

async fn create_function(lambda: &aws_sdk_lambda::Client, role: &str, name: &str, vars: &[(&str, &str)]) -> Result<String> {
    let env = Environment::builder().set_variables(Some(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())).build();
    let out = lambda
        .create_function()
        .function_name(name)
        .runtime(Runtime::Providedal2023)
        .handler("bootstrap")
        .role(role)
        .code(FunctionCode::builder().zip_file(aws_sdk_lambda::primitives::Blob::new(bootstrap_zip())).build())
        .environment(env)
        .send()
        .await
        .with_context(|| format!("CreateFunction {name}"))?;
    out.function_arn().map(str::to_owned).context("no FunctionArn")
}

/// The function's environment, read back through the Lambda API.
async fn env_of(lambda: &aws_sdk_lambda::Client, name: &str) -> Result<HashMap<String, String>> {
    let out = lambda.get_function_configuration().function_name(name).send().await?;
    Ok(out.environment().and_then(|e| e.variables()).cloned().unwrap_or_default())
}

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_and_rollback_rewrite_only_the_policy_variables() -> Result<()> {
    let component = repo_root().join("target/policies/failover-default.wasm");
    ensure!(component.exists(), "{}: run `cargo xtask policies`", component.display());
    let emu = Emulator::start()?;
    emu.create_bucket(BUCKET).await?;
    let versioning = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
    emu.s3().await.put_bucket_versioning().bucket(BUCKET).versioning_configuration(versioning).send().await?;

    // A signed publish: the lines to promote.
    let keys = std::env::temp_dir().join(format!("kbha-promote-test-{}", std::process::id()));
    std::fs::create_dir_all(&keys)?;
    let prefix = keys.join("signing");
    let prefix = prefix.to_str().context("utf-8 temp path")?;
    let (ok, _, err) = kbha(&emu, &["policy", "keygen", prefix])?;
    ensure!(ok, "keygen failed: {err}");
    let to = format!("s3://{BUCKET}/{KEY}");
    let (ok, out, err) =
        kbha(&emu, &["policy", "publish", component.to_str().context("utf-8")?, "--to", &to, "--sign", &format!("{prefix}.key")])?;
    ensure!(ok, "publish failed: {err}\n{out}");
    let line =
        |name: &str| out.lines().find_map(|l| l.strip_prefix(name)).map(str::to_owned).with_context(|| format!("no {name} in {out}"));
    let policy = line("KBHA_POLICY=")?;
    let public_key = line("KBHA_POLICY_PUBLIC_KEY=")?;
    ensure!(policy.contains("?versionId=") && policy.contains("#sha256:"), "pinned: {policy}");

    let lambda = aws_sdk_lambda::Client::new(&emu.sdk_config().await);
    let role = create_role(&emu)?;
    let original = vars(&[("KBHA_RECORD_NAME", "x"), ("OTHER", "y")]);
    let pairs: Vec<(&str, &str)> = original.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let arn = create_function(&lambda, &role, "kbha-failover", &pairs).await?;
    let f = "kbha-failover";

    // Dry run: the record says what would happen; nothing changes.
    let rec = record(&emu, &["policy", "promote", "--function", f, "--policy", &policy, "--public-key", &public_key, "--dry-run"])?;
    assert_eq!(rec["action"], "would_promote");
    assert_eq!(rec["to"]["policy"], policy.as_str());
    assert_eq!(env_of(&lambda, f).await?, original, "a dry run changes nothing");

    // Promote.
    let rec =
        record(&emu, &["policy", "promote", "--function", f, "--policy", &policy, "--public-key", &public_key, "--reason", "v2 rollout"])?;
    for (field, want) in [
        ("record", "kbha.decision"),
        ("function", "policy-promote"),
        ("action", "promoted"),
        ("subject", arn.as_str()),
        ("by", "arn:aws:sts::123456789012:user/moto"),
        ("reason", "v2 rollout"),
    ] {
        assert_eq!(rec[field], want, "{field} in {rec}");
    }
    assert_eq!(rec["from"], serde_json::json!({"policy": "builtin", "public_key": null}));
    assert_eq!(rec["to"], serde_json::json!({"policy": policy, "public_key": public_key}));
    assert!(rec["event_id"].as_str().is_some_and(|id| id.len() == 36), "{rec}");
    assert!(rec["now"].as_str().is_some_and(|n| n.ends_with('Z')), "{rec}");
    assert!(rec.get("revision_id").is_some(), "{rec}");
    let promoted = {
        let mut v = original.clone();
        v.extend(vars(&[
            ("KBHA_POLICY", &policy),
            ("KBHA_POLICY_PREVIOUS", "builtin"),
            ("KBHA_POLICY_PUBLIC_KEY", &public_key),
            ("KBHA_POLICY_PREVIOUS_PUBLIC_KEY", ""),
        ]));
        v
    };
    assert_eq!(env_of(&lambda, f).await?, promoted);

    // Again (the whole printed line this time): nothing to do.
    let rec = record(&emu, &["policy", "promote", "--function", f, "--policy", &format!("KBHA_POLICY={policy}")])?;
    assert_eq!(rec["action"], "no_change");
    assert_eq!(rec["from"], rec["to"]);
    assert_eq!(env_of(&lambda, f).await?, promoted);

    // Rollback (by ARN): back to builtin without a key; the promoted values become previous.
    let rec = record(&emu, &["policy", "rollback", "--function", &arn, "--reason", "alerts"])?;
    assert_eq!(rec["action"], "rolled_back");
    assert_eq!(rec["to"], serde_json::json!({"policy": "builtin", "public_key": null}));
    let rolled_back = {
        let mut v = original.clone();
        v.extend(vars(&[("KBHA_POLICY", "builtin"), ("KBHA_POLICY_PREVIOUS", &policy), ("KBHA_POLICY_PREVIOUS_PUBLIC_KEY", &public_key)]));
        v
    };
    assert_eq!(env_of(&lambda, f).await?, rolled_back);

    // A second rollback undoes the first.
    let rec = record(&emu, &["policy", "rollback", "--function", f])?;
    assert_eq!((&rec["action"], &rec["to"]["policy"]), (&Value::from("rolled_back"), &Value::from(policy.as_str())));
    let mut back = promoted.clone();
    back.insert("KBHA_POLICY_PREVIOUS_PUBLIC_KEY".into(), String::new());
    assert_eq!(env_of(&lambda, f).await?, back);

    // An unpinned source is refused before anything is read or written.
    let (ok, _, err) = kbha(&emu, &["policy", "promote", "--function", f, "--policy", &to])?;
    ensure!(!ok, "an unpinned source must be refused");
    assert!(err.contains("not pinned") && err.contains("`KBHA_POLICY=` line `kbha policy publish` printed"), "{err}");
    assert_eq!(env_of(&lambda, f).await?, back);

    // A function never promoted has nothing to roll back to.
    create_function(&lambda, &role, "kbha-other", &[("KBHA_POLICY", &policy), ("OTHER", "z")]).await?;
    let (ok, out, err) = kbha(&emu, &["policy", "rollback", "--function", "kbha-other"])?;
    ensure!(!ok && out.is_empty(), "rollback without a promote must fail: {out}");
    assert!(err.contains("nothing to roll back to") && err.contains("never promoted with kbha policy promote"), "{err}");
    assert_eq!(env_of(&lambda, "kbha-other").await?, vars(&[("KBHA_POLICY", &policy), ("OTHER", "z")]));

    // A function behind an alias (the SAM stack's `live`): promote without --alias would
    // change only $LATEST, which no trigger runs, so it is refused; with it, a version is
    // published and the alias moved to it; rollback moves it again.
    let live = "kbha-live";
    create_function(&lambda, &role, live, &[("OTHER", "a")]).await?;
    let v1 = lambda.publish_version().function_name(live).send().await?.version().context("no version")?.to_owned();
    lambda.create_alias().function_name(live).name("live").function_version(&v1).send().await?;
    let alias_env = |v: Option<String>| async {
        let out = lambda.get_function_configuration().function_name(live).qualifier("live").send().await?;
        let got = out.environment().and_then(|e| e.variables()).cloned().unwrap_or_default();
        anyhow::Ok((got, v))
    };
    let (ok, _, err) = kbha(&emu, &["policy", "promote", "--function", live, "--policy", &policy])?;
    ensure!(!ok, "a function with aliases must be refused without --alias");
    assert!(err.contains("has aliases (live)") && err.contains("--alias"), "{err}");
    let (ok, _, err) = kbha(&emu, &["policy", "promote", "--function", live, "--policy", &policy, "--alias", "prod"])?;
    ensure!(!ok, "an unknown alias must be refused");
    assert!(err.contains("has no alias `prod`"), "{err}");
    assert_eq!(env_of(&lambda, live).await?, vars(&[("OTHER", "a")]), "nothing written by the refusals");
    let rec = record(&emu, &["policy", "promote", "--function", live, "--policy", &policy, "--alias", "live"])?;
    assert_eq!(rec["action"], "promoted", "{rec}");
    assert_eq!(rec["alias"]["name"], "live");
    assert_eq!(rec["alias"]["from_version"], v1.as_str());
    let v2 = rec["alias"]["to_version"].as_str().context("to_version")?.to_owned();
    assert_ne!(v2, v1, "a new version");
    let got = lambda.get_alias().function_name(live).name("live").send().await?;
    assert_eq!(got.function_version(), Some(v2.as_str()), "the alias was moved");
    let (served, _) = alias_env(None).await?;
    assert_eq!(served.get("KBHA_POLICY"), Some(&policy), "the alias runs the promoted policy: {served:?}");
    let rec = record(&emu, &["policy", "promote", "--function", live, "--policy", &policy, "--alias", "live"])?;
    assert_eq!((&rec["action"], &rec["alias"]["to_version"]), (&Value::from("no_change"), &Value::Null), "{rec}");
    let rec = record(&emu, &["policy", "rollback", "--function", live, "--alias", "live"])?;
    assert_eq!((&rec["action"], &rec["alias"]["from_version"]), (&Value::from("rolled_back"), &Value::from(v2.as_str())), "{rec}");
    let (served, _) = alias_env(None).await?;
    assert_eq!(served.get("KBHA_POLICY").map(String::as_str), Some("builtin"), "the alias runs the previous policy: {served:?}");

    // An unknown function is an error naming it.
    let (ok, _, err) = kbha(&emu, &["policy", "rollback", "--function", "nope"])?;
    if ok {
        bail!("an unknown function must fail");
    }
    assert!(err.contains("cannot read the configuration of `nope`"), "{err}");
    std::fs::remove_dir_all(&keys)?;
    Ok(())
}
