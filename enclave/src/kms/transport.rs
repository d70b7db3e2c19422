//! How the enclave reaches KMS: the endpoint policy (which URLs are KMS at all) and the
//! HTTP clients handed to `aws-sdk-kms`. In production a hyper client runs TLS (rustls,
//! WebPKI roots) inside the enclave over a vsock stream to the parent's `vsock-proxy`;
//! in mock mode it speaks plain HTTP to a loopback KMS stand-in.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use http::Uri;
use hyper_util::client::legacy::connect::{
    Connect, Connected, Connection, HttpConnector as HyperHttp,
};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_vsock::{VsockAddr, VsockStream};

use super::KmsError;

/// vsock CID of the parent instance as seen from an enclave. Source: AWS Nitro Enclaves
/// docs ("the parent instance's CID is always 3").
pub const PARENT_CID: u32 = 3;
/// Default vsock port of the parent's `vsock-proxy` for KMS. Source: the `vsock-proxy`
/// examples in the AWS Nitro Enclaves docs (`vsock-proxy 8000 kms.<region>.amazonaws.com 443`).
pub const DEFAULT_KMS_PROXY_PORT: u32 = 8000;
/// Checks that `region` looks like an AWS region (the rule of
/// [`agentkeys_wire::kms_key_arn::is_aws_region`]).
pub fn validate_region(region: &str) -> Result<(), KmsError> {
    if agentkeys_wire::kms_key_arn::is_aws_region(region) {
        Ok(())
    } else {
        Err(KmsError::InvalidRegion {
            region: region.chars().take(64).collect(),
        })
    }
}

/// A KMS endpoint accepted by the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsEndpoint {
    /// Genuine AWS KMS over TLS (through the vsock proxy).
    Aws {
        /// `https://kms[-fips].<region>.amazonaws.com`.
        url: String,
    },
    /// A loopback KMS stand-in over plain HTTP (mock mode only).
    Loopback {
        /// `http://127.0.0.1:PORT` or similar.
        url: String,
    },
}

impl KmsEndpoint {
    /// The URL handed to the SDK.
    pub fn url(&self) -> &str {
        match self {
            KmsEndpoint::Aws { url } | KmsEndpoint::Loopback { url } => url,
        }
    }
}

/// Applies the endpoint policy: outside mock mode only the regional KMS (or KMS-FIPS)
/// endpoint over HTTPS; in mock mode only a loopback `http://` URL.
pub fn resolve_endpoint(
    region: &str,
    requested: Option<&str>,
    mock: bool,
) -> Result<KmsEndpoint, KmsError> {
    validate_region(region)?;
    let standard = format!("https://kms.{region}.amazonaws.com");
    let fips = format!("https://kms-fips.{region}.amazonaws.com");
    if mock {
        let Some(url) = requested else {
            return Err(KmsError::EndpointNotAllowed {
                endpoint: String::new(),
                reason: "mock mode needs an explicit loopback kms_endpoint \
                         (http://127.0.0.1:PORT)"
                    .into(),
            });
        };
        return if is_loopback_http(url) {
            Ok(KmsEndpoint::Loopback {
                url: url.trim_end_matches('/').to_string(),
            })
        } else {
            Err(KmsEndpoint::refuse(url, "mock mode accepts only http://127.0.0.1:PORT, http://localhost:PORT or http://[::1]:PORT"))
        };
    }
    match requested {
        None => Ok(KmsEndpoint::Aws { url: standard }),
        Some(url) => {
            let trimmed = url.strip_suffix('/').unwrap_or(url);
            if trimmed == standard || trimmed == fips {
                Ok(KmsEndpoint::Aws {
                    url: trimmed.to_string(),
                })
            } else {
                Err(KmsEndpoint::refuse(
                    url,
                    &format!("only {standard} or {fips} are accepted outside mock mode"),
                ))
            }
        }
    }
}

impl KmsEndpoint {
    fn refuse(url: &str, reason: &str) -> KmsError {
        KmsError::EndpointNotAllowed {
            endpoint: url.chars().take(256).collect(),
            reason: reason.to_string(),
        }
    }
}

/// `http://` to 127.0.0.1, localhost or [::1], with an explicit port and no path/userinfo.
fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = if let Some(r) = rest.strip_prefix("[::1]:") {
        ("[::1]", r)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => return false,
        }
    };
    let host_ok = matches!(host, "127.0.0.1" | "localhost" | "[::1]");
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    host_ok && port_ok
}

/// A vsock stream usable by hyper.
#[derive(Debug)]
pub struct VsockConn(VsockStream);

impl AsyncRead for VsockConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for VsockConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Connection for VsockConn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// A hyper connector (`tower::Service<Uri>`) that ignores the URI's host and opens a vsock
/// stream to the parent's `vsock-proxy`. TLS (with SNI and certificate checks for the
/// URI's host) is layered on top by `hyper-rustls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VsockConnector {
    /// Destination CID (the parent: 3).
    pub cid: u32,
    /// Destination port (the proxy's).
    pub port: u32,
}

impl tower::Service<Uri> for VsockConnector {
    type Response = TokioIo<VsockConn>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let addr = VsockAddr::new(self.cid, self.port);
        Box::pin(async move {
            let stream = VsockStream::connect(addr).await?;
            Ok(TokioIo::new(VsockConn(stream)))
        })
    }
}

/// An `aws-smithy` HTTP client over a hyper 1 client with any connector.
#[derive(Clone)]
struct HyperSmithyClient<C> {
    client: Client<C, SdkBody>,
}

impl<C> fmt::Debug for HyperSmithyClient<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HyperSmithyClient")
    }
}

impl<C> HttpConnector for HyperSmithyClient<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(r) => r,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        let client = self.client.clone();
        HttpConnectorFuture::new(async move {
            let response = client
                .request(request)
                .await
                .map_err(|e| ConnectorError::io(e.into()))?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

impl<C> HttpClient for HyperSmithyClient<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

fn smithy_client<C>(connector: C) -> SharedHttpClient
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let client = Client::builder(TokioExecutor::new()).build(connector);
    SharedHttpClient::new(HyperSmithyClient { client })
}

/// HTTPS over vsock with rustls (ring provider, Mozilla roots), HTTP/1.1 only.
pub fn vsock_https_client(cid: u32, port: u32) -> Result<SharedHttpClient, KmsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)
        .map_err(|e| KmsError::Tls(e.to_string()))?
        .https_only()
        .enable_http1()
        .wrap_connector(VsockConnector { cid, port });
    Ok(smithy_client(https))
}

/// Plain HTTP over loopback TCP (mock mode).
pub fn loopback_http_client() -> SharedHttpClient {
    let mut http = HyperHttp::new();
    http.enforce_http(true);
    http.set_nodelay(true);
    smithy_client(http)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentkeys_wire::WireErrorKind;

    #[test]
    fn regions() {
        for ok in [
            "us-east-1",
            "eu-west-3",
            "us-gov-west-1",
            "ap-southeast-4",
            "il-central-1",
        ] {
            validate_region(ok).unwrap();
        }
        for bad in [
            "",
            "us-east",
            "US-EAST-1",
            "us-east-1.evil.com",
            "us-east-1/",
            "us--1",
            "useast1",
            "us-east-100",
            "u-east-1",
            "us-east-1 ",
            "evil.com#us-east-1",
        ] {
            assert!(
                matches!(validate_region(bad), Err(KmsError::InvalidRegion { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn production_endpoints() {
        assert_eq!(
            resolve_endpoint("eu-west-1", None, false).unwrap().url(),
            "https://kms.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            resolve_endpoint(
                "eu-west-1",
                Some("https://kms-fips.eu-west-1.amazonaws.com/"),
                false
            )
            .unwrap()
            .url(),
            "https://kms-fips.eu-west-1.amazonaws.com"
        );
        for bad in [
            "http://kms.eu-west-1.amazonaws.com",
            "https://kms.eu-west-2.amazonaws.com",
            "https://kms.eu-west-1.amazonaws.com.evil.com",
            "https://kms.eu-west-1.amazonaws.com:8443",
            "https://evil@kms.eu-west-1.amazonaws.com",
            "https://kms.eu-west-1.amazonaws.com/path",
            "http://127.0.0.1:4000",
            "",
        ] {
            let err = resolve_endpoint("eu-west-1", Some(bad), false).unwrap_err();
            match &err {
                KmsError::EndpointNotAllowed { endpoint, .. } => assert_eq!(endpoint, bad),
                other => panic!("{bad}: {other}"),
            }
            assert_eq!(err.wire_kind(), WireErrorKind::InvalidRequest);
            assert!(err.to_string().contains(bad));
        }
        assert!(matches!(
            resolve_endpoint("eu-west-1.evil", None, false),
            Err(KmsError::InvalidRegion { .. })
        ));
    }

    #[test]
    fn mock_endpoints() {
        for ok in [
            "http://127.0.0.1:4000",
            "http://localhost:1",
            "http://[::1]:65535/",
        ] {
            resolve_endpoint("us-east-1", Some(ok), true).unwrap();
        }
        for bad in [
            "https://kms.us-east-1.amazonaws.com",
            "http://10.0.0.1:4000",
            "http://127.0.0.1",
            "http://127.0.0.1:0",
            "http://127.0.0.1:70000",
            "http://127.0.0.1:80/x",
            "http://user@127.0.0.1:80",
            "http://127.0.0.2:80",
        ] {
            assert!(
                matches!(
                    resolve_endpoint("us-east-1", Some(bad), true),
                    Err(KmsError::EndpointNotAllowed { .. })
                ),
                "{bad}"
            );
        }
        assert!(resolve_endpoint("us-east-1", None, true).is_err());
    }

    #[test]
    fn vsock_https_client_builds() {
        // Builds only; never connects.
        vsock_https_client(PARENT_CID, DEFAULT_KMS_PROXY_PORT).unwrap();
    }
}
