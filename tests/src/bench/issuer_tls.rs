//! The dev stack's two-hostname mode, `agentkeys-dev dev --acme pebble --api-tls`: the
//! issuer's TLS ends in the enclave with a certificate from Pebble, relayed unread by the
//! broker, and the mint API has TLS of its own, which the broker terminates (rustls).
//! Three measurements on that one stack:
//!
//! * handshakes: each request opens a new TCP connection through the relay, makes a full
//!   TLS handshake with the enclave (ECDSA P-256 certificate, Pebble's chain) and GETs
//!   the JWKS once; the figure counts those completed requests.
//! * JWKS: keep-alive connections, one GET after another on each.
//! * HTTPS mints: `POST /v1/mint-oidc-jwt` over keep-alive TLS connections to the mint
//!   API, as the main phase does over plain HTTP (same connection count, warm-up and
//!   duration, a session per connection), with the same audit check and CPU per mint.
//!
//! The issuer surface is low-traffic (AWS STS caches the JWKS), so its figures are for
//! regressions, not a target; nor is there a target for the HTTPS mints. Needs Pebble:
//! without it the phase says SKIPPED.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;

use agentkeys_e2e::issuer_tls::{issuer_client, ISSUE_TIMEOUT};

use super::load::{self, LoadResult, LoadSpec};
use super::stack::{self, DevStack};
use super::tls::TlsClient;

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

/// The mint API over the broker's HTTPS front: the same measures as the main phase.
pub struct HttpsMint {
    /// The load run (latency, rates, errors, audit ids, CPU window).
    pub load: LoadResult,
    /// Success rows written against 200s received.
    pub audit: crate::AuditCheck,
    /// CPU per mint of the broker (`dev` process) and the enclave.
    pub cpu: crate::MintCpu,
    /// Peak RSS of the `dev` process, MiB.
    pub parent_rss: Option<f64>,
    /// Peak RSS of the enclave child, MiB.
    pub enclave_rss: Option<f64>,
    /// The stack's log (kept with `--data-dir`).
    pub log: PathBuf,
}

/// What to run the stack with.
pub struct Spec<'a> {
    /// The `agentkeys-dev` binary.
    pub dev_bin: &'a Path,
    /// Where the stack's data directory goes (`None`: a temporary directory).
    pub data_dir: Option<&'a Path>,
    /// Concurrent clients of the issuer measurements.
    pub clients: usize,
    /// Keep-alive connections of the HTTPS mint phase (one session each).
    pub connections: usize,
    /// Warm-up before each measured period.
    pub warmup: Duration,
    /// Each measured period.
    pub duration: Duration,
}

/// Waits until the broker's `/readyz` (over the mint API's TLS, trusting the CA in the
/// PEM file `ca`) shows the enclave serving a CA-issued chain.
async fn wait_issued(broker_url: &str, ca: &Path, timeout: Duration) -> anyhow::Result<()> {
    let http = agentkeys_dev::api_tls::client_trusting(ca, Duration::from_secs(5))?;
    let url = format!("{broker_url}/readyz");
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        match http.get(&url).send().await {
            Ok(r) => {
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                if v["checks"]["enclave"]["ok"] == true && v["issuer_tls"]["state"] == "issued" {
                    return Ok(());
                }
                last = v["issuer_tls"].to_string();
            }
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the issuer's certificate was not issued within {timeout:?} (GET {url}: {last})")
}

/// Starts the stack, waits for its certificate, then measures; `None` (after saying why)
/// when Pebble is not installed.
pub fn run(
    load_rt: &tokio::runtime::Runtime,
    spec: &Spec<'_>,
) -> anyhow::Result<Option<(IssuerTlsFigures, HttpsMint)>> {
    if let Some(reason) = agentkeys_dev::standins::pebble::missing() {
        println!("issuer   SKIPPED: {reason}");
        println!("https    SKIPPED: the mint API's own TLS runs in the same stack ({reason})");
        return Ok(None);
    }
    let (_tmp, dir) =
        stack::data_dir_or_temp(spec.data_dir, "https-stack", "agentkeys-bench-https-")?;
    let mut stack = DevStack::start_with(
        spec.dev_bin,
        &dir,
        &["--acme", "pebble", "--api-tls"].map(String::from),
    )
    .context(
        "starting `agentkeys-dev dev --acme pebble --api-tls` (--no-issuer-tls skips this phase)",
    )?;
    let log = stack.log.clone();
    let issuer = stack.info.issuer_tls.clone().ok_or_else(|| {
        anyhow!(
            "the ready file of `dev --acme pebble` has no issuer_tls member ({})",
            log.display()
        )
    })?;
    let ca = stack.info.api_tls_ca_pem.clone().ok_or_else(|| {
        anyhow!(
            "the ready file of `dev --api-tls` names no api_tls_ca_pem ({})",
            log.display()
        )
    })?;
    let ca_pem = std::fs::read(&ca).with_context(|| format!("reading {}", ca.display()))?;
    load_rt
        .block_on(wait_issued(&stack.info.broker_url, &ca, ISSUE_TIMEOUT))
        .with_context(|| format!("its log ({}):\n{}", log.display(), stack::tail(&log)))?;

    let figures = {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let url = format!("{}/.well-known/jwks.json", issuer.issuer_url);
        let _guard = rt.enter();
        let client =
            |fresh| issuer_client(&issuer.pebble_root_pem, "127.0.0.1", issuer.tls_port, fresh);
        let (handshakes, e1, f1) = drive(
            &rt,
            || client(true),
            &url,
            spec.clients,
            spec.warmup,
            spec.duration,
        )?;
        let (jwks, e2, f2) = drive(
            &rt,
            || client(false),
            &url,
            spec.clients,
            spec.warmup,
            spec.duration,
        )?;
        IssuerTlsFigures {
            handshakes_per_second: handshakes,
            jwks_per_second: jwks,
            errors: e1 + e2,
            first_error: f1.or(f2),
            clients: spec.clients,
        }
    };

    let route = crate::Route::MintOidcJwt;
    let (host, addr) = crate::parse_https_base_url(&stack.info.broker_url)?;
    let tls = TlsClient::trusting(&ca_pem, &addr.ip().to_string())?;
    let bearers = load_rt.block_on(crate::create_sessions(
        &stack.info.backend_url,
        spec.connections,
    ))?;
    let baseline = crate::audit_baseline(&stack.info.audit_db)?;
    let broker_pid = stack.broker_pid();
    let enclave_pid = stack.info.enclave_pid;
    let result = load_rt.block_on(load::run(LoadSpec {
        addr,
        host,
        path: route.path().into(),
        bearers,
        body: Bytes::new(),
        content_type: "application/json",
        warmup: spec.warmup,
        duration: spec.duration,
        collect_audit_ids: true,
        cpu_pids: vec![broker_pid, Some(enclave_pid), Some(std::process::id())],
        tls: Some(tls),
    }));
    let parent_rss = broker_pid.and_then(stack::peak_rss_mib);
    let enclave_rss = stack::peak_rss_mib(enclave_pid);
    let audit = crate::audit_check(&stack.info.audit_db, baseline, route.audit_event(), &result)?;
    stack.stop();
    let https = HttpsMint {
        cpu: crate::MintCpu::from_window(&result),
        load: result,
        audit,
        parent_rss,
        enclave_rss,
        log,
    };
    Ok(Some((figures, https)))
}
