//! Starts the real `agentkeys-enclave` binary (mock NSM, Unix socket) against the KMS
//! stand-in, and checks unseal, restart, PCR policy, minting, attestation, the audit chain
//! and frame robustness.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentkeys_attestation::{verify, Policy, TrustAnchor};
use agentkeys_wire::frame::{decode_body, encode_frame};
use agentkeys_wire::{
    chain_genesis, chain_next, Address, AwsCredentials, CheckpointStatement, ClientError,
    EnclaveClient, MintJwtRequest, Request, RequestEnvelope, Response, ResponseEnvelope,
    UnsealRequest, UnsealResult, WireError, WireErrorKind, MAX_FRAME_BYTES,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::pkcs8::EncodePublicKey;
use sha2::{Digest, Sha256};

const ISSUER: &str = "http://127.0.0.1:1/issuer";
const WALLET: &str = "0xAbCdEf0123456789abcdef0123456789ABCDEF01";
const WALLET_LC: &str = "0xabcdef0123456789abcdef0123456789abcdef01";
const PCR_A: [u8; 48] = [0xA1; 48];
const PCR_B: [u8; 48] = [0xB2; 48];

/// A running enclave process; killed on drop.
/// The key the test enclave is pinned to: one of the KMS stand-in's own account.
const KEY_ARN: &str = "arn:aws:kms:us-east-1:000000000000:key/6b1d2f0e-3c4a-4e5f-8a9b-0c1d2e3f4a5b";

struct EnclaveProcess {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl EnclaveProcess {
    fn start(extra: &[String]) -> EnclaveProcess {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("enclave.sock");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentkeys-enclave"));
        cmd.arg("--mock")
            .arg("--usock")
            .arg(&socket)
            .arg("--issuer")
            .arg(ISSUER)
            .arg("--kms-key-arn")
            .arg(KEY_ARN)
            .args(extra)
            // The tests below that do not send proofs mint on the parent's word.
            .args(if extra.iter().any(|a| a == "--auth-mode") {
                &[][..]
            } else {
                &["--auth-mode", "parent-vouched"][..]
            })
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd.spawn().unwrap();
        let mut p = EnclaveProcess {
            child,
            socket,
            _dir: dir,
        };
        p.wait_ready();
        p
    }

    fn with_pcr0(pcr0: [u8; 48]) -> EnclaveProcess {
        EnclaveProcess::start(&["--mock-pcr".into(), format!("0={}", hex::encode(pcr0))])
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("enclave exited early: {status}");
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("enclave did not start listening");
    }

    fn client(&self, connections: usize) -> EnclaveClient {
        EnclaveClient::new(
            Address::Unix(self.socket.clone()),
            connections,
            Duration::from_secs(60),
        )
    }

    fn assert_alive(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "enclave died");
    }
}

impl Drop for EnclaveProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the KMS stand-in on loopback; `pcr0` mirrors an
/// `kms:RecipientAttestation:ImageSha384` condition.
async fn start_kms(pcr0: Option<[u8; 48]>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = kms_config(pcr0);
    tokio::spawn(async move {
        let _ = agentkeys_mock_nsm::kms::serve(listener, config).await;
    });
    url
}

fn kms_config(pcr0: Option<[u8; 48]>) -> agentkeys_mock_nsm::kms::KmsConfig {
    let config = agentkeys_mock_nsm::kms::KmsConfig::new();
    match pcr0 {
        Some(p) => config.require_pcr0(vec![p.to_vec()]),
        None => config,
    }
}

fn unseal_request(endpoint: &str, sealed_seed: Option<Vec<u8>>) -> Request {
    Request::Unseal(UnsealRequest {
        region: "us-east-1".into(),
        kms_key_id: KEY_ARN.into(),
        kms_endpoint: Some(endpoint.to_string()),
        credentials: AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "mock-secret".into(),
            session_token: Some("mock-token".into()),
        },
        sealed_seed,
    })
}

async fn unseal(client: &EnclaveClient, endpoint: &str, sealed: Option<Vec<u8>>) -> UnsealResult {
    match client.call(unseal_request(endpoint, sealed)).await.unwrap() {
        Response::Unsealed(r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

fn remote(result: Result<Response, ClientError>) -> WireError {
    match result {
        Err(ClientError::Remote(e)) => e,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

fn mint_request(wallet: &str, ttl: Option<u32>, audience: Option<&str>) -> Request {
    Request::MintJwt(MintJwtRequest {
        wallet: wallet.into(),
        ttl_seconds: ttl,
        audience: audience.map(str::to_string),
        proof: None,
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn mock_anchor() -> TrustAnchor {
    TrustAnchor::mock_root_explicitly_trusted(&agentkeys_mock_nsm::mock_root_pem()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genesis_restart_and_other_seed() {
    let kms = start_kms(None).await;

    // Boot 1: genesis.
    let mut first = EnclaveProcess::start(&[]);
    let client = first.client(1);
    let genesis = unseal(&client, &kms, None).await;
    assert!(genesis.genesis);
    assert!(!genesis.sealed_seed.is_empty());
    assert_eq!(genesis.kids, vec![genesis.active_kid.clone()]);
    // A retried genesis after success returns the same result.
    assert_eq!(unseal(&client, &kms, None).await, genesis);
    // A different sealed seed is refused.
    let e = remote(client.call(unseal_request(&kms, Some(vec![1, 2, 3]))).await);
    assert_eq!(e.kind, WireErrorKind::AlreadyUnsealed);
    first.assert_alive();
    drop(client);
    drop(first);

    // Boot 2: the stored sealed seed gives the same kid.
    let second = EnclaveProcess::start(&[]);
    let client = second.client(1);
    let reopened = unseal(&client, &kms, Some(genesis.sealed_seed.clone())).await;
    assert!(!reopened.genesis);
    assert_eq!(reopened.active_kid, genesis.active_kid);
    assert_eq!(reopened.sealed_seed, genesis.sealed_seed);
    // Idempotent with the same sealed seed; genesis refused after a Decrypt unseal.
    assert_eq!(
        unseal(&client, &kms, Some(genesis.sealed_seed.clone())).await,
        reopened
    );
    let e = remote(client.call(unseal_request(&kms, None)).await);
    assert_eq!(e.kind, WireErrorKind::AlreadyUnsealed);
    match client.call(Request::Status).await.unwrap() {
        Response::Status(s) => {
            assert!(s.unsealed && s.mock);
            assert_eq!(s.active_kid.as_deref(), Some(genesis.active_kid.as_str()));
            assert_eq!(s.issuer, ISSUER);
        }
        other => panic!("{other:?}"),
    }
    drop(client);
    drop(second);

    // Boot 3: another genesis gives another seed and another kid.
    let third = EnclaveProcess::start(&[]);
    let other = unseal(&third.client(1), &kms, None).await;
    assert!(other.genesis);
    assert_ne!(other.sealed_seed, genesis.sealed_seed);
    assert_ne!(other.active_kid, genesis.active_kid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcr_policy_refusal_keeps_enclave_waiting() {
    let strict = start_kms(Some(PCR_A)).await;
    let matching = start_kms(Some(PCR_B)).await;
    let mut enclave = EnclaveProcess::with_pcr0(PCR_B);
    let client = enclave.client(1);

    let e = remote(client.call(unseal_request(&strict, None)).await);
    assert_eq!(e.kind, WireErrorKind::AccessDenied, "{e}");
    assert!(e.message.contains("GenerateDataKey"), "{e}");
    assert!(
        e.message.len() > "KMS GenerateDataKey access denied: ".len(),
        "{e}"
    );

    // A non-loopback endpoint is refused in mock mode, naming it.
    let e = remote(
        client
            .call(unseal_request("https://kms.us-east-1.amazonaws.com", None))
            .await,
    );
    assert_eq!(e.kind, WireErrorKind::InvalidRequest);
    assert!(
        e.message.contains("https://kms.us-east-1.amazonaws.com"),
        "{e}"
    );

    // Still sealed, still serving.
    enclave.assert_alive();
    let e = remote(client.call(mint_request(WALLET, None, None)).await);
    assert_eq!(e.kind, WireErrorKind::NotUnsealed);
    let e = remote(client.call(Request::Attest { nonce: None }).await);
    assert_eq!(e.kind, WireErrorKind::NotUnsealed);
    match client.call(Request::Status).await.unwrap() {
        Response::Status(s) => assert!(!s.unsealed && s.active_kid.is_none()),
        other => panic!("{other:?}"),
    }

    // A KMS whose policy the document meets unseals.
    let ok = unseal(&client, &matching, None).await;
    assert!(ok.genesis);
    assert!(matches!(
        client.call(mint_request(WALLET, None, None)).await.unwrap(),
        Response::Jwt(_)
    ));
}

/// The JWK of `kid` in `jwks`, as JSON.
fn jwk<'a>(jwks: &'a serde_json::Value, kid: &str) -> &'a serde_json::Value {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_jwt_verifies_against_attested_jwks() {
    let kms = start_kms(None).await;
    let enclave = EnclaveProcess::start(&[
        "--audience".into(),
        "sts.amazonaws.com".into(),
        "--audience".into(),
        "other-aud".into(),
    ]);
    let client = enclave.client(1);
    let unsealed = unseal(&client, &kms, None).await;

    let nonce = b"auditor-nonce-123".to_vec();
    let att = match client
        .call(Request::Attest {
            nonce: Some(nonce.clone()),
        })
        .await
        .unwrap()
    {
        Response::Attestation(a) => a,
        other => panic!("{other:?}"),
    };
    let jwks_sha: [u8; 32] = Sha256::digest(&att.jwks).into();
    assert_eq!(att.jwks_sha256, jwks_sha);
    assert_eq!(att.kids, unsealed.kids);

    // JWKS members exactly as `docs/architecture.md`, "Key life cycle", step 4 lists them.
    let jwks: serde_json::Value = serde_json::from_slice(&att.jwks).unwrap();
    let key = jwk(&jwks, &unsealed.active_kid);
    let mut members: Vec<&str> = key
        .as_object()
        .unwrap()
        .keys()
        .map(|s| s.as_str())
        .collect();
    members.sort_unstable();
    assert_eq!(members, ["alg", "crv", "kid", "kty", "use", "x", "y"]);
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["use"], "sig");
    let x = key["x"].as_str().unwrap();
    let y = key["y"].as_str().unwrap();
    // kid = RFC 7638 thumbprint, recomputed here.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    assert_eq!(
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())),
        unsealed.active_kid
    );

    // The document verifies against the (explicitly trusted) mock root, binding the JWKS
    // hash, the nonce and the signing key's SPKI.
    let mut point = vec![0x04];
    point.extend(URL_SAFE_NO_PAD.decode(x).unwrap());
    point.extend(URL_SAFE_NO_PAD.decode(y).unwrap());
    let spki = p256::PublicKey::from_sec1_bytes(&point)
        .unwrap()
        .to_public_key_der()
        .unwrap()
        .into_vec();
    // The statement binds the JWKS hash, the pinned key, the sealed seed in use, the key
    // version, this boot's audit epoch and the NSM module id.
    let statement = agentkeys_wire::JwksStatement::decode(&att.statement).unwrap();
    assert_eq!(statement.jwks_sha256, jwks_sha);
    assert_eq!(statement.kms_key_arn.as_str(), KEY_ARN);
    assert_eq!(
        statement.sealed_seed_sha256,
        <[u8; 32]>::from(Sha256::digest(&unsealed.sealed_seed))
    );
    assert_eq!(statement.key_version, 1);
    let status = match client.call(Request::Status).await.unwrap() {
        Response::Status(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(statement.audit_epoch, status.epoch);
    // The document's user_data binds the statement by hash (the statement can outgrow
    // the NSM's 512 bytes).
    let policy = Policy {
        nonce: Some(nonce),
        user_data: Some(statement.user_data()),
        public_key: Some(spki),
        ..Policy::default()
    };
    let verified = verify(&att.document, &mock_anchor(), now_ms(), &policy).unwrap();
    assert_eq!(
        agentkeys_wire::JwksStatement::decode_attested(
            verified.document.user_data.as_deref().unwrap(),
            &att.statement
        )
        .unwrap(),
        statement
    );
    assert_eq!(statement.module_id, verified.document.module_id);

    // Mint and verify with an independent library.
    let minted = match client
        .call(mint_request(WALLET, Some(600), None))
        .await
        .unwrap()
    {
        Response::Jwt(m) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!(minted.wallet, WALLET_LC);
    assert_eq!(minted.kid, unsealed.active_kid);
    assert_eq!(minted.exp - minted.iat, 600);
    assert_eq!(
        minted.jwt_sha256,
        <[u8; 32]>::from(Sha256::digest(minted.jwt.as_bytes()))
    );

    let header = jsonwebtoken::decode_header(&minted.jwt).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some(unsealed.active_kid.as_str()));
    let parts: Vec<&str> = minted.jwt.split('.').collect();
    assert_eq!(
        URL_SAFE_NO_PAD.decode(parts[0]).unwrap(),
        format!(
            r#"{{"alg":"ES256","kid":"{}","typ":"JWT"}}"#,
            unsealed.active_kid
        )
        .as_bytes()
    );
    assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);

    let decoding = jsonwebtoken::DecodingKey::from_ec_components(x, y).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&["sts.amazonaws.com"]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf", "iat"]);
    validation.validate_nbf = true;
    let data =
        jsonwebtoken::decode::<serde_json::Value>(&minted.jwt, &decoding, &validation).unwrap();
    let expected = serde_json::json!({
        "iss": ISSUER,
        "sub": format!("agentkeys:agent:{WALLET_LC}"),
        "aud": "sts.amazonaws.com",
        "iat": minted.iat,
        "nbf": minted.iat,
        "exp": minted.exp,
        "jti": minted.jti,
        "agentkeys_user_wallet": WALLET_LC,
        "agentkeys_epoch": minted.epoch.to_string(),
        "agentkeys_seq": minted.seq,
        "agentkeys_auth": "parent-vouched",
        "https://aws.amazon.com/tags": {
            "principal_tags": {"agentkeys_user_wallet": [WALLET_LC]},
            "transitive_tag_keys": ["agentkeys_user_wallet"]
        }
    });
    assert_eq!(data.claims, expected);
    let now = now_ms() / 1000;
    assert!(
        minted.iat <= now + 1 && minted.iat + 60 >= now,
        "enclave clock"
    );

    // A tampered token does not verify.
    let mut tampered = minted.jwt.clone();
    tampered.replace_range(parts[0].len() + 5..parts[0].len() + 6, "A");
    assert!(jsonwebtoken::decode::<serde_json::Value>(&tampered, &decoding, &validation).is_err());

    // Audience allowlist.
    match client
        .call(mint_request(WALLET, None, Some("other-aud")))
        .await
        .unwrap()
    {
        Response::Jwt(m) => {
            let mut v = validation.clone();
            v.set_audience(&["other-aud"]);
            jsonwebtoken::decode::<serde_json::Value>(&m.jwt, &decoding, &v).unwrap();
            assert_eq!(m.exp - m.iat, 300, "default TTL");
        }
        other => panic!("{other:?}"),
    }
    let e = remote(client.call(mint_request(WALLET, None, Some("evil"))).await);
    assert_eq!(e.kind, WireErrorKind::InvalidRequest);

    // TTL bounds: refused outside [60, 3600], accepted at the edges.
    for bad in [0, 59, 3601, u32::MAX] {
        let e = remote(client.call(mint_request(WALLET, Some(bad), None)).await);
        assert_eq!(e.kind, WireErrorKind::InvalidRequest, "{bad}");
        assert!(e.message.contains("[60, 3600]"), "{e}");
    }
    for edge in [60, 3600] {
        match client
            .call(mint_request(WALLET, Some(edge), None))
            .await
            .unwrap()
        {
            Response::Jwt(m) => assert_eq!(m.exp - m.iat, u64::from(edge)),
            other => panic!("{other:?}"),
        }
    }

    // Invalid wallets.
    for bad in [
        "",
        "0x1234",
        "abcdef0123456789abcdef0123456789abcdef0123",
        "0xZZcdef0123456789abcdef0123456789abcdef01",
    ] {
        let e = remote(client.call(mint_request(bad, None, None)).await);
        assert_eq!(e.kind, WireErrorKind::InvalidWallet, "{bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_mints_chain_matches_checkpoint() {
    let kms = start_kms(None).await;
    let enclave = EnclaveProcess::start(&[]);
    let client = std::sync::Arc::new(enclave.client(2));
    unseal(&client, &kms, None).await;

    let before = match client
        .call(Request::AuditCheckpoint { nonce: None })
        .await
        .unwrap()
    {
        Response::Checkpoint(c) => c,
        other => panic!("{other:?}"),
    };
    assert_eq!(before.seq, 0);
    assert_eq!(before.head, chain_genesis(before.epoch));

    let mut tasks = Vec::new();
    for i in 0..64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let wallet = format!("0x{:040x}", i + 1);
            match client
                .call(mint_request(&wallet, None, None))
                .await
                .unwrap()
            {
                Response::Jwt(m) => m,
                other => panic!("{other:?}"),
            }
        }));
    }
    let mut minted = Vec::new();
    for t in tasks {
        minted.push(t.await.unwrap());
    }
    let jtis: HashSet<_> = minted.iter().map(|m| m.jti.clone()).collect();
    assert_eq!(jtis.len(), 64);
    minted.sort_by_key(|m| m.seq);
    let seqs: Vec<u64> = minted.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=64).collect::<Vec<_>>());

    // Recompute the chain from the JWTs alone: each names its own position in its
    // claims, and the chain hashes its signing input.
    let mut head = chain_genesis(before.epoch);
    for m in &minted {
        assert_eq!(m.epoch, before.epoch);
        let claims: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(m.jwt.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["agentkeys_epoch"], m.epoch.to_string());
        assert_eq!(claims["agentkeys_seq"], m.seq);
        let signing_input = m.jwt.rsplit_once('.').unwrap().0;
        let h: [u8; 32] = Sha256::digest(signing_input.as_bytes()).into();
        assert_eq!(h, m.signing_input_sha256);
        head = chain_next(&head, m.seq, &h);
        assert_eq!(head, m.head);
    }

    let nonce = b"checkpoint-nonce".to_vec();
    let after = match client
        .call(Request::AuditCheckpoint {
            nonce: Some(nonce.clone()),
        })
        .await
        .unwrap()
    {
        Response::Checkpoint(c) => c,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (after.epoch, after.seq, after.head),
        (before.epoch, 64, head)
    );
    let expected = CheckpointStatement {
        epoch: before.epoch,
        seq: 64,
        head,
        module_id: after.module_id.clone(),
    };
    let policy = Policy {
        nonce: Some(nonce),
        user_data: Some(expected.encode().to_vec()),
        ..Policy::default()
    };
    verify(&after.document, &mock_anchor(), now_ms(), &policy).unwrap();
}

/// Sends raw bytes on a fresh connection and reads one reply frame (None if the server
/// closed the connection instead).
fn raw_exchange(socket: &Path, bytes: &[u8]) -> Option<ResponseEnvelope> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut len = [0u8; 4];
    if s.read_exact(&mut len).is_err() {
        return None;
    }
    let n = u32::from_be_bytes(len) as usize;
    let mut body = vec![0u8; n];
    s.read_exact(&mut body).ok()?;
    Some(decode_body(&body).unwrap())
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn assert_error_reply(reply: Option<ResponseEnvelope>, kinds: &[WireErrorKind]) {
    if let Some(r) = reply {
        match r.result {
            Err(e) => assert!(kinds.contains(&e.kind), "{e}"),
            Ok(resp) => panic!("expected an error, got {resp:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_and_enclave_keeps_serving() {
    let mut enclave = EnclaveProcess::start(&[]);
    let socket = enclave.socket.clone();

    // Garbage body.
    let reply = raw_exchange(&socket, &frame(b"\xff\xfe garbage \x00"));
    assert!(reply.is_some(), "garbage should be answered");
    assert_error_reply(reply, &[WireErrorKind::Malformed]);

    // Valid CBOR of the wrong shape.
    let mut cbor = Vec::new();
    ciborium::into_writer(
        &serde_json::json!({"id": 7, "request": {"Nope": 1}}),
        &mut cbor,
    )
    .unwrap();
    let reply = raw_exchange(&socket, &frame(&cbor));
    assert!(reply.is_some());
    assert_error_reply(reply, &[WireErrorKind::Malformed]);

    // Wrong type: a response envelope sent as a request.
    let wrong = encode_frame(&ResponseEnvelope {
        id: 9,
        result: Err(WireError::new(WireErrorKind::Internal, "x")),
    })
    .unwrap();
    assert_error_reply(raw_exchange(&socket, &wrong), &[WireErrorKind::Malformed]);

    // Oversized length prefix: an error reply or a closed connection, never a hang.
    let mut huge = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes().to_vec();
    huge.extend_from_slice(&[0u8; 16]);
    assert_error_reply(
        raw_exchange(&socket, &huge),
        &[WireErrorKind::FrameTooLarge],
    );
    assert_error_reply(
        raw_exchange(&socket, &u32::MAX.to_be_bytes()),
        &[WireErrorKind::FrameTooLarge],
    );

    // Empty frame.
    assert_error_reply(
        raw_exchange(&socket, &frame(b"")),
        &[WireErrorKind::Malformed],
    );

    // Truncated frame, then close.
    {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.write_all(&[0, 0, 1, 0, 1, 2, 3]).unwrap();
    }
    // Truncated length prefix.
    {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.write_all(&[0, 0]).unwrap();
    }

    // A good request on a raw connection after all that.
    let good = encode_frame(&RequestEnvelope {
        id: 42,
        request: Request::Status,
    })
    .unwrap();
    let reply = raw_exchange(&socket, &good).expect("status reply");
    assert_eq!(reply.id, 42);
    assert!(matches!(reply.result, Ok(Response::Status(_))));

    // And through the client.
    enclave.assert_alive();
    assert!(matches!(
        enclave.client(1).call(Request::Status).await.unwrap(),
        Response::Status(_)
    ));
}

#[test]
fn binary_refuses_bad_configuration() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_agentkeys-enclave"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    let refused = |args: &[&str], names: &str| {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(names), "{args:?}: {stderr}");
    };
    // No issuer.
    refused(
        &[
            "--mock",
            "--usock",
            "/nonexistent/x.sock",
            "--kms-key-arn",
            KEY_ARN,
        ],
        "--issuer",
    );
    // No pinned key.
    refused(
        &[
            "--mock",
            "--usock",
            "/nonexistent/x.sock",
            "--issuer",
            ISSUER,
        ],
        "--kms-key-arn",
    );
    // A key alias instead of a key ARN.
    refused(
        &[
            "--mock",
            "--usock",
            "/nonexistent/x.sock",
            "--issuer",
            ISSUER,
            "--kms-key-arn",
            "arn:aws:kms:us-east-1:000000000000:alias/agentkeys",
        ],
        "--kms-key-arn",
    );
    // Plain-http issuer without --mock.
    refused(
        &[
            "--usock",
            "/nonexistent/x.sock",
            "--issuer",
            "http://127.0.0.1:1",
            "--kms-key-arn",
            KEY_ARN,
        ],
        "--issuer",
    );
    // TTL bound outside [60, 3600].
    refused(
        &[
            "--mock",
            "--usock",
            "/nonexistent/x.sock",
            "--issuer",
            ISSUER,
            "--kms-key-arn",
            KEY_ARN,
            "--ttl-max",
            "7200",
        ],
        "7200",
    );
    // --mock-pcr without --mock.
    let pcr = format!("0={}", hex::encode(PCR_A));
    refused(
        &[
            "--usock",
            "/x",
            "--issuer",
            "https://i.example",
            "--kms-key-arn",
            KEY_ARN,
            "--mock-pcr",
            &pcr,
        ],
        "--mock-pcr",
    );
    // --mock on the production transport (vsock).
    refused(
        &["--mock", "--issuer", ISSUER, "--kms-key-arn", KEY_ARN],
        "--usock",
    );
}
