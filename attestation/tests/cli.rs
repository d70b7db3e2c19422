//! The `agentkeys-attest` binary: exit codes 0 (verified), 1 (a check failed, named in the
//! output), 2 (usage or I/O error).

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::*;

fn attest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentkeys-attest"))
        .args(args)
        .output()
        .unwrap()
}

fn path(name: &str) -> String {
    format!("{FIXTURES}{name}")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn at(ms: u64) -> String {
    (ms / 1000).to_string()
}

const REAL: &str = "aws-real-2022-07-06.cose";
const REAL_AT: &str = "1657117102";
const REAL_PCR0: &str = "f8bb0133c427bc49aa39f6811a01077ce9ab7e635fa1f5439c9c8bf99754f8230e41b09426b0e595eebdc4d6ed4bc3b6";

#[test]
fn genuine_documents_verify_exit_0() {
    for f in fixtures() {
        let p = path(f.name);
        let t = at(f.timestamp_ms);
        let mut args = vec!["verify", p.as_str(), "--at", t.as_str()];
        if f.name.ends_with(".b64") {
            args.push("--base64");
        }
        if f.debug {
            args.push("--allow-debug");
        }
        let o = attest(&args);
        assert_eq!(o.status.code(), Some(0), "{}: {}", f.name, stdout(&o));
        assert!(stdout(&o).contains("VERIFIED"));
    }
}

#[test]
fn json_output_is_machine_readable() {
    let o = attest(&[
        "verify",
        &path(REAL),
        "--at",
        REAL_AT,
        "--json",
        "--pcr",
        &format!("0={REAL_PCR0}"),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(
        v["document"]["module_id"],
        "i-07e25f3bada361dec-enc0181d3dff86da785"
    );
    assert_eq!(v["document"]["pcrs"]["0"], REAL_PCR0);
    assert_eq!(v["checks"].as_array().unwrap().len(), 11);
    assert_eq!(v["checks"][5]["check"], "pcrs");
    assert_eq!(v["checks"][5]["result"], "pass");
    assert_eq!(v["document"]["certificates"].as_array().unwrap().len(), 5);
}

#[test]
fn failed_checks_exit_1_and_are_named() {
    let real = path(REAL);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["verify", &real], "certificate_path"), // now: certificates expired
        (
            vec!["verify", &real, "--at", "1657030702"],
            "certificate_path",
        ),
        (
            vec!["verify", &real, "--at", REAL_AT, "--pcr", "0=00"],
            "pcrs",
        ),
        (
            vec!["verify", &real, "--at", REAL_AT, "--user-data", "00"],
            "user_data",
        ),
        (
            vec!["verify", &real, "--at", REAL_AT, "--nonce", "00"],
            "nonce",
        ),
        (
            vec!["verify", &real, "--at", REAL_AT, "--public-key", "00"],
            "public_key",
        ),
        (
            vec!["verify", &real, "--at", "1657120000", "--max-age", "60"],
            "freshness",
        ),
    ];
    for (args, check) in cases {
        let o = attest(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stdout(&o));
        let out = stdout(&o);
        assert!(
            out.lines()
                .any(|l| l.starts_with(check) && l.contains("FAIL")),
            "{args:?}: {out}"
        );
        let mut json_args = args.clone();
        json_args.push("--json");
        let v: serde_json::Value = serde_json::from_slice(&attest(&json_args).stdout).unwrap();
        assert_eq!(v["failed_check"], check, "{args:?}");
        assert_eq!(v["ok"], false);
    }
}

#[test]
fn debug_documents_need_allow_debug() {
    let f = fixture("ev-beta-debug.bin");
    let o = attest(&["verify", &path(f.name), "--at", &at(f.timestamp_ms)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("debug_mode         FAIL"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn measurements_file_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("measurements.json");
    std::fs::write(
        &m,
        format!(
            r#"{{"Measurements":{{"HashAlgorithm":"Sha384 {{ ... }}","PCR0":"{REAL_PCR0}"}}}}"#
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentkeys-attest"))
        .args(["verify", "-", "--at", REAL_AT, "--measurements"])
        .arg(&m)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&fixture(REAL).bytes)
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    // A measurements file for another image fails the pcrs check.
    std::fs::write(
        &m,
        format!(r#"{{"Measurements":{{"PCR0":"{}"}}}}"#, "11".repeat(48)),
    )
    .unwrap();
    let o = attest(&[
        "verify",
        &path(REAL),
        "--at",
        REAL_AT,
        "--measurements",
        m.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn mock_root_needs_explicit_permission() {
    let pki = TestPki::new(TEST_NOW_SECS);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.pem");
    std::fs::write(&root, pki.root_pem()).unwrap();
    let doc = dir.path().join("mock.cose");
    std::fs::write(&doc, pki.document(&DocSpec::new(pki.now_ms()))).unwrap();
    let (root, doc) = (root.to_str().unwrap(), doc.to_str().unwrap());
    let now = TEST_NOW_SECS.to_string();
    // Refused as a plain --root: usage error.
    let o = attest(&["verify", doc, "--at", &now, "--root", root]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("mock"));
    // Accepted when allowed.
    let o = attest(&[
        "verify",
        doc,
        "--at",
        &now,
        "--root",
        root,
        "--allow-mock-root",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("MOCK ROOT"));
    // Genuine documents fail against the mock root.
    let o = attest(&[
        "verify",
        &path(REAL),
        "--at",
        REAL_AT,
        "--root",
        root,
        "--allow-mock-root",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("certificate_path   FAIL"));
    // Mock documents fail against the AWS root.
    let o = attest(&["verify", doc, "--at", &now]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn usage_and_io_errors_exit_2() {
    let real = path(REAL);
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["verify"],
        vec!["verify", "/nonexistent/doc"],
        vec!["verify", &real, "--pcr", "0=zz"],
        vec!["verify", &real, "--pcr", "32=00"],
        vec!["verify", &real, "--pcr", "nonsense"],
        vec!["verify", &real, "--nonce", "xyz"],
        vec!["verify", &real, "--allow-mock-root"],
        vec!["verify", &real, "--root", "/nonexistent/root.pem"],
        vec!["verify", &real, "--measurements", "/nonexistent/m.json"],
        vec!["verify", &real, "--at", "yesterday"],
        vec!["verify", &real, "--base64"],
        vec!["inspect", "/nonexistent/doc"],
        vec!["frobnicate"],
    ];
    for args in cases {
        let o = attest(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stdout(&o));
    }
}

#[test]
fn malformed_documents_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad");
    std::fs::write(&bad, b"\x84\x40").unwrap();
    let o = attest(&["verify", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("cose_structure     FAIL"),
        "{}",
        stdout(&o)
    );
    let o = attest(&["inspect", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    std::fs::write(&bad, b"").unwrap();
    let o = attest(&["verify", bad.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["failed_check"], "size_bounds");
}

#[test]
fn inspect_prints_every_field() {
    let o = attest(&["inspect", &path("ev-valid.b64"), "--base64"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    for needle in [
        "i-0918f6c55e3b61d89-enc018aa8b8e2285d13",
        "SHA384",
        "debug_mode  true",
        "PCR15",
        "cabundle[0]",
        "certificate (leaf)",
        "CN=aws.nitro-enclaves",
        "2023-09-18T15:03:30.86Z",
        "nonce       bba6bfd5",
        "public_key  (none)",
    ] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
    let o = attest(&["inspect", &path(REAL), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["document"]["timestamp_ms"], 1_657_117_102_484u64);
    assert_eq!(v["document"]["nonce"], serde_json::Value::Null);
    assert_eq!(
        v["document"]["certificates"][0]["sha256"],
        agentkeys_attestation::AWS_NITRO_ROOT_G1_SHA256
    );
}
