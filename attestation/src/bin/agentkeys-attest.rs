//! `agentkeys-attest`: inspect and verify AWS Nitro Enclaves attestation documents, and
//! audit a live issuer online, once (`verify --issuer`) or again and again (`watch`).
//!
//! Exit codes: 0 every check passed, 1 a check failed (the output names it), 2 usage or
//! I/O error (among them `verify` without a PCR policy, a measurements file that lacks
//! PCR0, PCR1 or PCR2, and an issuer that cannot be fetched). An `http://` issuer fails
//! the `tls_key` check unless `--allow-plain-http` (or `--allow-mock-root`) accepts it. `watch`: 1 at the first alert with `--exit-on-change`; after
//! `--count N` checks, 1 if any check alerted, 2 if none got through, else 0.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agentkeys_attestation::measurements::PublishedMeasurements;
use agentkeys_attestation::online::{
    OnlineAudit, OnlineCheck, OnlineError, OnlineReport, TlsRootsPem,
};
use agentkeys_attestation::tls_leaf::TlsLeaf;
use agentkeys_attestation::watch::{render_json, render_lines, Watch};
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
    /// Audit a live issuer again and again (as `verify --issuer`), one line per check, and
    /// alert when its TLS key, JWKS, measurements or ACME account change or a check fails.
    Watch(Box<WatchArgs>),
}

#[derive(Args, Debug)]
struct WatchArgs {
    /// The issuer to watch (as `verify --issuer`).
    #[arg(long, value_name = "URL")]
    issuer: String,
    /// Seconds between the start of one check and the next.
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    interval: u64,
    /// Stop after this many checks (default: run until stopped).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Exit with status 1 at the first alert.
    #[arg(long)]
    exit_on_change: bool,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    online: IssuerArgs,
    /// One JSON object per check instead of text lines.
    #[arg(long)]
    json: bool,
}

/// What a document must be to pass: the anchor and the PCR policy.
#[derive(Args, Debug)]
struct TrustArgs {
    /// Trust anchor PEM file instead of the embedded AWS Nitro Enclaves Root-G1.
    #[arg(long, value_name = "PEM")]
    root: Option<PathBuf>,
    /// Accept the mock NSM root given with --root (mock mode only). With an issuer, it
    /// also accepts a plain-HTTP (development) issuer, as --allow-plain-http does.
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
    /// Maximum document age in seconds.
    #[arg(long, value_name = "SECONDS")]
    max_age: Option<u64>,
    /// Clock skew allowed, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_CLOCK_SKEW.as_secs())]
    clock_skew: u64,
}

/// How a live issuer is audited beyond its documents.
#[derive(Args, Debug)]
struct IssuerArgs {
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
    /// With --issuer: PEM file of the roots that validate the issuer's TLS certificate,
    /// instead of the built-in WebPKI roots (e.g. a private or test CA).
    #[arg(long, value_name = "PEM", requires = "issuer")]
    cacert: Option<PathBuf>,
    /// With --issuer: accept an http:// issuer. There is no TLS handshake to check, so
    /// the TLS key and ACME account checks are skipped: for development stacks only.
    #[arg(long, requires = "issuer")]
    allow_plain_http: bool,
    /// With --issuer: connect to ADDR for HOST:PORT instead of resolving HOST (`curl
    /// --resolve` syntax), e.g. to audit one host of a fleet; TLS still checks the
    /// certificate for HOST. Repeatable; entries for another host or port are not used.
    #[arg(long, value_name = "HOST:PORT:ADDR", requires = "issuer", value_parser = parse_resolve)]
    resolve: Vec<(String, std::net::SocketAddr)>,
    /// HTTP timeout for --issuer, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    timeout: u64,
}

/// `HOST:PORT:ADDR` (`curl --resolve`): a host name (which has no colon), a port, and an
/// IPv4 or IPv6 address (brackets optional).
fn parse_resolve(s: &str) -> Result<(String, std::net::SocketAddr), String> {
    let usage = "expected HOST:PORT:ADDR, e.g. issuer.example.com:443:192.0.2.10";
    let (host, rest) = s.split_once(':').ok_or_else(|| usage.to_owned())?;
    let (port, address) = rest.split_once(':').ok_or_else(|| usage.to_owned())?;
    if host.is_empty() {
        return Err(format!("the host is empty; {usage}"));
    }
    let port: u16 = port
        .parse()
        .map_err(|e| format!("port {port:?} is not a port number: {e}"))?;
    let address: std::net::IpAddr = address
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|e| format!("{address:?} is not an IP address: {e}"))?;
    Ok((
        host.to_ascii_lowercase(),
        std::net::SocketAddr::new(address, port),
    ))
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
    #[command(flatten)]
    trust: TrustArgs,
    /// Expected nonce (hex).
    #[arg(long, value_name = "HEX", value_parser = parse_hex, conflicts_with = "issuer")]
    nonce: Option<HexBytes>,
    /// Expected user_data (hex).
    #[arg(long, value_name = "HEX", value_parser = parse_hex, conflicts_with = "issuer")]
    user_data: Option<HexBytes>,
    /// Expected public_key (hex).
    #[arg(long, value_name = "HEX", value_parser = parse_hex, conflicts_with = "issuer")]
    public_key: Option<HexBytes>,
    #[command(flatten)]
    online: IssuerArgs,
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
        Command::Watch(args) => run_watch(&args),
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

fn build_anchor(args: &TrustArgs) -> Result<TrustAnchor, UsageError> {
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

/// The document policy: the trust flags, plus `verify`'s expected fields when given.
fn build_policy(args: &TrustArgs, fields: Option<&VerifyArgs>) -> Result<Policy, UsageError> {
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
    let field =
        |f: fn(&VerifyArgs) -> &Option<HexBytes>| fields.and_then(|v| f(v).clone()).map(|h| h.0);
    Ok(Policy {
        expected_pcrs: expected,
        allow_debug: args.allow_debug,
        nonce: field(|v| &v.nonce),
        user_data: field(|v| &v.user_data),
        public_key: field(|v| &v.public_key),
        max_age: args.max_age.map(Duration::from_secs),
        clock_skew: Duration::from_secs(args.clock_skew),
    })
}

fn run_verify(args: &VerifyArgs) -> Result<u8, UsageError> {
    let anchor = build_anchor(&args.trust)?;
    let policy = build_policy(&args.trust, Some(args))?;
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

/// Why the TLS checks of a plain-HTTP issuer are skipped (rows and JSON).
const PLAIN_HTTP_SKIPPED: &str = "http:// issuer: no TLS handshake to check";

/// The online audit the flags describe. An http:// issuer fails the TLS key check unless
/// the auditor accepts one (`--allow-plain-http`, or a mock root, which only a development
/// stack has).
fn online_audit(
    issuer: &str,
    online: &IssuerArgs,
    trust: &TrustArgs,
    anchor: TrustAnchor,
    policy: Policy,
    at_ms: Option<u64>,
) -> Result<OnlineAudit, UsageError> {
    if let Some(arn) = &online.kms_key_arn {
        agentkeys_statement::KmsKeyArn::parse(arn)
            .map_err(|e| UsageError(format!("--kms-key-arn: {e}")))?;
    }
    if let Some(bad) = online.expect_kids.iter().find(|k| k.is_empty()) {
        return Err(UsageError(format!(
            "--expect-kid {bad:?}: a key id is not empty"
        )));
    }
    let tls_roots_pem = match &online.cacert {
        Some(path) => Some(TlsRootsPem {
            source_name: path.display().to_string(),
            pem: std::fs::read_to_string(path)
                .map_err(|e| UsageError(format!("--cacert {}: {e}", path.display())))?,
        }),
        None => None,
    };
    let allow_plain_http = online.allow_plain_http || trust.allow_mock_root;
    let plain = issuer
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
    if plain && allow_plain_http {
        let why = if online.allow_plain_http {
            "--allow-plain-http"
        } else {
            "--allow-mock-root (a development stack)"
        };
        eprintln!(
            "warning: {issuer} is http://: there is no TLS handshake to check, so the \
             tls_key and acme_account checks are skipped ({why})"
        );
    }
    Ok(OnlineAudit {
        issuer: issuer.to_owned(),
        anchor,
        policy,
        at_unix_ms: at_ms,
        timeout: Duration::from_secs(online.timeout),
        expect_kms_key_arn: online.kms_key_arn.clone(),
        expect_kids: online.expect_kids.clone(),
        tls_roots_pem,
        allow_plain_http,
        resolve: online.resolve.clone(),
    })
}

/// True for errors that no retry can cure: the command line is wrong.
fn is_usage_error(e: &OnlineError) -> bool {
    matches!(
        e,
        OnlineError::IssuerUrl { .. } | OnlineError::TlsRoots { .. }
    )
}

fn run_online(
    args: &VerifyArgs,
    issuer: &str,
    anchor: TrustAnchor,
    policy: Policy,
    at_ms: Option<u64>,
) -> Result<u8, UsageError> {
    let audit = online_audit(issuer, &args.online, &args.trust, anchor, policy, at_ms)?;
    let plain_http = !issuer.to_ascii_lowercase().starts_with("https://");
    let result = audit.run();
    if let Err(e) = &result {
        if e.is_transport() {
            return Err(UsageError(e.to_string()));
        }
    }
    let rows = online_rows(&audit.policy, plain_http, result.as_ref().err());
    let presented = match &result {
        Err(OnlineError::TlsKeyMismatch { leaf, .. }) => Some(leaf.as_ref()),
        _ => None,
    };
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
            "presented_certificate": presented.map(leaf_json),
            "checks": checks,
            "report": result.as_ref().ok().map(report_json),
        });
        let _ = writeln!(out, "{value:#}");
    } else {
        print_rows(&mut out, &rows);
        let _ = writeln!(out);
        match &result {
            Ok(r) => print_report(&mut out, r),
            Err(e) => {
                if let Some(leaf) = presented {
                    print_leaf(&mut out, "presented", leaf);
                }
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

fn print_leaf(out: &mut String, label: &str, leaf: &TlsLeaf) {
    let _ = writeln!(
        out,
        "tls_leaf     {label}: spki sha256 {}",
        leaf.spki_sha256_hex()
    );
    let _ = writeln!(out, "             subject {}", leaf.subject);
    let _ = writeln!(out, "             issuer {}", leaf.issuer);
    let _ = writeln!(
        out,
        "             serial {}, notAfter {}",
        leaf.serial_hex,
        format_unix_ms(leaf.not_after_ms)
    );
}

fn print_report(out: &mut String, r: &OnlineReport) {
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
    let _ = writeln!(
        out,
        "tls_spki     sha256 {} (attested)",
        hex::encode(r.statement.tls_spki_sha256)
    );
    match &r.tls {
        Some(tls) => {
            for leaf in &tls.leaves {
                print_leaf(out, "served, key = attested", leaf);
            }
        }
        None => {
            let _ = writeln!(out, "tls_leaf     not checked: {PLAIN_HTTP_SKIPPED}");
        }
    }
    if let Some(a) = &r.acme_account {
        let _ = writeln!(out, "acme_account {}", a.statement.account_uri);
        let _ = writeln!(out, "acme_ca      {}", a.statement.directory);
        let _ = writeln!(out, "acme_host    {}", a.statement.hostname);
        let _ = writeln!(out, "caa_issue    {}", a.caa_issue_value);
        let _ = writeln!(out, "acme_doc     carries our nonce");
    }
    let _ = writeln!(out, "result       VERIFIED");
}

fn run_watch(args: &WatchArgs) -> Result<u8, UsageError> {
    let anchor = build_anchor(&args.trust)?;
    let policy = build_policy(&args.trust, None)?;
    let audit = online_audit(
        &args.issuer,
        &args.online,
        &args.trust,
        anchor,
        policy,
        None,
    )?;
    let interval = Duration::from_secs(args.interval);
    let mut watch = Watch::new();
    let (mut checks, mut passed, mut alerted) = (0u64, 0u64, false);
    loop {
        let started = std::time::Instant::now();
        let result = audit.run();
        if let Err(e) = &result {
            if is_usage_error(e) {
                return Err(UsageError(e.to_string()));
            }
        }
        checks += 1;
        let outcome = watch.record(&result);
        let now = agentkeys_attestation::now_unix_ms();
        let mut out = String::new();
        if args.json {
            let _ = writeln!(out, "{}", render_json(now, &outcome));
        } else {
            for line in render_lines(now, &outcome) {
                let _ = writeln!(out, "{line}");
            }
        }
        emit(&out);
        passed += u64::from(outcome.observation().is_some());
        if outcome.is_alert() {
            alerted = true;
            if args.exit_on_change {
                return Ok(EXIT_CHECK_FAILED);
            }
        }
        if args.count.is_some_and(|count| checks >= count) {
            break;
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
    if alerted {
        Ok(EXIT_CHECK_FAILED)
    } else if passed == 0 {
        Err(UsageError(format!(
            "none of the {checks} checks of {} got through",
            args.issuer
        )))
    } else {
        Ok(EXIT_OK)
    }
}

fn online_failed_name(e: &OnlineError) -> &'static str {
    e.failed_check_name()
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
        "tls": match &r.tls {
            Some(tls) => json!({
                "checked": true,
                "certificates": tls.leaves.iter().map(leaf_json).collect::<Vec<_>>(),
            }),
            None => json!({"checked": false, "reason": PLAIN_HTTP_SKIPPED}),
        },
        "acme_account": r.acme_account.as_ref().map(|a| json!({
            "account_uri": a.statement.account_uri,
            "directory": a.statement.directory,
            "hostname": a.statement.hostname,
            "tls_spki_sha256": hex::encode(a.statement.tls_spki_sha256),
            "account_key_thumbprint": a.statement.account_key_thumbprint,
            "caa_issue_value": a.caa_issue_value,
            "module_id": a.statement.module_id,
            "nonce": a.nonce_hex,
            "document": verified_json(&a.verified),
        })),
    })
}

fn leaf_json(leaf: &TlsLeaf) -> Value {
    json!({
        "spki_sha256": leaf.spki_sha256_hex(),
        "subject": leaf.subject,
        "issuer": leaf.issuer,
        "serial": leaf.serial_hex,
        "not_before": format_unix_ms(leaf.not_before_ms),
        "not_after": format_unix_ms(leaf.not_after_ms),
        "sha256": hex::encode(leaf.cert_sha256),
    })
}

/// Rows for the online mode: discovery and response checks, the document checks, then the
/// JWKS binding checks.
fn online_rows(policy: &Policy, plain_http: bool, error: Option<&OnlineError>) -> Vec<Row> {
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
            _ if plain_http && check.needs_tls() => ("skipped", PLAIN_HTTP_SKIPPED.to_owned()),
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
