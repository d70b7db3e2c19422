//! `agentkeys-dev dev --hosts N --audit-db postgres://…`: a fleet in one dev stack.
//!
//! N hosts, each a broker (in this process, on its own loopback port) and its own enclave
//! child (its own Unix socket), share what the hosts of a real fleet share: one issuer (the
//! first host's URL), one KMS stand-in and its key, one sealed seed (made by the first
//! host, then read by the others, so every host serves the same `kid`), and one PostgreSQL
//! audit log in which each host appends to its own chain (`host-1` … `host-N`). The
//! stand-ins and the mock root are those of the one-host stack ([`crate::stack`]).
//!
//! SQLite is one host's log: more than one host needs a `postgres://` URL.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use agentkeys_broker::audit::{AuditDb, PgUrl};
use agentkeys_broker::broker::{self, Broker};
use agentkeys_broker::http::{router, serve_http, shutdown_signal};
use anyhow::{bail, Context};
use clap::Args;
use tokio::sync::watch;

use crate::audit_faults::AuditFaultSwitch;
use crate::enclave_child::socket_path;
use crate::stack::{
    broker_config, enclave_child, print_next_steps, start_stand_ins, wait_ready, write_atomically,
    DevArgs, ReadyInfo, MOCK_MEASUREMENTS_FILE,
};
use crate::standins::bind_loopback;

/// The most hosts one dev stack runs: each is an enclave child process and a broker with
/// its own PostgreSQL connection; 16 stays well inside the test clusters' 50 connections.
pub const MAX_HOSTS: u16 = 16;

/// The fleet flags of `agentkeys-dev dev`.
#[derive(Clone, Debug, Args)]
pub struct FleetArgs {
    /// Number of hosts (broker and enclave child each, one port each from --port on),
    /// sharing one KMS stand-in, one sealed seed and the PostgreSQL log of --audit-db.
    #[arg(long, default_value_t = 1)]
    pub hosts: u16,
    /// The audit log: a `postgres://USER:PASSWORD@HOST:PORT/DB` URL (each host appends to
    /// its own chain, host-1 … host-N). Default: the SQLite file audit.db in the data
    /// directory (one host).
    #[arg(long, env = "AGENTKEYS_DEV_AUDIT_DB", hide_env_values = true)]
    pub audit_db: Option<String>,
}

/// What `--hosts` and `--audit-db` ask for, checked.
#[derive(Clone, Debug)]
pub struct FleetPlan {
    hosts: u16,
    url: PgUrl,
    raw_url: String,
}

impl FleetPlan {
    /// `None` for the one-host SQLite stack; the plan for a PostgreSQL-backed stack; an
    /// error for a combination that cannot run.
    pub fn from_args(args: &DevArgs) -> anyhow::Result<Option<FleetPlan>> {
        let f = &args.fleet;
        if f.hosts == 0 || f.hosts > MAX_HOSTS {
            bail!("--hosts {}: give 1 to {MAX_HOSTS}", f.hosts);
        }
        let Some(raw) = &f.audit_db else {
            if f.hosts > 1 {
                bail!(
                    "--hosts {} needs --audit-db postgres://USER:PASSWORD@HOST:PORT/DB: the \
                     SQLite audit log belongs to one host, a fleet shares one PostgreSQL log",
                    f.hosts
                );
            }
            return Ok(None);
        };
        let url = match AuditDb::parse(raw)? {
            AuditDb::Postgres { url, .. } => url,
            AuditDb::Sqlite(_) => bail!(
                "--audit-db takes a postgres:// URL in the dev stack (its SQLite log is \
                 audit.db in --data-dir, for one host)"
            ),
        };
        if args.demo {
            bail!("--demo runs against the one-host SQLite stack: drop --audit-db and --hosts");
        }
        Ok(Some(FleetPlan {
            hosts: f.hosts,
            url,
            raw_url: raw.clone(),
        }))
    }
}

/// One host as the ready file describes it.
#[derive(serde::Serialize, Clone, Debug)]
struct HostInfo {
    broker_url: String,
    audit_chain: String,
    enclave_pid: u32,
    enclave_socket: PathBuf,
}

/// The ready file of a PostgreSQL-backed stack: every field of the one-host file (the
/// first host's, so tools reading `broker_url` or `enclave_pid` keep working; `audit_db`
/// is the URL), plus every host.
#[derive(serde::Serialize, Clone)]
struct FleetReadyInfo {
    #[serde(flatten)]
    first: ReadyInfo,
    broker_urls: Vec<String>,
    hosts: Vec<HostInfo>,
}

/// A running host.
struct RunningHost {
    broker: Broker,
    server: tokio::task::JoinHandle<Result<(), agentkeys_broker::http::listener::ServeError>>,
    server_stop: watch::Sender<bool>,
    enclave_task: tokio::task::JoinHandle<()>,
}

/// Runs the PostgreSQL-backed stack of `plan` until a shutdown signal.
pub async fn run_fleet(
    args: &DevArgs,
    plan: FleetPlan,
    data_dir: &Path,
    mock_root: &Path,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    let n = usize::from(plan.hosts);
    let mut listeners = Vec::with_capacity(n);
    for i in 0..plan.hosts {
        let port = if args.port == 0 {
            0
        } else {
            args.port
                .checked_add(i)
                .context("--port + --hosts exceeds 65535")?
        };
        listeners.push(bind_loopback(port)?);
    }
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<Vec<_>, _>>()?;
    let issuer = format!("http://{}", addrs[0]);
    let urls = start_stand_ins(args, data_dir, &issuer).await?;
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut hosts = Vec::with_capacity(n);
    let mut sealed_seed = PathBuf::new();
    let ready_file = args
        .ready_file
        .clone()
        .map(|p| std::path::absolute(&p).unwrap_or(p));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut infos: Vec<HostInfo> = Vec::with_capacity(n);
    let mut first_config = None;
    // One after the other: the first host makes the sealed seed the others unseal.
    for (i, listener) in listeners.into_iter().enumerate() {
        let chain = format!("host-{}", i + 1);
        let dir = data_dir.join(&chain);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut socket = socket_path(&dir);
        if !socket.starts_with(&dir) {
            // The fallback of a too-long path is one per process: one per host here.
            socket.set_file_name(format!(
                "agentkeys-enclave-{}-{chain}.sock",
                std::process::id()
            ));
        }
        let mut config = broker_config(args, addrs[i], &urls, &socket, data_dir);
        config.issuer = issuer.clone();
        config.audit_db = AuditDb::parse(&plan.raw_url)?.with_chain(&chain)?;
        if i == 0 {
            sealed_seed = config.sealed_seed.clone();
        } else {
            config.sealed_seed = sealed_seed.clone();
        }
        let enclave = enclave_child(args, &socket, &issuer, &urls.session_keys)?;
        let first = enclave.spawn_once()?;
        let switch = AuditFaultSwitch::default();
        let layer = switch.clone();
        let broker = broker::build_with_audit_layer(&config, move |store| layer.wrap(store))
            .await
            .with_context(|| format!("{chain}: starting its broker"))?;
        let app = router(broker.state.clone())
            .merge(switch.router())
            .merge(crate::audit_stats::router(broker.audit_store.clone()));
        let (server_stop, mut srv_stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve_http(listener, app, None, async move {
            let _ = srv_stop_rx.changed().await;
        }));
        infos.push(HostInfo {
            broker_url: format!("http://{}", addrs[i]),
            audit_chain: chain.clone(),
            enclave_pid: enclave.pid(),
            enclave_socket: socket.clone(),
        });
        let pid = enclave.pid_handle();
        // A restarted child is not written back to the ready file (the one-host stack's
        // file is); its pid shows in the log.
        let enclave_task = tokio::spawn(enclave.supervise(first, stop_rx.clone(), |_| {}));
        hosts.push(RunningHost {
            broker,
            server,
            server_stop,
            enclave_task,
        });
        if let Err(e) = wait_ready(&http, &infos[i].broker_url, args.backend_url.is_none()).await {
            eprintln!("dev stack: {chain} did not become ready: {e:#}");
            shut_down(hosts, &stop_tx).await;
            return Ok(ExitCode::FAILURE);
        }
        // The child may have been restarted while the host came up: name the running one.
        infos[i].enclave_pid = pid.load(std::sync::atomic::Ordering::SeqCst);
        if i == 0 {
            first_config = Some(config);
        }
    }
    tracing::info!(
        hosts = n,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "dev fleet ready"
    );
    let Some(first_config) = first_config else {
        bail!("no host started");
    };
    let first = ReadyInfo {
        broker_url: issuer.clone(),
        issuer: issuer.clone(),
        backend_url: urls.backend.clone(),
        sts_url: urls.sts.clone(),
        kms_url: urls.kms.clone(),
        mock_root_pem: mock_root.to_path_buf(),
        enclave_pid: infos[0].enclave_pid,
        enclave_socket: infos[0].enclave_socket.clone(),
        audit_db: PathBuf::from(&plan.raw_url),
        sealed_seed: first_config.sealed_seed.clone(),
        kms_cloudtrail: data_dir.join(crate::stack::KMS_CLOUDTRAIL_FILE),
        data_dir: data_dir.to_path_buf(),
        pid: std::process::id(),
        api_tls_ca_pem: None,
    };
    let ready = FleetReadyInfo {
        first: first.clone(),
        broker_urls: infos.iter().map(|h| h.broker_url.clone()).collect(),
        hosts: infos,
    };
    if let Some(path) = &ready_file {
        write_atomically(path, &serde_json::to_vec_pretty(&ready)?)?;
    }
    let shown = ReadyInfo {
        // The password stays out of the terminal.
        audit_db: PathBuf::from(plan.url.redacted()),
        ..first
    };
    print_next_steps(&shown);
    print_fleet_steps(&ready, &plan, data_dir);
    shutdown_signal().await;
    shut_down(hosts, &stop_tx).await;
    if let Some(path) = &ready_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(ExitCode::SUCCESS)
}

/// Stops every host: servers first (drain), then the enclave children, then the logs.
async fn shut_down(hosts: Vec<RunningHost>, stop: &watch::Sender<bool>) {
    for h in &hosts {
        let _ = h.server_stop.send(true);
    }
    for h in &hosts {
        h.broker
            .finish_abandoned_requests(Duration::from_secs(10))
            .await;
    }
    let _ = stop.send(true);
    for h in hosts {
        let _ = tokio::time::timeout(Duration::from_secs(10), h.server).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), h.enclave_task).await;
        h.broker.audit_store.shutdown(Duration::from_secs(5)).await;
    }
}

fn print_fleet_steps(r: &FleetReadyInfo, plan: &FleetPlan, data_dir: &Path) {
    println!(
        "Fleet: {} hosts, one issuer ({}), one sealed seed, one PostgreSQL audit log ({}):",
        r.hosts.len(),
        r.first.issuer,
        plan.url.redacted()
    );
    for h in &r.hosts {
        println!(
            "  {:<8} {}   enclave pid {}, {}",
            h.audit_chain,
            h.broker_url,
            h.enclave_pid,
            h.enclave_socket.display()
        );
    }
    let broker_urls: String = r
        .hosts
        .iter()
        .map(|h| format!(" --broker-url {}", h.broker_url))
        .collect();
    println!(
        r#"
  # every host serves the same kid
  for u in {urls}; do curl -s $u/.well-known/jwks.json; echo; done

  # check every host's chain against its own enclave's attested checkpoint
  # (the URL with its password, in the environment rather than on the command line)
  BROKER_AUDIT_DB='<the --audit-db URL>' cargo run -p agentkeys-broker --features mock-root -- \
      audit verify{broker_urls} --root {root} --allow-mock-root --measurements {measurements}
"#,
        urls = r.broker_urls.join(" "),
        root = r.first.mock_root_pem.display(),
        measurements = data_dir.join(MOCK_MEASUREMENTS_FILE).display(),
    );
}
