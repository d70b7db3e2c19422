//! The `agentkeys-attest` binary: exit codes 0 (verified), 1 (a check failed, named in the
//! output), 2 (usage or I/O error).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
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

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn at(ms: u64) -> String {
    (ms / 1000).to_string()
}

/// The PCRs of a document, as its (unverified) payload lists them.
fn document_pcrs(bytes: &[u8]) -> BTreeMap<u16, Vec<u8>> {
    agentkeys_attestation::decode_unverified(bytes)
        .unwrap()
        .pcrs
}

/// Writes nitro-cli measurements JSON listing `indices` of `pcrs`.
fn write_measurements(dir: &Path, pcrs: &BTreeMap<u16, Vec<u8>>, indices: &[u16]) -> PathBuf {
    let mut inner = serde_json::Map::new();
    inner.insert("HashAlgorithm".into(), "Sha384 { ... }".into());
    for index in indices {
        inner.insert(format!("PCR{index}"), hex::encode(&pcrs[index]).into());
    }
    let name: Vec<String> = indices.iter().map(u16::to_string).collect();
    let path = dir.join(format!("measurements-{}.json", name.join("-")));
    std::fs::write(
        &path,
        serde_json::json!({ "Measurements": inner }).to_string(),
    )
    .unwrap();
    path
}

/// `--pcr N=HEX` for PCR0, PCR1 and PCR2 of a document.
fn image_pcr_args(bytes: &[u8]) -> Vec<String> {
    let pcrs = document_pcrs(bytes);
    [0u16, 1, 2]
        .iter()
        .flat_map(|i| ["--pcr".to_owned(), format!("{i}={}", hex::encode(&pcrs[i]))])
        .collect()
}

const REAL: &str = "aws-real-2022-07-06.cose";
const REAL_AT: &str = "1657117102";
const REAL_PCR0: &str = "f8bb0133c427bc49aa39f6811a01077ce9ab7e635fa1f5439c9c8bf99754f8230e41b09426b0e595eebdc4d6ed4bc3b6";

#[test]
fn genuine_documents_verify_exit_0() {
    for f in fixtures() {
        let p = path(f.name);
        let t = at(f.timestamp_ms);
        let dir = tempfile::tempdir().unwrap();
        let m = write_measurements(dir.path(), &document_pcrs(&f.bytes), &[0, 1, 2]);
        let m = m.to_str().unwrap();
        let mut args = vec![
            "verify",
            p.as_str(),
            "--at",
            t.as_str(),
            "--measurements",
            m,
        ];
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
    let pcr0 = format!("0={REAL_PCR0}");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["verify", &real, "--pcr", &pcr0], "certificate_path"), // now: certificates expired
        (
            vec!["verify", &real, "--pcr", &pcr0, "--at", "1657030702"],
            "certificate_path",
        ),
        (
            vec!["verify", &real, "--at", REAL_AT, "--pcr", "0=00"],
            "pcrs",
        ),
        (
            vec![
                "verify",
                &real,
                "--pcr",
                &pcr0,
                "--at",
                REAL_AT,
                "--user-data",
                "00",
            ],
            "user_data",
        ),
        (
            vec![
                "verify", &real, "--pcr", &pcr0, "--at", REAL_AT, "--nonce", "00",
            ],
            "nonce",
        ),
        (
            vec![
                "verify",
                &real,
                "--pcr",
                &pcr0,
                "--at",
                REAL_AT,
                "--public-key",
                "00",
            ],
            "public_key",
        ),
        (
            vec![
                "verify",
                &real,
                "--pcr",
                &pcr0,
                "--at",
                "1657120000",
                "--max-age",
                "60",
            ],
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
    let o = attest(
        &[
            &["verify", &path(f.name), "--at", &at(f.timestamp_ms)][..],
            &image_pcr_args(&f.bytes)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        ]
        .concat(),
    );
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
    let mut pcrs = document_pcrs(&fixture(REAL).bytes);
    assert_eq!(hex::encode(&pcrs[&0]), REAL_PCR0);
    let m = write_measurements(dir.path(), &pcrs, &[0, 1, 2]);
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
    pcrs.insert(0, vec![0x11; 48]);
    let m = write_measurements(dir.path(), &pcrs, &[0, 1, 2]);
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
    let spec = DocSpec::new(pki.now_ms());
    let m = write_measurements(dir.path(), &spec.pcrs, &[0, 1, 2]);
    std::fs::write(&doc, pki.document(&spec)).unwrap();
    let (root, doc, m) = (
        root.to_str().unwrap(),
        doc.to_str().unwrap(),
        m.to_str().unwrap(),
    );
    let now = TEST_NOW_SECS.to_string();
    let real_dir = tempfile::tempdir().unwrap();
    let real_m = write_measurements(
        real_dir.path(),
        &document_pcrs(&fixture(REAL).bytes),
        &[0, 1, 2],
    );
    let real_m = real_m.to_str().unwrap();
    // Refused as a plain --root: usage error.
    let o = attest(&[
        "verify",
        doc,
        "--at",
        &now,
        "--measurements",
        m,
        "--root",
        root,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("mock"));
    // Accepted when allowed.
    let o = attest(&[
        "verify",
        doc,
        "--at",
        &now,
        "--measurements",
        m,
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
        "--measurements",
        real_m,
        "--root",
        root,
        "--allow-mock-root",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("certificate_path   FAIL"));
    // Mock documents fail against the AWS root.
    let o = attest(&["verify", doc, "--at", &now, "--measurements", m]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn usage_and_io_errors_exit_2() {
    let real = path(REAL);
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["verify"],
        vec!["verify", "/nonexistent/doc", "--no-pcr-policy"],
        vec!["verify", &real, "--pcr", "0=zz"],
        vec!["verify", &real, "--pcr", "32=00"],
        vec!["verify", &real, "--pcr", "nonsense"],
        vec!["verify", &real, "--nonce", "xyz"],
        vec!["verify", &real, "--allow-mock-root"],
        vec![
            "verify",
            &real,
            "--no-pcr-policy",
            "--root",
            "/nonexistent/root.pem",
        ],
        vec!["verify", &real, "--measurements", "/nonexistent/m.json"],
        vec!["verify", &real, "--at", "yesterday"],
        vec!["verify", &real, "--no-pcr-policy", "--base64"],
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
    let o = attest(&["verify", bad.to_str().unwrap(), "--no-pcr-policy"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("cose_structure     FAIL"),
        "{}",
        stdout(&o)
    );
    let o = attest(&["inspect", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    std::fs::write(&bad, b"").unwrap();
    let o = attest(&["verify", bad.to_str().unwrap(), "--no-pcr-policy", "--json"]);
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

/// The text `verify` prints on stderr when no PCR policy is given.
const NO_PCR_POLICY: &str = "no PCR policy: give --measurements FILE";

#[test]
fn verify_without_pcr_policy_is_refused() {
    let real = path(REAL);
    for extra in [&[][..], &["--json"][..], &["--allow-debug"][..]] {
        let mut args = vec!["verify", real.as_str(), "--at", REAL_AT];
        args.extend_from_slice(extra);
        let o = attest(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stdout(&o));
        assert!(stderr(&o).contains(NO_PCR_POLICY), "{}", stderr(&o));
        assert!(stderr(&o).contains("--no-pcr-policy"), "{}", stderr(&o));
        assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    }
}

#[test]
fn no_pcr_policy_passes_with_a_warning() {
    let o = attest(&["verify", &path(REAL), "--at", REAL_AT, "--no-pcr-policy"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "warning: --no-pcr-policy: the document's PCRs are not checked; any enclave image \
             signed by the trusted root passes"
        ),
        "{}",
        stderr(&o)
    );
    assert!(
        stdout(&o).lines().any(|l| l.starts_with("pcrs")
            && l.contains("skipped")
            && l.contains("--no-pcr-policy")),
        "{}",
        stdout(&o)
    );
    // It is an explicit alternative to PCR values, not an addition.
    let pcr0 = format!("0={REAL_PCR0}");
    let o = attest(&[
        "verify",
        &path(REAL),
        "--at",
        REAL_AT,
        "--no-pcr-policy",
        "--pcr",
        &pcr0,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
}

/// Runs `verify REAL --measurements FILE` with a file listing `indices` of the document's
/// own PCRs.
fn verify_real_with_measurements(indices: &[u16]) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let m = write_measurements(dir.path(), &document_pcrs(&fixture(REAL).bytes), indices);
    let m = m.to_str().unwrap().to_owned();
    let o = attest(&["verify", &path(REAL), "--at", REAL_AT, "--measurements", &m]);
    (o, m)
}

#[test]
fn measurements_with_only_pcr8_are_refused() {
    // PCR8 is the document's own value: only the rule on PCR0/1/2 refuses the file.
    let (o, m) = verify_real_with_measurements(&[8]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("--measurements"), "{err}");
    assert!(err.contains(&m), "{err}");
    assert!(err.contains("has no PCR0, PCR1, PCR2;"), "{err}");
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
}

#[test]
fn measurements_missing_pcr1_are_refused() {
    let (o, m) = verify_real_with_measurements(&[0, 2, 8]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains(&format!("--measurements: {m}: ")), "{err}");
    assert!(err.contains("has no PCR1;"), "{err}");
}

#[test]
fn complete_measurements_pass() {
    let (o, _) = verify_real_with_measurements(&[0, 1, 2]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("VERIFIED"));
    assert!(stdout(&o)
        .lines()
        .any(|l| l.starts_with("pcrs") && l.contains("pass")));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}

#[test]
fn measurements_of_another_pcr0_fail_naming_pcr0() {
    let dir = tempfile::tempdir().unwrap();
    let mut pcrs = document_pcrs(&fixture(REAL).bytes);
    pcrs.insert(0, vec![0x22; 48]);
    let m = write_measurements(dir.path(), &pcrs, &[0, 1, 2]);
    let m = m.to_str().unwrap();
    let o = attest(&["verify", &path(REAL), "--at", REAL_AT, "--measurements", m]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("pcrs") && l.contains("FAIL") && l.contains("PCR0 is ")),
        "{out}"
    );
    let o = attest(&[
        "verify",
        &path(REAL),
        "--at",
        REAL_AT,
        "--measurements",
        m,
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["failed_check"], "pcrs");
    assert!(v["error"].as_str().unwrap().contains("PCR0 is "), "{v}");
}

/// A kid (a base64url thumbprint) may start with '-': `--expect-kid` takes it as a
/// value, not as an unknown flag.
#[test]
fn an_expected_kid_may_start_with_a_hyphen() {
    let out = attest(&[
        "verify",
        "--issuer",
        "http://127.0.0.1:9",
        "--no-pcr-policy",
        "--expect-kid",
        "-d8XbQeyM0qG1Qw5xKsk1f5mS8lJ7W9oPpT2cRZy0aA",
    ]);
    // The arguments parse: the check goes on to fetch the (absent) issuer.
    assert!(
        !stderr(&out).contains("unexpected argument"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("GET http://127.0.0.1:9/"),
        "{}",
        stderr(&out)
    );
}
