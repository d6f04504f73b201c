//! Whether a policy object may run: its pinned digest, its ed25519 signature, then the
//! engine's checks (world, imports, limits) and a smoke evaluation on a canned input.
//!
//! The signature is detached: an object beside the component holds the 64 signature
//! bytes (raw, hex or base64), made over the component's bytes with the key whose public
//! half is `KBHA_POLICY_PUBLIC_KEY`. See [`signature_keys`] for where.

use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};

/// Why a policy object was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The content's digest is not the pinned one.
    #[error("digest {actual} is not the pinned sha256:{pinned}; publish the pinned object or update the pin")]
    DigestMismatch {
        /// The pinned hex digest.
        pinned: String,
        /// `sha256:<hex>` of the content.
        actual: String,
    },
    /// A public key is configured but the signature object is absent.
    #[error("no signature object `{0}`; sign the component (`kbha policy publish --sign`) or unset KBHA_POLICY_PUBLIC_KEY")]
    Unsigned(String),
    /// The signature object cannot be read as 64 bytes.
    #[error("signature object is not 64 bytes of ed25519 signature (raw, hex or base64)")]
    MalformedSignature,
    /// The signature does not verify with the configured key.
    #[error("signature does not verify with KBHA_POLICY_PUBLIC_KEY; the object was changed or signed with another key")]
    BadSignature,
    /// The engine refused the component (world, imports, limits, not a component).
    #[error("the component was refused ({kind}): {message}")]
    Component {
        /// Fault class (`wrong_world`, `forbidden_import`, ...).
        kind: String,
        /// What the engine said.
        message: String,
    },
    /// The component faulted on the canned input.
    #[error("the smoke evaluation on the canned {world} input faulted ({kind}): {message}")]
    Smoke {
        /// The world.
        world: &'static str,
        /// Fault class.
        kind: String,
        /// What happened.
        message: String,
    },
}

/// Parses a public key given as 64 hex digits or base64 of 32 bytes.
pub fn parse_public_key(raw: &str) -> Result<VerifyingKey, String> {
    let bytes = decode_text(raw.trim()).ok_or("is neither hex nor base64")?;
    let array: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| format!("is {} bytes; an ed25519 public key is 32", b.len()))?;
    VerifyingKey::from_bytes(&array).map_err(|e| format!("is not an ed25519 public key: {e}"))
}

/// Hex first (a hex string is also valid base64, never the other way round for keys).
fn decode_text(raw: &str) -> Option<Vec<u8>> {
    hex::decode(raw).ok().or_else(|| base64::engine::general_purpose::STANDARD.decode(raw).ok())
}

/// A signature object: 64 raw bytes, or hex / base64 text of them.
pub fn parse_signature(bytes: &[u8]) -> Result<Signature, VerifyError> {
    if let Ok(raw) = <[u8; 64]>::try_from(bytes) {
        return Ok(Signature::from_bytes(&raw));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| VerifyError::MalformedSignature)?;
    let decoded = decode_text(text.trim()).ok_or(VerifyError::MalformedSignature)?;
    let raw = <[u8; 64]>::try_from(decoded.as_slice()).map_err(|_| VerifyError::MalformedSignature)?;
    Ok(Signature::from_bytes(&raw))
}

/// Where the signature of the component at `key` with `digest` is looked for, in order:
/// `<key>.sha256-<hex>.sig`, written by `kbha policy publish` for exactly those bytes and
/// never overwritten by a later publish (so a source pinned to an older S3 version keeps
/// its signature), then `<key>.sig`, the latest publish's (and what other tools write).
pub fn signature_keys(key: &str, digest: &str) -> [String; 2] {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    [format!("{key}.sha256-{hex}.sig"), format!("{key}.sig")]
}

/// Bytes whose pin and signature (when configured) were checked, with their digest: what
/// [`crate::hosted::load_checked`] takes, so nothing unchecked reaches it by mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<'a> {
    /// The component's bytes.
    pub bytes: &'a [u8],
    /// `sha256:<hex>` of them.
    pub digest: String,
}

impl<'a> Verified<'a> {
    /// Bytes trusted without a pin or signature: a local file the operator names, or the
    /// built-in.
    pub fn trusted(bytes: &'a [u8]) -> Self {
        Verified { bytes, digest: kbha_policy_host::digest(bytes) }
    }
}

/// Checks the pin and the signature (when configured) of `bytes`.
pub fn check_object<'a>(
    bytes: &'a [u8],
    pinned: Option<&str>,
    key: Option<&VerifyingKey>,
    signature: Option<&[u8]>,
    signature_name: &str,
) -> Result<Verified<'a>, VerifyError> {
    let actual = kbha_policy_host::digest(bytes);
    if let Some(pinned) = pinned
        && actual.strip_prefix("sha256:") != Some(pinned)
    {
        return Err(VerifyError::DigestMismatch { pinned: pinned.to_owned(), actual });
    }
    if let Some(key) = key {
        let sig = parse_signature(signature.ok_or_else(|| VerifyError::Unsigned(signature_name.to_owned()))?)?;
        key.verify_strict(bytes, &sig).map_err(|_| VerifyError::BadSignature)?;
    }
    Ok(Verified { bytes, digest: actual })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn a_pin_accepts_only_its_content() {
        let d = kbha_policy_host::digest(b"component");
        let hex = d.strip_prefix("sha256:").expect("prefixed");
        assert_eq!(check_object(b"component", Some(hex), None, None, "k.sig"), Ok(Verified { bytes: b"component", digest: d.clone() }));
        let e = check_object(b"tampered", Some(hex), None, None, "k.sig").expect_err("must be refused");
        assert!(matches!(e, VerifyError::DigestMismatch { .. }), "{e}");
    }

    #[test]
    fn the_signature_of_exactly_these_bytes_is_looked_for_before_the_latest_one() {
        let keys = signature_keys("failover/current.wasm", "sha256:ab12");
        assert_eq!(keys, ["failover/current.wasm.sha256-ab12.sig", "failover/current.wasm.sig"]);
    }

    #[test]
    fn signatures_verify_in_every_encoding_and_refuse_tampering() {
        let sk = key();
        let pk = parse_public_key(&hex::encode(sk.verifying_key().to_bytes())).expect("hex key");
        let pk64 = parse_public_key(&base64::engine::general_purpose::STANDARD.encode(sk.verifying_key().to_bytes())).expect("b64 key");
        assert_eq!(pk, pk64);
        let sig = sk.sign(b"component").to_bytes();
        for encoded in [sig.to_vec(), hex::encode(sig).into_bytes(), base64::engine::general_purpose::STANDARD.encode(sig).into_bytes()] {
            assert!(check_object(b"component", None, Some(&pk), Some(&encoded), "k.sig").is_ok());
        }
        assert_eq!(check_object(b"tampered", None, Some(&pk), Some(&sig), "k.sig"), Err(VerifyError::BadSignature));
        assert_eq!(check_object(b"component", None, Some(&pk), None, "k.sig"), Err(VerifyError::Unsigned("k.sig".into())));
        assert_eq!(check_object(b"component", None, Some(&pk), Some(b"short"), "k.sig"), Err(VerifyError::MalformedSignature));
        let other = SigningKey::from_bytes(&[9u8; 32]).sign(b"component").to_bytes();
        assert_eq!(check_object(b"component", None, Some(&pk), Some(&other), "k.sig"), Err(VerifyError::BadSignature));
    }

    #[test]
    fn bad_public_keys_say_why() {
        assert!(parse_public_key("zz").expect_err("refused").contains("neither hex nor base64"));
        assert!(parse_public_key("abcd").expect_err("refused").contains("2 bytes"));
    }
}
