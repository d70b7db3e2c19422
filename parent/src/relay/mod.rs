//! The issuer relay: a TCP listener for the issuer hostname whose connections are
//! forwarded, unread, to the enclave's TLS endpoint (`--issuer-listen` →
//! `--enclave-tls`).
//!
//! The issuer's TLS session starts and ends inside the enclave, so the parent must not
//! terminate it: it only moves bytes. It has a listener of its own rather than routing by
//! the ClientHello's SNI on the mint listener, so that the parent parses no byte of an
//! issuer connection (no ClientHello parser an attacker can feed, nothing it could route
//! wrongly); the mint API keeps its own hostname, listener and parent-side TLS.
//!
//! Each accepted TCP connection gets one new stream to the enclave's address (vsock on
//! Nitro, a Unix socket in mock mode) and bytes are copied both ways until both sides
//! have finished ([`copy`]). Bounds: at most `max_connections` relayed at once (further
//! connections are accepted and closed at once, so they neither wait in the kernel's
//! queue nor reach the enclave), a connect timeout to the enclave, and an idle timeout.
//! An enclave that cannot be reached closes that client's connection; the relay keeps
//! accepting.

pub mod config;
pub mod copy;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkeys_wire::Address;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::listener::{is_connection_error, to_tokio, ServeError, ACCEPT_ERROR_PAUSE};

pub use copy::{relay_connection, Ended};

/// Default cap on relayed connections open at once. The issuer surface is low-traffic
/// (AWS STS caches the JWKS; auditors and the CA's validation add a few connections a
/// minute), so 1024 leaves a wide margin while bounding what a flood costs the parent
/// (two descriptors and two 8 KiB copy buffers per connection, about 16 MiB in all) and
/// the enclave.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default idle timeout: a relayed connection on which no byte has moved either way for
/// this long is closed. The enclave's TLS server closes idle connections itself; this is
/// the backstop against a silent client or a stalled enclave holding a slot. 30 s is
/// hyper's default header read timeout, the wait HTTP/1.1 servers are built around.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time to open the stream to the enclave's endpoint. A vsock or Unix connect is
/// local: it completes at once unless the enclave is gone or its accept queue is full,
/// so 2 s only leaves room for a loaded host before the client is told (by a close).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a "cap reached" or "enclave unreachable" warning may be logged (as often as
/// the mint listener's "cap reached").
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Where and how the relay forwards.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The enclave's TLS endpoint (`--enclave-tls`).
    pub upstream: Address,
    /// Most connections relayed at once.
    pub max_connections: usize,
    /// Time to open the stream to the enclave.
    pub connect_timeout: Duration,
    /// Time without a byte either way after which a connection is closed.
    pub idle_timeout: Duration,
}

impl RelayConfig {
    /// The defaults for `upstream`.
    pub fn new(upstream: Address) -> RelayConfig {
        RelayConfig {
            upstream,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// The relay's counters (`agentkeys_issuer_relay_*`); clones share the same cells.
#[derive(Clone, Debug, Default)]
pub struct RelayMetrics {
    /// Connections accepted and relayed.
    pub connections: Counter,
    /// Connections closed at once because the cap was reached.
    pub refused: Counter,
    /// Connections closed because the enclave's endpoint could not be reached.
    pub upstream_failures: Counter,
    /// Connections closed by the idle timeout.
    pub idle_closed: Counter,
    /// Bytes copied from clients to the enclave.
    pub bytes_to_enclave: Counter,
    /// Bytes copied from the enclave to clients.
    pub bytes_from_enclave: Counter,
    /// Connections being relayed now.
    pub open: Gauge,
}

impl RelayMetrics {
    /// New counters, registered in `registry`.
    pub fn register(registry: &mut Registry) -> RelayMetrics {
        let m = RelayMetrics::default();
        // Counter names are registered without `_total`: the encoder appends it.
        for (name, help, c) in [
            (
                "agentkeys_issuer_relay_connections",
                "Issuer connections accepted and relayed to the enclave",
                &m.connections,
            ),
            (
                "agentkeys_issuer_relay_refused",
                "Issuer connections closed at once because the relay's cap was reached",
                &m.refused,
            ),
            (
                "agentkeys_issuer_relay_upstream_failures",
                "Issuer connections closed because the enclave's TLS endpoint was unreachable",
                &m.upstream_failures,
            ),
            (
                "agentkeys_issuer_relay_idle_closed",
                "Issuer connections closed by the relay's idle timeout",
                &m.idle_closed,
            ),
            (
                "agentkeys_issuer_relay_bytes_to_enclave",
                "Bytes relayed from issuer clients to the enclave",
                &m.bytes_to_enclave,
            ),
            (
                "agentkeys_issuer_relay_bytes_from_enclave",
                "Bytes relayed from the enclave to issuer clients",
                &m.bytes_from_enclave,
            ),
        ] {
            registry.register(name, help, c.clone());
        }
        registry.register(
            "agentkeys_issuer_relay_open",
            "Issuer connections being relayed now",
            m.open.clone(),
        );
        m
    }
}

/// A warning logged at most once per [`WARN_INTERVAL`].
struct RateLimited {
    start: Instant,
    /// Milliseconds since `start` of the last warning, plus one (0: never).
    last: AtomicU64,
}

impl RateLimited {
    fn new() -> RateLimited {
        RateLimited {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// Whether a warning may be logged now (and, if so, notes it).
    fn due(&self) -> bool {
        let now = self.start.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let interval = WARN_INTERVAL.as_millis() as u64;
        (last == 0 || now.saturating_sub(last) >= interval)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// A running relay.
pub struct RelayHandle {
    local_addr: SocketAddr,
    stop: CancellationToken,
    stop_connections: CancellationToken,
    connections: TaskTracker,
    accept: tokio::task::JoinHandle<()>,
}

impl RelayHandle {
    /// The address the relay listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets open connections finish for up to `grace`, then closes the
    /// rest.
    pub async fn shutdown(mut self, grace: Duration) {
        self.stop.cancel();
        let _ = (&mut self.accept).await;
        self.connections.close();
        if tokio::time::timeout(grace, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.connections.len(),
                ?grace,
                "issuer connections still open after the shutdown grace period; closing them"
            );
            self.stop_connections.cancel();
            self.connections.wait().await;
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.stop.cancel();
        self.stop_connections.cancel();
    }
}

/// Binds the relay's listener (before anything else starts, like the mint listener).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    std::net::TcpListener::bind(addr).map_err(|source| ServeError::Listen {
        addr: addr.to_string(),
        source,
    })
}

/// Starts relaying the connections of `listener` to `config.upstream`.
pub fn spawn(
    listener: std::net::TcpListener,
    config: RelayConfig,
    metrics: RelayMetrics,
) -> Result<RelayHandle, ServeError> {
    let listener = to_tokio(listener)?;
    let local_addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: "the issuer listener".to_string(),
        source,
    })?;
    let stop = CancellationToken::new();
    let stop_connections = CancellationToken::new();
    let connections = TaskTracker::new();
    let accept = tokio::spawn(accept_loop(
        listener,
        Arc::new(config),
        metrics,
        stop.clone(),
        stop_connections.clone(),
        connections.clone(),
    ));
    Ok(RelayHandle {
        local_addr,
        stop,
        stop_connections,
        connections,
        accept,
    })
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    config: Arc<RelayConfig>,
    metrics: RelayMetrics,
    stop: CancellationToken,
    stop_connections: CancellationToken,
    connections: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let cap_warning = RateLimited::new();
    let unreachable_warning = Arc::new(RateLimited::new());
    loop {
        let (tcp, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "issuer relay: accept failed; pausing");
                    tokio::select! {
                        _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                        _ = stop.cancelled() => break,
                    }
                }
            },
            _ = stop.cancelled() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.refused.inc();
            if cap_warning.due() {
                tracing::warn!(
                    max_connections = config.max_connections,
                    "issuer relay: connection cap reached; closing new connections"
                );
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        metrics.connections.inc();
        metrics.open.inc();
        let config = config.clone();
        let metrics = metrics.clone();
        let stop = stop_connections.clone();
        let unreachable_warning = unreachable_warning.clone();
        connections.spawn(async move {
            let ended = relay_connection(tcp, &config, &metrics, stop).await;
            if let Ended::Unreachable(reason) = &ended {
                if unreachable_warning.due() {
                    tracing::warn!(
                        enclave_tls = %config.upstream,
                        reason = %reason,
                        "issuer relay: the enclave's TLS endpoint is unreachable; closing the client's connection"
                    );
                }
            }
            metrics.open.dec();
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests;
