//! The issuer's TLS through the parent's relay: TLS handshakes per second and JWKS
//! requests per second, on a stack whose enclave terminates the issuer's TLS with a
//! certificate from Pebble (`agentkeys_e2e::issuer_tls`).
//!
//! * handshakes: each request opens a new TCP connection through the relay, makes a full
//!   TLS handshake with the enclave (ECDSA P-256 certificate, Pebble's chain) and GETs
//!   the JWKS once; the figure counts those completed requests.
//! * JWKS: keep-alive connections, one GET after another on each.
//!
//! The issuer surface is low-traffic (AWS STS caches the JWKS), so these figures are for
//! regressions, not a target. Needs Pebble: without it the phase says SKIPPED.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkeys_e2e::issuer_tls::{use_binaries_in, IssuerOptions, IssuerStack, ISSUE_TIMEOUT};

/// What the phase measured.
pub struct IssuerTlsFigures {
    /// New TLS connections (handshake and one JWKS GET each) per second.
    pub handshakes_per_second: f64,
    /// JWKS GETs per second on keep-alive connections.
    pub jwks_per_second: f64,
    /// Failed requests in both measurements.
    pub errors: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// Concurrent clients.
    pub clients: usize,
}

impl IssuerTlsFigures {
    /// One line beside the mint figures.
    pub fn print(&self) {
        println!(
            "issuer   {:.1} TLS handshakes/s (new connection + JWKS GET each), {:.1} JWKS/s (keep-alive), {} clients, through the relay to the enclave's TLS; {} errors",
            self.handshakes_per_second, self.jwks_per_second, self.clients, self.errors
        );
    }

    /// Fields for the `--json` line.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "issuer_tls_handshakes_per_second": (self.handshakes_per_second * 10.0).round() / 10.0,
            "issuer_tls_jwks_per_second": (self.jwks_per_second * 10.0).round() / 10.0,
            "issuer_tls_errors": self.errors,
        })
    }
}

/// Runs `clients` loops of GET JWKS for `duration` (after `warmup`) with clients from
/// `make`; returns (requests per second, errors, first error).
fn drive(
    rt: &tokio::runtime::Runtime,
    make: impl Fn() -> anyhow::Result<reqwest::Client>,
    url: &str,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<(f64, u64, Option<String>)> {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let end = Instant::now() + warmup + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = make()?;
        let (ok, errors, first_error, measuring) = (
            ok.clone(),
            errors.clone(),
            first_error.clone(),
            measuring.clone(),
        );
        let url = url.to_string();
        tasks.push(rt.spawn(async move {
            while Instant::now() < end {
                let outcome = match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        r.bytes().await.map(|_| ()).map_err(|e| e.to_string())
                    }
                    Ok(r) => Err(format!("HTTP {}", r.status())),
                    Err(e) => Err(format!("{e:?}")),
                };
                match outcome {
                    Ok(()) => {
                        if measuring.load(Ordering::Relaxed) {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut f) = first_error.lock() {
                            f.get_or_insert(e);
                        }
                    }
                }
            }
        }));
    }
    std::thread::sleep(warmup);
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let first = first_error.lock().ok().and_then(|f| f.clone());
    Ok((
        ok.load(Ordering::Relaxed) as f64 / elapsed,
        errors.load(Ordering::Relaxed),
        first,
    ))
}

/// Starts the stack (binaries from `bin_dir`), waits for its certificate, then measures;
/// `None` (after saying why) when Pebble is not installed.
pub fn run(
    bin_dir: PathBuf,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Option<IssuerTlsFigures>> {
    if let Some(reason) = agentkeys_dev::standins::pebble::missing() {
        println!("issuer   SKIPPED: {reason}");
        return Ok(None);
    }
    use_binaries_in(bin_dir);
    let mut stack = IssuerStack::start(&IssuerOptions::default())?;
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    stack.host.wait_issued(&http, ISSUE_TIMEOUT)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let url = format!("{}/.well-known/jwks.json", stack.issuer());
    let _guard = rt.enter();
    let (handshakes, e1, f1) = drive(
        &rt,
        || stack.client("127.0.0.1", true),
        &url,
        clients,
        warmup,
        duration,
    )?;
    let (jwks, e2, f2) = drive(
        &rt,
        || stack.client("127.0.0.1", false),
        &url,
        clients,
        warmup,
        duration,
    )?;
    Ok(Some(IssuerTlsFigures {
        handshakes_per_second: handshakes,
        jwks_per_second: jwks,
        errors: e1 + e2,
        first_error: f1.or(f2),
        clients,
    }))
}
