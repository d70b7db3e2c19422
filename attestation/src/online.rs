//! Online audit of a live issuer: fetch its OIDC discovery, its JWKS and a fresh
//! attestation carrying our own random nonce, then check that the attestation's
//! `user_data` is an `agentkeys/jwks/v1` statement binding the exact JWKS bytes served
//! (and, when the auditor names them, the pinned KMS key and the expected key ids), and
//! that its `public_key` is one of the JWKS keys.

use std::io::Read;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::DecodePublicKey;
use rand::RngCore;
use reqwest::Url;
use sha2::{Digest, Sha256};

use crate::anchor::TrustAnchor;
use crate::error::VerifyError;
use crate::jwks::Jwk as JwkKey;
use crate::policy::Policy;
use crate::verify::{verify, VerifiedDocument};
use agentkeys_statement::JwksStatement;

/// Path of the OIDC discovery document under the issuer (OpenID Connect Discovery 1.0 §4).
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// Bytes of the random nonce sent to the attestation endpoint (256 bits).
pub const NONCE_BYTES: usize = 32;

/// Largest HTTP response body read (discovery, JWKS, attestation); real ones are a few KiB.
pub const MAX_RESPONSE_BYTES: u64 = 1024 * 1024;

/// Default timeout of each HTTP request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The online checks that follow document verification, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnlineCheck {
    /// Discovery is JSON with `issuer` equal to the audited issuer, `jwks_uri` and
    /// `nitro_attestation_uri`.
    Discovery,
    /// The attestation response is `{document: base64, jwks_sha256: hex, kids: [...]}`.
    AttestationResponse,
    /// The document verifies (with nonce = ours).
    Document,
    /// The document's `user_data` is an `agentkeys/jwks/v1` statement whose `jwks_sha256`
    /// is the hash of the JWKS bytes served, and whose `kms_key_arn` is the expected one.
    Statement,
    /// The `jwks_sha256` the issuer claims equals the hash of the bytes it served.
    JwksSha256,
    /// The JWKS parses and its `kid`s equal the response's `kids` (and, when given, exactly
    /// the expected kids: a seed swap or a silent genesis changes them).
    Jwks,
    /// The document's `public_key` (SPKI DER, P-256) is one of the JWKS keys.
    PublicKeyInJwks,
}

impl OnlineCheck {
    /// All online checks in order.
    pub const ALL: [OnlineCheck; 7] = [
        OnlineCheck::Discovery,
        OnlineCheck::AttestationResponse,
        OnlineCheck::Document,
        OnlineCheck::Statement,
        OnlineCheck::JwksSha256,
        OnlineCheck::Jwks,
        OnlineCheck::PublicKeyInJwks,
    ];

    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            OnlineCheck::Discovery => "discovery",
            OnlineCheck::AttestationResponse => "attestation_response",
            OnlineCheck::Document => "document",
            OnlineCheck::Statement => "statement",
            OnlineCheck::JwksSha256 => "jwks_sha256",
            OnlineCheck::Jwks => "jwks",
            OnlineCheck::PublicKeyInJwks => "public_key_in_jwks",
        }
    }
}

/// Failures of the online audit.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    /// The issuer is not an http(s) URL.
    #[error("issuer {issuer:?} is not an http(s) URL: {message}")]
    IssuerUrl {
        /// The issuer given.
        issuer: String,
        /// Why.
        message: String,
    },
    /// A request failed (connection, timeout, TLS).
    #[error("GET {url}: {message}")]
    Http {
        /// The URL.
        url: String,
        /// The client's message.
        message: String,
    },
    /// A response status other than 200.
    #[error("GET {url}: HTTP status {status}, expected 200")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// A response body is larger than [`MAX_RESPONSE_BYTES`].
    #[error("GET {url}: response larger than {max} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The bound.
        max: u64,
    },
    /// A response is not what the protocol says.
    #[error("{}: {message}", check.name())]
    Protocol {
        /// The check that failed.
        check: OnlineCheck,
        /// What is wrong, expected vs actual.
        message: String,
    },
    /// The document failed verification.
    #[error("document: {0}")]
    Verify(#[from] VerifyError),
}

impl OnlineError {
    /// True for network / HTTP failures (exit code 2 in the CLI), false for failed checks.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            OnlineError::IssuerUrl { .. }
                | OnlineError::Http { .. }
                | OnlineError::Status { .. }
                | OnlineError::TooLarge { .. }
        )
    }

    /// The online check that failed (None for transport failures).
    pub fn check(&self) -> Option<OnlineCheck> {
        match self {
            OnlineError::Protocol { check, .. } => Some(*check),
            OnlineError::Verify(_) => Some(OnlineCheck::Document),
            _ => None,
        }
    }
}

/// What an online audit established.
#[derive(Debug, Clone)]
pub struct OnlineReport {
    /// The audited issuer (without trailing slash).
    pub issuer: String,
    /// The JWKS URL from discovery.
    pub jwks_uri: String,
    /// The attestation URL fetched (with the nonce).
    pub attestation_url: String,
    /// Our nonce, hex.
    pub nonce_hex: String,
    /// SHA-256 of the JWKS bytes served, hex.
    pub jwks_sha256_hex: String,
    /// The `kid` of every JWKS key.
    pub kids: Vec<String>,
    /// The `kid` of the key the document's `public_key` matches.
    pub attested_kid: String,
    /// The statement the document attests.
    pub statement: JwksStatement,
    /// The verified document.
    pub verified: VerifiedDocument,
}

/// How to run an online audit.
#[derive(Debug, Clone)]
pub struct OnlineAudit {
    /// The issuer URL (`iss`), e.g. `https://issuer.example`.
    pub issuer: String,
    /// Trust anchor for the document.
    pub anchor: TrustAnchor,
    /// Policy; `nonce` and `user_data` are replaced by the audit's own values and
    /// `public_key` must be unset (the JWKS decides which keys are acceptable).
    pub policy: Policy,
    /// Verification time (UNIX ms); `None` = the clock after the fetch.
    pub at_unix_ms: Option<u64>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// The KMS key ARN the issuer's enclave must be pinned to, if the auditor knows it.
    pub expect_kms_key_arn: Option<String>,
    /// The exact set of key ids the JWKS must hold, if the auditor knows them.
    pub expect_kids: Vec<String>,
}

impl OnlineAudit {
    /// Runs the audit.
    pub fn run(&self) -> Result<OnlineReport, OnlineError> {
        let issuer = self.issuer.trim_end_matches('/').to_owned();
        let issuer_url = Url::parse(&issuer).map_err(|e| OnlineError::IssuerUrl {
            issuer: issuer.clone(),
            message: e.to_string(),
        })?;
        if !matches!(issuer_url.scheme(), "http" | "https") {
            return Err(OnlineError::IssuerUrl {
                issuer,
                message: "scheme must be http or https".to_owned(),
            });
        }
        let client = reqwest::blocking::Client::builder()
            .timeout(self.timeout)
            .build()
            .map_err(|e| OnlineError::Http {
                url: issuer.clone(),
                message: e.to_string(),
            })?;

        // Discovery.
        let discovery_url = format!("{issuer}{DISCOVERY_PATH}");
        let discovery = fetch(&client, &discovery_url)?;
        let (jwks_uri, attestation_uri) = parse_discovery(&discovery, &issuer)?;

        // JWKS, exact bytes.
        let jwks = fetch(&client, &jwks_uri)?;
        let jwks_sha256: [u8; 32] = Sha256::digest(&jwks).into();

        // Fresh attestation with our nonce.
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut attestation_url = Url::parse(&attestation_uri).map_err(|e| {
            protocol(
                OnlineCheck::Discovery,
                format!("nitro_attestation_uri {attestation_uri:?} is not a URL: {e}"),
            )
        })?;
        attestation_url
            .query_pairs_mut()
            .append_pair("nonce", &hex::encode(nonce));
        let attestation_url = attestation_url.to_string();
        let response = fetch(&client, &attestation_url)?;
        let response = parse_attestation_response(&response)?;

        // The document: our nonce plus the caller's policy; then what it states.
        let mut policy = self.policy.clone();
        policy.nonce = Some(nonce.to_vec());
        policy.user_data = None;
        let at = self.at_unix_ms.unwrap_or_else(crate::now_unix_ms);
        let verified = verify(&response.document, &self.anchor, at, &policy)?;
        let statement = check_statement(
            verified.document.user_data.as_deref(),
            &jwks_sha256,
            self.expect_kms_key_arn.as_deref(),
        )?;

        check_claimed_jwks_sha256(&response.jwks_sha256, &jwks_sha256)?;
        let keys = parse_jwks(&jwks)?;
        check_kids(&response.kids, &keys)?;
        check_expected_kids(&self.expect_kids, &keys)?;
        let attested_kid = find_attested_key(verified.document.public_key.as_deref(), &keys)?;

        Ok(OnlineReport {
            issuer,
            jwks_uri,
            attestation_url,
            nonce_hex: hex::encode(nonce),
            jwks_sha256_hex: hex::encode(jwks_sha256),
            kids: keys.into_iter().map(|k| k.kid).collect(),
            attested_kid,
            statement,
            verified,
        })
    }
}

/// The statement in `user_data`: the JWKS kind, the hash of the JWKS served, and the
/// expected KMS key when one is given.
fn check_statement(
    user_data: Option<&[u8]>,
    jwks_sha256: &[u8; 32],
    expect_kms_key_arn: Option<&str>,
) -> Result<JwksStatement, OnlineError> {
    let user_data = user_data.ok_or_else(|| {
        protocol(
            OnlineCheck::Statement,
            "the document carries no user_data, so it states nothing about the JWKS".into(),
        )
    })?;
    let statement = JwksStatement::decode(user_data)
        .map_err(|e| protocol(OnlineCheck::Statement, e.to_string()))?;
    if statement.jwks_sha256 != *jwks_sha256 {
        return Err(protocol(
            OnlineCheck::Statement,
            format!(
                "the document attests JWKS {} but the issuer served JWKS {}",
                hex::encode(statement.jwks_sha256),
                hex::encode(jwks_sha256)
            ),
        ));
    }
    if let Some(expected) = expect_kms_key_arn {
        if statement.kms_key_arn.as_str() != expected {
            return Err(protocol(
                OnlineCheck::Statement,
                format!(
                    "the enclave is pinned to KMS key {}, not the expected {expected}",
                    statement.kms_key_arn
                ),
            ));
        }
    }
    Ok(statement)
}

/// With expected kids, the JWKS must hold exactly them: an unexpected kid means another
/// seed (a swapped sealed seed, or a new genesis); a missing one means a lost key.
fn check_expected_kids(expected: &[String], keys: &[JwkKey]) -> Result<(), OnlineError> {
    if expected.is_empty() {
        return Ok(());
    }
    let mut want: Vec<&str> = expected.iter().map(String::as_str).collect();
    want.sort_unstable();
    want.dedup();
    let mut have: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
    have.sort_unstable();
    if want != have {
        return Err(protocol(
            OnlineCheck::Jwks,
            format!(
                "the JWKS holds kids [{}], expected exactly [{}]: another seed (a swapped sealed seed or a new genesis) or a lost key",
                have.join(", "),
                want.join(", ")
            ),
        ));
    }
    Ok(())
}

fn protocol(check: OnlineCheck, message: String) -> OnlineError {
    OnlineError::Protocol { check, message }
}

/// GET with status and size checks; returns the exact body bytes.
fn fetch(client: &reqwest::blocking::Client, url: &str) -> Result<Vec<u8>, OnlineError> {
    let http = |e: &dyn std::fmt::Display| OnlineError::Http {
        url: url.to_owned(),
        message: e.to_string(),
    };
    let response = client.get(url).send().map_err(|e| http(&e))?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(OnlineError::Status {
            url: url.to_owned(),
            status,
        });
    }
    let mut body = Vec::new();
    response
        .take(MAX_RESPONSE_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| http(&e))?;
    if body.len() as u64 > MAX_RESPONSE_BYTES {
        return Err(OnlineError::TooLarge {
            url: url.to_owned(),
            max: MAX_RESPONSE_BYTES,
        });
    }
    Ok(body)
}

fn json(check: OnlineCheck, what: &str, body: &[u8]) -> Result<serde_json::Value, OnlineError> {
    serde_json::from_slice(body).map_err(|e| protocol(check, format!("{what} is not JSON: {e}")))
}

fn string_field(
    check: OnlineCheck,
    value: &serde_json::Value,
    field: &str,
) -> Result<String, OnlineError> {
    value
        .get(field)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| protocol(check, format!("field {field:?} is missing or not a string")))
}

/// Discovery: `issuer` equals ours exactly (OIDC Discovery §4.3); returns (jwks_uri,
/// nitro_attestation_uri).
fn parse_discovery(body: &[u8], issuer: &str) -> Result<(String, String), OnlineError> {
    let check = OnlineCheck::Discovery;
    let discovery = json(check, "discovery", body)?;
    let claimed = string_field(check, &discovery, "issuer")?;
    if claimed != issuer {
        return Err(protocol(
            check,
            format!("issuer is {claimed:?}, expected {issuer:?}"),
        ));
    }
    Ok((
        string_field(check, &discovery, "jwks_uri")?,
        string_field(check, &discovery, "nitro_attestation_uri")?,
    ))
}

struct AttestationResponse {
    document: Vec<u8>,
    jwks_sha256: String,
    kids: Option<Vec<String>>,
}

fn parse_attestation_response(body: &[u8]) -> Result<AttestationResponse, OnlineError> {
    let check = OnlineCheck::AttestationResponse;
    let response = json(check, "attestation response", body)?;
    let document = string_field(check, &response, "document")?;
    let document = STANDARD
        .decode(document.trim())
        .map_err(|e| protocol(check, format!("document is not base64: {e}")))?;
    let jwks_sha256 = string_field(check, &response, "jwks_sha256")?;
    let kids = match response.get("kids") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Array(items)) => Some(
            items
                .iter()
                .map(|k| k.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| protocol(check, "kids must be an array of strings".to_owned()))?,
        ),
        Some(_) => {
            return Err(protocol(
                check,
                "kids must be an array of strings".to_owned(),
            ))
        }
    };
    Ok(AttestationResponse {
        document,
        jwks_sha256,
        kids,
    })
}

fn check_claimed_jwks_sha256(claimed: &str, served: &[u8; 32]) -> Result<(), OnlineError> {
    let served = hex::encode(served);
    if !claimed.eq_ignore_ascii_case(&served) {
        return Err(protocol(
            OnlineCheck::JwksSha256,
            format!("jwks_sha256 is {claimed}, expected {served} (SHA-256 of the JWKS served)"),
        ));
    }
    Ok(())
}

/// The served JWKS's keys; a malformed JWKS fails the JWKS check.
fn parse_jwks(body: &[u8]) -> Result<Vec<JwkKey>, OnlineError> {
    crate::jwks::parse_jwks(body).map_err(|e| protocol(OnlineCheck::Jwks, e.to_string()))
}

/// When the response lists `kids`, they are exactly the JWKS kids, in order.
fn check_kids(claimed: &Option<Vec<String>>, keys: &[JwkKey]) -> Result<(), OnlineError> {
    let served: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
    if let Some(claimed) = claimed {
        if claimed
            .iter()
            .map(String::as_str)
            .ne(served.iter().copied())
        {
            return Err(protocol(
                OnlineCheck::Jwks,
                format!("kids are {claimed:?}, expected the JWKS kids {served:?}"),
            ));
        }
    }
    Ok(())
}

/// The document's public_key is SPKI DER of a P-256 key equal (x, y) to a JWKS key.
fn find_attested_key(public_key: Option<&[u8]>, keys: &[JwkKey]) -> Result<String, OnlineError> {
    let check = OnlineCheck::PublicKeyInJwks;
    let der = public_key.ok_or_else(|| {
        protocol(
            check,
            "document has no public_key, expected a P-256 SPKI".to_owned(),
        )
    })?;
    let key = p256::PublicKey::from_public_key_der(der).map_err(|e| {
        protocol(
            check,
            format!("public_key is not a P-256 SubjectPublicKeyInfo: {e}"),
        )
    })?;
    let point = key.to_encoded_point(false);
    let (Some(x), Some(y)) = (point.x(), point.y()) else {
        return Err(protocol(
            check,
            "public_key is the point at infinity".to_owned(),
        ));
    };
    keys.iter()
        .find(|k| k.x[..] == x[..] && k.y[..] == y[..])
        .map(|k| k.kid.clone())
        .ok_or_else(|| {
            protocol(
                check,
                format!(
                    "public_key (x {}, y {}) is none of the {} JWKS keys",
                    URL_SAFE_NO_PAD.encode(x),
                    URL_SAFE_NO_PAD.encode(y),
                    keys.len()
                ),
            )
        })
}
