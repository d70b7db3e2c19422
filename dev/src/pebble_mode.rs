//! `agentkeys-dev dev --acme pebble`: the dev stack with the issuer's TLS ending inside
//! the enclave, as in production, with Pebble (Let's Encrypt's test CA, Debian package
//! `pebble`) as the CA.
//!
//! Pebble validates TLS-ALPN-01 by connecting to the issuer host on its `tlsPort`, which
//! its DNS (`pebble-challtestsrv`) resolves to 127.0.0.1: so the broker's issuer listener
//! is `127.0.0.1:<tls port>`, relayed to the enclave's TLS socket in the data directory,
//! and the issuer is `https://issuer.agentkeys.test:<tls port>`. The mint API stays plain
//! HTTP on loopback, or HTTPS with a certificate of the stack's own with `--api-tls`
//! ([`crate::api_tls`]). Without `--acme` the dev stack is unchanged (plain HTTP issuer).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::ValueEnum;

use crate::standins::pebble::{missing, Pebble, PebbleOptions};

/// The issuer host of the Pebble mode (Pebble's DNS answers 127.0.0.1 for every name).
pub const ISSUER_HOST: &str = "issuer.agentkeys.test";
/// Pebble's issuing root in the data directory: what clients of the issuer trust.
pub const PEBBLE_ROOT_FILE: &str = "pebble-issuing-root.pem";

/// Where the issuer's certificate comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum AcmeMode {
    /// No issuer TLS: the issuer is the broker's plain-HTTP loopback URL.
    #[default]
    None,
    /// The enclave terminates the issuer's TLS with a certificate from a local Pebble.
    Pebble,
}

/// A running Pebble and what the stack needs to use it.
pub struct PebbleIssuer {
    /// The issuer URL, `https://issuer.agentkeys.test:<tls port>`.
    pub issuer: String,
    /// The issuer listener's address (`127.0.0.1:<tls port>`), bound.
    pub listener: std::net::TcpListener,
    /// The enclave's TLS socket.
    pub tls_socket: PathBuf,
    /// Pebble's issuing root (PEM file).
    pub root: PathBuf,
    /// The CA (stopped on drop).
    pub pebble: Pebble,
}

/// What the ready file says about the issuer's TLS.
#[derive(serde::Serialize, Clone, Debug)]
pub struct IssuerTlsReady {
    /// The issuer URL.
    pub issuer_url: String,
    /// The host clients must resolve to 127.0.0.1.
    pub issuer_host: String,
    /// The issuer port.
    pub tls_port: u16,
    /// Pebble's issuing root: the CA bundle of the issuer's clients.
    pub pebble_root_pem: PathBuf,
    /// Pebble's ACME directory.
    pub acme_directory: String,
}

impl PebbleIssuer {
    /// Starts Pebble for an issuer on `tls_port` (0: any free port), its files in
    /// `data_dir`; a clear error when Pebble is not installed.
    pub async fn start(data_dir: &Path, tls_port: u16) -> anyhow::Result<PebbleIssuer> {
        if let Some(reason) = missing() {
            bail!("--acme pebble needs Pebble: {reason}; install it (apt-get install pebble) or run the dev stack without --acme");
        }
        let listener = std::net::TcpListener::bind(("127.0.0.1", tls_port))
            .with_context(|| format!("cannot listen on 127.0.0.1:{tls_port} for the issuer"))?;
        let port = listener.local_addr()?.port();
        let dir = data_dir.join("pebble");
        std::fs::create_dir_all(&dir)?;
        let pebble = Pebble::start(&PebbleOptions {
            tls_port: port,
            certificate_validity_seconds: None,
            dir,
        })?;
        let root = data_dir.join(PEBBLE_ROOT_FILE);
        crate::stack::write_atomically(&root, pebble.issuing_root_pem().await?.as_bytes())?;
        Ok(PebbleIssuer {
            issuer: format!("https://{ISSUER_HOST}:{port}"),
            listener,
            tls_socket: data_dir.join("enclave-tls.sock"),
            root,
            pebble,
        })
    }

    /// The issuer port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The enclave's flags for its TLS: the socket, the CA and the CA's listener root.
    pub fn enclave_args(&self) -> Vec<String> {
        vec![
            "--tls-usock".to_string(),
            self.tls_socket.display().to_string(),
            "--acme-directory".to_string(),
            self.pebble.directory.clone(),
            "--acme-root".to_string(),
            self.pebble.listener_root.display().to_string(),
        ]
    }

    /// The broker's issuer listener: this port relayed to the enclave's TLS socket, the
    /// chain cached in the data directory.
    pub fn listen_config(
        &self,
        data_dir: &Path,
    ) -> agentkeys_broker::relay::config::IssuerListenConfig {
        let listen = self
            .listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        agentkeys_broker::relay::config::IssuerListenConfig {
            listen,
            relay: agentkeys_broker::relay::RelayConfig::new(agentkeys_wire::Address::Unix(
                self.tls_socket.clone(),
            )),
            chain_cache: data_dir.join(agentkeys_broker::relay::config::DEFAULT_CHAIN_CACHE_FILE),
        }
    }

    /// For the ready file.
    pub fn ready(&self) -> IssuerTlsReady {
        IssuerTlsReady {
            issuer_url: self.issuer.clone(),
            issuer_host: ISSUER_HOST.to_string(),
            tls_port: self.port(),
            pebble_root_pem: self.root.clone(),
            acme_directory: self.pebble.directory.clone(),
        }
    }
}

/// The "try next" lines of the Pebble mode; `mint_api_ca` is the CA of the mint API's
/// own TLS (`--api-tls`).
pub fn next_steps(
    t: &IssuerTlsReady,
    mint_api: &str,
    mint_api_ca: Option<&Path>,
    mock_root: &Path,
    measurements: &Path,
) -> String {
    let resolve = format!("{}:{}:127.0.0.1", t.issuer_host, t.tls_port);
    let mint_api_ca = mint_api_ca.map_or_else(String::new, |ca| {
        format!("  (its own TLS, CA {}: curl --cacert)", ca.display())
    });
    format!(
        r#"
The issuer's TLS ends inside the (mock) enclave, with a certificate from Pebble:

  issuer    {issuer}  (relayed, unread, by the broker to the enclave)
  mint API  {mint_api}{mint_api_ca}
  CA root   {root}

  # 6. fetch the JWKS over the enclave's TLS (Pebble's root as the CA bundle)
  curl --cacert {root} --resolve {resolve} {issuer}/.well-known/jwks.json

  # 7. audit the issuer: the TLS key of the handshake must be the attested one
  cargo run -p agentkeys-attestation --bin agentkeys-attest -- verify --issuer {issuer} \
      --cacert {root} --resolve {resolve} \
      --allow-mock-root --root {mock_root} --measurements {measurements}

  # 8. the CAA record for the enclave's attested ACME account
  cargo run -p agentkeys-broker --features mock-root -- caa-record --issuer {issuer} \
      --cacert {root} --resolve {resolve} \
      --allow-mock-root --root {mock_root} --measurements {measurements}
"#,
        issuer = t.issuer_url,
        root = t.pebble_root_pem.display(),
        mock_root = mock_root.display(),
        measurements = measurements.display(),
    )
}
