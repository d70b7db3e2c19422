//! Assembling a broker from its configuration (audit store, session check, enclave
//! client and supervisor, STS), the late-reply recorder, and `agentkeys-broker serve`.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use bytes::Bytes;

use crate::audit::{AuditBackend, AuditEvent, AuditStore, GroupCommitConfig, NewAuditRow, Outcome};
use crate::config::{BrokerConfig, ServeArgs, DEFAULT_MAX_CONNECTIONS};
use crate::enclave::issuer_tls::IssuerTlsKeeper;
use crate::enclave::{EnclaveManager, UnsealConfig};
use crate::http::listener::{ServeError, SHUTDOWN_GRACE};
use crate::http::{discovery_document, router, serve_http_with_limits, shutdown_signal, AppState};
use crate::metrics::Metrics;
use crate::relay::config::IssuerListenConfig;
use crate::relay::RelayHandle;
use crate::session::SessionChecker;
use crate::sts::StsExchanger;

/// Idle keep-alive connections kept per backend host (enough for 64 concurrent clients).
const BACKEND_POOL_IDLE: usize = 128;
/// Enclave replies that arrived after their call timed out, queued for their audit rows.
/// Room for every mint that can wait on the enclave at once, so that a long stall, which
/// times them all out together, loses none: one per open client connection plus the
/// mints whose clients left (each capped at `DEFAULT_MAX_CONNECTIONS` by default). tokio
/// allocates a channel's slots as they fill, so the size costs nothing while unused.
const LATE_REPLY_QUEUE: usize = 2 * DEFAULT_MAX_CONNECTIONS;

/// Writes a `mint_withheld` row for every token the enclave signed after the broker's
/// call had stopped waiting (it timed out, and its caller got 503 with no token): the
/// token is never sent, but the enclave counted its seq, and the log must hold it.
pub async fn record_late_mints(
    mut late: tokio::sync::mpsc::Receiver<agentkeys_wire::Response>,
    audit: Arc<dyn AuditStore>,
) {
    while let Some(reply) = late.recv().await {
        match reply {
            agentkeys_wire::Response::Jwt(minted) => {
                tracing::warn!(
                    epoch = minted.epoch,
                    seq = minted.seq,
                    "the enclave signed after the call had timed out; token withheld and recorded"
                );
                audit.queue_withheld(late_mint_row(&minted));
            }
            other => tracing::debug!(reply = other.name(), "late enclave reply dropped"),
        }
    }
}

/// The row recorded for a token whose call had timed out when the enclave answered.
fn late_mint_row(minted: &agentkeys_wire::MintedJwt) -> NewAuditRow {
    NewAuditRow::new(AuditEvent::MintWithheld, Outcome::Failure)
        .signed(minted)
        .status(503)
        .detail("the enclave answered after the call had timed out; the token was not sent")
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration was refused.
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The audit store could not be opened.
    #[error("audit store: {0}")]
    Audit(#[from] crate::audit::AuditError),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(String),
    /// Serving failed to start.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// A built broker: state plus its background tasks.
pub struct Broker {
    /// Handler state.
    pub state: Arc<AppState>,
    /// The audit store underneath any layer (stats, close): SQLite or PostgreSQL.
    pub audit_store: AuditBackend,
    /// The enclave supervisor task.
    pub supervisor: tokio::task::JoinHandle<()>,
}

impl Broker {
    /// Waits, at most `grace`, for the mints whose clients left before the answer to
    /// finish recording. Call once the HTTP server has drained (no new ones can start)
    /// and before the enclave stops and the audit log closes.
    pub async fn finish_abandoned_requests(&self, grace: Duration) {
        let abandoned = &self.state.abandoned_requests;
        abandoned.close();
        if !abandoned.is_empty() {
            tracing::info!(
                requests = abandoned.len(),
                "finishing mints whose clients left"
            );
        }
        if tokio::time::timeout(grace, abandoned.wait()).await.is_err() {
            tracing::warn!(
                requests = abandoned.len(),
                ?grace,
                "mints whose clients left were still running after the grace period; \
                 their seqs may be missing from the audit log"
            );
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

/// The issuer listener of a running broker: the relay to the enclave's TLS endpoint and
/// the keeper of the issuer's certificate chain.
pub struct IssuerListener {
    relay: RelayHandle,
    keeper: tokio::task::JoinHandle<()>,
}

impl IssuerListener {
    /// The address the issuer listener listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.relay.local_addr()
    }

    /// Stops accepting issuer connections, lets open ones finish for up to `grace`, and
    /// stops the chain keeper.
    pub async fn shutdown(self, grace: Duration) {
        self.keeper.abort();
        self.relay.shutdown(grace).await;
    }
}

/// Starts relaying `listener`'s connections to the enclave's TLS endpoint, and keeping
/// the issuer's certificate chain in `config.chain_cache` (offered back to the enclave
/// after each unseal).
pub fn start_issuer_listener(
    broker: &Broker,
    config: &IssuerListenConfig,
    listener: std::net::TcpListener,
) -> Result<IssuerListener, ServeError> {
    let enclave = &broker.state.enclave;
    let keeper = IssuerTlsKeeper::new(enclave.client().clone(), config.chain_cache.clone());
    enclave.attach_issuer_tls(keeper.clone());
    let relay = crate::relay::spawn(
        listener,
        config.relay.clone(),
        broker.state.metrics.relay.clone(),
    )?;
    Ok(IssuerListener {
        relay,
        keeper: keeper.spawn(),
    })
}

/// Installs the process-wide rustls crypto provider (once).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds the broker state and starts the enclave supervisor.
pub async fn build(config: &BrokerConfig) -> Result<Broker, StartError> {
    build_with_audit_layer(config, |store| store).await
}

/// [`build`], with the audit store that the handlers and the late-reply recorder write
/// to wrapped by `audit_layer` (a decorator over [`AuditStore`]; the store underneath
/// keeps its invariants whatever the layer does).
pub async fn build_with_audit_layer(
    config: &BrokerConfig,
    audit_layer: impl FnOnce(Arc<dyn AuditStore>) -> Arc<dyn AuditStore>,
) -> Result<Broker, StartError> {
    install_crypto_provider();
    let store = AuditBackend::open(&config.audit_db, GroupCommitConfig::default()).await?;
    let audit = audit_layer(store.store());
    let http = reqwest::Client::builder()
        .timeout(config.backend_timeout)
        .connect_timeout(config.backend_timeout)
        .pool_max_idle_per_host(BACKEND_POOL_IDLE)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| StartError::Http(e.to_string()))?;
    let session = SessionChecker::new(http, &config.backend_url, config.session_cache);
    let (late_replies, late) = tokio::sync::mpsc::channel(LATE_REPLY_QUEUE);
    tokio::spawn(record_late_mints(late, audit.clone()));
    let client = agentkeys_wire::EnclaveClient::with_late_replies(
        config.enclave.clone(),
        config.enclave_connections,
        config.enclave_timeout,
        late_replies,
    );
    let enclave = EnclaveManager::new(
        client,
        UnsealConfig::from_config(config),
        config.supervise_interval,
        audit.clone(),
    );
    let supervisor = enclave.spawn_supervisor();
    let sts = StsExchanger::new(config).await;
    let cache_control =
        HeaderValue::from_str(&format!("public, max-age={}", config.jwks_max_age_seconds))
            .unwrap_or_else(|_| HeaderValue::from_static("public, max-age=300"));
    let state = Arc::new(AppState {
        issuer: config.issuer.clone(),
        jwt_ttl_seconds: config.jwt_ttl_seconds,
        body_limit: config.body_limit_bytes,
        jwks_cache_control: cache_control,
        discovery: Bytes::from(discovery_document(&config.issuer).to_string()),
        enclave,
        session,
        sts,
        audit,
        metrics: Arc::new(Metrics::default()),
        abandoned_requests: tokio_util::task::TaskTracker::new(),
    });
    Ok(Broker {
        state,
        audit_store: store,
        supervisor,
    })
}

/// Serves `app` on `listener` with the default [`HttpLimits`] (plain HTTP, or HTTPS with
/// `tls` = cert/key PEM paths, reloaded on SIGHUP) until `shutdown` resolves, then drains
/// `agentkeys-broker serve`.
pub async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let (config, warnings) = args.validate()?;
    let limits = args.http.validate()?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let issuer_listen =
        args.issuer_tls
            .validate(&config.issuer, config.bind, &config.sealed_seed)?;
    let listener =
        std::net::TcpListener::bind(config.bind).map_err(|source| ServeError::Listen {
            addr: config.bind.to_string(),
            source,
        })?;
    let issuer_listener = issuer_listen
        .as_ref()
        .map(|c| crate::relay::bind(c.listen))
        .transpose()?;
    let broker = build(&config).await?;
    let issuer = match (&issuer_listen, issuer_listener) {
        (Some(c), Some(l)) => {
            let issuer = start_issuer_listener(&broker, c, l)?;
            tracing::info!(
                issuer_listen = %issuer.local_addr(),
                enclave_tls = %c.relay.upstream,
                chain_cache = %c.chain_cache.display(),
                max_connections = c.relay.max_connections,
                "issuer listener relaying to the enclave's TLS"
            );
            Some(issuer)
        }
        _ => None,
    };
    tracing::info!(
        bind = %config.bind,
        issuer = %config.issuer,
        enclave = %config.enclave,
        tls = config.tls.is_some(),
        header_read_timeout_ms = limits.header_read_timeout.as_millis() as u64,
        body_read_timeout_ms = limits.body_read_timeout.as_millis() as u64,
        max_connections = limits.max_connections,
        max_header_bytes = limits.max_header_bytes,
        "broker listening"
    );
    let app = router(broker.state.clone());
    // One signal stops both listeners; both drain at the same time.
    let signal = futures::FutureExt::shared(shutdown_signal());
    let issuer_drain = issuer.map(|issuer| {
        let signal = signal.clone();
        tokio::spawn(async move {
            signal.await;
            issuer.shutdown(SHUTDOWN_GRACE).await;
        })
    });
    let served =
        serve_http_with_limits(listener, app, config.tls.clone(), limits, signal.clone()).await;
    if let Some(drain) = issuer_drain {
        if served.is_ok() {
            let _ = drain.await;
        } else {
            // Serving failed before any signal: dropping the listener closes it.
            drain.abort();
        }
    }
    served?;
    broker.finish_abandoned_requests(SHUTDOWN_GRACE).await;
    broker.audit_store.shutdown(SHUTDOWN_GRACE).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::SqliteAuditStore;

    #[tokio::test]
    async fn late_mints_are_recorded_as_withheld_and_other_late_replies_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let store = Arc::new(SqliteAuditStore::open(&path, GroupCommitConfig::default()).unwrap());
        let (late_replies, late) = tokio::sync::mpsc::channel(4);
        let recorder = tokio::spawn(record_late_mints(
            late,
            store.clone() as Arc<dyn AuditStore>,
        ));
        let minted = agentkeys_wire::MintedJwt {
            jwt: "header.claims.signature".into(),
            kid: "kid-1".into(),
            jti: "jti-1".into(),
            wallet: format!("0x{}", "ab".repeat(20)),
            iat: 1,
            exp: 301,
            epoch: 9,
            seq: 7,
            jwt_sha256: [7; 32],
            signing_input_sha256: [6; 32],
            head: [8; 32],
        };
        late_replies
            .send(agentkeys_wire::Response::Jwt(minted.clone()))
            .await
            .unwrap();
        late_replies
            .send(agentkeys_wire::Response::Status(
                agentkeys_wire::EnclaveStatus {
                    unsealed: true,
                    mock: true,
                    issuer: "i".into(),
                    kids: vec![],
                    active_kid: None,
                    epoch: 9,
                    seq: 7,
                    module_id: "i-0123456789abcdef0-enc0123456789abcdef".into(),
                    auth_modes: vec!["signed-session".into()],
                },
            ))
            .await
            .unwrap();
        drop(late_replies);
        recorder.await.unwrap();
        for _ in 0..250 {
            if store.pending_withheld() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(store.pending_withheld(), 0);
        let rows = crate::cli::audit::recent_rows(&path, 10).unwrap();
        assert_eq!(rows.len(), 1, "one row, for the JWT only");
        let row = &rows[0].entry;
        assert_eq!(row.event, AuditEvent::MintWithheld);
        assert_eq!(row.outcome, Outcome::Failure);
        assert_eq!(row.enclave_epoch, Some(9));
        assert_eq!(row.enclave_seq, Some(7));
        assert_eq!(row.jwt_sha256, Some([7; 32]));
        assert_eq!(row.wallet.as_deref(), Some(minted.wallet.as_str()));
        assert_eq!(row.jti.as_deref(), Some("jti-1"));
        assert!(
            !format!("{row:?}").contains("header.claims.signature"),
            "the token itself is not in the row"
        );
    }
}
