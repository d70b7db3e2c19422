//! `signed-session`: the caller's session token, a compact JWS (RFC 7515) the session
//! backend signed with ES256 (RFC 7518 §3.4), verified inside the enclave.
//!
//! The token's header carries the backend's public key as a `jwk` (RFC 7515 §4.1.3); the
//! enclave accepts it only if its RFC 7638 thumbprint is one the enclave was started with
//! (`--session-key-thumbprint`, part of the measured command line). The enclave has no
//! network path of its own to fetch the backend's JWKS, and keys the parent handed over
//! would be the parent's word, so the thumbprint pins the key and the token brings it.
//!
//! Checked, in order: size; three base64url parts; header JSON with `alg` exactly `ES256`
//! (so `none`, `HS256` and every other algorithm are refused) and a P-256 `jwk` whose
//! thumbprint is pinned; the signature over the signing input; claims `sub` (the wallet,
//! by the one wallet rule), `aud` (the enclave's issuer, or a list holding it), `exp`,
//! `iat`, optional `nbf`, and a non-empty `jti`, with [`CLOCK_SKEW_SECONDS`] of skew.

use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use agentkeys_wire::{Wallet, WalletError};

/// Clock skew allowed between the session backend and the enclave when checking `exp`,
/// `nbf` and `iat`: one minute, the order of NTP-disciplined clocks' worst drift over a
/// day plus network delay; well below any sensible session lifetime.
pub const CLOCK_SKEW_SECONDS: u64 = 60;
/// Largest session token accepted (bytes). A token with a P-256 `jwk` header and the
/// claims above is about 600 bytes; 4 KiB leaves room for extra claims.
pub const MAX_SESSION_TOKEN_BYTES: usize = 4096;

/// Why a session token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Larger than [`MAX_SESSION_TOKEN_BYTES`].
    #[error("session token is {actual} bytes, more than {max}")]
    TooLarge {
        /// Its size.
        actual: usize,
        /// The limit.
        max: usize,
    },
    /// Not three base64url parts.
    #[error("session token is not a compact JWS (header.claims.signature)")]
    Shape,
    /// A part is not base64url, or not the JSON expected.
    #[error("session token {part} is malformed: {reason}")]
    Part {
        /// `header`, `claims` or `signature`.
        part: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An algorithm other than ES256 (`none` and HMAC included).
    #[error("session token algorithm {alg:?} is not allowed (only ES256)")]
    Algorithm {
        /// The `alg` found (at most 32 characters).
        alg: String,
    },
    /// The header's `jwk` is missing or not an EC P-256 public key.
    #[error("session token header has no usable P-256 jwk: {reason}")]
    Jwk {
        /// What is wrong.
        reason: String,
    },
    /// The key is not one the enclave was started with.
    #[error("session token is signed by key {thumbprint}, which is not a session key this enclave trusts")]
    UnknownKey {
        /// The RFC 7638 thumbprint of the key.
        thumbprint: String,
    },
    /// The signature does not verify.
    #[error("session token signature does not verify")]
    Signature,
    /// `aud` does not name the issuer.
    #[error("session token audience {found:?} is not this issuer ({expected})")]
    Audience {
        /// The `aud` found (at most 128 characters).
        found: String,
        /// The issuer.
        expected: String,
    },
    /// `exp` has passed.
    #[error("session token expired at {exp} (now {now})")]
    Expired {
        /// Its `exp`.
        exp: u64,
        /// The enclave's clock.
        now: u64,
    },
    /// `nbf` or `iat` is in the future.
    #[error("session token is not valid before {not_before} (now {now})")]
    NotYetValid {
        /// Its `nbf` (or `iat`).
        not_before: u64,
        /// The enclave's clock.
        now: u64,
    },
    /// `sub` is not a wallet.
    #[error("session token sub is not a wallet: {0}")]
    Subject(#[from] WalletError),
    /// `jti` is empty.
    #[error("session token has an empty jti")]
    Jti,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    jwk: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    aud: Audience,
    exp: u64,
    iat: u64,
    #[serde(default)]
    nbf: Option<u64>,
    jti: String,
}

/// A session token that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSession {
    /// The wallet it was issued for.
    pub wallet: Wallet,
    /// Its `exp`.
    pub expires_at: u64,
}

/// RFC 7638 thumbprint of an EC P-256 key: base64url(SHA-256 of
/// `{"crv":"P-256","kty":"EC","x":…,"y":…}`), members in lexicographic order, no spaces.
pub fn thumbprint(x_b64: &str, y_b64: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x_b64}","y":"{y_b64}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

fn excerpt(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn part<T: for<'de> Deserialize<'de>>(name: &'static str, b64: &str) -> Result<T, SessionError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| SessionError::Part {
            part: name,
            reason: "not base64url".into(),
        })?;
    serde_json::from_slice(&bytes).map_err(|e| SessionError::Part {
        part: name,
        reason: excerpt(&e.to_string(), 120),
    })
}

/// The header's P-256 key: its SEC1 uncompressed point and thumbprint.
fn header_key(jwk: Option<&serde_json::Value>) -> Result<(Vec<u8>, String), SessionError> {
    let jwk = jwk.ok_or_else(|| SessionError::Jwk {
        reason: "no jwk member".into(),
    })?;
    let member = |name: &str| {
        jwk.get(name)
            .and_then(|v| v.as_str())
            .ok_or_else(|| SessionError::Jwk {
                reason: format!("{name} is missing or not a string"),
            })
    };
    if member("kty")? != "EC" || member("crv")? != "P-256" {
        return Err(SessionError::Jwk {
            reason: "not kty EC crv P-256".into(),
        });
    }
    let (x, y) = (member("x")?, member("y")?);
    let coordinate = |name: &str, b64: &str| {
        URL_SAFE_NO_PAD
            .decode(b64)
            .ok()
            .filter(|c| c.len() == 32)
            .ok_or_else(|| SessionError::Jwk {
                reason: format!("{name} is not 32 bytes of base64url"),
            })
    };
    let mut point = Vec::with_capacity(65);
    point.push(0x04);
    point.extend_from_slice(&coordinate("x", x)?);
    point.extend_from_slice(&coordinate("y", y)?);
    Ok((point, thumbprint(x, y)))
}

/// Verifies `token` for the enclave whose issuer is `issuer`, trusting the session keys
/// whose thumbprints are `trusted`, at time `now`.
pub fn verify(
    token: &str,
    trusted: &[String],
    issuer: &str,
    now: u64,
) -> Result<VerifiedSession, SessionError> {
    if token.len() > MAX_SESSION_TOKEN_BYTES {
        return Err(SessionError::TooLarge {
            actual: token.len(),
            max: MAX_SESSION_TOKEN_BYTES,
        });
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SessionError::Shape);
    };
    let header: Header = part("header", header_b64)?;
    if header.alg != "ES256" {
        return Err(SessionError::Algorithm {
            alg: excerpt(&header.alg, 32),
        });
    }
    let (point, thumbprint) = header_key(header.jwk.as_ref())?;
    if !trusted.contains(&thumbprint) {
        return Err(SessionError::UnknownKey { thumbprint });
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| SessionError::Part {
            part: "signature",
            reason: "not base64url".into(),
        })?;
    let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| SessionError::Signature)?;
    let claims: Claims = part("claims", claims_b64)?;
    let names_issuer = match &claims.aud {
        Audience::One(a) => a == issuer,
        Audience::Many(list) => list.iter().any(|a| a == issuer),
    };
    if !names_issuer {
        let found = match &claims.aud {
            Audience::One(a) => a.clone(),
            Audience::Many(list) => list.join(","),
        };
        return Err(SessionError::Audience {
            found: excerpt(&found, 128),
            expected: issuer.to_string(),
        });
    }
    if claims.exp.saturating_add(CLOCK_SKEW_SECONDS) <= now {
        return Err(SessionError::Expired {
            exp: claims.exp,
            now,
        });
    }
    let not_before = claims.nbf.unwrap_or(claims.iat).max(claims.iat);
    if not_before > now.saturating_add(CLOCK_SKEW_SECONDS) {
        return Err(SessionError::NotYetValid { not_before, now });
    }
    if claims.jti.is_empty() {
        return Err(SessionError::Jti);
    }
    Ok(VerifiedSession {
        wallet: Wallet::parse(&claims.sub)?,
        expires_at: claims.exp,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;

    pub(crate) const ISSUER: &str = "https://issuer.example.com";
    pub(crate) const WALLET: &str = "0x00000000000000000000000000000000000000aa";
    pub(crate) const NOW: u64 = 1_700_000_000;

    /// A session backend's key for tests.
    pub(crate) struct Backend(p256::ecdsa::SigningKey);

    impl Backend {
        pub(crate) fn new(byte: u8) -> Backend {
            Backend(p256::ecdsa::SigningKey::from_slice(&[byte; 32]).unwrap())
        }

        fn xy(&self) -> (String, String) {
            let p = self.0.verifying_key().to_encoded_point(false);
            (
                URL_SAFE_NO_PAD.encode(p.x().unwrap()),
                URL_SAFE_NO_PAD.encode(p.y().unwrap()),
            )
        }

        pub(crate) fn thumbprint(&self) -> String {
            let (x, y) = self.xy();
            thumbprint(&x, &y)
        }

        pub(crate) fn token_with(
            &self,
            header: serde_json::Value,
            claims: serde_json::Value,
        ) -> String {
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let sig: p256::ecdsa::Signature = self.0.sign(input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
        }

        pub(crate) fn header(&self) -> serde_json::Value {
            let (x, y) = self.xy();
            serde_json::json!({"alg": "ES256", "typ": "JWT",
                "jwk": {"kty": "EC", "crv": "P-256", "x": x, "y": y}})
        }

        pub(crate) fn token(&self, claims: serde_json::Value) -> String {
            self.token_with(self.header(), claims)
        }
    }

    pub(crate) fn claims(wallet: &str) -> serde_json::Value {
        serde_json::json!({"sub": wallet, "aud": ISSUER, "iat": NOW - 10, "exp": NOW + 600, "jti": "s1"})
    }

    fn check(token: &str, backend: &Backend) -> Result<VerifiedSession, SessionError> {
        verify(token, &[backend.thumbprint()], ISSUER, NOW)
    }

    #[test]
    fn a_session_of_a_trusted_key_gives_its_wallet() {
        let b = Backend::new(1);
        let v = check(&b.token(claims(WALLET)), &b).unwrap();
        assert_eq!(v.wallet.as_str(), WALLET);
        assert_eq!(v.expires_at, NOW + 600);
        let mut c = claims(&WALLET.to_uppercase().replacen("0X", "0x", 1));
        c["aud"] = serde_json::json!(["other", ISSUER]);
        assert_eq!(check(&b.token(c), &b).unwrap().wallet.as_str(), WALLET);
    }

    /// RFC 7638 §3.1's example key and thumbprint.
    #[test]
    fn thumbprint_follows_rfc_7638() {
        // An EC key: the members are crv, kty, x, y in that order.
        let t = thumbprint("AAAA", "BBBB");
        let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(
            br#"{"crv":"P-256","kty":"EC","x":"AAAA","y":"BBBB"}"#,
        ));
        assert_eq!(t, expected);
    }

    #[test]
    fn every_bad_session_is_refused_with_its_reason() {
        let b = Backend::new(1);
        let other = Backend::new(2);
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut c = claims(WALLET);
            f(&mut c);
            b.token(c)
        };
        let mut none_header = b.header();
        none_header["alg"] = "none".into();
        let mut hs_header = b.header();
        hs_header["alg"] = "HS256".into();
        let mut no_jwk = b.header();
        no_jwk.as_object_mut().unwrap().remove("jwk");
        let good = b.token(claims(WALLET));
        let (head, rest) = good.split_once('.').unwrap();
        let (body, _) = rest.split_once('.').unwrap();
        let unsigned = format!("{head}.{body}.");
        type Expect = fn(&SessionError) -> bool;
        let cases: Vec<(String, Expect)> = vec![
            ("x".repeat(MAX_SESSION_TOKEN_BYTES + 1), |e| {
                matches!(e, SessionError::TooLarge { .. })
            }),
            ("a.b".into(), |e| matches!(e, SessionError::Shape)),
            ("a.b.c.d".into(), |e| matches!(e, SessionError::Shape)),
            ("!!.b.c".into(), |e| {
                matches!(e, SessionError::Part { part: "header", .. })
            }),
            (
                b.token_with(none_header, claims(WALLET)),
                |e| matches!(e, SessionError::Algorithm { alg } if alg == "none"),
            ),
            (
                b.token_with(hs_header, claims(WALLET)),
                |e| matches!(e, SessionError::Algorithm { alg } if alg == "HS256"),
            ),
            (b.token_with(no_jwk, claims(WALLET)), |e| {
                matches!(e, SessionError::Jwk { .. })
            }),
            (other.token(claims(WALLET)), |e| {
                matches!(e, SessionError::UnknownKey { .. })
            }),
            // Another trusted-looking header on a token the other key signed.
            (other.token_with(b.header(), claims(WALLET)), |e| {
                matches!(e, SessionError::Signature)
            }),
            (unsigned, |e| matches!(e, SessionError::Signature)),
            (
                with(&|c| c["aud"] = "https://evil.example.com".into()),
                |e| matches!(e, SessionError::Audience { .. }),
            ),
            (with(&|c| c["aud"] = serde_json::json!([])), |e| {
                matches!(e, SessionError::Audience { .. })
            }),
            (
                with(&|c| c["exp"] = (NOW - CLOCK_SKEW_SECONDS).into()),
                |e| matches!(e, SessionError::Expired { .. }),
            ),
            (
                with(&|c| c["nbf"] = (NOW + CLOCK_SKEW_SECONDS + 1).into()),
                |e| matches!(e, SessionError::NotYetValid { .. }),
            ),
            (
                with(&|c| c["iat"] = (NOW + CLOCK_SKEW_SECONDS + 1).into()),
                |e| matches!(e, SessionError::NotYetValid { .. }),
            ),
            (with(&|c| c["sub"] = "0x1234".into()), |e| {
                matches!(e, SessionError::Subject(_))
            }),
            (with(&|c| c["jti"] = "".into()), |e| {
                matches!(e, SessionError::Jti)
            }),
            (
                with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
                |e| matches!(e, SessionError::Part { part: "claims", .. }),
            ),
        ];
        for (token, expected) in cases {
            let e = check(&token, &b).unwrap_err();
            assert!(expected(&e), "{e:?} for {}", excerpt(&token, 80));
            assert!(e.to_string().len() < 300, "{e}");
        }
        // Within the skew, a just-expired session still passes.
        let c = with(&|c| c["exp"] = (NOW - CLOCK_SKEW_SECONDS + 1).into());
        assert!(check(&c, &b).is_ok());
    }
}
