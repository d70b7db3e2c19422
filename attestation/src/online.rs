//! Online audit of a live issuer: fetch its OIDC discovery, its JWKS and a fresh
//! attestation carrying our own random nonce, then check that the attestation's
//! `user_data` binds (by SHA-256) the `agentkeys/jwks/v2` statement served beside it, that
//! the statement names the exact JWKS bytes served (and, when the auditor names them, the
//! pinned KMS key and the expected key ids), and that its `public_key` is one of the JWKS
//! keys.
//!
//! Over `https://` the audit also looks at the TLS handshakes themselves: every response
//! must come from a connection whose server certificate (validated by the TLS client
//! against the roots given, or the WebPKI roots) certifies the key the enclave attests as
//! `tls_spki_sha256`. A host that terminates the issuer's TLS with a key of its own — and
//! could therefore show AWS STS a JWKS of its own — fails that check even when it relays
//! the genuine JWKS and attestation to the auditor. Then the attested ACME account
//! (`/.well-known/acme-account`, an `agentkeys/acme-account/v1` statement under a fresh
//! nonce) is checked against the JWKS statement and the issuer's host.

use std::collections::BTreeMap;
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
use crate::error::{error_chain, VerifyError};
use crate::jwks::Jwk as JwkKey;
use crate::policy::Policy;
use crate::tls_leaf::TlsLeaf;
use crate::verify::{verify, VerifiedDocument};
use agentkeys_statement::{AcmeAccountStatement, JwksStatement, ACME_ACCOUNT_SERVED_FIELDS};

/// Path of the OIDC discovery document under the issuer (OpenID Connect Discovery 1.0 §4).
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// Path of the enclave's attested ACME account document under the issuer (served by the
/// enclave over its own TLS; `docs/api.md`).
pub const ACME_ACCOUNT_PATH: &str = "/.well-known/acme-account";

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
    /// The attestation response is `{document: base64, statement_text, jwks_sha256: hex,
    /// kids: [...]}`.
    AttestationResponse,
    /// The document verifies (with nonce = ours).
    Document,
    /// The document's `user_data` binds the `agentkeys/jwks/v2` statement served beside it
    /// (`statement_text`), whose `jwks_sha256` is the hash of the JWKS bytes served and
    /// whose `kms_key_arn` is the expected one.
    Statement,
    /// The `jwks_sha256` the issuer claims equals the hash of the bytes it served.
    JwksSha256,
    /// The JWKS parses and its `kid`s equal the response's `kids` (and, when given, exactly
    /// the expected kids: a seed swap or a silent genesis changes them).
    Jwks,
    /// The document's `public_key` (SPKI DER, P-256) is one of the JWKS keys.
    PublicKeyInJwks,
    /// Over https: every response came over TLS, and the server certificate of every
    /// handshake certifies the key whose SPKI SHA-256 the JWKS statement attests
    /// (`tls_spki_sha256`).
    TlsKey,
    /// The acme-account response is `{attestation_document: base64, statement_text,
    /// account_uri, hostname, tls_spki_sha256, directory, account_key_thumbprint,
    /// caa_issue_value}`, and its fields say what its attested statement says.
    AcmeAccountResponse,
    /// The acme-account document verifies like the JWKS one (same anchor and PCR policy),
    /// with a nonce of its own.
    AcmeAccountDocument,
    /// Its `user_data` binds the `agentkeys/acme-account/v1` statement served beside it,
    /// for the audited host and for the TLS key the JWKS statement attests.
    AcmeAccount,
}

impl OnlineCheck {
    /// All online checks in order.
    pub const ALL: [OnlineCheck; 11] = [
        OnlineCheck::Discovery,
        OnlineCheck::AttestationResponse,
        OnlineCheck::Document,
        OnlineCheck::Statement,
        OnlineCheck::JwksSha256,
        OnlineCheck::Jwks,
        OnlineCheck::PublicKeyInJwks,
        OnlineCheck::TlsKey,
        OnlineCheck::AcmeAccountResponse,
        OnlineCheck::AcmeAccountDocument,
        OnlineCheck::AcmeAccount,
    ];

    /// True for the checks that exist only over TLS (skipped for a plain-HTTP issuer).
    pub fn needs_tls(self) -> bool {
        matches!(
            self,
            OnlineCheck::TlsKey
                | OnlineCheck::AcmeAccountResponse
                | OnlineCheck::AcmeAccountDocument
                | OnlineCheck::AcmeAccount
        )
    }

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
            OnlineCheck::TlsKey => "tls_key",
            OnlineCheck::AcmeAccountResponse => "acme_account_response",
            OnlineCheck::AcmeAccountDocument => "acme_account_document",
            OnlineCheck::AcmeAccount => "acme_account",
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
    /// A plain-HTTP issuer without the auditor's consent: there is no handshake whose key
    /// could be compared with the attested one, so the TLS key check fails (after every
    /// other check ran).
    #[error(
        "issuer {issuer} is http://: there is no TLS handshake to check, so nothing shows \
         that the key AWS STS sees is the enclave's; audit the https:// issuer, or accept a \
         plain-HTTP development issuer with --allow-plain-http"
    )]
    PlainHttp {
        /// The issuer given.
        issuer: String,
    },
    /// The TLS roots given cannot be used.
    #[error("TLS roots {source_name}: {message}")]
    TlsRoots {
        /// Where the roots came from (a file name).
        source_name: String,
        /// Why they cannot be used.
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
    /// A TLS handshake presented a certificate for a key the enclave does not attest: the
    /// TLS of that connection ends outside the enclave.
    #[error(
        "tls_key: GET {url}: the TLS server certificate's key has SPKI SHA-256 {}, but the \
         enclave attests tls_spki_sha256 {}: this TLS session does not end in the attested \
         enclave; the certificate: {}",
        leaf.spki_sha256_hex(),
        hex::encode(attested_spki_sha256),
        leaf.describe()
    )]
    TlsKeyMismatch {
        /// The URL whose connection presented it.
        url: String,
        /// The certificate presented.
        leaf: Box<TlsLeaf>,
        /// `tls_spki_sha256` of the JWKS statement.
        attested_spki_sha256: [u8; 32],
    },
    /// The acme-account document failed verification.
    #[error("acme_account_document: {0}")]
    AcmeDocument(VerifyError),
}

impl OnlineError {
    /// True for network / HTTP failures (exit code 2 in the CLI), false for failed checks.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            OnlineError::IssuerUrl { .. }
                | OnlineError::TlsRoots { .. }
                | OnlineError::Http { .. }
                | OnlineError::Status { .. }
                | OnlineError::TooLarge { .. }
        )
    }

    /// The name of the failed check: for a document that fails verification, the
    /// document check (e.g. `pcrs`, `nonce`); `transport` for transport failures.
    pub fn failed_check_name(&self) -> &'static str {
        match self {
            OnlineError::Verify(v) => v.check().name(),
            other => other.check().map_or("transport", OnlineCheck::name),
        }
    }

    /// The online check that failed (None for transport failures).
    pub fn check(&self) -> Option<OnlineCheck> {
        match self {
            OnlineError::Protocol { check, .. } => Some(*check),
            OnlineError::Verify(_) => Some(OnlineCheck::Document),
            OnlineError::TlsKeyMismatch { .. } | OnlineError::PlainHttp { .. } => {
                Some(OnlineCheck::TlsKey)
            }
            OnlineError::AcmeDocument(_) => Some(OnlineCheck::AcmeAccountDocument),
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
    /// What the TLS handshakes showed (None for a plain-HTTP issuer).
    pub tls: Option<TlsEvidence>,
    /// The attested ACME account (None for a plain-HTTP issuer).
    pub acme_account: Option<AcmeAccountReport>,
}

/// The TLS server certificates an audit was served, each already validated by the TLS
/// client and found to certify the attested key.
#[derive(Debug, Clone)]
pub struct TlsEvidence {
    /// Every distinct certificate seen (by DER hash), in the order first seen; at least
    /// one. More than one is normal across a renewal or behind several enclaves.
    pub leaves: Vec<TlsLeaf>,
}

impl TlsEvidence {
    /// The first certificate seen.
    pub fn leaf(&self) -> Option<&TlsLeaf> {
        self.leaves.first()
    }
}

/// The attested ACME account of the issuer's enclave.
#[derive(Debug, Clone)]
pub struct AcmeAccountReport {
    /// The URL fetched (with the nonce).
    pub url: String,
    /// Our nonce, hex.
    pub nonce_hex: String,
    /// The statement the document attests.
    pub statement: AcmeAccountStatement,
    /// The CAA `issue` parameters the enclave publishes (checked against the statement).
    pub caa_issue_value: String,
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
    /// PEM certificates that are the only roots for the issuer's TLS certificate (e.g. a
    /// private CA in tests); None = the WebPKI roots built into the client.
    pub tls_roots_pem: Option<TlsRootsPem>,
    /// Audit an `http://` issuer (no TLS, so no TLS or ACME account check) instead of
    /// refusing it.
    pub allow_plain_http: bool,
    /// `(host, address:port)`: connect to `address` for the issuer's host when the host
    /// and port are the issuer's (`curl --resolve`), instead of the address DNS gives (one
    /// host of a fleet, or a name only a test resolver knows); TLS still checks the name.
    /// Entries for another host or port are not used.
    pub resolve: Vec<(String, std::net::SocketAddr)>,
}

/// PEM roots and where they came from (for messages).
#[derive(Debug, Clone)]
pub struct TlsRootsPem {
    /// A name for messages, e.g. the file name.
    pub source_name: String,
    /// One or more PEM certificates.
    pub pem: String,
}

impl OnlineAudit {
    /// Runs the audit.
    pub fn run(&self) -> Result<OnlineReport, OnlineError> {
        let issuer = self.issuer.trim_end_matches('/').to_owned();
        let issuer_url = Url::parse(&issuer).map_err(|e| OnlineError::IssuerUrl {
            issuer: issuer.clone(),
            message: e.to_string(),
        })?;
        let tls = match issuer_url.scheme() {
            "https" => true,
            "http" => false,
            _ => {
                return Err(OnlineError::IssuerUrl {
                    issuer,
                    message: "scheme must be http or https".to_owned(),
                })
            }
        };
        let host = issuer_url.host_str().unwrap_or_default().to_owned();
        let mut fetcher = Fetcher::new(self, &issuer_url, tls)?;

        // Discovery.
        let discovery_url = format!("{issuer}{DISCOVERY_PATH}");
        let discovery = fetcher.get(&discovery_url)?;
        let (jwks_uri, attestation_uri) = parse_discovery(&discovery, &issuer)?;

        // JWKS, exact bytes.
        let jwks = fetcher.get(&jwks_uri)?;
        let jwks_sha256: [u8; 32] = Sha256::digest(&jwks).into();

        // Fresh attestation with our nonce.
        let nonce = fresh_nonce();
        let attestation_url = with_nonce(&attestation_uri, &nonce).map_err(|e| {
            protocol(
                OnlineCheck::Discovery,
                format!("nitro_attestation_uri {attestation_uri:?} is not a URL: {e}"),
            )
        })?;
        let response = fetcher.get(&attestation_url)?;
        let response = parse_attestation_response(&response)?;

        // The document: our nonce plus the caller's policy; then what it states.
        let mut policy = self.policy.clone();
        policy.nonce = Some(nonce.to_vec());
        policy.user_data = None;
        let at = self.at_unix_ms.unwrap_or_else(crate::now_unix_ms);
        let verified = verify(&response.document, &self.anchor, at, &policy)?;
        let statement = check_statement(
            verified.document.user_data.as_deref(),
            &response.statement_text,
            &jwks_sha256,
            self.expect_kms_key_arn.as_deref(),
        )?;

        check_claimed_jwks_sha256(&response.jwks_sha256, &jwks_sha256)?;
        let keys = parse_jwks(&jwks)?;
        check_kids(&response.kids, &keys)?;
        check_expected_kids(&self.expect_kids, &keys)?;
        let attested_kid = find_attested_key(verified.document.public_key.as_deref(), &keys)?;

        // The handshakes so far, then the attested ACME account over the same trust, then
        // the handshakes again (the acme-account request made one more).
        let (tls_evidence, acme_account) = if tls {
            check_tls_leaves(&fetcher.leaves, &statement.tls_spki_sha256)?;
            let account = self.audit_acme_account(&mut fetcher, &issuer, &host, &statement)?;
            let evidence = check_tls_leaves(&fetcher.leaves, &statement.tls_spki_sha256)?;
            (Some(evidence), Some(account))
        } else if self.allow_plain_http {
            (None, None)
        } else {
            return Err(OnlineError::PlainHttp { issuer });
        };

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
            tls: tls_evidence,
            acme_account,
        })
    }

    /// Fetches `/.well-known/acme-account` with a nonce of its own, verifies its document
    /// under the same anchor and policy, and checks that its statement names the audited
    /// host and the TLS key the JWKS statement attests.
    fn audit_acme_account(
        &self,
        fetcher: &mut Fetcher,
        issuer: &str,
        host: &str,
        jwks_statement: &JwksStatement,
    ) -> Result<AcmeAccountReport, OnlineError> {
        let nonce = fresh_nonce();
        let url = with_nonce(&format!("{issuer}{ACME_ACCOUNT_PATH}"), &nonce).map_err(|e| {
            OnlineError::IssuerUrl {
                issuer: issuer.to_owned(),
                message: e,
            }
        })?;
        let body = fetcher.get(&url)?;
        let response = parse_acme_account_response(&body)?;
        let mut policy = self.policy.clone();
        policy.nonce = Some(nonce.to_vec());
        policy.user_data = None;
        policy.public_key = None;
        let at = self.at_unix_ms.unwrap_or_else(crate::now_unix_ms);
        let verified = verify(&response.document, &self.anchor, at, &policy)
            .map_err(OnlineError::AcmeDocument)?;
        let statement = check_acme_statement(
            verified.document.user_data.as_deref(),
            &response.statement_text,
            host,
            &jwks_statement.tls_spki_sha256,
        )?;
        check_acme_response_fields(&response, &statement)?;
        Ok(AcmeAccountReport {
            url,
            nonce_hex: hex::encode(nonce),
            // The served value, which the check above held equal to the attested one.
            caa_issue_value: agentkeys_statement::caa_issue_parameters(&statement.account_uri),
            statement,
            verified,
        })
    }
}

/// A fresh random nonce for one attestation request.
fn fresh_nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}

/// `url` with `nonce=<hex>` appended to its query.
fn with_nonce(url: &str, nonce: &[u8]) -> Result<String, String> {
    let mut url = Url::parse(url).map_err(|e| e.to_string())?;
    url.query_pairs_mut()
        .append_pair("nonce", &hex::encode(nonce));
    Ok(url.to_string())
}

/// The HTTP client of one audit, recording the server certificate of every response.
/// Each audit has its own client and so its own handshakes: a certificate that changes
/// between two audits is seen by the second.
struct Fetcher {
    client: reqwest::blocking::Client,
    tls: bool,
    /// (URL, certificate) of every response over TLS, in order.
    leaves: Vec<(String, TlsLeaf)>,
}

impl Fetcher {
    fn new(audit: &OnlineAudit, issuer: &Url, tls: bool) -> Result<Fetcher, OnlineError> {
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(audit.timeout)
            .tls_info(true)
            // A redirect could lead to another server, whose certificate would then be
            // the one recorded; the issuer's routes never redirect.
            .redirect(reqwest::redirect::Policy::none());
        let (host, port) = (issuer.host_str(), issuer.port_or_known_default());
        for (name, address) in &audit.resolve {
            if Some(name.as_str()) == host && Some(address.port()) == port {
                builder = builder.resolve(name, *address);
            }
        }
        if let Some(roots) = &audit.tls_roots_pem {
            let roots_error = |message: String| OnlineError::TlsRoots {
                source_name: roots.source_name.clone(),
                message,
            };
            let certificates = reqwest::Certificate::from_pem_bundle(roots.pem.as_bytes())
                .map_err(|e| roots_error(e.to_string()))?;
            if certificates.is_empty() {
                return Err(roots_error("holds no PEM certificate".to_owned()));
            }
            builder = builder.tls_built_in_root_certs(false);
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let client = builder.build().map_err(|e| OnlineError::Http {
            url: issuer.to_string(),
            message: error_chain(&e),
        })?;
        Ok(Fetcher {
            client,
            tls,
            leaves: Vec::new(),
        })
    }

    /// GET with status and size checks; returns the exact body bytes. Over TLS, records
    /// the certificate the connection presented; a response without one (plain HTTP
    /// behind an https issuer) fails the TLS key check.
    fn get(&mut self, url: &str) -> Result<Vec<u8>, OnlineError> {
        let response = self.client.get(url).send().map_err(|e| OnlineError::Http {
            url: url.to_owned(),
            message: error_chain(&e),
        })?;
        if self.tls {
            let der = response
                .extensions()
                .get::<reqwest::tls::TlsInfo>()
                .and_then(|info| info.peer_certificate())
                .ok_or_else(|| {
                    protocol(
                        OnlineCheck::TlsKey,
                        format!(
                            "GET {url}: the response came without a TLS server certificate \
                             (plain HTTP behind an https issuer)"
                        ),
                    )
                })?;
            let leaf = TlsLeaf::from_der(der)
                .map_err(|e| protocol(OnlineCheck::TlsKey, format!("GET {url}: {e}")))?;
            self.leaves.push((url.to_owned(), leaf));
        }
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
            .map_err(|e| OnlineError::Http {
                url: url.to_owned(),
                message: error_chain(&e),
            })?;
        if body.len() as u64 > MAX_RESPONSE_BYTES {
            return Err(OnlineError::TooLarge {
                url: url.to_owned(),
                max: MAX_RESPONSE_BYTES,
            });
        }
        Ok(body)
    }
}

/// Every certificate recorded certifies the attested key; returns the distinct ones.
fn check_tls_leaves(
    leaves: &[(String, TlsLeaf)],
    attested: &[u8; 32],
) -> Result<TlsEvidence, OnlineError> {
    let mut distinct: Vec<TlsLeaf> = Vec::new();
    for (url, leaf) in leaves {
        if leaf.spki_sha256 != *attested {
            return Err(OnlineError::TlsKeyMismatch {
                url: url.clone(),
                leaf: Box::new(leaf.clone()),
                attested_spki_sha256: *attested,
            });
        }
        if !distinct.iter().any(|d| d.cert_sha256 == leaf.cert_sha256) {
            distinct.push(leaf.clone());
        }
    }
    if distinct.is_empty() {
        return Err(protocol(
            OnlineCheck::TlsKey,
            "no TLS server certificate was recorded".to_owned(),
        ));
    }
    Ok(TlsEvidence { leaves: distinct })
}

/// The statement served beside the document, checked against the binding in its
/// `user_data`: the JWKS kind, the hash of the JWKS served, and the expected KMS key when
/// one is given.
fn check_statement(
    user_data: Option<&[u8]>,
    statement_text: &str,
    jwks_sha256: &[u8; 32],
    expect_kms_key_arn: Option<&str>,
) -> Result<JwksStatement, OnlineError> {
    let user_data = user_data.ok_or_else(|| {
        protocol(
            OnlineCheck::Statement,
            "the document carries no user_data, so it states nothing about the JWKS".into(),
        )
    })?;
    let statement = JwksStatement::decode_attested(user_data, statement_text.as_bytes())
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

/// A string field holding standard base64 (a document).
fn base64_field(
    check: OnlineCheck,
    value: &serde_json::Value,
    field: &str,
) -> Result<Vec<u8>, OnlineError> {
    let text = string_field(check, value, field)?;
    STANDARD
        .decode(text.trim())
        .map_err(|e| protocol(check, format!("{field} is not base64: {e}")))
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
    /// The statement the document binds (checked against the binding, never trusted).
    statement_text: String,
    jwks_sha256: String,
    kids: Option<Vec<String>>,
}

fn parse_attestation_response(body: &[u8]) -> Result<AttestationResponse, OnlineError> {
    let check = OnlineCheck::AttestationResponse;
    let response = json(check, "attestation response", body)?;
    let document = base64_field(check, &response, "document")?;
    let statement_text = string_field(check, &response, "statement_text")?;
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
        statement_text,
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

/// The acme-account response as served (its fields are the enclave's claims; the
/// statement in the document is what counts).
struct AcmeAccountResponse {
    document: Vec<u8>,
    /// The statement the document binds (checked against the binding, never trusted).
    statement_text: String,
    /// The plain fields ([`ACME_ACCOUNT_SERVED_FIELDS`]), by name.
    fields: BTreeMap<&'static str, String>,
}

fn parse_acme_account_response(body: &[u8]) -> Result<AcmeAccountResponse, OnlineError> {
    let check = OnlineCheck::AcmeAccountResponse;
    let response = json(check, "acme-account response", body)?;
    let document = base64_field(check, &response, "attestation_document")?;
    let statement_text = string_field(check, &response, "statement_text")?;
    let mut fields = BTreeMap::new();
    for name in ACME_ACCOUNT_SERVED_FIELDS {
        fields.insert(name, string_field(check, &response, name)?);
    }
    Ok(AcmeAccountResponse {
        document,
        statement_text,
        fields,
    })
}

/// The acme-account statement: its kind, the audited host, and the TLS key the JWKS
/// statement attests (one key for the handshake and for the certificates the account
/// obtains).
fn check_acme_statement(
    user_data: Option<&[u8]>,
    statement_text: &str,
    host: &str,
    tls_spki_sha256: &[u8; 32],
) -> Result<AcmeAccountStatement, OnlineError> {
    let check = OnlineCheck::AcmeAccount;
    let user_data = user_data.ok_or_else(|| {
        protocol(
            check,
            "the acme-account document carries no user_data, so it states no account".into(),
        )
    })?;
    let statement = AcmeAccountStatement::decode_attested(user_data, statement_text.as_bytes())
        .map_err(|e| protocol(check, e.to_string()))?;
    if !statement.hostname.eq_ignore_ascii_case(host) {
        return Err(protocol(
            check,
            format!(
                "the attested ACME account is for host {:?}, but the audited issuer's host is \
                 {host:?}",
                statement.hostname
            ),
        ));
    }
    if statement.tls_spki_sha256 != *tls_spki_sha256 {
        return Err(protocol(
            check,
            format!(
                "the attested ACME account is for the TLS key with SPKI SHA-256 {}, but the \
                 JWKS statement attests {}",
                hex::encode(statement.tls_spki_sha256),
                hex::encode(tls_spki_sha256)
            ),
        ));
    }
    Ok(statement)
}

/// The response's plain fields say what the attested statement says, and its CAA value
/// is the one for the attested account.
fn check_acme_response_fields(
    response: &AcmeAccountResponse,
    statement: &AcmeAccountStatement,
) -> Result<(), OnlineError> {
    match statement.first_disagreement(|name| response.fields.get(name).map(String::as_str)) {
        None => Ok(()),
        Some((field, served, attested)) => Err(protocol(
            OnlineCheck::AcmeAccountResponse,
            format!("{field} is {served:?}, but the attested statement says {attested:?}"),
        )),
    }
}
