//! `kbha policy publish <component> --to s3://bucket/key [--sign <key file>]` and
//! `kbha policy keygen <out-prefix>`.
//!
//! Publishing checks the component the way a function will (kbha-hosting's verifier:
//! world, imports, limits, smoke evaluation), uploads the detached signature `<key>.sig`
//! (hex of the 64 ed25519 signature bytes, one of the encodings
//! `kbha_hosting::verify::parse_signature` reads) and then the component, and prints the
//! configuration that pins exactly these bytes.
//!
//! Private key files: `kbha policy keygen` writes the 32-byte seed as 64 hex digits;
//! base64 of the seed and OpenSSL's PKCS#8 PEM (`openssl genpkey -algorithm ed25519`)
//! are read too.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use kbha_aws::{AwsSettings, ObjectStore, PutCondition, S3Store, load_sdk_config};
use kbha_hosting::verify::load_checked;
use kbha_hosting::{Alerting, Failover, Kind, PolicySource, Replication};
use kbha_policy_host::{PolicyEngine, World};

/// DER prefix of an OpenSSL ed25519 PKCS#8 private key; the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// Reads an ed25519 private key: hex or base64 of the 32-byte seed, or a PKCS#8 PEM.
pub fn read_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the private key `{}`", path.display()))?;
    let text = text.trim();
    let seed: Vec<u8> = if let Some(body) = text.strip_prefix("-----BEGIN PRIVATE KEY-----") {
        let body: String = body.lines().take_while(|l| !l.starts_with("-----END")).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(body.trim()).context("the PEM body is not base64")?;
        match der.strip_prefix(&PKCS8_ED25519_PREFIX[..]) {
            Some(seed) => seed.to_vec(),
            None => bail!("`{}` is a PEM key but not ed25519; make one with `kbha policy keygen`", path.display()),
        }
    } else {
        hex::decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(text))
            .with_context(|| format!("`{}` is neither hex, base64 nor a PKCS#8 PEM key", path.display()))?
    };
    let seed: [u8; 32] = seed
        .try_into()
        .map_err(|s: Vec<u8>| anyhow::anyhow!("`{}` holds {} bytes; an ed25519 private key is 32", path.display(), s.len()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The `KBHA_POLICY_PUBLIC_KEY` value of a key (64 hex digits).
pub fn public_key_hex(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().to_bytes())
}

/// Runs `kbha policy keygen <prefix>`: `<prefix>.key` (private, mode 0600) and
/// `<prefix>.pub` (the `KBHA_POLICY_PUBLIC_KEY` value). Refuses to overwrite.
pub fn keygen(prefix: &Path) -> anyhow::Result<ExitCode> {
    let mut seed = [0u8; 32];
    // The OS generator; the key never leaves this machine.
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("cannot read random bytes from /dev/urandom")?;
    let key = SigningKey::from_bytes(&seed);
    let with_ext = |ext: &str| PathBuf::from(format!("{}.{ext}", prefix.display()));
    let (private, public) = (with_ext("key"), with_ext("pub"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&private)
        .and_then(|mut f| f.write_all(format!("{}\n", hex::encode(seed)).as_bytes()))
        .with_context(|| format!("cannot create `{}` (an existing key is never overwritten)", private.display()))?;
    std::fs::write(&public, format!("{}\n", public_key_hex(&key))).with_context(|| format!("cannot write `{}`", public.display()))?;
    println!("private key: {}  (keep it secret; `kbha policy publish --sign {}`)", private.display(), private.display());
    println!("public key:  {}", public.display());
    println!("KBHA_POLICY_PUBLIC_KEY={}", public_key_hex(&key));
    Ok(ExitCode::SUCCESS)
}

/// Checks the component as a function would before it runs it.
fn verify(bytes: &[u8], path: &Path) -> anyhow::Result<World> {
    let engine = PolicyEngine::new(super::limits()?)?;
    let inspection = engine.inspect(bytes).with_context(|| format!("`{}`", path.display()))?;
    if let Some(p) = inspection.problems.first() {
        bail!("`{}` would be refused: {p}; see `kbha policy check`", path.display());
    }
    let Some(world) = inspection.world else {
        bail!("`{}` implements no kbha world; see `kbha policy check`", path.display());
    };
    fn smoke<K: Kind>(bytes: &[u8], path: &Path) -> anyhow::Result<()> {
        load_checked::<K>(&path.display().to_string(), bytes).map(drop).with_context(|| format!("`{}` would be refused", path.display()))
    }
    match world {
        World::Failover => smoke::<Failover>(bytes, path)?,
        World::Replication => smoke::<Replication>(bytes, path)?,
        World::Alert => smoke::<Alerting>(bytes, path)?,
    }
    Ok(world)
}

/// `kbha policy publish` options.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The `.wasm` component to publish.
    pub component: PathBuf,
    /// Destination object, `s3://bucket/key`.
    #[arg(long)]
    pub to: String,
    /// Sign with this ed25519 private key file (from `kbha policy keygen`, or an OpenSSL
    /// PKCS#8 PEM); uploads `<key>.sig` beside the component.
    #[arg(long)]
    pub sign: Option<PathBuf>,
    /// S3 endpoint (an emulator); default: `AWS_ENDPOINT_URL`, else AWS.
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Region; default: the environment's (`AWS_REGION`, profile).
    #[arg(long)]
    pub region: Option<String>,
}

/// Runs `kbha policy publish`.
pub async fn publish(args: &PublishArgs) -> anyhow::Result<()> {
    let (bucket, key) = match args.to.parse::<PolicySource>() {
        Ok(PolicySource::S3 { bucket, key, version_id: None, sha256: None }) => (bucket, key),
        _ => bail!("--to is `{}`; expected `s3://bucket/key` (no version or pin: publish prints them)", args.to),
    };
    let bytes = std::fs::read(&args.component).with_context(|| format!("cannot read `{}`", args.component.display()))?;
    let world = verify(&bytes, &args.component)?;
    let signer = args.sign.as_deref().map(read_signing_key).transpose()?;

    let settings = AwsSettings { endpoint_url: args.endpoint_url.clone(), region: args.region.clone(), ..AwsSettings::default() };
    let store = S3Store::from_conf(&load_sdk_config(&settings).await);
    let digest = kbha_policy_host::digest(&bytes);
    // The signatures go first: a warm function only reads them when the component
    // changed, so it never sees the new component without its signature. One under the
    // component's digest (kept for a version-pinned source after later publishes), one
    // as `<key>.sig` (the latest).
    if let Some(signer) = &signer {
        let sig = hex::encode(signer.sign(&bytes).to_bytes());
        for sig_key in kbha_hosting::verify::signature_keys(&key, &digest) {
            store
                .put(&bucket, &sig_key, sig.clone().into_bytes(), PutCondition::Always)
                .await
                .with_context(|| format!("cannot upload the signature s3://{bucket}/{sig_key}"))?;
        }
    }
    let etag = store
        .put(&bucket, &key, bytes, PutCondition::Always)
        .await
        .with_context(|| format!("cannot upload the component to s3://{bucket}/{key}"))?;
    // The version this upload created (versioned buckets only). Asked with If-Match on
    // the ETag just returned, so a later upload by someone else is never pinned instead.
    let version_id = match store.client().head_object().bucket(&bucket).key(&key).if_match(etag).send().await {
        Ok(head) => head.version_id().filter(|v| *v != "null").map(str::to_owned),
        Err(e) => {
            eprintln!("warning: cannot read the version of s3://{bucket}/{key} ({e}); pinning the digest only");
            None
        }
    };
    let sha256 = digest.strip_prefix("sha256:").map(str::to_owned);
    let source = PolicySource::S3 { bucket, key, version_id, sha256 };
    eprintln!("published a {} policy ({digest}); configure the function with:", world.wit_name());
    println!("KBHA_POLICY={source}");
    if let Some(signer) = &signer {
        println!("KBHA_POLICY_PUBLIC_KEY={}", public_key_hex(signer));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_keys_read_in_every_format_and_match_their_public_half() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("kbha-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let seed = [5u8; 32];
        let expected = SigningKey::from_bytes(&seed);
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&seed);
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der)
        );
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, seed);
        for (name, text) in [("hex", hex::encode(seed)), ("b64", b64), ("pem", pem)] {
            let p = dir.join(name);
            std::fs::write(&p, text)?;
            assert_eq!(read_signing_key(&p)?.to_bytes(), expected.to_bytes(), "{name}");
        }
        std::fs::write(dir.join("short"), "abcd")?;
        let e = read_signing_key(&dir.join("short")).expect_err("2 bytes is no key");
        assert!(e.to_string().contains("holds 2 bytes"), "{e}");
        // The printed public key is what the hosting verifier parses.
        let parsed = kbha_hosting::verify::parse_public_key(&public_key_hex(&expected)).map_err(anyhow::Error::msg)?;
        assert_eq!(parsed, expected.verifying_key());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn keygen_writes_a_usable_pair_and_never_overwrites() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("kbha-keygen-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let prefix = dir.join("signing");
        keygen(&prefix)?;
        let key = read_signing_key(&dir.join("signing.key"))?;
        let public = std::fs::read_to_string(dir.join("signing.pub"))?;
        assert_eq!(public.trim(), public_key_hex(&key));
        assert!(keygen(&prefix).is_err(), "an existing key must not be overwritten");
        assert_eq!(read_signing_key(&dir.join("signing.key"))?.to_bytes(), key.to_bytes());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
