//! The benchmark's CI mode: `agentkeys-bench --short --json` against a freshly started dev
//! stack. It never judges speed; it checks that the run completed, that no request
//! failed and that every token returned has exactly one durable audit row, over plain
//! HTTP and, when Pebble is installed (always under `AGENTKEYS_REQUIRE_PEBBLE=1`, as in
//! CI), over the broker's HTTPS front (`dev --acme pebble --api-tls`).

use std::process::Command;
use std::sync::Mutex;

/// The runs load the machine on purpose: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Fields `--json` must always print besides the plain phase's
/// (`agentkeys_e2e::MINT_PHASE_FIELDS`).
const FIELDS: [&str; 6] = [
    "sign_ceiling_per_second",
    "axum_ceiling_per_second",
    "ratio_to_sign",
    "ratio_to_axum",
    "parent_peak_rss_mib",
    "enclave_peak_rss_mib",
];

/// Whether the HTTPS phase must have run: Pebble is installed (panics instead of saying
/// SKIPPED under `AGENTKEYS_REQUIRE_PEBBLE=1` without it).
fn https_phase_expected() -> bool {
    agentkeys_e2e::issuer_tls::skip_reason().is_none()
}

/// The HTTPS mint phase completed: no error, every row, positive rates; with the
/// ceilings, its floor (the signature and the minimal route over rustls) too.
fn assert_https_completed(j: &serde_json::Value, with_floor: bool) {
    for f in agentkeys_e2e::MINT_PHASE_FIELDS.map(|f| format!("https_{f}")) {
        assert!(j.get(&f).is_some(), "field {f} missing in {j}");
    }
    assert_eq!(j["https_errors"], 0, "{j}");
    assert_eq!(j["https_audit_rows_match"], true, "{j}");
    let positive = |k: &str| assert!(j[k].as_f64().unwrap_or(0.0) > 0.0, "{k} in {j}");
    for k in [
        "https_ok_total",
        "https_requests_per_second",
        "https_cpu_us_per_mint",
        "issuer_tls_handshakes_per_second",
        "issuer_tls_jwks_per_second",
    ] {
        positive(k);
    }
    if with_floor {
        for k in [
            "https_axum_tls_ceiling_per_second",
            "https_floor_axum_tls_server_cpu_us",
            "https_cpu_floor_us",
            "https_cpu_vs_floor",
        ] {
            positive(k);
        }
    }
}

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
    for f in agentkeys_e2e::MINT_PHASE_FIELDS.iter().chain(&FIELDS) {
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

/// The minimal mint (the design's least mint, measured beside the floor) ran, answered
/// without errors, wrote one row per answer and reported its CPU by part.
fn assert_minimal_mint_completed(j: &serde_json::Value) {
    assert_eq!(j["minimal_mint_errors"], 0, "{j}");
    assert_eq!(j["minimal_mint_rows_match"], true, "{j}");
    for k in [
        "minimal_mint_per_second",
        "minimal_mint_cpu_us",
        "minimal_mint_front_cpu_us",
        "minimal_mint_signer_cpu_us",
        "minimal_mint_writer_cpu_us",
        "minimal_mint_vs_floor",
        "cpu_vs_minimal_mint",
    ] {
        assert!(j[k].as_f64().unwrap_or(0.0) > 0.0, "{k} in {j}");
    }
}

#[test]
fn bench_short_mint_oidc_jwt_completes_with_every_row_accounted_for() {
    let j = run_bench(&[]);
    assert_eq!(j["route"], "/v1/mint-oidc-jwt");
    assert_completed(&j);
    assert_minimal_mint_completed(&j);
    if https_phase_expected() {
        assert_https_completed(&j, true);
    }
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
    assert!(j.get("minimal_mint_cpu_us").is_none(), "{j}");
    // The HTTPS phase always drives mint-oidc-jwt, here with the run's 8 connections.
    if https_phase_expected() {
        assert_https_completed(&j, false);
        assert_eq!(j["https_connections"], 8, "{j}");
    }
}
