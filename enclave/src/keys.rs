//! The issuer signing keys: derivation from the KMS-sealed seed, JWK/JWKS rendering,
//! RFC 7638 key ids, and the key ring used for rotation.
//!
//! Derivation (`docs/architecture.md`, "Key life cycle", step 3):
//! `okm = HKDF-SHA256(ikm = seed, salt = "agentkeys-nitro-broker", info = "oidc/issuer/v<N>")`,
//! 32 bytes, read big-endian as a P-256 scalar. If that value is zero or not below the
//! group order `n` (probability about 2^-32), the derivation is repeated with
//! `info = "oidc/issuer/v<N>/<k>"` for k = 1, 2, … until a valid scalar appears. The
//! result is deterministic: the same seed and version give the same key on every boot and
//! every instance.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePublicKey;
use serde::Serialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// HKDF salt. Source: `docs/architecture.md`, "Key life cycle", step 3.
pub const HKDF_SALT: &[u8] = b"agentkeys-nitro-broker";

/// Size of the sealed seed in bytes: the AES_256 data key of KMS `GenerateDataKey`
/// (`docs/architecture.md`, "Key life cycle", step 2).
pub const SEED_BYTES: usize = 32;

/// Highest key version accepted. Versions are small integers bumped on rotation.
pub const MAX_KEY_VERSION: u32 = 1_000_000;

/// Most previous versions a ring keeps. Together with the active and next key the
/// JWKS holds at most 6 keys, far under the 100 EC keys AWS STS accepts
/// (`docs/architecture.md`, "Key life cycle", step 5).
pub const MAX_PREVIOUS_KEYS: u32 = 4;

/// Most derivation attempts for one version before giving up (each fails with
/// probability ~2^-32, so this bound is never reached in practice).
const MAX_DERIVATION_ATTEMPTS: u32 = 256;

/// Failures handling keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The seed has the wrong length.
    #[error("seed is {actual} bytes, expected {expected}")]
    SeedLength {
        /// Expected length.
        expected: usize,
        /// Actual length.
        actual: usize,
    },
    /// The key version is out of range.
    #[error("key version {version} is outside 1..={max}")]
    Version {
        /// Requested version.
        version: u32,
        /// Highest accepted version.
        max: u32,
    },
    /// Too many previous keys requested.
    #[error("{requested} previous keys requested, at most {max} are kept")]
    TooManyPrevious {
        /// Requested.
        requested: u32,
        /// Limit.
        max: u32,
    },
    /// No valid scalar after many attempts (practically impossible).
    #[error("no valid P-256 scalar for version {version} after {attempts} attempts")]
    NoValidScalar {
        /// Version.
        version: u32,
        /// Attempts made.
        attempts: u32,
    },
    /// No valid scalar under a label after many attempts (practically impossible).
    #[error("no valid P-256 scalar for label {label:?} after {attempts} attempts")]
    NoValidLabelledScalar {
        /// The HKDF label.
        label: String,
        /// Attempts made.
        attempts: u32,
    },
    /// aws-lc-rs rejected the key pair.
    #[error("signing key rejected by aws-lc-rs: {0}")]
    Rejected(String),
    /// SPKI encoding failed.
    #[error("cannot encode the public key as SPKI: {0}")]
    Spki(String),
    /// Signing failed.
    #[error("ES256 signing failed")]
    Sign,
}

/// The 32-byte issuer seed unsealed from KMS. Zeroized on drop; never printed.
pub struct Seed(Zeroizing<[u8; SEED_BYTES]>);

impl Seed {
    /// Takes a seed from bytes (must be exactly 32).
    pub fn from_slice(bytes: &[u8]) -> Result<Seed, KeyError> {
        if bytes.len() != SEED_BYTES {
            return Err(KeyError::SeedLength {
                expected: SEED_BYTES,
                actual: bytes.len(),
            });
        }
        let mut s = Zeroizing::new([0u8; SEED_BYTES]);
        s.copy_from_slice(bytes);
        Ok(Seed(s))
    }

    fn as_bytes(&self) -> &[u8; SEED_BYTES] {
        &self.0
    }
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Seed(<redacted>)")
    }
}

/// The HKDF `info` string for a version and retry counter.
pub fn derivation_info(version: u32, counter: u32) -> String {
    if counter == 0 {
        format!("oidc/issuer/v{version}")
    } else {
        format!("oidc/issuer/v{version}/{counter}")
    }
}

/// Picks the first candidate that is a valid non-zero scalar below n; `expand` gives the
/// 32-byte candidate for an info string.
fn derive_with(
    version: u32,
    mut expand: impl FnMut(&[u8]) -> Zeroizing<[u8; 32]>,
) -> Result<p256::SecretKey, KeyError> {
    for counter in 0..MAX_DERIVATION_ATTEMPTS {
        let info = derivation_info(version, counter);
        let okm = expand(info.as_bytes());
        // from_slice refuses zero and values >= n (it reads exactly 32 big-endian bytes).
        if let Ok(sk) = p256::SecretKey::from_slice(&okm[..]) {
            return Ok(sk);
        }
    }
    Err(KeyError::NoValidScalar {
        version,
        attempts: MAX_DERIVATION_ATTEMPTS,
    })
}

/// Derives the P-256 secret scalar for `version` from the seed.
pub fn derive_secret(seed: &Seed, version: u32) -> Result<p256::SecretKey, KeyError> {
    check_version(version)?;
    let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), seed.as_bytes());
    derive_with(version, |info| {
        let mut okm = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's 255*32 limit, so expand cannot fail.
        if hk.expand(info, &mut okm[..]).is_err() {
            okm.fill(0);
        }
        okm
    })
}

/// The HKDF `info` of the key that tags Sign-In with Ethereum nonces
/// (`authz::nonce`): its own label, so it shares nothing with the signing keys.
pub const NONCE_KEY_INFO: &[u8] = b"siwe/nonce/v1";

/// Derives the 32-byte key that tags sign-in nonces: the same for every enclave that
/// unsealed the seed, so a fleet accepts each other's nonces.
pub fn derive_nonce_key(seed: &Seed) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), seed.as_bytes());
    let mut okm = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 255*32 limit, so expand cannot fail.
    if hk.expand(NONCE_KEY_INFO, &mut okm[..]).is_err() {
        okm.fill(0);
    }
    okm
}

/// Derives a P-256 secret scalar under its own HKDF label (`info`), with the same salt
/// and seed as the signing keys: `label`, then `label/1`, `label/2`, … until the 32
/// bytes are a valid scalar (zero or ≥ n has probability about 2^-32). The keys of the
/// issuer's TLS (`tls/issuer/v1`) and of its ACME account (`acme/account/v1`) come from
/// here, so every enclave that unseals the seed has the same ones.
pub fn derive_labelled_secret(seed: &Seed, label: &str) -> Result<p256::SecretKey, KeyError> {
    let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), seed.as_bytes());
    for counter in 0..MAX_DERIVATION_ATTEMPTS {
        let info = if counter == 0 {
            label.to_string()
        } else {
            format!("{label}/{counter}")
        };
        let mut okm = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's 255*32 limit, so expand cannot fail.
        if hk.expand(info.as_bytes(), &mut okm[..]).is_err() {
            okm.fill(0);
        }
        if let Ok(sk) = p256::SecretKey::from_slice(&okm[..]) {
            return Ok(sk);
        }
    }
    Err(KeyError::NoValidLabelledScalar {
        label: label.to_string(),
        attempts: MAX_DERIVATION_ATTEMPTS,
    })
}

fn check_version(version: u32) -> Result<(), KeyError> {
    if version == 0 || version > MAX_KEY_VERSION {
        return Err(KeyError::Version {
            version,
            max: MAX_KEY_VERSION,
        });
    }
    Ok(())
}

/// A public JWK exactly as published (`docs/architecture.md`, "Key life cycle", step 4):
/// no `key_ops`, no private members.
/// Field order here is the serialisation order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Jwk {
    /// Always `EC`.
    pub kty: String,
    /// Always `P-256`.
    pub crv: String,
    /// X coordinate, base64url without padding (32 bytes).
    pub x: String,
    /// Y coordinate, base64url without padding (32 bytes).
    pub y: String,
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// Always `ES256`.
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
}

/// RFC 7638 thumbprint of a P-256 key given its base64url coordinates: SHA-256 over
/// `{"crv":"P-256","kty":"EC","x":"…","y":"…"}` (members in lexicographic order, no
/// whitespace), base64url without padding.
pub fn thumbprint_p256(x_b64: &str, y_b64: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x_b64}","y":"{y_b64}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// One issuer signing key (a version of the derivation).
pub struct SigningKey {
    version: u32,
    key_pair: EcdsaKeyPair,
    jwk: Jwk,
    spki_der: Vec<u8>,
    rng: SystemRandom,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("version", &self.version)
            .field("kid", &self.jwk.kid)
            .field("private", &"<redacted>")
            .finish()
    }
}

impl SigningKey {
    /// Builds the signing key from a P-256 secret.
    pub fn from_secret(version: u32, secret: &p256::SecretKey) -> Result<SigningKey, KeyError> {
        let public = secret.public_key();
        let point = public.to_encoded_point(false);
        let (x, y) = match (point.x(), point.y()) {
            (Some(x), Some(y)) => (x, y),
            _ => return Err(KeyError::Rejected("public point is the identity".into())),
        };
        let scalar = Zeroizing::new(secret.to_bytes());
        let key_pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &scalar[..],
            point.as_bytes(),
        )
        .map_err(|e| KeyError::Rejected(e.to_string()))?;
        let spki_der = public
            .to_public_key_der()
            .map_err(|e| KeyError::Spki(e.to_string()))?
            .into_vec();
        let x = URL_SAFE_NO_PAD.encode(x);
        let y = URL_SAFE_NO_PAD.encode(y);
        let kid = thumbprint_p256(&x, &y);
        Ok(SigningKey {
            version,
            key_pair,
            jwk: Jwk {
                kty: "EC".into(),
                crv: "P-256".into(),
                x,
                y,
                kid,
                alg: "ES256".into(),
                use_: "sig".into(),
            },
            spki_der,
            rng: SystemRandom::new(),
        })
    }

    /// Derives version `version` from the seed.
    pub fn derive(seed: &Seed, version: u32) -> Result<SigningKey, KeyError> {
        let secret = derive_secret(seed, version)?;
        SigningKey::from_secret(version, &secret)
    }

    /// The derivation version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The RFC 7638 key id.
    pub fn kid(&self) -> &str {
        &self.jwk.kid
    }

    /// The public JWK.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// SubjectPublicKeyInfo DER of the public key.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Uncompressed SEC1 public point (65 bytes).
    pub fn public_point(&self) -> &[u8] {
        self.key_pair.public_key().as_ref()
    }

    /// ES256 signature over `message`: raw r‖s, 64 bytes (never DER).
    pub fn sign(&self, message: &[u8]) -> Result<[u8; 64], KeyError> {
        let sig = self
            .key_pair
            .sign(&self.rng, message)
            .map_err(|_| KeyError::Sign)?;
        fixed_signature(sig.as_ref())
    }

    /// ES256 signature over the message whose SHA-256 `digest` the caller computed from
    /// the message itself (a JWT's signing input, whose hash the audit chain also needs):
    /// the same signature as [`SigningKey::sign`] of that message, without hashing it a
    /// second time. A digest of another algorithm is refused (by aws-lc-rs).
    pub fn sign_digest(&self, digest: &aws_lc_rs::digest::Digest) -> Result<[u8; 64], KeyError> {
        let sig = self
            .key_pair
            .sign_digest(digest)
            .map_err(|_| KeyError::Sign)?;
        fixed_signature(sig.as_ref())
    }
}

/// A fixed-format (r‖s) P-256 signature as an array; any other length is an error.
fn fixed_signature(bytes: &[u8]) -> Result<[u8; 64], KeyError> {
    bytes.try_into().map_err(|_| KeyError::Sign)
}

/// Which key versions a ring holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingSpec {
    /// The version that signs.
    pub active: u32,
    /// Publish `active + 1` before it signs (rotation step 1).
    pub publish_next: bool,
    /// Keep this many earlier versions published (until their tokens expired).
    pub keep_previous: u32,
}

impl Default for RingSpec {
    fn default() -> Self {
        RingSpec {
            active: 1,
            publish_next: false,
            keep_previous: 1,
        }
    }
}

/// The published keys: the active one, optionally the next one, and a few previous ones.
#[derive(Debug)]
pub struct KeyRing {
    active: SigningKey,
    next: Option<SigningKey>,
    previous: Vec<SigningKey>,
    jwks: Vec<u8>,
}

#[derive(Serialize)]
struct JwksDoc<'a> {
    keys: Vec<&'a Jwk>,
}

impl KeyRing {
    /// Derives every key of `spec` from the seed and renders the JWKS.
    pub fn derive(seed: &Seed, spec: RingSpec) -> Result<KeyRing, KeyError> {
        check_version(spec.active)?;
        if spec.keep_previous > MAX_PREVIOUS_KEYS {
            return Err(KeyError::TooManyPrevious {
                requested: spec.keep_previous,
                max: MAX_PREVIOUS_KEYS,
            });
        }
        let active = SigningKey::derive(seed, spec.active)?;
        let next = if spec.publish_next {
            Some(SigningKey::derive(seed, spec.active + 1)?)
        } else {
            None
        };
        let mut previous = Vec::new();
        for back in 1..=spec.keep_previous {
            if let Some(v) = spec.active.checked_sub(back).filter(|v| *v >= 1) {
                previous.push(SigningKey::derive(seed, v)?);
            }
        }
        let mut ring = KeyRing {
            active,
            next,
            previous,
            jwks: Vec::new(),
        };
        ring.jwks = render_jwks(ring.keys().map(|k| k.jwk()));
        Ok(ring)
    }

    /// The key that signs.
    pub fn active(&self) -> &SigningKey {
        &self.active
    }

    /// All published keys: active, next, then previous (newest first).
    pub fn keys(&self) -> impl Iterator<Item = &SigningKey> {
        std::iter::once(&self.active)
            .chain(self.next.iter())
            .chain(self.previous.iter())
    }

    /// Key ids in JWKS order.
    pub fn kids(&self) -> Vec<String> {
        self.keys().map(|k| k.kid().to_string()).collect()
    }

    /// The exact JWKS bytes that are attested and served.
    pub fn jwks_bytes(&self) -> &[u8] {
        &self.jwks
    }
}

/// Renders `{"keys":[…]}` compactly, members in the order of [`Jwk`].
pub fn render_jwks<'a>(keys: impl Iterator<Item = &'a Jwk>) -> Vec<u8> {
    let doc = JwksDoc {
        keys: keys.collect(),
    };
    // Serialising plain strings into a Vec cannot fail.
    serde_json::to_vec(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(b: u8) -> Seed {
        Seed::from_slice(&[b; 32]).unwrap()
    }

    #[test]
    fn seed_length_checked() {
        assert!(matches!(
            Seed::from_slice(&[0; 31]),
            Err(KeyError::SeedLength {
                expected: 32,
                actual: 31
            })
        ));
        assert!(Seed::from_slice(&[0; 33]).is_err());
        assert!(Seed::from_slice(&[]).is_err());
    }

    #[test]
    fn seed_debug_redacted() {
        let s = format!("{:?}", seed(0xAB));
        assert!(
            !s.contains("171") && !s.to_lowercase().contains("ab,"),
            "{s}"
        );
        assert_eq!(s, "Seed(<redacted>)");
    }

    #[test]
    fn signing_key_debug_redacted() {
        let k = SigningKey::derive(&seed(7), 1).unwrap();
        let d = format!("{k:?}");
        assert!(d.contains("<redacted>") && d.contains(k.kid()));
    }

    #[test]
    fn derivation_is_deterministic_and_versioned() {
        let a = SigningKey::derive(&seed(1), 1).unwrap();
        let b = SigningKey::derive(&seed(1), 1).unwrap();
        let c = SigningKey::derive(&seed(1), 2).unwrap();
        let d = SigningKey::derive(&seed(2), 1).unwrap();
        assert_eq!(a.kid(), b.kid());
        assert_ne!(a.kid(), c.kid());
        assert_ne!(a.kid(), d.kid());
    }

    #[test]
    fn derivation_matches_independent_hkdf() {
        // Recompute with the hkdf crate directly and p256's own public key.
        let s = [0x42u8; 32];
        let hk = Hkdf::<Sha256>::new(Some(b"agentkeys-nitro-broker"), &s);
        let mut okm = [0u8; 32];
        hk.expand(b"oidc/issuer/v1", &mut okm).unwrap();
        let sk = p256::SecretKey::from_bytes(&okm.into()).unwrap();
        let pt = sk.public_key().to_encoded_point(false);
        let key = SigningKey::derive(&Seed::from_slice(&s).unwrap(), 1).unwrap();
        assert_eq!(key.public_point(), pt.as_bytes());
        assert_eq!(key.jwk().x, URL_SAFE_NO_PAD.encode(pt.x().unwrap()));
    }

    #[test]
    fn invalid_scalars_are_rederived_with_counter() {
        let n_bytes =
            hex::decode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")
                .unwrap();
        let mut seen = Vec::new();
        let sk = derive_with(3, |info| {
            seen.push(String::from_utf8(info.to_vec()).unwrap());
            let mut out = Zeroizing::new([0u8; 32]);
            match seen.len() {
                1 => {}                             // zero
                2 => out.copy_from_slice(&n_bytes), // == n
                3 => out.fill(0xff),                // > n
                _ => out[31] = 5,
            }
            out
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                "oidc/issuer/v3",
                "oidc/issuer/v3/1",
                "oidc/issuer/v3/2",
                "oidc/issuer/v3/3"
            ]
        );
        assert_eq!(sk.to_bytes()[31], 5);
    }

    #[test]
    fn derive_with_gives_up() {
        let err = derive_with(1, |_| Zeroizing::new([0u8; 32])).unwrap_err();
        assert!(matches!(err, KeyError::NoValidScalar { version: 1, .. }));
    }

    #[test]
    fn version_bounds() {
        assert!(matches!(
            SigningKey::derive(&seed(1), 0),
            Err(KeyError::Version { version: 0, .. })
        ));
        assert!(SigningKey::derive(&seed(1), MAX_KEY_VERSION + 1).is_err());
    }

    #[test]
    fn thumbprint_matches_hand_assembled_json() {
        // P-256 public key of RFC 7515 Appendix A.3 (ES256 example).
        let x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
        let y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
        let json = String::from("{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"")
            + x
            + "\",\"y\":\""
            + y
            + "\"}";
        let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(json.as_bytes()));
        assert_eq!(thumbprint_p256(x, y), expected);
        // The same value computed outside Rust: Python `json.dumps(sort_keys=True,
        // separators=(",", ":"))` + `hashlib.sha256` + urlsafe base64 without padding.
        assert_eq!(expected, "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U");
    }

    #[test]
    fn jwk_has_exact_members() {
        let k = SigningKey::derive(&seed(9), 1).unwrap();
        let v: serde_json::Value = serde_json::to_value(k.jwk()).unwrap();
        let obj = v.as_object().unwrap();
        let mut names: Vec<_> = obj.keys().cloned().collect();
        names.sort();
        assert_eq!(names, vec!["alg", "crv", "kid", "kty", "use", "x", "y"]);
        assert_eq!(obj["use"], "sig");
        assert_eq!(obj["alg"], "ES256");
        assert_eq!(URL_SAFE_NO_PAD.decode(&k.jwk().x).unwrap().len(), 32);
        assert_eq!(URL_SAFE_NO_PAD.decode(&k.jwk().y).unwrap().len(), 32);
        assert!(!k.jwk().x.contains('='));
    }

    #[test]
    fn jwks_bytes_are_compact_and_ordered() {
        let ring = KeyRing::derive(&seed(3), RingSpec::default()).unwrap();
        let k = ring.active().jwk();
        let expected = format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","x":"{}","y":"{}","kid":"{}","alg":"ES256","use":"sig"}}]}}"#,
            k.x, k.y, k.kid
        );
        assert_eq!(ring.jwks_bytes(), expected.as_bytes());
        assert!(!String::from_utf8_lossy(ring.jwks_bytes()).contains("key_ops"));
    }

    #[test]
    fn ring_with_next_and_previous() {
        let spec = RingSpec {
            active: 3,
            publish_next: true,
            keep_previous: 4,
        };
        let ring = KeyRing::derive(&seed(3), spec).unwrap();
        let versions: Vec<u32> = ring.keys().map(|k| k.version()).collect();
        assert_eq!(versions, vec![3, 4, 2, 1]);
        assert_eq!(ring.kids().len(), 4);
        assert!(matches!(
            KeyRing::derive(
                &seed(3),
                RingSpec {
                    keep_previous: 5,
                    ..spec
                }
            ),
            Err(KeyError::TooManyPrevious {
                requested: 5,
                max: 4
            })
        ));
    }

    #[test]
    fn spki_matches_p256() {
        let k = SigningKey::derive(&seed(5), 1).unwrap();
        use p256::pkcs8::DecodePublicKey;
        let pk = p256::PublicKey::from_public_key_der(k.spki_der()).unwrap();
        assert_eq!(pk.to_encoded_point(false).as_bytes(), k.public_point());
    }

    #[test]
    fn signature_verifies_with_p256() {
        use p256::ecdsa::signature::Verifier;
        let k = SigningKey::derive(&seed(5), 1).unwrap();
        let sig = k.sign(b"hello").unwrap();
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(k.public_point()).unwrap();
        let s = p256::ecdsa::Signature::from_slice(&sig).unwrap();
        vk.verify(b"hello", &s).unwrap();
        assert!(vk.verify(b"hellp", &s).is_err());
    }

    #[test]
    fn a_signature_of_a_digest_verifies_over_the_message() {
        use aws_lc_rs::digest::{digest, SHA256, SHA384};
        use p256::ecdsa::signature::Verifier;
        let k = SigningKey::derive(&seed(5), 1).unwrap();
        let sig = k.sign_digest(&digest(&SHA256, b"hello")).unwrap();
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(k.public_point()).unwrap();
        let s = p256::ecdsa::Signature::from_slice(&sig).unwrap();
        vk.verify(b"hello", &s).unwrap();
        assert!(vk.verify(b"hellp", &s).is_err());
        assert!(matches!(
            k.sign_digest(&digest(&SHA384, b"hello")),
            Err(KeyError::Sign)
        ));
    }
}
