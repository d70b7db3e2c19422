//! `agentkeys-bench`: load benchmark of the broker's mint routes, with the machine's
//! own ceilings measured in the same run.
//!
//! By default it starts `agentkeys-dev dev` (the binary next to this one) in a fresh
//! data directory, creates one session per connection (distinct wallets), drives
//! `POST /v1/mint-oidc-jwt` (or `/v1/mint-aws-creds`) over keep-alive HTTP/1.1
//! connections, then checks that the audit log holds exactly one success row per token
//! returned. It also measures (a) the raw ES256 signing rate of the enclave's signer on
//! every core and (b) a minimal axum JSON endpoint driven by the same load generator, and
//! prints the broker's throughput as a ratio of each.
//!
//! Every run also reports the CPU a mint costs: user + system time of the broker's
//! process and of the enclave's process over the measured period (`/proc/PID/stat`),
//! divided by the successful mints, against the floor measured in the same run (the CPU
//! of one ES256 signature plus the server-side CPU of one request to the minimal axum
//! route, plus, for `mint-aws-creds`, the dev process's CPU for one request to the STS
//! stand-in). Module `cpu` says how and why.
//!
//! Beside the floor it measures the design's least mint (module `minimal_mint`): a
//! minimal route that asks a separate signing process for the signature and makes a row
//! durable in SQLite before answering, and nothing else; the broker's mint is also
//! reported as a ratio of it.
//!
//! Unless `--no-issuer-tls`, it also starts the dev stack's two-hostname mode (`dev --acme
//! pebble --api-tls`: the issuer's TLS in the enclave, the mint API on the broker's own
//! rustls front) and measures the issuer's TLS handshakes and JWKS requests through the
//! relay, and the same mint load over HTTPS, with its own floor: the signature plus the
//! minimal axum route served over rustls (module `issuer_tls`).
//!
//! `--short` is the CI mode: about two seconds a phase; it never judges speed, only that
//! the run completed with zero errors and every audit row accounted for.

#[path = "../bench/cpu.rs"]
mod cpu;
#[path = "../bench/histogram.rs"]
mod histogram;
#[path = "../bench/issuer_tls.rs"]
mod issuer_tls;
#[path = "../bench/load.rs"]
mod load;
#[path = "../bench/minimal_mint.rs"]
mod minimal_mint;
#[path = "../bench/postgres.rs"]
mod postgres;
#[path = "../bench/stack.rs"]
mod stack;
#[path = "../bench/tls.rs"]
mod tls;

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use serde_json::json;

use load::{LoadResult, LoadSpec};
use stack::DevStack;

/// Phase length in `--short` mode (CI).
const SHORT_DURATION: Duration = Duration::from_secs(2);
/// Warm-up in `--short` mode.
const SHORT_WARMUP: Duration = Duration::from_millis(500);
/// Name of the minimal axum server's runtime threads (at most 15 bytes: Linux keeps the
/// first 15 of a thread's name in `comm`), by which their CPU is found in `/proc`.
const AXUM_THREADS: &str = "axum-ceiling";
/// Name of the minimal axum server's runtime threads when it serves over rustls (the
/// HTTPS floor), at most 15 bytes as [`AXUM_THREADS`].
const AXUM_TLS_THREADS: &str = "axum-tls-ceil";
/// Name of the load generator's runtime threads.
const LOAD_THREADS: &str = "bench-load";
/// Concurrent clients of the issuer TLS measurements (handshakes, JWKS): enough to keep
/// the relay and the enclave's TLS busy on 2 cores; the issuer surface is low-traffic.
const ISSUER_CLIENTS: usize = 8;
/// Name of the broker's audit writer thread (parent/src/audit/sqlite.rs,
/// `std::thread::Builder::new().name("audit-writer")`).
const AUDIT_WRITER_THREAD: &str = "audit-writer";
/// The role the dev stack's broker assumes (dev/src/stack.rs `DEV_ROLE_ARN`), for the bare
/// requests to the STS stand-in.
const DEV_ROLE_ARN: &str = "arn:aws:iam::000000000000:role/agentkeys-data-role";
/// The STS API version every request names (the stand-in checks it when present).
const STS_VERSION: &str = "2011-06-15";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Route {
    /// `POST /v1/mint-oidc-jwt`
    MintOidcJwt,
    /// `POST /v1/mint-aws-creds` (against the STS stand-in in the dev stack)
    MintAwsCreds,
}

impl Route {
    fn path(self) -> &'static str {
        match self {
            Route::MintOidcJwt => "/v1/mint-oidc-jwt",
            Route::MintAwsCreds => "/v1/mint-aws-creds",
        }
    }

    /// The audit event a successful request writes (parent/src/audit `AuditEvent::as_str`).
    fn audit_event(self) -> &'static str {
        match self {
            Route::MintOidcJwt => "mint_jwt",
            Route::MintAwsCreds => "mint_aws_creds",
        }
    }
}

/// Load benchmark of the AgentKeys broker, with this machine's ceilings for comparison.
#[derive(Debug, Parser)]
#[command(name = "agentkeys-bench", version)]
struct Args {
    /// Target a running broker instead of starting `agentkeys-dev dev`.
    #[arg(long, requires = "backend_url")]
    url: Option<String>,
    /// Session backend that creates the bearers (`POST /session/create`); needed with --url.
    #[arg(long)]
    backend_url: Option<String>,
    /// With --url: the broker's audit database, to check rows against responses.
    #[arg(long)]
    audit_db: Option<PathBuf>,
    /// With --url: the broker's pid, for its peak RSS.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// With --url: the enclave's pid, for its peak RSS.
    #[arg(long)]
    enclave_pid: Option<u32>,
    /// The `agentkeys-dev` binary whose dev stack is measured (default: next to this
    /// executable).
    #[arg(long)]
    dev_bin: Option<PathBuf>,
    /// Data directory for the dev stack (default: a fresh temporary directory, removed
    /// afterwards); the HTTPS phase's stack uses its subdirectory `https-stack`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Route to drive.
    #[arg(long, value_enum, default_value = "mint-oidc-jwt")]
    route: Route,
    /// Keep-alive connections (one session and one wallet each).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured period of each phase (e.g. `10s`, `500ms`).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Warm-up before each measured load phase.
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    /// CI mode: ~2 s phases; exits non-zero unless errors == 0 and audit rows match.
    #[arg(long)]
    short: bool,
    /// Print one JSON object as the last line of output.
    #[arg(long)]
    json: bool,
    /// Skip the two ceiling measurements.
    #[arg(long)]
    no_ceilings: bool,
    /// Skip the audit store comparison (SQLite against PostgreSQL on one host, then a
    /// fleet), which needs the PostgreSQL server binaries and the dev stack.
    #[arg(long)]
    no_postgres: bool,
    /// SQLite/PostgreSQL pairs of the comparison, interleaved (default 3; 1 with --short).
    #[arg(long)]
    store_rounds: Option<usize>,
    /// Hosts of the comparison's fleet phase (`dev --hosts N`; 0 or 1: no fleet phase).
    #[arg(long, default_value_t = 3)]
    fleet_hosts: u16,
    /// Skip the issuer TLS phase (handshakes and JWKS requests per second through the
    /// relay to the enclave's TLS, and the mint load over the broker's HTTPS front, on
    /// `dev --acme pebble --api-tls`, which needs Pebble).
    #[arg(long)]
    no_issuer_tls: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (examples: 10s, 500ms, 1.5s)"))?;
    let secs = match unit {
        "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        _ => return Err(format!("unknown unit `{unit}` in `{s}` (use ms, s or m)")),
    };
    if !(secs.is_finite() && (0.0..=86_400.0).contains(&secs)) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Host and socket address of an `http://host:port` base URL.
fn parse_base_url(url: &str) -> anyhow::Result<(String, SocketAddr)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        anyhow!("`{url}`: only plain http:// targets are supported (put the benchmark next to the broker)")
    })?;
    resolve_authority(url, rest, 80)
}

/// Host and socket address of an `https://host:port` base URL (the dev stack's mint API
/// with `--api-tls`).
fn parse_https_base_url(url: &str) -> anyhow::Result<(String, SocketAddr)> {
    let rest = url.strip_prefix("https://").ok_or_else(|| {
        anyhow!("`{url}` is not an https:// URL: was the dev stack started with --api-tls?")
    })?;
    resolve_authority(url, rest, 443)
}

/// The `host[:port]` at the start of `rest` (what follows the scheme of `url`) and the
/// address it resolves to, `default_port` when it names none.
fn resolve_authority(
    url: &str,
    rest: &str,
    default_port: u16,
) -> anyhow::Result<(String, SocketAddr)> {
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        bail!("`{url}` has no host");
    }
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    let addr = with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {with_port}"))?
        .next()
        .ok_or_else(|| anyhow!("{with_port} resolves to nothing"))?;
    Ok((authority.to_string(), addr))
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Where the broker under test runs.
struct Target {
    broker_url: String,
    backend_url: String,
    /// The STS stand-in, when this run started the stack.
    sts_url: Option<String>,
    audit_db: Option<PathBuf>,
    broker_pid: Option<u32>,
    enclave_pid: Option<u32>,
    /// Present when this run started the stack.
    stack: Option<DevStack>,
    _tmp: Option<tempfile::TempDir>,
}

fn start_target(args: &Args) -> anyhow::Result<Target> {
    if let Some(url) = &args.url {
        return Ok(Target {
            broker_url: url.trim_end_matches('/').to_string(),
            backend_url: args
                .backend_url
                .clone()
                .ok_or_else(|| anyhow!("--url needs --backend-url"))?
                .trim_end_matches('/')
                .to_string(),
            sts_url: None,
            audit_db: args.audit_db.clone(),
            broker_pid: args.broker_pid,
            enclave_pid: args.enclave_pid,
            stack: None,
            _tmp: None,
        });
    }
    let dev_bin = match &args.dev_bin {
        Some(p) => p.clone(),
        None => stack::sibling_dev_binary()?,
    };
    let (tmp, dir) = stack::data_dir_or_temp(args.data_dir.as_deref(), "", "agentkeys-bench-")?;
    let stack = DevStack::start(&dev_bin, &dir)?;
    Ok(Target {
        broker_url: stack.info.broker_url.trim_end_matches('/').to_string(),
        backend_url: stack.info.backend_url.trim_end_matches('/').to_string(),
        sts_url: stack
            .info
            .sts_url
            .as_ref()
            .map(|u| u.trim_end_matches('/').to_string()),
        audit_db: Some(stack.info.audit_db.clone()),
        broker_pid: stack.broker_pid(),
        enclave_pid: Some(stack.info.enclave_pid),
        stack: Some(stack),
        _tmp: tmp,
    })
}

/// One session per connection, each with its own wallet.
async fn create_sessions(backend_url: &str, n: usize) -> anyhow::Result<Vec<Option<String>>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let wallet = format!("0x{:040x}", 0xbe7c_0000_u64 + i as u64);
        let resp = http
            .post(format!("{backend_url}/session/create"))
            .json(&json!({ "wallet": wallet }))
            .send()
            .await
            .with_context(|| format!("POST {backend_url}/session/create"))?;
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .await
            .with_context(|| format!("session/create answered {status} without JSON"))?;
        if !status.is_success() {
            bail!("session/create answered {status}: {body}");
        }
        let token = body
            .get("token")
            .and_then(|t| t.as_str())
            .ok_or_else(|| anyhow!("session/create answer has no \"token\": {body}"))?;
        out.push(Some(token.to_string()));
    }
    Ok(out)
}

/// The audit check: success rows written since the run began versus 200s received.
#[derive(Debug, Default)]
struct AuditCheck {
    rows: u64,
    returned: u64,
    duplicates_returned: u64,
    missing_audit_id: u64,
    not_in_log: u64,
    not_returned: u64,
}

impl AuditCheck {
    fn matches(&self) -> bool {
        self.rows == self.returned
            && self.duplicates_returned == 0
            && self.missing_audit_id == 0
            && self.not_in_log == 0
            && self.not_returned == 0
    }
}

fn open_ro(db: &std::path::Path) -> anyhow::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {} read-only", db.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Highest audit row id before the run (0 for an empty log).
fn audit_baseline(db: &std::path::Path) -> anyhow::Result<i64> {
    let conn = open_ro(db)?;
    Ok(
        conn.query_row("SELECT COALESCE(MAX(id), 0) FROM audit_log", [], |r| {
            r.get(0)
        })?,
    )
}

fn audit_check(
    db: &std::path::Path,
    baseline: i64,
    event: &str,
    result: &LoadResult,
) -> anyhow::Result<AuditCheck> {
    let conn = open_ro(db)?;
    let mut stmt = conn.prepare(
        "SELECT id FROM audit_log WHERE id > ?1 AND event = ?2 AND outcome = 'success' ORDER BY id",
    )?;
    let rows: BTreeSet<i64> = stmt
        .query_map(rusqlite::params![baseline, event], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let returned: BTreeSet<i64> = result.audit_ids.iter().copied().collect();
    Ok(AuditCheck {
        rows: rows.len() as u64,
        returned: result.total_ok,
        duplicates_returned: result.audit_ids.len() as u64 - returned.len() as u64,
        missing_audit_id: result.missing_audit_ids,
        not_in_log: returned.difference(&rows).count() as u64,
        not_returned: rows.difference(&returned).count() as u64,
    })
}

/// A JWT signing input of realistic size (header.claims, base64url).
fn sample_signing_input() -> Vec<u8> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let header =
        r#"{"alg":"ES256","kid":"Zk0aPZVw2T7VxS0eW2lQj9eXb8yVQm6iKxqJm0n3cF8","typ":"JWT"}"#;
    let wallet = "0x00000000000000000000000000000000be7c0001";
    let claims = format!(
        r#"{{"iss":"https://broker.example.com","sub":"agentkeys:agent:{wallet}","aud":"sts.amazonaws.com","iat":1700000000,"nbf":1700000000,"exp":1700000300,"jti":"6f1c0a3e5b7d49e8a2c4f6b8d0e1a3c5","agentkeys_user_wallet":"{wallet}","agentkeys_epoch":"18000000000000000007","agentkeys_seq":1,"https://aws.amazon.com/tags":{{"principal_tags":{{"agentkeys_user_wallet":["{wallet}"]}},"transitive_tag_keys":["agentkeys_user_wallet"]}}}}"#
    );
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    )
    .into_bytes()
}

/// Ceiling (a) and the signature's part of the CPU floor.
#[derive(Debug, Clone, Copy)]
struct SignCeiling {
    /// Signatures per second over all threads.
    per_second: f64,
    /// CPU (user + system) of the signing threads per signature, µs
    /// (`getrusage(RUSAGE_THREAD)` on each).
    cpu_us: Option<f64>,
}

/// Ceiling (a): ES256 signatures per second with the enclave's signer on `threads` threads,
/// and the CPU each signature costs.
fn sign_ceiling(threads: usize, duration: Duration) -> anyhow::Result<SignCeiling> {
    use agentkeys_enclave::keys::{Seed, SigningKey};
    let seed = Seed::from_slice(&[0x5e; 32]).map_err(|e| anyhow!("benchmark seed: {e}"))?;
    let key = Arc::new(SigningKey::derive(&seed, 1).map_err(|e| anyhow!("deriving: {e}"))?);
    let msg = Arc::new(sample_signing_input());
    // A short warm-up so every thread has touched the key tables.
    for _ in 0..100 {
        key.sign(&msg).map_err(|e| anyhow!("sign: {e}"))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (key, msg, stop) = (key.clone(), msg.clone(), stop.clone());
            std::thread::spawn(move || {
                let cpu0 = cpu::this_thread_cpu();
                let mut n = 0u64;
                // At least one batch, so a thread started late still reports a cost.
                loop {
                    for _ in 0..32 {
                        if key.sign(&msg).is_err() {
                            return Err(());
                        }
                    }
                    n += 32;
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                let cpu = cpu0.zip(cpu::this_thread_cpu()).map(|(a, b)| b - a);
                Ok((n, cpu))
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut total = 0u64;
    let mut cpu = Some(Duration::ZERO);
    for h in handles {
        let (n, c) = h
            .join()
            .map_err(|_| anyhow!("signing thread panicked"))?
            .map_err(|_| anyhow!("signing failed"))?;
        total += n;
        cpu = cpu.zip(c).map(|(a, b)| a + b);
    }
    Ok(SignCeiling {
        per_second: total as f64 / start.elapsed().as_secs_f64(),
        cpu_us: cpu.and_then(|c| cpu::us_per(c, total)),
    })
}

/// Ceiling (b) and the request's part of the CPU floor.
#[derive(Debug)]
struct AxumCeiling {
    load: LoadResult,
    /// CPU of the server's runtime threads per 200, µs.
    server_cpu_us: Option<f64>,
    /// CPU of the load generator's threads per 200, µs.
    load_cpu_us: Option<f64>,
}

/// CPU per successful request of this process's threads named `comm` over a load run's
/// measured period.
fn own_threads_us_per_ok(result: &LoadResult, comm: &str, hz: u64) -> Option<f64> {
    let (before, after) = result.cpu_window.as_ref()?;
    let own = cpu::window(before, after, hz).pop()??;
    cpu::us_per(*own.by_comm.get(comm)?, result.measured_ok)
}

/// How the minimal axum route is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AxumFront {
    /// Plain HTTP (`axum::serve`): ceiling (b) and the main phase's floor.
    Plain,
    /// HTTPS with rustls, set up as the broker's listener is (module `tls`): the HTTPS
    /// phase's floor.
    Tls,
}

/// Ceiling (b): a minimal axum JSON endpoint, in process on runtime threads of its own
/// (named [`AXUM_THREADS`], or [`AXUM_TLS_THREADS`] over TLS, whose CPU is read from
/// `/proc/self/task`), driven by the same generator.
fn axum_ceiling(
    load_rt: &tokio::runtime::Runtime,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    front: AxumFront,
) -> anyhow::Result<AxumCeiling> {
    use axum::routing::post;
    let threads = match front {
        AxumFront::Plain => AXUM_THREADS,
        AxumFront::Tls => AXUM_TLS_THREADS,
    };
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores())
        .thread_name(threads)
        .enable_all()
        .build()?;
    let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/x",
        post(|| async { axum::Json(json!({ "ok": true, "n": 1 })) }),
    );
    let tls = match front {
        AxumFront::Plain => {
            server_rt.spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            None
        }
        AxumFront::Tls => {
            // A certificate like the dev stack's mint API's (ECDSA P-256 leaf for
            // 127.0.0.1 under a throw-away CA), made by the same helper.
            let certs =
                agentkeys_dev::api_tls::loopback_certificates("agentkeys-bench axum ceiling CA")?;
            let config = tls::server_config(certs.leaf_pem.as_bytes(), certs.key_pem.as_bytes())?;
            server_rt.spawn(tls::serve(listener, Arc::new(config), app));
            Some(tls::TlsClient::trusting(
                certs.ca_pem.as_bytes(),
                &addr.ip().to_string(),
            )?)
        }
    };
    let result = load_rt.block_on(load::run(LoadSpec {
        cpu_pids: vec![Some(std::process::id())],
        tls,
        ..LoadSpec::minimal_route(addr, connections, warmup, duration)
    }));
    server_rt.shutdown_background();
    let hz = cpu::clock_ticks_per_second();
    Ok(AxumCeiling {
        server_cpu_us: own_threads_us_per_ok(&result, threads, hz),
        load_cpu_us: own_threads_us_per_ok(&result, LOAD_THREADS, hz),
        load: result,
    })
}

/// One `mint-oidc-jwt` token from the broker, for the bare requests to the STS stand-in.
async fn one_jwt(broker_url: &str, bearer: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let resp = http
        .post(format!("{broker_url}/v1/mint-oidc-jwt"))
        .bearer_auth(bearer)
        .send()
        .await
        .with_context(|| format!("POST {broker_url}/v1/mint-oidc-jwt"))?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .await
        .with_context(|| format!("mint-oidc-jwt answered {status} without JSON"))?;
    body.get("jwt")
        .and_then(|j| j.as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("mint-oidc-jwt answered {status} without a jwt: {body}"))
}

/// The STS part of the `mint-aws-creds` floor: `AssumeRoleWithWebIdentity` sent straight
/// to the STS stand-in (one token, reused), and the CPU of the process serving it (the
/// `dev` process) per 200.
fn sts_floor(
    load_rt: &tokio::runtime::Runtime,
    target: &Target,
    bearer: &str,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Option<(LoadResult, Option<f64>)>> {
    let (Some(sts_url), Some(pid)) = (&target.sts_url, target.broker_pid) else {
        return Ok(None);
    };
    let jwt = load_rt.block_on(one_jwt(&target.broker_url, bearer))?;
    let (host, addr) = parse_base_url(sts_url)?;
    let body = format!(
        "Action=AssumeRoleWithWebIdentity&Version={STS_VERSION}&RoleArn={DEV_ROLE_ARN}\
         &RoleSessionName=agentkeys-bench&WebIdentityToken={jwt}"
    );
    let result = load_rt.block_on(load::run(LoadSpec {
        addr,
        host,
        path: "/".into(),
        bearers: vec![None; connections],
        body: Bytes::from(body),
        content_type: "application/x-www-form-urlencoded",
        warmup,
        duration,
        collect_audit_ids: false,
        cpu_pids: vec![Some(pid)],
        tls: None,
    }));
    let hz = cpu::clock_ticks_per_second();
    let us = result.cpu_window.as_ref().and_then(|(b, a)| {
        let dev = cpu::window(b, a, hz).pop()??;
        cpu::us_per(dev.total, result.measured_ok)
    });
    Ok(Some((result, us)))
}

/// The CPU floor of one request of the route, in µs, measured in this run.
#[derive(Debug, Clone, Copy)]
struct CpuFloor {
    /// One ES256 signature with the enclave's signer.
    sign_us: Option<f64>,
    /// The server side of one request to the minimal axum route, same load generator.
    axum_us: Option<f64>,
    /// One `AssumeRoleWithWebIdentity` served by the STS stand-in (`mint-aws-creds` only).
    sts_us: Option<f64>,
    /// Whether the route's floor includes the STS request.
    with_sts: bool,
}

impl CpuFloor {
    fn total(&self) -> Option<f64> {
        let base = self.sign_us? + self.axum_us?;
        if self.with_sts {
            Some(base + self.sts_us?)
        } else {
            Some(base)
        }
    }
}

/// CPU of the processes under test over the broker phase's measured period.
#[derive(Debug, Default)]
struct MintCpu {
    broker: Option<cpu::ProcCpu>,
    enclave: Option<cpu::ProcCpu>,
    /// This process's load generator threads.
    load: Option<Duration>,
    /// Successful mints started in the period.
    mints: u64,
}

impl MintCpu {
    fn from_window(result: &LoadResult) -> MintCpu {
        let Some((before, after)) = &result.cpu_window else {
            return MintCpu::default();
        };
        let mut w = cpu::window(before, after, cpu::clock_ticks_per_second()).into_iter();
        let (broker, enclave, own) = (w.next().flatten(), w.next().flatten(), w.next().flatten());
        MintCpu {
            broker,
            enclave,
            load: own.and_then(|o| o.by_comm.get(LOAD_THREADS).copied()),
            mints: result.measured_ok,
        }
    }

    fn broker_us(&self) -> Option<f64> {
        cpu::us_per(self.broker.as_ref()?.total, self.mints)
    }

    fn enclave_us(&self) -> Option<f64> {
        cpu::us_per(self.enclave.as_ref()?.total, self.mints)
    }

    fn total_us(&self) -> Option<f64> {
        Some(self.broker_us()? + self.enclave_us()?)
    }

    fn load_us(&self) -> Option<f64> {
        cpu::us_per(self.load?, self.mints)
    }

    fn broker_thread_us(&self, comm: &str) -> Option<f64> {
        cpu::us_per(*self.broker.as_ref()?.by_comm.get(comm)?, self.mints)
    }

    /// µs per mint of each thread name, largest first, then the unattributed rest.
    fn threads(&self, p: Option<&cpu::ProcCpu>) -> Vec<(String, f64)> {
        let Some(p) = p else { return Vec::new() };
        let mut v: Vec<(String, f64)> = p
            .by_comm
            .iter()
            .filter_map(|(k, d)| Some((k.clone(), cpu::us_per(*d, self.mints)?)))
            .filter(|(_, us)| *us >= 0.05)
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        if let Some(us) = cpu::us_per(p.unattributed(), self.mints).filter(|us| *us >= 0.05) {
            v.push(("(exited threads, rounding)".into(), us));
        }
        v
    }

    fn threads_json(&self, p: Option<&cpu::ProcCpu>) -> serde_json::Value {
        let m: serde_json::Map<String, serde_json::Value> = self
            .threads(p)
            .into_iter()
            .map(|(k, us)| (k, json!(round(us, 2))))
            .collect();
        serde_json::Value::Object(m)
    }

    /// The CPU lines of a phase, each starting with `label` (`cpu`, `https cpu`).
    fn print(&self, label: &str, window: Option<Duration>) {
        let Some(window) = window else {
            println!("{label:<8} not measured (no CPU samples of the measured period)");
            return;
        };
        println!(
            "{label:<8} per mint, user + system over the measured {:.1} s (/proc/PID/stat), {} mints: \
             broker {} + enclave {} = {}; load generator {}",
            window.as_secs_f64(),
            self.mints,
            fmt_us(self.broker_us()),
            fmt_us(self.enclave_us()),
            fmt_us(self.total_us()),
            fmt_us(self.load_us()),
        );
        let list = |v: Vec<(String, f64)>| {
            if v.is_empty() {
                "n/a".to_string()
            } else {
                v.iter()
                    .map(|(k, us)| format!("{k} {us:.1}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        println!(
            "         broker threads (µs): {}",
            list(self.threads(self.broker.as_ref()))
        );
        println!(
            "         enclave threads (µs): {}",
            list(self.threads(self.enclave.as_ref()))
        );
    }
}

/// One mint phase's results, for its printed lines, its `--json` fields and its checks:
/// the main phase (plain HTTP) and the HTTPS one report the same measures this way.
struct PhaseReport<'a> {
    /// The first word of its load line (`broker`, `https`).
    name: &'a str,
    /// Put before the labels of its other lines (`""`, `"https "`).
    tag: &'a str,
    load: &'a LoadResult,
    /// `None`: not checked (`--url` without `--audit-db`).
    audit: Option<&'a AuditCheck>,
    /// The audit event of a success (`mint_jwt`).
    event: &'a str,
    cpu: &'a MintCpu,
    floor: CpuFloor,
    parent_rss: Option<f64>,
    enclave_rss: Option<f64>,
}

impl PhaseReport<'_> {
    fn cpu_vs_floor(&self) -> Option<f64> {
        ratio_of(self.cpu.total_us(), self.floor.total())
    }

    /// The floor line (`axum` names the minimal route's request) and the `cpu/floor` line.
    fn print_floor(&self, axum: &str) {
        let floor = &self.floor;
        println!(
            "{:<8} ES256 signature {} + {axum} (server side) {}{} = {} CPU",
            format!("{}floor", self.tag),
            fmt_us(floor.sign_us),
            fmt_us(floor.axum_us),
            if floor.with_sts {
                format!(" + bare STS stand-in request {}", fmt_us(floor.sts_us))
            } else {
                String::new()
            },
            fmt_us(floor.total()),
        );
        println!(
            "{}cpu/floor {}",
            self.tag,
            self.cpu_vs_floor()
                .map_or("n/a".to_string(), |v| format!("{v:.2}"))
        );
    }

    /// The load line, the errors (and where the stack's log is), the audit line.
    fn print_load(&self, dev_log: Option<&std::path::Path>) {
        let (r, h) = (self.load, &self.load.histogram);
        println!(
            "{:<8} {:>9.0} req/s   p50 {:.2} ms   p99 {:.2} ms   p99.9 {:.2} ms   max {:.2} ms   errors {}",
            self.name,
            r.requests_per_second(),
            ms(h.quantile_ns(0.5)),
            ms(h.quantile_ns(0.99)),
            ms(h.quantile_ns(0.999)),
            ms(h.max_ns()),
            r.errors
        );
        let tag = self.tag;
        if r.errors > 0 {
            println!(
                "{:<8} statuses {:?}, transport {}; first: {}",
                format!("{tag}errors"),
                r.error_statuses,
                r.transport_errors,
                r.first_error.as_deref().unwrap_or("-")
            );
            if let Some(log) = dev_log {
                println!("         dev stack log: {}", log.display());
            }
        }
        match self.audit {
            Some(a) => println!(
                "{:<8} {} `{}` success rows since the start, {} 200s received; audit_id sets {} \
                 (not in log {}, not returned {}, duplicates {}, bodies without audit_id {})",
                format!("{tag}audit"),
                a.rows,
                self.event,
                a.returned,
                if a.matches() { "equal" } else { "DIFFER" },
                a.not_in_log,
                a.not_returned,
                a.duplicates_returned,
                a.missing_audit_id
            ),
            None => println!("{tag}audit    not checked (pass --audit-db with --url)"),
        }
    }

    /// What makes the run fail: errors, no success, audit rows that do not match the
    /// tokens returned (or, when `audit_required`, that were not checked).
    fn failures(&self, audit_required: bool) -> Vec<String> {
        let phase = if self.tag.is_empty() {
            String::new()
        } else {
            format!("{} phase: ", self.name)
        };
        let mut f = Vec::new();
        if self.load.errors > 0 {
            f.push(format!("{phase}{} errors", self.load.errors));
        }
        if self.load.total_ok == 0 || self.load.histogram.is_empty() {
            f.push(format!(
                "{phase}no request succeeded in the measured period"
            ));
        }
        match self.audit.map(AuditCheck::matches) {
            Some(false) => f.push(format!(
                "{phase}audit rows do not match the tokens returned"
            )),
            None if audit_required => f.push(format!("{phase}audit rows were not checked")),
            _ => {}
        }
        f
    }

    /// The `--json` fields of the phase, each name after `prefix`.
    fn json(&self, prefix: &str) -> serde_json::Map<String, serde_json::Value> {
        let (r, h, c) = (self.load, &self.load.histogram, self.cpu);
        let r2 = |v: Option<f64>| v.map(|v| round(v, 2));
        let fields = [
            (
                "requests_per_second",
                json!(round(r.requests_per_second(), 1)),
            ),
            ("requests", json!(r.measured_requests)),
            ("ok_total", json!(r.total_ok)),
            ("latency_samples", json!(h.len())),
            ("p50_ms", json!(round(ms(h.quantile_ns(0.5)), 3))),
            ("p99_ms", json!(round(ms(h.quantile_ns(0.99)), 3))),
            ("p999_ms", json!(round(ms(h.quantile_ns(0.999)), 3))),
            ("max_ms", json!(round(ms(h.max_ns()), 3))),
            ("mean_ms", json!(round(h.mean_ns() / 1e6, 3))),
            ("errors", json!(r.errors)),
            (
                "audit_rows_match",
                json!(self.audit.map(AuditCheck::matches)),
            ),
            ("audit_rows", json!(self.audit.map(|a| a.rows))),
            ("parent_peak_rss_mib", json!(r2(self.parent_rss))),
            ("enclave_peak_rss_mib", json!(r2(self.enclave_rss))),
            ("cpu_us_per_mint", json!(r2(c.total_us()))),
            ("broker_cpu_us_per_mint", json!(r2(c.broker_us()))),
            ("enclave_cpu_us_per_mint", json!(r2(c.enclave_us()))),
            (
                "audit_writer_cpu_us_per_mint",
                json!(r2(c.broker_thread_us(AUDIT_WRITER_THREAD))),
            ),
            (
                "broker_threads_cpu_us_per_mint",
                c.threads_json(c.broker.as_ref()),
            ),
            (
                "enclave_threads_cpu_us_per_mint",
                c.threads_json(c.enclave.as_ref()),
            ),
            ("load_generator_cpu_us_per_mint", json!(r2(c.load_us()))),
            ("cpu_mints", json!(c.mints)),
            ("cpu_floor_us", json!(r2(self.floor.total()))),
            ("floor_sign_cpu_us", json!(r2(self.floor.sign_us))),
            (
                "cpu_vs_floor",
                json!(self.cpu_vs_floor().map(|v| round(v, 3))),
            ),
        ];
        fields
            .into_iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v))
            .collect()
    }
}

/// The `ceiling` line of a minimal axum route (`what`) driven with `connections`.
fn print_axum_ceiling(what: &str, connections: usize, ax: &AxumCeiling) {
    println!(
        "ceiling  {what}, in process, {connections} connections: {:.0} req/s   p50 {:.2} ms   p99 {:.2} ms   errors {}; \
         server threads {} CPU a request (load generator {})",
        ax.load.requests_per_second(),
        ms(ax.load.histogram.quantile_ns(0.5)),
        ms(ax.load.histogram.quantile_ns(0.99)),
        ax.load.errors,
        fmt_us(ax.server_cpu_us),
        fmt_us(ax.load_cpu_us),
    );
}

/// `a / b`, when both are known and `b` is not zero.
fn ratio_of(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? / b.filter(|b| *b > 0.0)?)
}

/// The minimal mint's line: its load, its CPU by part, and the two ratios (to the floor,
/// and the broker's mint to it).
fn print_minimal_mint(
    m: &minimal_mint::MinimalMint,
    connections: usize,
    floor: Option<f64>,
    mint: Option<f64>,
) {
    let fmt_ratio = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2}"));
    println!(
        "minimal  the design's least mint (axum route, Unix socket to a signing process, SQLite group commit), \
         in process, {} connections: {:.0} req/s   p99 {:.2} ms   errors {}   rows {}",
        connections,
        m.load.requests_per_second(),
        ms(m.load.histogram.quantile_ns(0.99)),
        m.load.errors,
        m.rows,
    );
    println!(
        "minimal  CPU {} a request = route {} + signing process {} + writer {}; {} x floor; the broker's mint is {} x this",
        fmt_us(m.cpu_us()),
        fmt_us(m.front_us),
        fmt_us(m.signer_us),
        fmt_us(m.writer_us),
        fmt_ratio(ratio_of(m.cpu_us(), floor)),
        fmt_ratio(ratio_of(mint, m.cpu_us())),
    );
}

/// The minimal mint's figures for the `--json` line.
fn minimal_mint_json(
    m: &minimal_mint::MinimalMint,
    floor: Option<f64>,
    mint: Option<f64>,
) -> serde_json::Map<String, serde_json::Value> {
    let r2 = |v: Option<f64>| v.map(|v| round(v, 2));
    let fields = json!({
        "minimal_mint_per_second": round(m.load.requests_per_second(), 1),
        "minimal_mint_p99_ms": round(ms(m.load.histogram.quantile_ns(0.99)), 3),
        "minimal_mint_errors": m.load.errors,
        "minimal_mint_rows_match": m.rows == m.load.total_ok,
        "minimal_mint_cpu_us": r2(m.cpu_us()),
        "minimal_mint_front_cpu_us": r2(m.front_us),
        "minimal_mint_signer_cpu_us": r2(m.signer_us),
        "minimal_mint_writer_cpu_us": r2(m.writer_us),
        "minimal_mint_vs_floor": ratio_of(m.cpu_us(), floor).map(|v| round(v, 3)),
        "cpu_vs_minimal_mint": ratio_of(mint, m.cpu_us()).map(|v| round(v, 3)),
    });
    match fields {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

fn fmt_us(v: Option<f64>) -> String {
    v.map_or("n/a".to_string(), |us| format!("{us:.1} µs"))
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn main() -> ExitCode {
    // The minimal mint's signing process is this binary started again (module
    // `minimal_mint`); it is not a user-facing mode, so it stays out of `--help`.
    let mut argv = std::env::args_os().skip(1);
    if argv.next().as_deref() == Some(std::ffi::OsStr::new(minimal_mint::SIGNER_FLAG)) {
        let (Some(socket), Some(message)) = (argv.next(), argv.next()) else {
            eprintln!(
                "agentkeys-bench: {} needs a socket path and the signing input",
                minimal_mint::SIGNER_FLAG
            );
            return ExitCode::from(2);
        };
        return match minimal_mint::run_signer(socket.as_ref(), message.as_encoded_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("agentkeys-bench minimal signer: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("agentkeys-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the benchmark; `Ok(false)` when the run completed but a check failed.
fn run(args: &Args) -> anyhow::Result<bool> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let duration = args.duration.unwrap_or(if args.short {
        SHORT_DURATION
    } else {
        Duration::from_secs(10)
    });
    let warmup = args.warmup.unwrap_or(if args.short {
        SHORT_WARMUP
    } else {
        Duration::from_secs(2)
    });
    if duration.is_zero() {
        bail!("--duration must be positive");
    }
    let n_cores = cores();
    let route = args.route;
    println!(
        "agentkeys-bench: POST {} with {} keep-alive connections, warm-up {:.1} s, measured {:.1} s; {} cores",
        route.path(),
        args.connections,
        warmup.as_secs_f64(),
        duration.as_secs_f64(),
        n_cores
    );

    let mut target = start_target(args)?;
    let ready_s = target.stack.as_ref().map(|s| s.ready_in.as_secs_f64());
    if let Some(s) = ready_s {
        println!("dev stack ready in {s:.2} s (spawn of agentkeys-dev dev to its ready file)");
    } else {
        println!("target {} (already running)", target.broker_url);
    }

    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(n_cores)
        .thread_name("bench-load")
        .enable_all()
        .build()?;
    let bearers = load_rt.block_on(create_sessions(&target.backend_url, args.connections))?;
    println!(
        "sessions: {} created, one wallet per connection",
        bearers.len()
    );

    let baseline = match &target.audit_db {
        Some(db) => Some(audit_baseline(db)?),
        None => None,
    };
    let (host, addr) = parse_base_url(&target.broker_url)?;
    let first_bearer = bearers.first().cloned().flatten();
    let broker = load_rt.block_on(load::run(LoadSpec {
        addr,
        host,
        path: route.path().into(),
        bearers,
        body: Bytes::new(),
        content_type: "application/json",
        warmup,
        duration,
        collect_audit_ids: true,
        cpu_pids: vec![
            target.broker_pid,
            target.enclave_pid,
            Some(std::process::id()),
        ],
        tls: None,
    }));
    let parent_rss = target.broker_pid.and_then(stack::peak_rss_mib);
    let enclave_rss = target.enclave_pid.and_then(stack::peak_rss_mib);
    let audit = match (&target.audit_db, baseline) {
        (Some(db), Some(base)) => Some(audit_check(db, base, route.audit_event(), &broker)?),
        _ => None,
    };
    // The STS part of the mint-aws-creds floor needs the stack still running.
    let sts = match (&first_bearer, route, args.no_ceilings) {
        (Some(bearer), Route::MintAwsCreds, false) => sts_floor(
            &load_rt,
            &target,
            bearer,
            args.connections,
            warmup,
            duration,
        )?,
        _ => None,
    };
    let dev_log = target.stack.as_ref().map(|s| s.log.clone());
    if let Some(s) = target.stack.as_mut() {
        s.stop();
    }

    let rps = broker.requests_per_second();
    let mint_cpu = MintCpu::from_window(&broker);
    // The floor's parts are filled in once the ceilings are measured.
    let mut main_phase = PhaseReport {
        name: "broker",
        tag: "",
        load: &broker,
        audit: audit.as_ref(),
        event: route.audit_event(),
        cpu: &mint_cpu,
        floor: CpuFloor {
            sign_us: None,
            axum_us: None,
            sts_us: sts.as_ref().and_then(|(_, us)| *us),
            with_sts: route == Route::MintAwsCreds,
        },
        parent_rss,
        enclave_rss,
    };
    println!();
    main_phase.print_load(dev_log.as_deref());
    let fmt_rss = |v: Option<f64>| v.map_or("n/a".to_string(), |m| format!("{m:.1} MiB"));
    println!(
        "memory   parent peak RSS {} (pid {}{}); enclave peak RSS {} (pid {})",
        fmt_rss(parent_rss),
        target.broker_pid.map_or("?".into(), |p| p.to_string()),
        if target.stack.is_some() {
            ": the `dev` process, which runs the broker and the KMS/STS/backend stand-ins"
        } else {
            ""
        },
        fmt_rss(enclave_rss),
        target.enclave_pid.map_or("?".into(), |p| p.to_string()),
    );

    mint_cpu.print("cpu", broker.cpu_window.as_ref().map(|(b, a)| a.at - b.at));

    if let Some((st, _)) = &sts {
        println!(
            "sts      bare AssumeRoleWithWebIdentity to the STS stand-in, {} connections: {:.0} req/s   p99 {:.2} ms   errors {}",
            args.connections,
            st.requests_per_second(),
            ms(st.histogram.quantile_ns(0.99)),
            st.errors
        );
    }
    let (sign, axum) = if args.no_ceilings {
        (None, None)
    } else {
        let sign = sign_ceiling(n_cores, duration)?;
        println!(
            "ceiling  ES256 sign (agentkeys_enclave::keys::SigningKey, {n_cores} threads): {:.0} /s, {} CPU a signature",
            sign.per_second,
            fmt_us(sign.cpu_us)
        );
        let ax = axum_ceiling(
            &load_rt,
            args.connections,
            warmup,
            duration,
            AxumFront::Plain,
        )?;
        print_axum_ceiling("minimal axum POST /x", args.connections, &ax);
        (Some(sign), Some(ax))
    };
    let sign_rps = sign.map(|s| s.per_second);
    let axum_rps = axum.as_ref().map(|a| a.load.requests_per_second());
    let ratio = |c: Option<f64>| ratio_of(Some(rps), c);
    if let (Some(rs), Some(ra)) = (ratio(sign_rps), ratio(axum_rps)) {
        println!(
            "ratio    broker / sign ceiling = {:.3}   broker / axum ceiling = {:.3}",
            rs, ra
        );
    }
    main_phase.floor.sign_us = sign.and_then(|s| s.cpu_us);
    main_phase.floor.axum_us = axum.as_ref().and_then(|a| a.server_cpu_us);
    let floor = main_phase.floor;
    if !args.no_ceilings {
        main_phase.print_floor("minimal axum request");
    }
    // What the design's own steps cost, against the same floor: `mint-oidc-jwt` only
    // (the minimal mint has no STS exchange).
    let minimal = if args.no_ceilings || route != Route::MintOidcJwt {
        None
    } else {
        let signing_input = String::from_utf8(sample_signing_input())?;
        let m = minimal_mint::measure(
            &load_rt,
            &signing_input,
            n_cores,
            args.connections,
            warmup,
            duration,
        )?;
        print_minimal_mint(
            &m,
            args.connections,
            floor.total(),
            main_phase.cpu.total_us(),
        );
        Some(m)
    };

    let dev_bin = match (&args.url, &args.dev_bin) {
        (Some(_), _) => None,
        (None, Some(p)) => Some(p.clone()),
        (None, None) => Some(stack::sibling_dev_binary()?),
    };
    // The store comparison starts stacks of its own: only when this run started one.
    let stores = match (&dev_bin, args.no_postgres) {
        (Some(dev_bin), false) => {
            let cmp = postgres::run(
                &load_rt,
                &postgres::CompareSpec {
                    dev_bin,
                    path: route.path(),
                    event: route.audit_event(),
                    connections: args.connections,
                    warmup,
                    duration,
                    rounds: args.store_rounds.unwrap_or(if args.short { 1 } else { 3 }),
                    fleet_hosts: args.fleet_hosts,
                },
            )?;
            if let Some(c) = &cmp {
                c.print();
            }
            cmp
        }
        _ => None,
    };

    // The issuer's TLS through the relay and the mint API over the broker's HTTPS front:
    // a stack of its own (`dev --acme pebble --api-tls`), only when this run started one.
    let (issuer, https) = match (&dev_bin, args.no_issuer_tls) {
        (Some(dev_bin), false) => {
            let spec = issuer_tls::Spec {
                dev_bin,
                data_dir: args.data_dir.as_deref(),
                clients: ISSUER_CLIENTS,
                connections: args.connections,
                warmup,
                duration,
            };
            match issuer_tls::run(&load_rt, &spec)? {
                Some((issuer, https)) => (Some(issuer), Some(https)),
                None => (None, None),
            }
        }
        _ => (None, None),
    };
    if let Some(f) = &issuer {
        f.print();
    }
    // The HTTPS phase's floor: the minimal route served over rustls, same generator and
    // connection count, measured after that stack stopped (as ceiling (b) after the main
    // stack).
    let axum_tls = match (&https, args.no_ceilings) {
        (Some(_), false) => {
            let ax = axum_ceiling(&load_rt, args.connections, warmup, duration, AxumFront::Tls)?;
            print_axum_ceiling("minimal axum POST /x over rustls", args.connections, &ax);
            Some(ax)
        }
        _ => None,
    };
    let https_phase = https.as_ref().map(|h| PhaseReport {
        name: "https",
        tag: "https ",
        load: &h.load,
        audit: Some(&h.audit),
        event: Route::MintOidcJwt.audit_event(),
        cpu: &h.cpu,
        floor: CpuFloor {
            sign_us: floor.sign_us,
            axum_us: axum_tls.as_ref().and_then(|a| a.server_cpu_us),
            sts_us: None,
            with_sts: false,
        },
        parent_rss: h.parent_rss,
        enclave_rss: h.enclave_rss,
    });
    if let (Some(p), Some(h)) = (&https_phase, &https) {
        println!(
            "https    POST {} over the broker's rustls front (dev --acme pebble --api-tls), {} keep-alive TLS connections:",
            Route::MintOidcJwt.path(),
            args.connections
        );
        p.print_load(Some(&h.log));
        println!(
            "https memory parent peak RSS {}; enclave peak RSS {}",
            fmt_rss(h.parent_rss),
            fmt_rss(h.enclave_rss)
        );
        h.cpu.print(
            "https cpu",
            h.load.cpu_window.as_ref().map(|(b, a)| a.at - b.at),
        );
        if !args.no_ceilings {
            p.print_floor("minimal axum request over rustls");
        }
    }

    let mut failures = Vec::new();
    if let Some(f) = issuer.as_ref().filter(|f| f.errors > 0) {
        failures.push(format!(
            "issuer TLS had {} errors (first: {})",
            f.errors,
            f.first_error.as_deref().unwrap_or("-")
        ));
    }
    if let Some(c) = &stores {
        failures.extend(c.failures());
    }
    failures.extend(main_phase.failures(args.short));
    if let Some(p) = &https_phase {
        failures.extend(p.failures(true));
    }
    for (what, ax) in [
        ("axum ceiling", &axum),
        ("axum ceiling over rustls", &axum_tls),
    ] {
        if let Some(ax) = ax.as_ref().filter(|ax| ax.load.errors > 0) {
            failures.push(format!(
                "{what} had {} errors (first: {})",
                ax.load.errors,
                ax.load.first_error.as_deref().unwrap_or("-")
            ));
        }
    }
    failures.extend(
        minimal
            .as_ref()
            .and_then(minimal_mint::MinimalMint::failure),
    );
    if let Some((st, _)) = &sts {
        if st.errors > 0 {
            failures.push(format!(
                "bare STS requests had {} errors (first: {})",
                st.errors,
                st.first_error.as_deref().unwrap_or("-")
            ));
        }
    }
    let ok = failures.is_empty();
    println!(
        "result   {}",
        if ok {
            "OK".to_string()
        } else {
            format!("FAILED: {}", failures.join("; "))
        }
    );

    if args.json {
        let mut j = json!({
            "route": route.path(),
            "connections": args.connections,
            "duration_s": duration.as_secs_f64(),
            "warmup_s": warmup.as_secs_f64(),
            "cores": n_cores,
            "sign_ceiling_per_second": sign_rps.map(|v| round(v, 1)),
            "axum_ceiling_per_second": axum_rps.map(|v| round(v, 1)),
            "axum_p99_ms": axum.as_ref().map(|a| round(ms(a.load.histogram.quantile_ns(0.99)), 3)),
            "ratio_to_sign": ratio(sign_rps).map(|v| round(v, 4)),
            "ratio_to_axum": ratio(axum_rps).map(|v| round(v, 4)),
            "parent_pid": target.broker_pid,
            "enclave_pid": target.enclave_pid,
            "dev_ready_seconds": ready_s.map(|v| round(v, 3)),
            "floor_axum_server_cpu_us": floor.axum_us.map(|v| round(v, 2)),
            "floor_sts_cpu_us": floor.sts_us.map(|v| round(v, 2)),
            "axum_load_generator_cpu_us": axum.as_ref().and_then(|a| a.load_cpu_us).map(|v| round(v, 2)),
            "sts_bare_per_second": sts.as_ref().map(|(s, _)| round(s.requests_per_second(), 1)),
            "ok": ok,
        });
        let mut extra = vec![main_phase.json("")];
        if let Some(m) = &minimal {
            extra.push(minimal_mint_json(
                m,
                floor.total(),
                main_phase.cpu.total_us(),
            ));
        }
        if let Some(p) = &https_phase {
            let mut m = p.json("https_");
            let ax = axum_tls.as_ref();
            for (k, v) in [
                ("https_connections", json!(args.connections)),
                (
                    "https_floor_axum_tls_server_cpu_us",
                    json!(p.floor.axum_us.map(|v| round(v, 2))),
                ),
                (
                    "https_axum_tls_ceiling_per_second",
                    json!(ax.map(|a| round(a.load.requests_per_second(), 1))),
                ),
                (
                    "https_axum_tls_load_generator_cpu_us",
                    json!(ax.and_then(|a| a.load_cpu_us).map(|v| round(v, 2))),
                ),
            ] {
                m.insert(k.to_string(), v);
            }
            extra.push(m);
        }
        if let Some(serde_json::Value::Object(c)) = stores.as_ref().map(postgres::Comparison::json)
        {
            extra.push(c);
        }
        if let Some(serde_json::Value::Object(c)) =
            issuer.as_ref().map(issuer_tls::IssuerTlsFigures::json)
        {
            extra.push(c);
        }
        if let Some(o) = j.as_object_mut() {
            for m in extra {
                o.extend(m);
            }
        }
        println!("{j}");
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("10h").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999s").is_err());
    }

    #[test]
    fn base_urls_parse() {
        let (host, addr) = parse_base_url("http://127.0.0.1:8091").unwrap();
        assert_eq!(host, "127.0.0.1:8091");
        assert_eq!(addr.port(), 8091);
        let (_, addr) = parse_base_url("http://127.0.0.1:9/prefix").unwrap();
        assert_eq!(addr.port(), 9);
        let (host, addr) = parse_base_url("http://127.0.0.1").unwrap();
        assert_eq!((host.as_str(), addr.port()), ("127.0.0.1", 80));
        assert!(parse_base_url("https://127.0.0.1:1").is_err());
        assert!(parse_base_url("http://").is_err());
        let (host, addr) = parse_https_base_url("https://127.0.0.1:8443").unwrap();
        assert_eq!((host.as_str(), addr.port()), ("127.0.0.1:8443", 8443));
        let (_, addr) = parse_https_base_url("https://127.0.0.1").unwrap();
        assert_eq!(addr.port(), 443);
        let e = parse_https_base_url("http://127.0.0.1:1").unwrap_err();
        assert!(e.to_string().contains("--api-tls"), "{e}");
    }

    #[test]
    fn audit_check_matching_rules() {
        let good = AuditCheck {
            rows: 3,
            returned: 3,
            ..Default::default()
        };
        assert!(good.matches());
        assert!(!AuditCheck {
            rows: 3,
            returned: 2,
            ..Default::default()
        }
        .matches());
        assert!(!AuditCheck {
            rows: 3,
            returned: 3,
            not_in_log: 1,
            ..Default::default()
        }
        .matches());
        assert!(!AuditCheck {
            rows: 3,
            returned: 3,
            duplicates_returned: 1,
            ..Default::default()
        }
        .matches());
        assert!(!AuditCheck {
            rows: 3,
            returned: 3,
            missing_audit_id: 1,
            ..Default::default()
        }
        .matches());
    }

    #[test]
    fn audit_check_against_a_real_table() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE audit_log (id INTEGER PRIMARY KEY, event TEXT, outcome TEXT);
             INSERT INTO audit_log VALUES (1,'mint_jwt','success'),(2,'mint_jwt','success'),
               (3,'auth_failed','failure'),(4,'mint_jwt','success'),(5,'mint_jwt','failure');",
        )
        .unwrap();
        drop(c);
        let base = 1;
        let mut r = LoadResult {
            total_ok: 2,
            audit_ids: vec![4, 2],
            ..Default::default()
        };
        assert!(audit_check(&db, base, "mint_jwt", &r).unwrap().matches());
        r.audit_ids = vec![4, 1];
        let a = audit_check(&db, base, "mint_jwt", &r).unwrap();
        assert_eq!((a.not_in_log, a.not_returned), (1, 1));
        assert!(!a.matches());
        assert_eq!(audit_baseline(&db).unwrap(), 5);
    }

    #[test]
    fn sign_ceiling_runs() {
        let s = sign_ceiling(1, Duration::from_millis(50)).unwrap();
        assert!(s.per_second > 0.0);
        assert!(s.cpu_us.is_some_and(|us| us > 0.0), "{s:?}");
    }

    #[test]
    fn ratios_need_both_sides_and_a_divisor_above_zero() {
        assert_eq!(ratio_of(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio_of(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio_of(None, Some(2.0)), None);
        assert_eq!(ratio_of(Some(3.0), None), None);
    }

    #[test]
    fn floor_adds_its_parts() {
        let f = CpuFloor {
            sign_us: Some(26.0),
            axum_us: Some(10.0),
            sts_us: None,
            with_sts: false,
        };
        assert_eq!(f.total(), Some(36.0));
        assert_eq!(
            CpuFloor {
                with_sts: true,
                ..f
            }
            .total(),
            None
        );
        assert_eq!(
            CpuFloor {
                with_sts: true,
                sts_us: Some(4.0),
                ..f
            }
            .total(),
            Some(40.0)
        );
    }

    #[test]
    fn axum_ceiling_runs_without_errors_plain_and_over_tls() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(LOAD_THREADS)
            .enable_all()
            .build()
            .unwrap();
        for front in [AxumFront::Plain, AxumFront::Tls] {
            let r = axum_ceiling(
                &rt,
                4,
                Duration::from_millis(50),
                Duration::from_millis(300),
                front,
            )
            .unwrap();
            assert_eq!(r.load.errors, 0, "{front:?}: {:?}", r.load.first_error);
            assert!(r.load.measured_ok > 0, "{front:?}");
            assert!(r.load.requests_per_second() > 0.0, "{front:?}");
            assert!(r.load.cpu_window.is_some(), "{front:?}");
        }
    }

    #[test]
    fn phase_report_names_its_fields_and_failures_by_prefix() {
        let load = LoadResult {
            total_ok: 2,
            errors: 1,
            ..Default::default()
        };
        let audit = AuditCheck {
            rows: 2,
            returned: 1,
            ..Default::default()
        };
        let cpu = MintCpu::default();
        let p = PhaseReport {
            name: "https",
            tag: "https ",
            load: &load,
            audit: Some(&audit),
            event: "mint_jwt",
            cpu: &cpu,
            floor: CpuFloor {
                sign_us: Some(20.0),
                axum_us: Some(8.0),
                sts_us: None,
                with_sts: false,
            },
            parent_rss: Some(30.0),
            enclave_rss: None,
        };
        let j = p.json("https_");
        let fields = agentkeys_e2e::MINT_PHASE_FIELDS
            .iter()
            .chain(&["cpu_floor_us", "cpu_vs_floor"])
            .map(|f| format!("https_{f}"));
        for k in fields {
            assert!(j.contains_key(&k), "{k} missing: {j:?}");
        }
        assert!(j.keys().all(|k| k.starts_with("https_")));
        assert_eq!(j["https_errors"], 1);
        assert_eq!(j["https_audit_rows_match"], false);
        assert_eq!(j["https_cpu_floor_us"], 28.0);
        let f = p.failures(true);
        assert!(f.iter().any(|m| m == "https phase: 1 errors"), "{f:?}");
        assert!(f
            .iter()
            .any(|m| m.contains("https phase: audit rows do not match")));
        // The main phase keeps its unprefixed names and messages.
        let main = PhaseReport {
            name: "broker",
            tag: "",
            audit: None,
            ..p
        };
        assert!(main.json("").contains_key("requests_per_second"));
        assert!(main
            .failures(true)
            .contains(&"audit rows were not checked".to_string()));
        assert!(!main
            .failures(false)
            .iter()
            .any(|m| m.contains("not checked")));
    }
}
