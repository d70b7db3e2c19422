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

    /// The shipped enclave binary in mock mode for `issuer`, pinned to `key`.
    fn start_for(issuer: &str, key: &str) -> Enclave {
        let dir = tempfile::tempdir().expect("tmp");
        let socket = dir.path().join("enclave.sock");
        let child = Command::new(binary("agentkeys-enclave"))
            .args(["--mock", "--usock"])
            .arg(&socket)
            .args(["--issuer", issuer, "--kms-key-arn", key])
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
