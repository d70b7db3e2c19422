//! End-to-end tests: they start the shipped `agentkeys-dev dev` (enclave child with
//! the mock NSM, KMS/STS/backend stand-ins, broker) and talk to it over loopback only.

use std::time::{Duration, Instant};

use agentkeys_e2e::faults::{Programmable, StsMode};
use agentkeys_e2e::*;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn rows_with_event(stack: &DevStack, event: &str) -> Vec<serde_json::Value> {
    stack
        .audit_rows()
        .into_iter()
        .filter(|r| r["event"] == event)
        .collect()
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

fn assert_no_secret(body: &str) {
    assert!(!body.contains("eyJ"), "a JWT leaked in {body}");
    assert!(!body.contains("\"jwt\""), "a jwt member in {body}");
    assert!(!body.contains("secret_access_key"), "credentials in {body}");
}

#[test]
fn happy_path_jwt_verifies_and_sts_exchanges() {
    let stack = DevStack::start();
    let token = stack.create_session(WALLET);
    let (status, body) = stack.post("/v1/mint-oidc-jwt", Some(&token), "");
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    let jwt = v["jwt"].as_str().unwrap().to_string();
    assert_eq!(v["wallet"], WALLET);
    assert!(v["audit_id"].as_i64().unwrap() > 0);
    assert!(v["expiration"].as_str().unwrap().ends_with('Z'));

    // Independent verification with `jsonwebtoken` against the served JWKS.
    let (s, jwks) = stack.get("/.well-known/jwks.json");
    assert_eq!(s, 200);
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&jwks).unwrap();
    let header = jsonwebtoken::decode_header(&jwt).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let kid = header.kid.unwrap();
    assert_eq!(v["kid"], kid.as_str());
    let jwk = set.find(&kid).expect("kid in JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["sts.amazonaws.com"]);
    validation.set_issuer(&[stack.info.broker_url.as_str()]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&jwt, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], format!("agentkeys:agent:{WALLET}"));
    assert_eq!(
        claims["https://aws.amazon.com/tags"]["principal_tags"]["agentkeys_user_wallet"][0],
        WALLET
    );
    // No key_ops, no private members.
    let raw: serde_json::Value = serde_json::from_slice(&jwks).unwrap();
    for k in raw["keys"].as_array().unwrap() {
        assert!(k.get("key_ops").is_none() && k.get("d").is_none());
    }

    // The STS stand-in accepts the JWT directly through the real aws-sdk-sts.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sts_url = stack.info.sts_url.clone();
    let creds = rt.block_on(async move {
        let conf = aws_sdk_sts::Config::builder()
            .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
            .region(aws_sdk_sts::config::Region::new("us-east-1"))
            .endpoint_url(sts_url)
            .build();
        aws_sdk_sts::Client::from_conf(conf)
            .assume_role_with_web_identity()
            .role_arn("arn:aws:iam::000000000000:role/agentkeys-data-role")
            .role_session_name("e2e-direct")
            .web_identity_token(jwt)
            .send()
            .await
    });
    let creds = creds
        .expect("STS stand-in accepts the JWT")
        .credentials
        .unwrap();
    assert!(!creds.access_key_id().is_empty());

    // And through the broker.
    let (status, body) = stack.post("/v1/mint-aws-creds", Some(&token), "");
    assert_eq!(status, 200, "{body}");
    let c = json(&body);
    for k in [
        "access_key_id",
        "secret_access_key",
        "session_token",
        "expiration",
    ] {
        assert!(!c[k].as_str().unwrap().is_empty(), "{k}");
    }
    assert_eq!(c["wallet"], WALLET);

    // Each answer has its durable row.
    let rows = stack.audit_rows();
    assert!(rows
        .iter()
        .any(|r| r["event"] == "mint_jwt" && r["id"] == v["audit_id"]));
    assert!(rows
        .iter()
        .any(|r| r["event"] == "mint_aws_creds" && r["id"] == c["audit_id"]));
}

#[test]
fn discovery_jwks_attestation_and_metrics() {
    let stack = DevStack::start();
    let (s, d) = stack.get("/.well-known/openid-configuration");
    assert_eq!(s, 200);
    let d: serde_json::Value = serde_json::from_slice(&d).unwrap();
    assert_eq!(d["issuer"], stack.info.broker_url.as_str());
    assert_eq!(
        d["nitro_attestation_uri"],
        stack.url("/.well-known/nitro-attestation").as_str()
    );
    let r = stack
        .http
        .get(stack.url("/.well-known/jwks.json"))
        .send()
        .unwrap();
    assert!(r
        .headers()
        .get("cache-control")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("max-age="));
    let (s, body) = stack.get("/.well-known/nitro-attestation?nonce=zz");
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&body));
    let long = "00".repeat(513);
    let (s, _) = stack.get(&format!("/.well-known/nitro-attestation?nonce={long}"));
    assert_eq!(s, 400);
    let (s, body) = stack.get("/.well-known/nitro-attestation?nonce=0102");
    assert_eq!(s, 200);
    let a: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(a["document"].as_str().unwrap().len() > 100);
    let (s, h) = stack.get("/healthz");
    assert_eq!((s, h.as_slice()), (200, b"ok".as_slice()));
    let (s, r) = stack.get("/readyz");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&r));
    let (s, m) = stack.get("/metrics");
    assert_eq!(s, 200);
    assert!(String::from_utf8_lossy(&m).contains("agentkeys_enclave_ready 1"));
}

#[test]
fn attest_cli_verifies_live_issuer() {
    let stack = DevStack::start();
    let root = stack.info.mock_root_pem.display().to_string();
    // The dev stack writes the mock image's measurements, as nitro-cli does for a real one.
    let measurements = stack
        .info
        .data_dir
        .join("mock-measurements.json")
        .display()
        .to_string();
    let issuer = stack.info.broker_url.as_str();
    let mock = ["--root", root.as_str(), "--allow-mock-root"];
    let out = run(
        "agentkeys-attest",
        &[
            &["verify", "--issuer", issuer][..],
            &mock,
            &["--measurements", &measurements],
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The attestation states the pinned KMS key; an auditor who names it, and the kid the
    // broker serves, passes; one who expects another key or another kid does not.
    let kid = stack.served_kid();
    let pinned = agentkeys_dev::stack::DEV_KMS_KEY_ARN;
    let expecting = |arn: &str, kid: &str| {
        run(
            "agentkeys-attest",
            &[
                &["verify", "--issuer", issuer][..],
                &mock,
                &["--measurements", &measurements],
                &["--kms-key-arn", arn, "--expect-kid", kid],
            ]
            .concat(),
        )
    };
    let out = expecting(pinned, &kid);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(pinned));
    let other = "arn:aws:kms:us-east-1:444455556666:key/7e2d1c0b-4a3f-4b5e-8c9d-0e1f2a3b4c5d";
    assert_eq!(expecting(other, &kid).status.code(), Some(1));
    assert_eq!(expecting(pinned, "not-the-kid").status.code(), Some(1));
    // Without a PCR policy the auditor's check is refused as a usage error.
    let out = run(
        "agentkeys-attest",
        &[&["verify", "--issuer", issuer][..], &mock].concat(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no PCR policy"));
    // Without the explicit mock root, the AWS root refuses the mock chain.
    let out = run(
        "agentkeys-attest",
        &[
            "verify",
            "--issuer",
            issuer,
            "--measurements",
            &measurements,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
}

fn audit_verify(stack: &DevStack, extra: &[&str]) -> std::process::Output {
    let db = stack.info.audit_db.display().to_string();
    let mut args = vec!["audit", "verify", "--db", db.as_str()];
    args.extend_from_slice(extra);
    run("agentkeys-broker", &args)
}

#[test]
fn audit_verify_passes_with_live_checkpoint() {
    let stack = DevStack::start();
    let token = stack.create_session(WALLET);
    for _ in 0..5 {
        assert_eq!(stack.post("/v1/mint-oidc-jwt", Some(&token), "").0, 200);
    }
    let (ok, out) = agentkeys_e2e::faults::audit_verify_live(&stack);
    assert!(ok, "{out}");
}

#[test]
fn no_bearer_is_401_without_a_row() {
    let stack = DevStack::start();
    let before = stack.audit_rows().len();
    let (status, body) = stack.post("/v1/mint-oidc-jwt", None, "");
    assert_eq!(status, 401, "{body}");
    assert_eq!(json(&body)["error"], "unauthorized");
    let (status, _) = stack.post("/v1/mint-aws-creds", None, "");
    assert_eq!(status, 401);
    let r = stack
        .http
        .post(stack.url("/v1/mint-oidc-jwt"))
        .header("authorization", "Basic abc")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(stack.audit_rows().len(), before);
}

#[test]
fn backend_401_is_401_with_auth_failed_row() {
    let stack = DevStack::start();
    let bogus = "not-a-real-session-token";
    let (status, body) = stack.post("/v1/mint-oidc-jwt", Some(bogus), "");
    assert_eq!(status, 401, "{body}");
    assert_no_secret(&body);
    let rows = rows_with_event(&stack, "auth_failed");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["bearer_sha256"], sha256_hex(bogus));
    assert_eq!(rows[0]["outcome"], "failure");
}

#[test]
fn backend_down_is_502() {
    let port = closed_port();
    let stack = DevStack::start_with(DevOptions {
        extra: vec![
            "--auth-mode".into(),
            "parent-vouched".into(),
            "--backend-url".into(),
            format!("http://127.0.0.1:{port}"),
        ],
        ..Default::default()
    });
    let (status, body) = stack.post("/v1/mint-oidc-jwt", Some("some-token"), "");
    assert_eq!(status, 502, "{body}");
    assert_eq!(json(&body)["error"], "backend_error");
    assert_eq!(rows_with_event(&stack, "backend_failed").len(), 1);
    // /readyz names the backend.
    let (s, r) = stack.get("/readyz");
    assert_eq!(s, 503);
    let r: serde_json::Value = serde_json::from_slice(&r).unwrap();
    assert_eq!(r["checks"]["backend"]["ok"], false);
    assert_eq!(r["checks"]["enclave"]["ok"], true);
}

#[test]
fn backend_slow_is_502_within_timeout() {
    let (port, _h) = blackhole();
    let stack = DevStack::start_with(DevOptions {
        extra: vec![
            "--auth-mode".into(),
            "parent-vouched".into(),
            "--backend-url".into(),
            format!("http://127.0.0.1:{port}"),
            "--backend-timeout-ms".into(),
            "400".into(),
        ],
        ..Default::default()
    });
    let t = Instant::now();
    let (status, body) = stack.post("/v1/mint-oidc-jwt", Some("some-token"), "");
    assert_eq!(status, 502, "{body}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(json(&body)["message"]
        .as_str()
        .unwrap()
        .contains("timed out"));
    assert_eq!(rows_with_event(&stack, "backend_failed").len(), 1);
}

#[test]
fn enclave_killed_is_503_then_recovers() {
    let mut stack = DevStack::start();
    let token = stack.create_session(WALLET);
    assert_eq!(stack.post("/v1/mint-oidc-jwt", Some(&token), "").0, 200);
    let old_pid = stack.info.enclave_pid;
    signal(old_pid, "KILL");
    let mut saw_503 = false;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        let (status, body) = stack.post("/v1/mint-oidc-jwt", Some(&token), "");
        match status {
            503 => {
                saw_503 = true;
                assert_eq!(json(&body)["error"], "enclave_unavailable");
                assert_no_secret(&body);
            }
            200 if saw_503 => break,
            200 => {}
            other => panic!("unexpected {other}: {body}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(saw_503, "never saw 503 after killing the enclave");
    // Recovered: a new enclave child, re-unsealed by the broker, same key.
    let (status, body) = stack.post("/v1/mint-oidc-jwt", Some(&token), "");
    assert_eq!(status, 200, "{body}");
    let info = stack.reload_info().unwrap();
    assert_ne!(info.enclave_pid, old_pid);
    // No success row without a returned token: every mint_jwt row is a 200 we saw.
    let out = audit_verify(&stack, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

const STS_REJECTION: &str = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>InvalidIdentityToken</Code>
    <Message>Couldn't retrieve verification key from your identity provider</Message>
  </Error>
  <RequestId>00000000-0000-0000-0000-000000000000</RequestId>
</ErrorResponse>"#;

#[test]
fn sts_rejection_is_502_naming_the_code() {
    let sts = Programmable::start();
    sts.set_sts(StsMode {
        status: Some(400),
        body: Some(STS_REJECTION.as_bytes().to_vec()),
        ..Default::default()
    });
    let stack = DevStack::start_with(DevOptions {
        extra: vec!["--sts-url".into(), sts.url.clone()],
        ..Default::default()
    });
    let token = stack.create_session(WALLET);
    let (status, body) = stack.post("/v1/mint-aws-creds", Some(&token), "");
    assert_eq!(status, 502, "{body}");
    let v = json(&body);
    assert_eq!(v["error"], "sts_error");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("InvalidIdentityToken"));
    assert_no_secret(&body);
    let rows = rows_with_event(&stack, "sts_failed");
    assert_eq!(rows.len(), 1);
    assert!(rows[0]["enclave_seq"].as_u64().is_some());
}

#[test]
fn audit_unwritable_is_500_without_token() {
    let stack = DevStack::start();
    let token = stack.create_session(WALLET);
    assert_eq!(stack.post("/v1/mint-oidc-jwt", Some(&token), "").0, 200);
    let r = stack
        .http
        .post(stack.url("/dev/faults/audit"))
        .body("refuse_writes")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let before = rows_with_event(&stack, "mint_jwt").len();
    for path in ["/v1/mint-oidc-jwt", "/v1/mint-aws-creds"] {
        let (status, body) = stack.post(path, Some(&token), "");
        assert_eq!(status, 500, "{path}: {body}");
        assert_eq!(json(&body)["error"], "audit_failure");
        assert_no_secret(&body);
    }
    let (s, _) = stack.get("/readyz");
    assert_eq!(s, 503);
    stack
        .http
        .post(stack.url("/dev/faults/audit"))
        .body("none")
        .send()
        .unwrap();
    assert_eq!(stack.post("/v1/mint-oidc-jwt", Some(&token), "").0, 200);
    // Withheld tokens are accounted for, not as successes.
    let rows = wait_for(Duration::from_secs(10), || {
        let w = rows_with_event(&stack, "mint_withheld");
        (w.len() >= 2).then_some(w)
    })
    .expect("mint_withheld rows written once the store recovers");
    assert!(rows.iter().all(|r| r["outcome"] == "failure"));
    assert_eq!(rows_with_event(&stack, "mint_jwt").len(), before + 1);
    let out = audit_verify(&stack, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn oversized_and_malformed_bodies() {
    let stack = DevStack::start();
    let token = stack.create_session(WALLET);
    let before = stack.audit_rows().len();
    let big = format!(
        "{{\"ttl_seconds\": 300, \"pad\": \"{}\"}}",
        "x".repeat(64 * 1024)
    );
    let (status, body) = stack.post("/v1/mint-oidc-jwt", Some(&token), &big);
    assert_eq!(status, 413, "{body}");
    assert_eq!(json(&body)["error"], "payload_too_large");
    let (status, body) = stack.post("/v1/mint-oidc-jwt", Some(&token), "{not json");
    assert_eq!(status, 400, "{body}");
    assert_eq!(json(&body)["error"], "bad_request");
    let (status, _) = stack.post("/v1/mint-oidc-jwt", Some(&token), r#"{"ttl_seconds": 5}"#);
    assert_eq!(status, 400);
    let (status, _) = stack.post(
        "/v1/mint-aws-creds",
        Some(&token),
        r#"{"duration_seconds": 60}"#,
    );
    assert_eq!(status, 400);
    assert_eq!(stack.audit_rows().len(), before);
    let (status, body) = stack.post("/v1/mint-oidc-jwt", Some(&token), r#"{"ttl_seconds": 120}"#);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn creds_command_prints_credential_process_json() {
    let stack = DevStack::start();
    let token = stack.create_session(WALLET);
    let f = stack.tmp.as_ref().unwrap().path().join("bearer");
    std::fs::write(&f, &token).unwrap();
    let out = run(
        "agentkeys-broker",
        &[
            "creds",
            "--broker-url",
            &stack.info.broker_url,
            "--bearer-file",
            &f.display().to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Version"], 1);
    for k in [
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    ] {
        assert!(v[k].as_str().is_some(), "{k}");
    }
    // A bad bearer: exit code ≠ 0, error on stderr, nothing on stdout.
    std::fs::write(&f, "bogus").unwrap();
    let out = run(
        "agentkeys-broker",
        &[
            "creds",
            "--broker-url",
            &stack.info.broker_url,
            "--bearer-file",
            &f.display().to_string(),
        ],
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

/// `audit verify` with a checkpoint refuses to run without a PCR policy, warns with
/// `--no-pcr-policy`, refuses a document whose PCR0 is not the rebuilt image's, and checks
/// an archived checkpoint at its own time with `--at document`.
fn checkpoint_needs_a_pcr_policy_and_a_valid_time(
    verify: &dyn Fn(&[&str]) -> (bool, String),
    checkpoint: &[&str],
    measurements: &str,
) {
    let (ok, text) = verify(checkpoint);
    assert!(!ok && text.contains("no PCR policy"), "{text}");
    let (ok, text) = verify(&[checkpoint, &["--no-pcr-policy"]].concat());
    assert!(ok && text.contains("warning: --no-pcr-policy"), "{text}");
    // The measurements of another image: a checkpoint made by an enclave with this PCR0
    // would pass, the mock image's does not.
    let other = std::path::Path::new(measurements).with_file_name("other-image.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(measurements).unwrap()).unwrap();
    m["Measurements"]["PCR0"] = "11".repeat(48).into();
    std::fs::write(&other, m.to_string()).unwrap();
    let other = other.display().to_string();
    let (ok, text) = verify(&[checkpoint, &["--measurements", other.as_str()]].concat());
    assert!(!ok && text.contains("PCR0"), "{text}");
    // A measurements file that names PCR8 only is no PCR policy for the image.
    let pcr8 = std::path::Path::new(measurements).with_file_name("pcr8-only.json");
    std::fs::write(
        &pcr8,
        format!(
            r#"{{"Measurements":{{"HashAlgorithm":"Sha384 {{ ... }}","PCR8":"{}"}}}}"#,
            "22".repeat(48)
        ),
    )
    .unwrap();
    let pcr8 = pcr8.display().to_string();
    let (ok, text) = verify(&[checkpoint, &["--measurements", pcr8.as_str()]].concat());
    assert!(!ok && text.contains("PCR0"), "{text}");
    // Archived: at the document's own time it verifies; in 1970 its certificates were not
    // valid yet.
    let policy = ["--measurements", measurements];
    let (ok, text) = verify(&[checkpoint, &policy, &["--at", "document"]].concat());
    assert!(ok, "{text}");
    let (ok, text) = verify(&[checkpoint, &policy, &["--at", "1"]].concat());
    assert!(!ok, "{text}");
    let (ok, text) = verify(&[checkpoint, &policy, &["--at", "yesterday"]].concat());
    assert!(!ok && text.contains("--at"), "{text}");
}

/// Opens the stopped stack's DB for tampering (the triggers are dropped first, as an
/// attacker with file access would).
fn tamper(db: &std::path::Path, sql: &str) {
    let c = rusqlite::Connection::open(db).unwrap();
    let triggers: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for t in triggers {
        c.execute_batch(&format!("DROP TRIGGER \"{t}\"")).unwrap();
    }
    c.execute_batch(sql).unwrap();
}

#[test]
fn tampering_is_detected_and_truncation_needs_the_checkpoint() {
    let mut stack = DevStack::start();
    let token = stack.create_session(WALLET);
    for _ in 0..6 {
        assert_eq!(stack.post("/v1/mint-oidc-jwt", Some(&token), "").0, 200);
    }
    let (s, cp) = stack.get("/v1/audit/checkpoint?nonce=00ff");
    assert_eq!(s, 200);
    let cp_file = stack.tmp.as_ref().unwrap().path().join("checkpoint.json");
    std::fs::write(&cp_file, &cp).unwrap();
    let cpv: serde_json::Value = serde_json::from_slice(&cp).unwrap();
    assert_eq!(cpv["seq"].as_u64(), Some(6));
    let root = stack.info.mock_root_pem.display().to_string();
    stack.stop();
    let db = stack.info.audit_db.clone();
    let cp_arg = cp_file.display().to_string();
    let measurements = stack.mock_measurements().display().to_string();
    let with_cp = [
        "--checkpoint",
        cp_arg.as_str(),
        "--root",
        root.as_str(),
        "--allow-mock-root",
        "--measurements",
        measurements.as_str(),
    ];
    let verify = |extra: &[&str]| {
        let mut args = vec!["audit", "verify", "--db"];
        let d = db.display().to_string();
        args.push(&d);
        args.extend_from_slice(extra);
        let out = run("agentkeys-broker", &args);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    assert!(verify(&with_cp).0, "{}", verify(&with_cp).1);
    checkpoint_needs_a_pcr_policy_and_a_valid_time(&verify, &with_cp[..5], &measurements);

    // Keep a pristine copy to run each tampering on.
    let pristine = db.with_extension("pristine");
    std::fs::copy(&db, &pristine).unwrap();

    // Truncation: drop the two most recent rows. The hash chain alone still verifies;
    // only the enclave's attested checkpoint reveals it.
    tamper(
        &db,
        "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log ORDER BY id DESC LIMIT 2)",
    );
    let (ok, text) = verify(&[]);
    assert!(
        ok,
        "chain-only verify of a truncated log should pass: {text}"
    );
    let (ok, text) = verify(&with_cp);
    assert!(!ok, "checkpoint must reveal truncation: {text}");
    assert!(text.contains('5') || text.contains("seq"), "{text}");

    // Editing a row: verify fails and names the row.
    std::fs::copy(&pristine, &db).unwrap();
    tamper(
        &db,
        "UPDATE audit_log SET wallet = '0x00000000000000000000000000000000000000bb' WHERE id = 3",
    );
    let (ok, text) = verify(&[]);
    assert!(!ok, "{text}");
    assert!(text.contains('3'), "the edited row is named: {text}");

    // Dropping a row in the middle.
    std::fs::copy(&pristine, &db).unwrap();
    tamper(&db, "DELETE FROM audit_log WHERE id = 4");
    let (ok, text) = verify(&[]);
    assert!(!ok, "{text}");
    assert!(text.contains('4'), "the dropped row is named: {text}");
}

#[test]
fn demo_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(binary("agentkeys-dev"))
        .args(["dev", "--demo", "--port", "0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("all steps passed"));
}

#[test]
fn data_dir_persists_the_key_across_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // The issuer (and so the KMS encryption context) includes the port: keep it.
    let port = closed_port().to_string();
    let opts = DevOptions {
        data_dir: Some(data.clone()),
        extra: vec!["--port".into(), port.clone()],
    };
    let first = {
        let stack = DevStack::start_with(opts.clone());
        stack.served_kid()
    };
    let seed = data.join(format!("sealed-seed-{port}.bin"));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&seed).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let stack = DevStack::start_with(opts);
    assert_eq!(stack.served_kid(), first);
}

/// A wallet's own Sign-In with Ethereum message, through the broker: a nonce from
/// `GET /v1/sign-in/nonce`, a mint with `sign_in` and no bearer, for exactly the signer.
/// The same message again is refused by the enclave (401 `proof_refused`) and audited as
/// `mint_failed`.
#[test]
fn a_sign_in_mints_for_its_signer_once() {
    use agentkeys_dev::siwe_wallet::{siwe_message, ThrowawayWallet};
    let stack = DevStack::start();
    let (status, nonce) = stack.get("/v1/sign-in/nonce");
    assert_eq!(status, 200);
    let nonce: serde_json::Value = serde_json::from_slice(&nonce).unwrap();
    let domain = stack.info.broker_url.trim_start_matches("http://");
    let now = agentkeys_attestation::now_unix_ms() / 1000;
    let wallet = ThrowawayWallet::new();
    let message = siwe_message(
        domain,
        &wallet.address(),
        &stack.info.broker_url,
        1,
        nonce["nonce"].as_str().unwrap(),
        now,
        now + 120,
    );
    let body = serde_json::json!({"sign_in": {
        "message": message,
        "signature": format!("0x{}", hex::encode(wallet.sign(&message))),
    }})
    .to_string();
    let (status, answer) = stack.post("/v1/mint-oidc-jwt", None, &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(json(&answer)["wallet"], wallet.wallet().to_string());
    let (status, answer) = stack.post("/v1/mint-oidc-jwt", None, &body);
    assert_eq!(status, 401, "{answer}");
    assert_eq!(json(&answer)["error"], "proof_refused");
    assert!(answer.contains("already used"), "{answer}");
    let failed = rows_with_event(&stack, "mint_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0]["detail"]
        .as_str()
        .unwrap()
        .contains("already used"));
    // A malformed signature is the caller's mistake, named before the enclave.
    let bad = body.replace("\"signature\":\"0x", "\"signature\":\"");
    let (status, answer) = stack.post("/v1/mint-oidc-jwt", None, &bad);
    assert_eq!(status, 400, "{answer}");
}
