//! Fault injection against the real binaries, each with its audit effect asserted:
//! the enclave killed under load, the broker killed with SIGKILL under load, a slow or
//! garbage-answering session backend and STS, the audit disk full or read-only, and the
//! KMS stand-in down at start-up.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkeys_e2e::faults::{
    self, audit_verify, audit_verify_live, drive, missing_rows, received_tokens, status_counts,
    BackendMode, Group, Programmable, StsMode, Tmpfs, BACKEND_WALLET, GOOD_BEARER_PREFIX,
};
use agentkeys_e2e::{audit_rows, binary, closed_port, wait_for, DevOptions, DevStack, WALLET};

/// Longest any single request may take before it counts as a hang: the broker's own
/// timeouts (enclave 5 s, STS 5 s, backend 2 s) plus generous slack for a loaded 2-core
/// machine.
const ANSWER_BOUND: Duration = Duration::from_secs(20);

fn mint_clients(
    stack: &DevStack,
    clients: usize,
    max: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<faults::Outcome>> {
    let url = stack.url("/v1/mint-oidc-jwt");
    let bearers: Vec<String> = (0..clients)
        .map(|i| stack.create_session(&format!("0x{:040x}", 0xa0 + i)))
        .collect();
    std::thread::spawn(move || {
        drive(clients, max, ANSWER_BOUND, stop, move |c, _, http| {
            ("mint", http.post(&url).bearer_auth(&bearers[c]))
        })
    })
}

fn readyz(stack: &DevStack) -> (u16, serde_json::Value) {
    let (status, body) = stack.get("/readyz");
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

fn wait_ready(stack: &DevStack, timeout: Duration) {
    wait_for(timeout, || (readyz(stack).0 == 200).then_some(())).unwrap_or_else(|_| {
        panic!(
            "broker not ready again within {timeout:?}: {:?}\n{}",
            readyz(stack),
            stack.log_text()
        )
    });
}

#[test]
fn enclave_killed_under_load_is_503_then_recovers_with_every_token_audited() {
    let mut stack = DevStack::start();
    let unseals_before = stack.metric("agentkeys_enclave_unseals_total");
    let stop = Arc::new(AtomicBool::new(false));
    let load = mint_clients(&stack, 4, Duration::from_secs(40), stop.clone());

    std::thread::sleep(Duration::from_millis(1500));
    let killed = Instant::now();
    let old_pid = stack.info.enclave_pid;
    agentkeys_e2e::signal(old_pid, "KILL");
    // The dev stack restarts the child and records its new pid.
    let new_pid = wait_for(Duration::from_secs(30), || {
        let i = stack.reload_info().ok()?;
        (i.enclave_pid != old_pid && i.enclave_pid != 0).then_some(i.enclave_pid)
    })
    .expect("dev restarts the enclave child");
    // Recovery by itself, re-unseal included.
    wait_ready(&stack, Duration::from_secs(40));
    let recovered = killed.elapsed();
    // Keep the load running a little after recovery, then stop.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let outcomes = load.join().expect("load");

    let counts = status_counts(&outcomes);
    eprintln!("enclave kill: pid {old_pid} -> {new_pid}, ready again after {recovered:?}, answers {counts:?}");
    for o in &outcomes {
        assert!(
            matches!(o.status, Some(200) | Some(503)),
            "only 200 or 503 while the enclave dies and comes back; got {:?} {} after {:?} ({:?})",
            o.status,
            o.body,
            o.elapsed,
            o.error
        );
        assert!(o.elapsed < ANSWER_BOUND, "an answer took {:?}", o.elapsed);
        if o.status == Some(503) {
            assert_eq!(o.json()["error"], "enclave_unavailable", "{}", o.body);
            assert!(
                !o.body.contains("eyJ"),
                "a 503 carries no token: {}",
                o.body
            );
        }
    }
    let ok_after = outcomes
        .iter()
        .filter(|o| o.status == Some(200) && o.at > recovered + Duration::from_millis(1500))
        .count();
    assert!(
        ok_after > 0,
        "minting works again after recovery: {counts:?}"
    );
    assert!(
        stack.metric("agentkeys_enclave_unseals_total") > unseals_before,
        "the broker re-unsealed the restarted enclave"
    );

    // Every token a client received has its durable success row.
    let tokens = received_tokens(&outcomes);
    let rows = audit_rows(&stack.info.audit_db);
    let missing = missing_rows(&tokens, &rows);
    assert!(missing.is_empty(), "tokens without their row: {missing:?}");
    let (ok, out) = audit_verify(&stack.info.audit_db, &[]);
    assert!(ok, "audit verify after the enclave restart: {out}");
}

/// The whole `dev` process group (broker, stand-ins, enclave) is SIGKILLed while six
/// clients mint: every token a client received has its durable row, the chain verifies
/// straight after the crash, and a restart on the same data directory and port serves
/// the same key and goes on minting.
#[test]
fn broker_sigkilled_under_load_loses_no_audited_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    // The dev issuer contains the port and the sealed seed is bound to the issuer: the
    // restart uses the same port so that it re-opens the same seed.
    let port = closed_port().to_string();
    let opts = DevOptions {
        data_dir: Some(data.clone()),
        extra: vec!["--port".into(), port],
    };
    let mut stack = DevStack::start_with(opts.clone());
    let ready = faults::ready_json(&stack.ready_file).expect("ready file");
    let dev_pid = ready["pid"].as_u64().expect("dev pid in the ready file") as u32;
    let kid_before = {
        let (_, jwks) = stack.get("/.well-known/jwks.json");
        String::from_utf8_lossy(&jwks).into_owned()
    };

    let stop = Arc::new(AtomicBool::new(false));
    let load = mint_clients(&stack, 6, Duration::from_secs(30), stop.clone());
    std::thread::sleep(Duration::from_secs(3));
    // The broker runs inside the dev process; SIGKILL the dev process group (broker,
    // stand-ins and the enclave child) with requests in flight.
    faults::kill_group(dev_pid, "KILL");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let outcomes = load.join().expect("load");
    stack.stop();

    let tokens = received_tokens(&outcomes);
    let counts = status_counts(&outcomes);
    eprintln!(
        "broker SIGKILL: {} tokens received before the kill, answers {counts:?}",
        tokens.len()
    );
    assert!(
        !tokens.is_empty(),
        "some tokens were issued before the kill"
    );
    for o in &outcomes {
        assert!(
            matches!(o.status, Some(200) | None),
            "before the kill every answer is 200, after it there is no answer: {:?} {}",
            o.status,
            o.body
        );
    }

    // Offline, straight after the crash: the chain is intact and every token has its row.
    let db = data.join("audit.db");
    let (ok, out) = audit_verify(&db, &[]);
    assert!(ok, "audit verify after SIGKILL: {out}");
    let missing = missing_rows(&tokens, &audit_rows(&db));
    assert!(missing.is_empty(), "tokens without their row: {missing:?}");

    // Restart on the same data directory: same key, chain continues, still verifies.
    let stack = DevStack::start_with(opts);
    let (_, jwks) = stack.get("/.well-known/jwks.json");
    assert_eq!(
        String::from_utf8_lossy(&jwks),
        kid_before,
        "the key survives the crash"
    );
    let bearer = stack.create_session(WALLET);
    let (status, body) = stack.post("/v1/mint-oidc-jwt", Some(&bearer), "");
    assert_eq!(status, 200, "{body}");
    let (ok, out) = audit_verify(&db, &[]);
    assert!(ok, "audit verify after restart: {out}");
    let missing = missing_rows(&tokens, &audit_rows(&db));
    assert!(missing.is_empty(), "tokens without their row: {missing:?}");
}

fn programmable_stack(p: &Programmable) -> DevStack {
    DevStack::start_with(DevOptions {
        extra: vec![
            "--auth-mode".into(),
            "parent-vouched".into(),
            "--backend-url".into(),
            p.url.clone(),
            "--sts-url".into(),
            p.url.clone(),
            "--backend-timeout-ms".into(),
            "1000".into(),
            "--session-cache-seconds".into(),
            "0".into(),
        ],
        ..Default::default()
    })
}

fn rows_of(stack: &DevStack, event: &str) -> usize {
    stack
        .audit_rows()
        .iter()
        .filter(|r| r["event"] == event)
        .count()
}

fn timed_post(stack: &DevStack, path: &str, bearer: &str) -> (u16, serde_json::Value, Duration) {
    let t = Instant::now();
    let (status, body) = stack.post(path, Some(bearer), "");
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        t.elapsed(),
    )
}

#[test]
fn backend_slow_or_garbage_is_502_within_the_timeout() {
    let p = Programmable::start();
    let stack = programmable_stack(&p);
    let bearer = format!("{GOOD_BEARER_PREFIX}backend-faults");
    // Sanity: the programmable backend works.
    let (status, body, _) = timed_post(&stack, "/v1/mint-oidc-jwt", &bearer);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["wallet"], BACKEND_WALLET);

    // Backend timeout is 1 s; bound = timeout + slack for a loaded machine.
    let bound = Duration::from_secs(8);
    let cases: Vec<(&str, BackendMode)> = vec![
        (
            "slow (3 s > 1 s timeout)",
            BackendMode {
                delay: Duration::from_secs(3),
                ..Default::default()
            },
        ),
        (
            "garbage 200 body",
            BackendMode {
                body: Some(b"<html>not json at all".to_vec()),
                ..Default::default()
            },
        ),
        (
            "200 with a wallet that is not a wallet",
            BackendMode {
                body: Some(br#"{"wallet":"0xZZ"}"#.to_vec()),
                ..Default::default()
            },
        ),
        (
            "200 with a huge body",
            BackendMode {
                body: Some(vec![b'{'; 1024 * 1024]),
                ..Default::default()
            },
        ),
        (
            "500",
            BackendMode {
                status: Some(500),
                ..Default::default()
            },
        ),
        (
            "hang-up without answering",
            BackendMode {
                hang_up: true,
                ..Default::default()
            },
        ),
    ];
    for (name, mode) in cases {
        p.set_backend(mode);
        let before = rows_of(&stack, "backend_failed");
        for path in ["/v1/mint-oidc-jwt", "/v1/mint-aws-creds"] {
            let (status, body, took) = timed_post(&stack, path, &bearer);
            assert_eq!(status, 502, "backend {name} on {path}: {body}");
            assert_eq!(body["error"], "backend_error", "{name}: {body}");
            assert!(took < bound, "backend {name}: answered after {took:?}");
            assert!(body.get("jwt").is_none() && body.get("session_token").is_none());
        }
        assert_eq!(
            rows_of(&stack, "backend_failed"),
            before + 2,
            "backend {name}: one backend_failed row per request"
        );
    }
    // A 401 from the backend stays a 401 with an auth_failed row.
    p.set_backend(BackendMode {
        status: Some(401),
        ..Default::default()
    });
    let before = rows_of(&stack, "auth_failed");
    let (status, body, _) = timed_post(&stack, "/v1/mint-oidc-jwt", &bearer);
    assert_eq!(status, 401, "{body}");
    assert_eq!(rows_of(&stack, "auth_failed"), before + 1);
    // Back to normal: works again.
    p.set_backend(BackendMode::default());
    let (status, body, _) = timed_post(&stack, "/v1/mint-oidc-jwt", &bearer);
    assert_eq!(status, 200, "{body}");
    let (ok, out) = audit_verify(&stack.info.audit_db, &[]);
    assert!(ok, "{out}");
}

#[test]
fn sts_slow_or_garbage_is_502_within_the_timeout() {
    let p = Programmable::start();
    let stack = programmable_stack(&p);
    let bearer = format!("{GOOD_BEARER_PREFIX}sts-faults");
    // The dev stack's STS timeout is 5 s for the whole operation (retries included).
    let bound = Duration::from_secs(15);
    let cases: Vec<(&str, StsMode, Option<&str>)> = vec![
        ("garbage 200", StsMode::default(), None),
        (
            "slow (8 s > 5 s timeout)",
            StsMode {
                delay: Duration::from_secs(8),
                ..Default::default()
            },
            Some("Timeout"),
        ),
        (
            "500 with garbage",
            StsMode {
                status: Some(500),
                ..Default::default()
            },
            None,
        ),
        (
            "truncated XML",
            StsMode {
                body: Some(
                    b"<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIA".to_vec(),
                ),
                ..Default::default()
            },
            None,
        ),
        (
            "error XML",
            StsMode {
                status: Some(400),
                body: Some(
                    b"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>no</Message></Error><RequestId>x</RequestId></ErrorResponse>".to_vec(),
                ),
                ..Default::default()
            },
            Some("InvalidIdentityToken"),
        ),
    ];
    for (name, mode, code) in cases {
        p.set_sts(mode);
        let before = rows_of(&stack, "sts_failed");
        let (status, body, took) = timed_post(&stack, "/v1/mint-aws-creds", &bearer);
        assert_eq!(status, 502, "STS {name}: {body}");
        assert_eq!(body["error"], "sts_error", "STS {name}: {body}");
        assert!(took < bound, "STS {name}: answered after {took:?}");
        assert!(body.get("secret_access_key").is_none());
        if let Some(code) = code {
            assert!(
                body["message"].as_str().unwrap_or("").contains(code),
                "STS {name}: message names {code}: {body}"
            );
        }
        assert_eq!(
            rows_of(&stack, "sts_failed"),
            before + 1,
            "STS {name}: one sts_failed row"
        );
    }
    let rows = stack.audit_rows();
    let failed: Vec<_> = rows.iter().filter(|r| r["event"] == "sts_failed").collect();
    assert!(
        failed.iter().all(|r| r["jti"].is_string()),
        "sts_failed rows account for the JWT the enclave signed"
    );
    let (ok, out) = audit_verify(&stack.info.audit_db, &[]);
    assert!(ok, "{out}");
}

/// The audit store made unwritable while the broker runs: `full` puts the data directory
/// on a small tmpfs and fills it up; `ro` makes the store read-only through the dev
/// stack's fault switch (a decorator over the audit store that refuses every write: the
/// kernel refuses to remount a file system read-only while the database is open for
/// writing, so a real remount cannot be used).
fn audit_fs_fault(fault: &str) {
    let fs = match fault {
        "full" => match Tmpfs::mount("4M") {
            Ok(fs) => Some(fs),
            Err(e) => {
                eprintln!("SKIPPED: cannot mount a tmpfs here ({e}); e2e.rs covers the API behaviour through the fault switch");
                return;
            }
        },
        _ => None,
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let data = fs
        .as_ref()
        .map(|f| f.path.join("data"))
        .unwrap_or_else(|| tmp.path().join("data"));
    let stack = DevStack::start_with(DevOptions {
        data_dir: Some(data.clone()),
        ..Default::default()
    });
    let switch = |what: &str| {
        let r = stack
            .http
            .post(stack.url("/dev/faults/audit"))
            .body(what.to_string())
            .send()
            .expect("fault switch");
        assert_eq!(r.status().as_u16(), 200, "fault switch {what}");
    };
    let bearer = stack.create_session(WALLET);
    let (status, body) = stack.post("/v1/mint-oidc-jwt", Some(&bearer), "");
    assert_eq!(status, 200, "{body}");

    let filler = data.join("filler");
    match &fs {
        Some(fs) => {
            let n = fs.fill(&filler);
            eprintln!("filled the tmpfs with {n} bytes");
        }
        None => switch("refuse_writes"),
    }
    // Every mint now fails with 500 and returns nothing. SQLite may still fit a few
    // rows in pages it already owns, so mint until the store refuses (bounded).
    let mut refused = None;
    for i in 0..400 {
        let (status, body) = stack.post("/v1/mint-oidc-jwt", Some(&bearer), "");
        match status {
            200 => continue,
            500 => {
                refused = Some((i, body));
                break;
            }
            other => panic!("audit {fault}: unexpected {other}: {body}"),
        }
    }
    let (i, body) = refused.unwrap_or_else(|| panic!("audit {fault}: 400 mints still succeeded"));
    eprintln!("audit {fault}: refused after {i} more mints");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON error");
    assert_eq!(v["error"], "audit_failure", "{body}");
    assert!(!body.contains("eyJ"), "no token in the 500 body: {body}");
    for _ in 0..3 {
        let (status, body) = stack.post("/v1/mint-aws-creds", Some(&bearer), "");
        assert_eq!(status, 500, "{body}");
        assert!(!body.contains("secret_access_key") && !body.contains("session_token"));
    }
    let (status, rz) = readyz(&stack);
    assert_eq!(
        status, 503,
        "readyz while the audit store is unwritable: {rz}"
    );
    assert_eq!(rz["checks"]["audit"]["ok"], false, "{rz}");

    // Space / permission returns: recovery without a restart.
    match &fs {
        Some(_) => std::fs::remove_file(&filler).expect("remove filler"),
        None => switch("none"),
    }
    wait_ready(&stack, Duration::from_secs(30));
    let (status, body) = stack.post("/v1/mint-oidc-jwt", Some(&bearer), "");
    assert_eq!(status, 200, "minting works again: {body}");
    let token = serde_json::from_str::<serde_json::Value>(&body).expect("json");
    let rows = stack.audit_rows();
    assert!(
        rows.iter()
            .any(|r| r["id"] == token["audit_id"] && r["outcome"] == "success"),
        "the new token has its row"
    );
    // The withheld tokens are accounted for once the disk is back.
    let withheld = rows
        .iter()
        .filter(|r| r["event"] == "mint_withheld")
        .count();
    eprintln!("audit {fault}: {withheld} mint_withheld rows written after recovery");
    // One refused mint and three refused credential calls: each had a JWT signed by
    // the enclave, each is accounted for by a mint_withheld row carrying its jti.
    assert_eq!(
        withheld, 4,
        "the JWTs signed but withheld during the fault are accounted for"
    );
    assert!(
        rows.iter()
            .filter(|r| r["event"] == "mint_withheld")
            .all(|r| r["jti"].is_string() && r["outcome"] != "success"),
        "mint_withheld rows name the withheld JWT"
    );
    let (ok, out) = audit_verify(&stack.info.audit_db, &[]);
    assert!(ok, "audit verify after recovery: {out}");
}

/// A real full file system: the data directory is on a 4 MiB tmpfs that is filled while
/// the broker runs. Mounting a tmpfs needs root (CAP_SYS_ADMIN); without it the test
/// prints `SKIPPED` and passes (an unprivileged process cannot make a real disk full
/// without filling a shared one), and `audit_read_only_is_500_without_token_then_recovers`
/// still covers the same API behaviour.
#[test]
fn audit_disk_full_is_500_without_token_then_recovers() {
    audit_fs_fault("full");
}

/// The audit store refuses writes (the dev stack's fault switch) while the
/// broker runs: same expectations as the disk-full case.
#[test]
fn audit_read_only_is_500_without_token_then_recovers() {
    audit_fs_fault("ro");
}

fn first_line_url(log: &Path, timeout: Duration) -> String {
    wait_for(timeout, || {
        let t = std::fs::read_to_string(log).ok()?;
        let at = t.find("http://")?;
        let url: String = t[at..].chars().take_while(|c| !c.is_whitespace()).collect();
        Some(url)
    })
    .unwrap_or_else(|_| panic!("no URL printed in {}", log.display()))
}

/// The key this test's enclave is pinned to, in the KMS stand-in's own account.
const KMS_KEY_ARN: &str =
    "arn:aws:kms:us-east-1:000000000000:key/3c2b1a09-8f7e-4d6c-b5a4-93827160f5e4";

#[test]
fn kms_down_at_start_is_retried_with_backoff_and_reported() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let broker = binary("agentkeys-broker");
    let dev = binary("agentkeys-dev");

    let mut backend_cmd = Command::new(&dev);
    backend_cmd.args(["stand-in", "backend", "--listen", "127.0.0.1:0"]);
    let backend = Group::spawn(backend_cmd, &d.join("backend.log")).expect("backend");
    let backend_url = first_line_url(&backend.log, Duration::from_secs(30));

    let kms_port = closed_port();
    let broker_port = closed_port();
    let issuer = format!("http://127.0.0.1:{broker_port}");
    let socket = d.join("enclave.sock");

    let mut enclave_cmd = Command::new(&dev);
    enclave_cmd
        .args(["enclave-child", "--", "--mock", "--usock"])
        .arg(&socket)
        .args(["--issuer", &issuer, "--kms-key-arn", KMS_KEY_ARN])
        // The backend stand-in here issues unsigned sessions: the parent's word.
        .args(["--auth-mode", "parent-vouched"]);
    let _enclave = Group::spawn(enclave_cmd, &d.join("enclave.log")).expect("enclave");

    let (bind, kms_url) = (
        format!("127.0.0.1:{broker_port}"),
        format!("http://127.0.0.1:{kms_port}"),
    );
    let sealed_seed = d.join("sealed-seed.bin");
    let mut serve = agentkeys_e2e::broker_serve(&agentkeys_e2e::BrokerHost {
        binary: &broker,
        issuer: &issuer,
        bind: &bind,
        backend_url: &backend_url,
        enclave_socket: &socket,
        sealed_seed: &sealed_seed,
        kms_key_arn: KMS_KEY_ARN,
        kms_url: &kms_url,
    });
    serve
        .arg("--dev-mode")
        .arg("--audit-db")
        .arg(d.join("audit.db"));
    let serve = Group::spawn(serve, &d.join("serve.log")).expect("serve");

    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let readyz = || -> Option<(u16, serde_json::Value)> {
        let r = http.get(format!("{issuer}/readyz")).send().ok()?;
        let s = r.status().as_u16();
        Some((s, r.json().unwrap_or_default()))
    };
    // Not ready, and says why, for as long as KMS is down.
    let (status, why) = wait_for(Duration::from_secs(30), readyz)
        .unwrap_or_else(|_| panic!("serve does not answer:\n{}", serve.log_text()));
    assert_eq!(status, 503, "{why}");
    std::thread::sleep(Duration::from_secs(6));
    let (status, why) = readyz().expect("readyz");
    assert_eq!(status, 503, "not ready while KMS is down: {why}");
    assert_eq!(why["checks"]["enclave"]["ok"], false, "{why}");
    let reason = why["checks"]["enclave"]["error"]
        .as_str()
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(
        reason.contains("kms") || reason.contains("unseal"),
        "readyz names the KMS/unseal failure: {why}"
    );
    // Retries with growing waits (the log names them).
    let log = serve.log_text();
    let retries = log.matches("retry_in").count();
    assert!(retries >= 1, "the broker logs its retries:\n{log}");

    // KMS comes up: the broker unseals by itself.
    let mut kms_cmd = Command::new(&dev);
    kms_cmd
        .args([
            "stand-in",
            "kms",
            "--listen",
            &format!("127.0.0.1:{kms_port}"),
        ])
        .arg("--state-file")
        .arg(d.join("kms-state.json"));
    let _kms = Group::spawn(kms_cmd, &d.join("kms.log")).expect("kms");
    let came_up = Instant::now();
    wait_for(Duration::from_secs(40), || {
        readyz().filter(|(s, _)| *s == 200).map(|_| ())
    })
    .unwrap_or_else(|_| {
        panic!(
            "not ready after KMS came up: {:?}\n{}",
            readyz(),
            serve.log_text()
        )
    });
    eprintln!(
        "KMS down at start: {retries} retry log lines; ready {:?} after KMS came up",
        came_up.elapsed()
    );
    let v: serde_json::Value = http
        .post(format!("{backend_url}/session/create"))
        .json(&serde_json::json!({ "wallet": WALLET }))
        .send()
        .expect("backend")
        .json()
        .expect("json");
    let token = v["token"].as_str().expect("token");
    let r = http
        .post(format!("{issuer}/v1/mint-oidc-jwt"))
        .bearer_auth(token)
        .send()
        .expect("mint");
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        d.join("sealed-seed.bin").exists(),
        "genesis stored the sealed seed"
    );
}

/// The enclave is stopped (SIGSTOP) while a mint waits for it: the call times out with
/// 503 and no token. When the enclave resumes it still signs that token and counts its
/// seq; the broker records the token it will never send as `mint_withheld`, so the log
/// still matches a fresh attested checkpoint.
#[test]
fn an_enclave_answer_after_the_timeout_is_recorded_as_withheld() {
    let stack = DevStack::start();
    let bearer = stack.create_session(WALLET);
    let (status, body) = stack.post("/v1/mint-oidc-jwt", Some(&bearer), "");
    assert_eq!(status, 200, "{body}");
    let pid = stack.info.enclave_pid;
    agentkeys_e2e::stop(pid);
    let (status, body, waited) = timed_post(&stack, "/v1/mint-oidc-jwt", &bearer);
    agentkeys_e2e::signal(pid, "CONT");
    eprintln!("mint against a stopped enclave: {status} after {waited:?}: {body}");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "enclave_unavailable", "{body}");
    assert!(
        !body.to_string().contains("eyJ"),
        "a 503 carries no token: {body}"
    );
    let withheld = wait_for(Duration::from_secs(20), || {
        let rows = stack.audit_rows();
        rows.into_iter().find(|r| r["event"] == "mint_withheld")
    })
    .expect("the late answer is recorded");
    assert_eq!(withheld["enclave_seq"], 2, "{withheld}");
    assert_eq!(withheld["outcome"], "failure", "{withheld}");
    wait_ready(&stack, Duration::from_secs(40));
    let (status, body) = stack.post("/v1/mint-oidc-jwt", Some(&bearer), "");
    assert_eq!(status, 200, "{body}");
    let (ok, out) = audit_verify_live(&stack);
    assert!(ok, "audit verify against a live checkpoint: {out}");
    assert!(out.contains("seq 1..3"), "{out}");
}
