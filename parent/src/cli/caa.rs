//! `agentkeys-broker caa-record`: the DNS CAA record that lets only the enclave's ACME
//! account, validating by TLS-ALPN-01, obtain certificates for the issuer host (RFC 8659
//! with the `accounturi` and `validationmethods` parameters of RFC 8657).
//!
//! The account URI is taken from what the enclave attests, never from the parent's word:
//! the command fetches `/.well-known/acme-account?nonce=<ours>` from the issuer host over
//! TLS (which the enclave terminates), verifies the attestation document in it against the
//! pinned root, a PCR policy and our nonce, reads the `agentkeys/acme-account/v1` statement from its
//! `user_data`, and checks that the statement names the issuer host, that the JSON beside
//! it says the same, and that the TLS key the host presented is the attested one. Only
//! then is the record printed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agentkeys_attestation::tls_leaf::TlsLeaf;
use agentkeys_attestation::{error_chain, Policy, TrustAnchor};
use agentkeys_wire::{caa_issue_parameters, AcmeAccountStatement};
use base64::Engine;
use clap::Args;
use serde::Deserialize;

/// Path of the attested ACME account on the issuer host.
pub const ACME_ACCOUNT_PATH: &str = "/.well-known/acme-account";
/// Time budget of the request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer read (the JSON with a base64 attestation document of at most 16 KiB).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Flags of `agentkeys-broker caa-record`.
#[derive(Clone, Debug, Args)]
pub struct CaaArgs {
    /// The issuer URL, `https://HOST[:PORT]`.
    #[arg(long, env = "BROKER_OIDC_ISSUER")]
    pub issuer: String,
    /// Trust only this CA certificate (PEM) for the issuer's TLS, instead of the public
    /// WebPKI roots (a test CA such as Pebble's).
    #[arg(long, value_name = "PEM")]
    pub cacert: Option<PathBuf>,
    /// Connect to ADDR for HOST:PORT instead of resolving HOST (`curl --resolve` syntax,
    /// `HOST:PORT:ADDR`, as `agentkeys-attest --resolve`), e.g. to ask one host of a fleet.
    /// Repeatable; entries for another host or port are ignored.
    #[arg(long, value_name = "HOST:PORT:ADDR")]
    pub resolve: Vec<String>,
    /// Accept any certificate for the issuer's TLS instead of one valid under the WebPKI
    /// (or --cacert) roots: e.g. the enclave's self-signed one before its first issuance,
    /// while the CAA record is still `issue ";"`. The handshake's key must still be the
    /// key the enclave attests, so only the enclave can answer.
    #[arg(long, conflicts_with = "cacert")]
    pub self_signed_ok: bool,
    /// The CA's issuer domain name for the record (RFC 8659 §4.2).
    #[arg(long, default_value = "letsencrypt.org")]
    pub ca_domain: String,
    /// Root certificate (PEM) to verify the attestation document against, instead of the
    /// AWS Nitro Enclaves root.
    #[arg(long, value_name = "PEM")]
    pub root: Option<PathBuf>,
    /// Accept the mock NSM root given by --root (development only).
    #[arg(long, requires = "root")]
    pub allow_mock_root: bool,
    /// nitro-cli measurements JSON of the enclave image you rebuilt: the document must
    /// carry its PCR0, PCR1 and PCR2.
    #[arg(long, value_name = "FILE")]
    pub measurements: Option<PathBuf>,
    /// Check no PCRs of the document (printed as a warning): an account attested by any
    /// enclave image signed by the trusted root would be written into the record.
    #[arg(long, conflicts_with = "measurements")]
    pub no_pcr_policy: bool,
}

/// Printed when the record is made without a PCR policy.
pub const NO_PCR_POLICY_WARNING: &str = "warning: --no-pcr-policy: the acme-account document's PCRs are not checked; any enclave image signed by the trusted root could have made it";

/// Why no record was printed.
#[derive(Debug, thiserror::Error)]
pub enum CaaError {
    /// `--issuer` is not an `https://HOST[:PORT]` URL.
    #[error("--issuer {issuer:?}: {reason}")]
    Issuer {
        /// The value given.
        issuer: String,
        /// Why.
        reason: String,
    },
    /// `--ca-domain` is not a domain name.
    #[error("--ca-domain {0:?} is not a domain name (letters, digits, '-' and '.')")]
    CaDomain(String),
    /// A `--resolve` value is malformed.
    #[error("--resolve {0:?}: expected HOST:PORT:ADDR (e.g. issuer.example.com:443:10.0.0.5)")]
    Resolve(String),
    /// Neither PCRs nor `--no-pcr-policy`.
    #[error("no PCR policy for the acme-account document: give --measurements FILE (the nitro-cli measurements of the enclave image you rebuilt), or --no-pcr-policy to accept an account attested by any enclave image signed by the trusted root")]
    NoPcrPolicy,
    /// A local file could not be read or used.
    #[error("{what} {path}: {reason}")]
    File {
        /// Which flag.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The request failed (connection, TLS, timeout).
    #[error("GET {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The issuer answered an error status.
    #[error("GET {url} answered HTTP {status}: {body}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The TLS handshake's certificate was not available or not readable.
    #[error("the TLS certificate the issuer presented cannot be read: {0}")]
    Leaf(String),
    /// The answer is not the acme-account JSON.
    #[error("the acme-account answer is malformed: {0}")]
    Malformed(String),
    /// The attestation document failed verification.
    #[error("the acme-account attestation document failed verification: {0}")]
    Verification(String),
    /// The document's `user_data` is not an ACME account statement.
    #[error("the acme-account document does not attest an ACME account: {0}")]
    Statement(String),
    /// The attested hostname is not the issuer's host.
    #[error("the enclave attests an ACME account for {attested:?}, not for the issuer host {issuer_host:?}")]
    Hostname {
        /// From `--issuer`.
        issuer_host: String,
        /// From the statement.
        attested: String,
    },
    /// A JSON field differs from the attested statement.
    #[error("the acme-account JSON says {field} = {json:?}, but the enclave attests {attested:?}")]
    Disagrees {
        /// The field.
        field: &'static str,
        /// The JSON's value.
        json: String,
        /// The statement's value.
        attested: String,
    },
    /// The issuer host presented a TLS key other than the attested one.
    #[error("the issuer host presented a TLS key with SPKI SHA-256 {presented} ({leaf}), but the enclave attests {attested}: the TLS does not end in the attested enclave")]
    TlsKey {
        /// The handshake's key.
        presented: String,
        /// The certificate.
        leaf: String,
        /// The attested key.
        attested: String,
    },
    /// The account URI cannot be written into a CAA record.
    #[error("the attested account URI {0:?} holds characters a CAA accounturi value cannot carry")]
    AccountUri(String),
}

/// The JSON of `/.well-known/acme-account`.
#[derive(Deserialize)]
struct AcmeAccountJson {
    directory: String,
    account_uri: String,
    account_key_thumbprint: String,
    hostname: String,
    tls_spki_sha256: String,
    caa_issue_value: String,
    attestation_document: String,
    /// The statement the document binds by hash.
    statement_text: String,
}

impl AcmeAccountJson {
    /// A plain field by its name in [`agentkeys_wire::ACME_ACCOUNT_SERVED_FIELDS`].
    fn served(&self, name: &str) -> Option<&str> {
        Some(match name {
            "directory" => &self.directory,
            "account_uri" => &self.account_uri,
            "account_key_thumbprint" => &self.account_key_thumbprint,
            "hostname" => &self.hostname,
            "tls_spki_sha256" => &self.tls_spki_sha256,
            "caa_issue_value" => &self.caa_issue_value,
            _ => return None,
        })
    }
}

/// The checked issuer URL.
struct IssuerUrl {
    url: String,
    host: String,
    port: u16,
}

fn parse_issuer(raw: &str) -> Result<IssuerUrl, CaaError> {
    let bad = |reason: &str| CaaError::Issuer {
        issuer: raw.to_string(),
        reason: reason.to_string(),
    };
    let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "https" {
        return Err(bad(
            "must be https:// (the enclave terminates the issuer's TLS)",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not contain user info"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    let Some(url::Host::Domain(host)) = url.host() else {
        return Err(bad("needs a DNS host name (a CAA record names a host)"));
    };
    let host = host.to_ascii_lowercase();
    let port = url.port_or_known_default().unwrap_or(443);
    Ok(IssuerUrl {
        url: raw.trim_end_matches('/').to_string(),
        host,
        port,
    })
}

/// A domain name as RFC 8659 §4.2 allows for the issuer domain name.
fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn parse_resolve(value: &str) -> Result<(String, SocketAddr), CaaError> {
    let bad = || CaaError::Resolve(value.to_string());
    let (host, rest) = value.split_once(':').ok_or_else(bad)?;
    let (port, addr) = rest.split_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let ip: std::net::IpAddr = addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_ascii_lowercase(), SocketAddr::new(ip, port)))
}

fn read_file(what: &'static str, path: &PathBuf) -> Result<String, CaaError> {
    std::fs::read_to_string(path).map_err(|e| CaaError::File {
        what,
        path: path.clone(),
        reason: e.to_string(),
    })
}

fn trust_anchor(args: &CaaArgs) -> Result<TrustAnchor, CaaError> {
    let Some(path) = &args.root else {
        return Ok(TrustAnchor::aws_nitro_root_g1());
    };
    let pem = read_file("--root", path)?;
    crate::cli::trust::anchor_from_pem(&pem, args.allow_mock_root).map_err(|reason| {
        CaaError::File {
            what: "--root",
            path: path.clone(),
            reason,
        }
    })
}

fn policy(args: &CaaArgs) -> Result<Policy, CaaError> {
    let expected_pcrs = crate::cli::trust::expected_pcrs(
        args.measurements.as_deref(),
        args.no_pcr_policy,
        NO_PCR_POLICY_WARNING,
    )
    .map_err(|reason| CaaError::File {
        what: "--measurements",
        path: args.measurements.clone().unwrap_or_default(),
        reason,
    })?
    .ok_or(CaaError::NoPcrPolicy)?;
    Ok(Policy {
        expected_pcrs,
        ..Policy::default()
    })
}

fn http_client(args: &CaaArgs, issuer: &IssuerUrl) -> Result<reqwest::Client, CaaError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_info(true)
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT);
    if let Some(path) = &args.cacert {
        let pem = read_file("--cacert", path)?;
        let cert = reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| CaaError::File {
            what: "--cacert",
            path: path.clone(),
            reason: e.to_string(),
        })?;
        builder = builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert);
    }
    if args.self_signed_ok {
        builder = builder.danger_accept_invalid_certs(true);
    }
    for value in &args.resolve {
        let (host, addr) = parse_resolve(value)?;
        if host == issuer.host && addr.port() == issuer.port {
            builder = builder.resolve(&host, addr);
        }
    }
    builder.build().map_err(|e| CaaError::Fetch {
        url: issuer.url.clone(),
        reason: e.to_string(),
    })
}

/// What the issuer host showed: the JSON and the TLS leaf of the handshake.
struct Fetched {
    json: AcmeAccountJson,
    leaf: TlsLeaf,
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Fetched, CaaError> {
    let fetch_err = |e: reqwest::Error| CaaError::Fetch {
        url: url.to_string(),
        reason: error_chain(&e),
    };
    let response = client.get(url).send().await.map_err(fetch_err)?;
    let leaf_der = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .map(<[u8]>::to_vec)
        .ok_or_else(|| CaaError::Leaf("the TLS session recorded no certificate".into()))?;
    let leaf = TlsLeaf::from_der(&leaf_der).map_err(|e| CaaError::Leaf(e.to_string()))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(fetch_err)?;
    if bytes.len() > MAX_ANSWER_BYTES {
        return Err(CaaError::Malformed(format!(
            "{} bytes, more than {MAX_ANSWER_BYTES}",
            bytes.len()
        )));
    }
    if !status.is_success() {
        return Err(CaaError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
        });
    }
    let json = serde_json::from_slice(&bytes).map_err(|e| CaaError::Malformed(e.to_string()))?;
    Ok(Fetched { json, leaf })
}

/// The attested statement, checked against the JSON beside it and the TLS handshake. The
/// document must carry `nonce`, the one our request sent: a parent cannot answer with a
/// document an enclave attested earlier (for an account since replaced).
fn check(
    fetched: &Fetched,
    issuer: &IssuerUrl,
    anchor: &TrustAnchor,
    policy: &Policy,
    nonce: &[u8],
    now_ms: u64,
) -> Result<AcmeAccountStatement, CaaError> {
    let j = &fetched.json;
    let document = base64::engine::general_purpose::STANDARD
        .decode(j.attestation_document.trim())
        .map_err(|e| CaaError::Malformed(format!("attestation_document is not base64: {e}")))?;
    let policy = Policy {
        nonce: Some(nonce.to_vec()),
        ..policy.clone()
    };
    let verified = agentkeys_attestation::verify(&document, anchor, now_ms, &policy)
        .map_err(|e| CaaError::Verification(e.to_string()))?;
    let user_data = verified
        .document
        .user_data
        .ok_or_else(|| CaaError::Statement("the document carries no user_data".into()))?;
    let s = AcmeAccountStatement::decode_attested(&user_data, j.statement_text.as_bytes())
        .map_err(|e| CaaError::Statement(e.to_string()))?;
    if s.hostname != issuer.host {
        return Err(CaaError::Hostname {
            issuer_host: issuer.host.clone(),
            attested: s.hostname,
        });
    }
    if let Some((field, json, attested)) = s.first_disagreement(|name| j.served(name)) {
        return Err(CaaError::Disagrees {
            field,
            json,
            attested,
        });
    }
    if fetched.leaf.spki_sha256 != s.tls_spki_sha256 {
        return Err(CaaError::TlsKey {
            presented: fetched.leaf.spki_sha256_hex(),
            leaf: fetched.leaf.describe(),
            attested: hex::encode(s.tls_spki_sha256),
        });
    }
    if s.account_uri.bytes().any(|b| {
        b.is_ascii_whitespace() || b.is_ascii_control() || matches!(b, b'"' | b';' | b'\\')
    }) {
        return Err(CaaError::AccountUri(s.account_uri));
    }
    Ok(s)
}

/// The zone-file line: `HOST. CAA 0 issue "<ca-domain>; accounturi=<uri>; validationmethods=tls-alpn-01"`.
pub fn caa_record(hostname: &str, ca_domain: &str, account_uri: &str) -> String {
    format!(
        "{hostname}. CAA 0 issue \"{ca_domain}; {}\"",
        caa_issue_parameters(account_uri)
    )
}

/// `agentkeys-broker caa-record`: the record, once every check passed.
pub async fn run_caa_record(args: &CaaArgs) -> Result<String, CaaError> {
    let issuer = parse_issuer(&args.issuer)?;
    let ca_domain = args.ca_domain.trim_end_matches('.').to_ascii_lowercase();
    if !is_domain(&ca_domain) {
        return Err(CaaError::CaDomain(args.ca_domain.clone()));
    }
    let policy = policy(args)?;
    let anchor = trust_anchor(args)?;
    let client = http_client(args, &issuer)?;
    let nonce: [u8; 32] = rand::random();
    let url = format!(
        "{}{ACME_ACCOUNT_PATH}?nonce={}",
        issuer.url,
        hex::encode(nonce)
    );
    let fetched = fetch(&client, &url).await?;
    let statement = check(
        &fetched,
        &issuer,
        &anchor,
        &policy,
        &nonce,
        agentkeys_attestation::now_unix_ms(),
    )?;
    Ok(caa_record(
        &statement.hostname,
        &ca_domain,
        &statement.account_uri,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_has_the_rfc_8657_shape() {
        assert_eq!(
            caa_record(
                "issuer.example.com",
                "letsencrypt.org",
                "https://acme-v02.api.letsencrypt.org/acme/acct/123"
            ),
            "issuer.example.com. CAA 0 issue \"letsencrypt.org; accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/123; validationmethods=tls-alpn-01\""
        );
    }

    #[test]
    fn the_issuer_must_be_https_with_a_dns_name() {
        let i = parse_issuer("https://Issuer.Example.com:8443/").unwrap();
        assert_eq!((i.host.as_str(), i.port), ("issuer.example.com", 8443));
        assert_eq!(i.url, "https://Issuer.Example.com:8443");
        assert_eq!(
            parse_issuer("https://issuer.example.com").unwrap().port,
            443
        );
        for bad in [
            "http://issuer.example.com",
            "https://127.0.0.1:443",
            "https://u:p@issuer.example.com",
            "https://issuer.example.com/?x",
            "not a url",
        ] {
            assert!(
                matches!(parse_issuer(bad), Err(CaaError::Issuer { .. })),
                "{bad}"
            );
        }
    }

    const HOST: &str = "issuer.agentkeys.test";
    const ACCOUNT: &str = "https://127.0.0.1:14000/my-account/1";

    fn statement() -> AcmeAccountStatement {
        AcmeAccountStatement {
            directory: "https://127.0.0.1:14000/dir".into(),
            account_uri: ACCOUNT.into(),
            account_key_thumbprint: "A".repeat(43),
            hostname: HOST.into(),
            tls_spki_sha256: [7; 32],
            module_id: "i-0123456789abcdef0-enc0123456789abcdef".into(),
        }
    }

    /// The nonce the tests' requests send.
    const NONCE: [u8; 32] = [0x4e; 32];

    /// What an honest enclave serves for `s` when asked with [`NONCE`]: the JSON, its
    /// document (mock NSM, default image PCRs), and a handshake with the attested key.
    fn served(s: &AcmeAccountStatement) -> Fetched {
        served_with_nonce(s, Some(NONCE.to_vec()))
    }

    /// As [`served`], with the document carrying `nonce`.
    fn served_with_nonce(s: &AcmeAccountStatement, nonce: Option<Vec<u8>>) -> Fetched {
        let doc = agentkeys_mock_nsm::MockNsm::new(agentkeys_mock_nsm::MockNsmConfig::default())
            .attest(Some(s.user_data()), nonce, None)
            .unwrap();
        Fetched {
            json: AcmeAccountJson {
                directory: s.directory.clone(),
                account_uri: s.account_uri.clone(),
                account_key_thumbprint: s.account_key_thumbprint.clone(),
                hostname: s.hostname.clone(),
                tls_spki_sha256: hex::encode(s.tls_spki_sha256),
                caa_issue_value: caa_issue_parameters(&s.account_uri),
                attestation_document: base64::engine::general_purpose::STANDARD.encode(doc),
                statement_text: String::from_utf8(s.encode()).unwrap(),
            },
            leaf: TlsLeaf {
                subject: String::new(),
                issuer: "CN=Pebble Intermediate CA".into(),
                serial_hex: "01".into(),
                not_before_ms: 0,
                not_after_ms: 0,
                cert_sha256: [1; 32],
                spki_sha256: s.tls_spki_sha256,
            },
        }
    }

    fn run(
        f: &Fetched,
        pcrs: std::collections::BTreeMap<u16, Vec<u8>>,
    ) -> Result<AcmeAccountStatement, CaaError> {
        let anchor =
            TrustAnchor::mock_root_explicitly_trusted(&agentkeys_mock_nsm::mock_root_pem())
                .unwrap();
        let policy = Policy {
            expected_pcrs: pcrs,
            ..Policy::default()
        };
        let issuer = parse_issuer(&format!("https://{HOST}:5001")).unwrap();
        check(
            f,
            &issuer,
            &anchor,
            &policy,
            &NONCE,
            agentkeys_attestation::now_unix_ms(),
        )
    }

    #[test]
    fn a_document_without_our_nonce_is_refused_as_stale() {
        for nonce in [None, Some(vec![0x11; 32])] {
            let e = run(
                &served_with_nonce(&statement(), nonce.clone()),
                image_pcrs(),
            )
            .unwrap_err();
            assert!(matches!(e, CaaError::Verification(_)), "{nonce:?}: {e}");
            assert!(e.to_string().contains("nonce"), "{e}");
        }
    }

    fn image_pcrs() -> std::collections::BTreeMap<u16, Vec<u8>> {
        agentkeys_mock_nsm::default_boot_pcrs()
            .into_iter()
            .filter(|(i, _)| *i <= 2)
            .map(|(i, v)| (i, v.to_vec()))
            .collect()
    }

    #[test]
    fn an_honest_answer_passes() {
        let s = run(&served(&statement()), image_pcrs()).unwrap();
        assert_eq!(s.account_uri, ACCOUNT);
    }

    #[test]
    fn another_image_is_refused() {
        let mut pcrs = image_pcrs();
        pcrs.insert(0, vec![0x55; 48]);
        let e = run(&served(&statement()), pcrs).unwrap_err();
        assert!(matches!(e, CaaError::Verification(_)), "{e}");
    }

    #[test]
    fn an_account_attested_for_another_host_is_refused() {
        let mut s = statement();
        s.hostname = "other.agentkeys.test".into();
        let e = run(&served(&s), image_pcrs()).unwrap_err();
        assert!(matches!(e, CaaError::Hostname { .. }), "{e}");
        assert!(e.to_string().contains("other.agentkeys.test"), "{e}");
    }

    #[test]
    fn json_that_differs_from_the_statement_is_refused() {
        let parents = "https://127.0.0.1:14000/my-account/666";
        let mut f = served(&statement());
        f.json.account_uri = parents.into();
        let e = run(&f, image_pcrs()).unwrap_err();
        assert!(
            matches!(
                e,
                CaaError::Disagrees {
                    field: "account_uri",
                    ..
                }
            ),
            "{e}"
        );
        let mut f = served(&statement());
        f.json.caa_issue_value = caa_issue_parameters(parents);
        let e = run(&f, image_pcrs()).unwrap_err();
        assert!(
            matches!(
                e,
                CaaError::Disagrees {
                    field: "caa_issue_value",
                    ..
                }
            ),
            "{e}"
        );
        let mut f = served(&statement());
        f.json.hostname = "other.agentkeys.test".into();
        assert!(run(&f, image_pcrs()).is_err());
    }

    #[test]
    fn a_handshake_with_another_key_is_refused() {
        let mut f = served(&statement());
        f.leaf.spki_sha256 = [9; 32];
        let e = run(&f, image_pcrs()).unwrap_err();
        assert!(matches!(e, CaaError::TlsKey { .. }), "{e}");
        assert!(e.to_string().contains(&hex::encode([9u8; 32])), "{e}");
    }

    #[test]
    fn another_kind_of_statement_is_refused() {
        let mut f = served(&statement());
        let doc = agentkeys_mock_nsm::MockNsm::new(agentkeys_mock_nsm::MockNsmConfig::default())
            .attest(
                Some(b"agentkeys/audit-checkpoint/v1\n".to_vec()),
                Some(NONCE.to_vec()),
                None,
            )
            .unwrap();
        f.json.attestation_document = base64::engine::general_purpose::STANDARD.encode(doc);
        let e = run(&f, image_pcrs()).unwrap_err();
        assert!(matches!(e, CaaError::Statement(_)), "{e}");
    }

    #[test]
    fn a_served_statement_the_document_does_not_bind_is_refused() {
        let mut f = served(&statement());
        let mut other = statement();
        other.account_uri = "https://127.0.0.1:14000/my-account/2".into();
        f.json.statement_text = String::from_utf8(other.encode()).unwrap();
        f.json.account_uri = other.account_uri.clone();
        f.json.caa_issue_value = caa_issue_parameters(&other.account_uri);
        let e = run(&f, image_pcrs()).unwrap_err();
        assert!(matches!(e, CaaError::Statement(_)), "{e}");
        assert!(e.to_string().contains("not the attested one"), "{e}");
    }

    #[test]
    fn an_account_uri_that_would_break_the_record_is_refused() {
        let mut s = statement();
        s.account_uri = "https://ca.example/acct/1;evil".into();
        let e = run(&served(&s), image_pcrs()).unwrap_err();
        assert!(matches!(e, CaaError::AccountUri(_)), "{e}");
    }

    #[test]
    fn resolve_and_ca_domain_are_checked() {
        let (h, a) = parse_resolve("Issuer.agentkeys.test:5001:127.0.0.1").unwrap();
        assert_eq!(h, "issuer.agentkeys.test");
        assert_eq!(a, "127.0.0.1:5001".parse().unwrap());
        assert!(parse_resolve("h:443:[::1]").is_ok());
        for bad in [
            "h",
            "h:443",
            "h:x:127.0.0.1",
            ":443:127.0.0.1",
            "h:443:nope",
        ] {
            assert!(parse_resolve(bad).is_err(), "{bad}");
        }
        assert!(is_domain("letsencrypt.org"));
        assert!(is_domain("pki.goog"));
        for bad in ["", "a..b", "x\"; y", "a b", "-;"] {
            assert!(!is_domain(bad), "{bad}");
        }
    }
}
