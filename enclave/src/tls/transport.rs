//! How the ACME client reaches the CA: HTTPS that ends inside the enclave. In production
//! a hyper client runs TLS (rustls, WebPKI roots) over a vsock stream to the parent's
//! `vsock-proxy`, whose allowlist holds the CA host's port 443, exactly like the KMS
//! calls ([`crate::kms::transport`]); in mock mode it connects over loopback TCP to a test
//! CA whose root is given with `--acme-root`. Either way the parent sees TLS records only.
//!
//! Every request must go to the directory's own host and port: the CA hands out URLs in
//! its answers, and one on another host is refused (the vsock-proxy could not reach it
//! anyway, and nothing else should be asked).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::crypto::CryptoProvider;
use rustls::RootCertStore;

use crate::config::AcmeDirectory;
use crate::kms::{VsockConnector, PARENT_CID};

/// Default vsock port of the parent's `vsock-proxy` to the CA's host (port 443). The stock
/// `nitro-enclaves-vsock-proxy` takes 8000 (AWS's examples) and the image's KMS proxy 8001
/// (`eif/Dockerfile`, `scripts/systemd/agentkeys-vsock-proxy.service`); the CA's is 8002.
pub const DEFAULT_ACME_PROXY_PORT: u32 = 8002;
/// Largest answer accepted from the CA: a directory, an order or a chain of a few
/// certificates takes a few KiB; 1 MiB bounds what a misbehaving CA can make us hold.
pub const MAX_ACME_RESPONSE_BYTES: usize = 1024 * 1024;

/// Failures talking to the CA.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A URL off the directory's host.
    #[error("refused {url}: the CA's URLs must be on {host}:{port}, the directory's host")]
    OffHost {
        /// The URL refused.
        url: String,
        /// The directory's host.
        host: String,
        /// The directory's port.
        port: u16,
    },
    /// No answer in time.
    #[error("no answer from {url} within {after:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The timeout.
        after: Duration,
    },
    /// The exchange failed (connection, TLS, HTTP).
    #[error("HTTPS to {url} failed: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The CA answered with a server error (5xx).
    #[error("{url} answered HTTP {status}: {detail}")]
    ServerError {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// The problem document's `detail` (RFC 7807), or the start of the body.
        detail: String,
    },
    /// The answer was larger than [`MAX_ACME_RESPONSE_BYTES`].
    #[error("answer from {url} is larger than {max} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        max: usize,
    },
    /// The trusted roots could not be set up.
    #[error("CA roots: {0}")]
    Roots(String),
}

type Body = BodyWrapper<Bytes>;

#[derive(Clone)]
enum Inner {
    Vsock(Client<hyper_rustls::HttpsConnector<VsockConnector>, Body>),
    Tcp(Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>),
}

/// The ACME client's HTTP: one host, a timeout per exchange, a bound on answers.
#[derive(Clone)]
pub struct AcmeHttp {
    inner: Inner,
    host: String,
    port: u16,
    timeout: Duration,
}

fn tls_config(
    provider: Arc<CryptoProvider>,
    roots: RootCertStore,
) -> Result<rustls::ClientConfig, TransportError> {
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Roots(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl AcmeHttp {
    /// Production: TLS with the WebPKI roots over vsock to the parent's proxy on
    /// `proxy_port`.
    pub fn vsock(
        provider: Arc<CryptoProvider>,
        directory: &AcmeDirectory,
        proxy_port: u32,
        timeout: Duration,
    ) -> Result<AcmeHttp, TransportError> {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(provider, roots)?)
            .https_only()
            .enable_http1()
            .wrap_connector(VsockConnector {
                cid: PARENT_CID,
                port: proxy_port,
            });
        Ok(AcmeHttp {
            inner: Inner::Vsock(Client::builder(TokioExecutor::new()).build(https)),
            host: directory.host.clone(),
            port: directory.port,
            timeout,
        })
    }

    /// Mock mode: TLS over loopback TCP, trusting only `root_pem` (the test CA's root).
    pub fn loopback(
        provider: Arc<CryptoProvider>,
        directory: &AcmeDirectory,
        root_pem: &[u8],
        timeout: Duration,
    ) -> Result<AcmeHttp, TransportError> {
        let mut roots = RootCertStore::empty();
        let mut reader = root_pem;
        for cert in rustls_pemfile::certs(&mut reader) {
            let cert = cert.map_err(|e| TransportError::Roots(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| TransportError::Roots(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(TransportError::Roots(
                "--acme-root holds no PEM certificate".into(),
            ));
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(provider, roots)?)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Ok(AcmeHttp {
            inner: Inner::Tcp(Client::builder(TokioExecutor::new()).build(https)),
            host: directory.host.clone(),
            port: directory.port,
            timeout,
        })
    }

    /// Whether `uri` is on the directory's host and port, over https.
    pub fn allowed(&self, uri: &http::Uri) -> bool {
        uri.scheme_str() == Some("https")
            && uri
                .host()
                .is_some_and(|h| h.eq_ignore_ascii_case(&self.host))
            && uri.port_u16().unwrap_or(443) == self.port
            && !uri.authority().is_some_and(|a| a.as_str().contains('@'))
    }
}

fn other(e: TransportError) -> instant_acme::Error {
    instant_acme::Error::Other(Box::new(e))
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<Body>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let url = req.uri().to_string();
        if !self.allowed(req.uri()) {
            let e = TransportError::OffHost {
                url: url.chars().take(256).collect(),
                host: self.host.clone(),
                port: self.port,
            };
            return Box::pin(async move { Err(other(e)) });
        }
        let response = match &self.inner {
            Inner::Vsock(c) => c.request(req),
            Inner::Tcp(c) => c.request(req),
        };
        let timeout = self.timeout;
        Box::pin(async move {
            let exchange = async {
                let response = response.await.map_err(|e| TransportError::Http {
                    url: url.clone(),
                    reason: error_chain(&e),
                })?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, MAX_ACME_RESPONSE_BYTES)
                    .collect()
                    .await
                    .map_err(|e| {
                        if e.is::<http_body_util::LengthLimitError>() {
                            TransportError::TooLarge {
                                url: url.clone(),
                                max: MAX_ACME_RESPONSE_BYTES,
                            }
                        } else {
                            TransportError::Http {
                                url: url.clone(),
                                reason: e.to_string(),
                            }
                        }
                    })?
                    .to_bytes();
                if parts.status.is_server_error() {
                    // The client would read a 5xx answer as the resource it asked for;
                    // the CA's own explanation is what the operator needs.
                    return Err(TransportError::ServerError {
                        url: url.clone(),
                        status: parts.status.as_u16(),
                        detail: problem_detail(&body),
                    });
                }
                Ok::<_, TransportError>(http::Response::from_parts(parts, Full::new(body)))
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(Ok(response)) => Ok(BytesResponse::from(response)),
                Ok(Err(e)) => Err(other(e)),
                Err(_) => Err(other(TransportError::Timeout {
                    url,
                    after: timeout,
                })),
            }
        })
    }
}

/// An error and its causes, `: `-separated (hyper's own message omits the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The `detail` of an RFC 7807 problem document, else the start of the body as text
/// (at most 200 characters either way).
fn problem_detail(body: &[u8]) -> String {
    let detail = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    detail.chars().take(200).collect()
}
