//! The issuer's TLS endpoint: every connection the parent relays from the issuer
//! hostname arrives here, unread, and its TLS ends here.
//!
//! Per connection: read the ClientHello (bounded in time); refuse a server name other
//! than the issuer host with the `unrecognized_name` alert (RFC 6066 section 3); answer
//! `acme-tls/1` (RFC 8737) only with the certificate of a pending challenge, and then
//! close; otherwise finish the handshake with the served certificate and answer the
//! issuer routes over HTTP/1.1. A malformed ClientHello, a stalled peer or a broken
//! connection ends only that connection. At most [`MAX_CONNECTIONS`] at a time.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_rustls::LazyConfigAcceptor;

use super::state::ACME_TLS_ALPN;
use super::IssuerTls;

/// Most relayed connections served at once; further ones are closed at once. The issuer
/// surface is low-traffic (AWS STS caches the JWKS); 256 bounds memory per enclave.
pub const MAX_CONNECTIONS: usize = 256;
/// Longest time for a ClientHello and the rest of the handshake (each).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time to read a request's headers on an open connection (the idle bound of a
/// kept-alive connection).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest life of one connection, however busy.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

/// TLS alert `unrecognized_name` (RFC 6066 section 3; RFC 8446 section 6.2 code 112).
pub const ALERT_UNRECOGNIZED_NAME: u8 = 112;
/// TLS alert `no_application_protocol` (RFC 7301 section 3.2; code 120).
pub const ALERT_NO_APPLICATION_PROTOCOL: u8 = 120;
/// TLS alert `handshake_failure` (RFC 8446 section 6.2; code 40).
pub const ALERT_HANDSHAKE_FAILURE: u8 = 40;

/// What the issuer routes read from the enclave.
pub trait IssuerSurface: Send + Sync + 'static {
    /// The issuer URL (`iss`).
    fn issuer(&self) -> String;
    /// The exact JWKS bytes served.
    fn jwks(&self) -> Result<Vec<u8>, Refusal>;
    /// The body of `/.well-known/nitro-attestation`.
    fn attestation(
        &self,
        nonce: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<serde_json::Value, Refusal>> + Send;
    /// The body of `/.well-known/acme-account`, its document carrying the auditor's
    /// nonce when one is given.
    fn acme_account(
        &self,
        nonce: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<serde_json::Value, Refusal>> + Send;
}

/// An error answer: status, `error` code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code.
    pub error: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl Refusal {
    /// Builds a refusal.
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            error,
            message: message.into(),
        }
    }
}

/// Why one connection ended without being served.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// No complete ClientHello in time.
    #[error("no ClientHello within {0:?}")]
    HelloTimeout(Duration),
    /// The first bytes are not a TLS ClientHello.
    #[error("not a TLS ClientHello: {0}")]
    Hello(io::Error),
    /// A server name other than the issuer host (or none).
    #[error("server name {found:?} is not the issuer host; refused with unrecognized_name")]
    OtherName {
        /// The name asked for.
        found: Option<String>,
    },
    /// `acme-tls/1` without a pending challenge.
    #[error("acme-tls/1 without a pending challenge; refused with no_application_protocol")]
    NoChallenge,
    /// Nothing to serve yet (sealed).
    #[error("no certificate yet (the seed is not unsealed); refused with handshake_failure")]
    NotReady,
    /// The rest of the handshake failed or took too long.
    #[error("TLS handshake: {0}")]
    Handshake(String),
}

/// Writes a fatal TLS alert record (RFC 8446 section 5.1/6: content type 21, legacy
/// version 0x0303, length 2, level fatal (2), description) and closes.
async fn send_alert<IO: AsyncWrite + Unpin>(mut io: IO, description: u8) {
    let record = [21, 3, 3, 0, 2, 2, description];
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let _ = io.write_all(&record).await;
        let _ = io.shutdown().await;
    })
    .await;
}

/// Serves one relayed connection to its end.
pub async fn serve_connection<IO, S>(
    io: IO,
    tls: Arc<IssuerTls>,
    surface: Arc<S>,
) -> Result<(), ConnectionError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: IssuerSurface,
{
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor)
        .await
        .map_err(|_| ConnectionError::HelloTimeout(HANDSHAKE_TIMEOUT))?
        .map_err(ConnectionError::Hello)?;
    let hello = start.client_hello();
    let name = hello.server_name().map(str::to_ascii_lowercase);
    let acme = hello
        .alpn()
        .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
    if name.as_deref() != Some(tls.hostname()) {
        send_alert(start.io, ALERT_UNRECOGNIZED_NAME).await;
        return Err(ConnectionError::OtherName { found: name });
    }
    if acme {
        let Some(config) = tls.challenge() else {
            send_alert(start.io, ALERT_NO_APPLICATION_PROTOCOL).await;
            return Err(ConnectionError::NoChallenge);
        };
        let mut stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, start.into_stream(config))
            .await
            .map_err(|_| ConnectionError::Handshake("timed out".into()))?
            .map_err(|e| ConnectionError::Handshake(e.to_string()))?;
        // RFC 8737 section 3: the validation connection carries no application data.
        let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.shutdown()).await;
        return Ok(());
    }
    let Some(serving) = tls.serving() else {
        send_alert(start.io, ALERT_HANDSHAKE_FAILURE).await;
        return Err(ConnectionError::NotReady);
    };
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, start.into_stream(serving.config.clone()))
        .await
        .map_err(|_| ConnectionError::Handshake("timed out".into()))?
        .map_err(|e| ConnectionError::Handshake(e.to_string()))?;
    let service = service_fn(move |request| {
        let surface = surface.clone();
        async move { Ok::<_, Infallible>(route(surface.as_ref(), request).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    // A peer error or the lifetime bound ends this connection only.
    let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
    Ok(())
}

/// Accepts connections from `accept` until it fails for good, serving each in its own
/// task, at most [`MAX_CONNECTIONS`] at a time.
pub async fn serve_with<A, F, IO, S>(mut accept: A, tls: Arc<IssuerTls>, surface: Arc<S>)
where
    A: FnMut() -> F,
    F: Future<Output = io::Result<IO>>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: IssuerSurface,
{
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let io = match accept().await {
            Ok(io) => io,
            Err(e) => {
                tracing::warn!(error = %e, "issuer TLS accept failed");
                // An accept error (e.g. out of descriptors) is usually transient.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(
                limit = MAX_CONNECTIONS,
                "issuer TLS connection refused: too many open"
            );
            drop(io);
            continue;
        };
        let tls = tls.clone();
        let surface = surface.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_connection(io, tls, surface).await {
                tracing::debug!(error = %e, "issuer TLS connection refused");
            }
        });
    }
}

/// Serves the issuer's TLS on the enclave's own listener (vsock, or a Unix socket in
/// mock mode).
pub async fn serve<S: IssuerSurface>(
    listener: agentkeys_wire::Listener,
    tls: Arc<IssuerTls>,
    surface: Arc<S>,
) {
    let listener = Arc::new(listener);
    serve_with(
        move || {
            let listener = listener.clone();
            async move { listener.accept().await.map(|(stream, _)| stream) }
        },
        tls,
        surface,
    )
    .await;
}

fn json(status: StatusCode, body: Vec<u8>, cache: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

fn refusal(r: Refusal) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"error": r.error, "message": r.message});
    json(r.status, body.to_string().into_bytes(), "no-store")
}

fn value(v: Result<serde_json::Value, Refusal>) -> Response<Full<Bytes>> {
    match v {
        Ok(v) => json(StatusCode::OK, v.to_string().into_bytes(), "no-store"),
        Err(r) => refusal(r),
    }
}

/// The nonce of the query ([`agentkeys_wire::parse_nonce_query`]); a bad one is a 400.
pub fn parse_nonce(query: Option<&str>) -> Result<Option<Vec<u8>>, Refusal> {
    agentkeys_wire::parse_nonce_query(query)
        .map_err(|m| Refusal::new(StatusCode::BAD_REQUEST, "bad_request", m))
}

/// Answers one request of the issuer surface.
pub async fn route<S: IssuerSurface>(
    surface: &S,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);
    if request.method() != Method::GET {
        return refusal(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{} is not allowed; the issuer answers GET",
                request.method()
            ),
        ));
    }
    match path.as_str() {
        "/.well-known/openid-configuration" => json(
            StatusCode::OK,
            agentkeys_wire::discovery_document(&surface.issuer())
                .to_string()
                .into_bytes(),
            "public, max-age=300",
        ),
        "/.well-known/jwks.json" => match surface.jwks() {
            Ok(jwks) => json(StatusCode::OK, jwks, "public, max-age=300"),
            Err(r) => refusal(r),
        },
        "/.well-known/nitro-attestation" => match parse_nonce(query.as_deref()) {
            Ok(nonce) => value(surface.attestation(nonce).await),
            Err(r) => refusal(r),
        },
        "/.well-known/acme-account" => match parse_nonce(query.as_deref()) {
            Ok(nonce) => value(surface.acme_account(nonce).await),
            Err(r) => refusal(r),
        },
        other => refusal(Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no route {:?} on the issuer host",
                other.chars().take(64).collect::<String>()
            ),
        )),
    }
}
