//! The parent as the attacker: a root user on the EC2 host drives the shipped enclave
//! binary over its socket (as the broker would) and tries to make it unseal with a key
//! the parent controls. Every attempt must be refused, the enclave must stay sealed and
//! keep serving, and a refusal that depends on the request alone must come before any
//! KMS call. A parent that drops the sealed seed for a fresh genesis is caught by the
//! auditor's `agentkeys-attest verify --expect-kid`.
//!
//! A parent that edits its own audit log after handing out tokens, and recomputes the
//! log's hash chain, is named by `audit verify` against what the enclave signed: each row
//! holds the signing input the enclave's attested chain hashes, and a token found outside
//! names its own row.
//!
//! KMS is the in-process stand-in behind a proxy the hostile parent runs: the proxy
//! counts the KMS calls the enclave makes and, when told to, rewrites the `KeyId` of
//! KMS's answer (a parent cannot forge KMS's TLS in production; in mock mode it chooses
//! the endpoint, which is what makes this test possible).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkeys_e2e::binary;
use agentkeys_wire::{
    Address, AwsCredentials, ClientError, EnclaveClient, Request, Response, UnsealRequest,
    WireError, WireErrorKind,
};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};

/// The key the enclave image is pinned to (the KMS stand-in's own account).
const PINNED: &str = "arn:aws:kms:us-east-1:000000000000:key/5f1c9e2a-0b7d-4e3f-9a61-2c8d4b0e7f13";
/// A permissive key in an account the parent owns.
const PARENTS_KEY: &str =
    "arn:aws:kms:us-east-1:444455556666:key/7e2d1c0b-4a3f-4b5e-8c9d-0e1f2a3b4c5d";
/// The pinned key's id in another region.
const OTHER_REGION: &str =
    "arn:aws:kms:eu-west-1:000000000000:key/5f1c9e2a-0b7d-4e3f-9a61-2c8d4b0e7f13";
const ISSUER: &str = "http://127.0.0.1:1";

/// The shipped enclave binary, mock NSM, pinned to [`PINNED`].
struct Enclave {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Enclave {
    fn start() -> Enclave {
        Enclave::start_for(ISSUER, PINNED)
    }

    /// The shipped enclave binary in mock mode for `issuer`, pinned to `key`, minting on
    /// the parent's word.
    fn start_for(issuer: &str, key: &str) -> Enclave {
        Enclave::start_with(issuer, key, &["--auth-mode", "parent-vouched"])
    }

    /// The shipped enclave binary in mock mode for `issuer`, pinned to `key`, with the
    /// authorization flags `auth`.
    fn start_with(issuer: &str, key: &str, auth: &[&str]) -> Enclave {
        let dir = tempfile::tempdir().expect("tmp");
        let socket = dir.path().join("enclave.sock");
        let child = Command::new(binary("agentkeys-enclave"))
            .args(["--mock", "--usock"])
            .arg(&socket)
            .args(["--issuer", issuer, "--kms-key-arn", key])
            .args(auth)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start agentkeys-enclave");
        let mut e = Enclave {
            child,
            socket,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&e.socket).is_err() {
            assert!(
                e.child.try_wait().expect("wait").is_none(),
                "enclave exited"
            );
            assert!(Instant::now() < deadline, "enclave did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        e
    }

    fn client(&self) -> EnclaveClient {
        EnclaveClient::new(
            Address::Unix(self.socket.clone()),
            1,
            Duration::from_secs(60),
        )
    }
}

impl Drop for Enclave {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The parent's proxy in front of the KMS stand-in.
#[derive(Clone)]
struct KmsProxy {
    upstream: String,
    http: reqwest::Client,
    calls: Arc<AtomicUsize>,
    rewrite_key_id: Arc<AtomicBool>,
}

async fn forward(State(p): State<KmsProxy>, headers: HeaderMap, body: Bytes) -> HttpResponse {
    p.calls.fetch_add(1, Ordering::SeqCst);
    let mut req = p.http.post(&p.upstream).body(body.to_vec());
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            req = req.header(name, value);
        }
    }
    let Ok(answer) = req.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status();
    let text = answer.text().await.unwrap_or_default();
    let text = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(mut v) if p.rewrite_key_id.load(Ordering::SeqCst) && v.get("KeyId").is_some() => {
            v["KeyId"] = PARENTS_KEY.into();
            v.to_string()
        }
        _ => text,
    };
    (
        status,
        [("content-type", "application/x-amz-json-1.1")],
        text,
    )
        .into_response()
}

/// Starts the KMS stand-in and the proxy; returns the proxy's URL and its state.
async fn start_kms() -> (String, KmsProxy) {
    let kms = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = format!("http://{}", kms.local_addr().expect("addr"));
    tokio::spawn(agentkeys_mock_nsm::kms::serve(
        kms,
        agentkeys_mock_nsm::kms::KmsConfig::new(),
    ));
    let proxy = KmsProxy {
        upstream,
        http: reqwest::Client::new(),
        calls: Arc::new(AtomicUsize::new(0)),
        rewrite_key_id: Arc::new(AtomicBool::new(false)),
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(proxy.clone());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, proxy)
}

fn unseal(key: &str, region: &str, endpoint: &str) -> Request {
    Request::Unseal(UnsealRequest {
        region: region.into(),
        kms_key_id: key.into(),
        kms_endpoint: Some(endpoint.into()),
        credentials: AwsCredentials {
            access_key_id: "AKIAPARENTOWNED00000".into(),
            secret_access_key: "the-parent-s-own-credentials".into(),
            session_token: None,
        },
        sealed_seed: None,
    })
}

async fn refused(client: &EnclaveClient, request: Request) -> WireError {
    match client.call(request).await {
        Err(ClientError::Remote(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn assert_sealed(client: &EnclaveClient) {
    match client.call(Request::Status).await {
        Ok(Response::Status(s)) => assert!(!s.unsealed, "the enclave unsealed: {s:?}"),
        other => panic!("status: {other:?}"),
    }
}

#[tokio::test]
async fn unseal_with_a_key_other_than_the_pinned_one_is_refused_before_any_kms_call() {
    let enclave = Enclave::start();
    let client = enclave.client();
    let (kms, proxy) = start_kms().await;
    let cases = [
        (
            "a permissive key in the parent's account",
            PARENTS_KEY,
            "us-east-1",
        ),
        (
            "an alias of the pinned key's account",
            "arn:aws:kms:us-east-1:000000000000:alias/agentkeys",
            "us-east-1",
        ),
        ("a bare alias", "alias/agentkeys", "us-east-1"),
        (
            "the pinned key's id without its ARN",
            "5f1c9e2a-0b7d-4e3f-9a61-2c8d4b0e7f13",
            "us-east-1",
        ),
        (
            "the same key id in another region",
            OTHER_REGION,
            "eu-west-1",
        ),
        ("the pinned key with another region", PINNED, "eu-west-1"),
    ];
    for (name, key, region) in cases {
        let e = refused(&client, unseal(key, region, &kms)).await;
        assert_eq!(e.kind, WireErrorKind::InvalidRequest, "{name}: {e}");
        assert!(
            e.message.contains(PINNED),
            "{name}: names the pinned key: {e}"
        );
        assert!(e.message.contains("no KMS call"), "{name}: {e}");
        assert_eq!(
            proxy.calls.load(Ordering::SeqCst),
            0,
            "{name}: KMS was called"
        );
        assert_sealed(&client).await;
    }
    // The same enclave still unseals with the pinned key: nothing above broke it.
    match client.call(unseal(PINNED, "us-east-1", &kms)).await {
        Ok(Response::Unsealed(r)) => assert!(r.genesis),
        other => panic!("pinned unseal: {other:?}"),
    }
    assert!(proxy.calls.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn a_kms_answer_naming_another_key_is_refused_and_the_enclave_stays_sealed() {
    let enclave = Enclave::start();
    let client = enclave.client();
    let (kms, proxy) = start_kms().await;
    proxy.rewrite_key_id.store(true, Ordering::SeqCst);
    let e = refused(&client, unseal(PINNED, "us-east-1", &kms)).await;
    assert_eq!(e.kind, WireErrorKind::Kms, "{e}");
    assert!(
        e.message.contains(PARENTS_KEY) && e.message.contains(PINNED),
        "{e}"
    );
    assert_eq!(proxy.calls.load(Ordering::SeqCst), 1);
    assert_sealed(&client).await;
    // An honest answer afterwards unseals.
    proxy.rewrite_key_id.store(false, Ordering::SeqCst);
    match client.call(unseal(PINNED, "us-east-1", &kms)).await {
        Ok(Response::Unsealed(_)) => {}
        other => panic!("honest unseal: {other:?}"),
    }
}

/// `agentkeys-attest verify --issuer` against `stack`, the mock image's measurements and
/// the auditor's expectations.
fn auditor(stack: &agentkeys_e2e::DevStack, expect: &[&str]) -> std::process::Output {
    let root = stack.info.mock_root_pem.display().to_string();
    let measurements = stack.mock_measurements().display().to_string();
    Command::new(binary("agentkeys-attest"))
        .args(["verify", "--issuer", &stack.info.broker_url, "--json"])
        .args([
            "--root",
            &root,
            "--allow-mock-root",
            "--measurements",
            &measurements,
        ])
        .args(expect)
        .output()
        .expect("run agentkeys-attest")
}

/// A parent that drops the sealed seed and restarts the enclave gets a silent genesis: a
/// new seed, a new key, and a JWKS it could pass off as the issuer's. An auditor who
/// expects the issuer's kid and pinned key sees it at once.
#[test]
fn a_silent_genesis_is_visible_to_an_auditor_who_expects_the_kid() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let port = agentkeys_e2e::closed_port().to_string();
    let opts = agentkeys_e2e::DevOptions {
        data_dir: Some(data.clone()),
        extra: vec!["--port".into(), port.clone()],
    };
    let pinned = agentkeys_dev::stack::DEV_KMS_KEY_ARN;
    let kid = {
        let stack = agentkeys_e2e::DevStack::start_with(opts.clone());
        let kid = stack.served_kid();
        let out = auditor(&stack, &["--kms-key-arn", pinned, "--expect-kid", &kid]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        kid
    };
    std::fs::remove_file(data.join(format!("sealed-seed-{port}.bin"))).expect("drop the seed");
    let stack = agentkeys_e2e::DevStack::start_with(opts);
    assert_ne!(stack.served_kid(), kid, "a genesis makes a new key");
    let out = auditor(&stack, &["--kms-key-arn", pinned, "--expect-kid", &kid]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["failed_check"], "jwks", "{report}");
    assert!(
        report["error"].as_str().unwrap_or("").contains(&kid),
        "the report names the expected kid: {report}"
    );
}

/// `agentkeys-broker audit verify` of `stack`'s log against the KMS stand-in's CloudTrail
/// records.
fn audit_against_cloudtrail(stack: &agentkeys_e2e::DevStack) -> (bool, String) {
    let out = Command::new(binary("agentkeys-broker"))
        .args(["audit", "verify", "--db"])
        .arg(&stack.info.audit_db)
        .arg("--cloudtrail")
        .arg(&stack.info.kms_cloudtrail)
        .args(["--kms-key-arn", agentkeys_dev::stack::DEV_KMS_KEY_ARN])
        .output()
        .expect("run audit verify");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A parent that boots a second enclave from the issuer's sealed seed and never records
/// it: CloudTrail still shows that enclave's attested unseal, and `audit verify
/// --cloudtrail` names its module id.
#[tokio::test]
async fn a_hidden_boot_is_named_from_cloudtrail() {
    let stack = tokio::task::spawn_blocking(agentkeys_e2e::DevStack::start)
        .await
        .expect("dev stack");
    let (ok, text) = audit_against_cloudtrail(&stack);
    assert!(ok, "the stack's own boot is in the log: {text}");
    assert!(text.contains("1 attested unseals"), "{text}");

    let hidden = Enclave::start_for(
        &stack.info.broker_url,
        agentkeys_dev::stack::DEV_KMS_KEY_ARN,
    );
    let client = hidden.client();
    let sealed_seed = std::fs::read(stack.info.data_dir.join(format!(
        "sealed-seed-{}.bin",
        stack.info.broker_url.rsplit(':').next().expect("port")
    )))
    .expect("the issuer's sealed seed, as the parent stores it");
    let mut request = match unseal(
        agentkeys_dev::stack::DEV_KMS_KEY_ARN,
        "us-east-1",
        &stack.info.kms_url,
    ) {
        Request::Unseal(r) => r,
        other => panic!("{other:?}"),
    };
    request.sealed_seed = Some(sealed_seed);
    let module_id = match client.call(Request::Unseal(request)).await {
        Ok(Response::Unsealed(_)) => match client.call(Request::Status).await {
            Ok(Response::Status(s)) => s.module_id,
            other => panic!("status: {other:?}"),
        },
        other => panic!("the hidden enclave unseals with the issuer's seed: {other:?}"),
    };

    let (ok, text) = audit_against_cloudtrail(&stack);
    assert!(!ok, "the hidden boot must fail the audit: {text}");
    assert!(
        text.contains(&module_id),
        "the report names the hidden enclave: {text}"
    );
    assert!(text.contains("records no boot"), "{text}");
}

/// Rewrites the stopped stack's log as a root user on the parent would: applies `edit` to
/// the rows, then recomputes every `prev_hash` and `row_hash`, so the log's own hash chain
/// verifies again.
fn rewrite_log(
    db: &std::path::Path,
    edit: impl FnOnce(&mut Vec<agentkeys_broker::audit::AuditRow>),
) {
    use agentkeys_broker::audit::GENESIS_PREV_HASH;
    let mut rows = agentkeys_broker::cli::audit::recent_rows(db, usize::MAX).expect("read log");
    edit(&mut rows);
    let mut prev = GENESIS_PREV_HASH;
    for row in &mut rows {
        row.prev_hash = prev;
        row.row_hash = row.compute_hash();
        prev = row.row_hash;
    }
    let c = rusqlite::Connection::open(db).expect("open log");
    c.execute_batch(
        "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete; DELETE FROM audit_log;",
    )
    .expect("drop the triggers");
    for r in &rows {
        let e = &r.entry;
        let sql_u64 = |v: Option<u64>| v.map(|v| i64::from_ne_bytes(v.to_ne_bytes()));
        c.execute(
            "INSERT INTO audit_log (id, ts_ms, event, outcome, bearer_sha256, wallet, kid, jti, \
             enclave_epoch, enclave_seq, jwt_sha256, enclave_head, status, detail, prev_hash, \
             row_hash, signing_input, row_format) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
             ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            rusqlite::params![
                r.id,
                r.ts_ms,
                e.event.as_str(),
                e.outcome.as_str(),
                e.bearer_sha256.map(hex::encode),
                e.wallet,
                e.kid,
                e.jti,
                sql_u64(e.enclave_epoch),
                sql_u64(e.enclave_seq),
                e.jwt_sha256.map(hex::encode),
                e.enclave_head.map(hex::encode),
                e.status,
                e.detail,
                hex::encode(r.prev_hash),
                hex::encode(r.row_hash),
                e.signing_input,
                r.format.number(),
            ],
        )
        .expect("write row");
    }
}

/// An edit a hostile parent makes to its log's rows.
type LogEdit<'a> = dyn Fn(&mut Vec<agentkeys_broker::audit::AuditRow>) + 'a;

/// The index in `rows` of the row recording the token with `jti`.
fn row_of(rows: &[agentkeys_broker::audit::AuditRow], jti: &str) -> usize {
    rows.iter()
        .position(|r| r.entry.jti.as_deref() == Some(jti))
        .expect("a row per token")
}

/// The `jti` claim of a compact JWT.
fn jti_of(jwt: &str) -> String {
    use base64::Engine;
    let claims = jwt.split('.').nth(1).expect("claims");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .expect("base64url");
    let v: serde_json::Value = serde_json::from_slice(&json).expect("claims JSON");
    v["jti"].as_str().expect("jti").to_owned()
}

/// After handing out tokens, the parent edits its log and recomputes its hash chain:
/// another wallet on a row, two rows' `jti`s swapped, a used token relabelled
/// `mint_withheld`. Each edit is named by `audit verify`; the relabelling, which the
/// enclave's chain cannot see (it covers what was signed, not what was handed out), is
/// named by a token the relying party kept.
#[test]
fn rows_rewritten_with_a_recomputed_chain_are_named_against_what_the_enclave_signed() {
    const WALLET: &str = "0x00000000000000000000000000000000000000c1";
    let mut stack = agentkeys_e2e::DevStack::start();
    let session = stack.create_session(WALLET);
    let tokens: Vec<String> = (0..4)
        .map(|_| {
            let (status, body) = stack.post("/v1/mint-oidc-jwt", Some(&session), "");
            assert_eq!(status, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            v["jwt"].as_str().expect("jwt").to_owned()
        })
        .collect();
    // What an auditor archives: an attested checkpoint and the JWKS; what a relying party
    // keeps: the tokens it was given.
    let dir = stack.tmp.as_ref().expect("tmp").path().to_path_buf();
    let (status, checkpoint) = stack.get("/v1/audit/checkpoint?nonce=00ff");
    assert_eq!(status, 200);
    let (status, jwks) = stack.get("/.well-known/jwks.json");
    assert_eq!(status, 200);
    let files = [
        ("checkpoint.json", checkpoint),
        ("jwks.json", jwks),
        ("tokens.txt", tokens.join("\n").into_bytes()),
    ];
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), bytes).expect("write");
    }
    let root = stack.info.mock_root_pem.display().to_string();
    let measurements = stack.mock_measurements().display().to_string();
    stack.stop();
    let db = stack.info.audit_db.clone();
    let pristine = db.with_extension("pristine");
    std::fs::copy(&db, &pristine).expect("keep a copy");
    let path = |name: &str| dir.join(name).display().to_string();
    let verify = |with_tokens: bool| {
        let mut cmd = Command::new(binary("agentkeys-broker"));
        cmd.args(["audit", "verify", "--db"]).arg(&db).args([
            "--checkpoint",
            &path("checkpoint.json"),
            "--root",
            &root,
            "--allow-mock-root",
            "--measurements",
            &measurements,
        ]);
        if with_tokens {
            cmd.args(["--token", &path("tokens.txt"), "--jwks", &path("jwks.json")]);
        }
        let out = cmd.output().expect("run audit verify");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, text) = verify(true);
    assert!(ok, "the untouched log verifies with every token: {text}");
    assert!(text.contains("tokens: 4 of 4"), "{text}");

    let edits: [(&str, Box<LogEdit>, bool, &str); 3] = [
        (
            "another wallet on a row",
            Box::new(|rows| {
                let i = row_of(rows, &jti_of(&tokens[1]));
                rows[i].entry.wallet = Some("0x00000000000000000000000000000000000000e7".into());
            }),
            false,
            "its wallet is 0x00000000000000000000000000000000000000e7, but the token the enclave signed says 0x00000000000000000000000000000000000000c1",
        ),
        (
            "two rows' jti swapped",
            Box::new(|rows| {
                let (a, b) = (row_of(rows, &jti_of(&tokens[0])), row_of(rows, &jti_of(&tokens[2])));
                let jti_a = rows[a].entry.jti.take();
                rows[a].entry.jti = rows[b].entry.jti.replace(jti_a.unwrap_or_default());
            }),
            false,
            "its jti is",
        ),
        (
            "a used token relabelled mint_withheld",
            Box::new(|rows| {
                let i = row_of(rows, &jti_of(&tokens[3]));
                rows[i].entry.event = agentkeys_broker::audit::AuditEvent::MintWithheld;
                rows[i].entry.outcome = agentkeys_broker::audit::Outcome::Failure;
                rows[i].entry.status = Some(500);
            }),
            true,
            "is recorded as withheld",
        ),
    ];
    for (what, edit, needs_tokens, named) in edits {
        std::fs::copy(&pristine, &db).expect("restore");
        rewrite_log(&db, |rows| edit(rows));
        let (ok, text) = verify(needs_tokens);
        assert!(!ok, "{what}: {text}");
        assert!(text.contains(named), "{what}: expected {named:?} in {text}");
        assert!(
            !text.contains("its contents hash to"),
            "{what}: the log's own chain was recomputed, so only the new checks can see it: {text}"
        );
        if needs_tokens {
            let (ok, text) = verify(false);
            assert!(
                ok,
                "{what}: without the token the log is consistent with the enclave's chain: {text}"
            );
        }
    }
}

/// Runs `script` with `python3`, `input` on its stdin; its stdout. Fails with the command
/// that installs what it needs when python3 or a package is missing.
fn python(script: &str, input: &serde_json::Value) -> serde_json::Value {
    use std::io::Write;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed: apt-get install python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write to python3");
    let out = child.wait_with_output().expect("python3");
    assert!(
        out.status.success(),
        "python3 failed (install its packages: python3 -m pip install pyjwt cryptography eth-account): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python3 printed JSON")
}

/// Session tokens as a session backend written with PyJWT and pyca/cryptography signs
/// them (ES256, the key's JWK in the header), good and bad, and the RFC 7638 thumbprint
/// of the trusted key as Python computes it.
const PYJWT_SESSIONS: &str = r#"
import base64, hashlib, json, sys
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
req = json.load(sys.stdin)
def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def key(n):
    k = ec.derive_private_key(n, ec.SECP256R1())
    p = k.public_key().public_numbers()
    return k, {"kty": "EC", "crv": "P-256", "x": b64(p.x.to_bytes(32, "big")), "y": b64(p.y.to_bytes(32, "big"))}
trusted, tjwk = key(0x5e55_1011)
other, ojwk = key(0x0bad_2022)
now, w = req["now"], req["wallet"]
base = {"sub": w, "aud": req["issuer"], "iat": now - 5, "exp": now + 600, "jti": "session-1"}
def es(claims, k=trusted, j=tjwk): return jwt.encode(claims, k, algorithm="ES256", headers={"jwk": j})
canonical = json.dumps({"crv": "P-256", "kty": "EC", "x": tjwk["x"], "y": tjwk["y"]}, separators=(",", ":"), sort_keys=True)
print(json.dumps({
    "thumbprint": b64(hashlib.sha256(canonical.encode()).digest()),
    "valid": es(base),
    "for_other_wallet": es({**base, "sub": req["other_wallet"], "jti": "session-2"}),
    "expired": es({**base, "iat": now - 4000, "exp": now - 3600}),
    "not_yet_valid": es({**base, "nbf": now + 3600}),
    "wrong_audience": es({**base, "aud": "https://attacker.example"}),
    "other_key": es(base, other, ojwk),
    "trusted_jwk_other_signer": es(base, other, tjwk),
    "hs256": jwt.encode(base, "a-shared-secret-long-enough-for-hs256!", algorithm="HS256", headers={"jwk": tjwk}),
    "none": jwt.encode(base, None, algorithm="none", headers={"jwk": tjwk}),
}))
"#;

/// Unseals `client`'s enclave through the KMS stand-in (genesis).
async fn unseal_genesis(client: &EnclaveClient) {
    let (kms, _proxy) = start_kms().await;
    match client.call(unseal(PINNED, "us-east-1", &kms)).await {
        Ok(Response::Unsealed(_)) => {}
        other => panic!("unseal: {other:?}"),
    }
}

/// The enclave's current seq.
async fn seq(client: &EnclaveClient) -> u64 {
    match client.call(Request::Status).await {
        Ok(Response::Status(s)) => s.seq,
        other => panic!("status: {other:?}"),
    }
}

fn mint_with(wallet: &str, proof: Option<agentkeys_wire::WalletProof>) -> Request {
    Request::MintJwt(agentkeys_wire::MintJwtRequest {
        wallet: wallet.into(),
        ttl_seconds: None,
        audience: None,
        proof,
    })
}

/// The claims of a compact JWT.
fn claims_of(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let part = jwt.split('.').nth(1).expect("claims");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

const WALLET_A: &str = "0x00000000000000000000000000000000000000a1";
const WALLET_B: &str = "0x00000000000000000000000000000000000000b2";

/// In `signed-session` mode the parent forwards the caller's session token; sessions
/// signed by PyJWT with the trusted key verify inside the enclave, and the token is for
/// the session's wallet whatever the parent names. Every session a hostile parent could
/// bring instead is refused, with no signature made and no seq taken.
#[tokio::test]
async fn the_enclave_signs_only_for_the_wallet_a_verified_session_names() {
    let now = agentkeys_attestation::now_unix_ms() / 1000;
    let sessions = python(
        PYJWT_SESSIONS,
        &serde_json::json!({"now": now, "issuer": ISSUER, "wallet": WALLET_A, "other_wallet": WALLET_B}),
    );
    let s = |name: &str| sessions[name].as_str().expect(name).to_string();
    let thumbprint = s("thumbprint");
    let enclave = Enclave::start_with(
        ISSUER,
        PINNED,
        &[
            "--auth-mode",
            "signed-session",
            "--session-key-thumbprint",
            &thumbprint,
        ],
    );
    let client = enclave.client();
    unseal_genesis(&client).await;
    let session = |name: &str| Some(agentkeys_wire::WalletProof::Session(s(name)));

    // The genuine session: a token for A, stating the rule and the proof.
    let minted = match client.call(mint_with("", session("valid"))).await {
        Ok(Response::Jwt(m)) => m,
        other => panic!("mint: {other:?}"),
    };
    assert_eq!(minted.wallet, WALLET_A);
    let claims = claims_of(&minted.jwt);
    assert_eq!(claims["agentkeys_auth"], "signed-session");
    assert_eq!(
        claims["agentkeys_proof_sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            s("valid").as_bytes()
        ))
    );
    assert_eq!(claims["agentkeys_proof_exp"], now + 600);
    let taken = seq(&client).await;

    let attempts: [(&str, Request, &str); 10] = [
        (
            "B's token with A's session",
            mint_with(WALLET_B, session("valid")),
            "proof is for",
        ),
        (
            "B's token on the parent's word alone",
            mint_with(WALLET_B, None),
            "no proof",
        ),
        (
            "an expired session",
            mint_with("", session("expired")),
            "expired",
        ),
        (
            "a session not valid yet",
            mint_with("", session("not_yet_valid")),
            "not valid before",
        ),
        (
            "a session for another issuer",
            mint_with("", session("wrong_audience")),
            "audience",
        ),
        (
            "a session signed by another key",
            mint_with("", session("other_key")),
            "not a session key this enclave trusts",
        ),
        (
            "the trusted key's JWK over another key's signature",
            mint_with("", session("trusted_jwk_other_signer")),
            "signature does not verify",
        ),
        ("an HS256 session", mint_with("", session("hs256")), "HS256"),
        (
            "an unsigned session (alg none)",
            mint_with("", session("none")),
            "\"none\"",
        ),
        (
            "a sign-in the enclave does not take",
            mint_with(
                "",
                Some(agentkeys_wire::WalletProof::WalletSignature {
                    message: "m".into(),
                    signature: vec![0; 65],
                }),
            ),
            "does not take wallet-signature",
        ),
    ];
    for (what, request, names) in attempts {
        let e = refused(&client, request).await;
        assert_eq!(e.kind, WireErrorKind::Unauthorized, "{what}: {e}");
        assert!(e.message.contains(names), "{what}: {e}");
        assert_eq!(
            seq(&client).await,
            taken,
            "{what}: a refused mint took a seq"
        );
    }
    // The session for B, genuinely signed, mints for B: the enclave follows the proof.
    match client
        .call(mint_with(WALLET_B, session("for_other_wallet")))
        .await
    {
        Ok(Response::Jwt(m)) => assert_eq!(m.wallet, WALLET_B),
        other => panic!("mint for B: {other:?}"),
    }
}

/// Signs `messages` with eth-account (`personal_sign`) under `key`; the signer's address
/// and the signatures.
const ETH_ACCOUNT_SIGN: &str = r#"
import json, sys
from eth_account import Account
from eth_account.messages import encode_defunct
req = json.load(sys.stdin)
acct = Account.from_key(req["key"])
sigs = []
for m in req["messages"]:
    sig = Account.sign_message(encode_defunct(text=m), private_key=req["key"]).signature.hex()
    sigs.append(sig if sig.startswith("0x") else "0x" + sig)
print(json.dumps({"address": acct.address, "signatures": sigs}))
"#;

/// A private key whose address is 0x2c7536E3605D9C16a7a3D7b1898e529396a65c23.
const SIGNER_KEY: &str = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
const SIGNER_ADDRESS: &str = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23";
/// Another wallet's key.
const INTRUDER_KEY: &str = "0x1111111111111111111111111111111111111111111111111111111111111111";

/// In `wallet-signature` mode the agent signs a Sign-In with Ethereum message with its
/// wallet (here with eth-account, code we did not write) over a nonce the enclave made;
/// the enclave recovers the signer and mints for exactly that address, once per nonce.
/// Every message a hostile parent could relay instead is refused, with no seq taken.
#[tokio::test]
async fn the_enclave_signs_only_for_the_wallet_that_signed_the_sign_in() {
    use agentkeys_dev::siwe_wallet::siwe_message;
    let enclave = Enclave::start_with(ISSUER, PINNED, &["--auth-mode", "wallet-signature"]);
    let client = enclave.client();
    unseal_genesis(&client).await;
    let nonce = || async {
        match client.call(Request::SiweNonce).await {
            Ok(Response::SiweNonce { nonce, .. }) => nonce,
            other => panic!("nonce: {other:?}"),
        }
    };
    let domain = "127.0.0.1:1";
    let now = agentkeys_attestation::now_unix_ms() / 1000;
    let message = |domain: &str, address: &str, nonce: &str, issued: u64, expires: u64| {
        siwe_message(
            domain,
            address,
            "http://127.0.0.1:1/",
            1,
            nonce,
            issued,
            expires,
        )
    };
    let good_nonce = nonce().await;
    let messages = [
        message(domain, SIGNER_ADDRESS, &good_nonce, now - 5, now + 120),
        message(
            "attacker.example",
            SIGNER_ADDRESS,
            &nonce().await,
            now - 5,
            now + 120,
        ),
        message(domain, SIGNER_ADDRESS, &nonce().await, now - 900, now - 600),
        message(domain, SIGNER_ADDRESS, &nonce().await, now - 5, now + 3600),
        message(
            domain,
            SIGNER_ADDRESS,
            "abcdef0123456789",
            now - 5,
            now + 120,
        ),
    ];
    let signed = python(
        ETH_ACCOUNT_SIGN,
        &serde_json::json!({"key": SIGNER_KEY, "messages": messages}),
    );
    assert_eq!(signed["address"], SIGNER_ADDRESS);
    // The same genuine message signed by another wallet's key.
    let intruder = python(
        ETH_ACCOUNT_SIGN,
        &serde_json::json!({"key": INTRUDER_KEY, "messages": [messages[0].clone()]}),
    );
    let signature = |v: &serde_json::Value, i: usize| {
        let hex_sig = v["signatures"][i].as_str().expect("signature");
        hex::decode(hex_sig.trim_start_matches("0x")).expect("hex")
    };
    let sign_in = |message: &str, signature: Vec<u8>| {
        Some(agentkeys_wire::WalletProof::WalletSignature {
            message: message.to_string(),
            signature,
        })
    };

    let minted = match client
        .call(mint_with("", sign_in(&messages[0], signature(&signed, 0))))
        .await
    {
        Ok(Response::Jwt(m)) => m,
        other => panic!("sign-in mint: {other:?}"),
    };
    assert_eq!(minted.wallet, SIGNER_ADDRESS.to_lowercase());
    assert_eq!(claims_of(&minted.jwt)["agentkeys_auth"], "wallet-signature");
    let taken = seq(&client).await;

    let mut malformed = messages[0].replace("Version: 1", "Version: 2");
    malformed.push_str("\nExtra: field");
    let attempts = [
        (
            "the same message again (reused nonce)",
            sign_in(&messages[0], signature(&signed, 0)),
            "already used",
        ),
        (
            "a message for another domain",
            sign_in(&messages[1], signature(&signed, 1)),
            "domain",
        ),
        (
            "an expired message",
            sign_in(&messages[2], signature(&signed, 2)),
            "expired at",
        ),
        (
            "a message living an hour",
            sign_in(&messages[3], signature(&signed, 3)),
            "more than the 300 s accepted",
        ),
        (
            "a nonce the enclave never made",
            sign_in(&messages[4], signature(&signed, 4)),
            "not issued by this issuer",
        ),
        (
            "another wallet's signature",
            sign_in(&messages[0], signature(&intruder, 0)),
            "not by its address",
        ),
        (
            "a malformed message",
            sign_in(&malformed, signature(&signed, 0)),
            "SIWE message",
        ),
        (
            "a 64-byte signature",
            sign_in(&messages[0], vec![1; 64]),
            "65 bytes",
        ),
        ("no proof at all", None, "no proof"),
    ];
    for (what, proof, names) in attempts {
        let e = refused(&client, mint_with("", proof)).await;
        assert_eq!(e.kind, WireErrorKind::Unauthorized, "{what}: {e}");
        assert!(e.message.contains(names), "{what}: {e}");
        assert_eq!(
            seq(&client).await,
            taken,
            "{what}: a refused mint took a seq"
        );
    }
    // The parent naming another wallet beside a genuine sign-in is refused too.
    let fresh = nonce().await;
    let m = message(domain, SIGNER_ADDRESS, &fresh, now - 5, now + 120);
    let s = python(
        ETH_ACCOUNT_SIGN,
        &serde_json::json!({"key": SIGNER_KEY, "messages": [m.clone()]}),
    );
    let e = refused(&client, mint_with(WALLET_B, sign_in(&m, signature(&s, 0)))).await;
    assert!(e.message.contains("proof is for"), "{e}");
}
