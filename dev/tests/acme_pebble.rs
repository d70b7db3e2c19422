//! The enclave's ACME client against Pebble, a real RFC 8555 CA that validates
//! TLS-ALPN-01 for real: it resolves the issuer host (through its test DNS) to 127.0.0.1
//! and connects to the issuer TLS endpoint, which here listens on loopback TCP in place
//! of the parent's relay. Issuance, renewal with a short certificate lifetime, the same
//! key and account after a restart from the same seed, and clients we did not write
//! (reqwest with Pebble's root, curl --cacert, Python's ssl) verifying the served chain.
//!
//! Prints `SKIPPED: …` and passes when Pebble is not installed, unless
//! `AGENTKEYS_REQUIRE_PEBBLE=1`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkeys_dev::standins::pebble::{skip_reason, Pebble, PebbleOptions};
use agentkeys_enclave::config::{validate_acme_directory, IssuerTlsConfig};
use agentkeys_enclave::keys::Seed;
use agentkeys_enclave::tls::keys::IssuerTlsKeys;
use agentkeys_enclave::tls::server::{serve_with, IssuerSurface, Refusal};
use agentkeys_enclave::tls::{AcmeTiming, IssuerTls};
use agentkeys_wire::{Address, IssuerTlsStatus, ISSUER_TLS_ISSUED};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

const HOST: &str = "issuer.agentkeys.test";
const JWKS: &str = r#"{"keys":[]}"#;

struct Surface;

impl IssuerSurface for Surface {
    fn issuer(&self) -> String {
        format!("https://{HOST}")
    }
    fn jwks(&self) -> Result<Vec<u8>, Refusal> {
        Ok(JWKS.as_bytes().to_vec())
    }
    async fn attestation(&self, _nonce: Option<Vec<u8>>) -> Result<serde_json::Value, Refusal> {
        Ok(serde_json::json!({}))
    }
    async fn acme_account(&self, _nonce: Option<Vec<u8>>) -> Result<serde_json::Value, Refusal> {
        Ok(serde_json::json!({}))
    }
}

/// One enclave's issuer TLS, serving on `listener` and ordering from `pebble`.
struct Instance {
    tls: Arc<IssuerTls>,
    keys: Arc<IssuerTlsKeys>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn start(pebble: &Pebble, listener: TcpListener, cached: Option<&str>) -> Instance {
    let config = IssuerTlsConfig {
        listen: Address::Unix("/nonexistent".into()),
        hostname: HOST.into(),
        directory: validate_acme_directory(&pebble.directory, true).unwrap(),
        mock: true,
        acme_root: Some(pebble.listener_root.clone()),
        proxy_port: 8001,
        renew_before: None,
        contact: Some("mailto:ops@agentkeys.test".into()),
        timing: AcmeTiming {
            request_timeout: Duration::from_secs(10),
            order_deadline: Duration::from_secs(60),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(2),
            poll_initial: Duration::from_millis(200),
            // The test offers the cached chain itself, before the client runs.
            parent_offer_window: Duration::ZERO,
        },
    };
    let tls = Arc::new(IssuerTls::new(config));
    let keys = Arc::new(IssuerTlsKeys::derive(&Seed::from_slice(&[3; 32]).unwrap()).unwrap());
    tls.install_keys(keys.clone()).unwrap();
    if let Some(pem) = cached {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(
            tls.offer_cached(pem, now),
            None,
            "the cached chain is served"
        );
    }
    let listener = Arc::new(listener);
    let serve = tokio::spawn(serve_with(
        move || {
            let l = listener.clone();
            async move { l.accept().await.map(|(s, _)| s) }
        },
        tls.clone(),
        Arc::new(Surface),
    ));
    let acme = tokio::spawn(agentkeys_enclave::tls::acme::run(tls.clone()));
    Instance {
        tls,
        keys,
        tasks: vec![serve, acme],
    }
}

async fn wait_status(
    tls: &IssuerTls,
    what: &str,
    limit: Duration,
    ok: impl Fn(&IssuerTlsStatus) -> bool,
) -> IssuerTlsStatus {
    let deadline = Instant::now() + limit;
    loop {
        let status = tls.status();
        if ok(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spki_sha256(der: &[u8]) -> String {
    use der::{Decode, Encode};
    let c = x509_cert::Certificate::from_der(der).unwrap();
    hex::encode(Sha256::digest(
        c.tbs_certificate.subject_public_key_info.to_der().unwrap(),
    ))
}

/// GET the JWKS with reqwest trusting only Pebble's root, verifying the chain and the
/// name for real; returns the leaf's SPKI hash and the body.
async fn fetch(root_pem: &str, addr: SocketAddr) -> (String, String) {
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
        .resolve(HOST, addr)
        .tls_info(true)
        .build()
        .unwrap();
    let url = format!("https://{HOST}:{}/.well-known/jwks.json", addr.port());
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let info = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .unwrap()
        .clone();
    let body = response.text().await.unwrap();
    (spki_sha256(info.peer_certificate().unwrap()), body)
}

/// [`fetch`] of the test surface's JWKS: the leaf's SPKI hash.
async fn fetch_jwks(root_pem: &str, addr: SocketAddr) -> String {
    let (spki, body) = fetch(root_pem, addr).await;
    assert_eq!(body, JWKS);
    spki
}

/// [`fetch`] of a real enclave's JWKS (a JWKS of one P-256 key): the leaf's SPKI hash.
async fn fetch_jwks_of(root_pem: &str, addr: SocketAddr) -> String {
    let (spki, body) = fetch(root_pem, addr).await;
    let jwks: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(jwks["keys"][0]["crv"], "P-256");
    spki
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_issues_and_renews_and_a_restart_keeps_the_key_and_account() {
    if skip_reason().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pebble = Pebble::start(&PebbleOptions {
        tls_port: addr.port(),
        // Renewal at a third of the lifetime left: after about 20 s.
        certificate_validity_seconds: Some(30),
        dir: dir.path().to_path_buf(),
    })
    .unwrap();
    let root = pebble.issuing_root_pem().await.unwrap();
    let first = start(&pebble, listener, None);
    let issued = wait_status(&first.tls, "issuance", Duration::from_secs(60), |s| {
        s.state == ISSUER_TLS_ISSUED
    })
    .await;
    let spki = hex::encode(first.keys.tls.spki_sha256());
    assert_eq!(issued.tls_spki_sha256, spki);
    assert_eq!(issued.last_error, None);
    let account = issued.acme_account_uri.clone().expect("account URL");
    assert!(account.starts_with("https://127.0.0.1:"), "{account}");
    assert_eq!(fetch_jwks(&root, addr).await, spki);

    // curl (OpenSSL or GnuTLS) with Pebble's root as its only CA.
    let root_file = dir.path().join("issuing-root.pem");
    std::fs::write(&root_file, &root).unwrap();
    match std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--cacert"])
        .arg(&root_file)
        .args(["--resolve", &format!("{HOST}:{}:127.0.0.1", addr.port())])
        .arg(format!(
            "https://{HOST}:{}/.well-known/jwks.json",
            addr.port()
        ))
        .output()
    {
        Ok(out) => assert_served_the_jwks(&out),
        Err(e) => println!("curl not run: {e}"),
    }

    // Python's ssl module (OpenSSL) with Pebble's root as its only CA.
    let script = r#"
import socket, ssl, sys
host, port, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
with socket.create_connection(("127.0.0.1", port)) as raw:
    with ctx.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(("GET /.well-known/jwks.json HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host).encode())
        data = b""
        while True:
            chunk = tls.recv(4096)
            if not chunk:
                break
            data += chunk
sys.stdout.write(data.split(b"\r\n\r\n", 1)[1].decode())
"#;
    match std::process::Command::new("python3")
        .args(["-c", script, HOST, &addr.port().to_string()])
        .arg(&root_file)
        .output()
    {
        Ok(out) => assert_served_the_jwks(&out),
        Err(e) => println!("python3 not run: {e}"),
    }

    // Renewal: a new chain for the same key before the first one expires.
    let first_not_after = issued.not_after.unwrap();
    let renewed = wait_status(&first.tls, "renewal", Duration::from_secs(40), |s| {
        s.not_after.is_some_and(|n| n > first_not_after)
    })
    .await;
    assert_ne!(renewed.chain_pem, issued.chain_pem);
    assert_eq!(renewed.tls_spki_sha256, spki);
    assert_eq!(renewed.acme_account_uri.as_deref(), Some(account.as_str()));
    assert_eq!(fetch_jwks(&root, addr).await, spki);

    // Restart: a new enclave from the same seed, offered the cached chain, serves it at
    // once and finds the same account.
    let cached = renewed.chain_pem.clone().unwrap();
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let listener = TcpListener::bind(addr).await.unwrap();
    let second = start(&pebble, listener, Some(&cached));
    assert_eq!(second.tls.status().state, ISSUER_TLS_ISSUED);
    let again = wait_status(&second.tls, "the account", Duration::from_secs(30), |s| {
        s.acme_account_uri.is_some()
    })
    .await;
    assert_eq!(again.acme_account_uri.as_deref(), Some(account.as_str()));
    assert_eq!(again.tls_spki_sha256, spki);
    assert_eq!(fetch_jwks(&root, addr).await, spki);
}

/// Copies each TCP connection on `listener` to the Unix socket `to`, unread: what the
/// parent's issuer relay does.
async fn relay(listener: TcpListener, to: std::path::PathBuf) {
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            return;
        };
        let to = to.clone();
        tokio::spawn(async move {
            if let Ok(mut unix) = tokio::net::UnixStream::connect(&to).await {
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enclave_service_obtains_its_certificate_and_attests_its_account() {
    use agentkeys_wire::{
        AcmeAccountStatement, AwsCredentials, EnclaveClient, IssuerTlsRequest, JwksStatement,
        Request, Response, UnsealRequest,
    };
    if skip_reason().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pebble = Pebble::start(&PebbleOptions {
        tls_port: addr.port(),
        certificate_validity_seconds: None,
        dir: dir.path().to_path_buf(),
    })
    .unwrap();
    let kms_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let kms = format!("http://{}", kms_listener.local_addr().unwrap());
    tokio::spawn(agentkeys_mock_nsm::kms::serve(
        kms_listener,
        agentkeys_mock_nsm::kms::KmsConfig::new(),
    ));
    let key_arn = "arn:aws:kms:us-east-1:000000000000:key/6b1d2f0e-3c4a-4e5f-8a9b-0c1d2e3f4a5b";
    let wire = dir.path().join("enclave.sock");
    let tls_socket = dir.path().join("issuer-tls.sock");
    let issuer = format!("https://{HOST}:{}", addr.port());
    use clap::Parser;
    let args = agentkeys_enclave::Args::try_parse_from([
        "agentkeys-enclave",
        "--mock",
        "--auth-mode",
        "parent-vouched",
        "--usock",
        wire.to_str().unwrap(),
        "--tls-usock",
        tls_socket.to_str().unwrap(),
        "--issuer",
        &issuer,
        "--kms-key-arn",
        key_arn,
        "--acme-directory",
        &pebble.directory,
        "--acme-root",
        pebble.listener_root.to_str().unwrap(),
    ])
    .unwrap();
    let config = args.into_config_on(false).unwrap();
    tokio::spawn(agentkeys_enclave::run(config));
    tokio::spawn(relay(listener, tls_socket.clone()));
    let client = EnclaveClient::new(Address::Unix(wire.clone()), 1, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !tls_socket.exists() {
        assert!(Instant::now() < deadline, "the enclave never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let unseal = Request::Unseal(UnsealRequest {
        region: "us-east-1".into(),
        kms_key_id: key_arn.into(),
        kms_endpoint: Some(kms),
        credentials: AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "mock-secret".into(),
            session_token: None,
        },
        sealed_seed: None,
    });
    assert!(matches!(
        client.call(unseal).await.unwrap(),
        Response::Unsealed(_)
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = match client
            .call(Request::IssuerTls(IssuerTlsRequest::default()))
            .await
            .unwrap()
        {
            Response::IssuerTls(s) => s,
            other => panic!("{other:?}"),
        };
        if status.state == ISSUER_TLS_ISSUED {
            break status;
        }
        assert!(Instant::now() < deadline, "no certificate: {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let root = pebble.issuing_root_pem().await.unwrap();
    assert_eq!(fetch_jwks_of(&root, addr).await, status.tls_spki_sha256);

    // The attested account, read through the relay over the enclave's own TLS.
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes()).unwrap())
        .resolve(HOST, addr)
        .build()
        .unwrap();
    let account_nonce = [0x5a_u8; 16];
    let account: serde_json::Value = http
        .get(format!(
            "{issuer}/.well-known/acme-account?nonce={}",
            hex::encode(account_nonce)
        ))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let uri = status.acme_account_uri.clone().unwrap();
    assert_eq!(account["account_uri"], uri);
    assert_eq!(account["hostname"], HOST);
    assert_eq!(account["directory"], pebble.directory);
    assert_eq!(account["tls_spki_sha256"], status.tls_spki_sha256);
    assert_eq!(
        account["caa_issue_value"],
        format!("accounturi={uri}; validationmethods=tls-alpn-01")
    );
    use base64::Engine;
    let document = base64::engine::general_purpose::STANDARD
        .decode(account["attestation_document"].as_str().unwrap())
        .unwrap();
    let anchor = agentkeys_attestation::TrustAnchor::mock_root_explicitly_trusted(
        &agentkeys_mock_nsm::mock_root_pem(),
    )
    .unwrap();
    let verified = agentkeys_attestation::verify(
        &document,
        &anchor,
        agentkeys_attestation::now_unix_ms(),
        &agentkeys_attestation::Policy {
            nonce: Some(account_nonce.to_vec()),
            ..Default::default()
        },
    )
    .unwrap();
    let statement = AcmeAccountStatement::decode_attested(
        verified.document.user_data.as_deref().unwrap(),
        account["statement_text"].as_str().unwrap().as_bytes(),
    )
    .unwrap();
    assert_eq!(statement.account_uri, uri);
    assert_eq!(statement.hostname, HOST);
    assert_eq!(statement.directory, pebble.directory);
    assert_eq!(
        hex::encode(statement.tls_spki_sha256),
        status.tls_spki_sha256
    );
    assert_eq!(
        statement.account_key_thumbprint,
        account["account_key_thumbprint"]
    );
    // The JWKS attestation states the same TLS key.
    let attestation: serde_json::Value = http
        .get(format!("{issuer}/.well-known/nitro-attestation"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let document = base64::engine::general_purpose::STANDARD
        .decode(attestation["document"].as_str().unwrap())
        .unwrap();
    let verified = agentkeys_attestation::verify(
        &document,
        &anchor,
        agentkeys_attestation::now_unix_ms(),
        &agentkeys_attestation::Policy::default(),
    )
    .unwrap();
    let jwks = JwksStatement::decode_attested(
        verified.document.user_data.as_deref().unwrap(),
        attestation["statement_text"].as_str().unwrap().as_bytes(),
    )
    .unwrap();
    assert_eq!(hex::encode(jwks.tls_spki_sha256), status.tls_spki_sha256);
}

/// A client we did not write exited successfully and printed exactly the JWKS.
fn assert_served_the_jwks(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), JWKS);
}
