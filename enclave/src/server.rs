//! The enclave service: state, request handling and the accept loop.
//!
//! Unseal policy (decided here):
//! * before a successful unseal, any number of `Unseal` requests may be tried; a failed
//!   one (KMS refusal, bad endpoint, …) leaves the enclave sealed and serving;
//! * after success, an `Unseal` carrying the **same** sealed seed, or a genesis request
//!   when this boot's unseal *was* the genesis (a retry whose answer was lost), returns
//!   the stored result unchanged (idempotent); anything else is refused with
//!   `AlreadyUnsealed`. The seed of a running enclave never changes.
//! * concurrent `Unseal` requests are serialised.

use std::sync::{Arc, RwLock};

use agentkeys_wire::{
    attestation_json, AcmeAccountStatement, Attestation, AuditCheckpoint, EnclaveStatus,
    IssuerTlsRequest, IssuerTlsStatus, JwksStatement, MintJwtRequest, MintedJwt, Request, Response,
    UnsealRequest, UnsealResult, WireError, WireErrorKind,
};
use aws_lc_rs::rand::SystemRandom;
use sha2::{Digest, Sha256};

use crate::audit::{AuditChain, AuditError};
use crate::authz::nonce::NonceBook;
use crate::authz::{AuthError, AuthMode, AuthPolicy, Authorizer};
use crate::cms::RecipientKey;
use crate::config::EnclaveConfig;
use crate::jwt::{self, MintParams, ProofClaims, TokenError, TokenPolicy};
use crate::keys::{self, KeyRing, RingSpec};
use crate::kms::{self, KmsSettings};
use crate::nsm::{self, NsmDevice, NsmError};
use crate::tls::keys::IssuerTlsKeys;
use crate::tls::server::{IssuerSurface, Refusal};
use crate::tls::IssuerTls;

/// Failures starting the enclave.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The NSM could not be opened or used.
    #[error("NSM: {0}")]
    Nsm(#[from] NsmError),
    /// The per-boot RSA recipient key could not be generated.
    #[error("cannot generate the RSA-2048 recipient key: {0}")]
    RecipientKey(String),
    /// The listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Mock mode requested in a build without the `mock` feature.
    #[error("--mock needs a build with the cargo feature `mock` (this build has no mock NSM)")]
    MockUnavailable,
    /// The mock NSM configuration is invalid.
    #[error("mock NSM configuration: {0}")]
    MockConfig(String),
}

struct UnsealedState {
    ring: KeyRing,
    /// The issuer's TLS key and ACME account key, from the seed.
    tls_keys: Arc<IssuerTlsKeys>,
    result: UnsealResult,
    /// Sign-in nonces, keyed from the seed.
    nonces: NonceBook,
}

/// The enclave's state and request handler.
pub struct Enclave {
    nsm: Arc<dyn NsmDevice>,
    recipient: RecipientKey,
    policy: TokenPolicy,
    authorizer: Authorizer,
    ring_spec: RingSpec,
    kms: KmsSettings,
    chain: AuditChain,
    /// This enclave's NSM module id, read once at start.
    module_id: String,
    state: RwLock<Option<Arc<UnsealedState>>>,
    unseal_lock: tokio::sync::Mutex<()>,
    rng: SystemRandom,
    /// The issuer's TLS, when this enclave terminates it.
    issuer_tls: Option<Arc<IssuerTls>>,
}

fn wire(kind: WireErrorKind, message: impl Into<String>) -> WireError {
    WireError::new(kind, message)
}

fn token_error(e: TokenError) -> WireError {
    let kind = match &e {
        TokenError::InvalidWallet { .. } => WireErrorKind::InvalidWallet,
        TokenError::TtlOutOfRange { .. }
        | TokenError::AudienceNotAllowed { .. }
        | TokenError::Config(_) => WireErrorKind::InvalidRequest,
        TokenError::Clock | TokenError::Sign(_) | TokenError::Random => WireErrorKind::Internal,
    };
    wire(kind, e.to_string())
}

fn nsm_error(e: NsmError) -> WireError {
    let kind = match &e {
        NsmError::FieldTooLarge { .. } => WireErrorKind::InvalidRequest,
        _ => WireErrorKind::Nsm,
    };
    wire(kind, e.to_string())
}

fn audit_error(e: AuditError) -> WireError {
    match e {
        AuditError::Nsm(n) => nsm_error(n),
        other => wire(WireErrorKind::Internal, other.to_string()),
    }
}

/// A refused proof is `Unauthorized`; a parent-vouched wallet that breaks the wallet
/// rule stays `InvalidWallet`.
fn auth_error(e: AuthError) -> WireError {
    let kind = match &e {
        AuthError::Wallet(_) => WireErrorKind::InvalidWallet,
        _ => WireErrorKind::Unauthorized,
    };
    wire(kind, e.to_string())
}

impl From<AuditError> for WireError {
    fn from(e: AuditError) -> WireError {
        audit_error(e)
    }
}

fn poisoned() -> WireError {
    wire(WireErrorKind::Internal, "enclave state lock poisoned")
}

impl Enclave {
    /// Builds the enclave around an NSM: draws the audit epoch and generates the per-boot
    /// RSA-2048 recipient key.
    pub fn new(
        nsm: Arc<dyn NsmDevice>,
        policy: TokenPolicy,
        auth: AuthPolicy,
        ring_spec: RingSpec,
        kms: KmsSettings,
        issuer_tls: Option<Arc<IssuerTls>>,
    ) -> Result<Enclave, StartError> {
        let chain = AuditChain::from_nsm(nsm.as_ref())?;
        let module_id = nsm::module_id(nsm.as_ref())?;
        let recipient =
            RecipientKey::generate().map_err(|e| StartError::RecipientKey(e.to_string()))?;
        Ok(Enclave {
            nsm,
            recipient,
            policy,
            authorizer: Authorizer::new(auth),
            ring_spec,
            kms,
            chain,
            module_id,
            state: RwLock::new(None),
            unseal_lock: tokio::sync::Mutex::new(()),
            rng: SystemRandom::new(),
            issuer_tls,
        })
    }

    fn unsealed(&self) -> Result<Option<Arc<UnsealedState>>, WireError> {
        self.state.read().map(|s| s.clone()).map_err(|_| poisoned())
    }

    fn require_unsealed(&self) -> Result<Arc<UnsealedState>, WireError> {
        self.unsealed()?.ok_or_else(|| {
            wire(
                WireErrorKind::NotUnsealed,
                "the issuer seed is not unsealed yet: send Unseal first",
            )
        })
    }

    /// Handles one request. Never panics on any input.
    pub async fn handle(self: &Arc<Self>, request: Request) -> Result<Response, WireError> {
        let name = request.name();
        let result = match request {
            Request::Status => self.status(),
            Request::Unseal(req) => self.unseal(req).await,
            Request::MintJwt(req) => self.mint(req),
            Request::Attest { nonce } => self.attest(nonce).await,
            Request::AuditCheckpoint { nonce } => self.checkpoint(nonce).await,
            Request::SiweNonce => self.siwe_nonce(),
            Request::IssuerTls(req) => self.issuer_tls(req),
        };
        match &result {
            Ok(Response::Jwt(m)) => {
                tracing::debug!(request = name, kid = %m.kid, jti = %m.jti, seq = m.seq, "minted")
            }
            Ok(_) => tracing::info!(request = name, "ok"),
            Err(e) => tracing::warn!(request = name, kind = ?e.kind, error = %e.message, "refused"),
        }
        result
    }

    fn status(&self) -> Result<Response, WireError> {
        let state = self.unsealed()?;
        let position = self.chain.current().map_err(audit_error)?;
        Ok(Response::Status(EnclaveStatus {
            unsealed: state.is_some(),
            mock: self.nsm.is_mock(),
            issuer: self.policy.issuer().to_string(),
            kids: state.as_ref().map(|s| s.ring.kids()).unwrap_or_default(),
            active_kid: state.as_ref().map(|s| s.ring.active().kid().to_string()),
            epoch: position.epoch,
            seq: position.seq,
            module_id: self.module_id.clone(),
            auth_modes: self.authorizer.policy().mode_names(),
        }))
    }

    /// The issuer's TLS state. Without an ACME directory the enclave does not terminate
    /// the issuer's TLS and says so (`enabled: false`); the TLS key hash is still given,
    /// as it is attested.
    fn issuer_tls(&self, req: IssuerTlsRequest) -> Result<Response, WireError> {
        let state = self.require_unsealed()?;
        if let Some(tls) = &self.issuer_tls {
            if let Some(pem) = req.cached_chain_pem.as_deref() {
                let now = jwt::now_unix().map_err(token_error)?;
                tls.offer_cached(pem, now);
            }
            tls.note_offer();
            return Ok(Response::IssuerTls(tls.status()));
        }
        Ok(Response::IssuerTls(IssuerTlsStatus {
            enabled: false,
            hostname: String::new(),
            tls_spki_sha256: hex::encode(state.tls_keys.tls.spki_sha256()),
            state: agentkeys_wire::ISSUER_TLS_SELF_SIGNED.to_string(),
            chain_pem: None,
            not_after: None,
            acme_account_uri: None,
            last_error: None,
            cached_chain_refused: None,
        }))
    }

    fn siwe_nonce(&self) -> Result<Response, WireError> {
        if !self
            .authorizer
            .policy()
            .modes()
            .contains(&AuthMode::WalletSignature)
        {
            return Err(wire(
                WireErrorKind::Unauthorized,
                format!(
                    "this enclave does not take wallet-signature proofs (it runs {})",
                    self.authorizer.policy().mode_names().join(", ")
                ),
            ));
        }
        let state = self.require_unsealed()?;
        let now = jwt::now_unix().map_err(token_error)?;
        let (nonce, expires_at) = state
            .nonces
            .issue(now, &self.rng)
            .map_err(|e| wire(WireErrorKind::Internal, e.to_string()))?;
        Ok(Response::SiweNonce { nonce, expires_at })
    }

    async fn unseal(self: &Arc<Self>, req: UnsealRequest) -> Result<Response, WireError> {
        let _guard = self.unseal_lock.lock().await;
        if let Some(state) = self.unsealed()? {
            let same_seed = req.sealed_seed.as_deref() == Some(&state.result.sealed_seed[..]);
            let genesis_retry = req.sealed_seed.is_none() && state.result.genesis;
            if same_seed || genesis_retry {
                return Ok(Response::Unsealed(state.result.clone()));
            }
            return Err(wire(
                WireErrorKind::AlreadyUnsealed,
                format!(
                    "already unsealed with a different sealed seed (active kid {}); restart the \
                     enclave to change seeds",
                    state.ring.active().kid()
                ),
            ));
        }
        tracing::info!(
            region = %req.region,
            kms_key_id = %req.kms_key_id,
            genesis = req.sealed_seed.is_none(),
            "unsealing through KMS"
        );
        let unsealed = kms::unseal(&self.kms, self.nsm.as_ref(), &self.recipient, &req)
            .await
            .map_err(|e| wire(e.wire_kind(), e.to_string()))?;
        let ring = KeyRing::derive(&unsealed.seed, self.ring_spec)
            .map_err(|e| wire(WireErrorKind::Internal, e.to_string()))?;
        let nonces = NonceBook::new(&keys::derive_nonce_key(&unsealed.seed));
        let tls_keys = Arc::new(
            IssuerTlsKeys::derive(&unsealed.seed)
                .map_err(|e| wire(WireErrorKind::Internal, e.to_string()))?,
        );
        drop(unsealed.seed);
        if let Some(tls) = &self.issuer_tls {
            if let Err(e) = tls.install_keys(tls_keys.clone()) {
                tracing::error!(error = %e, "issuer TLS cannot use its key");
                tls.set_last_error(Some(e.to_string()));
            }
        }
        let result = UnsealResult {
            sealed_seed: unsealed.sealed_seed,
            genesis: unsealed.genesis,
            active_kid: ring.active().kid().to_string(),
            kids: ring.kids(),
        };
        tracing::info!(active_kid = %result.active_kid, kids = ?result.kids, genesis = result.genesis, "unsealed");
        let state = Arc::new(UnsealedState {
            ring,
            tls_keys,
            result: result.clone(),
            nonces,
        });
        *self.state.write().map_err(|_| poisoned())? = Some(state);
        Ok(Response::Unsealed(result))
    }

    fn mint(&self, req: MintJwtRequest) -> Result<Response, WireError> {
        let state = self.require_unsealed()?;
        let now = jwt::now_unix().map_err(token_error)?;
        // Before the chain is touched: a refused mint takes no seq.
        let authorized = self
            .authorizer
            .authorize(&req, now, &state.nonces)
            .map_err(auth_error)?;
        let params = MintParams {
            wallet: authorized.wallet.as_str(),
            proof: ProofClaims {
                mode: authorized.mode.as_str(),
                proof_sha256: authorized.proof_sha256,
                proof_expires_at: authorized.proof_expires_at,
            },
            ttl_seconds: req.ttl_seconds,
            audience: req.audience.as_deref(),
        };
        let key = state.ring.active();
        let pending =
            jwt::prepare(&self.policy, key, &params, now, &self.rng).map_err(token_error)?;
        let (minted, entry) = self.chain.append_with(
            |epoch, seq| pending.sign_at(key, epoch, seq).map_err(token_error),
            |minted| minted.signing_input_sha256,
        )?;
        Ok(Response::Jwt(MintedJwt {
            jwt: minted.jwt,
            kid: minted.kid,
            jti: minted.jti,
            wallet: minted.wallet,
            iat: minted.iat,
            exp: minted.exp,
            epoch: entry.epoch,
            seq: entry.seq,
            jwt_sha256: minted.jwt_sha256,
            signing_input_sha256: minted.signing_input_sha256,
            head: entry.head,
        }))
    }

    async fn attest(self: &Arc<Self>, nonce: Option<Vec<u8>>) -> Result<Response, WireError> {
        self.attestation(nonce).await.map(Response::Attestation)
    }

    /// A fresh attestation document over the JWKS and its statement.
    async fn attestation(&self, nonce: Option<Vec<u8>>) -> Result<Attestation, WireError> {
        let state = self.require_unsealed()?;
        let nsm = self.nsm.clone();
        let jwks = state.ring.jwks_bytes().to_vec();
        let jwks_sha256: [u8; 32] = Sha256::digest(&jwks).into();
        let kids = state.ring.kids();
        let statement = JwksStatement {
            jwks_sha256,
            kms_key_arn: self.kms.key.clone(),
            sealed_seed_sha256: Sha256::digest(&state.result.sealed_seed).into(),
            key_version: self.ring_spec.active,
            audit_epoch: self.chain.epoch(),
            module_id: self.module_id.clone(),
            auth_modes: self.authorizer.policy().mode_names(),
            session_keys: self.authorizer.policy().session_keys().to_vec(),
            tls_spki_sha256: state.tls_keys.tls.spki_sha256(),
        };
        // The statement can outgrow the NSM's user_data; the document binds its hash and
        // the statement travels beside it.
        let user_data = statement.user_data();
        let statement = statement.encode();
        let document = tokio::task::spawn_blocking(move || {
            nsm::attest(
                nsm.as_ref(),
                Some(&user_data),
                nonce.as_deref(),
                Some(state.ring.active().spki_der()),
            )
        })
        .await
        .map_err(|e| wire(WireErrorKind::Internal, format!("attestation task: {e}")))?
        .map_err(nsm_error)?;
        Ok(Attestation {
            document,
            jwks,
            jwks_sha256,
            kids,
            statement,
        })
    }

    async fn checkpoint(self: &Arc<Self>, nonce: Option<Vec<u8>>) -> Result<Response, WireError> {
        let this = self.clone();
        let cp = tokio::task::spawn_blocking(move || {
            this.chain
                .checkpoint(this.nsm.as_ref(), &this.module_id, nonce.as_deref())
        })
        .await
        .map_err(|e| wire(WireErrorKind::Internal, format!("checkpoint task: {e}")))?
        .map_err(audit_error)?;
        Ok(Response::Checkpoint(AuditCheckpoint {
            epoch: cp.data.epoch,
            seq: cp.data.seq,
            head: cp.data.head,
            module_id: cp.data.module_id,
            document: cp.document,
        }))
    }
}

/// Opens the NSM the configuration asks for.
pub fn open_nsm(config: &EnclaveConfig) -> Result<Arc<dyn NsmDevice>, StartError> {
    if config.mock.enabled {
        return open_mock_nsm(config);
    }
    Ok(Arc::new(nsm::DevNsm::open()?))
}

#[cfg(feature = "mock")]
fn open_mock_nsm(config: &EnclaveConfig) -> Result<Arc<dyn NsmDevice>, StartError> {
    // Every boot of a real enclave has its own module id (`i-<instance>-enc<16 hex>`);
    // the mock draws one per boot too, so boots stay apart in CloudTrail-shaped records.
    let mut suffix = [0u8; 8];
    aws_lc_rs::rand::fill(&mut suffix)
        .map_err(|_| StartError::MockConfig("no randomness".into()))?;
    let module_id = format!("i-0123456789abcdef0-enc{}", hex::encode(suffix));
    let mut c = agentkeys_mock_nsm::MockNsmConfig::default()
        .debug_mode(config.mock.debug)
        .module_id(module_id)
        .map_err(|e| StartError::MockConfig(e.to_string()))?;
    for (index, value) in &config.mock.pcrs {
        c = c
            .pcr(*index, *value)
            .map_err(|e| StartError::MockConfig(e.to_string()))?;
    }
    Ok(Arc::new(agentkeys_mock_nsm::MockNsm::new(c)))
}

#[cfg(not(feature = "mock"))]
fn open_mock_nsm(_config: &EnclaveConfig) -> Result<Arc<dyn NsmDevice>, StartError> {
    Err(StartError::MockUnavailable)
}

/// Runs the enclave service until the process ends: opens the NSM, generates the
/// recipient key, binds the listener and serves every connection.
pub async fn run(config: EnclaveConfig) -> Result<(), StartError> {
    let nsm = open_nsm(&config)?;
    let issuer_tls = config
        .issuer_tls
        .clone()
        .map(|c| Arc::new(IssuerTls::new(c)));
    let enclave = Arc::new(Enclave::new(
        nsm,
        config.policy.clone(),
        config.auth.clone(),
        config.ring,
        config.kms_settings(),
        issuer_tls.clone(),
    )?);
    if let Some(tls) = issuer_tls {
        let address = &tls.config().listen;
        let tls_listener = address
            .listen()
            .await
            .map_err(|source| StartError::Listen {
                address: address.to_string(),
                source,
            })?;
        tracing::info!(
            address = %address,
            hostname = %tls.hostname(),
            directory = %tls.config().directory.url,
            "issuer TLS listening"
        );
        tokio::spawn(crate::tls::server::serve(
            tls_listener,
            tls.clone(),
            enclave.clone(),
        ));
        tokio::spawn(crate::tls::acme::run(tls));
    }
    let listener = config
        .listen
        .listen()
        .await
        .map_err(|source| StartError::Listen {
            address: config.listen.to_string(),
            source,
        })?;
    tracing::info!(
        address = %config.listen,
        issuer = %config.policy.issuer(),
        mock = config.mock.enabled,
        epoch = enclave.chain.epoch(),
        "enclave listening"
    );
    if config.mock.enabled {
        tracing::warn!(
            "MOCK MODE: attestation documents are signed by the public mock root and prove nothing"
        );
    }
    serve_listener(enclave, listener).await;
    Ok(())
}

/// Serves connections on `listener` with `enclave`.
pub async fn serve_listener(enclave: Arc<Enclave>, listener: agentkeys_wire::Listener) {
    agentkeys_wire::serve(listener, move |request| {
        let enclave = enclave.clone();
        async move { enclave.handle(request).await }
    })
    .await;
}

fn surface_refusal(e: WireError) -> Refusal {
    match e.kind {
        WireErrorKind::NotUnsealed => Refusal::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            e.message,
        ),
        WireErrorKind::InvalidRequest => {
            Refusal::new(http::StatusCode::BAD_REQUEST, "bad_request", e.message)
        }
        _ => Refusal::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "enclave_error",
            e.message,
        ),
    }
}

impl IssuerSurface for Enclave {
    fn issuer(&self) -> String {
        self.policy.issuer().to_string()
    }

    fn jwks(&self) -> Result<Vec<u8>, Refusal> {
        self.require_unsealed()
            .map(|s| s.ring.jwks_bytes().to_vec())
            .map_err(surface_refusal)
    }

    async fn attestation(&self, nonce: Option<Vec<u8>>) -> Result<serde_json::Value, Refusal> {
        let attestation = self
            .attestation(nonce.clone())
            .await
            .map_err(surface_refusal)?;
        Ok(attestation_json(
            &attestation,
            nonce.as_deref(),
            self.nsm.is_mock(),
        ))
    }

    async fn acme_account(&self, nonce: Option<Vec<u8>>) -> Result<serde_json::Value, Refusal> {
        let state = self.require_unsealed().map_err(surface_refusal)?;
        let Some(tls) = &self.issuer_tls else {
            return Err(Refusal::new(
                http::StatusCode::NOT_FOUND,
                "not_found",
                "this enclave does not terminate the issuer's TLS (no ACME directory)",
            ));
        };
        let Some(account_uri) = tls.account_uri() else {
            return Err(Refusal::new(
                http::StatusCode::NOT_FOUND,
                "no_account",
                format!(
                    "the ACME account is not registered yet{}",
                    tls.last_error()
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                ),
            ));
        };
        let statement = AcmeAccountStatement {
            directory: tls.config().directory.url.clone(),
            account_uri: account_uri.clone(),
            account_key_thumbprint: state.tls_keys.account.thumbprint().to_string(),
            hostname: tls.hostname().to_string(),
            tls_spki_sha256: state.tls_keys.tls.spki_sha256(),
            module_id: self.module_id.clone(),
        };
        let user_data = statement.user_data();
        let statement_text = String::from_utf8_lossy(&statement.encode()).into_owned();
        let nsm = self.nsm.clone();
        let document = tokio::task::spawn_blocking(move || {
            nsm::attest(nsm.as_ref(), Some(&user_data), nonce.as_deref(), None)
        })
        .await
        .map_err(|e| {
            surface_refusal(wire(
                WireErrorKind::Internal,
                format!("attestation task: {e}"),
            ))
        })?
        .map_err(|e| surface_refusal(nsm_error(e)))?;
        use base64::Engine;
        let mut body: serde_json::Map<String, serde_json::Value> = statement
            .served_fields()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value.into()))
            .collect();
        body.insert("statement_text".into(), statement_text.into());
        body.insert(
            "attestation_document".into(),
            base64::engine::general_purpose::STANDARD
                .encode(document)
                .into(),
        );
        Ok(serde_json::Value::Object(body))
    }
}
