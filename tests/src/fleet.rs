//! A fleet from the shipped binaries: one session backend and one KMS stand-in shared by
//! every host, and per host an enclave child (`agentkeys-dev enclave-child -- --mock`) and
//! an `agentkeys-broker serve`, each broker on its own loopback address, all serving one
//! issuer and writing one PostgreSQL audit log, each in its own row chain.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail};

use crate::faults::Group;
use crate::{binary, closed_port, wait_for};

/// The KMS key every host's enclave is pinned to, in the KMS stand-in's own account.
pub const FLEET_KMS_KEY_ARN: &str =
    "arn:aws:kms:us-east-1:000000000000:key/6a1f0c2e-4b7d-4e93-a8c5-2f9d1b3e7a60";

/// The first `http://` URL a stand-in printed in its log (`--listen 127.0.0.1:0`).
pub fn printed_url(log: &Path, timeout: Duration) -> anyhow::Result<String> {
    wait_for(timeout, || {
        let t = std::fs::read_to_string(log).ok()?;
        let at = t.find("http://")?;
        Some(t[at..].chars().take_while(|c| !c.is_whitespace()).collect())
    })
    .map_err(|_| anyhow!("no URL printed in {}", log.display()))
}

/// What every host shares: the issuer, the stand-ins and the audit database.
pub struct Shared {
    /// The issuer all hosts serve (the load balancer's name; nothing listens there).
    pub issuer: String,
    /// Session backend stand-in (unsigned sessions: the enclaves run parent-vouched).
    pub backend_url: String,
    /// KMS stand-in, its keys kept in a state file.
    pub kms_url: String,
    /// `postgres://` URL of the one audit log.
    pub audit_db: String,
    _backend: Group,
    _kms: Group,
}

impl Shared {
    /// Starts the backend and KMS stand-ins (logs and KMS state under `dir`).
    pub fn start(dir: &Path, issuer: &str, audit_db: &str) -> anyhow::Result<Shared> {
        let dev = binary("agentkeys-dev");
        let mut backend = Command::new(&dev);
        backend.args(["stand-in", "backend", "--listen", "127.0.0.1:0"]);
        let backend = Group::spawn(backend, &dir.join("backend.log"))?;
        let mut kms = Command::new(&dev);
        kms.args(["stand-in", "kms", "--listen", "127.0.0.1:0"])
            .arg("--state-file")
            .arg(dir.join("kms-state.json"));
        let kms = Group::spawn(kms, &dir.join("kms.log"))?;
        Ok(Shared {
            issuer: issuer.to_string(),
            backend_url: printed_url(&backend.log, Duration::from_secs(30))?,
            kms_url: printed_url(&kms.log, Duration::from_secs(30))?,
            audit_db: audit_db.to_string(),
            _backend: backend,
            _kms: kms,
        })
    }

    /// A session bearer for `wallet` from the backend stand-in.
    pub fn session(&self, http: &reqwest::blocking::Client, wallet: &str) -> String {
        let v: serde_json::Value = http
            .post(format!("{}/session/create", self.backend_url))
            .json(&serde_json::json!({ "wallet": wallet }))
            .send()
            .expect("backend answers")
            .json()
            .expect("backend JSON");
        v["token"].as_str().expect("session token").to_string()
    }
}

/// One host: an enclave child and a broker, with its own directory, sealed-seed file,
/// loopback address and audit chain.
pub struct Host {
    /// Its audit chain id (`--audit-chain`).
    pub chain: String,
    /// Its broker's base URL.
    pub url: String,
    /// Its directory (socket, sealed seed, logs).
    pub dir: PathBuf,
    bind: String,
    enclave: Option<Group>,
    broker: Option<Group>,
}

impl Host {
    /// A host named `chain` whose broker listens on `127.0.0.<last_octet>` (not started).
    pub fn new(parent: &Path, chain: &str, last_octet: u8) -> anyhow::Result<Host> {
        let dir = parent.join(chain);
        std::fs::create_dir_all(&dir)?;
        let bind = format!("127.0.0.{last_octet}:{}", closed_port());
        Ok(Host {
            chain: chain.to_string(),
            url: format!("http://{bind}"),
            dir,
            bind,
            enclave: None,
            broker: None,
        })
    }

    /// The host's sealed-seed file (`--sealed-seed`).
    pub fn sealed_seed(&self) -> PathBuf {
        self.dir.join("sealed-seed.bin")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("enclave.sock")
    }

    /// Starts the enclave child, then the broker.
    pub fn start(&mut self, shared: &Shared) -> anyhow::Result<()> {
        let dev = binary("agentkeys-dev");
        let mut enclave = Command::new(&dev);
        enclave
            .args(["enclave-child", "--", "--mock", "--usock"])
            .arg(self.socket())
            .args([
                "--issuer",
                &shared.issuer,
                "--kms-key-arn",
                FLEET_KMS_KEY_ARN,
            ])
            .args(["--auth-mode", "parent-vouched"]);
        self.enclave = Some(Group::spawn(enclave, &self.dir.join("enclave.log"))?);

        let broker = binary("agentkeys-broker");
        let (socket, sealed_seed) = (self.socket(), self.sealed_seed());
        let mut serve = crate::broker_serve(&crate::BrokerHost {
            binary: &broker,
            issuer: &shared.issuer,
            bind: &self.bind,
            backend_url: &shared.backend_url,
            enclave_socket: &socket,
            sealed_seed: &sealed_seed,
            kms_key_arn: FLEET_KMS_KEY_ARN,
            kms_url: &shared.kms_url,
        });
        serve
            .arg("--dev-mode")
            .args(["--audit-chain", &self.chain])
            // The URL holds the password: the environment, not the command line.
            .env("BROKER_AUDIT_DB", &shared.audit_db);
        self.broker = Some(Group::spawn(serve, &self.dir.join("broker.log"))?);
        Ok(())
    }

    /// SIGKILLs the broker, then the enclave: the host is lost with requests in flight.
    pub fn kill(&mut self) {
        for mut group in [self.broker.take(), self.enclave.take()]
            .into_iter()
            .flatten()
        {
            group.kill();
        }
    }

    /// `GET /readyz`: status and JSON body, `None` when nothing answers.
    pub fn readyz(&self, http: &reqwest::blocking::Client) -> Option<(u16, serde_json::Value)> {
        let r = http.get(format!("{}/readyz", self.url)).send().ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().unwrap_or_default()))
    }

    /// Polls `/readyz` until it answers 200; fails with the host's logs when the broker
    /// exits or `timeout` passes.
    pub fn wait_ready(
        &mut self,
        http: &reqwest::blocking::Client,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some((200, _)) = self.readyz(http) {
                return Ok(());
            }
            if self.broker.as_mut().is_none_or(Group::exited) {
                bail!(
                    "{}: broker exited before ready:\n{}",
                    self.chain,
                    self.logs()
                );
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "{}: not ready within {timeout:?}: {:?}\n{}",
                    self.chain,
                    self.readyz(http),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The JWKS the host serves.
    pub fn jwks(&self, http: &reqwest::blocking::Client) -> serde_json::Value {
        http.get(format!("{}/.well-known/jwks.json", self.url))
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("{}: JWKS: {e}", self.chain))
    }

    /// The broker's and the enclave's logs so far.
    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "--- {} broker.log\n{}\n--- {} enclave.log\n{}",
            self.chain,
            read("broker.log"),
            self.chain,
            read("enclave.log")
        )
    }
}
