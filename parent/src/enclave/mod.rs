//! The parent's view of the enclave: a multiplexed [`EnclaveClient`], unsealing at
//! start-up and after an enclave restart (a background supervisor), the published JWKS
//! and attestation document, and the mapping of enclave failures to API errors.

pub mod issuer_tls;
pub mod sealed_seed;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use agentkeys_wire::{
    Attestation, AuditCheckpoint, AwsCredentials, ClientError, EnclaveClient, EnclaveStatus,
    MintJwtRequest, MintedJwt, UnsealRequest, WalletProof, WireErrorKind,
};
use bytes::Bytes;
use tokio::sync::Notify;

use crate::audit::{AuditEvent, AuditStore, NewAuditRow, Outcome};
use crate::config::{BrokerConfig, KmsCredentials};
use crate::http::error::ApiError;

/// Shortest wait between failed supervisor attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between failed supervisor attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a cached (nonce-less) attestation document is served before it is refreshed:
/// well inside the 3-hour life of a Nitro leaf certificate (`docs/attestation.md`,
/// "Certificate path").
const ATTESTATION_REFRESH: Duration = Duration::from_secs(600);

/// What `Unseal` needs, besides the sealed seed read from disk.
#[derive(Clone, Debug)]
pub struct UnsealConfig {
    /// KMS region.
    pub region: String,
    /// KMS key id.
    pub kms_key_id: String,
    /// KMS endpoint override.
    pub kms_endpoint: Option<String>,
    /// Credentials lent to the enclave.
    pub credentials: KmsCredentials,
    /// Sealed seed file.
    pub sealed_seed_path: PathBuf,
}

impl UnsealConfig {
    /// From the broker configuration.
    pub fn from_config(c: &BrokerConfig) -> UnsealConfig {
        UnsealConfig {
            region: c.kms_region.clone(),
            kms_key_id: c.kms_key_id.clone(),
            kms_endpoint: c.kms_endpoint.clone(),
            credentials: c.kms_credentials.clone(),
            sealed_seed_path: c.sealed_seed.clone(),
        }
    }
}

/// The JWKS and attestation the enclave published, as served.
#[derive(Debug)]
pub struct Published {
    /// The exact JWKS bytes.
    pub jwks: Bytes,
    /// Body of `GET /.well-known/nitro-attestation` without a nonce.
    pub attestation_body: Bytes,
    /// Kids in the JWKS.
    pub kids: Vec<String>,
    /// Enclave epoch when fetched.
    pub epoch: u64,
    /// When fetched.
    pub fetched: Instant,
}

/// JSON body for an attestation answer: one shape for the broker and the enclave.
pub use agentkeys_wire::attestation_json;

/// Supervisor state and the client.
pub struct EnclaveManager {
    client: EnclaveClient,
    unseal: UnsealConfig,
    /// Where each boot's `enclave_unsealed` row goes.
    audit: Arc<dyn AuditStore>,
    /// The epoch whose `enclave_unsealed` row is durable.
    recorded_epoch: Mutex<Option<u64>>,
    interval: Duration,
    ready: AtomicBool,
    mock: AtomicBool,
    /// Whether the enclave takes the parent's word for the wallet (`parent-vouched`
    /// only), as its last `Status` said.
    vouched_only: AtomicBool,
    epoch: AtomicU64,
    unseals: AtomicU64,
    published: RwLock<Option<Arc<Published>>>,
    last_error: Mutex<String>,
    wake: Notify,
    /// The issuer certificate chain's keeper, told of each unseal.
    issuer_tls: OnceLock<Arc<issuer_tls::IssuerTlsKeeper>>,
}

/// Why unsealing or refreshing failed.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// The enclave call failed.
    #[error("{step}: {source}")]
    Enclave {
        /// Which step.
        step: &'static str,
        /// Cause.
        #[source]
        source: ClientError,
    },
    /// The sealed seed file.
    #[error(transparent)]
    Seed(#[from] sealed_seed::SeedFileError),
    /// The boot's `enclave_unsealed` row could not be made durable, so it does not serve.
    #[error("audit: the enclave_unsealed row could not be written: {0}")]
    Audit(String),
    /// No KMS credentials could be resolved.
    #[error("KMS credentials: {0}")]
    Credentials(String),
    /// The enclave says unsealed after Unseal succeeded, but reports otherwise.
    #[error("enclave still sealed after Unseal")]
    StillSealed,
}

impl EnclaveManager {
    /// A manager; call [`EnclaveManager::spawn_supervisor`] to start unsealing.
    pub fn new(
        client: EnclaveClient,
        unseal: UnsealConfig,
        interval: Duration,
        audit: Arc<dyn AuditStore>,
    ) -> Arc<Self> {
        Arc::new(EnclaveManager {
            client,
            unseal,
            audit,
            recorded_epoch: Mutex::new(None),
            interval,
            ready: AtomicBool::new(false),
            mock: AtomicBool::new(false),
            vouched_only: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            unseals: AtomicU64::new(0),
            published: RwLock::new(None),
            last_error: Mutex::new("not yet contacted".to_string()),
            wake: Notify::new(),
            issuer_tls: OnceLock::new(),
        })
    }

    /// Tells `keeper` of every unseal from now on (once; a second keeper is ignored),
    /// and of the one that already happened, if any.
    pub fn attach_issuer_tls(&self, keeper: Arc<issuer_tls::IssuerTlsKeeper>) {
        if self.issuer_tls.set(keeper.clone()).is_ok() && self.unseal_count() > 0 {
            keeper.unsealed();
        }
    }

    /// The client the manager calls the enclave with.
    pub(crate) fn client(&self) -> &EnclaveClient {
        &self.client
    }

    /// The issuer certificate chain's keeper, when the issuer's TLS is relayed.
    pub fn issuer_tls(&self) -> Option<&Arc<issuer_tls::IssuerTlsKeeper>> {
        self.issuer_tls.get()
    }

    /// Whether the enclave is unsealed and its JWKS published.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Why the enclave is not ready (the last failure).
    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|_| "unknown".into())
    }

    /// How many successful unseals happened (genesis or re-open).
    pub fn unseal_count(&self) -> u64 {
        self.unseals.load(Ordering::Relaxed)
    }

    /// The current published JWKS/attestation.
    pub fn published(&self) -> Option<Arc<Published>> {
        self.published.read().ok().and_then(|p| p.clone())
    }

    /// Whether the enclave reported mock mode.
    pub fn is_mock(&self) -> bool {
        self.mock.load(Ordering::Relaxed)
    }

    fn mark_down(&self, why: String) {
        let was = self.ready.swap(false, Ordering::AcqRel);
        if was {
            tracing::warn!(reason = %why, "enclave not ready");
        }
        if let Ok(mut e) = self.last_error.lock() {
            *e = why;
        }
        self.wake.notify_one();
    }

    /// Starts the background supervisor.
    pub fn spawn_supervisor(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move { me.supervise().await })
    }

    async fn supervise(self: Arc<Self>) {
        let mut backoff = BACKOFF_MIN;
        let mut last_logged = String::new();
        loop {
            match self.ensure_ready().await {
                Ok(()) => {
                    backoff = BACKOFF_MIN;
                    last_logged.clear();
                    let _ = tokio::time::timeout(self.interval, self.wake.notified()).await;
                }
                Err(e) => {
                    let why = e.to_string();
                    if why != last_logged {
                        tracing::warn!(reason = %why, retry_in = ?backoff, "enclave not ready; retrying");
                        last_logged = why.clone();
                    }
                    self.mark_down(why);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// One supervisor step: status, unseal if needed, refresh the published documents.
    pub async fn ensure_ready(&self) -> Result<(), SuperviseError> {
        let enclave = |step| move |source| SuperviseError::Enclave { step, source };
        let mut status = self.client.status().await.map_err(enclave("Status"))?;
        self.mock.store(status.mock, Ordering::Relaxed);
        self.vouched_only
            .store(status.auth_modes == ["parent-vouched"], Ordering::Relaxed);
        if !status.unsealed {
            if self.ready.load(Ordering::Acquire) {
                tracing::warn!("enclave restarted (sealed); re-unsealing");
            }
            self.ready.store(false, Ordering::Release);
            self.do_unseal().await?;
            status = self.client.status().await.map_err(enclave("Status"))?;
            if !status.unsealed {
                return Err(SuperviseError::StillSealed);
            }
        }
        self.record_boot(&status).await?;
        let stale = match self.published() {
            None => true,
            Some(p) => {
                p.epoch != status.epoch
                    || p.kids != status.kids
                    || p.fetched.elapsed() > ATTESTATION_REFRESH
            }
        };
        if stale {
            let a = self.client.attest(None).await.map_err(enclave("Attest"))?;
            let body = attestation_json(&a, None, status.mock).to_string();
            let p = Published {
                jwks: Bytes::from(a.jwks.clone()),
                attestation_body: Bytes::from(body),
                kids: a.kids.clone(),
                epoch: status.epoch,
                fetched: Instant::now(),
            };
            if let Ok(mut slot) = self.published.write() {
                *slot = Some(Arc::new(p));
            }
        }
        self.epoch.store(status.epoch, Ordering::Relaxed);
        if !self.ready.swap(true, Ordering::AcqRel) {
            tracing::info!(
                epoch = status.epoch,
                active_kid = ?status.active_kid,
                mock = status.mock,
                "enclave ready"
            );
        }
        Ok(())
    }

    /// Writes the `enclave_unsealed` row of this boot once, before it serves: the boot's
    /// epoch and module id, which an auditor matches against CloudTrail's attested KMS
    /// calls to find boots the log does not show.
    async fn record_boot(&self, status: &EnclaveStatus) -> Result<(), SuperviseError> {
        let recorded = self.recorded_epoch.lock().map(|r| *r).unwrap_or(None);
        if recorded == Some(status.epoch) {
            return Ok(());
        }
        let mut row = NewAuditRow::new(AuditEvent::EnclaveUnsealed, Outcome::Success)
            .detail(format!("module_id={}", status.module_id));
        row.enclave_epoch = Some(status.epoch);
        row.kid = status.active_kid.clone();
        self.audit
            .append(row)
            .await
            .map_err(|e| SuperviseError::Audit(e.to_string()))?;
        if let Ok(mut r) = self.recorded_epoch.lock() {
            *r = Some(status.epoch);
        }
        Ok(())
    }

    async fn credentials(&self) -> Result<AwsCredentials, SuperviseError> {
        match &self.unseal.credentials {
            KmsCredentials::Static(c) => Ok(c.clone()),
            KmsCredentials::DefaultChain => {
                use aws_credential_types::provider::ProvideCredentials;
                let loaded = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(aws_config::Region::new(self.unseal.region.clone()))
                    .load()
                    .await;
                let provider = loaded.credentials_provider().ok_or_else(|| {
                    SuperviseError::Credentials(
                        "no credentials provider in the default chain".into(),
                    )
                })?;
                let c = provider
                    .provide_credentials()
                    .await
                    .map_err(|e| SuperviseError::Credentials(e.to_string()))?;
                Ok(AwsCredentials {
                    access_key_id: c.access_key_id().to_string(),
                    secret_access_key: c.secret_access_key().to_string(),
                    session_token: c.session_token().map(str::to_string),
                })
            }
        }
    }

    async fn do_unseal(&self) -> Result<(), SuperviseError> {
        let sealed_seed = sealed_seed::read_sealed_seed(&self.unseal.sealed_seed_path)?;
        let had_seed = sealed_seed.is_some();
        let request = UnsealRequest {
            region: self.unseal.region.clone(),
            kms_key_id: self.unseal.kms_key_id.clone(),
            kms_endpoint: self.unseal.kms_endpoint.clone(),
            credentials: self.credentials().await?,
            sealed_seed,
        };
        let started = Instant::now();
        let result = match self.client.unseal(request).await {
            Ok(r) => r,
            Err(ClientError::Remote(e)) if e.kind == WireErrorKind::AlreadyUnsealed => {
                return Ok(());
            }
            Err(source) => {
                return Err(SuperviseError::Enclave {
                    step: "Unseal",
                    source,
                })
            }
        };
        if result.genesis || !had_seed {
            sealed_seed::write_sealed_seed(&self.unseal.sealed_seed_path, &result.sealed_seed)?;
            tracing::info!(
                path = %self.unseal.sealed_seed_path.display(),
                "genesis: sealed seed stored"
            );
        }
        self.unseals.fetch_add(1, Ordering::Relaxed);
        if let Some(keeper) = self.issuer_tls.get() {
            keeper.unsealed();
        }
        tracing::info!(
            active_kid = %result.active_kid,
            genesis = result.genesis,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "enclave unsealed"
        );
        Ok(())
    }

    fn map_error(&self, e: ClientError) -> ApiError {
        match e {
            ClientError::Remote(w) => match w.kind {
                WireErrorKind::InvalidWallet | WireErrorKind::InvalidRequest => {
                    ApiError::EnclaveRefused(w.to_string())
                }
                WireErrorKind::Unauthorized => ApiError::ProofRefused(w.message),
                _ => {
                    let msg = w.to_string();
                    if w.kind == WireErrorKind::NotUnsealed {
                        self.mark_down(msg.clone());
                    }
                    ApiError::EnclaveUnavailable(msg)
                }
            },
            other => {
                let msg = other.to_string();
                self.mark_down(msg.clone());
                ApiError::EnclaveUnavailable(msg)
            }
        }
    }

    fn require_ready(&self) -> Result<(), ApiError> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(ApiError::EnclaveUnavailable(self.last_error()))
        }
    }

    /// Whether the enclave wants the caller's session token with a mint (it runs a mode
    /// other than `parent-vouched`).
    pub fn takes_session_proofs(&self) -> bool {
        !self.vouched_only.load(Ordering::Relaxed)
    }

    /// Mints a JWT for the caller: for the wallet `proof` shows, or in `parent-vouched`
    /// mode for `wallet`.
    pub async fn mint(
        &self,
        wallet: &str,
        ttl_seconds: u32,
        proof: Option<WalletProof>,
    ) -> Result<MintedJwt, ApiError> {
        self.require_ready()?;
        self.client
            .mint_jwt(MintJwtRequest {
                wallet: wallet.to_string(),
                ttl_seconds: Some(ttl_seconds),
                audience: None,
                proof,
            })
            .await
            .map_err(|e| self.map_error(e))
    }

    /// A nonce for a Sign-In with Ethereum message, and the last UNIX second it is
    /// accepted.
    pub async fn siwe_nonce(&self) -> Result<(String, u64), ApiError> {
        self.require_ready()?;
        self.client
            .siwe_nonce()
            .await
            .map_err(|e| self.map_error(e))
    }

    /// A fresh attestation with `nonce`.
    pub async fn attest(&self, nonce: Option<Vec<u8>>) -> Result<Attestation, ApiError> {
        self.require_ready()?;
        self.client
            .attest(nonce)
            .await
            .map_err(|e| self.map_error(e))
    }

    /// An attested audit checkpoint with `nonce`.
    pub async fn checkpoint(&self, nonce: Option<Vec<u8>>) -> Result<AuditCheckpoint, ApiError> {
        self.require_ready()?;
        self.client
            .audit_checkpoint(nonce)
            .await
            .map_err(|e| self.map_error(e))
    }
}
