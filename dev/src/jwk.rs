//! The JOSE pieces both the STS stand-in and the demo read: base64url without padding
//! (RFC 7515 §2) and an EC P-256 public JWK (RFC 7518 §6.2.1).

use base64::Engine;
use serde_json::Value;

/// Decodes unpadded base64url; `None` if `part` is not.
pub fn b64url(part: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()
}

/// Length of a P-256 coordinate (RFC 7518 §6.2.1.2: the full 32 bytes, leading zeros kept).
const P256_COORDINATE_BYTES: usize = 32;

/// The verifying key of a JWK with `kty` `EC`, `crv` `P-256` and 32-byte `x` and `y`
/// that form a point on the curve; `None` for anything else.
pub fn p256_verifying_key(jwk: &Value) -> Option<p256::ecdsa::VerifyingKey> {
    let field = |n: &str| jwk.get(n).and_then(Value::as_str);
    if field("kty") != Some("EC") || field("crv") != Some("P-256") {
        return None;
    }
    let coord = |n: &str| {
        field(n)
            .and_then(b64url)
            .filter(|b| b.len() == P256_COORDINATE_BYTES)
    };
    let (x, y) = (coord("x")?, coord("y")?);
    let mut sec1 = Vec::with_capacity(1 + 2 * P256_COORDINATE_BYTES);
    sec1.push(0x04);
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwk() -> Value {
        let key = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
        let point = key.verifying_key().to_encoded_point(false);
        let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        json!({"kty": "EC", "crv": "P-256", "x": enc(point.x().unwrap()), "y": enc(point.y().unwrap())})
    }

    #[test]
    fn a_p256_jwk_gives_its_key() {
        assert!(p256_verifying_key(&jwk()).is_some());
    }

    #[test]
    fn other_keys_and_broken_coordinates_give_none() {
        for (field, value) in [
            ("kty", json!("RSA")),
            ("crv", json!("P-384")),
            ("x", json!("AAAA")),
            ("y", json!("not base64url!")),
            ("x", json!(1)),
        ] {
            let mut k = jwk();
            k[field] = value;
            assert!(p256_verifying_key(&k).is_none(), "{field}");
        }
        let mut off_curve = jwk();
        off_curve["y"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([1u8; 32]));
        assert!(p256_verifying_key(&off_curve).is_none());
    }

    #[test]
    fn b64url_refuses_padding_and_standard_alphabet() {
        assert_eq!(b64url("AQ").unwrap(), vec![1]);
        assert!(b64url("AQ==").is_none());
        assert!(b64url("+/").is_none());
    }
}
