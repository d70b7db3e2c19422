//! The issuer's JWKS (RFC 7517): its EC P-256 keys, and ES256 signatures checked against
//! them (RFC 7518 §3.4). One reader serves `agentkeys-attest verify --issuer` and
//! `audit verify --token`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;

/// One EC P-256 key of the JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    /// Its `kid`.
    pub kid: String,
    /// The x coordinate (32 bytes).
    pub x: Vec<u8>,
    /// The y coordinate (32 bytes).
    pub y: Vec<u8>,
}

/// Why a JWKS could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Not JSON.
    #[error("the JWKS is not JSON: {0}")]
    Json(String),
    /// No `keys` array.
    #[error("the JWKS has no \"keys\" array")]
    NoKeysArray,
    /// An empty `keys` array.
    #[error("the JWKS has no keys")]
    Empty,
    /// A member is missing or not a string.
    #[error("keys[{index}].{member} is missing or not a string")]
    Member {
        /// Which key.
        index: usize,
        /// Which member.
        member: &'static str,
    },
    /// A key that is not EC P-256.
    #[error("keys[{index}] is kty {kty:?} crv {crv:?}, expected EC P-256")]
    NotP256 {
        /// Which key.
        index: usize,
        /// Its `kty`.
        kty: String,
        /// Its `crv`.
        crv: String,
    },
    /// A coordinate that is not 32 bytes of base64url.
    #[error("keys[{index}].{member} is not 32 bytes of base64url")]
    Coordinate {
        /// Which key.
        index: usize,
        /// `x` or `y`.
        member: &'static str,
    },
}

/// Reads `{"keys": [{"kty":"EC","crv":"P-256","x","y","kid",...}, ...]}`.
pub fn parse_jwks(body: &[u8]) -> Result<Vec<Jwk>, JwksError> {
    let jwks: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| JwksError::Json(e.to_string()))?;
    let keys = jwks
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or(JwksError::NoKeysArray)?;
    if keys.is_empty() {
        return Err(JwksError::Empty);
    }
    keys.iter()
        .enumerate()
        .map(|(index, key)| {
            let member = |member: &'static str| {
                key.get(member)
                    .and_then(|v| v.as_str())
                    .ok_or(JwksError::Member { index, member })
            };
            let (kty, crv) = (member("kty")?, member("crv")?);
            if kty != "EC" || crv != "P-256" {
                return Err(JwksError::NotP256 {
                    index,
                    kty: kty.to_owned(),
                    crv: crv.to_owned(),
                });
            }
            let coordinate = |name: &'static str| {
                URL_SAFE_NO_PAD
                    .decode(member(name)?)
                    .ok()
                    .filter(|b| b.len() == 32)
                    .ok_or(JwksError::Coordinate {
                        index,
                        member: name,
                    })
            };
            Ok(Jwk {
                kid: member("kid")?.to_owned(),
                x: coordinate("x")?,
                y: coordinate("y")?,
            })
        })
        .collect()
}

impl Jwk {
    /// Whether `signature` (the 64-byte `r ‖ s` of JWS, RFC 7518 §3.4) is this key's
    /// ES256 signature of `signing_input`.
    pub fn verifies_es256(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        let mut sec1 = Vec::with_capacity(65);
        sec1.push(0x04);
        sec1.extend_from_slice(&self.x);
        sec1.extend_from_slice(&self.y);
        let Ok(key) = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1) else {
            return false;
        };
        let Ok(signature) = p256::ecdsa::Signature::from_slice(signature) else {
            return false;
        };
        key.verify(signing_input, &signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;

    fn key_and_jwks() -> (p256::ecdsa::SigningKey, Vec<u8>) {
        let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let point = key.verifying_key().to_encoded_point(false);
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        }]});
        (key, serde_json::to_vec(&jwks).unwrap())
    }

    #[test]
    fn a_signature_verifies_only_over_its_own_input() {
        let (key, jwks) = key_and_jwks();
        let keys = parse_jwks(&jwks).unwrap();
        assert_eq!(keys[0].kid, "k1");
        let signature: p256::ecdsa::Signature = key.sign(b"a.b");
        let bytes = signature.to_bytes();
        assert!(keys[0].verifies_es256(b"a.b", &bytes));
        assert!(!keys[0].verifies_es256(b"a.c", &bytes));
        assert!(!keys[0].verifies_es256(b"a.b", &bytes[..63]));
        let mut flipped = bytes.to_vec();
        flipped[10] ^= 1;
        assert!(!keys[0].verifies_es256(b"a.b", &flipped));
    }

    #[test]
    fn malformed_jwks_are_named() {
        assert!(matches!(parse_jwks(b"nope"), Err(JwksError::Json(_))));
        assert_eq!(parse_jwks(b"{}"), Err(JwksError::NoKeysArray));
        assert_eq!(parse_jwks(br#"{"keys":[]}"#), Err(JwksError::Empty));
        assert_eq!(
            parse_jwks(br#"{"keys":[{"kty":"RSA","crv":"x"}]}"#),
            Err(JwksError::NotP256 {
                index: 0,
                kty: "RSA".into(),
                crv: "x".into()
            })
        );
        assert_eq!(
            parse_jwks(br#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"AA","y":"AA"}]}"#),
            Err(JwksError::Coordinate {
                index: 0,
                member: "x"
            })
        );
        assert_eq!(
            parse_jwks(br#"{"keys":[{"kty":"EC"}]}"#),
            Err(JwksError::Member {
                index: 0,
                member: "crv"
            })
        );
    }
}
