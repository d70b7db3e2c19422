//! Assembling and running a broker: state from the configuration, HTTP or HTTPS serving,
//! SIGHUP certificate reload and graceful shutdown.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use bytes::Bytes;

use crate::audit::{AuditStore, GroupCommitConfig, SqliteAuditStore};
use crate::config::{BrokerConfig, ServeArgs};
use crate::enclave::{EnclaveManager, UnsealConfig};
use crate::metrics::Metrics;
use crate::server::{discovery_document, router, AppState};
use crate::session::SessionChecker;
use crate::sts::StsExchanger;

/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Idle keep-alive connections kept per backend host (enough for 64 concurrent clients).
const BACKEND_POOL_IDLE: usize = 128;

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
    /// Binding or serving failed.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// TLS material could not be loaded.
    #[error("TLS certificate/key {cert} / {key}: {source}")]
    Tls {
        /// Certificate path.
        cert: PathBuf,
        /// Key path.
        key: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// A built broker: state plus its background tasks.
pub struct Broker {
    /// Handler state.
    pub state: Arc<AppState>,
    /// The concrete audit store (stats, fault switch, close).
    pub audit_store: Arc<SqliteAuditStore>,
    /// The enclave supervisor task.
    pub supervisor: tokio::task::JoinHandle<()>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

/// Installs the process-wide rustls crypto provider (once).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds the broker state and starts the enclave supervisor.
/// `dev_faults` enables the dev-stack-only fault switch route.
pub async fn build(config: &BrokerConfig, dev_faults: bool) -> Result<Broker, StartError> {
    install_crypto_provider();
    let store = Arc::new(SqliteAuditStore::open(
        &config.audit_db,
        GroupCommitConfig::default(),
    )?);
    let http = reqwest::Client::builder()
        .timeout(config.backend_timeout)
        .connect_timeout(config.backend_timeout)
        .pool_max_idle_per_host(BACKEND_POOL_IDLE)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| StartError::Http(e.to_string()))?;
    let session = SessionChecker::new(http, &config.backend_url, config.session_cache);
    let client = agentkeys_wire::EnclaveClient::new(
        config.enclave.clone(),
        config.enclave_connections,
        config.enclave_timeout,
    );
    let enclave = EnclaveManager::new(
        client,
        UnsealConfig::from_config(config),
        config.supervise_interval,
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
        audit: store.clone() as Arc<dyn AuditStore>,
        metrics: Arc::new(Metrics::default()),
        dev_audit_faults: dev_faults.then(|| store.faults()),
    });
    Ok(Broker {
        state,
        audit_store: store,
        supervisor,
    })
}

/// Serves `app` on `listener` (plain HTTP, or HTTPS with `tls` = cert/key PEM paths,
/// reloaded on SIGHUP) until `shutdown` resolves, then drains for up to 10 s.
pub async fn serve_http(
    listener: std::net::TcpListener,
    app: axum::Router,
    tls: Option<(PathBuf, PathBuf)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let listen_err = |source| StartError::Listen {
        addr: addr.clone(),
        source,
    };
    listener.set_nonblocking(true).map_err(listen_err)?;
    match tls {
        None => {
            let listener = tokio::net::TcpListener::from_std(listener).map_err(listen_err)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(listen_err)
        }
        Some((cert, key)) => {
            let rustls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert, &key)
                .await
                .map_err(|source| StartError::Tls {
                    cert: cert.clone(),
                    key: key.clone(),
                    source,
                })?;
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                h.graceful_shutdown(Some(SHUTDOWN_GRACE));
            });
            spawn_sighup_reload(rustls.clone(), cert, key);
            axum_server::from_tcp_rustls(listener, rustls)
                .handle(handle)
                .serve(app.into_make_service())
                .await
                .map_err(listen_err)
        }
    }
}

fn spawn_sighup_reload(config: axum_server::tls_rustls::RustlsConfig, cert: PathBuf, key: PathBuf) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            match config.reload_from_pem_file(&cert, &key).await {
                Ok(()) => tracing::info!(cert = %cert.display(), "TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS reload failed; keeping the old certificate")
                }
            }
        }
    });
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; draining");
}

/// `agentkeys-broker serve`.
pub async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let (config, warnings) = args.validate()?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let listener =
        std::net::TcpListener::bind(config.bind).map_err(|source| StartError::Listen {
            addr: config.bind.to_string(),
            source,
        })?;
    let broker = build(&config, false).await?;
    tracing::info!(
        bind = %config.bind,
        issuer = %config.issuer,
        enclave = %config.enclave,
        tls = config.tls.is_some(),
        "broker listening"
    );
    let app = router(broker.state.clone());
    serve_http(listener, app, config.tls.clone(), shutdown_signal()).await?;
    broker.audit_store.close();
    Ok(())
}
