//! ES256 JWT minting. The enclave builds every claim itself — with its own clock, its
//! configured issuer, audience allowlist and TTL bounds — and signs; it never signs bytes
//! supplied by the caller (`docs/architecture.md`, "Mint" and "What a compromised parent
//! can and cannot do").
//!
//! TTL policy: a request without a TTL gets the default; a request whose TTL lies outside
//! `[ttl_min, ttl_max]` is **refused** (not clamped), so a caller never receives a token
//! whose lifetime differs from the one it asked for.

use agentkeys_wire::{Wallet, WalletError};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::keys::SigningKey;

/// Default audience, the one for AWS STS web identity federation; the IAM role's trust
/// policy requires it (`docs/deploy-nitro.md`, "6. IAM OIDC provider and role").
pub const DEFAULT_AUDIENCE: &str = "sts.amazonaws.com";
/// Default token lifetime in seconds. Source: `docs/architecture.md`, "Mint" (TTL policy).
pub const DEFAULT_TTL_SECONDS: u32 = 300;
/// Lowest TTL bound that may be configured. Source: `docs/architecture.md`, "Mint"
/// (bounds configurable inside [60, 3600]).
pub const MIN_TTL_SECONDS: u32 = 60;
/// Highest TTL bound that may be configured. Source: `docs/architecture.md`, "Mint"
/// (bounds configurable inside [60, 3600]).
pub const MAX_TTL_SECONDS: u32 = 3600;
/// Prefix of the `sub` claim. Source: `docs/architecture.md`, "Mint"; the role's trust
/// policy matches `agentkeys:agent:0x*`.
pub const SUBJECT_PREFIX: &str = "agentkeys:agent:";
/// Name of the wallet claim and session tag. Source: `docs/architecture.md`, "Mint".
pub use agentkeys_wire::WALLET_CLAIM;
/// AWS session tags claim name. Source: AWS IAM docs, "Passing session tags using
/// AssumeRoleWithWebIdentity".
pub const AWS_TAGS_CLAIM: &str = "https://aws.amazon.com/tags";
/// Most audiences an allowlist may hold (keeps the config small and explicit).
pub const MAX_AUDIENCES: usize = 16;
/// Longest issuer/audience string accepted.
const MAX_NAME_BYTES: usize = 512;

/// Failures configuring or minting tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The wallet breaks the rule shared with the parent ([`agentkeys_wire::wallet`]).
    #[error("invalid wallet: {reason}")]
    InvalidWallet {
        /// What is wrong with it.
        #[from]
        reason: WalletError,
    },
    /// Requested TTL outside the configured bounds.
    #[error("ttl_seconds {requested} outside the allowed range [{min}, {max}]")]
    TtlOutOfRange {
        /// Requested.
        requested: u32,
        /// Lower bound.
        min: u32,
        /// Upper bound.
        max: u32,
    },
    /// Requested audience not in the allowlist.
    #[error("audience {requested:?} is not allowed (allowed: {allowed:?})")]
    AudienceNotAllowed {
        /// Requested.
        requested: String,
        /// The allowlist.
        allowed: Vec<String>,
    },
    /// The configuration is inconsistent.
    #[error("invalid token configuration: {0}")]
    Config(String),
    /// The system clock is before 1970.
    #[error("system clock is before the UNIX epoch")]
    Clock,
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
    /// Random generation failed.
    #[error("random generator failed")]
    Random,
}

/// What the enclave is configured to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    issuer: String,
    audiences: Vec<String>,
    ttl_default: u32,
    ttl_min: u32,
    ttl_max: u32,
}

impl TokenPolicy {
    /// Validates and builds a policy. `audiences[0]` is the default audience.
    pub fn new(
        issuer: &str,
        audiences: Vec<String>,
        ttl_default: u32,
        ttl_min: u32,
        ttl_max: u32,
    ) -> Result<TokenPolicy, TokenError> {
        if issuer.is_empty() || issuer.len() > MAX_NAME_BYTES {
            return Err(TokenError::Config(format!(
                "issuer must be 1..={MAX_NAME_BYTES} bytes"
            )));
        }
        if issuer.ends_with('/') {
            return Err(TokenError::Config(format!(
                "issuer {issuer:?} has a trailing slash; iss must match exactly"
            )));
        }
        if audiences.is_empty() || audiences.len() > MAX_AUDIENCES {
            return Err(TokenError::Config(format!(
                "between 1 and {MAX_AUDIENCES} audiences required, got {}",
                audiences.len()
            )));
        }
        for a in &audiences {
            if a.is_empty() || a.len() > MAX_NAME_BYTES || a.chars().any(|c| c.is_control()) {
                return Err(TokenError::Config(format!("invalid audience {a:?}")));
            }
        }
        if !(MIN_TTL_SECONDS <= ttl_min
            && ttl_min <= ttl_default
            && ttl_default <= ttl_max
            && ttl_max <= MAX_TTL_SECONDS)
        {
            return Err(TokenError::Config(format!(
                "TTL bounds must satisfy {MIN_TTL_SECONDS} <= min ({ttl_min}) <= default \
                 ({ttl_default}) <= max ({ttl_max}) <= {MAX_TTL_SECONDS}"
            )));
        }
        Ok(TokenPolicy {
            issuer: issuer.to_string(),
            audiences,
            ttl_default,
            ttl_min,
            ttl_max,
        })
    }

    /// The default policy for an issuer: audience [`DEFAULT_AUDIENCE`], lifetime
    /// [`DEFAULT_TTL_SECONDS`], bounds [`MIN_TTL_SECONDS`]..=[`MAX_TTL_SECONDS`].
    pub fn with_defaults(issuer: &str) -> Result<TokenPolicy, TokenError> {
        TokenPolicy::new(
            issuer,
            vec![DEFAULT_AUDIENCE.to_string()],
            DEFAULT_TTL_SECONDS,
            MIN_TTL_SECONDS,
            MAX_TTL_SECONDS,
        )
    }

    /// The configured issuer (`iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The audience allowlist (first = default).
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// Resolves the TTL of a request (refusing out-of-range values).
    pub fn resolve_ttl(&self, requested: Option<u32>) -> Result<u32, TokenError> {
        match requested {
            None => Ok(self.ttl_default),
            Some(t) if t >= self.ttl_min && t <= self.ttl_max => Ok(t),
            Some(t) => Err(TokenError::TtlOutOfRange {
                requested: t,
                min: self.ttl_min,
                max: self.ttl_max,
            }),
        }
    }

    /// Resolves the audience of a request against the allowlist.
    pub fn resolve_audience(&self, requested: Option<&str>) -> Result<&str, TokenError> {
        match requested {
            None => Ok(&self.audiences[0]),
            Some(a) => self
                .audiences
                .iter()
                .find(|x| x.as_str() == a)
                .map(|x| x.as_str())
                .ok_or_else(|| TokenError::AudienceNotAllowed {
                    requested: a.chars().take(MAX_NAME_BYTES).collect(),
                    allowed: self.audiences.clone(),
                }),
        }
    }
}

/// JOSE header (member order = serialisation order).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    /// `ES256`.
    pub alg: String,
    /// Key id of the signing key.
    pub kid: String,
    /// `JWT`.
    pub typ: String,
}

/// AWS session-tags claim.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AwsTags {
    /// Tags set on the session.
    pub principal_tags: PrincipalTags,
    /// Tags that survive role chaining.
    pub transitive_tag_keys: Vec<String>,
}

/// The one principal tag.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PrincipalTags {
    /// The wallet, as a one-element list (AWS's format).
    pub agentkeys_user_wallet: Vec<String>,
}

/// Claims of a minted token (member order = serialisation order).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// `agentkeys:agent:<wallet>`.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Issued at (UNIX seconds).
    pub iat: u64,
    /// Not before (= iat).
    pub nbf: u64,
    /// Expiry.
    pub exp: u64,
    /// Unique token id (128-bit random, hex).
    pub jti: String,
    /// The wallet ([`WALLET_CLAIM`]).
    pub agentkeys_user_wallet: String,
    /// The audit chain epoch of this boot, as a decimal string
    /// ([`agentkeys_wire::EPOCH_CLAIM`]).
    pub agentkeys_epoch: String,
    /// The token's position in the audit chain of `agentkeys_epoch`, from 1
    /// ([`agentkeys_wire::SEQ_CLAIM`]): with the epoch it names the one audit row of this
    /// token.
    pub agentkeys_seq: u64,
    /// The authorization mode that allowed the mint (`signed-session`,
    /// `wallet-signature` or `parent-vouched`).
    pub agentkeys_auth: String,
    /// SHA-256 (hex) of the proof the caller gave: its session token, or its sign-in
    /// message then signature. Absent in `parent-vouched` mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agentkeys_proof_sha256: Option<String>,
    /// When that proof stops being valid (UNIX seconds). Absent in `parent-vouched` mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agentkeys_proof_exp: Option<u64>,
    /// AWS session tags.
    #[serde(rename = "https://aws.amazon.com/tags")]
    pub aws_tags: AwsTags,
}

/// A signed token and its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    /// Compact JWS.
    pub jwt: String,
    /// Key id.
    pub kid: String,
    /// Token id.
    pub jti: String,
    /// Normalised wallet.
    pub wallet: String,
    /// Issued at.
    pub iat: u64,
    /// Expiry.
    pub exp: u64,
    /// SHA-256 of the compact JWT's ASCII bytes.
    pub jwt_sha256: [u8; 32],
    /// SHA-256 of the JWS signing input (what the audit chain hashes).
    pub signing_input_sha256: [u8; 32],
}

/// How a mint was authorized, as its claims state it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProofClaims {
    /// The mode's name.
    pub mode: &'static str,
    /// SHA-256 of the proof.
    pub proof_sha256: Option<[u8; 32]>,
    /// When the proof expires.
    pub proof_expires_at: Option<u64>,
}

impl Default for ProofClaims {
    /// No proof: the parent's word.
    fn default() -> Self {
        ProofClaims {
            mode: "parent-vouched",
            proof_sha256: None,
            proof_expires_at: None,
        }
    }
}

/// A mint request after authorization.
#[derive(Debug, Clone, Default)]
pub struct MintParams<'a> {
    /// The authorized wallet; [`mint`] checks it with [`Wallet::parse`].
    pub wallet: &'a str,
    /// How it was authorized.
    pub proof: ProofClaims,
    /// Requested TTL.
    pub ttl_seconds: Option<u32>,
    /// Requested audience.
    pub audience: Option<&'a str>,
}

/// Current UNIX time in seconds from the enclave's own clock.
pub fn now_unix() -> Result<u64, TokenError> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| TokenError::Clock)
}

fn random_jti(rng: &SystemRandom) -> Result<String, TokenError> {
    let mut b = [0u8; 16];
    rng.fill(&mut b).map_err(|_| TokenError::Random)?;
    Ok(hex::encode(b))
}

/// A SHA-256 digest as an array.
fn sha256_array(digest: &aws_lc_rs::digest::Digest) -> Result<[u8; 32], TokenError> {
    digest
        .as_ref()
        .try_into()
        .map_err(|_| TokenError::Sign("SHA-256 digest of the wrong length".into()))
}

/// A checked request whose claims wait for their place in the audit chain
/// ([`PendingMint::sign_at`]).
#[derive(Debug)]
pub struct PendingMint {
    header_b64: String,
    claims: Claims,
}

/// Checks `params` against `policy` and builds the claims at time `now`, for `key`; the
/// chain position is set by [`PendingMint::sign_at`].
pub fn prepare(
    policy: &TokenPolicy,
    key: &SigningKey,
    params: &MintParams<'_>,
    now: u64,
    rng: &SystemRandom,
) -> Result<PendingMint, TokenError> {
    let wallet = Wallet::parse(params.wallet)?;
    let ttl = policy.resolve_ttl(params.ttl_seconds)?;
    let aud = policy.resolve_audience(params.audience)?.to_string();
    let jti = random_jti(rng)?;
    let header = Header {
        alg: "ES256".into(),
        kid: key.kid().to_string(),
        typ: "JWT".into(),
    };
    let header_json = serde_json::to_vec(&header).map_err(|e| TokenError::Sign(e.to_string()))?;
    let claims = Claims {
        iss: policy.issuer.clone(),
        sub: format!("{SUBJECT_PREFIX}{wallet}"),
        aud,
        iat: now,
        nbf: now,
        exp: now + u64::from(ttl),
        jti,
        agentkeys_user_wallet: wallet.to_string(),
        agentkeys_epoch: String::new(),
        agentkeys_seq: 0,
        agentkeys_auth: params.proof.mode.to_string(),
        agentkeys_proof_sha256: params.proof.proof_sha256.map(hex::encode),
        agentkeys_proof_exp: params.proof.proof_expires_at,
        aws_tags: AwsTags {
            principal_tags: PrincipalTags {
                agentkeys_user_wallet: vec![wallet.into_string()],
            },
            transitive_tag_keys: vec![WALLET_CLAIM.to_string()],
        },
    };
    Ok(PendingMint {
        header_b64: URL_SAFE_NO_PAD.encode(header_json),
        claims,
    })
}

impl PendingMint {
    /// Puts the token at `(epoch, seq)` of the audit chain and signs it with `key` (the key
    /// [`prepare`] named in the header).
    pub fn sign_at(self, key: &SigningKey, epoch: u64, seq: u64) -> Result<Minted, TokenError> {
        let PendingMint {
            header_b64,
            mut claims,
        } = self;
        claims.agentkeys_epoch = epoch.to_string();
        claims.agentkeys_seq = seq;
        let claims_json =
            serde_json::to_vec(&claims).map_err(|e| TokenError::Sign(e.to_string()))?;
        let mut jwt = String::with_capacity(640);
        jwt.push_str(&header_b64);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(claims_json, &mut jwt);
        // The signing input is hashed once: its SHA-256 is what the key signs and what the
        // audit chain links, and the same running hash, carried on over the signature,
        // gives the whole token's.
        let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        hash.update(jwt.as_bytes());
        let mut jwt_hash = hash.clone();
        let signing_input_digest = hash.finish();
        let signing_input_sha256 = sha256_array(&signing_input_digest)?;
        let sig = key
            .sign_digest(&signing_input_digest)
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        let signature_start = jwt.len();
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(sig, &mut jwt);
        jwt_hash.update(&jwt.as_bytes()[signature_start..]);
        let jwt_sha256 = sha256_array(&jwt_hash.finish())?;
        Ok(Minted {
            jwt,
            kid: key.kid().to_string(),
            jti: claims.jti,
            wallet: claims.agentkeys_user_wallet,
            iat: claims.iat,
            exp: claims.exp,
            jwt_sha256,
            signing_input_sha256,
        })
    }
}

/// Builds the claims for `params` at time `now` and chain position `(epoch, seq)`, and
/// signs them with `key`.
pub fn mint(
    policy: &TokenPolicy,
    key: &SigningKey,
    params: &MintParams<'_>,
    now: u64,
    rng: &SystemRandom,
    (epoch, seq): (u64, u64),
) -> Result<Minted, TokenError> {
    prepare(policy, key, params, now, rng)?.sign_at(key, epoch, seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Seed, SigningKey};
    use sha2::{Digest, Sha256};

    const W: &str = "0xAbCdEf0123456789abcdef0123456789ABCDEF01";
    /// An epoch above 2^53 (a JSON number could not carry it exactly) and a seq.
    const POSITION: (u64, u64) = (18_000_000_000_000_000_007, 42);

    fn key() -> SigningKey {
        SigningKey::derive(&Seed::from_slice(&[3; 32]).unwrap(), 1).unwrap()
    }

    fn policy() -> TokenPolicy {
        TokenPolicy::with_defaults("https://issuer.example.com").unwrap()
    }

    fn decode_part<T: serde::de::DeserializeOwned>(p: &str) -> T {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
    }

    /// The mint accepts exactly the wallets the shared rule accepts, in its normal form,
    /// and refuses the others with the rule's own reason (the parent's session check runs
    /// the same table: `parent/src/session.rs`).
    #[test]
    fn mint_applies_the_shared_wallet_rule() {
        let cases: &[&str] = include!("../wire/tests/data/wallet_cases.rs");
        let (k, p, rng) = (key(), policy(), SystemRandom::new());
        for &input in cases {
            let params = MintParams {
                wallet: input,
                ..Default::default()
            };
            let minted = mint(&p, &k, &params, 1, &rng, POSITION).map(|m| m.wallet);
            let expected = Wallet::parse(input)
                .map(Wallet::into_string)
                .map_err(|reason| TokenError::InvalidWallet { reason });
            assert_eq!(minted, expected, "{input:?}");
        }
    }

    #[test]
    fn ttl_refused_outside_bounds() {
        let p = policy();
        assert_eq!(p.resolve_ttl(None).unwrap(), 300);
        assert_eq!(p.resolve_ttl(Some(60)).unwrap(), 60);
        assert_eq!(p.resolve_ttl(Some(3600)).unwrap(), 3600);
        assert_eq!(
            p.resolve_ttl(Some(59)),
            Err(TokenError::TtlOutOfRange {
                requested: 59,
                min: 60,
                max: 3600
            })
        );
        assert!(p.resolve_ttl(Some(3601)).is_err());
        assert!(p.resolve_ttl(Some(0)).is_err());
    }

    #[test]
    fn policy_validation() {
        let aud = || vec![DEFAULT_AUDIENCE.to_string()];
        assert!(TokenPolicy::new("https://i/", aud(), 300, 60, 3600).is_err());
        assert!(TokenPolicy::new("", aud(), 300, 60, 3600).is_err());
        assert!(TokenPolicy::new("https://i", vec![], 300, 60, 3600).is_err());
        assert!(TokenPolicy::new("https://i", aud(), 300, 59, 3600).is_err());
        assert!(TokenPolicy::new("https://i", aud(), 300, 60, 3601).is_err());
        assert!(TokenPolicy::new("https://i", aud(), 30, 60, 3600).is_err());
        assert!(TokenPolicy::new("https://i", aud(), 400, 60, 300).is_err());
        assert!(TokenPolicy::new("https://i", vec!["a\nb".into()], 300, 60, 3600).is_err());
        assert!(TokenPolicy::new("https://i", aud(), 120, 120, 120).is_ok());
    }

    #[test]
    fn audience_allowlist() {
        let p = TokenPolicy::new(
            "https://i",
            vec!["sts.amazonaws.com".into(), "other".into()],
            300,
            60,
            3600,
        )
        .unwrap();
        assert_eq!(p.resolve_audience(None).unwrap(), "sts.amazonaws.com");
        assert_eq!(p.resolve_audience(Some("other")).unwrap(), "other");
        assert!(matches!(
            p.resolve_audience(Some("evil")),
            Err(TokenError::AudienceNotAllowed { .. })
        ));
    }

    #[test]
    fn token_shape_exact() {
        let k = key();
        let rng = SystemRandom::new();
        let params = MintParams {
            wallet: W,
            ttl_seconds: Some(600),
            audience: None,
            ..Default::default()
        };
        let m = mint(&policy(), &k, &params, 1_700_000_000, &rng, POSITION).unwrap();
        let parts: Vec<&str> = m.jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header_raw = URL_SAFE_NO_PAD.decode(parts[0]).unwrap();
        assert_eq!(
            header_raw,
            format!(r#"{{"alg":"ES256","kid":"{}","typ":"JWT"}}"#, k.kid()).as_bytes()
        );
        let claims: serde_json::Value = decode_part(parts[1]);
        let w = "0xabcdef0123456789abcdef0123456789abcdef01";
        let expected = serde_json::json!({
            "iss": "https://issuer.example.com",
            "sub": format!("agentkeys:agent:{w}"),
            "aud": "sts.amazonaws.com",
            "iat": 1_700_000_000u64,
            "nbf": 1_700_000_000u64,
            "exp": 1_700_000_600u64,
            "jti": m.jti,
            "agentkeys_user_wallet": w,
            "agentkeys_epoch": "18000000000000000007",
            "agentkeys_seq": 42,
            "agentkeys_auth": "parent-vouched",
            "https://aws.amazon.com/tags": {
                "principal_tags": {"agentkeys_user_wallet": [w]},
                "transitive_tag_keys": ["agentkeys_user_wallet"]
            }
        });
        assert_eq!(claims, expected);
        // The names the parent's verifier reads are the names the enclave writes.
        for name in [
            agentkeys_wire::EPOCH_CLAIM,
            agentkeys_wire::SEQ_CLAIM,
            WALLET_CLAIM,
        ] {
            assert!(claims.get(name).is_some(), "{name}");
        }
        assert_eq!(m.jti.len(), 32);
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert_eq!(sig.len(), 64);
        assert_eq!(
            m.jwt_sha256,
            <[u8; 32]>::from(Sha256::digest(m.jwt.as_bytes()))
        );
        let signing_input = format!("{}.{}", parts[0], parts[1]);
        assert_eq!(
            m.signing_input_sha256,
            <[u8; 32]>::from(Sha256::digest(signing_input.as_bytes()))
        );
        // Signature verifies over header.claims with p256.
        use p256::ecdsa::signature::Verifier;
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(k.public_point()).unwrap();
        let s = p256::ecdsa::Signature::from_slice(&sig).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        vk.verify(signed.as_bytes(), &s).unwrap();
    }

    /// The claims state the rule and the proof that allowed the mint.
    #[test]
    fn proof_claims_are_signed() {
        let params = MintParams {
            wallet: W,
            proof: ProofClaims {
                mode: "signed-session",
                proof_sha256: Some([0xab; 32]),
                proof_expires_at: Some(1_700_000_900),
            },
            ..Default::default()
        };
        let m = mint(
            &policy(),
            &key(),
            &params,
            1_700_000_000,
            &SystemRandom::new(),
            POSITION,
        )
        .unwrap();
        let claims: serde_json::Value = decode_part(m.jwt.split('.').nth(1).unwrap());
        assert_eq!(claims["agentkeys_auth"], "signed-session");
        assert_eq!(claims["agentkeys_proof_sha256"], "ab".repeat(32));
        assert_eq!(claims["agentkeys_proof_exp"], 1_700_000_900u64);
    }

    #[test]
    fn jti_distinct() {
        let k = key();
        let rng = SystemRandom::new();
        let params = MintParams {
            wallet: W,
            ..Default::default()
        };
        let a = mint(&policy(), &k, &params, 1, &rng, POSITION).unwrap();
        let b = mint(&policy(), &k, &params, 1, &rng, POSITION).unwrap();
        assert_ne!(a.jti, b.jti);
        assert_ne!(a.jwt, b.jwt);
    }

    #[test]
    fn mint_refuses_bad_inputs() {
        let k = key();
        let rng = SystemRandom::new();
        let p = policy();
        let bad_wallet = MintParams {
            wallet: "0x1234",
            ..Default::default()
        };
        assert_eq!(
            mint(&p, &k, &bad_wallet, 1, &rng, POSITION),
            Err(TokenError::InvalidWallet {
                reason: WalletError::Length { digits: 4 }
            })
        );
        let bad_ttl = MintParams {
            wallet: W,
            ttl_seconds: Some(10),
            ..Default::default()
        };
        assert!(matches!(
            mint(&p, &k, &bad_ttl, 1, &rng, POSITION),
            Err(TokenError::TtlOutOfRange { .. })
        ));
        let bad_aud = MintParams {
            wallet: W,
            audience: Some("x"),
            ..Default::default()
        };
        assert!(matches!(
            mint(&p, &k, &bad_aud, 1, &rng, POSITION),
            Err(TokenError::AudienceNotAllowed { .. })
        ));
    }

    #[test]
    fn long_wallet_is_not_repeated_in_error() {
        let params = MintParams {
            wallet: &"x".repeat(10_000),
            ..Default::default()
        };
        let e = mint(
            &policy(),
            &key(),
            &params,
            1,
            &SystemRandom::new(),
            POSITION,
        )
        .unwrap_err();
        assert_eq!(
            e,
            TokenError::InvalidWallet {
                reason: WalletError::Prefix { found: "xx".into() }
            }
        );
        assert!(e.to_string().len() < 100, "{e}");
    }
}
