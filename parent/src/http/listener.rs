//! Serving a router: hyper's HTTP/1.1 server with header and body timeouts, a header
//! size cap and a connection cap, optional TLS (reloaded on SIGHUP), and graceful
//! shutdown.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio::sync::Semaphore;

use crate::config::{HttpLimits, MIN_HEADER_BYTES};
use crate::http::error::BodyReadTimeout;

/// How long in-flight requests may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why serving could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
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

/// Serves `app` on `listener` with the default [`HttpLimits`] (plain HTTP, or HTTPS with
/// `tls` = cert/key PEM paths, reloaded on SIGHUP) until `shutdown` resolves, then drains
/// for up to 10 s.
pub async fn serve_http(
    listener: std::net::TcpListener,
    app: axum::Router,
    tls: Option<(PathBuf, PathBuf)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_http_with_limits(listener, app, tls, HttpLimits::default(), shutdown).await
}

/// [`serve_http`] with explicit limits.
///
/// Each accepted connection is served by hyper's HTTP/1.1 server with a timer, so that:
/// a request head must arrive within `header_read_timeout` (slower clients, and idle
/// keep-alive connections, are disconnected); a head larger than `max_header_bytes` gets
/// 431; a body must arrive within `body_read_timeout` of its head (else 408
/// `request_timeout`, see [`DeadlineBody`]). At most `max_connections` connections are
/// open at once: further ones wait in the kernel's accept queue until one closes (a
/// warning is logged at most every 10 s while the cap is reached). With TLS, the
/// handshake must finish within `header_read_timeout` and ALPN offers only `http/1.1`.
pub async fn serve_http_with_limits(
    listener: std::net::TcpListener,
    app: axum::Router,
    tls: Option<(PathBuf, PathBuf)>,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let listener = to_tokio(listener)?;
    let tls = match tls {
        None => None,
        Some((cert, key)) => {
            let config = load_tls(&cert, &key)
                .await
                .map_err(|source| ServeError::Tls {
                    cert: cert.clone(),
                    key: key.clone(),
                    source,
                })?;
            let rustls = axum_server::tls_rustls::RustlsConfig::from_config(config);
            spawn_sighup_reload(rustls.clone(), cert, key);
            Some(rustls)
        }
    };
    let max_connections = fit_connection_cap(limits.max_connections);
    let limits = HttpLimits {
        max_connections,
        ..limits
    };
    accept_loop(listener, app, tls, limits, shutdown).await;
    Ok(())
}

/// `listener`, made non-blocking, on the tokio runtime.
pub(crate) fn to_tokio(
    listener: std::net::TcpListener,
) -> Result<tokio::net::TcpListener, ServeError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let listen_err = |source| ServeError::Listen { addr, source };
    match listener.set_nonblocking(true) {
        Ok(()) => tokio::net::TcpListener::from_std(listener).map_err(listen_err),
        Err(e) => Err(listen_err(e)),
    }
}

/// File descriptors kept for everything but client connections: the backend pool
/// ([`BACKEND_POOL_IDLE`] = 128), up to 64 enclave connections, the SQLite database and
/// its WAL and shared-memory files, STS connections, the listener, stdio and the
/// runtime's own descriptors. 256 covers them with room to spare.
const FD_RESERVE: u64 = 256;
/// How often the "connection cap reached" warning may be logged.
const CAP_WARN_INTERVAL: Duration = Duration::from_secs(10);
/// Pause after an `accept` failure that is not about one connection (e.g. EMFILE), so
/// that the loop does not spin; the same value `axum::serve` uses.
pub(crate) const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Raises the soft open-file limit so that `cap` connections fit (up to the hard limit);
/// returns the cap that fits, lowered with a warning when the hard limit is too small.
fn fit_connection_cap(cap: usize) -> usize {
    let needed = cap as u64 + FD_RESERVE;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return cap;
    };
    if soft >= needed {
        return cap;
    }
    let target = needed.min(hard);
    let mut effective = soft;
    if target > soft && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
        tracing::info!(from = soft, to = target, "raised the open-file limit");
        effective = target;
    }
    if effective >= needed {
        return cap;
    }
    let fitted = effective.saturating_sub(FD_RESERVE).max(1) as usize;
    tracing::warn!(
        max_connections = cap,
        open_file_limit = effective,
        using = fitted,
        "the open-file limit is too low for --max-connections; serving at most {fitted} \
         connections (raise LimitNOFILE / ulimit -n, or lower --max-connections)"
    );
    fitted
}

/// Loads the certificate chain and key; ALPN offers only `http/1.1` (the only protocol
/// served).
async fn load_tls(cert: &Path, key: &Path) -> std::io::Result<Arc<rustls::ServerConfig>> {
    let loaded = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await?;
    let mut config = (*loaded.get_inner()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper panics below its minimum buffer; `serve` validates the flag already.
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES))
        .keep_alive(true);
    let http = Arc::new(http);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_cap_warning: Option<Instant> = None;
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if last_cap_warning.is_none_or(|t| t.elapsed() >= CAP_WARN_INTERVAL) {
                    last_cap_warning = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection cap reached; new connections wait until one closes"
                    );
                }
                tokio::select! {
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = &mut shutdown => break,
                }
            }
        };
        let (tcp, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "accept failed; pausing");
                    tokio::select! {
                        _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                        _ = &mut shutdown => break,
                    }
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let watcher = graceful.watcher();
        let http = http.clone();
        let app = app.clone();
        let tls = tls
            .as_ref()
            .map(|c| tokio_rustls::TlsAcceptor::from(c.get_inner()));
        tokio::spawn(async move {
            let _permit = permit;
            let service = RouterService {
                app,
                body_timeout: limits.body_read_timeout,
            };
            match tls {
                None => serve_connection(&http, tcp, service, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp))
                        .await
                    {
                        Ok(Ok(stream)) => serve_connection(&http, stream, service, watcher).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
    // Stop accepting, then let in-flight requests finish.
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the shutdown grace period; closing them");
    }
}

/// Errors of `accept` that concern one connection only: go on at once.
pub(crate) fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

async fn serve_connection<I>(
    http: &hyper::server::conn::http1::Builder,
    io: I,
    service: RouterService,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = http.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        // Timeouts, resets and parse errors of one client: not the server's problem.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The router as a hyper service, with the body deadline applied to every request.
#[derive(Clone)]
struct RouterService {
    app: axum::Router,
    body_timeout: Duration,
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for RouterService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = tower::util::Oneshot<axum::Router, http::Request<axum::body::Body>>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let timeout = self.body_timeout;
        let req = req.map(|body| {
            if hyper::body::Body::is_end_stream(&body) {
                axum::body::Body::new(body)
            } else {
                axum::body::Body::new(DeadlineBody::new(body, timeout))
            }
        });
        tower::ServiceExt::oneshot(self.app.clone(), req)
    }
}

/// A request body that fails with [`BodyReadTimeout`] if it is not complete within a
/// fixed time of the request's head (a total deadline, not an idle timeout: a client
/// sending one byte a second is cut off too).
pub struct DeadlineBody<B> {
    inner: B,
    deadline: Pin<Box<tokio::time::Sleep>>,
    after: Duration,
}

impl<B> DeadlineBody<B> {
    /// Wraps `inner`; the clock starts now.
    pub fn new(inner: B, after: Duration) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(after)),
            after,
        }
    }
}

impl<B> hyper::body::Body for DeadlineBody<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            let after = self.after;
            return Poll::Ready(Some(Err(Box::new(BodyReadTimeout { after }))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn spawn_sighup_reload(config: axum_server::tls_rustls::RustlsConfig, cert: PathBuf, key: PathBuf) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            match load_tls(&cert, &key).await {
                Ok(c) => {
                    config.reload_from_config(c);
                    tracing::info!(cert = %cert.display(), "TLS certificate reloaded")
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::rejection::BytesRejection;
    use axum::response::IntoResponse;
    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use crate::http::error::ApiError;
    /// Small limits so that each test takes about a second.
    fn small() -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_millis(400),
            body_read_timeout: Duration::from_millis(400),
            max_connections: 2,
            max_header_bytes: 8 * 1024,
        }
    }

    async fn echo(body: Result<Bytes, BytesRejection>) -> axum::response::Response {
        match body {
            Ok(b) => format!("got {} bytes", b.len()).into_response(),
            Err(rej) => match BodyReadTimeout::find(&rej) {
                Some(t) => ApiError::RequestTimeout { after: t.after }.into_response(),
                None => ApiError::BadRequest(rej.to_string()).into_response(),
            },
        }
    }

    async fn slow() -> &'static str {
        tokio::time::sleep(Duration::from_millis(600)).await;
        "slow done"
    }

    struct Server {
        addr: std::net::SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<Result<(), ServeError>>,
    }

    fn serve(limits: HttpLimits, tls: Option<(PathBuf, PathBuf)>) -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/echo", axum::routing::post(echo))
            .route("/slow", axum::routing::get(slow))
            .route("/", axum::routing::get(|| async { "ok" }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_http_with_limits(listener, app, tls, limits, async {
            let _ = rx.await;
        }));
        Server {
            addr,
            stop: Some(tx),
            task,
        }
    }

    /// Reads until the server closes or `within` passes; returns what was read and
    /// whether the connection was closed.
    async fn read_until_close(s: &mut TcpStream, within: Duration) -> (String, bool) {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let closed = tokio::time::timeout(within, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .is_ok();
        (String::from_utf8_lossy(&out).into_owned(), closed)
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        read_until_close(&mut s, Duration::from_secs(5)).await.0
    }

    #[tokio::test]
    async fn slow_request_head_is_disconnected_after_the_header_read_timeout() {
        let srv = serve(small(), None);
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nx-slow: ").await.unwrap();
        let started = Instant::now();
        let (answer, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
        assert!(closed, "still open after 5 s");
        assert!(answer.is_empty(), "no request, no answer: {answer:?}");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300), "closed after {took:?}");
    }

    #[tokio::test]
    async fn idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
        let srv = serve(small(), None);
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let (answer, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(closed, "an idle keep-alive connection is closed");
    }

    #[tokio::test]
    async fn oversized_request_head_gets_431() {
        let srv = serve(small(), None);
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        let big = "a".repeat(16 * 1024);
        let req = format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
        let _ = s.write_all(req.as_bytes()).await;
        let (answer, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
        // A head within the limit is served.
        let ok = "a".repeat(4 * 1024);
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        let req = format!("GET / HTTP/1.1\r\nhost: x\r\nx-ok: {ok}\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let (answer, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    }

    #[tokio::test]
    async fn slow_body_gets_408_after_the_body_read_timeout() {
        let srv = serve(small(), None);
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nab")
            .await
            .unwrap();
        let started = Instant::now();
        // Keep trickling: a total deadline, not an idle timeout.
        let writer = async {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = s.write_all(b"x").await;
            }
        };
        writer.await;
        let (answer, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
        assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
        assert!(answer.contains("within 400 ms"), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"));
        assert!(closed);
        assert!(started.elapsed() >= Duration::from_millis(350));
        // A complete body in time is served.
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(
            b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\nconnection: close\r\n\r\nabcd",
        )
        .await
        .unwrap();
        let (answer, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
        assert!(answer.ends_with("got 4 bytes"), "{answer}");
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_for_a_free_slot() {
        let limits = HttpLimits {
            header_read_timeout: Duration::from_secs(30),
            ..small()
        };
        let srv = serve(limits, None);
        // Two idle connections take both slots.
        let a = TcpStream::connect(srv.addr).await.unwrap();
        let _b = TcpStream::connect(srv.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // A third waits in the accept queue: no answer yet.
        let mut c = TcpStream::connect(srv.addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let (answer, closed) = read_until_close(&mut c, Duration::from_millis(500)).await;
        assert!(
            answer.is_empty() && !closed,
            "served beyond the cap: {answer:?}"
        );
        // One slot frees: the waiting connection is served.
        drop(a);
        let (answer, _) = read_until_close(&mut c, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    }

    #[tokio::test]
    async fn graceful_shutdown_finishes_in_flight_requests_and_stops_accepting() {
        let mut srv = serve(small(), None);
        let addr = srv.addr;
        let in_flight = tokio::spawn(async move { get(addr, "/slow").await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        let _ = srv.stop.take().map(|tx| tx.send(()));
        let answer = in_flight.await.unwrap();
        assert!(answer.ends_with("slow done"), "{answer}");
        tokio::time::timeout(Duration::from_secs(5), &mut srv.task)
            .await
            .expect("serve returns after draining")
            .unwrap()
            .unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no longer accepting"
        );
    }

    #[test]
    fn connection_cap_fits_the_open_file_limit() {
        assert_eq!(fit_connection_cap(16), 16);
        let fitted = fit_connection_cap(crate::config::MAX_MAX_CONNECTIONS);
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert!(fitted >= 1);
        assert!(
            fitted as u64 + FD_RESERVE <= soft.max(FD_RESERVE + 1),
            "cap {fitted} does not fit the soft limit {soft}"
        );
    }

    /// A self-signed certificate made with the `openssl` command, if there is one.
    fn self_signed(dir: &Path) -> Option<(PathBuf, PathBuf)> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let ok = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        ok.then_some((cert, key))
    }

    #[tokio::test]
    async fn tls_serves_http1_and_bounds_the_handshake() {
        crate::broker::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let Some(tls) = self_signed(dir.path()) else {
            eprintln!("SKIPPED: no openssl command to make a test certificate");
            return;
        };
        let srv = serve(small(), Some(tls));
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .resolve("localhost", srv.addr)
            .build()
            .unwrap();
        let r = client
            .get(format!("https://localhost:{}/", srv.addr.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), http::Version::HTTP_11);
        // A client that never starts the handshake is disconnected.
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        let (_, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
        assert!(closed, "a silent TLS client is cut off");
    }
}
