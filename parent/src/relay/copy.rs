//! One relayed connection: connect to the enclave's TLS endpoint, then copy bytes both
//! ways, unread, until both sides have finished or the connection has been idle too long.
//!
//! The copy is tokio's `copy_bidirectional`, which forwards a half-close (a read EOF on
//! one side shuts down the write half of the other, and the other direction goes on).
//! What it lacks is an idle timeout and byte counts while the connection is open: both
//! come from [`Counted`], a pass-through wrapper that notes when bytes were last read
//! and adds them to a counter. Neither looks at the bytes.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::{RelayConfig, RelayMetrics};

/// How a relayed connection ended (for the log and the tests).
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Both sides finished (EOF both ways).
    Done {
        /// Bytes from the client to the enclave.
        to_enclave: u64,
        /// Bytes from the enclave to the client.
        from_enclave: u64,
    },
    /// The enclave's endpoint could not be reached; the client was disconnected.
    Unreachable(String),
    /// No byte moved either way for the idle timeout.
    Idle,
    /// One side failed (reset, broken pipe).
    Failed(String),
    /// The broker is shutting down and the grace period is over.
    Shutdown,
}

/// Milliseconds since the connection started at which a byte was last read, either way.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A stream whose reads are counted and noted as activity; writes pass through.
struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
    bytes: Counter,
    total: u64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        if read > 0 {
            self.activity.touch();
            self.bytes.inc_by(read);
            self.total += read;
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves once no byte has been read either way for `idle`.
async fn idle_expired(activity: &Activity, idle: Duration) {
    loop {
        let quiet = activity.idle_for();
        if quiet >= idle {
            return;
        }
        tokio::time::sleep(idle - quiet).await;
    }
}

/// Relays `client` to the enclave's endpoint until it ends; `stop` ends it early (the
/// broker's shutdown, once the grace period is over).
pub async fn relay_connection(
    client: TcpStream,
    config: &RelayConfig,
    metrics: &RelayMetrics,
    stop: CancellationToken,
) -> Ended {
    let upstream =
        match tokio::time::timeout(config.connect_timeout, config.upstream.connect()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                metrics.upstream_failures.inc();
                return Ended::Unreachable(e.to_string());
            }
            Err(_) => {
                metrics.upstream_failures.inc();
                return Ended::Unreachable(format!(
                    "no connection within {:?}",
                    config.connect_timeout
                ));
            }
        };
    let activity = Activity::new();
    let mut client = Counted {
        inner: client,
        activity: activity.clone(),
        bytes: metrics.bytes_to_enclave.clone(),
        total: 0,
    };
    let mut upstream = Counted {
        inner: upstream,
        activity: activity.clone(),
        bytes: metrics.bytes_from_enclave.clone(),
        total: 0,
    };
    let ended = tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match r {
            Ok((to_enclave, from_enclave)) => Ended::Done { to_enclave, from_enclave },
            Err(e) => Ended::Failed(e.to_string()),
        },
        _ = idle_expired(&activity, config.idle_timeout) => {
            metrics.idle_closed.inc();
            Ended::Idle
        }
        _ = stop.cancelled() => Ended::Shutdown,
    };
    tracing::debug!(
        to_enclave = client.total,
        from_enclave = upstream.total,
        ended = ?ended,
        "issuer connection closed"
    );
    ended
}
