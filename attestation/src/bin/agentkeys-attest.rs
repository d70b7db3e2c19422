//! `agentkeys-attest`: inspect and verify AWS Nitro Enclaves attestation documents, and
//! audit a live issuer online.
//!
//! Exit codes: 0 every check passed, 1 a check failed (the output names it), 2 usage or
//! I/O error (among them `verify` without a PCR policy, and a measurements file that lacks
//! PCR0, PCR1 or PCR2).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agentkeys_attestation::measurements::PublishedMeasurements;
use agentkeys_attestation::online::{OnlineAudit, OnlineCheck, OnlineError, OnlineReport};
use agentkeys_attestation::{
    decode_unverified, format_unix_ms, verify, AttestationDocument, CertificateSummary, Check,
    Policy, TrustAnchor, VerifiedDocument, VerifyError, DEFAULT_CLOCK_SKEW, MAX_DOCUMENT_BYTES,
    MAX_PCR_INDEX,
};
use agentkeys_eif::MeasureReport;
use base64::Engine;
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

/// Largest input read from a file or stdin (base64 of the largest document fits easily).
const MAX_INPUT_BYTES: u64 = 4 * MAX_DOCUMENT_BYTES as u64;

const EXIT_OK: u8 = 0;
const EXIT_CHECK_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;

/// Inspect and verify AWS Nitro Enclaves attestation documents.
#[derive(Parser, Debug)]
#[command(name = "agentkeys-attest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Decode a document and print its fields, without verifying anything.
    Inspect(InspectArgs),
    /// Verify a document (or, with --issuer, a live issuer) against the pinned root and a
    /// policy.
    Verify(Box<VerifyArgs>),
    /// Compute PCR0/1/2 (and PCR8 when signed) from an EIF file, without nitro-cli, and
    /// compare them with a measurements JSON.
    Measure(MeasureArgs),
}

#[derive(Args, Debug)]
struct MeasureArgs {
    /// The enclave image file (.eif).
    eif: PathBuf,
    /// nitro-cli measurements JSON to compare with (exit 1 on a mismatch).
    #[arg(long, value_name = "FILE")]
    measurements: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Measures the image first, so that an unreadable image is reported before an unreadable
/// measurements file.
fn run_measure(args: &MeasureArgs) -> Result<u8, UsageError> {
    let measurement = agentkeys_eif::measure_file(&args.eif)?;
    let published = args
        .measurements
        .as_deref()
        .map(PublishedMeasurements::from_file)
        .transpose()?;
    let report = MeasureReport::new(&measurement, published.as_ref().map(|p| &p.pcrs), args.json);
    print!("{}", report.output);
    if args.json {
        println!();
    }
    Ok(if report.ok {
        EXIT_OK
    } else {
        EXIT_CHECK_FAILED
    })
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// Document file (raw COSE_Sign1, or base64 with --base64); `-` reads stdin.
    doc: String,
    /// The input is base64.
    #[arg(long)]
    base64: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// Document file (raw COSE_Sign1, or base64 with --base64); `-` reads stdin.
    #[arg(required_unless_present = "issuer", conflicts_with = "issuer")]
    doc: Option<String>,
    /// The input is base64.
    #[arg(long)]
    base64: bool,
    /// Audit a live issuer instead: fetch discovery, JWKS and a fresh attestation.
    #[arg(long, value_name = "URL")]
    issuer: Option<String>,
    /// Verification time, UNIX seconds (default: now).
    #[arg(long, value_name = "UNIX_SECONDS")]
    at: Option<u64>,
    /// Trust anchor PEM file instead of the embedded AWS Nitro Enclaves Root-G1.
    #[arg(long, value_name = "PEM")]
    root: Option<PathBuf>,
    /// Accept the mock NSM root given with --root (mock mode only).
    #[arg(long, requires = "root")]
    allow_mock_root: bool,
    /// Accept documents from debug-mode enclaves (PCR0/1/2 all zero).
    #[arg(long)]
    allow_debug: bool,
    /// Expected PCR value, repeatable: N=HEX with N in 0..31.
    #[arg(long = "pcr", value_name = "N=HEX", value_parser = parse_pcr)]
    pcrs: Vec<(u16, Vec<u8>)>,
    /// nitro-cli measurements JSON of the image you rebuilt (PCR0, PCR1 and PCR2
    /// required).
    #[arg(long, value_name = "FILE")]
    measurements: Option<PathBuf>,
    /// Check no PCRs: any enclave image signed by the trusted root passes.
    #[arg(long, conflicts_with_all = ["pcrs", "measurements"])]
    no_pcr_policy: bool,
    /// Expected nonce (hex).
    #[arg(long, value_name = "HEX", value_parser = parse_hex, conflicts_with = "issuer")]
    nonce: Option<HexBytes>,
    /// Expected user_data (hex).
    #[arg(long, value_name = "HEX", value_parser = parse_hex, conflicts_with = "issuer")]
    user_data: Option<HexBytes>,
    /// Expected public_key (hex).
    #[arg(long, value_name = "HEX", value_parser = parse_hex, conflicts_with = "issuer")]
    public_key: Option<HexBytes>,
    /// Maximum document age in seconds.
    #[arg(long, value_name = "SECONDS")]
    max_age: Option<u64>,
    /// Clock skew allowed, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_CLOCK_SKEW.as_secs())]
    clock_skew: u64,
    /// With --issuer: the KMS key ARN the issuer's enclave must be pinned to (the
    /// `--kms-key-arn` of the image you rebuilt).
    #[arg(long, value_name = "ARN", requires = "issuer")]
    kms_key_arn: Option<String>,
    /// With --issuer: a key id the JWKS must hold; repeat for each. The JWKS must hold
    /// exactly these, so a swapped seed or a silent genesis is caught.
    // A kid is a base64url JWK thumbprint, which may start with '-'.
    #[arg(
        long = "expect-kid",
        value_name = "KID",
        requires = "issuer",
        allow_hyphen_values = true
    )]
    expect_kids: Vec<String>,
    /// HTTP timeout for --issuer, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    timeout: u64,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// A usage or I/O error (exit 2).
struct UsageError(String);

impl<E: std::fmt::Display> From<E> for UsageError {
    fn from(e: E) -> Self {
        UsageError(e.to_string())
    }
}

/// Bytes given as hex on the command line.
#[derive(Debug, Clone)]
struct HexBytes(Vec<u8>);

fn parse_hex(s: &str) -> Result<HexBytes, String> {
    hex::decode(s.trim())
        .map(HexBytes)
        .map_err(|e| format!("not hex: {e}"))
}

fn parse_pcr(s: &str) -> Result<(u16, Vec<u8>), String> {
    let (index, value) = s
        .split_once('=')
        .ok_or_else(|| "expected N=HEX".to_owned())?;
    let index: u16 = index
        .trim()
        .trim_start_matches("PCR")
        .parse()
        .map_err(|_| format!("PCR index {index:?} is not a number"))?;
    if index > MAX_PCR_INDEX {
        return Err(format!("PCR index {index} is not in 0..={MAX_PCR_INDEX}"));
    }
    Ok((index, parse_hex(value)?.0))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect(&args),
        Command::Verify(args) => run_verify(&args),
        Command::Measure(args) => run_measure(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(UsageError(message)) => {
            eprintln!("agentkeys-attest: error: {message}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Reads DOC (path or `-`), decoding base64 when asked.
fn read_document(doc: &str, base64: bool) -> Result<Vec<u8>, UsageError> {
    let mut bytes = Vec::new();
    if doc == "-" {
        std::io::stdin()
            .take(MAX_INPUT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| UsageError(format!("reading stdin: {e}")))?;
    } else {
        std::fs::File::open(doc)
            .and_then(|f| f.take(MAX_INPUT_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|e| UsageError(format!("reading {doc}: {e}")))?;
    }
    if !base64 {
        return Ok(bytes);
    }
    let text: Vec<u8> = bytes
        .into_iter()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(&text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&text))
        .map_err(|e| UsageError(format!("{doc} is not base64: {e}")))
}

fn inspect(args: &InspectArgs) -> Result<u8, UsageError> {
    let bytes = read_document(&args.doc, args.base64)?;
    let mut out = String::new();
    let code = match decode_unverified(&bytes) {
        Ok(document) => {
            if args.json {
                let value =
                    json!({"ok": true, "verified": false, "document": document_json(&document)});
                let _ = writeln!(out, "{value:#}");
            } else {
                print_document(&mut out, &document);
            }
            EXIT_OK
        }
        Err(e) => {
            if args.json {
                let value =
                    json!({"ok": false, "failed_check": e.check().name(), "error": e.to_string()});
                let _ = writeln!(out, "{value:#}");
            } else {
                let _ = writeln!(out, "cannot decode document: {e}");
            }
            EXIT_CHECK_FAILED
        }
    };
    emit(&out);
    Ok(code)
}

/// Writes the output; a closed stdout (e.g. piped into `head`) is not an error.
fn emit(out: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush());
}

fn opt_hex(v: &Option<Vec<u8>>) -> Value {
    v.as_ref()
        .map_or(Value::Null, |b| Value::String(hex::encode(b)))
}

fn document_json(d: &AttestationDocument) -> Value {
    let pcrs: serde_json::Map<String, Value> = d
        .pcrs
        .iter()
        .map(|(i, v)| (i.to_string(), Value::String(hex::encode(v))))
        .collect();
    let chain: Vec<Value> = d
        .certificate_summaries()
        .into_iter()
        .map(|s| match s {
            Ok(s) => summary_json(&s),
            Err(e) => json!({"error": e.to_string()}),
        })
        .collect();
    json!({
        "module_id": d.module_id,
        "digest": d.digest,
        "timestamp_ms": d.timestamp_ms,
        "timestamp": format_unix_ms(d.timestamp_ms),
        "debug_mode": d.is_debug_mode(),
        "pcrs": pcrs,
        "certificates": chain,
        "user_data": opt_hex(&d.user_data),
        "nonce": opt_hex(&d.nonce),
        "public_key": opt_hex(&d.public_key),
    })
}

fn summary_json(s: &CertificateSummary) -> Value {
    json!({
        "position": s.position.to_string(),
        "subject": s.subject,
        "issuer": s.issuer,
        "serial": s.serial_hex,
        "not_before": format_unix_ms(s.not_before_ms),
        "not_after": format_unix_ms(s.not_after_ms),
        "sha256": s.sha256_hex,
    })
}

fn print_document(out: &mut String, d: &AttestationDocument) {
    let _ = writeln!(out, "module_id   {}", d.module_id);
    let _ = writeln!(
        out,
        "timestamp   {} ({} ms)",
        format_unix_ms(d.timestamp_ms),
        d.timestamp_ms
    );
    let _ = writeln!(out, "digest      {}", d.digest);
    let _ = writeln!(out, "debug_mode  {}", d.is_debug_mode());
    for (index, value) in &d.pcrs {
        let _ = writeln!(out, "PCR{index:<8} {}", hex::encode(value));
    }
    let _ = writeln!(out, "certificates (root first, not verified by inspect):");
    for summary in d.certificate_summaries() {
        match summary {
            Ok(s) => {
                let _ = writeln!(out, "  {}", s.position);
                let _ = writeln!(out, "    subject   {}", s.subject);
                let _ = writeln!(
                    out,
                    "    validity  {} .. {}",
                    format_unix_ms(s.not_before_ms),
                    format_unix_ms(s.not_after_ms)
                );
                let _ = writeln!(out, "    sha256    {}", s.sha256_hex);
            }
            Err(e) => {
                let _ = writeln!(out, "  {e}");
            }
        }
    }
    let show = |v: &Option<Vec<u8>>| v.as_ref().map_or("(none)".to_owned(), hex::encode);
    let _ = writeln!(out, "user_data   {}", show(&d.user_data));
    let _ = writeln!(out, "nonce       {}", show(&d.nonce));
    let _ = writeln!(out, "public_key  {}", show(&d.public_key));
}

fn build_anchor(args: &VerifyArgs) -> Result<TrustAnchor, UsageError> {
    let Some(path) = &args.root else {
        return Ok(TrustAnchor::aws_nitro_root_g1());
    };
    let pem = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("reading {}: {e}", path.display())))?;
    if args.allow_mock_root {
        mock_anchor(&pem)
    } else {
        Ok(TrustAnchor::from_pem(&pem)?)
    }
}

#[cfg(feature = "mock-root")]
fn mock_anchor(pem: &str) -> Result<TrustAnchor, UsageError> {
    Ok(TrustAnchor::mock_root_explicitly_trusted(pem)?)
}

#[cfg(not(feature = "mock-root"))]
fn mock_anchor(_pem: &str) -> Result<TrustAnchor, UsageError> {
    Err(UsageError(
        "--allow-mock-root: this build has no mock-root feature".to_owned(),
    ))
}

/// Printed on stderr when `--no-pcr-policy` is given.
const NO_PCR_POLICY_WARNING: &str = "warning: --no-pcr-policy: the document's PCRs are not \
     checked; any enclave image signed by the trusted root passes";

/// Refused when neither PCR values nor `--no-pcr-policy` are given: without PCRs the
/// verifier proves only that some enclave signed by the root produced the document.
const NO_PCR_POLICY_ERROR: &str = "no PCR policy: give --measurements FILE (the nitro-cli \
     measurements of the image you rebuilt) and/or --pcr N=HEX, or --no-pcr-policy to accept \
     any enclave image signed by the trusted root";

fn build_policy(args: &VerifyArgs) -> Result<Policy, UsageError> {
    let mut expected: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
    if let Some(path) = &args.measurements {
        expected = PublishedMeasurements::expected_from_file(path)
            .map_err(|e| UsageError(format!("--measurements: {e}")))?
            .pcrs;
    }
    for (index, value) in &args.pcrs {
        if let Some(previous) = expected.insert(*index, value.clone()) {
            if previous != *value {
                return Err(UsageError(format!(
                    "--pcr {index} conflicts with the value in --measurements"
                )));
            }
        }
    }
    if args.no_pcr_policy {
        eprintln!("{NO_PCR_POLICY_WARNING}");
    } else if expected.is_empty() {
        return Err(UsageError(NO_PCR_POLICY_ERROR.to_owned()));
    }
    Ok(Policy {
        expected_pcrs: expected,
        allow_debug: args.allow_debug,
        nonce: args.nonce.clone().map(|h| h.0),
        user_data: args.user_data.clone().map(|h| h.0),
        public_key: args.public_key.clone().map(|h| h.0),
        max_age: args.max_age.map(Duration::from_secs),
        clock_skew: Duration::from_secs(args.clock_skew),
    })
}

fn run_verify(args: &VerifyArgs) -> Result<u8, UsageError> {
    let anchor = build_anchor(args)?;
    let policy = build_policy(args)?;
    let at_ms = args.at.map(|s| s.saturating_mul(1000));
    if let Some(issuer) = &args.issuer {
        return run_online(args, issuer, anchor, policy, at_ms);
    }
    let doc = args.doc.as_deref().unwrap_or("-");
    let bytes = read_document(doc, args.base64)?;
    let at_ms = at_ms.unwrap_or_else(agentkeys_attestation::now_unix_ms);
    let result = verify(&bytes, &anchor, at_ms, &policy);
    let rows = check_rows(&policy, result.as_ref().err());
    let mut out = String::new();
    if args.json {
        let value = verify_json(&anchor, at_ms, &rows, &result);
        let _ = writeln!(out, "{value:#}");
    } else {
        print_rows(&mut out, &rows);
        print_verify_outcome(&mut out, &anchor, at_ms, &result);
    }
    emit(&out);
    Ok(if result.is_ok() {
        EXIT_OK
    } else {
        EXIT_CHECK_FAILED
    })
}

/// One row of the checks table.
struct Row {
    name: &'static str,
    status: &'static str,
    detail: String,
}

fn check_rows(policy: &Policy, error: Option<&VerifyError>) -> Vec<Row> {
    let failed = error.map(VerifyError::check);
    Check::ALL
        .iter()
        .map(|&check| {
            let (status, detail) = match failed {
                Some(f) if f == check => ("FAIL", error.map(detail_of).unwrap_or_default()),
                Some(f) if f < check => ("not run", String::new()),
                _ => match skipped_reason(check, policy) {
                    Some(reason) => ("skipped", reason.to_owned()),
                    None => ("pass", String::new()),
                },
            };
            Row {
                name: check.name(),
                status,
                detail,
            }
        })
        .collect()
}

/// The error message without its leading "check_name: ".
fn detail_of(e: &VerifyError) -> String {
    let message = e.to_string();
    let prefix = format!("{}: ", e.check().name());
    message
        .strip_prefix(&prefix)
        .map(str::to_owned)
        .unwrap_or(message)
}

fn skipped_reason(check: Check, policy: &Policy) -> Option<&'static str> {
    match check {
        Check::Pcrs if policy.expected_pcrs.is_empty() => Some("--no-pcr-policy"),
        Check::DebugMode if policy.allow_debug => Some("debug mode allowed"),
        Check::Nonce if policy.nonce.is_none() => Some("no expected nonce given"),
        Check::UserData if policy.user_data.is_none() => Some("no expected user_data given"),
        Check::PublicKey if policy.public_key.is_none() => Some("no expected public_key given"),
        _ => None,
    }
}

fn print_rows(out: &mut String, rows: &[Row]) {
    let _ = writeln!(out, "{:<18} {:<8} detail", "check", "result");
    for row in rows {
        let _ = writeln!(out, "{:<18} {:<8} {}", row.name, row.status, row.detail);
    }
}

fn anchor_json(anchor: &TrustAnchor) -> Value {
    json!({"subject": anchor.subject(), "sha256": anchor.sha256_hex(), "mock": anchor.is_mock()})
}

fn verified_json(v: &VerifiedDocument) -> Value {
    let mut doc = document_json(&v.document);
    if let Some(map) = doc.as_object_mut() {
        map.insert(
            "certificates".to_owned(),
            Value::Array(v.chain.iter().map(summary_json).collect()),
        );
    }
    doc
}

fn verify_json(
    anchor: &TrustAnchor,
    at_ms: u64,
    rows: &[Row],
    result: &Result<VerifiedDocument, VerifyError>,
) -> Value {
    let checks: Vec<Value> = rows
        .iter()
        .map(|r| json!({"check": r.name, "result": r.status, "detail": r.detail}))
        .collect();
    json!({
        "ok": result.is_ok(),
        "failed_check": result.as_ref().err().map(|e| e.check().name()),
        "error": result.as_ref().err().map(|e| e.to_string()),
        "verified_at_ms": at_ms,
        "verified_at": format_unix_ms(at_ms),
        "anchor": anchor_json(anchor),
        "checks": checks,
        "document": result.as_ref().ok().map(verified_json),
    })
}

fn print_verify_outcome(
    out: &mut String,
    anchor: &TrustAnchor,
    at_ms: u64,
    result: &Result<VerifiedDocument, VerifyError>,
) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "anchor      {} (sha256 {}){}",
        anchor.subject(),
        anchor.sha256_hex(),
        if anchor.is_mock() { " [MOCK ROOT]" } else { "" }
    );
    let _ = writeln!(out, "time        {}", format_unix_ms(at_ms));
    match result {
        Ok(v) => {
            let _ = writeln!(out, "module_id   {}", v.document.module_id);
            let _ = writeln!(
                out,
                "timestamp   {}",
                format_unix_ms(v.document.timestamp_ms)
            );
            for index in [0u16, 1, 2] {
                if let Some(pcr) = v.document.pcrs.get(&index) {
                    let _ = writeln!(out, "PCR{index}        {}", hex::encode(pcr));
                }
            }
            let _ = writeln!(out, "result      VERIFIED");
        }
        Err(e) => {
            let _ = writeln!(out, "result      FAILED: {e}");
        }
    }
}

fn run_online(
    args: &VerifyArgs,
    issuer: &str,
    anchor: TrustAnchor,
    policy: Policy,
    at_ms: Option<u64>,
) -> Result<u8, UsageError> {
    if let Some(arn) = &args.kms_key_arn {
        agentkeys_statement::KmsKeyArn::parse(arn)
            .map_err(|e| UsageError(format!("--kms-key-arn: {e}")))?;
    }
    if let Some(bad) = args.expect_kids.iter().find(|k| k.is_empty()) {
        return Err(UsageError(format!(
            "--expect-kid {bad:?}: a key id is not empty"
        )));
    }
    let audit = OnlineAudit {
        issuer: issuer.to_owned(),
        anchor,
        policy,
        at_unix_ms: at_ms,
        timeout: Duration::from_secs(args.timeout),
        expect_kms_key_arn: args.kms_key_arn.clone(),
        expect_kids: args.expect_kids.clone(),
    };
    let result = audit.run();
    if let Err(e) = &result {
        if e.is_transport() {
            return Err(UsageError(e.to_string()));
        }
    }
    let rows = online_rows(&audit.policy, result.as_ref().err());
    let mut out = String::new();
    if args.json {
        let checks: Vec<Value> = rows
            .iter()
            .map(|r| json!({"check": r.name, "result": r.status, "detail": r.detail}))
            .collect();
        let value = json!({
            "ok": result.is_ok(),
            "issuer": issuer,
            "failed_check": result.as_ref().err().map(online_failed_name),
            "error": result.as_ref().err().map(|e| e.to_string()),
            "checks": checks,
            "report": result.as_ref().ok().map(report_json),
        });
        let _ = writeln!(out, "{value:#}");
    } else {
        print_rows(&mut out, &rows);
        let _ = writeln!(out);
        match &result {
            Ok(r) => {
                let _ = writeln!(out, "issuer       {}", r.issuer);
                let _ = writeln!(out, "jwks_uri     {}", r.jwks_uri);
                let _ = writeln!(out, "jwks_sha256  {}", r.jwks_sha256_hex);
                let _ = writeln!(out, "kids         {}", r.kids.join(", "));
                let _ = writeln!(out, "attested     {}", r.attested_kid);
                let _ = writeln!(out, "nonce        {}", r.nonce_hex);
                let _ = writeln!(out, "module_id    {}", r.verified.document.module_id);
                let _ = writeln!(out, "kms_key_arn  {}", r.statement.kms_key_arn);
                let _ = writeln!(
                    out,
                    "sealed_seed  sha256 {}",
                    hex::encode(r.statement.sealed_seed_sha256)
                );
                let _ = writeln!(out, "key_version  {}", r.statement.key_version);
                let _ = writeln!(out, "audit_epoch  {}", r.statement.audit_epoch);
                let _ = writeln!(out, "result       VERIFIED");
            }
            Err(e) => {
                let _ = writeln!(out, "result       FAILED ({}): {e}", online_failed_name(e));
            }
        }
    }
    emit(&out);
    Ok(if result.is_ok() {
        EXIT_OK
    } else {
        EXIT_CHECK_FAILED
    })
}

fn online_failed_name(e: &OnlineError) -> &'static str {
    match e {
        OnlineError::Verify(v) => v.check().name(),
        other => other.check().map_or("transport", OnlineCheck::name),
    }
}

fn report_json(r: &OnlineReport) -> Value {
    json!({
        "issuer": r.issuer,
        "jwks_uri": r.jwks_uri,
        "attestation_url": r.attestation_url,
        "nonce": r.nonce_hex,
        "jwks_sha256": r.jwks_sha256_hex,
        "kids": r.kids,
        "attested_kid": r.attested_kid,
        "statement": {
            "kms_key_arn": r.statement.kms_key_arn.as_str(),
            "sealed_seed_sha256": hex::encode(r.statement.sealed_seed_sha256),
            "key_version": r.statement.key_version,
            "audit_epoch": r.statement.audit_epoch,
            "module_id": r.statement.module_id,
        },
        "document": verified_json(&r.verified),
    })
}

/// Rows for the online mode: discovery and response checks, the document checks, then the
/// JWKS binding checks.
fn online_rows(policy: &Policy, error: Option<&OnlineError>) -> Vec<Row> {
    let failed_online = error.and_then(OnlineError::check);
    let position = |c: OnlineCheck| OnlineCheck::ALL.iter().position(|x| *x == c);
    let failed_pos = failed_online.and_then(position);
    let mut rows = Vec::new();
    for check in OnlineCheck::ALL {
        let pos = position(check);
        if check == OnlineCheck::Document {
            // Expand into the document checklist (nonce and user_data are always checked).
            let mut doc_policy = policy.clone();
            doc_policy.nonce = Some(Vec::new());
            doc_policy.user_data = Some(Vec::new());
            let verify_error = match error {
                Some(OnlineError::Verify(v)) => Some(v),
                _ => None,
            };
            let not_reached = failed_pos.is_some_and(|f| Some(f) < pos);
            for row in check_rows(&doc_policy, verify_error) {
                rows.push(if not_reached {
                    Row {
                        status: "not run",
                        detail: String::new(),
                        ..row
                    }
                } else {
                    row
                });
            }
            continue;
        }
        let (status, detail) = match failed_pos {
            Some(f) if Some(f) == pos => ("FAIL", error.map(|e| e.to_string()).unwrap_or_default()),
            Some(f) if Some(f) < pos => ("not run", String::new()),
            _ => ("pass", String::new()),
        };
        rows.push(Row {
            name: check.name(),
            status,
            detail,
        });
    }
    rows
}
