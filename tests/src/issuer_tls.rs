//! An issuer whose TLS ends in the enclave, from the shipped binaries: Pebble (the ACME
//! CA, validating TLS-ALPN-01 for real through its DNS, which answers 127.0.0.1), the
//! backend and KMS stand-ins, and per host an `agentkeys-enclave --mock` with
//! `--acme-directory` and `--tls-usock`, and an `agentkeys-broker serve` whose
//! `--issuer-listen` relays the issuer port to the enclave's TLS socket.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

pub use agentkeys_dev::standins::pebble::{skip_reason, Pebble, PebbleOptions};

use crate::faults::Group;
use crate::{binary, closed_port};

/// The session backend and KMS stand-ins, in this process on a runtime of their own.
pub struct StandIns {
    /// The issuer URL.
    pub issuer: String,
    /// Session backend (unsigned sessions: the enclaves run parent-vouched).
    pub backend_url: String,
    /// KMS stand-in.
    pub kms_url: String,
    _runtime: tokio::runtime::Runtime,
}

impl StandIns {
    fn start(dir: &Path, issuer: &str) -> anyhow::Result<StandIns> {
        use agentkeys_dev::standins::{bind_loopback, spawn_backend, spawn_kms};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let kms = bind_loopback(0)?;
        let backend = bind_loopback(0)?;
        let (kms_url, backend_url) = (
            format!("http://{}", kms.local_addr()?),
            format!("http://{}", backend.local_addr()?),
        );
        runtime.block_on(async {
            spawn_kms(kms, Some(dir.join("kms-state.json")), None).await?;
            spawn_backend(backend, None)
        })?;
        Ok(StandIns {
            issuer: issuer.to_string(),
            backend_url,
            kms_url,
            _runtime: runtime,
        })
    }

    /// A session bearer for `wallet` from the backend stand-in.
    pub fn session(
        &self,
        http: &reqwest::blocking::Client,
        wallet: &str,
    ) -> anyhow::Result<String> {
        let v: serde_json::Value = http
            .post(format!("{}/session/create", self.backend_url))
            .json(&serde_json::json!({ "wallet": wallet }))
            .send()?
            .json()?;
        v["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no session token in {v}"))
    }
}

/// The issuer host: Pebble's DNS answers 127.0.0.1 for it; clients are told with
/// `--resolve`.
pub const ISSUER_HOST: &str = "issuer.agentkeys.test";
/// The KMS key the enclaves are pinned to, in the KMS stand-in's own account.
pub const ISSUER_KMS_KEY_ARN: &str =
    "arn:aws:kms:us-east-1:000000000000:key/3c7e9b2a-5d14-4f86-b0a9-7e2c1d6f8a43";
/// How long a first certificate may take (account, order, TLS-ALPN-01, finalize) on a
/// loaded 2-core machine.
pub const ISSUE_TIMEOUT: Duration = Duration::from_secs(60);

/// A free loopback port no other stack of this process was given: tests run in
/// parallel, and two stacks on one issuer port would answer each other's clients.
pub fn unique_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = closed_port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// How to start an [`IssuerStack`].
#[derive(Debug, Clone, Default)]
pub struct IssuerOptions {
    /// Lifetime of Pebble's certificates, seconds (default: Pebble's 5 years).
    pub validity_seconds: Option<u64>,
    /// Extra flags for the broker.
    pub broker_extra: Vec<String>,
    /// Relay the issuer port to this Unix socket instead of the enclave's TLS socket.
    pub relay_to: Option<PathBuf>,
}

/// Pebble, the stand-ins and one host, in a temporary directory.
pub struct IssuerStack {
    /// The host (more can be made with [`IssuerStack::host`]).
    pub host: IssuerHost,
    /// The stand-ins.
    pub shared: StandIns,
    /// PEM file of Pebble's issuing root: what the issuer's clients trust.
    pub issuing_root: PathBuf,
    /// The mock NSM root (PEM file) the attestation documents chain to.
    pub mock_root: PathBuf,
    /// The port the issuer listens on (Pebble's `tlsPort`).
    pub tls_port: u16,
    /// The CA.
    pub pebble: Pebble,
    /// The directory everything lives in.
    pub dir: tempfile::TempDir,
}

impl IssuerStack {
    /// Starts Pebble, the stand-ins and one host (enclave and broker), without waiting.
    pub fn start(options: &IssuerOptions) -> anyhow::Result<IssuerStack> {
        let dir = tempfile::Builder::new().prefix("ak-tls").tempdir()?;
        let tls_port = unique_port();
        let pebble = Pebble::start(&PebbleOptions {
            tls_port,
            certificate_validity_seconds: options.validity_seconds,
            dir: dir.path().to_path_buf(),
        })?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let root = rt.block_on(pebble.issuing_root_pem())?;
        let issuing_root = dir.path().join("pebble-issuing-root.pem");
        std::fs::write(&issuing_root, root)?;
        let mock_root = dir.path().join("mock-root.pem");
        std::fs::write(&mock_root, agentkeys_mock_nsm::mock_root_pem())?;
        let issuer = format!("https://{ISSUER_HOST}:{tls_port}");
        let shared = StandIns::start(dir.path(), &issuer)?;
        let mut host = IssuerHost::new(dir.path(), "host1", "127.0.0.1", tls_port)?;
        host.start_enclave(&shared, &pebble)?;
        host.start_broker(&shared, options.relay_to.as_deref(), &options.broker_extra)?;
        Ok(IssuerStack {
            host,
            shared,
            issuing_root,
            mock_root,
            tls_port,
            pebble,
            dir,
        })
    }

    /// The issuer URL.
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// Another host (not started) whose relay listens on `ip` (e.g. `127.0.0.2`).
    pub fn host(&self, name: &str, ip: &str) -> anyhow::Result<IssuerHost> {
        IssuerHost::new(self.dir.path(), name, ip, self.tls_port)
    }

    /// A client of the issuer that trusts only Pebble's root and reaches the issuer host
    /// at `ip`; each request on a new connection when `fresh_connections`.
    pub fn client(&self, ip: &str, fresh_connections: bool) -> anyhow::Result<reqwest::Client> {
        issuer_client(&self.issuing_root, ip, self.tls_port, fresh_connections)
    }

    /// How many certificates Pebble has issued so far (from its log).
    pub fn issued_count(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("pebble.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Issued certificate serial"))
            .count()
    }
}

/// A client of the issuer at `ip:port` trusting only the PEM roots in `root`.
pub fn issuer_client(
    root: &Path,
    ip: &str,
    port: u16,
    fresh_connections: bool,
) -> anyhow::Result<reqwest::Client> {
    let pem = std::fs::read(root)?;
    let addr: SocketAddr = format!("{ip}:{port}").parse()?;
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
        .resolve(ISSUER_HOST, addr)
        .tls_info(true)
        .timeout(Duration::from_secs(10));
    if fresh_connections {
        b = b.pool_max_idle_per_host(0);
    }
    Ok(b.build()?)
}

/// One host: an enclave (mock NSM) terminating the issuer's TLS on a Unix socket, and a
/// broker relaying `ip:tls_port` to it.
pub struct IssuerHost {
    /// Its directory (sockets, sealed seed, chain cache, logs).
    pub dir: PathBuf,
    /// The broker's mint API (`http://127.0.0.1:PORT`).
    pub mint_url: String,
    /// Where its issuer listener listens.
    pub issuer_listen: String,
    enclave: Option<Group>,
    broker: Option<Group>,
}

impl IssuerHost {
    /// A host in `parent/name` whose relay listens on `ip:tls_port` (not started).
    pub fn new(parent: &Path, name: &str, ip: &str, tls_port: u16) -> anyhow::Result<IssuerHost> {
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(IssuerHost {
            mint_url: format!("http://127.0.0.1:{}", unique_port()),
            issuer_listen: format!("{ip}:{tls_port}"),
            dir,
            enclave: None,
            broker: None,
        })
    }

    /// The enclave's wire socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("enclave.sock")
    }

    /// The enclave's TLS socket (`--tls-usock`).
    pub fn tls_socket(&self) -> PathBuf {
        self.dir.join("tls.sock")
    }

    /// The sealed seed file.
    pub fn sealed_seed(&self) -> PathBuf {
        self.dir.join("sealed-seed.bin")
    }

    /// The chain cache (`--issuer-chain-cache`, here the default beside the sealed seed).
    pub fn chain_cache(&self) -> PathBuf {
        self.dir.join("issuer-chain.pem")
    }

    /// Starts the enclave: mock NSM, parent-vouched mints, TLS with Pebble as its CA.
    pub fn start_enclave(&mut self, shared: &StandIns, pebble: &Pebble) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.socket());
        let _ = std::fs::remove_file(self.tls_socket());
        let mut enclave = Command::new(binary("agentkeys-enclave"));
        enclave
            .args(["--mock", "--usock"])
            .arg(self.socket())
            .arg("--tls-usock")
            .arg(self.tls_socket())
            .args(["--issuer", &shared.issuer])
            .args(["--kms-key-arn", ISSUER_KMS_KEY_ARN])
            .args(["--auth-mode", "parent-vouched"])
            .args(["--acme-directory", &pebble.directory])
            .arg("--acme-root")
            .arg(&pebble.listener_root)
            .env("AGENTKEYS_LOG", "info");
        self.enclave = Some(Group::spawn(enclave, &self.dir.join("enclave.log"))?);
        Ok(())
    }

    /// SIGKILLs the enclave.
    pub fn kill_enclave(&mut self) {
        if let Some(mut e) = self.enclave.take() {
            e.kill();
        }
    }

    /// Starts the broker, relaying to the enclave's TLS socket or to `enclave_tls`.
    pub fn start_broker(
        &mut self,
        shared: &StandIns,
        enclave_tls: Option<&Path>,
        extra: &[String],
    ) -> anyhow::Result<()> {
        let tls = enclave_tls.map_or_else(|| self.tls_socket(), Path::to_path_buf);
        let bind = self.mint_url.trim_start_matches("http://").to_string();
        let binary = binary("agentkeys-broker");
        let (socket, sealed_seed) = (self.socket(), self.sealed_seed());
        let mut serve = crate::broker_serve(&crate::BrokerHost {
            binary: &binary,
            issuer: &shared.issuer,
            bind: &bind,
            backend_url: &shared.backend_url,
            enclave_socket: &socket,
            sealed_seed: &sealed_seed,
            kms_key_arn: ISSUER_KMS_KEY_ARN,
            kms_url: &shared.kms_url,
        });
        serve
            .arg("--audit-db")
            .arg(self.dir.join("audit.db"))
            .args(["--issuer-listen", &self.issuer_listen])
            .arg("--enclave-tls")
            .arg(format!("unix:{}", tls.display()))
            .args(extra);
        self.broker = Some(Group::spawn(serve, &self.dir.join("broker.log"))?);
        Ok(())
    }

    /// SIGKILLs the broker (its issuer port closes with it).
    pub fn kill_broker(&mut self) {
        if let Some(mut b) = self.broker.take() {
            b.kill();
        }
    }

    /// `GET /readyz` of the mint API: the JSON, `None` when nothing answers.
    pub fn readyz(&self, http: &reqwest::blocking::Client) -> Option<serde_json::Value> {
        http.get(format!("{}/readyz", self.mint_url))
            .send()
            .ok()?
            .json()
            .ok()
    }

    /// Waits until `/readyz` shows the enclave serving a CA-issued chain; its
    /// `issuer_tls` member.
    pub fn wait_issued(
        &mut self,
        http: &reqwest::blocking::Client,
        timeout: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        self.wait_issuer_tls(http, timeout, |t| t["state"] == "issued")
    }

    /// Waits until `/readyz`'s `issuer_tls` member satisfies `done`; returns it.
    pub fn wait_issuer_tls(
        &mut self,
        http: &reqwest::blocking::Client,
        timeout: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(v) = self.readyz(http) {
                if v["checks"]["enclave"]["ok"] == true && done(&v["issuer_tls"]) {
                    return Ok(v["issuer_tls"].clone());
                }
                last = Some(v);
            }
            let broker_exited = self.broker.as_mut().is_some_and(Group::exited);
            let enclave_exited = self.enclave.as_mut().is_some_and(Group::exited);
            if broker_exited || enclave_exited {
                bail!(
                    "exited: broker {broker_exited}, enclave {enclave_exited}\n{}",
                    self.logs()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "issuer TLS not as expected within {timeout:?}: {last:?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A session bearer and a token minted through the mint API.
    pub fn mint(
        &self,
        shared: &StandIns,
        http: &reqwest::blocking::Client,
    ) -> anyhow::Result<String> {
        let bearer = shared.session(http, crate::WALLET)?;
        let v: serde_json::Value = http
            .post(format!("{}/v1/mint-oidc-jwt", self.mint_url))
            .bearer_auth(bearer)
            .send()
            .context("mint")?
            .json()?;
        v["jwt"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no jwt in {v}"))
    }

    /// The broker's and the enclave's logs so far.
    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "--- broker.log\n{}\n--- enclave.log\n{}",
            read("broker.log"),
            read("enclave.log")
        )
    }
}
