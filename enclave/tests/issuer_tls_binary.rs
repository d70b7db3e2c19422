//! The shipped `agentkeys-enclave` binary (mock NSM, Unix sockets, KMS stand-in) with
//! `--acme-directory`: after unseal its issuer TLS endpoint presents the key whose SPKI
//! hash the JWKS attestation states, serves the JWKS it attests, and reports its state
//! (and a CA it cannot reach) through the `IssuerTls` request.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agentkeys_attestation::{verify, Policy, TrustAnchor};
use agentkeys_wire::{
    Address, AwsCredentials, EnclaveClient, IssuerTlsRequest, JwksStatement, Request, Response,
    UnsealRequest, ISSUER_TLS_SELF_SIGNED,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::ServerName;
use sha2::{Digest, Sha256};

mod support;

const HOST: &str = "issuer.agentkeys.test";
const KEY_ARN: &str = "arn:aws:kms:us-east-1:000000000000:key/6b1d2f0e-3c4a-4e5f-8a9b-0c1d2e3f4a5b";

struct Enclave {
    child: Child,
    wire: PathBuf,
    tls: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Enclave {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_socket(child: &mut Child, path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() || std::os::unix::net::UnixStream::connect(path).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "enclave exited early");
        assert!(
            Instant::now() < deadline,
            "{} never listened",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start(directory: &str, root: &Path) -> Enclave {
    let dir = tempfile::tempdir().unwrap();
    let wire = dir.path().join("enclave.sock");
    let tls = dir.path().join("issuer-tls.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentkeys-enclave"))
        .args(["--mock", "--auth-mode", "parent-vouched"])
        .arg("--usock")
        .arg(&wire)
        .arg("--tls-usock")
        .arg(&tls)
        .args(["--issuer", &format!("https://{HOST}")])
        .args(["--kms-key-arn", KEY_ARN])
        .args(["--acme-directory", directory])
        .arg("--acme-root")
        .arg(root)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_socket(&mut child, &wire);
    wait_socket(&mut child, &tls);
    Enclave {
        child,
        wire,
        tls,
        _dir: dir,
    }
}

async fn start_kms() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = agentkeys_mock_nsm::kms::KmsConfig::new();
    tokio::spawn(async move {
        let _ = agentkeys_mock_nsm::kms::serve(listener, config).await;
    });
    url
}

/// A self-signed root in `dir` for `--acme-root`: the tests' CA is never reached, so any
/// root will do.
fn unused_root(dir: &std::path::Path) -> std::path::PathBuf {
    let root = dir.join("root.pem");
    let ca = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&ca)
        .unwrap();
    std::fs::write(&root, cert.pem()).unwrap();
    root
}

/// An unseal through the KMS stand-in at `endpoint`: a first one (no `sealed_seed`) makes
/// the seed, a later one opens `sealed_seed`.
fn unseal_request(endpoint: &str, sealed_seed: Option<Vec<u8>>) -> Request {
    Request::Unseal(UnsealRequest {
        region: "us-east-1".into(),
        kms_key_id: KEY_ARN.into(),
        kms_endpoint: Some(endpoint.to_string()),
        credentials: AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "mock-secret".into(),
            session_token: None,
        },
        sealed_seed,
    })
}

async fn get_over_tls(socket: &Path, path: &str) -> (Vec<u8>, Vec<u8>) {
    let unix = tokio::net::UnixStream::connect(socket).await.unwrap();
    let stream = support::client(&[b"http/1.1"])
        .connect(ServerName::try_from(HOST).unwrap(), unix)
        .await
        .unwrap();
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .header("host", HOST)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (leaf, body.to_vec())
}

fn spki_sha256(der: &[u8]) -> [u8; 32] {
    use der::{Decode, Encode};
    let c = x509_cert::Certificate::from_der(der).unwrap();
    Sha256::digest(c.tbs_certificate.subject_public_key_info.to_der().unwrap()).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attested_tls_key_is_the_one_the_handshake_presents() {
    let kms = start_kms().await;
    let dir = tempfile::tempdir().unwrap();
    // A CA that is not there: the enclave keeps its self-signed certificate and says why.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let directory = format!("https://{}/dir", closed.local_addr().unwrap());
    drop(closed);
    let root = unused_root(dir.path());
    let enclave = start(&directory, &root);
    let client = EnclaveClient::new(
        Address::Unix(enclave.wire.clone()),
        1,
        Duration::from_secs(60),
    );

    // Sealed: no key, so the handshake is refused and the status request too.
    let unix = tokio::net::UnixStream::connect(&enclave.tls).await.unwrap();
    let refused = support::client(&[])
        .connect(ServerName::try_from(HOST).unwrap(), unix)
        .await;
    assert!(refused.is_err());
    assert!(client
        .call(Request::IssuerTls(IssuerTlsRequest::default()))
        .await
        .is_err());

    assert!(matches!(
        client.call(unseal_request(&kms, None)).await.unwrap(),
        Response::Unsealed(_)
    ));
    let attestation = match client.call(Request::Attest { nonce: None }).await.unwrap() {
        Response::Attestation(a) => a,
        other => panic!("{other:?}"),
    };
    let anchor =
        TrustAnchor::mock_root_explicitly_trusted(&agentkeys_mock_nsm::mock_root_pem()).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let verified = verify(&attestation.document, &anchor, now_ms, &Policy::default()).unwrap();
    let statement = JwksStatement::decode_attested(
        verified.document.user_data.as_deref().unwrap(),
        &attestation.statement,
    )
    .unwrap();

    let (leaf, jwks) = get_over_tls(&enclave.tls, "/.well-known/jwks.json").await;
    assert_eq!(spki_sha256(&leaf), statement.tls_spki_sha256);
    assert_eq!(jwks, attestation.jwks);
    assert_eq!(Sha256::digest(&jwks)[..], statement.jwks_sha256[..]);
    let (_, body) = get_over_tls(&enclave.tls, "/.well-known/nitro-attestation").await;
    let served: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        served["statement"]["tls_spki_sha256"],
        hex::encode(statement.tls_spki_sha256)
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = match client
            .call(Request::IssuerTls(IssuerTlsRequest {
                cached_chain_pem: Some("not a chain".into()),
            }))
            .await
            .unwrap()
        {
            Response::IssuerTls(s) => s,
            other => panic!("{other:?}"),
        };
        if status.last_error.is_some() || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.enabled);
    assert_eq!(status.hostname, HOST);
    assert_eq!(status.state, ISSUER_TLS_SELF_SIGNED);
    assert_eq!(
        status.tls_spki_sha256,
        hex::encode(statement.tls_spki_sha256)
    );
    assert_eq!(status.chain_pem, None);
    assert!(status.cached_chain_refused.unwrap().contains("not PEM"));
    let error = status.last_error.expect("the unreachable CA is reported");
    assert!(error.contains(&directory), "{error}");
}

async fn issuer_tls_status(client: &EnclaveClient) -> agentkeys_wire::IssuerTlsStatus {
    match client
        .call(Request::IssuerTls(IssuerTlsRequest::default()))
        .await
        .unwrap()
    {
        Response::IssuerTls(s) => s,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_the_same_sealed_seed_presents_the_same_tls_key() {
    let kms = start_kms().await;
    let dir = tempfile::tempdir().unwrap();
    let root = unused_root(dir.path());
    let directory = "https://127.0.0.1:9/dir";
    let first = start(directory, &root);
    let client = EnclaveClient::new(
        Address::Unix(first.wire.clone()),
        1,
        Duration::from_secs(60),
    );
    let sealed = match client.call(unseal_request(&kms, None)).await.unwrap() {
        Response::Unsealed(u) => u.sealed_seed,
        other => panic!("{other:?}"),
    };
    let spki = issuer_tls_status(&client).await.tls_spki_sha256;
    let (leaf, _) = get_over_tls(&first.tls, "/.well-known/jwks.json").await;
    assert_eq!(hex::encode(spki_sha256(&leaf)), spki);
    drop(client);
    drop(first);

    let second = start(directory, &root);
    let client = EnclaveClient::new(
        Address::Unix(second.wire.clone()),
        1,
        Duration::from_secs(60),
    );
    assert!(matches!(
        client
            .call(unseal_request(&kms, Some(sealed)))
            .await
            .unwrap(),
        Response::Unsealed(_)
    ));
    assert_eq!(issuer_tls_status(&client).await.tls_spki_sha256, spki);
    let (leaf, _) = get_over_tls(&second.tls, "/.well-known/jwks.json").await;
    assert_eq!(hex::encode(spki_sha256(&leaf)), spki);

    // Another seed (a genesis on a third enclave) gives another key.
    let third = start(directory, &root);
    let client = EnclaveClient::new(
        Address::Unix(third.wire.clone()),
        1,
        Duration::from_secs(60),
    );
    client.call(unseal_request(&kms, None)).await.unwrap();
    assert_ne!(issuer_tls_status(&client).await.tls_spki_sha256, spki);
}
