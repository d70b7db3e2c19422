//! The online audit over TLS, against a local rustls issuer: the certificate of every
//! handshake must certify the key the JWKS statement attests, and the attested ACME
//! account must name the audited host and that key. `watch` against an issuer whose
//! certificate, key or account changes from one check to the next.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentkeys_attestation::online::{OnlineAudit, OnlineCheck, OnlineError, TlsRootsPem};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use common::{DocSpec, TestPki};
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
use sha2::{Digest, Sha256};
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::asn1::{Ia5String, UtcTime};
use x509_cert::der::{Encode, EncodePem};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, SubjectAltName};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};

/// The name the test issuer's certificates carry. No DNS server knows it: the audits
/// connect to loopback by `--resolve` (`OnlineAudit::resolve`).
const HOST: &str = "issuer.agentkeys.test";

/// `--resolve` for [`HOST`] at `url`'s port.
fn resolve_arg(url: &str) -> String {
    format!("{HOST}:{}:127.0.0.1", port_of(url))
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

fn loopback(url: &str) -> Vec<(String, std::net::SocketAddr)> {
    vec![(
        HOST.to_owned(),
        (std::net::Ipv4Addr::LOCALHOST, port_of(url)).into(),
    )]
}
const ACCOUNT_1: &str = "https://ca.test/acme/acct/1";
const ACCOUNT_2: &str = "https://ca.test/acme/acct/2";
const DIRECTORY: &str = "https://ca.test/dir";
const THUMBPRINT: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
const MODULE: &str = "i-0123456789abcdef0-enc0123456789abcdef";
const PINNED_KEY: &str =
    "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn p256_key(seed: u8) -> SigningKey {
    SigningKey::from_slice(&[seed; 32]).unwrap()
}

/// The enclave's TLS key, and a key the host holds.
fn enclave_tls_key() -> SigningKey {
    p256_key(9)
}
fn host_tls_key() -> SigningKey {
    p256_key(10)
}

fn spki_sha256(key: &SigningKey) -> [u8; 32] {
    Sha256::digest(key.verifying_key().to_public_key_der().unwrap().as_bytes()).into()
}

fn now_secs() -> u64 {
    agentkeys_attestation::now_unix_ms() / 1000
}

/// One "now" for the document PKI of the whole test process, so that the issuer's
/// documents and the auditor's anchor come from the same (deterministic) mock root.
fn pki_secs() -> u64 {
    static SECS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SECS.get_or_init(now_secs)
}

fn test_pki() -> TestPki {
    TestPki::new(pki_secs())
}

fn utc(secs: u64) -> Time {
    Time::UtcTime(UtcTime::from_unix_duration(Duration::from_secs(secs)).unwrap())
}

/// A private CA, as Pebble or any CA the auditor is told to trust with `--cacert`.
struct TestCa {
    key: SigningKey,
    der: Vec<u8>,
    name: Name,
}

impl TestCa {
    fn new(seed: u8, cn: &str) -> TestCa {
        let key = p256_key(seed);
        let name = Name::from_str(&format!("CN={cn},O=AgentKeys Test CA")).unwrap();
        let now = now_secs();
        let builder = CertificateBuilder::new(
            Profile::Root,
            SerialNumber::from(1u32),
            Validity {
                not_before: utc(now - 86_400),
                not_after: utc(now + 30 * 86_400),
            },
            name.clone(),
            SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).unwrap(),
            &key,
        )
        .unwrap();
        let der = builder.build::<DerSignature>().unwrap().to_der().unwrap();
        TestCa { key, der, name }
    }

    fn pem(&self) -> String {
        let cert = <x509_cert::Certificate as x509_cert::der::Decode>::from_der(&self.der).unwrap();
        cert.to_pem(x509_cert::der::pem::LineEnding::LF).unwrap()
    }

    /// A server certificate for HOST certifying `key`.
    fn leaf(&self, key: &SigningKey, serial: u32, lifetime_secs: u64) -> Vec<u8> {
        let now = now_secs();
        let mut builder = CertificateBuilder::new(
            Profile::Leaf {
                issuer: self.name.clone(),
                enable_key_agreement: false,
                enable_key_encipherment: false,
                include_subject_key_identifier: true,
            },
            SerialNumber::from(serial),
            Validity {
                not_before: utc(now - 3600),
                not_after: utc(now + lifetime_secs),
            },
            Name::from_str(&format!("CN={HOST}")).unwrap(),
            SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).unwrap(),
            &self.key,
        )
        .unwrap();
        builder
            .add_extension(&SubjectAltName(vec![GeneralName::DnsName(
                Ia5String::new(HOST).unwrap(),
            )]))
            .unwrap();
        builder
            .add_extension(&ExtendedKeyUsage(vec![
                const_oid::db::rfc5280::ID_KP_SERVER_AUTH,
            ]))
            .unwrap();
        builder.build::<DerSignature>().unwrap().to_der().unwrap()
    }

    /// A rustls server configuration presenting `leaf` (for `key`) and this CA.
    fn server_config(&self, leaf: Vec<u8>, key: &SigningKey) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pkcs8 = key.to_pkcs8_der().unwrap().as_bytes().to_vec();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.into(), self.der.clone().into()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(pkcs8.into()),
            )
            .unwrap();
        Arc::new(config)
    }
}

/// How the acme-account route answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Acme {
    Honest,
    /// A genuine statement for another host.
    OtherHost,
    /// A genuine statement for another TLS key.
    OtherKey,
    /// The JSON names another account than the statement.
    FieldsLie,
    /// The document carries another nonce than the auditor's (a replayed document).
    StaleNonce,
    /// The document carries no nonce (an enclave that takes none on this route).
    NoNonce,
    /// 404, as before any account exists.
    Missing,
}

/// What the issuer serves during one check of an audit.
#[derive(Clone)]
struct Served {
    /// The TLS configuration of every handshake (its leaf certificate and key).
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The `tls_spki_sha256` both statements attest.
    attested_tls_key: [u8; 32],
    /// The account the acme-account statement attests.
    account_uri: &'static str,
    acme: Acme,
}

struct Issuer {
    url: String,
}

/// An issuer serving `schedule[k]` during the k-th audit (the last entry from then on);
/// an audit ends with its acme-account request.
fn start(schedule: Vec<Served>) -> Issuer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let plain = schedule[0].tls.is_none();
    let base = if plain {
        format!("http://{HOST}:{port}")
    } else {
        format!("https://{HOST}:{port}")
    };
    let pki = Arc::new(test_pki());
    let jwks_key = p256_key(3);
    let jwks = format!(
        r#"{{"keys":[{{"kty":"EC","crv":"P-256","x":"{}","y":"{}","kid":"kid-1","alg":"ES256","use":"sig"}}]}}"#,
        URL_SAFE_NO_PAD.encode(
            jwks_key
                .verifying_key()
                .to_encoded_point(false)
                .x()
                .unwrap()
        ),
        URL_SAFE_NO_PAD.encode(
            jwks_key
                .verifying_key()
                .to_encoded_point(false)
                .y()
                .unwrap()
        )
    );
    let jwks_spki = jwks_key
        .verifying_key()
        .to_public_key_der()
        .unwrap()
        .as_bytes()
        .to_vec();
    let audits = Arc::new(AtomicUsize::new(0));
    let url = base.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(tcp) = stream else { continue };
            let served = schedule[audits.load(Ordering::SeqCst).min(schedule.len() - 1)].clone();
            let respond = |path: &str| -> (&'static str, String) {
                route(path, &base, &jwks, &jwks_spki, &served, &pki, &audits)
            };
            match &served.tls {
                None => {
                    let _ = serve_one(tcp, respond);
                }
                Some(config) => {
                    let Ok(connection) = rustls::ServerConnection::new(config.clone()) else {
                        continue;
                    };
                    let mut tls = rustls::StreamOwned::new(connection, tcp);
                    if serve_one(&mut tls, respond).is_ok() {
                        tls.conn.send_close_notify();
                        let _ = tls.flush();
                    }
                }
            }
        }
    });
    Issuer { url }
}

/// Reads one request, writes one response, closes.
fn serve_one<S: Read + Write>(
    mut stream: S,
    respond: impl Fn(&str) -> (&'static str, String),
) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf)? {
            0 => return Ok(()),
            n => request.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request).to_string();
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (status, body) = respond(&path);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

#[allow(clippy::too_many_arguments)]
fn route(
    path: &str,
    base: &str,
    jwks: &str,
    jwks_spki: &[u8],
    served: &Served,
    pki: &TestPki,
    audits: &AtomicUsize,
) -> (&'static str, String) {
    let nonce_of = |query: &str| hex::decode(query).unwrap_or_default();
    if path == "/.well-known/openid-configuration" {
        return (
            "200 OK",
            format!(
                r#"{{"issuer":"{base}","jwks_uri":"{base}/.well-known/jwks.json","nitro_attestation_uri":"{base}/.well-known/nitro-attestation"}}"#
            ),
        );
    }
    if path == "/.well-known/jwks.json" {
        return ("200 OK", jwks.to_owned());
    }
    if let Some(query) = path.strip_prefix("/.well-known/nitro-attestation?nonce=") {
        let hash: [u8; 32] = Sha256::digest(jwks.as_bytes()).into();
        let statement = agentkeys_statement::JwksStatement {
            jwks_sha256: hash,
            kms_key_arn: agentkeys_statement::KmsKeyArn::parse(PINNED_KEY).unwrap(),
            sealed_seed_sha256: [7; 32],
            key_version: 1,
            audit_epoch: 99,
            module_id: MODULE.into(),
            auth_modes: vec!["signed-session".into()],
            session_keys: vec![],
            tls_spki_sha256: served.attested_tls_key,
        };
        let mut spec = DocSpec::new(pki.now_ms());
        spec.nonce = Some(nonce_of(query));
        spec.user_data = Some(statement.user_data());
        spec.public_key = Some(jwks_spki.to_vec());
        let doc = pki.document(&spec);
        return (
            "200 OK",
            format!(
                r#"{{"document":"{}","statement_text":{},"jwks_sha256":"{}","kids":["kid-1"]}}"#,
                STANDARD.encode(doc),
                serde_json::Value::String(String::from_utf8(statement.encode()).unwrap()),
                hex::encode(hash)
            ),
        );
    }
    if let Some(query) = path.strip_prefix("/.well-known/acme-account?nonce=") {
        audits.fetch_add(1, Ordering::SeqCst);
        if served.acme == Acme::Missing {
            return (
                "404 Not Found",
                r#"{"error":"not_found","message":"no ACME account yet"}"#.to_owned(),
            );
        }
        let statement = agentkeys_statement::AcmeAccountStatement {
            directory: DIRECTORY.into(),
            account_uri: served.account_uri.into(),
            account_key_thumbprint: THUMBPRINT.into(),
            hostname: if served.acme == Acme::OtherHost {
                "issuer.other.test".into()
            } else {
                HOST.into()
            },
            tls_spki_sha256: if served.acme == Acme::OtherKey {
                spki_sha256(&host_tls_key())
            } else {
                served.attested_tls_key
            },
            module_id: MODULE.into(),
        };
        let mut spec = DocSpec::new(pki.now_ms());
        spec.nonce = match served.acme {
            Acme::StaleNonce => Some(vec![0; 32]),
            Acme::NoNonce => None,
            _ => Some(nonce_of(query)),
        };
        spec.user_data = Some(statement.user_data());
        spec.public_key = None;
        let doc = pki.document(&spec);
        let claimed_uri = if served.acme == Acme::FieldsLie {
            ACCOUNT_2
        } else {
            served.account_uri
        };
        let body = serde_json::json!({
            "directory": statement.directory,
            "account_uri": claimed_uri,
            "account_key_thumbprint": statement.account_key_thumbprint,
            "hostname": statement.hostname,
            "tls_spki_sha256": hex::encode(statement.tls_spki_sha256),
            "caa_issue_value": format!("accounturi={claimed_uri}; validationmethods=tls-alpn-01"),
            "attestation_document": STANDARD.encode(doc),
            "statement_text": String::from_utf8(statement.encode()).unwrap(),
        });
        return ("200 OK", body.to_string());
    }
    ("404 Not Found", r#"{"error":"not_found"}"#.to_owned())
}

/// One CA, the enclave's certificate, and what an honest enclave serves.
struct World {
    ca: TestCa,
    enclave_cert: Vec<u8>,
}

impl World {
    fn new() -> World {
        let ca = TestCa::new(11, "Test ACME CA");
        let enclave_cert = ca.leaf(&enclave_tls_key(), 100, 90 * 86_400);
        World { ca, enclave_cert }
    }

    fn honest(&self) -> Served {
        Served {
            tls: Some(
                self.ca
                    .server_config(self.enclave_cert.clone(), &enclave_tls_key()),
            ),
            attested_tls_key: spki_sha256(&enclave_tls_key()),
            account_uri: ACCOUNT_1,
            acme: Acme::Honest,
        }
    }

    /// A host terminating the issuer's TLS with its own key, under a certificate from the
    /// same public CA, relaying the enclave's genuine JWKS and attestations.
    fn hostile_host(&self) -> Served {
        let cert = self.ca.leaf(&host_tls_key(), 666, 90 * 86_400);
        Served {
            tls: Some(self.ca.server_config(cert, &host_tls_key())),
            ..self.honest()
        }
    }

    /// The enclave's certificate renewed: same key, new serial and notAfter.
    fn renewed(&self) -> Served {
        let cert = self.ca.leaf(&enclave_tls_key(), 101, 120 * 86_400);
        Served {
            tls: Some(self.ca.server_config(cert, &enclave_tls_key())),
            ..self.honest()
        }
    }

    fn with_acme(&self, acme: Acme) -> Served {
        Served {
            acme,
            ..self.honest()
        }
    }

    fn cacert(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.ca.pem()).unwrap();
        path
    }
}

fn audit(
    issuer: &Issuer,
    world: &World,
) -> Result<agentkeys_attestation::online::OnlineReport, OnlineError> {
    let pki = test_pki();
    OnlineAudit {
        issuer: issuer.url.clone(),
        anchor: pki.anchor(),
        policy: Default::default(),
        at_unix_ms: None,
        timeout: Duration::from_secs(10),
        expect_kms_key_arn: None,
        expect_kids: vec![],
        tls_roots_pem: Some(TlsRootsPem {
            source_name: "test CA".into(),
            pem: world.ca.pem(),
        }),
        allow_plain_http: false,
        resolve: loopback(&issuer.url),
    }
    .run()
}

#[test]
fn the_enclave_s_own_certificate_passes_and_is_recorded() {
    let world = World::new();
    let report = audit(&start(vec![world.honest()]), &world).unwrap();
    let tls = report.tls.expect("TLS evidence");
    assert_eq!(tls.leaves.len(), 1);
    let leaf = &tls.leaves[0];
    assert_eq!(leaf.spki_sha256, spki_sha256(&enclave_tls_key()));
    assert_eq!(leaf.subject, format!("CN={HOST}"));
    assert_eq!(leaf.serial_hex, "64");
    let account = report.acme_account.expect("ACME account");
    assert_eq!(account.statement.account_uri, ACCOUNT_1);
    assert_eq!(account.statement.hostname, HOST);
    assert_eq!(
        account.caa_issue_value,
        format!("accounturi={ACCOUNT_1}; validationmethods=tls-alpn-01")
    );
}

#[test]
fn a_certificate_for_a_key_the_enclave_does_not_attest_fails_tls_key() {
    let world = World::new();
    let e = audit(&start(vec![world.hostile_host()]), &world).unwrap_err();
    assert_eq!(e.check(), Some(OnlineCheck::TlsKey), "{e}");
    let OnlineError::TlsKeyMismatch {
        leaf,
        attested_spki_sha256,
        ..
    } = &e
    else {
        panic!("{e:?}");
    };
    assert_eq!(leaf.spki_sha256, spki_sha256(&host_tls_key()));
    assert_eq!(*attested_spki_sha256, spki_sha256(&enclave_tls_key()));
    let message = e.to_string();
    for shown in [
        hex::encode(spki_sha256(&host_tls_key())),
        hex::encode(spki_sha256(&enclave_tls_key())),
        format!("subject \"CN={HOST}\""),
        "issuer \"CN=Test ACME CA,O=AgentKeys Test CA\"".to_owned(),
        "serial 029a".to_owned(),
        "notAfter ".to_owned(),
    ] {
        assert!(message.contains(&shown), "{shown} not in {message}");
    }
}

#[test]
fn an_acme_account_for_another_host_or_key_fails_acme_account() {
    let world = World::new();
    for (acme, says) in [
        (Acme::OtherHost, "issuer.other.test"),
        (Acme::OtherKey, "but the JWKS statement attests"),
    ] {
        let e = audit(&start(vec![world.with_acme(acme)]), &world).unwrap_err();
        assert_eq!(e.check(), Some(OnlineCheck::AcmeAccount), "{acme:?}: {e}");
        assert!(e.to_string().contains(says), "{acme:?}: {e}");
    }
}

#[test]
fn acme_account_fields_that_differ_from_the_statement_fail() {
    let world = World::new();
    let e = audit(&start(vec![world.with_acme(Acme::FieldsLie)]), &world).unwrap_err();
    assert_eq!(e.check(), Some(OnlineCheck::AcmeAccountResponse), "{e}");
    assert!(e.to_string().contains("account_uri"), "{e}");
}

#[test]
fn a_replayed_acme_account_document_fails_its_nonce() {
    let world = World::new();
    let e = audit(&start(vec![world.with_acme(Acme::StaleNonce)]), &world).unwrap_err();
    assert_eq!(e.check(), Some(OnlineCheck::AcmeAccountDocument), "{e}");
    assert_eq!(e.failed_check_name(), "acme_account_document");
    assert!(e.to_string().contains("nonce"), "{e}");
}

#[test]
fn an_acme_account_document_without_our_nonce_is_refused() {
    let world = World::new();
    let e = audit(&start(vec![world.with_acme(Acme::NoNonce)]), &world).unwrap_err();
    assert_eq!(e.check(), Some(OnlineCheck::AcmeAccountDocument), "{e}");
    assert!(e.to_string().contains("nonce"), "{e}");
    let report = audit(&start(vec![world.honest()]), &world).unwrap();
    assert_eq!(
        report
            .acme_account
            .expect("ACME account")
            .statement
            .account_uri,
        ACCOUNT_1
    );
}

#[test]
fn a_missing_acme_account_is_a_transport_error() {
    let world = World::new();
    let e = audit(&start(vec![world.with_acme(Acme::Missing)]), &world).unwrap_err();
    assert!(matches!(e, OnlineError::Status { status: 404, .. }), "{e}");
}

#[test]
fn a_certificate_from_an_untrusted_ca_is_refused_by_the_tls_client() {
    let world = World::new();
    let issuer = start(vec![world.honest()]);
    let other = World::new_with_ca(TestCa::new(12, "Other CA"));
    let e = audit(&issuer, &other).unwrap_err();
    assert!(matches!(e, OnlineError::Http { .. }), "{e}");
    assert!(e.to_string().contains("certificate"), "{e}");
}

impl World {
    fn new_with_ca(ca: TestCa) -> World {
        let enclave_cert = ca.leaf(&enclave_tls_key(), 100, 90 * 86_400);
        World { ca, enclave_cert }
    }
}

// ------------------------------------------------------------------ the CLI

fn mock_root(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("mock-root.pem");
    std::fs::write(&path, test_pki().root_pem()).unwrap();
    path
}

fn attest(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    let root = mock_root(dir);
    let url = args
        .iter()
        .position(|a| *a == "--issuer")
        .map(|i| args[i + 1])
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_agentkeys-attest"))
        .args(args)
        .arg("--root")
        .arg(&root)
        .args(["--allow-mock-root", "--no-pcr-policy", "--resolve"])
        .arg(resolve_arg(url))
        .output()
        .unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn cli_verify_reports_the_served_certificate_and_the_account() {
    let world = World::new();
    let issuer = start(vec![world.honest()]);
    let o = verify_over_tls(&issuer, &world, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&hex::encode(spki_sha256(&enclave_tls_key()))),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("acme_account {ACCOUNT_1}")),
        "{stdout}"
    );
    assert!(stdout.contains("tls_key            pass"), "{stdout}");

    let o = verify_over_tls(&issuer, &world, &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        json["report"]["tls"]["certificates"][0]["spki_sha256"],
        hex::encode(spki_sha256(&enclave_tls_key()))
    );
    assert_eq!(json["report"]["acme_account"]["account_uri"], ACCOUNT_1);
}

#[test]
fn cli_verify_of_a_host_held_certificate_fails_naming_tls_key() {
    let world = World::new();
    let issuer = start(vec![world.hostile_host()]);
    let o = verify_over_tls(&issuer, &world, &["--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["failed_check"], "tls_key");
    assert_eq!(
        json["presented_certificate"]["spki_sha256"],
        hex::encode(spki_sha256(&host_tls_key()))
    );
    assert_eq!(json["presented_certificate"]["serial"], "029a");
}

#[test]
fn cli_verify_refuses_a_plain_http_issuer_unless_allowed() {
    let world = World::new();
    let plain = Served {
        tls: None,
        ..world.honest()
    };
    let issuer = start(vec![plain]);
    let dir = tempfile::tempdir().unwrap();
    // Without the flag: every other check runs, then tls_key fails, saying why.
    let o = Command::new(env!("CARGO_BIN_EXE_agentkeys-attest"))
        .args([
            "verify",
            "--issuer",
            &issuer.url,
            "--no-pcr-policy",
            "--json",
            "--resolve",
            &resolve_arg(&issuer.url),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // The AWS root refuses the mock chain first: the plain-HTTP issuer was audited, not
    // refused up front.
    assert_eq!(json["failed_check"], "certificate_path", "{json}");
    let e = OnlineAudit {
        issuer: issuer.url.clone(),
        anchor: test_pki().anchor(),
        policy: Default::default(),
        at_unix_ms: None,
        timeout: Duration::from_secs(10),
        expect_kms_key_arn: None,
        expect_kids: vec![],
        tls_roots_pem: None,
        allow_plain_http: false,
        resolve: loopback(&issuer.url),
    }
    .run()
    .unwrap_err();
    assert_eq!(e.check(), Some(OnlineCheck::TlsKey), "{e}");
    assert!(!e.is_transport());
    assert!(e.to_string().contains("no TLS handshake to check"), "{e}");
    // --allow-mock-root (a development stack) accepts it like --allow-plain-http.
    let o = attest(&["verify", "--issuer", &issuer.url], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("the tls_key and acme_account checks are skipped"),
        "{}",
        text(&o)
    );
    let o = attest(
        &[
            "verify",
            "--issuer",
            &issuer.url,
            "--allow-plain-http",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = |name: &str| {
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(row("tls_key")["result"], "skipped");
    assert_eq!(row("acme_account")["result"], "skipped");
    assert_eq!(json["report"]["tls"]["checked"], false);
}

/// `agentkeys-attest <command> --issuer URL --cacert <the world's CA> <extra>` with the
/// mock root and no PCR policy.
fn over_tls(command: &str, issuer: &Issuer, world: &World, extra: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let ca = world.cacert(dir.path());
    let head = [
        command,
        "--issuer",
        &issuer.url,
        "--cacert",
        ca.to_str().unwrap(),
    ];
    attest(&[&head[..], extra].concat(), dir.path())
}

fn verify_over_tls(issuer: &Issuer, world: &World, extra: &[&str]) -> std::process::Output {
    over_tls("verify", issuer, world, extra)
}

fn watch(issuer: &Issuer, world: &World, extra: &[&str]) -> std::process::Output {
    over_tls(
        "watch",
        issuer,
        world,
        &[&["--interval", "1"][..], extra].concat(),
    )
}

fn lines(o: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn watch_of_an_unchanged_issuer_prints_a_line_per_check_and_no_alert() {
    let world = World::new();
    let o = watch(&start(vec![world.honest()]), &world, &["--count", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lines = lines(&o);
    assert_eq!(lines.len(), 3, "{}", text(&o));
    let leaf = &hex::encode(spki_sha256(&enclave_tls_key()))[..16];
    for line in &lines {
        assert!(line.contains(" OK leaf_spki="), "{line}");
        assert!(line.contains(&format!("leaf_spki={leaf} ")), "{line}");
        assert!(line.contains(&format!("acme={ACCOUNT_1}")), "{line}");
        assert!(!line.contains("ALERT"), "{line}");
    }
}

#[test]
fn watch_alerts_and_exits_when_a_host_key_appears() {
    let world = World::new();
    let issuer = start(vec![world.honest(), world.hostile_host()]);
    let o = watch(&issuer, &world, &["--count", "5", "--exit-on-change"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let lines = lines(&o);
    assert_eq!(lines.len(), 3, "{}", text(&o));
    assert!(lines[0].contains(" OK "), "{}", lines[0]);
    assert!(lines[1].contains(" FAIL check=tls_key"), "{}", lines[1]);
    assert!(
        lines[2].starts_with("ALERT: check tls_key failed: "),
        "{}",
        lines[2]
    );
    assert!(
        lines[2].contains(&hex::encode(spki_sha256(&host_tls_key()))),
        "{}",
        lines[2]
    );
}

#[test]
fn watch_alerts_when_the_attested_key_and_account_change() {
    let world = World::new();
    // Another seed: the enclave attests and presents another key, with another account.
    let other = Served {
        tls: Some(world.ca.server_config(
            world.ca.leaf(&host_tls_key(), 200, 90 * 86_400),
            &host_tls_key(),
        )),
        attested_tls_key: spki_sha256(&host_tls_key()),
        account_uri: ACCOUNT_2,
        acme: Acme::Honest,
    };
    let issuer = start(vec![world.honest(), other]);
    let o = watch(&issuer, &world, &["--count", "3"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let lines = lines(&o);
    assert!(lines[0].contains(" OK "), "{}", text(&o));
    assert!(lines[1].contains(" CHANGED "), "{}", text(&o));
    let alerts: Vec<&String> = lines.iter().filter(|l| l.starts_with("ALERT: ")).collect();
    // Two changed checks, two alerts each: the key and the account.
    assert_eq!(alerts.len(), 4, "{}", text(&o));
    assert!(
        alerts[0].starts_with("ALERT: TLS certificate key changed"),
        "{}",
        alerts[0]
    );
    assert!(
        alerts[1].starts_with("ALERT: ACME account changed"),
        "{}",
        alerts[1]
    );
    assert!(alerts[1].contains(ACCOUNT_2), "{}", alerts[1]);
}

#[test]
fn watch_reports_a_renewal_with_the_same_key_without_alert() {
    let world = World::new();
    let issuer = start(vec![world.honest(), world.renewed()]);
    let o = watch(&issuer, &world, &["--count", "3", "--exit-on-change"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lines = lines(&o);
    assert_eq!(lines.len(), 3, "{}", text(&o));
    assert!(lines[0].contains(" OK "), "{}", lines[0]);
    assert!(lines[1].contains(" RENEWED "), "{}", lines[1]);
    assert!(lines[1].contains("renewed: same key"), "{}", lines[1]);
    assert!(lines[2].contains(" OK "), "{}", lines[2]);
    assert!(lines.iter().all(|l| !l.contains("ALERT")), "{}", text(&o));
}

#[test]
fn watch_retries_an_issuer_that_cannot_be_fetched() {
    // Nothing listens there: every check is a fetch error, none an alert.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let world = World::new();
    let issuer = Issuer {
        url: format!("https://{HOST}:{port}"),
    };
    let o = watch(&issuer, &world, &["--count", "2", "--exit-on-change"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let lines = lines(&o);
    assert_eq!(lines.len(), 2, "{}", text(&o));
    assert!(
        lines.iter().all(|l| l.contains(" FETCH-ERROR ")),
        "{}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("none of the 2 checks"),
        "{}",
        text(&o)
    );
}

#[test]
fn watch_json_lines_name_the_alert() {
    let world = World::new();
    let issuer = start(vec![world.honest(), world.hostile_host()]);
    let o = watch(&issuer, &world, &["--count", "2", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let checks: Vec<serde_json::Value> = lines(&o)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0]["result"], "OK");
    assert_eq!(checks[0]["alert"], false);
    assert_eq!(checks[1]["result"], "FAIL");
    assert_eq!(checks[1]["failed_check"], "tls_key");
    assert_eq!(checks[1]["alert"], true);
}

#[test]
fn cli_resolve_takes_a_host_and_an_ip_address() {
    for bad in [
        "issuer.agentkeys.test",
        "issuer.agentkeys.test:127.0.0.1",
        "issuer.agentkeys.test:443:localhost",
        "issuer.agentkeys.test:https:127.0.0.1",
        ":443:127.0.0.1",
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_agentkeys-attest"))
            .args([
                "verify",
                "--issuer",
                "https://issuer.agentkeys.test",
                "--resolve",
                bad,
            ])
            .args(["--no-pcr-policy"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("--resolve"),
            "{bad}: {}",
            text(&o)
        );
    }
}

#[test]
fn a_resolve_entry_for_another_port_is_not_used() {
    let world = World::new();
    let issuer = start(vec![world.honest()]);
    let dir = tempfile::tempdir().unwrap();
    let ca = world.cacert(dir.path());
    let root = mock_root(dir.path());
    let run = |resolve: &str| {
        Command::new(env!("CARGO_BIN_EXE_agentkeys-attest"))
            .args(["verify", "--issuer", &issuer.url, "--cacert"])
            .arg(&ca)
            .arg("--root")
            .arg(&root)
            .args(["--allow-mock-root", "--no-pcr-policy", "--resolve", resolve])
            .output()
            .unwrap()
    };
    let used = run(&resolve_arg(&issuer.url));
    assert_eq!(used.status.code(), Some(0), "{}", text(&used));
    // Another port: the entry is ignored and the name (known to no DNS server) does not
    // resolve, a transport error.
    let other_port = port_of(&issuer.url).wrapping_add(1);
    let unused = run(&format!("{HOST}:{other_port}:127.0.0.1"));
    assert_eq!(unused.status.code(), Some(2), "{}", text(&unused));
}
