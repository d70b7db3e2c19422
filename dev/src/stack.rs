//! The one-command mock stack (`agentkeys-dev dev`).
//!
//! It starts, all on loopback and without AWS or Nitro: the KMS stand-in
//! (`agentkeys_mock_nsm::kms`), the STS and session-backend stand-ins, the enclave as its
//! own child process over a Unix socket in the data directory (see
//! [`crate::enclave_child`]), and the broker itself with the audit fault switch of
//! [`crate::audit_faults`]. The enclave child is restarted if it dies; the broker then
//! re-unseals by itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use agentkeys_broker::broker;
use agentkeys_broker::config::{BrokerConfig, DaemonCredentials, KmsCredentials, StsMode};
use agentkeys_broker::http::{router, serve_http, shutdown_signal};
use anyhow::{anyhow, bail, Context};
use clap::Args;
use tokio::sync::watch;

use crate::audit_faults::AuditFaultSwitch;
use crate::demo::{run_demo, DemoUrls};
use crate::enclave_child::{socket_path, EnclaveChild};
use crate::standins::backend::SessionSigner;
use crate::standins::{bind_loopback, spawn_backend, spawn_kms, spawn_sts};

/// Role ARN used by the dev stack (the STS stand-in accepts any well-formed ARN).
pub const DEV_ROLE_ARN: &str = "arn:aws:iam::000000000000:role/agentkeys-data-role";
/// The KMS key the dev stack's enclave is pinned to: a key ARN of the KMS stand-in's own
/// account ([`agentkeys_mock_nsm::kms::DEFAULT_ACCOUNT`]) in [`DEV_REGION`], created by
/// the stand-in on first use.
pub const DEV_KMS_KEY_ARN: &str =
    "arn:aws:kms:us-east-1:000000000000:key/0a9f6f1e-6d6b-4c39-9a57-4d2c8e1f7b30";
/// Region used by the dev stack.
pub const DEV_REGION: &str = "us-east-1";
/// Default broker port of the dev stack (the port the examples in `docs/api.md` use).
pub const DEV_DEFAULT_PORT: u16 = 8091;
/// The KMS stand-in's CloudTrail records, in the data directory (`audit verify
/// --cloudtrail`).
pub const KMS_CLOUDTRAIL_FILE: &str = "kms-cloudtrail.json";
/// How long `dev` waits for every service to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Flags of `agentkeys-dev dev`.
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
    /// The enclave's authorization modes (see `agentkeys-enclave --auth-mode`).
    #[arg(
        long = "auth-mode",
        value_delimiter = ',',
        default_value = "signed-session,wallet-signature"
    )]
    pub auth_modes: Vec<String>,
    /// With --backend-url and `signed-session`: the RFC 7638 thumbprint of that backend's
    /// session key (the stand-in's own key is used otherwise). Repeatable.
    #[arg(
        long = "session-key-thumbprint",
        value_delimiter = ',',
        allow_hyphen_values = true
    )]
    pub session_key_thumbprints: Vec<String>,
    /// Several hosts on one PostgreSQL audit log (`--hosts`, `--audit-db`).
    #[command(flatten)]
    pub fleet: crate::fleet::FleetArgs,
    /// The issuer's TLS: `pebble` starts a local ACME CA (Pebble, Debian package
    /// `pebble`) and has the enclave terminate the issuer's TLS with a certificate from it,
    /// relayed unread by the broker; `none` keeps the plain-HTTP issuer.
    #[arg(long, value_enum, default_value = "none")]
    pub acme: crate::pebble_mode::AcmeMode,
    /// With `--acme pebble`: the issuer's port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    pub issuer_tls_port: u16,
    /// With `--acme pebble`: serve the mint API over HTTPS, with a certificate made for
    /// the stack (for `localhost` and `127.0.0.1`; its CA is `api-tls-ca.pem` in the data
    /// directory and `api_tls_ca_pem` in the ready file).
    #[arg(long)]
    pub api_tls: bool,
}

/// The file of the backend stand-in's session key, in the data directory.
pub const SESSION_KEY_FILE: &str = "session-key.hex";

/// Contents of `--ready-file`.
#[derive(serde::Serialize, Clone)]
pub(crate) struct ReadyInfo {
    pub(crate) broker_url: String,
    pub(crate) issuer: String,
    pub(crate) backend_url: String,
    pub(crate) sts_url: String,
    pub(crate) kms_url: String,
    pub(crate) mock_root_pem: PathBuf,
    pub(crate) enclave_pid: u32,
    pub(crate) enclave_socket: PathBuf,
    pub(crate) audit_db: PathBuf,
    pub(crate) sealed_seed: PathBuf,
    pub(crate) kms_cloudtrail: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) pid: u32,
    /// With `--api-tls`: the CA the mint API's certificate chains to (`curl --cacert`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) api_tls_ca_pem: Option<PathBuf>,
}

/// The ready file's JSON: `info`, and `issuer_tls` in the Pebble mode.
fn ready_json(
    info: &ReadyInfo,
    issuer_tls: Option<&crate::pebble_mode::IssuerTlsReady>,
) -> anyhow::Result<Vec<u8>> {
    let mut v = serde_json::to_value(info)?;
    if let Some(t) = issuer_tls {
        v["issuer_tls"] = serde_json::to_value(t)?;
    }
    Ok(serde_json::to_vec_pretty(&v)?)
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

/// Name, in the data directory, of the mock enclave image's measurements: the JSON
/// `nitro-cli build-enclave` prints, with the mock NSM's PCR0, PCR1 and PCR2, so that the
/// auditor's check in the dev stack pins the image as it does against a real enclave.
pub const MOCK_MEASUREMENTS_FILE: &str = "mock-measurements.json";

/// The mock enclave image's measurements in `nitro-cli` form.
fn mock_measurements_json() -> String {
    let pcrs = agentkeys_mock_nsm::default_boot_pcrs();
    let mut inner = serde_json::Map::new();
    inner.insert("HashAlgorithm".into(), "Sha384 { ... }".into());
    for index in agentkeys_attestation::measurements::IMAGE_PCRS {
        if let Some(value) = pcrs.get(&index) {
            inner.insert(format!("PCR{index}"), hex::encode(value).into());
        }
    }
    serde_json::json!({ "Measurements": inner }).to_string()
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

impl ReadyInfo {
    /// What the demo needs of the running stack.
    fn demo_urls(&self) -> DemoUrls {
        DemoUrls {
            broker: self.broker_url.clone(),
            backend: self.backend_url.clone(),
            mock_root_pem: self.mock_root_pem.clone(),
            audit_db: self.audit_db.clone(),
        }
    }
}

/// The URLs of the stand-ins, started or given.
pub(crate) struct StandInUrls {
    pub(crate) kms: String,
    pub(crate) sts: String,
    pub(crate) backend: String,
    /// The thumbprints of the session keys the enclave trusts.
    pub(crate) session_keys: Vec<String>,
}

/// Starts the KMS stand-in, and the STS and backend stand-ins unless `args` names others.
pub(crate) async fn start_stand_ins(
    args: &DevArgs,
    data_dir: &Path,
    issuer: &str,
) -> anyhow::Result<StandInUrls> {
    let kms_l = bind_loopback(0)?;
    let kms = format!("http://{}", kms_l.local_addr()?);
    spawn_kms(
        kms_l,
        Some(data_dir.join("kms-state.json")),
        Some(data_dir.join(KMS_CLOUDTRAIL_FILE)),
    )
    .await?;
    let sts = match &args.sts_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let l = bind_loopback(0)?;
            let url = format!("http://{}", l.local_addr()?);
            spawn_sts(l)?;
            url
        }
    };
    let signed_session = args.auth_modes.iter().any(|m| m == "signed-session");
    let (backend, session_keys) = match &args.backend_url {
        Some(u) => (
            u.trim_end_matches('/').to_string(),
            args.session_key_thumbprints.clone(),
        ),
        None => {
            let l = bind_loopback(0)?;
            let url = format!("http://{}", l.local_addr()?);
            let signer = signed_session
                .then(|| SessionSigner::load_or_create(&data_dir.join(SESSION_KEY_FILE), issuer))
                .transpose()?;
            let keys = signer.iter().map(SessionSigner::thumbprint).collect();
            spawn_backend(l, signer)?;
            (url, keys)
        }
    };
    if signed_session && session_keys.is_empty() {
        bail!("--auth-mode signed-session with --backend-url needs --session-key-thumbprint (that backend's session key), or choose --auth-mode parent-vouched");
    }
    Ok(StandInUrls {
        kms,
        sts,
        backend,
        session_keys,
    })
}

/// The enclave child in mock mode on `socket`, for `issuer`.
pub(crate) fn enclave_child(
    args: &DevArgs,
    socket: &Path,
    issuer: &str,
    session_keys: &[String],
) -> anyhow::Result<EnclaveChild> {
    enclave_child_with(args, socket, issuer, session_keys, &[])
}

/// [`enclave_child`] with `extra` flags for the enclave.
fn enclave_child_with(
    args: &DevArgs,
    socket: &Path,
    issuer: &str,
    session_keys: &[String],
    extra: &[String],
) -> anyhow::Result<EnclaveChild> {
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
        issuer.to_string(),
        "--kms-key-arn".to_string(),
        DEV_KMS_KEY_ARN.to_string(),
        "--auth-mode".to_string(),
        args.auth_modes.join(","),
    ]);
    for key in session_keys {
        // One argument: a base64url thumbprint may start with '-'.
        child_args.push(format!("--session-key-thumbprint={key}"));
    }
    child_args.extend(extra.iter().cloned());
    Ok(EnclaveChild::new(program, child_args, socket.to_path_buf()))
}

/// The broker's configuration in the dev stack.
pub(crate) fn broker_config(
    args: &DevArgs,
    bind: SocketAddr,
    urls: &StandInUrls,
    socket: &Path,
    data_dir: &Path,
) -> BrokerConfig {
    let issuer = format!("http://{bind}");
    BrokerConfig {
        issuer,
        bind,
        backend_url: urls.backend.clone(),
        enclave: agentkeys_wire::Address::Unix(socket.to_path_buf()),
        enclave_connections: 4,
        enclave_timeout: Duration::from_secs(5),
        supervise_interval: Duration::from_millis(250),
        jwt_ttl_seconds: 300,
        role_arn: Some(DEV_ROLE_ARN.to_string()),
        sts_duration_seconds: 3600,
        sts_mode: StsMode::WebIdentity,
        sts_endpoint: Some(urls.sts.clone()),
        sts_region: DEV_REGION.to_string(),
        sts_timeout: Duration::from_secs(5),
        daemon_credentials: DaemonCredentials::DefaultChain,
        backend_timeout: Duration::from_millis(args.backend_timeout_ms),
        session_cache: Duration::from_secs(args.session_cache_seconds),
        audit_db: data_dir.join("audit.db").into(),
        // The KMS encryption context binds the seed to the issuer, which contains the
        // port: one sealed seed per port, so a run on another port does not try to open it.
        sealed_seed: data_dir.join(format!("sealed-seed-{}.bin", bind.port())),
        kms_key_id: DEV_KMS_KEY_ARN.to_string(),
        kms_region: DEV_REGION.to_string(),
        kms_endpoint: Some(urls.kms.clone()),
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
    }
}

/// `agentkeys-dev dev`.
pub async fn run_dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let data_dir = absolute(&args.data_dir);
    let mock_root = data_dir.join("mock-root.pem");
    write_atomically(&mock_root, agentkeys_mock_nsm::mock_root_pem().as_bytes())?;
    let mock_measurements = data_dir.join(MOCK_MEASUREMENTS_FILE);
    write_atomically(&mock_measurements, mock_measurements_json().as_bytes())?;
    if args.api_tls && args.acme != crate::pebble_mode::AcmeMode::Pebble {
        bail!(crate::api_tls::NEEDS_PEBBLE);
    }
    if let Some(plan) = crate::fleet::FleetPlan::from_args(&args)? {
        if args.acme != crate::pebble_mode::AcmeMode::None {
            bail!("--acme pebble runs one host; drop --hosts");
        }
        return crate::fleet::run_fleet(&args, plan, &data_dir, &mock_root, started).await;
    }
    if args.demo && args.acme != crate::pebble_mode::AcmeMode::None {
        bail!("--demo runs on the plain-HTTP issuer; drop --acme pebble");
    }

    // Listeners first, so every URL is known before anything starts.
    let broker_l = bind_loopback(args.port)?;
    let broker_addr = broker_l.local_addr()?;
    let pebble = match args.acme {
        crate::pebble_mode::AcmeMode::None => None,
        crate::pebble_mode::AcmeMode::Pebble => {
            Some(crate::pebble_mode::PebbleIssuer::start(&data_dir, args.issuer_tls_port).await?)
        }
    };
    let issuer = pebble
        .as_ref()
        .map_or_else(|| format!("http://{broker_addr}"), |p| p.issuer.clone());
    let api_tls = args
        .api_tls
        .then(|| crate::api_tls::ApiTls::write(&data_dir))
        .transpose()?;
    let urls = start_stand_ins(&args, &data_dir, &issuer).await?;
    let socket = socket_path(&data_dir);
    let mut config = broker_config(&args, broker_addr, &urls, &socket, &data_dir);
    if let Some(p) = &pebble {
        config.issuer = p.issuer.clone();
        // The seed is bound to the issuer, whose port is the TLS port here.
        config.sealed_seed = data_dir.join(format!("sealed-seed-tls-{}.bin", p.port()));
    }
    config.tls = api_tls.as_ref().map(crate::api_tls::ApiTls::serve_paths);
    let enclave_extra = pebble
        .as_ref()
        .map(|p| p.enclave_args())
        .unwrap_or_default();
    let enclave = enclave_child_with(
        &args,
        &socket,
        &config.issuer,
        &urls.session_keys,
        &enclave_extra,
    )?;
    let first = enclave.spawn_once()?;
    let (stop_tx, stop_rx) = watch::channel(false);

    let switch = AuditFaultSwitch::default();
    let layer = switch.clone();
    let broker = broker::build_with_audit_layer(&config, move |store| layer.wrap(store)).await?;
    let app = router(broker.state.clone())
        .merge(switch.router())
        .merge(crate::audit_stats::router(broker.audit_store.clone()));
    let (srv_stop_tx, mut srv_stop_rx) = watch::channel(false);
    let serve = serve_http(broker_l, app, config.tls.clone(), async move {
        let _ = srv_stop_rx.changed().await;
    });
    let server = tokio::spawn(async move {
        // Loading the TLS files is the one way serving fails after the bind: say so, or
        // the stack would only report that it never became ready.
        if let Err(e) = serve.await {
            eprintln!("the broker's listener stopped: {e}");
        }
    });
    let issuer_listener = match &pebble {
        Some(p) => Some(broker::start_issuer_listener(
            &broker,
            &p.listen_config(&data_dir),
            p.listener.try_clone()?,
        )?),
        None => None,
    };
    let issuer_tls = pebble.as_ref().map(|p| p.ready());

    let info = ReadyInfo {
        broker_url: format!(
            "{}://{broker_addr}",
            if api_tls.is_some() { "https" } else { "http" }
        ),
        issuer: config.issuer.clone(),
        backend_url: urls.backend.clone(),
        sts_url: urls.sts.clone(),
        kms_url: urls.kms.clone(),
        mock_root_pem: mock_root.clone(),
        enclave_pid: enclave.pid(),
        enclave_socket: socket.clone(),
        audit_db: data_dir.join("audit.db"),
        sealed_seed: config.sealed_seed.clone(),
        kms_cloudtrail: data_dir.join(KMS_CLOUDTRAIL_FILE),
        data_dir: data_dir.clone(),
        pid: std::process::id(),
        api_tls_ca_pem: api_tls.as_ref().map(|t| t.ca.clone()),
    };
    let ready_file = args.ready_file.clone().map(|p| absolute(&p));
    let restart_info = info.clone();
    let restart_ready_file = ready_file.clone();
    let restart_issuer_tls = issuer_tls.clone();
    let enclave_pid = enclave.pid_handle();
    let enclave_task = tokio::spawn(enclave.supervise(first, stop_rx, move |new_pid| {
        // Only a ready file already written is updated: it appears once the stack answers.
        if let Some(path) = restart_ready_file.as_ref().filter(|p| p.exists()) {
            let mut i = restart_info.clone();
            i.enclave_pid = new_pid;
            if let Ok(json) = ready_json(&i, restart_issuer_tls.as_ref()) {
                let _ = write_atomically(path, &json);
            }
        }
    }));

    let code = serve_until_done(
        &args,
        info,
        issuer_tls.as_ref(),
        &enclave_pid,
        ready_file.as_deref(),
        started,
    )
    .await;

    // Shut down: broker first (drain), then the enclave child.
    if let Some(l) = issuer_listener {
        l.shutdown(Duration::from_secs(10)).await;
    }
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
    code
}

/// Waits for the stack to answer, then runs the demo or waits for a shutdown signal.
async fn serve_until_done(
    args: &DevArgs,
    mut info: ReadyInfo,
    issuer_tls: Option<&crate::pebble_mode::IssuerTlsReady>,
    enclave_pid: &std::sync::atomic::AtomicU32,
    ready_file: Option<&Path>,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    let http = match &info.api_tls_ca_pem {
        Some(ca) => crate::api_tls::client_trusting(ca, Duration::from_secs(5))?,
        None => reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?,
    };
    if let Err(e) = wait_ready(&http, &info.broker_url, args.backend_url.is_none()).await {
        eprintln!("dev stack did not become ready: {e:#}");
        return Ok(ExitCode::FAILURE);
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "dev stack ready"
    );
    // The child may have been restarted while the stack came up: name the running one.
    info.enclave_pid = enclave_pid.load(std::sync::atomic::Ordering::SeqCst);
    if let Some(path) = ready_file {
        write_atomically(path, &ready_json(&info, issuer_tls)?)?;
    }
    if args.demo {
        let ok = run_demo(&http, &info.demo_urls()).await;
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    print_next_steps(&info);
    if let Some(t) = issuer_tls {
        println!(
            "{}",
            crate::pebble_mode::next_steps(
                t,
                &info.broker_url,
                info.api_tls_ca_pem.as_deref(),
                &info.mock_root_pem,
                &info.data_dir.join(MOCK_MEASUREMENTS_FILE)
            )
        );
    }
    shutdown_signal().await;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn wait_ready(
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

pub(crate) fn print_next_steps(i: &ReadyInfo) {
    println!("{}", next_steps(i));
}

/// The "try next" text: the stack's URLs and a first session, mint and audit.
fn next_steps(i: &ReadyInfo) -> String {
    let b = &i.broker_url;
    let be = &i.backend_url;
    let db = i.audit_db.display();
    let root = i.mock_root_pem.display();
    let measurements = i.data_dir.join(MOCK_MEASUREMENTS_FILE);
    let measurements = measurements.display();
    // Step 4 audits the issuer: the broker's URL, unless the issuer has a hostname of its
    // own (--acme pebble), which the Pebble mode's steps audit over the enclave's TLS.
    let issuer_step = if i.issuer == *b {
        format!(
            r#"  # 4. verify that the JWKS key is held by an attested enclave running the expected
  #    image (mock root, explicitly; the mock image's measurements)
  cargo run -p agentkeys-attestation --bin agentkeys-attest -- verify --issuer {b} \
      --allow-mock-root --root {root} --measurements {measurements}"#
        )
    } else {
        format!(
            "  # 4. the issuer is not this URL but {}: see step 7 below",
            i.issuer
        )
    };
    // With --api-tls the mint API's certificate chains to the stack's own CA, which curl
    // is told about; `audit verify --broker-url` trusts only the public roots, so the
    // checkpoint is fetched with curl.
    let (cacert, checkpoint_step) = match &i.api_tls_ca_pem {
        Some(ca) => (
            format!(" --cacert {}", ca.display()),
            format!(
                r#"  # 5. check the audit log against the enclave's attested checkpoint (fetched over
  #    the mint API's TLS, whose CA is the dev stack's own)
  curl -s --cacert {ca} {b}/v1/audit/checkpoint -o {checkpoint}
  cargo run -p agentkeys-broker --features mock-root -- audit verify --db {db} --checkpoint {checkpoint} \
      --root {root} --allow-mock-root --measurements {measurements}"#,
                ca = ca.display(),
                checkpoint = i.data_dir.join("checkpoint.json").display(),
            ),
        ),
        None => (
            String::new(),
            format!(
                r#"  # 5. check the audit log against the enclave's attested checkpoint
  cargo run -p agentkeys-broker --features mock-root -- audit verify --db {db} --broker-url {b} --root {root} --allow-mock-root \
      --measurements {measurements}"#
            ),
        ),
    };
    let audit_steps = format!("{issuer_step}\n\n{checkpoint_step}");
    format!(
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
  curl -s{cacert} -X POST {b}/v1/mint-oidc-jwt -H "authorization: Bearer $TOKEN"

  # 3. get AWS credentials through the STS stand-in
  curl -s{cacert} -X POST {b}/v1/mint-aws-creds -H "authorization: Bearer $TOKEN"

{audit_steps}

Ctrl-C stops everything.
"#,
        sts = i.sts_url,
        kms = i.kms_url,
        pid = i.enclave_pid,
        sock = i.enclave_socket.display(),
        dd = i.data_dir.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(api_tls_ca_pem: Option<PathBuf>) -> ReadyInfo {
        let scheme = if api_tls_ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        ReadyInfo {
            broker_url: format!("{scheme}://127.0.0.1:8091"),
            issuer: "https://issuer.agentkeys.test:9443".into(),
            backend_url: "http://127.0.0.1:2".into(),
            sts_url: "http://127.0.0.1:3".into(),
            kms_url: "http://127.0.0.1:4".into(),
            mock_root_pem: "/d/mock-root.pem".into(),
            enclave_pid: 5,
            enclave_socket: "/d/enclave.sock".into(),
            audit_db: "/d/audit.db".into(),
            sealed_seed: "/d/sealed.bin".into(),
            kms_cloudtrail: "/d/ct.json".into(),
            data_dir: "/d".into(),
            pid: 6,
            api_tls_ca_pem,
        }
    }

    #[test]
    fn next_steps_name_the_mint_api_ca_with_api_tls() {
        let plain = next_steps(&info(None));
        assert!(!plain.contains("--cacert"), "{plain}");
        assert!(plain.contains("curl -s -X POST http://127.0.0.1:8091/v1/mint-oidc-jwt"));
        assert!(plain.contains("--broker-url http://127.0.0.1:8091"));

        let tls = next_steps(&info(Some("/d/api-tls-ca.pem".into())));
        assert!(
            tls.contains(
                "curl -s --cacert /d/api-tls-ca.pem -X POST https://127.0.0.1:8091/v1/mint-oidc-jwt"
            ),
            "{tls}"
        );
        assert!(tls.contains(
            "curl -s --cacert /d/api-tls-ca.pem https://127.0.0.1:8091/v1/audit/checkpoint"
        ));
        assert!(!tls.contains("--broker-url"), "{tls}");
    }

    #[test]
    fn step_4_audits_the_issuer_where_it_is() {
        let mut own = info(None);
        own.issuer = own.broker_url.clone();
        let text = next_steps(&own);
        assert!(
            text.contains("verify --issuer http://127.0.0.1:8091"),
            "the plain stack's issuer is the broker: {text}"
        );
        for pebble in [info(None), info(Some("/d/api-tls-ca.pem".into()))] {
            let text = next_steps(&pebble);
            assert!(!text.contains("verify --issuer"), "{text}");
            assert!(
                text.contains("the issuer is not this URL but https://issuer.agentkeys.test:9443"),
                "{text}"
            );
        }
    }

    #[test]
    fn ready_file_names_the_ca_only_with_api_tls() {
        let plain: serde_json::Value =
            serde_json::from_slice(&ready_json(&info(None), None).unwrap()).unwrap();
        assert!(plain.get("api_tls_ca_pem").is_none(), "{plain}");
        let tls: serde_json::Value = serde_json::from_slice(
            &ready_json(&info(Some("/d/api-tls-ca.pem".into())), None).unwrap(),
        )
        .unwrap();
        assert_eq!(tls["api_tls_ca_pem"], "/d/api-tls-ca.pem");
        assert_eq!(tls["broker_url"], "https://127.0.0.1:8091");
    }
}
