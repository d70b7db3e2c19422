//! The issuer's TLS state shared by the accept loop, the ACME loop and the wire handler:
//! the keys (once unsealed), the configuration served now, a pending TLS-ALPN-01
//! challenge, and what the parent is told.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use agentkeys_wire::{IssuerTlsStatus, ISSUER_TLS_ISSUED, ISSUER_TLS_SELF_SIGNED};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::sync::Notify;

use super::certs::{self, CertError};
use super::chain::{self, CheckedChain};
use super::keys::IssuerTlsKeys;
use crate::config::IssuerTlsConfig;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737 section 6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// The ALPN protocol of the issuer routes.
pub const HTTP11_ALPN: &[u8] = b"http/1.1";

/// Always the same certified key, whatever the ClientHello (the SNI is checked before).
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A rustls server configuration presenting `certified`, offering `alpn`, built on
/// `provider` (never a process default).
pub fn server_config(
    provider: &Arc<CryptoProvider>,
    certified: Arc<CertifiedKey>,
    alpn: &[u8],
) -> Result<Arc<ServerConfig>, CertError> {
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(certified)));
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

/// What the issuer's TLS presents now.
#[derive(Debug)]
pub struct Serving {
    /// The configuration of `http/1.1` connections.
    pub config: Arc<ServerConfig>,
    /// The CA-issued chain (PEM, leaf first); `None` while self-signed.
    pub chain_pem: Option<String>,
    /// The leaf's notBefore (CA-issued chains only).
    pub not_before: Option<u64>,
    /// The leaf's notAfter (CA-issued chains only).
    pub not_after: Option<u64>,
}

#[derive(Debug, Default)]
struct Report {
    account_uri: Option<String>,
    last_error: Option<String>,
    cached_chain_refused: Option<String>,
}

/// The issuer's TLS of one enclave.
pub struct IssuerTls {
    config: IssuerTlsConfig,
    provider: Arc<CryptoProvider>,
    keys: OnceLock<Arc<IssuerTlsKeys>>,
    serving: RwLock<Option<Arc<Serving>>>,
    challenge: RwLock<Option<Arc<ServerConfig>>>,
    report: Mutex<Report>,
    changed: Notify,
    /// Set once the parent has asked for the issuer TLS status after unseal (offering
    /// its cached chain, or saying it has none).
    offered: AtomicBool,
    offer: Notify,
}

impl std::fmt::Debug for IssuerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerTls")
            .field("hostname", &self.config.hostname)
            .field("keys", &self.keys.get().map(|_| "<derived>"))
            .finish()
    }
}

impl IssuerTls {
    /// The issuer's TLS for `config`, with the aws-lc-rs provider. Serves nothing until
    /// [`install_keys`](Self::install_keys).
    pub fn new(config: IssuerTlsConfig) -> IssuerTls {
        IssuerTls {
            config,
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            keys: OnceLock::new(),
            serving: RwLock::new(None),
            challenge: RwLock::new(None),
            report: Mutex::new(Report::default()),
            changed: Notify::new(),
            offered: AtomicBool::new(false),
            offer: Notify::new(),
        }
    }

    /// Notes that the parent has made its offer (a cached chain or none), so the ACME
    /// client need not wait for it any longer.
    pub fn note_offer(&self) {
        self.offered.store(true, Ordering::SeqCst);
        self.offer.notify_waiters();
    }

    /// Waits until the parent has made its offer, or `window` has passed; says which.
    pub async fn wait_offer(&self, window: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.offer.notified();
                if self.offered.load(Ordering::SeqCst) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(window, wait).await.is_ok()
    }

    /// The configuration.
    pub fn config(&self) -> &IssuerTlsConfig {
        &self.config
    }

    /// The issuer host.
    pub fn hostname(&self) -> &str {
        &self.config.hostname
    }

    /// The crypto provider of every TLS configuration (server and client).
    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// Takes the keys derived at unseal (once: the seed of a running enclave never
    /// changes) and starts serving a self-signed certificate for the TLS key.
    pub fn install_keys(&self, keys: Arc<IssuerTlsKeys>) -> Result<(), CertError> {
        if self.keys.get().is_some() {
            return Ok(());
        }
        let cert = certs::self_signed(&keys.tls, self.hostname())?;
        let certified = certs::certified_key(&keys.tls, vec![cert])?;
        let config = server_config(&self.provider, certified, HTTP11_ALPN)?;
        if self.keys.set(keys).is_err() {
            return Ok(());
        }
        self.set_serving(Serving {
            config,
            chain_pem: None,
            not_before: None,
            not_after: None,
        });
        tracing::info!(hostname = %self.hostname(), "issuer TLS serving a self-signed certificate until the CA certifies the key");
        self.changed.notify_waiters();
        Ok(())
    }

    /// The keys, once unsealed.
    pub fn keys(&self) -> Option<Arc<IssuerTlsKeys>> {
        self.keys.get().cloned()
    }

    /// Waits until the keys are installed.
    pub async fn wait_keys(&self) -> Arc<IssuerTlsKeys> {
        loop {
            let notified = self.changed.notified();
            if let Some(k) = self.keys() {
                return k;
            }
            notified.await;
        }
    }

    /// Waits for a change (keys installed, a chain served).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// What `http/1.1` connections are served now (`None` before unseal).
    pub fn serving(&self) -> Option<Arc<Serving>> {
        self.serving.read().ok().and_then(|s| s.clone())
    }

    fn set_serving(&self, serving: Serving) {
        if let Ok(mut s) = self.serving.write() {
            *s = Some(Arc::new(serving));
        }
    }

    /// Serves a checked CA-issued chain.
    pub fn serve_chain(&self, chain: CheckedChain) -> Result<(), CertError> {
        let Some(keys) = self.keys() else {
            return Err(CertError::Rustls("no TLS key yet".into()));
        };
        let certified = certs::certified_key(&keys.tls, chain.der)?;
        let config = server_config(&self.provider, certified, HTTP11_ALPN)?;
        tracing::info!(hostname = %self.hostname(), not_after = chain.not_after, "issuer TLS serving a CA-issued chain");
        self.set_serving(Serving {
            config,
            chain_pem: Some(chain.pem),
            not_before: Some(chain.not_before),
            not_after: Some(chain.not_after),
        });
        self.changed.notify_waiters();
        Ok(())
    }

    /// Considers a chain the parent cached: served if it passes [`chain::check_chain`]
    /// and lasts longer than the one served now; otherwise the reason is recorded (and
    /// returned) for the parent.
    pub fn offer_cached(&self, pem: &str, now: u64) -> Option<String> {
        let Some(keys) = self.keys() else {
            return Some("the seed is not unsealed yet".into());
        };
        let refused = match chain::check_chain(pem, &keys.tls.spki_sha256(), self.hostname(), now) {
            Err(e) => Some(e.to_string()),
            Ok(checked) => {
                let current = self.serving().and_then(|s| s.not_after);
                if current.is_some_and(|c| c >= checked.not_after) {
                    None
                } else {
                    match self.serve_chain(checked) {
                        Ok(()) => None,
                        Err(e) => Some(e.to_string()),
                    }
                }
            }
        };
        if let Some(reason) = &refused {
            tracing::warn!(reason = %reason, "cached issuer chain refused");
        }
        if let Ok(mut r) = self.report.lock() {
            r.cached_chain_refused = refused.clone();
        }
        refused
    }

    /// Sets (or clears) the pending TLS-ALPN-01 challenge configuration.
    pub fn set_challenge(&self, config: Option<Arc<ServerConfig>>) {
        if let Ok(mut c) = self.challenge.write() {
            *c = config;
        }
    }

    /// The `acme-tls/1` configuration of a pending challenge, if any.
    pub fn challenge(&self) -> Option<Arc<ServerConfig>> {
        self.challenge.read().ok().and_then(|c| c.clone())
    }

    /// Records the ACME account URL.
    pub fn set_account_uri(&self, uri: String) {
        if let Ok(mut r) = self.report.lock() {
            r.account_uri = Some(uri);
        }
    }

    /// The ACME account URL, once known.
    pub fn account_uri(&self) -> Option<String> {
        self.report.lock().ok().and_then(|r| r.account_uri.clone())
    }

    /// Records the outcome of an ACME attempt (`None` = success).
    pub fn set_last_error(&self, error: Option<String>) {
        if let Ok(mut r) = self.report.lock() {
            r.last_error = error;
        }
    }

    /// The last ACME failure.
    pub fn last_error(&self) -> Option<String> {
        self.report.lock().ok().and_then(|r| r.last_error.clone())
    }

    /// When the served certificate should be renewed (UNIX seconds): now while
    /// self-signed, else `renew_before` (or a third of its lifetime) before notAfter.
    pub fn renew_at(&self) -> u64 {
        let Some(serving) = self.serving() else {
            return 0;
        };
        match (serving.not_before, serving.not_after) {
            (Some(nb), Some(na)) => {
                let before = self
                    .config
                    .renew_before
                    .map(|d| d.as_secs())
                    .unwrap_or_else(|| na.saturating_sub(nb) / 3);
                na.saturating_sub(before)
            }
            _ => 0,
        }
    }

    /// The status the parent reads (public fields only).
    pub fn status(&self) -> IssuerTlsStatus {
        let serving = self.serving();
        let report = self
            .report
            .lock()
            .map(|r| {
                (
                    r.account_uri.clone(),
                    r.last_error.clone(),
                    r.cached_chain_refused.clone(),
                )
            })
            .unwrap_or_default();
        let chain_pem = serving.as_ref().and_then(|s| s.chain_pem.clone());
        IssuerTlsStatus {
            enabled: true,
            hostname: self.hostname().to_string(),
            tls_spki_sha256: self
                .keys()
                .map(|k| hex::encode(k.tls.spki_sha256()))
                .unwrap_or_default(),
            state: if chain_pem.is_some() {
                ISSUER_TLS_ISSUED
            } else {
                ISSUER_TLS_SELF_SIGNED
            }
            .to_string(),
            chain_pem,
            not_after: serving.as_ref().and_then(|s| s.not_after),
            acme_account_uri: report.0,
            last_error: report.1,
            cached_chain_refused: report.2,
        }
    }
}
