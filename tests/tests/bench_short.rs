//! The benchmark's CI mode: `agentkeys-bench --short --json` against a freshly started dev
//! stack. It never judges speed; it checks that the run completed, that no request
//! failed and that every token returned has exactly one durable audit row.

use std::process::Command;
use std::sync::Mutex;

/// The runs load the machine on purpose: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Fields `--json` must always print.
const FIELDS: [&str; 12] = [
    "requests_per_second",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "errors",
    "audit_rows_match",
    "sign_ceiling_per_second",
    "axum_ceiling_per_second",
    "ratio_to_sign",
    "ratio_to_axum",
    "parent_peak_rss_mib",
    "enclave_peak_rss_mib",
];

fn run_bench(extra: &[&str]) -> serde_json::Value {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dev = agentkeys_e2e::binary("agentkeys-dev");
    let out = Command::new(env!("CARGO_BIN_EXE_agentkeys-bench"))
        .args(["--short", "--json", "--dev-bin"])
        .arg(&dev)
        .args(extra)
        .output()
        .expect("run agentkeys-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "agentkeys-bench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

fn assert_completed(j: &serde_json::Value) {
    for f in FIELDS {
        assert!(j.get(f).is_some(), "field {f} missing in {j}");
    }
    assert_eq!(j["errors"], 0, "{j}");
    assert_eq!(j["audit_rows_match"], true, "{j}");
    assert!(j["ok_total"].as_u64().unwrap_or(0) > 0, "{j}");
    assert!(
        j["requests_per_second"].as_f64().unwrap_or(0.0) > 0.0,
        "{j}"
    );
    assert!(
        j["sign_ceiling_per_second"].as_f64().unwrap_or(0.0) > 0.0,
        "{j}"
    );
    assert!(
        j["axum_ceiling_per_second"].as_f64().unwrap_or(0.0) > 0.0,
        "{j}"
    );
    assert!(
        j["parent_peak_rss_mib"].as_f64().unwrap_or(0.0) > 0.0,
        "{j}"
    );
    assert!(
        j["enclave_peak_rss_mib"].as_f64().unwrap_or(0.0) > 0.0,
        "{j}"
    );
    assert!(j["dev_ready_seconds"].as_f64().is_some(), "{j}");
}

#[test]
fn bench_short_mint_oidc_jwt_completes_with_every_row_accounted_for() {
    let j = run_bench(&[]);
    assert_eq!(j["route"], "/v1/mint-oidc-jwt");
    assert_completed(&j);
}

#[test]
fn bench_short_mint_aws_creds_completes_with_every_row_accounted_for() {
    let j = run_bench(&[
        "--route",
        "mint-aws-creds",
        "--connections",
        "8",
        "--no-ceilings",
    ]);
    assert_eq!(j["route"], "/v1/mint-aws-creds");
    for f in ["errors", "audit_rows_match", "requests_per_second"] {
        assert!(j.get(f).is_some(), "field {f} missing in {j}");
    }
    assert_eq!(j["errors"], 0, "{j}");
    assert_eq!(j["audit_rows_match"], true, "{j}");
}
