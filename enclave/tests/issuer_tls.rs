//! The enclave's issuer TLS endpoint with a rustls client we wrote and clients we did not
//! (openssl s_client): the server name check, `acme-tls/1`, malformed ClientHellos, the
//! key the handshake presents, the issuer routes, cached chains, and an ACME CA that
//! errors or stalls, while the endpoint keeps serving.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentkeys_enclave::config::{validate_acme_directory, IssuerTlsConfig};
use agentkeys_enclave::keys::Seed;
use agentkeys_enclave::tls::certs;
use agentkeys_enclave::tls::keys::IssuerTlsKeys;
use agentkeys_enclave::tls::server::{
    serve_with, IssuerSurface, Refusal, HANDSHAKE_TIMEOUT, MAX_CONNECTIONS,
};
use agentkeys_enclave::tls::state::{server_config, ACME_TLS_ALPN};
use agentkeys_enclave::tls::{AcmeTiming, IssuerTls};
use agentkeys_wire::{Address, ISSUER_TLS_ISSUED, ISSUER_TLS_SELF_SIGNED};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::AlertDescription;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

mod support;
use support::{client, provider};

const HOST: &str = "issuer.agentkeys.test";
const JWKS: &[u8] = br#"{"keys":[]}"#;

async fn connect(addr: SocketAddr, name: &str, alpn: &[&[u8]]) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), client(alpn).connect(name, tcp))
        .await
        .map_err(|_| io::Error::other("handshake timed out"))?
}

fn alert_of(e: &io::Error) -> Option<AlertDescription> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(a) => Some(*a),
        _ => None,
    }
}

fn leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

fn spki_sha256(cert: &CertificateDer<'_>) -> [u8; 32] {
    use der::{Decode, Encode};
    let c = x509_cert::Certificate::from_der(cert.as_ref()).unwrap();
    Sha256::digest(c.tbs_certificate.subject_public_key_info.to_der().unwrap()).into()
}

struct Fake;

impl IssuerSurface for Fake {
    fn issuer(&self) -> String {
        format!("https://{HOST}")
    }
    fn jwks(&self) -> Result<Vec<u8>, Refusal> {
        Ok(JWKS.to_vec())
    }
    async fn attestation(&self, nonce: Option<Vec<u8>>) -> Result<serde_json::Value, Refusal> {
        Ok(serde_json::json!({"nonce": nonce.map(hex::encode)}))
    }
    async fn acme_account(&self, _nonce: Option<Vec<u8>>) -> Result<serde_json::Value, Refusal> {
        Err(Refusal::new(
            http::StatusCode::NOT_FOUND,
            "no_account",
            "not yet",
        ))
    }
}

fn seed(b: u8) -> Seed {
    Seed::from_slice(&[b; 32]).unwrap()
}

fn config(directory: &str, acme_root: Option<PathBuf>, timing: AcmeTiming) -> IssuerTlsConfig {
    IssuerTlsConfig {
        listen: Address::Unix("/nonexistent".into()),
        hostname: HOST.into(),
        directory: validate_acme_directory(directory, true).unwrap(),
        mock: true,
        acme_root,
        proxy_port: 8001,
        renew_before: None,
        contact: None,
        timing,
    }
}

fn fast() -> AcmeTiming {
    AcmeTiming {
        request_timeout: Duration::from_millis(500),
        order_deadline: Duration::from_secs(5),
        retry_min: Duration::from_millis(200),
        retry_max: Duration::from_millis(400),
        poll_initial: Duration::from_millis(100),
        // No parent here: nothing to wait for.
        parent_offer_window: Duration::ZERO,
    }
}

/// An issuer TLS endpoint on loopback with keys from seed 1.
async fn endpoint(cfg: IssuerTlsConfig) -> (SocketAddr, Arc<IssuerTls>, Arc<IssuerTlsKeys>) {
    let tls = Arc::new(IssuerTls::new(cfg));
    let keys = Arc::new(IssuerTlsKeys::derive(&seed(1)).unwrap());
    tls.install_keys(keys.clone()).unwrap();
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_with(
        move || {
            let l = listener.clone();
            async move { l.accept().await.map(|(s, _)| s) }
        },
        tls.clone(),
        Arc::new(Fake),
    ));
    (addr, tls, keys)
}

async fn plain() -> (SocketAddr, Arc<IssuerTls>, Arc<IssuerTlsKeys>) {
    endpoint(config("https://127.0.0.1:9/dir", None, fast())).await
}

async fn get(
    stream: TlsStream<TcpStream>,
    method: &str,
    path: &str,
) -> (http::StatusCode, Vec<u8>) {
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", HOST)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

#[tokio::test]
async fn the_handshake_presents_the_derived_tls_key_and_serves_the_issuer_routes() {
    let (addr, tls, keys) = plain().await;
    let stream = connect(addr, HOST, &[b"http/1.1"]).await.unwrap();
    assert_eq!(spki_sha256(&leaf(&stream)), keys.tls.spki_sha256());
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = get(stream, "GET", "/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    assert_eq!(body, JWKS);
    let status = tls.status();
    assert!(status.enabled);
    assert_eq!(status.state, ISSUER_TLS_SELF_SIGNED);
    assert_eq!(status.tls_spki_sha256, hex::encode(keys.tls.spki_sha256()));
    assert_eq!(status.chain_pem, None);
    let stream = connect(addr, HOST, &[]).await.unwrap();
    let (status, body) = get(stream, "GET", "/.well-known/openid-configuration").await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["issuer"], format!("https://{HOST}"));
    assert_eq!(
        doc["jwks_uri"],
        format!("https://{HOST}/.well-known/jwks.json")
    );
    let stream = connect(addr, HOST, &[]).await.unwrap();
    let (status, body) = get(stream, "GET", "/.well-known/nitro-attestation?nonce=abcd").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["nonce"],
        "abcd"
    );
    for (method, path, want) in [
        ("GET", "/.well-known/nitro-attestation?nonce=zz", 400),
        ("GET", "/.well-known/nitro-attestation?x=1", 400),
        ("GET", "/v1/mint", 404),
        ("POST", "/.well-known/jwks.json", 405),
        ("GET", "/.well-known/acme-account", 404),
    ] {
        let stream = connect(addr, HOST, &[]).await.unwrap();
        let (status, body) = get(stream, method, path).await;
        assert_eq!(status, want, "{method} {path}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(body["error"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn another_server_name_is_refused_with_unrecognized_name() {
    let (addr, _tls, _keys) = plain().await;
    for name in [
        "other.agentkeys.test",
        "agentkeys.test",
        "issuer.agentkeys.test.evil",
    ] {
        let e = connect(addr, name, &[b"http/1.1"]).await.unwrap_err();
        assert_eq!(
            alert_of(&e),
            Some(AlertDescription::UnrecognisedName),
            "{name}: {e}"
        );
    }
    // No server name at all (a client connecting by address).
    let e = connect(addr, "127.0.0.1", &[]).await.unwrap_err();
    assert_eq!(
        alert_of(&e),
        Some(AlertDescription::UnrecognisedName),
        "{e}"
    );
    // The name is matched without regard to case (RFC 4343).
    connect(addr, "Issuer.AgentKeys.TEST", &[]).await.unwrap();
}

#[tokio::test]
async fn garbage_instead_of_a_client_hello_closes_only_that_connection() {
    let (addr, _tls, keys) = plain().await;
    let cases: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0xff],
        &[0x16, 0x03, 0x01, 0xff, 0xff],
        &[0u8; 64],
    ];
    for garbage in cases {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(garbage).await.unwrap();
        // A truncated record waits for more bytes: end the stream so it reads EOF.
        tcp.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest))
            .await
            .expect("the endpoint closes a malformed connection");
        assert!(read.is_ok() || read.is_err());
        // Nothing but (at most) an alert record comes back: no certificate, no HTTP.
        assert!(
            rest.len() <= 7,
            "{} bytes answered to {garbage:?}",
            rest.len()
        );
    }
    let stream = connect(addr, HOST, &[]).await.unwrap();
    assert_eq!(spki_sha256(&leaf(&stream)), keys.tls.spki_sha256());
}

/// The `id-pe-acmeIdentifier` extension's value (RFC 8737 section 3): an OCTET STRING
/// holding the SHA-256 of the key authorization.
fn acme_identifier(cert: &CertificateDer<'_>) -> Option<(bool, Vec<u8>)> {
    use der::Decode;
    let oid = der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.31");
    let c = x509_cert::Certificate::from_der(cert.as_ref()).unwrap();
    let ext = c
        .tbs_certificate
        .extensions?
        .into_iter()
        .find(|e| e.extn_id == oid)?;
    let inner = der::asn1::OctetString::from_der(ext.extn_value.as_bytes()).unwrap();
    Some((ext.critical, inner.as_bytes().to_vec()))
}

#[tokio::test]
async fn acme_tls_alpn_serves_the_challenge_certificate_only_while_pending() {
    let (addr, tls, keys) = plain().await;
    let e = connect(addr, HOST, &[ACME_TLS_ALPN]).await.unwrap_err();
    assert_eq!(
        alert_of(&e),
        Some(AlertDescription::NoApplicationProtocol),
        "{e}"
    );
    let digest: [u8; 32] = Sha256::digest(b"token.thumbprint").into();
    let cert = certs::challenge_certificate(&keys.tls, HOST, &digest).unwrap();
    let certified = certs::certified_key(&keys.tls, vec![cert]).unwrap();
    tls.set_challenge(Some(
        server_config(tls.provider(), certified, ACME_TLS_ALPN).unwrap(),
    ));
    let stream = connect(addr, HOST, &[ACME_TLS_ALPN]).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(ACME_TLS_ALPN));
    let presented = leaf(&stream);
    assert_eq!(acme_identifier(&presented), Some((true, digest.to_vec())));
    // The ordinary handshake never shows the challenge certificate.
    let ordinary = connect(addr, HOST, &[b"http/1.1"]).await.unwrap();
    assert_eq!(acme_identifier(&leaf(&ordinary)), None);
    // Another name with acme-tls/1 is refused for its name.
    let e = connect(addr, "other.agentkeys.test", &[ACME_TLS_ALPN])
        .await
        .unwrap_err();
    assert_eq!(alert_of(&e), Some(AlertDescription::UnrecognisedName));
    tls.set_challenge(None);
    let e = connect(addr, HOST, &[ACME_TLS_ALPN]).await.unwrap_err();
    assert_eq!(alert_of(&e), Some(AlertDescription::NoApplicationProtocol));
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A chain of one certificate for `key` (PKCS#8 of the TLS key, or a fresh key), naming
/// `name`, valid from `from` to `to` (UNIX seconds), signed by a throw-away CA.
fn chain(tls_pkcs8: Option<&[u8]>, name: &str, from: u64, to: u64) -> String {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = match tls_pkcs8 {
        Some(der) => KeyPair::try_from(der).unwrap(),
        None => KeyPair::generate().unwrap(),
    };
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params.not_before = time::OffsetDateTime::from_unix_timestamp(from as i64).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(to as i64).unwrap();
    let leaf = params.signed_by(&key, &issuer).unwrap();
    format!("{}{}", leaf.pem(), ca_cert.pem())
}

#[tokio::test]
async fn a_cached_chain_is_served_only_for_our_key_our_name_and_now() {
    let (addr, tls, keys) = plain().await;
    let ours = keys.tls.pkcs8_der();
    let t = now();
    let cases = [
        (chain(Some(ours), HOST, t - 7200, t - 3600), "expired"),
        (
            chain(Some(ours), HOST, t + 3600, t + 7200),
            "valid only from",
        ),
        (chain(None, HOST, t - 60, t + 3600), "another key"),
        (
            chain(Some(ours), "other.agentkeys.test", t - 60, t + 3600),
            "not the issuer host",
        ),
        ("not a certificate".to_string(), "not PEM"),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_string(),
            "not X.509",
        ),
    ];
    for (pem, why) in cases {
        let refused = tls.offer_cached(&pem, t).expect(why);
        assert!(refused.contains(why), "{why}: {refused}");
        let status = tls.status();
        assert_eq!(status.state, ISSUER_TLS_SELF_SIGNED, "{why}");
        assert_eq!(
            status.cached_chain_refused.as_deref(),
            Some(refused.as_str())
        );
        // Still served: the self-signed certificate for our key.
        let stream = connect(addr, HOST, &[]).await.unwrap();
        assert_eq!(spki_sha256(&leaf(&stream)), keys.tls.spki_sha256());
        assert!(acme_identifier(&leaf(&stream)).is_none());
    }
    let good = chain(Some(ours), HOST, t - 60, t + 3600);
    assert_eq!(tls.offer_cached(&good, t), None);
    let status = tls.status();
    assert_eq!(status.state, ISSUER_TLS_ISSUED);
    assert_eq!(status.cached_chain_refused, None);
    assert_eq!(status.not_after, Some(t + 3600));
    let served = status.chain_pem.unwrap();
    assert_eq!(served.matches("BEGIN CERTIFICATE").count(), 2);
    let stream = connect(addr, HOST, &[]).await.unwrap();
    let presented = stream.get_ref().1.peer_certificates().unwrap().to_vec();
    assert_eq!(presented.len(), 2);
    assert_eq!(agentkeys_enclave::tls::chain::to_pem(&presented), served);
}

/// A fake CA on loopback TLS that answers every request with a 500 problem document, or
/// (`stall`) accepts connections and never answers; counts requests (connections when
/// stalling).
async fn fake_ca(dir: &tempfile::TempDir, stall: bool) -> (String, PathBuf, Arc<AtomicUsize>) {
    use rcgen::{CertificateParams, KeyPair, SanType};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let cert = params.self_signed(&key).unwrap();
    let root = dir.path().join(if stall { "stall.pem" } else { "err.pem" });
    std::fs::write(&root, cert.pem()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/dir", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            if stall {
                counter.fetch_add(1, Ordering::SeqCst);
                // Accepts and never answers.
                held.push(tcp);
                continue;
            }
            let acceptor = acceptor.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async {
                        let body = r#"{"type":"urn:ietf:params:acme:error:serverInternal","detail":"the CA is down","status":500}"#;
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(500)
                                .header("content-type", "application/problem+json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, root, seen)
}

async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_acme_server_that_errors_or_stalls_is_retried_while_serving_continues() {
    let dir = tempfile::tempdir().unwrap();
    for stall in [false, true] {
        let (url, root, seen) = fake_ca(&dir, stall).await;
        let (addr, tls, keys) = endpoint(config(&url, Some(root), fast())).await;
        tokio::spawn(agentkeys_enclave::tls::acme::run(tls.clone()));
        wait_for("a second attempt", || seen.load(Ordering::SeqCst) >= 2).await;
        let error = tls.last_error().expect("last_error is set");
        if stall {
            assert!(error.contains("no answer"), "{error}");
        } else {
            assert!(error.contains("the CA is down"), "{error}");
        }
        assert_eq!(tls.status().last_error.as_deref(), Some(error.as_str()));
        assert_eq!(tls.status().state, ISSUER_TLS_SELF_SIGNED);
        let stream = connect(addr, HOST, &[]).await.unwrap();
        assert_eq!(spki_sha256(&leaf(&stream)), keys.tls.spki_sha256());
        let (status, body) = get(stream, "GET", "/.well-known/jwks.json").await;
        assert_eq!((status.as_u16(), &body[..]), (200, JWKS));
    }
}

#[tokio::test]
async fn a_ca_url_off_the_directory_host_is_refused() {
    use agentkeys_enclave::tls::transport::AcmeHttp;
    let dir = validate_acme_directory("https://127.0.0.1:14000/dir", true).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (_, root, _) = fake_ca(&tmp, false).await;
    let http = AcmeHttp::loopback(
        provider(),
        &dir,
        &std::fs::read(root).unwrap(),
        Duration::from_secs(1),
    )
    .unwrap();
    for (url, ok) in [
        ("https://127.0.0.1:14000/acme/new-order", true),
        ("https://127.0.0.1:14001/acme/new-order", false),
        ("https://localhost:14000/acme/new-order", false),
        ("http://127.0.0.1:14000/acme/new-order", false),
        ("https://evil.example/acme", false),
        ("https://user@127.0.0.1:14000/acme", false),
    ] {
        assert_eq!(http.allowed(&url.parse().unwrap()), ok, "{url}");
    }
}

#[tokio::test]
async fn openssl_s_client_sees_the_attested_key_and_the_name_check() {
    let Ok(out) = std::process::Command::new("openssl")
        .arg("version")
        .output()
    else {
        println!("SKIPPED: openssl is not installed");
        return;
    };
    assert!(out.status.success());
    let (addr, _tls, keys) = plain().await;
    let run = |name: &'static str| {
        let addr = addr.to_string();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = std::process::Command::new("openssl")
                .args([
                    "s_client",
                    "-connect",
                    &addr,
                    "-servername",
                    name,
                    "-showcerts",
                ])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let _ = child.stdin.take().unwrap().write_all(b"");
            child.wait_with_output().unwrap()
        })
    };
    let good = run(HOST).await.unwrap();
    let text = String::from_utf8_lossy(&good.stdout).to_string();
    let pem = &text[text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate")..];
    let pem = &pem[..pem.find("-----END CERTIFICATE-----").unwrap() + 25];
    let mut reader = pem.as_bytes();
    let der = rustls_pemfile::certs(&mut reader).next().unwrap().unwrap();
    assert_eq!(spki_sha256(&der), keys.tls.spki_sha256());
    let bad = run("other.agentkeys.test").await.unwrap();
    let err = String::from_utf8_lossy(&bad.stderr).to_string();
    assert!(err.contains("unrecognized name"), "{err}");
}

#[tokio::test]
async fn stalled_clients_are_bounded_in_number_and_time() {
    let (addr, _tls, keys) = plain().await;
    let mut stalled = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        stalled.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Over the limit: closed at once, unanswered.
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(3), extra.read(&mut buf))
        .await
        .expect("a connection over the limit is closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // A client that never sends its ClientHello is closed after the handshake timeout.
    let started = Instant::now();
    let n = tokio::time::timeout(
        HANDSHAKE_TIMEOUT + Duration::from_secs(5),
        stalled[MAX_CONNECTIONS - 1].read(&mut buf),
    )
    .await
    .expect("a stalled client is closed")
    .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() + Duration::from_secs(1) >= HANDSHAKE_TIMEOUT);
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stream = connect(addr, HOST, &[]).await.unwrap();
    assert_eq!(spki_sha256(&leaf(&stream)), keys.tls.spki_sha256());
}
