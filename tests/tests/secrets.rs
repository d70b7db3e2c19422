//! Secrets never leak: a full flow (sessions, JWTs, AWS credentials, attestation,
//! checkpoint, audit tools, the `creds` client) with every process at debug log level,
//! then every log line, every HTTP answer and the audit database are scanned for the
//! bearers, the JWTs, the AWS secret keys and session tokens, the sealed seed and any
//! private key.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use agentkeys_e2e::faults::CustomDev;
use agentkeys_e2e::{binary, run};
use base64::Engine;

/// Secrets issued during the run, with where each may legitimately appear.
struct Secret {
    what: String,
    value: String,
    /// May appear in HTTP answers (the caller is the one it was issued to).
    in_responses: bool,
}

fn encodings(bytes: &[u8]) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut v = vec![
        hex::encode(bytes),
        hex::encode_upper(bytes),
        b64.encode(bytes),
        url.encode(bytes),
    ];
    // A 24-byte window also catches a partial dump. It is taken from the end, where a
    // ciphertext blob holds its ciphertext and tag: a blob's head names its KMS key, which
    // is public (the pinned key ARN is in every attestation).
    if bytes.len() > 48 {
        let end = bytes.len();
        v.push(hex::encode(&bytes[end - 32..end - 8]));
        v.push(b64.encode(&bytes[end - 33..end - 9]));
    }
    v
}

fn read_all(paths: &[&Path]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in paths {
        if let Ok(b) = std::fs::read(p) {
            out.extend_from_slice(&b);
        }
    }
    out
}

/// Keeps a broker answer (headers and body) for the scan; returns the body as JSON.
fn record(responses: &mut Vec<u8>, r: reqwest::blocking::Response) -> serde_json::Value {
    let status = r.status();
    for (k, v) in r.headers() {
        responses.extend_from_slice(k.as_str().as_bytes());
        responses.extend_from_slice(v.as_bytes());
    }
    let body = r.bytes().expect("body").to_vec();
    responses.extend_from_slice(&body);
    responses.push(b'\n');
    let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    assert!(status.as_u16() < 500, "{status}: {v}");
    v
}

fn contains(hay: &[u8], needle: &str) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn no_secret_in_logs_responses_or_audit_db() {
    let dev = CustomDev::start(
        None,
        &["--session-cache-seconds", "0"],
        &[
            ("AGENTKEYS_LOG", "debug"),
            ("AGENTKEYS_ENCLAVE_LOG", "debug"),
            ("RUST_LOG", "debug"),
        ],
    )
    .expect("dev starts");
    let broker = dev.get("broker_url");
    let backend = dev.get("backend_url");
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut responses: Vec<u8> = Vec::new();
    let mut secrets: Vec<Secret> = Vec::new();
    for i in 0..3 {
        let wallet = format!("0x{:040x}", 0xc0 + i);
        // The backend hands the bearer to its owner: not recorded as a broker answer.
        let v: serde_json::Value = http
            .post(format!("{backend}/session/create"))
            .json(&serde_json::json!({ "wallet": wallet }))
            .send()
            .expect("backend")
            .json()
            .expect("json");
        let bearer = v["token"].as_str().expect("token").to_string();
        secrets.push(Secret {
            what: format!("bearer {i}"),
            value: bearer.clone(),
            in_responses: false,
        });
        let jwt = record(
            &mut responses,
            http.post(format!("{broker}/v1/mint-oidc-jwt"))
                .bearer_auth(&bearer)
                .send()
                .expect("mint"),
        );
        let jwt = jwt["jwt"].as_str().expect("jwt").to_string();
        secrets.push(Secret {
            what: format!("JWT signature {i}"),
            value: jwt.rsplit('.').next().expect("sig").to_string(),
            in_responses: true,
        });
        let creds = record(
            &mut responses,
            http.post(format!("{broker}/v1/mint-aws-creds"))
                .bearer_auth(&bearer)
                .send()
                .expect("creds"),
        );
        for k in ["secret_access_key", "session_token"] {
            secrets.push(Secret {
                what: format!("{k} {i}"),
                value: creds[k].as_str().expect(k).to_string(),
                in_responses: true,
            });
        }
        // The `creds` client command (credential_process) with the bearer in its env.
        let out = Command::new(binary("agentkeys-broker"))
            .args(["creds", "--broker-url", &broker, "--format", "json"])
            .env("AGENTKEYS_BEARER", &bearer)
            .output()
            .expect("creds command");
        assert!(out.status.success(), "creds command: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains(&bearer),
            "creds command prints the bearer: {stderr}"
        );
        responses.extend_from_slice(&out.stdout);
    }
    // A presented but refused bearer is a secret too.
    let refused = "refused-bearer-6b1f0c2e9d8a7f3b5c4e2d1a0f9e8d7c";
    secrets.push(Secret {
        what: "refused bearer".into(),
        value: refused.into(),
        in_responses: false,
    });
    record(
        &mut responses,
        http.post(format!("{broker}/v1/mint-oidc-jwt"))
            .bearer_auth(refused)
            .send()
            .expect("mint"),
    );
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/jwks.json",
        "/.well-known/nitro-attestation",
        "/.well-known/nitro-attestation?nonce=00112233",
        "/v1/audit/checkpoint?nonce=0011",
        "/metrics",
        "/readyz",
        "/healthz",
    ] {
        let _ = record(
            &mut responses,
            http.get(format!("{broker}{path}")).send().expect("get"),
        );
    }

    // Audit tools.
    let data = dev.get("data_dir");
    let db = dev.get("audit_db");
    let root = dev.get("mock_root_pem");
    let tail = run(
        "agentkeys-broker",
        &["audit", "tail", "--db", &db, "-n", "1000"],
    );
    let tail_json = run(
        "agentkeys-broker",
        &["audit", "tail", "--db", &db, "-n", "1000", "--json"],
    );
    let verify = run(
        "agentkeys-broker",
        &[
            "audit",
            "verify",
            "--db",
            &db,
            "--broker-url",
            &broker,
            "--root",
            &root,
            "--allow-mock-root",
            "--measurements",
            &std::path::Path::new(&data)
                .join("mock-measurements.json")
                .display()
                .to_string(),
        ],
    );
    assert!(verify.status.success(), "{verify:?}");
    let mut tool_output = Vec::new();
    for o in [&tail, &tail_json, &verify] {
        tool_output.extend_from_slice(&o.stdout);
        tool_output.extend_from_slice(&o.stderr);
    }

    // Audit effect: one success row per JWT and per credential set (3 mints, 3 creds
    // calls, 3 `creds` commands), one auth_failed row for the refused bearer, nothing
    // else; rows hold bearers only as SHA-256.
    let (boots, rows) = agentkeys_e2e::split_boot_rows(agentkeys_e2e::audit_rows(Path::new(&db)));
    assert_eq!(boots.len(), 1, "the enclave's one boot: {boots:#?}");
    let count = |event: &str, outcome: &str| {
        rows.iter()
            .filter(|r| r["event"] == event && r["outcome"] == outcome)
            .count()
    };
    assert_eq!(count("mint_jwt", "success"), 3, "{rows:#?}");
    assert_eq!(count("mint_aws_creds", "success"), 6, "{rows:#?}");
    assert_eq!(count("auth_failed", "failure"), 1, "{rows:#?}");
    assert_eq!(rows.len(), 10, "no other rows: {rows:#?}");

    // Stop the stack so that every log line is flushed. The dev stack keeps one sealed
    // seed per broker port (the issuer, which the seed is bound to, contains the port):
    // the ready file names it.
    let seed_path = dev.get("sealed_seed");
    assert!(
        seed_path.starts_with(&data),
        "sealed seed {seed_path} is in the data directory {data}"
    );
    let sealed_seed = std::fs::read(&seed_path).expect("sealed seed named by the ready file");
    assert!(!sealed_seed.is_empty(), "sealed seed is not empty");
    let mut dev = dev;
    dev.group.kill();
    let log = std::fs::read(&dev.group.log).expect("log");
    assert!(log.len() > 1000, "debug logs were captured");
    let db_bytes = read_all(&[
        Path::new(&db),
        &Path::new(&db).with_extension("db-wal"),
        Path::new(&format!("{db}-wal")),
    ]);

    let mut leaks = Vec::new();
    for s in &secrets {
        if contains(&log, &s.value) {
            leaks.push(format!("{} in the process logs", s.what));
        }
        if contains(&db_bytes, &s.value) {
            leaks.push(format!("{} in the audit database", s.what));
        }
        if contains(&tool_output, &s.value) {
            leaks.push(format!("{} in the audit tools' output", s.what));
        }
        if !s.in_responses && contains(&responses, &s.value) {
            leaks.push(format!("{} in an HTTP answer", s.what));
        }
    }
    for enc in encodings(&sealed_seed) {
        for (name, hay) in [
            ("logs", &log),
            ("HTTP answers", &responses),
            ("audit tools", &tool_output),
        ] {
            if contains(hay, &enc) {
                leaks.push(format!("sealed seed ({} chars) in {name}", enc.len()));
            }
        }
    }
    for marker in ["PRIVATE KEY", "dev-stack-not-a-secret", "\"d\":"] {
        for (name, hay) in [
            ("logs", &log),
            ("HTTP answers", &responses),
            ("audit tools", &tool_output),
        ] {
            if contains(hay, marker) {
                leaks.push(format!("{marker:?} in {name}"));
            }
        }
    }
    eprintln!(
        "scanned {} KiB of logs, {} KiB of HTTP answers, {} KiB of audit DB for {} secrets",
        log.len() / 1024,
        responses.len() / 1024,
        db_bytes.len() / 1024,
        secrets.len()
    );
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
}
