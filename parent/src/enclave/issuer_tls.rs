//! Keeping the issuer's certificate chain: the parent caches the public chain the enclave
//! serves, and hands it back after every unseal so that a restarted enclave (or another
//! enclave of the fleet, from the same sealed seed) serves it at once instead of ordering
//! a new one.
//!
//! After each successful unseal the keeper sends `IssuerTls` with the chain from the cache
//! file; the enclave serves it only if its leaf holds the enclave's own TLS key, names the
//! issuer host and is within its validity, and otherwise says why
//! (`cached_chain_refused`) and orders a new one. Then the keeper asks again every
//! [`POLL_INTERVAL`] (every [`POLL_INTERVAL_SELF_SIGNED`] while the enclave has no issued
//! chain yet, so that a new chain reaches the cache soon after issuance), and rewrites the
//! cache atomically whenever the chain served differs from it. Only public bytes cross:
//! the request carries a certificate chain and the answer a status and a chain.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentkeys_wire::{
    ClientError, EnclaveClient, IssuerTlsRequest, IssuerTlsStatus, Request, Response,
    WireErrorKind, ISSUER_TLS_SELF_SIGNED,
};
use tokio::sync::Notify;

use super::sealed_seed::write_atomically;

/// How often the parent asks the enclave for the chain it serves once one is issued (the
/// interval agreed with the enclave's side of `IssuerTls`): renewal starts a third of a
/// certificate's lifetime before expiry (days for a 90-day certificate), so a renewed
/// chain reaches the cache within 30 s of issuance.
pub const POLL_INTERVAL: Duration = Duration::from_secs(30);
/// How often the parent asks while the enclave serves a self-signed certificate: an
/// order takes seconds (Let's Encrypt validates TLS-ALPN-01 within seconds of the
/// request), so the issued chain is cached within 2 s of issuance, for a restart to use.
/// Each ask is one local call answered from the enclave's memory.
pub const POLL_INTERVAL_SELF_SIGNED: Duration = Duration::from_secs(2);
/// Largest cache file offered to the enclave. A chain of three certificates in PEM is
/// under 8 KiB even with RSA-4096 intermediates; 64 KiB is generous and stays far below
/// the wire's frame cap.
pub const MAX_CACHED_CHAIN_BYTES: u64 = 64 * 1024;
/// The cache file's mode: the chain is public (it is sent to every TLS client).
const CACHE_FILE_MODE: u32 = 0o644;

/// Why the keeper could not do its job this round.
#[derive(Debug, thiserror::Error)]
pub enum IssuerTlsError {
    /// The `IssuerTls` call failed.
    #[error("IssuerTls call: {0}")]
    Call(#[from] ClientError),
    /// The enclave answered something other than `IssuerTls`.
    #[error("the enclave answered {0} to IssuerTls")]
    Unexpected(&'static str),
    /// The cache file could not be read.
    #[error("cannot read the issuer chain cache {path}: {source}")]
    ReadCache {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The cache file is larger than any certificate chain.
    #[error("the issuer chain cache {path} is {actual} bytes, more than {max}; not offered")]
    CacheTooLarge {
        /// The file.
        path: PathBuf,
        /// Size found.
        actual: u64,
        /// [`MAX_CACHED_CHAIN_BYTES`].
        max: u64,
    },
    /// The cache file could not be written.
    #[error("cannot write the issuer chain cache {path}: {source}")]
    WriteCache {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// What the keeper knows, for `/readyz`.
#[derive(Clone, Debug, Default)]
pub struct IssuerTlsView {
    /// The enclave's last answer.
    pub status: Option<IssuerTlsStatus>,
    /// The keeper's own last failure (the call, the cache file), cleared by a success.
    pub error: Option<String>,
    /// The cache file.
    pub cache_path: PathBuf,
}

impl IssuerTlsView {
    /// The JSON shown under `issuer_tls` in `/readyz`.
    pub fn to_json(&self) -> serde_json::Value {
        let s = self.status.as_ref();
        serde_json::json!({
            "enabled": s.map(|s| s.enabled),
            "state": s.map(|s| s.state.as_str()),
            "hostname": s.map(|s| s.hostname.as_str()),
            "tls_spki_sha256": s.map(|s| s.tls_spki_sha256.as_str()),
            "not_after": s.and_then(|s| s.not_after),
            "acme_account_uri": s.and_then(|s| s.acme_account_uri.as_deref()),
            "last_error": s.and_then(|s| s.last_error.as_deref()),
            "cached_chain_refused": s.and_then(|s| s.cached_chain_refused.as_deref()),
            "chain_cache": self.cache_path.display().to_string(),
            "error": self.error,
        })
    }
}

/// Caches the issuer's certificate chain and offers it to the enclave after each unseal.
pub struct IssuerTlsKeeper {
    client: EnclaveClient,
    cache_path: PathBuf,
    /// Set by each unseal: the next call offers the cached chain.
    offer: AtomicBool,
    wake: Notify,
    view: Mutex<IssuerTlsView>,
    /// What was logged last of the enclave's `last_error`, so a lasting failure is
    /// logged once, not every poll.
    logged_error: Mutex<Option<String>>,
}

impl IssuerTlsKeeper {
    /// A keeper using `client`, caching to `cache_path`.
    pub fn new(client: EnclaveClient, cache_path: PathBuf) -> Arc<IssuerTlsKeeper> {
        Arc::new(IssuerTlsKeeper {
            client,
            view: Mutex::new(IssuerTlsView {
                cache_path: cache_path.clone(),
                ..IssuerTlsView::default()
            }),
            cache_path,
            offer: AtomicBool::new(false),
            wake: Notify::new(),
            logged_error: Mutex::new(None),
        })
    }

    /// The cache file.
    pub fn cache_path(&self) -> &Path {
        &self.cache_path
    }

    /// What the keeper knows now.
    pub fn view(&self) -> IssuerTlsView {
        self.view.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Called after each successful unseal: offer the cached chain now.
    pub fn unsealed(&self) {
        self.offer.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Starts the background task.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move { me.run().await })
    }

    async fn run(self: Arc<Self>) {
        loop {
            let wait = match self.step().await {
                Ok(status) if status.enabled && status.state == ISSUER_TLS_SELF_SIGNED => {
                    POLL_INTERVAL_SELF_SIGNED
                }
                Ok(_) => POLL_INTERVAL,
                Err(IssuerTlsError::Call(ClientError::Remote(e)))
                    if e.kind == WireErrorKind::NotUnsealed =>
                {
                    // The supervisor unseals and wakes the keeper.
                    POLL_INTERVAL
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?POLL_INTERVAL, "issuer TLS: the chain could not be checked");
                    POLL_INTERVAL
                }
            };
            let _ = tokio::time::timeout(wait, self.wake.notified()).await;
        }
    }

    /// One round: ask the enclave (offering the cached chain after an unseal), cache the
    /// chain it serves, note what went wrong.
    pub async fn step(&self) -> Result<IssuerTlsStatus, IssuerTlsError> {
        let offering = self.offer.swap(false, Ordering::AcqRel);
        let result = self.ask(offering).await;
        if result.is_err() && offering {
            // Offer again next time: the unseal this offer follows still needs it.
            self.offer.store(true, Ordering::Release);
        }
        if let Ok(mut v) = self.view.lock() {
            match &result {
                Ok(status) => {
                    v.status = Some(status.clone());
                    v.error = None;
                }
                Err(e) => v.error = Some(e.to_string()),
            }
        }
        result
    }

    async fn ask(&self, offering: bool) -> Result<IssuerTlsStatus, IssuerTlsError> {
        let cached_chain_pem = if offering { self.read_cache()? } else { None };
        let offered = cached_chain_pem.is_some();
        let reply = self
            .client
            .call(Request::IssuerTls(IssuerTlsRequest { cached_chain_pem }))
            .await?;
        let Response::IssuerTls(status) = reply else {
            return Err(IssuerTlsError::Unexpected(reply.name()));
        };
        self.report(&status, offered);
        if let Some(chain) = &status.chain_pem {
            self.store(chain, &status)?;
        }
        Ok(status)
    }

    /// The cached chain, if there is one.
    fn read_cache(&self) -> Result<Option<String>, IssuerTlsError> {
        let path = &self.cache_path;
        let read_err = |source| IssuerTlsError::ReadCache {
            path: path.clone(),
            source,
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        if meta.len() > MAX_CACHED_CHAIN_BYTES {
            return Err(IssuerTlsError::CacheTooLarge {
                path: path.clone(),
                actual: meta.len(),
                max: MAX_CACHED_CHAIN_BYTES,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Ok((!text.trim().is_empty()).then_some(text))
    }

    /// Rewrites the cache when the chain served differs from it.
    fn store(&self, chain: &str, status: &IssuerTlsStatus) -> Result<(), IssuerTlsError> {
        let current = std::fs::read(&self.cache_path).ok();
        if current.as_deref() == Some(chain.as_bytes()) {
            return Ok(());
        }
        write_atomically(&self.cache_path, chain.as_bytes(), CACHE_FILE_MODE).map_err(
            |source| IssuerTlsError::WriteCache {
                path: self.cache_path.clone(),
                source,
            },
        )?;
        tracing::info!(
            path = %self.cache_path.display(),
            hostname = %status.hostname,
            not_after = ?status.not_after,
            "issuer TLS: certificate chain cached"
        );
        Ok(())
    }

    /// Logs what the enclave reports: a refused cached chain, and each new ACME failure.
    fn report(&self, status: &IssuerTlsStatus, offered: bool) {
        if offered {
            match &status.cached_chain_refused {
                Some(why) => tracing::warn!(
                    path = %self.cache_path.display(),
                    reason = %why,
                    "issuer TLS: the enclave refused the cached chain; it orders a new one"
                ),
                None => tracing::info!(
                    path = %self.cache_path.display(),
                    state = %status.state,
                    "issuer TLS: cached chain offered to the enclave"
                ),
            }
        }
        let Ok(mut logged) = self.logged_error.lock() else {
            return;
        };
        if *logged != status.last_error {
            match &status.last_error {
                Some(e) => tracing::warn!(
                    hostname = %status.hostname,
                    error = %e,
                    "issuer TLS: the enclave's certificate order failed; it retries"
                ),
                None => tracing::info!(
                    hostname = %status.hostname,
                    state = %status.state,
                    "issuer TLS: the enclave's certificate order succeeded"
                ),
            }
            logged.clone_from(&status.last_error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    use agentkeys_wire::{Address, WireError, ISSUER_TLS_ISSUED};

    /// A stand-in enclave answering `IssuerTls` with what the test sets, recording the
    /// chains offered.
    struct FakeEnclave {
        offered: Arc<Mutex<Vec<Option<String>>>>,
        answer: Arc<Mutex<Result<IssuerTlsStatus, WireErrorKind>>>,
        keeper: Arc<IssuerTlsKeeper>,
        cache: PathBuf,
        _server: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    fn status(chain: Option<&str>) -> IssuerTlsStatus {
        IssuerTlsStatus {
            enabled: true,
            hostname: "issuer.example.com".into(),
            tls_spki_sha256: "ab".repeat(32),
            state: if chain.is_some() {
                ISSUER_TLS_ISSUED
            } else {
                ISSUER_TLS_SELF_SIGNED
            }
            .into(),
            chain_pem: chain.map(str::to_string),
            not_after: chain.map(|_| 1_900_000_000),
            acme_account_uri: Some("https://ca.example/acct/1".into()),
            last_error: None,
            cached_chain_refused: None,
        }
    }

    async fn fake_enclave() -> FakeEnclave {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("enclave.sock");
        let listener = Address::Unix(socket.clone()).listen().await.unwrap();
        let offered = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(Mutex::new(Ok(status(None))));
        let (o, a) = (offered.clone(), answer.clone());
        let server = tokio::spawn(agentkeys_wire::serve(listener, move |request| {
            let (o, a) = (o.clone(), a.clone());
            async move {
                match request {
                    Request::IssuerTls(r) => {
                        o.lock().unwrap().push(r.cached_chain_pem);
                        match a.lock().unwrap().clone() {
                            Ok(s) => Ok(Response::IssuerTls(s)),
                            Err(kind) => Err(WireError::new(kind, "refused by the test")),
                        }
                    }
                    other => Err(WireError::new(
                        WireErrorKind::InvalidRequest,
                        format!("unexpected {}", other.name()),
                    )),
                }
            }
        }));
        let client = EnclaveClient::new(Address::Unix(socket), 1, Duration::from_secs(5));
        let cache = dir.path().join("issuer-chain.pem");
        FakeEnclave {
            offered,
            answer,
            keeper: IssuerTlsKeeper::new(client, cache.clone()),
            cache,
            _server: server,
            _dir: dir,
        }
    }

    impl FakeEnclave {
        fn offered(&self) -> Vec<Option<String>> {
            self.offered.lock().unwrap().clone()
        }
        fn answer(&self, a: Result<IssuerTlsStatus, WireErrorKind>) {
            *self.answer.lock().unwrap() = a;
        }
    }

    const CHAIN_A: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    const CHAIN_B: &str = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n";

    #[tokio::test]
    async fn the_cached_chain_is_offered_once_after_each_unseal_and_never_otherwise() {
        let f = fake_enclave().await;
        std::fs::write(&f.cache, CHAIN_A).unwrap();
        f.keeper.step().await.unwrap();
        f.keeper.unsealed();
        f.keeper.step().await.unwrap();
        f.keeper.step().await.unwrap();
        f.keeper.unsealed();
        f.keeper.step().await.unwrap();
        assert_eq!(
            f.offered(),
            vec![
                None,
                Some(CHAIN_A.to_string()),
                None,
                Some(CHAIN_A.to_string())
            ]
        );
    }

    #[tokio::test]
    async fn no_cache_file_offers_nothing_and_an_oversized_one_is_not_sent() {
        let f = fake_enclave().await;
        f.keeper.unsealed();
        f.keeper.step().await.unwrap();
        assert_eq!(f.offered(), vec![None]);
        std::fs::write(&f.cache, vec![b'A'; MAX_CACHED_CHAIN_BYTES as usize + 1]).unwrap();
        f.keeper.unsealed();
        let e = f.keeper.step().await.unwrap_err();
        assert!(matches!(e, IssuerTlsError::CacheTooLarge { .. }), "{e}");
        assert_eq!(f.offered().len(), 1, "nothing sent");
        assert!(f.keeper.view().error.unwrap().contains("more than"));
    }

    #[tokio::test]
    async fn a_failed_call_keeps_the_offer_for_the_next_round() {
        let f = fake_enclave().await;
        std::fs::write(&f.cache, CHAIN_A).unwrap();
        f.answer(Err(WireErrorKind::NotUnsealed));
        f.keeper.unsealed();
        assert!(f.keeper.step().await.is_err());
        f.answer(Ok(status(None)));
        f.keeper.step().await.unwrap();
        assert_eq!(f.offered().last().unwrap().as_deref(), Some(CHAIN_A));
    }

    #[tokio::test]
    async fn the_cache_is_rewritten_when_the_served_chain_changes_and_only_then() {
        let f = fake_enclave().await;
        f.keeper.step().await.unwrap();
        assert!(!f.cache.exists(), "nothing cached while self-signed");
        f.answer(Ok(status(Some(CHAIN_A))));
        f.keeper.step().await.unwrap();
        assert_eq!(std::fs::read_to_string(&f.cache).unwrap(), CHAIN_A);
        let inode = std::fs::metadata(&f.cache).unwrap().ino();
        f.keeper.step().await.unwrap();
        assert_eq!(
            std::fs::metadata(&f.cache).unwrap().ino(),
            inode,
            "the same chain is not written again"
        );
        f.answer(Ok(status(Some(CHAIN_B))));
        f.keeper.step().await.unwrap();
        assert_eq!(std::fs::read_to_string(&f.cache).unwrap(), CHAIN_B);
        let names: Vec<_> = std::fs::read_dir(f.cache.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            !names.iter().any(|n| n.contains(".tmp-")),
            "no temporary file left: {names:?}"
        );
    }

    #[tokio::test]
    async fn what_the_enclave_reports_is_shown() {
        let f = fake_enclave().await;
        std::fs::write(&f.cache, CHAIN_A).unwrap();
        let mut s = status(None);
        s.cached_chain_refused = Some("the leaf's key is not this enclave's TLS key".into());
        s.last_error = Some("newOrder: connection refused".into());
        f.answer(Ok(s));
        f.keeper.unsealed();
        f.keeper.step().await.unwrap();
        let j = f.keeper.view().to_json();
        assert_eq!(j["state"], ISSUER_TLS_SELF_SIGNED);
        assert_eq!(
            j["cached_chain_refused"],
            "the leaf's key is not this enclave's TLS key"
        );
        assert_eq!(j["last_error"], "newOrder: connection refused");
        assert_eq!(j["chain_cache"], f.cache.display().to_string());
        assert!(j["error"].is_null());
        // A refused chain stays in the file until the enclave serves another.
        assert_eq!(std::fs::read_to_string(&f.cache).unwrap(), CHAIN_A);
    }
}
