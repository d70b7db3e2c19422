//! The one-command mock stack (`agentkeys-broker dev`) and the stand-ins run alone
//! (`agentkeys-broker stand-in sts|backend|kms`).
//!
//! `dev` starts, all on loopback and without AWS or Nitro: the enclave as its own child
//! process (this executable re-run with a hidden subcommand that runs the
//! `agentkeys-enclave` code with the mock NSM) over a Unix socket in the data directory,
//! the KMS stand-in (`agentkeys_mock_nsm::kms`), the STS and session-backend stand-ins,
//! and the broker itself. The enclave child is restarted if it dies; the broker then
//! re-unseals by itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use tokio::sync::watch;

use crate::app;
use crate::config::{BrokerConfig, DaemonCredentials, KmsCredentials, StsMode};

/// Role ARN used by the dev stack (the STS stand-in accepts any well-formed ARN).
pub const DEV_ROLE_ARN: &str = "arn:aws:iam::000000000000:role/agentkeys-data-role";
/// KMS key id used by the dev stack.
pub const DEV_KMS_KEY_ID: &str = "alias/agentkeys-dev";
/// Region used by the dev stack.
pub const DEV_REGION: &str = "us-east-1";
/// Default broker port of the dev stack (DESIGN §6 examples).
pub const DEV_DEFAULT_PORT: u16 = 8091;
/// Unix socket paths are limited to 108 bytes (`sun_path`); longer data-dir paths fall
/// back to the temporary directory.
const MAX_SOCKET_PATH: usize = 100;
/// How long `dev` waits for every service to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Flags of `agentkeys-broker dev`.
#[derive(Clone, Debug, Args)]
pub struct DevArgs {
    /// Data directory (SQLite audit log, sealed seed, KMS stand-in state); kept across runs.
    #[arg(long, env = "AGENTKEYS_DEV_DATA_DIR", default_value = ".dev-data")]
    pub data_dir: PathBuf,
    /// Broker port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = DEV_DEFAULT_PORT)]
    pub port: u16,
    /// Write a JSON description of the running stack here once everything answers.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Run the whole flow once, print each step, exit 0 only if every step passed.
    #[arg(long)]
    pub demo: bool,
    /// Use this session backend instead of starting the stand-in.
    #[arg(long)]
    pub backend_url: Option<String>,
    /// Use this STS endpoint instead of starting the stand-in.
    #[arg(long)]
    pub sts_url: Option<String>,
    /// Session-backend timeout in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub backend_timeout_ms: u64,
    /// Positive session cache in seconds (0 disables).
    #[arg(long, default_value_t = 30)]
    pub session_cache_seconds: u64,
    /// Broker request body limit in bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    pub body_limit_bytes: usize,
    /// Run this enclave executable (`agentkeys-enclave` built with the `mock` feature)
    /// instead of re-running this program.
    #[arg(long)]
    pub enclave_bin: Option<PathBuf>,
}

/// Which stand-in to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StandInKind {
    /// The STS query/XML stand-in.
    Sts,
    /// The session backend stand-in.
    Backend,
    /// The KMS stand-in (mock NSM root).
    Kms,
}

/// Flags of `agentkeys-broker stand-in`.
#[derive(Clone, Debug, Args)]
pub struct StandInArgs {
    /// Which stand-in.
    #[arg(value_enum)]
    pub kind: StandInKind,
    /// Listen address (loopback).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// KMS stand-in state file (its keys persist across runs).
    #[arg(long)]
    pub state_file: Option<PathBuf>,
}

/// Flags of the hidden `enclave-child` subcommand: passed through to the enclave.
#[derive(Clone, Debug, Args)]
pub struct EnclaveChildArgs {
    /// Arguments of `agentkeys-enclave`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs the enclave application in this process (blocking; builds its own runtime).
pub fn run_enclave_child(args: EnclaveChildArgs) -> ExitCode {
    let mut argv = vec!["agentkeys-enclave".to_string()];
    argv.extend(args.args);
    agentkeys_enclave::run_from_args(argv)
}

fn bind_loopback(port: u16) -> anyhow::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn tokio_listener(l: std::net::TcpListener) -> anyhow::Result<tokio::net::TcpListener> {
    Ok(tokio::net::TcpListener::from_std(l)?)
}

async fn spawn_kms(
    listener: std::net::TcpListener,
    state_file: Option<PathBuf>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let config = agentkeys_mock_nsm::kms::KmsConfig::new().state_file(state_file);
    let l = tokio_listener(listener)?;
    Ok(tokio::spawn(async move {
        if let Err(e) = agentkeys_mock_nsm::kms::serve(l, config).await {
            tracing::error!(error = %e, "KMS stand-in stopped");
        }
    }))
}

fn spawn_sts(listener: std::net::TcpListener) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let l = tokio_listener(listener)?;
    Ok(tokio::spawn(async move {
        if let Err(e) = standin_sts(l).await {
            tracing::error!(error = %e, "STS stand-in stopped");
        }
    }))
}

fn spawn_backend(listener: std::net::TcpListener) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let l = tokio_listener(listener)?;
    Ok(tokio::spawn(async move {
        if let Err(e) = standin_backend(l).await {
            tracing::error!(error = %e, "backend stand-in stopped");
        }
    }))
}

async fn standin_sts(l: tokio::net::TcpListener) -> std::io::Result<()> {
    crate::standins::sts::serve(l, Default::default()).await
}

async fn standin_backend(l: tokio::net::TcpListener) -> std::io::Result<()> {
    crate::standins::backend::serve(l, Default::default()).await
}

/// `agentkeys-broker stand-in KIND --listen ADDR`.
pub async fn run_stand_in(args: StandInArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        bail!("stand-ins listen on loopback only; {} is not", args.listen);
    }
    let l = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    l.set_nonblocking(true)?;
    let addr = l.local_addr()?;
    println!("{:?} stand-in listening on http://{addr}", args.kind);
    let task = match args.kind {
        StandInKind::Sts => spawn_sts(l)?,
        StandInKind::Backend => spawn_backend(l)?,
        StandInKind::Kms => spawn_kms(l, args.state_file).await?,
    };
    tokio::select! {
        _ = app::shutdown_signal() => {},
        _ = task => {},
    }
    Ok(())
}

fn socket_path(data_dir: &Path) -> PathBuf {
    let p = data_dir.join("enclave.sock");
    if p.as_os_str().len() <= MAX_SOCKET_PATH {
        p
    } else {
        std::env::temp_dir().join(format!("agentkeys-enclave-{}.sock", std::process::id()))
    }
}

/// The enclave child and its restarts.
struct EnclaveChild {
    program: PathBuf,
    args: Vec<String>,
    socket: PathBuf,
    pid: Arc<AtomicU32>,
    stopping: Arc<AtomicBool>,
}

impl EnclaveChild {
    fn spawn_once(&self) -> anyhow::Result<tokio::process::Child> {
        let _ = std::fs::remove_file(&self.socket);
        let mut cmd = tokio::process::Command::new(&self.program);
        // The enclave logs every request at info; the broker already logs what matters.
        let log = std::env::var("AGENTKEYS_ENCLAVE_LOG").unwrap_or_else(|_| "warn".to_string());
        cmd.args(&self.args)
            .env("RUST_LOG", log)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and only affects the
        // child being set up; it makes the enclave child die with the dev process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| {
            format!("cannot start the enclave child {}", self.program.display())
        })?;
        self.pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
        Ok(child)
    }

    /// Keeps the child running until `stop` flips; restarts it when it dies.
    async fn supervise(
        self,
        mut child: tokio::process::Child,
        mut stop: watch::Receiver<bool>,
        on_restart: impl Fn(u32) + Send + 'static,
    ) {
        loop {
            tokio::select! {
                status = child.wait() => {
                    if self.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    tracing::warn!(?status, "enclave child exited; restarting");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    match self.spawn_once() {
                        Ok(c) => {
                            child = c;
                            on_restart(self.pid.load(Ordering::SeqCst));
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "enclave restart failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            // Loop again with a child that has already exited.
                        }
                    }
                }
                _ = stop.changed() => {
                    self.stopping.store(true, Ordering::SeqCst);
                    terminate(&mut child).await;
                    let _ = std::fs::remove_file(&self.socket);
                    return;
                }
            }
        }
    }
}

async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we own; no memory is touched.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(Duration::from_secs(3), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Contents of `--ready-file`.
#[derive(serde::Serialize, Clone)]
struct ReadyInfo {
    broker_url: String,
    issuer: String,
    backend_url: String,
    sts_url: String,
    kms_url: String,
    mock_root_pem: PathBuf,
    enclave_pid: u32,
    enclave_socket: PathBuf,
    audit_db: PathBuf,
    sealed_seed: PathBuf,
    data_dir: PathBuf,
    pid: u32,
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `agentkeys-broker dev`.
pub async fn run_dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let data_dir = absolute(&args.data_dir);
    let mock_root = data_dir.join("mock-root.pem");
    write_atomically(&mock_root, agentkeys_mock_nsm::mock_root_pem().as_bytes())?;

    // Listeners first, so every URL is known before anything starts.
    let broker_l = bind_loopback(args.port)?;
    let broker_addr = broker_l.local_addr()?;
    let issuer = format!("http://{broker_addr}");
    let kms_l = bind_loopback(0)?;
    let kms_url = format!("http://{}", kms_l.local_addr()?);
    let _kms_task = spawn_kms(kms_l, Some(data_dir.join("kms-state.json"))).await?;
    let sts_url = match &args.sts_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let l = bind_loopback(0)?;
            let url = format!("http://{}", l.local_addr()?);
            spawn_sts(l)?;
            url
        }
    };
    let backend_url = match &args.backend_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let l = bind_loopback(0)?;
            let url = format!("http://{}", l.local_addr()?);
            spawn_backend(l)?;
            url
        }
    };

    // The enclave child.
    let socket = socket_path(&data_dir);
    let (program, mut child_args) = match &args.enclave_bin {
        Some(p) => (p.clone(), vec![]),
        None => (
            std::env::current_exe().context("cannot find this executable")?,
            vec!["enclave-child".to_string(), "--".to_string()],
        ),
    };
    child_args.extend([
        "--mock".to_string(),
        "--usock".to_string(),
        socket.display().to_string(),
        "--issuer".to_string(),
        issuer.clone(),
    ]);
    let pid = Arc::new(AtomicU32::new(0));
    let enclave = EnclaveChild {
        program,
        args: child_args,
        socket: socket.clone(),
        pid: pid.clone(),
        stopping: Arc::new(AtomicBool::new(false)),
    };
    let first = enclave.spawn_once()?;
    let (stop_tx, stop_rx) = watch::channel(false);

    let audit_db = data_dir.join("audit.db");
    // The KMS encryption context binds the seed to the issuer, which contains the port:
    // one sealed seed per port, so a run on another port does not try to open it.
    let sealed_seed = data_dir.join(format!("sealed-seed-{}.bin", broker_addr.port()));
    let config = BrokerConfig {
        issuer: issuer.clone(),
        bind: broker_addr,
        backend_url: backend_url.clone(),
        enclave: agentkeys_wire::Address::Unix(socket.clone()),
        enclave_connections: 4,
        enclave_timeout: Duration::from_secs(5),
        supervise_interval: Duration::from_millis(250),
        jwt_ttl_seconds: 300,
        role_arn: Some(DEV_ROLE_ARN.to_string()),
        sts_duration_seconds: 3600,
        sts_mode: StsMode::WebIdentity,
        sts_endpoint: Some(sts_url.clone()),
        sts_region: DEV_REGION.to_string(),
        sts_timeout: Duration::from_secs(5),
        daemon_credentials: DaemonCredentials::DefaultChain,
        backend_timeout: Duration::from_millis(args.backend_timeout_ms),
        session_cache: Duration::from_secs(args.session_cache_seconds),
        audit_db: audit_db.clone(),
        sealed_seed: sealed_seed.clone(),
        kms_key_id: DEV_KMS_KEY_ID.to_string(),
        kms_region: DEV_REGION.to_string(),
        kms_endpoint: Some(kms_url.clone()),
        // The KMS stand-in does not check signatures; fixed, non-secret dev values.
        kms_credentials: KmsCredentials::Static(agentkeys_wire::AwsCredentials {
            access_key_id: "AKIADEVSTACK000000000".to_string(),
            secret_access_key: "dev-stack-not-a-secret".to_string(),
            session_token: None,
        }),
        tls: None,
        body_limit_bytes: args.body_limit_bytes,
        jwks_max_age_seconds: 60,
        dev_mode: true,
    };
    let broker = app::build(&config, true).await?;
    let router = crate::server::router(broker.state.clone());
    let (srv_stop_tx, mut srv_stop_rx) = watch::channel(false);
    let server = tokio::spawn(app::serve_http(broker_l, router, None, async move {
        let _ = srv_stop_rx.changed().await;
    }));

    let info = ReadyInfo {
        broker_url: issuer.clone(),
        issuer: issuer.clone(),
        backend_url: backend_url.clone(),
        sts_url: sts_url.clone(),
        kms_url: kms_url.clone(),
        mock_root_pem: mock_root.clone(),
        enclave_pid: pid.load(Ordering::SeqCst),
        enclave_socket: socket.clone(),
        audit_db: audit_db.clone(),
        sealed_seed: sealed_seed.clone(),
        data_dir: data_dir.clone(),
        pid: std::process::id(),
    };
    let ready_file = args.ready_file.clone().map(|p| absolute(&p));
    let restart_info = info.clone();
    let restart_ready_file = ready_file.clone();
    let enclave_task = tokio::spawn(enclave.supervise(first, stop_rx, move |new_pid| {
        if let Some(path) = &restart_ready_file {
            let mut i = restart_info.clone();
            i.enclave_pid = new_pid;
            if let Ok(json) = serde_json::to_vec_pretty(&i) {
                let _ = write_atomically(path, &json);
            }
        }
    }));

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let ready = wait_ready(&http, &issuer, args.backend_url.is_none()).await;
    let mut code = ExitCode::SUCCESS;
    match ready {
        Err(e) => {
            eprintln!("dev stack did not become ready: {e:#}");
            code = ExitCode::FAILURE;
        }
        Ok(()) => {
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "dev stack ready"
            );
            if let Some(path) = &ready_file {
                write_atomically(path, &serde_json::to_vec_pretty(&info)?)?;
            }
            if args.demo {
                let ok = crate::dev_demo::run_demo(&http, &info_urls(&info)).await;
                if !ok {
                    code = ExitCode::FAILURE;
                }
            } else {
                print_next_steps(&info);
                app::shutdown_signal().await;
            }
        }
    }

    // Shut down: broker first (drain), then the enclave child.
    let _ = srv_stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    broker
        .finish_abandoned_requests(Duration::from_secs(10))
        .await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), enclave_task).await;
    broker.audit_store.close();
    if let Some(path) = &ready_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(code)
}

/// URLs the demo needs.
pub struct DemoUrls {
    /// Broker.
    pub broker: String,
    /// Backend.
    pub backend: String,
    /// Mock root PEM path.
    pub mock_root_pem: PathBuf,
    /// Audit DB.
    pub audit_db: PathBuf,
}

fn info_urls(i: &ReadyInfo) -> DemoUrls {
    DemoUrls {
        broker: i.broker_url.clone(),
        backend: i.backend_url.clone(),
        mock_root_pem: i.mock_root_pem.clone(),
        audit_db: i.audit_db.clone(),
    }
}

async fn wait_ready(
    http: &reqwest::Client,
    broker: &str,
    need_backend: bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        match http.get(format!("{broker}/readyz")).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                let ok = |k: &str| v["checks"][k]["ok"].as_bool() == Some(true);
                if status == 200 || (ok("enclave") && ok("audit") && !need_backend) {
                    return Ok(());
                }
                last = v.to_string();
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(anyhow!("not ready after {READY_TIMEOUT:?}: {last}"))
}

fn print_next_steps(i: &ReadyInfo) {
    let b = &i.broker_url;
    let be = &i.backend_url;
    println!(
        r#"
AgentKeys dev stack is running (mock NSM, local KMS/STS/backend stand-ins; no AWS).

  broker    {b}
  backend   {be}
  STS       {sts}
  KMS       {kms}
  enclave   pid {pid}, {sock}
  audit DB  {db}
  data dir  {dd}

Try:

  # 1. create a session for a wallet
  TOKEN=$(curl -s -X POST {be}/session/create -H 'content-type: application/json' \
      -d '{{"wallet":"0x00000000000000000000000000000000000000aa"}}' | sed 's/.*"token":"\([^"]*\)".*/\1/')

  # 2. mint an OIDC JWT signed inside the (mock) enclave
  curl -s -X POST {b}/v1/mint-oidc-jwt -H "authorization: Bearer $TOKEN"

  # 3. get AWS credentials through the STS stand-in
  curl -s -X POST {b}/v1/mint-aws-creds -H "authorization: Bearer $TOKEN"

  # 4. verify that the JWKS key is held by an attested enclave (mock root, explicitly)
  cargo run -p agentkeys-attestation --bin agentkeys-attest -- verify --issuer {b} \
      --allow-mock-root --root {root}

  # 5. check the audit log against the enclave's attested checkpoint
  cargo run -- audit verify --db {db} --broker-url {b} --root {root} --allow-mock-root

Ctrl-C stops everything.
"#,
        sts = i.sts_url,
        kms = i.kms_url,
        pid = i.enclave_pid,
        sock = i.enclave_socket.display(),
        db = i.audit_db.display(),
        dd = i.data_dir.display(),
        root = i.mock_root_pem.display(),
    );
}
