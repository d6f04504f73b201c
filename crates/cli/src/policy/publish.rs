//! `kbha policy publish <component> --to s3://bucket/key [--sign <key file>]` and
//! `kbha policy keygen <out-prefix>`.
//!
//! Publishing checks the component the way a function will (kbha-policy-lifecycle's verifier:
//! world, imports, limits, smoke evaluation), uploads the detached signature `<key>.sig`
//! (hex of the 64 ed25519 signature bytes, one of the encodings
//! `kbha_policy_lifecycle::verify::parse_signature` reads) and then the component, and prints the
//! configuration that pins exactly these bytes.
//!
//! Private key files: `kbha policy keygen` writes the 32-byte seed as 64 hex digits;
//! base64 of the seed and PKCS#8 keys, PEM (`openssl genpkey -algorithm ed25519`) or
//! DER (`-outform DER`), are read too (ed25519-dalek's PKCS#8 decoder).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, ObjectIdentifier, PrivateKeyInfo, SecretDocument};
use ed25519_dalek::{Signer, SigningKey};
use kbha_aws::{AwsSettings, ObjectStore, PutCondition, S3Store, load_sdk_config};
use kbha_policy_host::{PolicyEngine, World};
use kbha_policy_lifecycle::load_checked;
use kbha_policy_lifecycle::verify::Verified;
use kbha_policy_lifecycle::{Alerting, Failover, Kind, PolicySource, Replication};

/// What to do about a key kbha cannot use.
const MAKE_ONE: &str = "make an ed25519 key with `kbha policy keygen <prefix>` or `openssl genpkey -algorithm ed25519 -out <file>`";

/// Reads an ed25519 private key: hex or base64 of the 32-byte seed, or a PKCS#8 key
/// (PEM or DER).
pub fn read_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let shown = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read the private key `{shown}`"))?;
    let text = std::str::from_utf8(&bytes).map(str::trim).unwrap_or_default();
    if text.starts_with("-----BEGIN") {
        let (label, der) =
            SecretDocument::from_pem(text).map_err(|e| anyhow::anyhow!("`{shown}` is not a readable PEM file ({e}); {MAKE_ONE}"))?;
        match label {
            "PRIVATE KEY" => return pkcs8_key(der.as_bytes(), path),
            "ENCRYPTED PRIVATE KEY" => {
                bail!("`{shown}` is an encrypted key; decrypt it (`openssl pkey -in {shown} -out <file>`) or {MAKE_ONE}")
            }
            other => bail!("`{shown}` is a PEM `{other}`, not an ed25519 PKCS#8 private key; {MAKE_ONE}"),
        }
    }
    let seed = hex::decode(text).or_else(|_| base64::engine::general_purpose::STANDARD.decode(text));
    let seed = match seed {
        Ok(seed) if !text.is_empty() => seed,
        // Not text: a DER PKCS#8 key, or nothing kbha reads.
        _ if PrivateKeyInfo::try_from(bytes.as_slice()).is_ok() => return pkcs8_key(&bytes, path),
        _ => bail!("`{shown}` is neither hex nor base64 of a seed nor a PKCS#8 key (PEM or DER); {MAKE_ONE}"),
    };
    let seed: [u8; 32] =
        seed.try_into().map_err(|s: Vec<u8>| anyhow::anyhow!("`{shown}` holds {} bytes; an ed25519 private key is 32", s.len()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// An ed25519 key from PKCS#8 DER; another algorithm's key is named in the error.
fn pkcs8_key(der: &[u8], path: &Path) -> anyhow::Result<SigningKey> {
    let shown = path.display();
    let info = PrivateKeyInfo::try_from(der).map_err(|e| anyhow::anyhow!("`{shown}` is not a PKCS#8 private key ({e}); {MAKE_ONE}"))?;
    let oid = info.algorithm.oid;
    if oid != ed25519_dalek::pkcs8::ALGORITHM_OID {
        bail!("`{shown}` is {}, not ed25519; {MAKE_ONE}", algorithm_name(oid));
    }
    SigningKey::from_pkcs8_der(der).map_err(|e| anyhow::anyhow!("`{shown}` is a malformed ed25519 PKCS#8 key ({e}); {MAKE_ONE}"))
}

/// "an RSA key" and the like, for the error.
fn algorithm_name(oid: ObjectIdentifier) -> String {
    let name = match oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => "an RSA key",
        "1.2.840.10045.2.1" => "an EC (ECDSA) key",
        "1.3.101.110" => "an X25519 key",
        "1.3.101.111" => "an X448 key",
        "1.3.101.113" => "an ed448 key",
        "1.2.840.10040.4.1" => "a DSA key",
        other => return format!("a key of algorithm {other}"),
    };
    name.to_owned()
}

/// The `KBHA_POLICY_PUBLIC_KEY` value of a key (64 hex digits).
pub fn public_key_hex(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().to_bytes())
}

/// Runs `kbha policy keygen <prefix>`: `<prefix>.key` (private, mode 0600) and
/// `<prefix>.pub` (the `KBHA_POLICY_PUBLIC_KEY` value). Refuses to overwrite.
pub fn keygen(prefix: &Path) -> anyhow::Result<ExitCode> {
    // The OS generator (getrandom); the key never leaves this machine.
    let mut seed = [0u8; 32];
    rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut seed)
        .map_err(|e| anyhow::anyhow!("the operating system gave no random bytes for the key: {e}"))?;
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
        load_checked::<K>(&path.display().to_string(), &Verified::trusted(bytes))
            .map(drop)
            .with_context(|| format!("`{}` would be refused", path.display()))
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
    /// Sign with this ed25519 private key file (from `kbha policy keygen`, or a PKCS#8
    /// PEM or DER key from OpenSSL); uploads `<key>.sig` beside the component.
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
        for sig_key in kbha_policy_lifecycle::verify::signature_keys(&key, &digest) {
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
    use std::process::Command;

    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;

    use super::*;

    /// A fresh directory for one test.
    fn scratch(name: &str) -> anyhow::Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("kbha-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Runs `openssl` in `dir`; its stdout. A missing openssl fails the test (never a skip).
    fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<Vec<u8>> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| anyhow::anyhow!("this test needs the `openssl` command (apt-get install openssl): cannot run it: {e}"))?;
        if !out.status.success() {
            bail!("openssl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(out.stdout)
    }

    #[test]
    fn private_keys_read_in_every_format_and_match_their_public_half() -> anyhow::Result<()> {
        let dir = scratch("keys")?;
        let seed = [5u8; 32];
        let expected = SigningKey::from_bytes(&seed);
        let pem = expected.to_pkcs8_pem(LineEnding::LF)?.to_string();
        let der = expected.to_pkcs8_der()?.as_bytes().to_vec();
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, seed);
        let files: [(&str, Vec<u8>); 5] = [
            ("hex", hex::encode(seed).into_bytes()),
            ("hex-newline", format!("{}\n", hex::encode(seed)).into_bytes()),
            ("b64", b64.into_bytes()),
            ("pem", pem.into_bytes()),
            ("der", der),
        ];
        for (name, bytes) in files {
            let p = dir.join(name);
            std::fs::write(&p, bytes)?;
            assert_eq!(read_signing_key(&p)?.to_bytes(), expected.to_bytes(), "{name}");
        }
        std::fs::write(dir.join("short"), "abcd")?;
        let e = read_signing_key(&dir.join("short")).expect_err("2 bytes is no key");
        assert!(e.to_string().contains("holds 2 bytes"), "{e}");
        std::fs::write(dir.join("empty"), "\n")?;
        let e = read_signing_key(&dir.join("empty")).expect_err("an empty file is no key").to_string();
        assert!(e.contains("is neither hex nor base64 of a seed nor a PKCS#8 key"), "{e}");
        std::fs::write(dir.join("garbage.pem"), "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----\n")?;
        let e = read_signing_key(&dir.join("garbage.pem")).expect_err("no base64").to_string();
        assert!(e.contains("garbage.pem` is not a readable PEM file"), "{e}");
        // The printed public key is what the hosting verifier parses.
        let parsed = kbha_policy_lifecycle::verify::parse_public_key(&public_key_hex(&expected)).map_err(anyhow::Error::msg)?;
        assert_eq!(parsed, expected.verifying_key());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn openssl_ed25519_keys_load_and_sign_as_their_seed_and_as_openssl() -> anyhow::Result<()> {
        let dir = scratch("openssl-ed25519")?;
        openssl(&dir, &["genpkey", "-algorithm", "ed25519", "-out", "k.pem"])?;
        openssl(&dir, &["pkey", "-in", "k.pem", "-outform", "DER", "-out", "k.der"])?;
        let key = read_signing_key(&dir.join("k.pem"))?;
        assert_eq!(read_signing_key(&dir.join("k.der"))?.to_bytes(), key.to_bytes(), "DER and PEM are one key");

        // The public half is OpenSSL's: the SubjectPublicKeyInfo ends with the 32 key bytes.
        let spki = openssl(&dir, &["pkey", "-in", "k.pem", "-pubout", "-outform", "DER"])?;
        let openssl_public = spki.get(spki.len().saturating_sub(32)..).context("short public key")?;
        assert_eq!(spki.len(), 44, "an ed25519 SubjectPublicKeyInfo");
        assert_eq!(key.verifying_key().to_bytes(), openssl_public);

        // The same key as a hex seed signs the same (ed25519 is deterministic), and so does OpenSSL.
        std::fs::write(dir.join("k.hex"), hex::encode(key.to_bytes()))?;
        let message = b"a policy component";
        std::fs::write(dir.join("m"), message)?;
        let ours = key.sign(message).to_bytes();
        assert_eq!(read_signing_key(&dir.join("k.hex"))?.sign(message).to_bytes(), ours);
        openssl(&dir, &["pkeyutl", "-sign", "-rawin", "-inkey", "k.pem", "-in", "m", "-out", "m.sig"])?;
        assert_eq!(std::fs::read(dir.join("m.sig"))?, ours, "openssl's signature");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn other_keys_are_refused_naming_the_file_and_the_fix() -> anyhow::Result<()> {
        let dir = scratch("openssl-other")?;
        openssl(&dir, &["genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.pem"])?;
        // `pkey -outform DER` writes RSA as PKCS#1 (not PKCS#8); `pkcs8 -topk8` writes PKCS#8.
        openssl(&dir, &["pkcs8", "-topk8", "-nocrypt", "-in", "rsa.pem", "-outform", "DER", "-out", "rsa.der"])?;
        openssl(&dir, &["pkey", "-in", "rsa.pem", "-outform", "DER", "-out", "rsa-pkcs1.der"])?;
        openssl(&dir, &["pkey", "-in", "rsa.pem", "-traditional", "-out", "rsa-traditional.pem"])?;
        openssl(&dir, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.pem"])?;
        openssl(&dir, &["genpkey", "-algorithm", "ed25519", "-out", "ed.pem"])?;
        openssl(&dir, &["pkey", "-in", "ed.pem", "-pubout", "-out", "ed.pub.pem"])?;
        let fix = "make an ed25519 key with `kbha policy keygen <prefix>` or `openssl genpkey -algorithm ed25519 -out <file>`";
        for (file, says) in [
            ("rsa.pem", "is an RSA key, not ed25519"),
            ("rsa.der", "is an RSA key, not ed25519"),
            ("rsa-pkcs1.der", "is neither hex nor base64 of a seed nor a PKCS#8 key (PEM or DER)"),
            ("rsa-traditional.pem", "is a PEM `RSA PRIVATE KEY`, not an ed25519 PKCS#8 private key"),
            ("ec.pem", "is an EC (ECDSA) key, not ed25519"),
            ("ed.pub.pem", "is a PEM `PUBLIC KEY`, not an ed25519 PKCS#8 private key"),
        ] {
            let path = dir.join(file);
            let e = read_signing_key(&path).expect_err(file).to_string();
            assert!(e.starts_with(&format!("`{}` {says}; ", path.display())), "{file}: {e}");
            assert!(e.ends_with(fix), "{file}: {e}");
        }
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn keygen_writes_a_usable_pair_and_never_overwrites() -> anyhow::Result<()> {
        let dir = scratch("keygen")?;
        let prefix = dir.join("signing");
        keygen(&prefix)?;
        let text = std::fs::read_to_string(dir.join("signing.key"))?;
        assert!(text.len() == 65 && text.ends_with('\n') && hex::decode(text.trim()).is_ok(), "64 hex digits of the seed: {text:?}");
        let key = read_signing_key(&dir.join("signing.key"))?;
        let public = std::fs::read_to_string(dir.join("signing.pub"))?;
        assert_eq!(public.trim(), public_key_hex(&key));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(dir.join("signing.key"))?.permissions().mode() & 0o777, 0o600);
        }
        assert!(keygen(&prefix).is_err(), "an existing key must not be overwritten");
        assert_eq!(read_signing_key(&dir.join("signing.key"))?.to_bytes(), key.to_bytes());
        // Two keys differ (the generator is random).
        keygen(&dir.join("other"))?;
        assert_ne!(read_signing_key(&dir.join("other.key"))?.to_bytes(), key.to_bytes());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
