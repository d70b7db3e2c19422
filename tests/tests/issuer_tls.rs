//! The issuer's TLS ends inside the enclave, end to end with the shipped binaries and a
//! real ACME CA (Pebble, validating TLS-ALPN-01 for real on the issuer port): clients we
//! did not write (curl, Python `urllib` with PyJWT, a Rust client) fetch the JWKS through
//! the parent's relay and verify a minted token; the relay carries TLS records only; a
//! parent serving its own certificate from its own ACME account is flagged by
//! `agentkeys-attest verify` and `watch`; restarts and a second enclave reuse the cached
//! chain, a foreign or expired cached chain is refused; a short-lived certificate is
//! renewed without a restart; bad input on the relay harms nobody else.
//!
//! Each test prints `SKIPPED: <reason>` and returns when Pebble is not installed, and
//! fails instead under `AGENTKEYS_REQUIRE_PEBBLE=1` (CI).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentkeys_attestation::tls_leaf::TlsLeaf;
use agentkeys_e2e::issuer_tls::{
    skip_reason, IssuerOptions, IssuerStack, ISSUER_HOST, ISSUE_TIMEOUT,
};
use agentkeys_e2e::{binary, wait_for};

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Starts the stack and waits for its first certificate; `None` when Pebble is missing.
fn issued_stack(options: IssuerOptions) -> Option<IssuerStack> {
    if skip_reason().is_some() {
        return None;
    }
    let mut stack = IssuerStack::start(&options).expect("issuer stack starts");
    stack
        .host
        .wait_issued(&http(), ISSUE_TIMEOUT)
        .expect("a first certificate");
    Some(stack)
}

/// `GET path` on the issuer at `ip`: status, body and the TLS leaf presented.
fn get(stack: &IssuerStack, ip: &str, path: &str) -> (u16, Vec<u8>, TlsLeaf) {
    let client = stack.client(ip, true).unwrap();
    let url = format!("{}{path}", stack.issuer());
    let logs = || stack.host.logs();
    runtime().block_on(async move {
        let r = client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e:?}\n{}", logs()));
        let der = r
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate())
            .expect("the TLS leaf")
            .to_vec();
        let status = r.status().as_u16();
        let body = r.bytes().await.unwrap().to_vec();
        (status, body, TlsLeaf::from_der(&der).unwrap())
    })
}

fn resolve_arg(stack: &IssuerStack, ip: &str) -> String {
    format!("{ISSUER_HOST}:{}:{ip}", stack.tls_port)
}

/// The mock image's PCR0, PCR1 and PCR2 as `agentkeys-attest --pcr` flags.
fn pcr_flags() -> Vec<String> {
    agentkeys_mock_nsm::default_boot_pcrs()
        .into_iter()
        .filter(|(i, _)| *i <= 2)
        .flat_map(|(i, v)| ["--pcr".to_string(), format!("{i}={}", hex::encode(v))])
        .collect()
}

/// A nitro-cli measurements file with the mock image's PCR0-2, PCR0 replaced by
/// `pcr0` when given.
fn measurements_file(stack: &IssuerStack, pcr0: Option<&str>) -> PathBuf {
    let mut m = serde_json::Map::new();
    m.insert("HashAlgorithm".into(), "Sha384 { ... }".into());
    for (i, v) in agentkeys_mock_nsm::default_boot_pcrs() {
        if i <= 2 {
            m.insert(format!("PCR{i}"), hex::encode(v).into());
        }
    }
    if let Some(p) = pcr0 {
        m.insert("PCR0".into(), p.into());
    }
    let path = stack
        .dir
        .path()
        .join(format!("measurements-{}.json", pcr0.is_some()));
    std::fs::write(&path, serde_json::json!({ "Measurements": m }).to_string()).unwrap();
    path
}

/// `agentkeys-attest verify --issuer` against the stack, trusting Pebble and the mock root.
fn attest_verify(stack: &IssuerStack) -> std::process::Output {
    let mut cmd = Command::new(binary("agentkeys-attest"));
    cmd.args(["verify", "--issuer", &stack.issuer()])
        .arg("--cacert")
        .arg(&stack.issuing_root)
        .args(["--resolve", &resolve_arg(stack, "127.0.0.1")])
        .arg("--root")
        .arg(&stack.mock_root)
        .arg("--allow-mock-root")
        .args(pcr_flags());
    cmd.output().unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn curl_python_and_rust_clients_fetch_the_jwks_through_the_relay_and_verify_a_minted_token() {
    let Some(stack) = issued_stack(IssuerOptions::default()) else {
        return;
    };
    let issuer = stack.issuer();
    let jwt = stack.host.mint(&stack.shared, &http()).unwrap();

    // curl, trusting only Pebble's root.
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(&stack.issuing_root)
        .args(["--resolve", &resolve_arg(&stack, "127.0.0.1")])
        .arg(format!("{issuer}/.well-known/jwks.json"))
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "{}", text(&out));
    let jwks_curl = out.stdout;

    // Python's urllib with Pebble's root as the CA bundle, and PyJWT.
    let script = r#"
import json, socket, ssl, sys, urllib.request
import jwt
host, port, issuer, cafile, token = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
real = socket.getaddrinfo
def lookup(name, *args, **kwargs):
    return real("127.0.0.1" if name == host else name, *args, **kwargs)
socket.getaddrinfo = lookup
context = ssl.create_default_context(cafile=cafile)
with urllib.request.urlopen(issuer + "/.well-known/jwks.json", context=context) as r:
    jwks = json.load(r)
kid = jwt.get_unverified_header(token)["kid"]
key = [k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id == kid][0]
claims = jwt.decode(token, key.key, algorithms=["ES256"], audience="sts.amazonaws.com", issuer=issuer)
print(claims["sub"])
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args([ISSUER_HOST, &stack.tls_port.to_string(), &issuer])
        .arg(&stack.issuing_root)
        .arg(&jwt)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("agentkeys:agent:{}", agentkeys_e2e::WALLET)
    );

    // A Rust client (reqwest over rustls, Pebble's root only) and jsonwebtoken.
    let (status, jwks_rust, leaf) = get(&stack, "127.0.0.1", "/.well-known/jwks.json");
    assert_eq!(status, 200);
    assert_eq!(
        jwks_rust, jwks_curl,
        "every client is served the same JWKS bytes"
    );
    assert!(leaf.issuer.contains("Pebble"), "{}", leaf.describe());
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&jwks_rust).unwrap();
    let kid = jsonwebtoken::decode_header(&jwt).unwrap().kid.unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(set.find(&kid).expect("kid")).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["sts.amazonaws.com"]);
    validation.set_issuer(&[issuer.as_str()]);
    jsonwebtoken::decode::<serde_json::Value>(&jwt, &key, &validation).expect("the token verifies");

    // The CAA record from the attested account; not from another image.
    let caa_record = |measurements: &Path| {
        Command::new(binary("agentkeys-broker"))
            .args(["caa-record", "--issuer", &issuer])
            .arg("--cacert")
            .arg(&stack.issuing_root)
            .args(["--resolve", &resolve_arg(&stack, "127.0.0.1")])
            .arg("--root")
            .arg(&stack.mock_root)
            .arg("--allow-mock-root")
            .arg("--measurements")
            .arg(measurements)
            .output()
            .unwrap()
    };
    let out = caa_record(&measurements_file(&stack, Some(&"55".repeat(48))));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("failed verification"),
        "{}",
        text(&out)
    );
    let out = caa_record(&measurements_file(&stack, None));
    assert!(out.status.success(), "{}", text(&out));
    let tls = stack.host.readyz(&http()).unwrap()["issuer_tls"].clone();
    let account = tls["acme_account_uri"].as_str().expect("account URI");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{ISSUER_HOST}. CAA 0 issue \"letsencrypt.org; accounturi={account}; validationmethods=tls-alpn-01\"")
    );
    // The leaf's key is the one the enclave attests; the auditor's tool agrees.
    assert_eq!(tls["tls_spki_sha256"], leaf.spki_sha256_hex());
    let out = attest_verify(&stack);
    assert!(out.status.success(), "{}", text(&out));
}

/// One relayed connection as the recording proxy saw it.
#[derive(Default)]
struct Recorded {
    to_enclave: Vec<u8>,
    from_enclave: Vec<u8>,
}

/// A Unix-socket proxy between the relay and the enclave's TLS socket that records both
/// directions of every connection.
struct RecordingProxy {
    connections: Arc<Mutex<Vec<Arc<Mutex<Recorded>>>>>,
}

impl RecordingProxy {
    fn start(listen: &Path, upstream: PathBuf) -> RecordingProxy {
        let listener = UnixListener::bind(listen).unwrap();
        let connections: Arc<Mutex<Vec<Arc<Mutex<Recorded>>>>> = Arc::default();
        let all = connections.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(enclave) = UnixStream::connect(&upstream) else {
                    continue;
                };
                let rec = Arc::new(Mutex::new(Recorded::default()));
                all.lock().unwrap().push(rec.clone());
                let pipe = |mut from: UnixStream, mut to: UnixStream, up: bool| {
                    let rec = rec.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            let mut r = rec.lock().unwrap();
                            let side = if up {
                                &mut r.to_enclave
                            } else {
                                &mut r.from_enclave
                            };
                            side.extend_from_slice(&buf[..n]);
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                };
                pipe(
                    client.try_clone().unwrap(),
                    enclave.try_clone().unwrap(),
                    true,
                );
                pipe(enclave, client, false);
            }
        });
        RecordingProxy { connections }
    }
}

/// The TLS records of one direction of a connection (RFC 8446 §5.1; TLS 1.2 framing is
/// the same): `(content type, legacy version, length)`, or why the bytes are not TLS.
fn tls_records(bytes: &[u8]) -> Result<Vec<(u8, u16, usize)>, String> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let head = bytes
            .get(at..at + 5)
            .ok_or_else(|| format!("a truncated record header at {at}"))?;
        let (kind, version) = (head[0], u16::from_be_bytes([head[1], head[2]]));
        let len = usize::from(u16::from_be_bytes([head[3], head[4]]));
        if !(20..=23).contains(&kind) {
            return Err(format!("content type {kind} at {at}"));
        }
        if version != 0x0301 && version != 0x0303 {
            return Err(format!("legacy version {version:#06x} at {at}"));
        }
        // RFC 8446 §5.2: a record is at most 2^14 + 256 bytes of ciphertext.
        if len > (1 << 14) + 256 {
            return Err(format!("a record of {len} bytes at {at}"));
        }
        if bytes.len() < at + 5 + len {
            return Err(format!("a truncated record at {at}"));
        }
        records.push((kind, version, len));
        at += 5 + len;
    }
    Ok(records)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_relay_carries_tls_records_only_and_the_parent_cannot_reach_the_tls_key() {
    if skip_reason().is_some() {
        return;
    }
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy_socket = proxy_dir.path().join("recorder.sock");
    let mut stack = IssuerStack::start(&IssuerOptions {
        relay_to: Some(proxy_socket.clone()),
        ..IssuerOptions::default()
    })
    .unwrap();
    let proxy = RecordingProxy::start(&proxy_socket, stack.host.tls_socket());
    stack.host.wait_issued(&http(), ISSUE_TIMEOUT).unwrap();
    let mut jwks = Vec::new();
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/jwks.json",
        "/.well-known/nitro-attestation?nonce=00112233",
        "/.well-known/jwks.json",
    ] {
        let (status, body, _) = get(&stack, "127.0.0.1", path);
        assert_eq!(status, 200, "{path}");
        if path.ends_with("jwks.json") {
            jwks = body;
        }
    }
    let connections = proxy.connections.lock().unwrap();
    // Pebble's validation connection(s) and our four.
    assert!(connections.len() >= 4, "{} connections", connections.len());
    let x: serde_json::Value = serde_json::from_slice(&jwks).unwrap();
    let coordinate = x["keys"][0]["x"].as_str().unwrap().to_string();
    let mut application_data = 0;
    for (i, c) in connections.iter().enumerate() {
        let c = c.lock().unwrap();
        for (dir, bytes) in [
            ("to the enclave", &c.to_enclave),
            ("from the enclave", &c.from_enclave),
        ] {
            let records =
                tls_records(bytes).unwrap_or_else(|e| panic!("connection {i} {dir}: not TLS: {e}"));
            application_data += records.iter().filter(|r| r.0 == 23).count();
            assert!(
                !contains(bytes, b"HTTP/1.1"),
                "connection {i} {dir}: HTTP in clear"
            );
            assert!(
                !contains(bytes, &jwks),
                "connection {i} {dir}: the JWKS in clear"
            );
            assert!(
                !contains(bytes, coordinate.as_bytes()),
                "connection {i} {dir}: a JWKS key in clear"
            );
            assert!(
                !contains(bytes, b"well-known"),
                "connection {i} {dir}: a path in clear"
            );
        }
    }
    assert!(
        application_data >= 8,
        "{application_data} application_data records"
    );

    // The broker has no dependency path to the enclave crate, whose code derives the TLS
    // key, and its binary holds none of the key-derivation labels.
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "tree",
            "-p",
            "agentkeys-broker",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("agentkeys-wire"), "{tree}");
    assert!(!tree.contains("agentkeys-enclave"), "{tree}");
    let broker = std::fs::read(binary("agentkeys-broker")).unwrap();
    for label in [&b"tls/issuer/v1"[..], b"acme/account/v1"] {
        assert!(
            !contains(&broker, label),
            "{}",
            String::from_utf8_lossy(label)
        );
    }
    let enclave = std::fs::read(binary("agentkeys-enclave")).unwrap();
    assert!(
        contains(&enclave, b"tls/issuer/v1"),
        "the label check can fail"
    );
}

/// A TLS server on `listener` answering `acme-tls/1` with the RFC 8737 challenge
/// certificate for `digest` (a key of its own), until aborted.
fn answer_tls_alpn(
    listener: tokio::net::TcpListener,
    provider: Arc<rustls::crypto::CryptoProvider>,
    digest: &[u8],
) -> tokio::task::JoinHandle<()> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![ISSUER_HOST.to_string()]).unwrap();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).unwrap();
    // The challenge certificate's critical acmeIdentifier extension is one rustls's own
    // certificate check refuses (as a client would): load it without that check.
    let signer = provider
        .key_provider
        .load_private_key(rustls::pki_types::PrivateKeyDer::Pkcs8(
            key.serialize_der().into(),
        ))
        .unwrap();
    let certified = rustls::sign::CertifiedKey::new(vec![cert.der().clone()], signer);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    })
}

/// The hostile parent's own certificate for the issuer host: its own ACME account (a
/// fresh random key) at Pebble, TLS-ALPN-01 answered by its own server on the issuer
/// port, really validated by Pebble. Returns the chain (PEM) and its key (PKCS#8 DER).
async fn hostile_certificate(
    pebble: &agentkeys_e2e::issuer_tls::Pebble,
    listen: &str,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> (String, Vec<u8>) {
    use instant_acme::{
        Account, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
    };
    let directory =
        agentkeys_enclave::config::validate_acme_directory(&pebble.directory, true).unwrap();
    let root = std::fs::read(&pebble.listener_root).unwrap();
    let http = agentkeys_enclave::tls::transport::AcmeHttp::loopback(
        provider.clone(),
        &directory,
        &root,
        Duration::from_secs(10),
    )
    .unwrap();
    let (account, _) = Account::builder_with_http(Box::new(http))
        .create(
            &NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            pebble.directory.clone(),
            None,
        )
        .await
        .expect("the hostile parent's own ACME account");
    let identifiers = [Identifier::Dns(ISSUER_HOST.to_string())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .unwrap();
    let mut answering = Vec::new();
    {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.unwrap();
            let mut challenge = authz
                .challenge(ChallengeType::TlsAlpn01)
                .expect("tls-alpn-01");
            let digest = challenge.key_authorization().digest();
            let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
            answering.push(answer_tls_alpn(listener, provider.clone(), digest.as_ref()));
            challenge.set_ready().await.unwrap();
        }
    }
    let retry = RetryPolicy::new().timeout(Duration::from_secs(30));
    let status = order.poll_ready(&retry).await.unwrap();
    assert_eq!(status, OrderStatus::Ready, "{:?}", order.state().error);
    for task in answering {
        task.abort();
        let _ = task.await;
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec![ISSUER_HOST.to_string()])
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    order.finalize_csr(csr.der()).await.unwrap();
    let chain = order.poll_certificate(&retry).await.unwrap();
    (chain, key.serialize_der())
}

/// The hostile parent's issuer: its own certificate, and the genuine JWKS and fresh
/// attestations (it asks the enclave over the wire, as the broker does), so that only
/// the TLS key gives it away.
fn serve_hostile_issuer(
    listener: tokio::net::TcpListener,
    provider: Arc<rustls::crypto::CryptoProvider>,
    chain_pem: &str,
    key_der: Vec<u8>,
    issuer: String,
    jwks: Vec<u8>,
    enclave: PathBuf,
) -> tokio::task::JoinHandle<()> {
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            chain,
            rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let client = agentkeys_wire::EnclaveClient::new(
        agentkeys_wire::Address::Unix(enclave),
        1,
        Duration::from_secs(10),
    );
    let state = Arc::new((issuer, jwks, client));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let state = state.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move {
                            let (issuer, jwks, client) = &*state;
                            let body = match req.uri().path() {
                                "/.well-known/openid-configuration" => {
                                    agentkeys_broker::http::discovery_document(issuer)
                                        .to_string()
                                        .into_bytes()
                                }
                                "/.well-known/jwks.json" => jwks.clone(),
                                "/.well-known/nitro-attestation" => {
                                    let nonce = req
                                        .uri()
                                        .query()
                                        .and_then(|q| q.strip_prefix("nonce="))
                                        .and_then(|h| hex::decode(h).ok());
                                    match client.attest(nonce.clone()).await {
                                        Ok(a) => agentkeys_broker::enclave::attestation_json(
                                            &a,
                                            nonce.as_deref(),
                                            true,
                                        )
                                        .to_string()
                                        .into_bytes(),
                                        Err(e) => e.to_string().into_bytes(),
                                    }
                                }
                                _ => {
                                    return Ok::<_, std::convert::Infallible>(
                                        hyper::Response::builder()
                                            .status(404)
                                            .body(http_body_util::Full::new(
                                                bytes::Bytes::from_static(
                                                    b"{\"error\":\"not_found\"}",
                                                ),
                                            ))
                                            .unwrap(),
                                    )
                                }
                            };
                            Ok(hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                                .unwrap())
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    })
}

#[test]
fn a_parent_serving_its_own_certificate_is_flagged_by_verify_and_watch() {
    let Some(mut stack) = issued_stack(IssuerOptions::default()) else {
        return;
    };
    let (_, jwks, genuine) = get(&stack, "127.0.0.1", "/.well-known/jwks.json");
    let watch_log = stack.dir.path().join("watch.log");
    let mut watch = Command::new(binary("agentkeys-attest"));
    watch
        .args([
            "watch",
            "--issuer",
            &stack.issuer(),
            "--interval",
            "1",
            "--exit-on-change",
        ])
        .arg("--cacert")
        .arg(&stack.issuing_root)
        .args(["--resolve", &resolve_arg(&stack, "127.0.0.1")])
        .arg("--root")
        .arg(&stack.mock_root)
        .arg("--allow-mock-root")
        .args(pcr_flags())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&watch_log).unwrap())
        .stderr(Stdio::inherit());
    let mut watch = watch.spawn().unwrap();
    // The watch's first check is its baseline: the genuine issuer.
    wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(&watch_log)
            .ok()
            .filter(|t| t.lines().count() >= 2)
    })
    .expect("the watch checks the genuine issuer");

    // The parent takes the issuer port back and gets its own certificate.
    stack.host.kill_broker();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let rt = runtime();
    let listen = format!("127.0.0.1:{}", stack.tls_port);
    let (chain, key) = rt.block_on(hostile_certificate(
        &stack.pebble,
        &listen,
        provider.clone(),
    ));
    let listener = rt.block_on(tokio::net::TcpListener::bind(&listen)).unwrap();
    let _server = {
        let _guard = rt.enter();
        serve_hostile_issuer(
            listener,
            provider,
            &chain,
            key,
            stack.issuer(),
            jwks.clone(),
            stack.host.socket(),
        )
    };
    let (status, served, hostile) = get(&stack, "127.0.0.1", "/.well-known/jwks.json");
    assert_eq!(
        (status, served),
        (200, jwks),
        "the hostile parent serves the genuine JWKS"
    );
    assert!(
        hostile.issuer.contains("Pebble"),
        "a WebPKI-valid certificate: {}",
        hostile.describe()
    );
    assert_ne!(hostile.spki_sha256, genuine.spki_sha256);

    let out = attest_verify(&stack);
    assert!(!out.status.success(), "{}", text(&out));
    let report = text(&out);
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("tls_key") && l.contains("FAIL")),
        "{report}"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "watch did not alert: {}",
            std::fs::read_to_string(&watch_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(&watch_log).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("ALERT"), "{log}");
    assert!(log.contains("tls_key"), "{log}");
}

/// The value of the unlabelled metric `name` of `host`'s broker.
fn metric(host: &agentkeys_e2e::issuer_tls::IssuerHost, name: &str) -> Option<f64> {
    let text = http()
        .get(format!("{}/metrics", host.mint_url))
        .send()
        .ok()?
        .text()
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Restarts `host`'s enclave and waits until the broker has unsealed the new one.
fn restart_enclave(stack: &mut IssuerStack) {
    let before = metric(&stack.host, "agentkeys_enclave_unseals_total").unwrap();
    stack.host.kill_enclave();
    stack
        .host
        .start_enclave(&stack.shared, &stack.pebble)
        .unwrap();
    wait_for(ISSUE_TIMEOUT, || {
        metric(&stack.host, "agentkeys_enclave_unseals_total").filter(|n| *n > before)
    })
    .unwrap_or_else(|_| panic!("the broker unseals the new enclave\n{}", stack.host.logs()));
}

/// The leaf the issuer at `ip` presents now.
fn leaf(stack: &IssuerStack, ip: &str) -> TlsLeaf {
    get(stack, ip, "/.well-known/openid-configuration").2
}

#[test]
fn restarts_and_a_second_enclave_reuse_the_cached_chain_and_a_foreign_one_is_refused() {
    let Some(mut stack) = issued_stack(IssuerOptions::default()) else {
        return;
    };
    let http = http();
    let first = leaf(&stack, "127.0.0.1");
    let account = stack.host.readyz(&http).unwrap()["issuer_tls"]["acme_account_uri"].clone();
    let cached = std::fs::read_to_string(stack.host.chain_cache()).expect("the chain is cached");
    assert!(cached.contains("BEGIN CERTIFICATE"));
    let issued = stack.issued_count();
    assert_eq!(issued, 1);

    // The enclave restarts: the broker re-unseals and hands it the cached chain.
    restart_enclave(&mut stack);
    let after = stack
        .host
        .wait_issuer_tls(&http, ISSUE_TIMEOUT, |t| {
            t["state"] == "issued" && t["cached_chain_refused"].is_null()
        })
        .unwrap();
    assert_eq!(after["tls_spki_sha256"], first.spki_sha256_hex());
    let again = leaf(&stack, "127.0.0.1");
    assert_eq!(again.cert_sha256, first.cert_sha256, "the same certificate");

    // A second enclave from the same sealed seed, on another address, with a copy of the
    // cache: the same key and certificate, and no new order.
    let mut second = stack.host("host2", "127.0.0.2").unwrap();
    std::fs::copy(stack.host.sealed_seed(), second.sealed_seed()).unwrap();
    std::fs::copy(stack.host.chain_cache(), second.chain_cache()).unwrap();
    second.start_enclave(&stack.shared, &stack.pebble).unwrap();
    second.start_broker(&stack.shared, None, &[]).unwrap();
    let status = second.wait_issued(&http, ISSUE_TIMEOUT).unwrap();
    assert_eq!(status["tls_spki_sha256"], first.spki_sha256_hex());
    let theirs = leaf(&stack, "127.0.0.2");
    assert_eq!(theirs.cert_sha256, first.cert_sha256);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        stack.issued_count(),
        issued,
        "no certificate was ordered for a restart"
    );
    for ip in ["127.0.0.1", "127.0.0.2"] {
        let (status, body, _) = get(&stack, ip, "/.well-known/acme-account");
        if status == 200 && !account.is_null() {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["account_uri"], account, "{ip}: the same ACME account");
        }
    }
    second.kill_broker();
    second.kill_enclave();

    // A cached chain for another key is refused and reported, and a new one is ordered.
    let other = rcgen::KeyPair::generate().unwrap();
    let foreign = rcgen::CertificateParams::new(vec![ISSUER_HOST.to_string()])
        .unwrap()
        .self_signed(&other)
        .unwrap()
        .pem();
    std::fs::write(stack.host.chain_cache(), &foreign).unwrap();
    restart_enclave(&mut stack);
    stack.host.kill_enclave();
    stack
        .host
        .start_enclave(&stack.shared, &stack.pebble)
        .unwrap();
    let refused = stack
        .host
        .wait_issuer_tls(&http, ISSUE_TIMEOUT, |t| {
            !t["cached_chain_refused"].is_null()
        })
        .unwrap();
    assert!(
        refused["cached_chain_refused"].as_str().unwrap().len() > 10,
        "{refused}"
    );
    assert!(stack.host.logs().contains("refused the cached chain"));
    stack.host.wait_issued(&http, ISSUE_TIMEOUT).unwrap();
    let renewed = leaf(&stack, "127.0.0.1");
    assert_ne!(renewed.cert_sha256, first.cert_sha256, "a new certificate");
    assert_eq!(renewed.spki_sha256, first.spki_sha256, "for the same key");
    assert!(stack.issued_count() > issued);
    wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(stack.host.chain_cache())
            .ok()
            .filter(|c| *c != foreign)
    })
    .expect("the new chain replaces the foreign one in the cache");
}

#[test]
fn a_short_lived_certificate_is_renewed_without_a_restart() {
    let Some(stack) = issued_stack(IssuerOptions {
        validity_seconds: Some(40),
        ..IssuerOptions::default()
    }) else {
        return;
    };
    let first = leaf(&stack, "127.0.0.1");
    let renewed = wait_for(Duration::from_secs(60), || {
        let now = leaf(&stack, "127.0.0.1");
        (now.cert_sha256 != first.cert_sha256).then_some(now)
    })
    .expect("a renewed certificate within 60 s");
    assert_ne!(renewed.serial_hex, first.serial_hex);
    assert_eq!(renewed.spki_sha256, first.spki_sha256, "the same key");
    assert!(renewed.not_after_ms > first.not_after_ms);
}

fn closed_without_answer(mut s: TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn garbage_silence_and_a_flood_over_the_cap_leave_the_relay_and_the_enclave_serving() {
    let Some(stack) = issued_stack(IssuerOptions {
        broker_extra: vec!["--issuer-max-connections".into(), "8".into()],
        ..IssuerOptions::default()
    }) else {
        return;
    };
    let addr = format!("127.0.0.1:{}", stack.tls_port);
    // Garbage: the enclave closes that connection.
    let mut garbage = TcpStream::connect(&addr).unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff garbage")
        .unwrap();
    let mut out = Vec::new();
    garbage
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let _ = garbage.read_to_end(&mut out);
    assert!(
        !contains(&out, b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // Silence: held open, harmless to others.
    let silent: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    assert_eq!(get(&stack, "127.0.0.1", "/.well-known/jwks.json").0, 200);
    // A flood: past the cap, connections are closed at once.
    // Held connections fill the cap (topped up should any close meanwhile).
    let mut held: Vec<TcpStream> = Vec::new();
    wait_for(Duration::from_secs(10), || {
        let open = metric(&stack.host, "agentkeys_issuer_relay_open")?;
        if open >= 8.0 {
            return Some(());
        }
        held.push(TcpStream::connect(&addr).ok()?);
        None
    })
    .unwrap_or_else(|_| panic!("the cap fills\n{}", stack.host.logs()));
    let over: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let closed = over
        .into_iter()
        .filter(|_| true)
        .map(closed_without_answer)
        .filter(|c| *c)
        .count();
    assert_eq!(closed, 20, "every connection over the cap is closed");
    let refused = metric(&stack.host, "agentkeys_issuer_relay_refused_total").unwrap();
    assert!(refused >= 20.0, "{refused}");
    // Once the flood's holders leave, the issuer serves again.
    held.clear();
    drop(silent);
    let ok = wait_for(Duration::from_secs(10), || {
        let client = stack.client("127.0.0.1", true).ok()?;
        let url = format!("{}/.well-known/jwks.json", stack.issuer());
        runtime()
            .block_on(async move {
                client
                    .get(&url)
                    .send()
                    .await
                    .ok()
                    .map(|r| r.status().as_u16())
            })
            .filter(|s| *s == 200)
    });
    assert!(ok.is_ok(), "{}", stack.host.logs());
    assert!(stack.host.readyz(&http()).unwrap()["checks"]["enclave"]["ok"] == true);
}
