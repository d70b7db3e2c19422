//! Unsealing the issuer seed with AWS KMS, called from inside the enclave (DESIGN §3).
//!
//! The enclave is its own KMS client: `aws-sdk-kms` with the parent's lent credentials, and
//! an HTTP transport whose TLS terminates *inside* the enclave. In production the bytes
//! travel over a vsock stream to the parent's `vsock-proxy` (CID 3), which only forwards
//! them to `kms.<region>.amazonaws.com:443`; the parent sees ciphertext. In mock mode the
//! transport is plain HTTP to a loopback KMS stand-in.
//!
//! Why not let the parent relay KMS's answer: CMS to a public RSA key is unauthenticated,
//! so a relaying parent could substitute a seed of its choice. TLS to the genuine KMS
//! endpoint closes that, which is why outside mock mode only
//! `https://kms.<region>.amazonaws.com` and `https://kms-fips.<region>.amazonaws.com` are
//! accepted as endpoints.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use agentkeys_wire::{AwsCredentials, UnsealRequest, WireErrorKind};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyEncryptionMechanism, RecipientInfo};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::error::display::DisplayErrorContext;
use http::Uri;
use hyper_util::client::legacy::connect::{
    Connect, Connected, Connection, HttpConnector as HyperHttp,
};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_vsock::{VsockAddr, VsockStream};

use crate::cms::{unwrap_ciphertext_for_recipient, RecipientKey};
use crate::keys::{Seed, SEED_BYTES};
use crate::nsm::{self, NsmDevice, NsmError};

/// vsock CID of the parent instance as seen from an enclave. Source: AWS Nitro Enclaves
/// docs ("the parent instance's CID is always 3").
pub const PARENT_CID: u32 = 3;
/// Default vsock port of the parent's `vsock-proxy` for KMS. Source: the `vsock-proxy`
/// examples in the AWS Nitro Enclaves docs (`vsock-proxy 8000 kms.<region>.amazonaws.com 443`).
pub const DEFAULT_KMS_PROXY_PORT: u32 = 8000;
/// Encryption context key and value naming the purpose. Source: DESIGN §3.
pub const CONTEXT_PURPOSE: (&str, &str) = ("agentkeys:purpose", "oidc-issuer-seed");
/// Encryption context key carrying the issuer URL. Source: DESIGN §3.
pub const CONTEXT_ISSUER_KEY: &str = "agentkeys:issuer";
/// Upper bound on a whole KMS call (connect, TLS, request, answer) including retries.
pub const KMS_OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest KMS `CiphertextBlob`. Source: KMS API reference, `Decrypt` (CiphertextBlob
/// length constraints 1–6144).
pub const MAX_SEALED_SEED_BYTES: usize = 6144;
/// Longest key id / ARN / alias. Source: KMS API reference (`KeyId` length ≤ 2048).
pub const MAX_KEY_ID_BYTES: usize = 2048;
/// Longest region name accepted (real ones are ≤ 16, e.g. `ap-southeast-4`).
const MAX_REGION_BYTES: usize = 32;

/// Failures unsealing.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// The region is not shaped like an AWS region.
    #[error("invalid AWS region {region:?}: expected e.g. \"eu-west-1\"")]
    InvalidRegion {
        /// The rejected region.
        region: String,
    },
    /// The endpoint is not allowed in this mode.
    #[error("KMS endpoint {endpoint:?} refused: {reason}")]
    EndpointNotAllowed {
        /// The rejected endpoint.
        endpoint: String,
        /// What is accepted instead.
        reason: String,
    },
    /// A request field is unusable.
    #[error("invalid unseal request: {0}")]
    InvalidRequest(String),
    /// The NSM could not produce the recipient document.
    #[error("recipient attestation failed: {0}")]
    Nsm(#[from] NsmError),
    /// KMS refused access (typically the key policy's attestation condition).
    #[error("KMS {operation} access denied: {message}")]
    AccessDenied {
        /// KMS operation.
        operation: &'static str,
        /// KMS's message.
        message: String,
    },
    /// KMS answered with another error.
    #[error("KMS {operation} failed: {code}: {message}")]
    Service {
        /// KMS operation.
        operation: &'static str,
        /// KMS error code, e.g. `InvalidCiphertextException`.
        code: String,
        /// KMS's message.
        message: String,
    },
    /// KMS could not be reached or answered garbage.
    #[error("KMS {operation} transport failure: {detail}")]
    Transport {
        /// KMS operation.
        operation: &'static str,
        /// Error chain.
        detail: String,
    },
    /// The answer lacks `CiphertextForRecipient` / `CiphertextBlob`.
    #[error("KMS {operation} answer lacks {field}")]
    MissingField {
        /// KMS operation.
        operation: &'static str,
        /// Missing field.
        field: &'static str,
    },
    /// The answer carries a plaintext: the recipient binding was ignored.
    #[error("KMS {operation} answer carries Plaintext; refused outside mock mode")]
    PlaintextReturned {
        /// KMS operation.
        operation: &'static str,
    },
    /// `CiphertextForRecipient` could not be opened.
    #[error("cannot open CiphertextForRecipient: {0}")]
    Cms(String),
    /// The unsealed seed has the wrong size.
    #[error("unsealed seed is {actual} bytes, expected {expected}")]
    SeedLength {
        /// Expected.
        expected: usize,
        /// Actual.
        actual: usize,
    },
    /// The HTTPS transport could not be set up.
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

impl KmsError {
    /// The wire error class for this failure.
    pub fn wire_kind(&self) -> WireErrorKind {
        match self {
            KmsError::InvalidRegion { .. }
            | KmsError::EndpointNotAllowed { .. }
            | KmsError::InvalidRequest(_) => WireErrorKind::InvalidRequest,
            KmsError::Nsm(_) => WireErrorKind::Nsm,
            KmsError::AccessDenied { .. } => WireErrorKind::AccessDenied,
            _ => WireErrorKind::Kms,
        }
    }
}

/// Checks that `region` looks like an AWS region: lowercase letters/digits in
/// hyphen-separated parts, at least three parts, the last one numeric (`us-east-1`,
/// `us-gov-west-1`, `ap-southeast-4`).
pub fn validate_region(region: &str) -> Result<(), KmsError> {
    let err = || KmsError::InvalidRegion {
        region: region.chars().take(64).collect(),
    };
    if region.is_empty() || region.len() > MAX_REGION_BYTES {
        return Err(err());
    }
    let parts: Vec<&str> = region.split('-').collect();
    if parts.len() < 3 {
        return Err(err());
    }
    let (last, rest) = parts.split_last().ok_or_else(err)?;
    let letters_ok = rest
        .iter()
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()));
    let digits_ok = !last.is_empty() && last.len() <= 2 && last.bytes().all(|b| b.is_ascii_digit());
    if letters_ok && digits_ok && rest[0].len() == 2 {
        Ok(())
    } else {
        Err(err())
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

// ---------------------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Unseal
// ---------------------------------------------------------------------------------------

/// How this enclave reaches KMS.
#[derive(Debug, Clone)]
pub struct KmsSettings {
    /// Mock mode: loopback endpoints, plain HTTP.
    pub mock: bool,
    /// vsock CID of the proxy (production).
    pub proxy_cid: u32,
    /// vsock port of the proxy (production).
    pub proxy_port: u32,
    /// The issuer, bound into the encryption context.
    pub issuer: String,
    /// Whole-operation timeout.
    pub timeout: Duration,
}

/// A successful unseal.
#[derive(Debug)]
pub struct Unsealed {
    /// The seed (zeroized on drop).
    pub seed: Seed,
    /// The KMS `CiphertextBlob` to hand back to the parent.
    pub sealed_seed: Vec<u8>,
    /// Whether this was a genesis (`GenerateDataKey`).
    pub genesis: bool,
}

fn validate_request(req: &UnsealRequest) -> Result<(), KmsError> {
    let id = &req.kms_key_id;
    if id.is_empty() || id.len() > MAX_KEY_ID_BYTES || id.chars().any(|c| c.is_control()) {
        return Err(KmsError::InvalidRequest(format!(
            "kms_key_id must be 1..={MAX_KEY_ID_BYTES} printable characters"
        )));
    }
    if let Some(s) = &req.sealed_seed {
        if s.is_empty() || s.len() > MAX_SEALED_SEED_BYTES {
            return Err(KmsError::InvalidRequest(format!(
                "sealed_seed is {} bytes, expected 1..={MAX_SEALED_SEED_BYTES}",
                s.len()
            )));
        }
    }
    let c = &req.credentials;
    if c.access_key_id.is_empty() || c.secret_access_key.is_empty() {
        return Err(KmsError::InvalidRequest(
            "credentials need an access key id and a secret access key".into(),
        ));
    }
    Ok(())
}

fn classify<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> KmsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let SdkError::ServiceError(service) = &err {
        let e = service.err();
        let code = e.code().unwrap_or("Unknown").to_string();
        let message = e.message().unwrap_or("").to_string();
        if code == "AccessDeniedException" {
            return KmsError::AccessDenied { operation, message };
        }
        return KmsError::Service {
            operation,
            code,
            message,
        };
    }
    KmsError::Transport {
        operation,
        detail: DisplayErrorContext(&err).to_string(),
    }
}

fn kms_client(
    settings: &KmsSettings,
    endpoint: &KmsEndpoint,
    region: &str,
    credentials: &AwsCredentials,
) -> Result<aws_sdk_kms::Client, KmsError> {
    let http = match endpoint {
        KmsEndpoint::Aws { .. } => vsock_https_client(settings.proxy_cid, settings.proxy_port)?,
        KmsEndpoint::Loopback { .. } => loopback_http_client(),
    };
    let creds = aws_credential_types::Credentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.clone(),
        credentials.session_token.clone(),
        None,
        "agentkeys-unseal",
    );
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new(region.to_string()))
        .credentials_provider(creds)
        .http_client(http)
        .endpoint_url(endpoint.url())
        .timeout_config(
            aws_sdk_kms::config::timeout::TimeoutConfig::builder()
                .operation_timeout(settings.timeout)
                .build(),
        )
        .build();
    Ok(aws_sdk_kms::Client::from_conf(config))
}

/// Unseals (or, without a sealed seed, creates) the issuer seed through KMS with a fresh
/// recipient attestation document for `recipient`.
pub async fn unseal(
    settings: &KmsSettings,
    nsm: &dyn NsmDevice,
    recipient: &RecipientKey,
    req: &UnsealRequest,
) -> Result<Unsealed, KmsError> {
    validate_request(req)?;
    let endpoint = resolve_endpoint(&req.region, req.kms_endpoint.as_deref(), settings.mock)?;
    let spki = recipient.public_key_spki_der();
    let document = nsm::attest(nsm, None, None, Some(spki.as_ref()))?;
    let recipient_info = RecipientInfo::builder()
        .attestation_document(Blob::new(document))
        .key_encryption_algorithm(KeyEncryptionMechanism::RsaesOaepSha256)
        .build();
    let client = kms_client(settings, &endpoint, &req.region, &req.credentials)?;
    let (purpose_key, purpose_value) = CONTEXT_PURPOSE;

    let (operation, for_recipient, plaintext_present, sealed_seed, genesis) = match &req.sealed_seed
    {
        None => {
            let op = "GenerateDataKey";
            let out = client
                .generate_data_key()
                .key_id(&req.kms_key_id)
                .key_spec(DataKeySpec::Aes256)
                .encryption_context(purpose_key, purpose_value)
                .encryption_context(CONTEXT_ISSUER_KEY, &settings.issuer)
                .recipient(recipient_info)
                .send()
                .await
                .map_err(|e| classify(op, e))?;
            let blob = out
                .ciphertext_blob()
                .ok_or(KmsError::MissingField {
                    operation: op,
                    field: "CiphertextBlob",
                })?
                .as_ref()
                .to_vec();
            (
                op,
                out.ciphertext_for_recipient().map(|b| b.as_ref().to_vec()),
                out.plaintext().is_some(),
                blob,
                true,
            )
        }
        Some(sealed) => {
            let op = "Decrypt";
            let out = client
                .decrypt()
                .key_id(&req.kms_key_id)
                .ciphertext_blob(Blob::new(sealed.clone()))
                .encryption_context(purpose_key, purpose_value)
                .encryption_context(CONTEXT_ISSUER_KEY, &settings.issuer)
                .recipient(recipient_info)
                .send()
                .await
                .map_err(|e| classify(op, e))?;
            (
                op,
                out.ciphertext_for_recipient().map(|b| b.as_ref().to_vec()),
                out.plaintext().is_some(),
                sealed.clone(),
                false,
            )
        }
    };
    if plaintext_present && !settings.mock {
        return Err(KmsError::PlaintextReturned { operation });
    }
    let ber = for_recipient.ok_or(KmsError::MissingField {
        operation,
        field: "CiphertextForRecipient",
    })?;
    let seed_bytes = unwrap_ciphertext_for_recipient(&ber, recipient)
        .map_err(|e| KmsError::Cms(e.to_string()))?;
    if seed_bytes.len() != SEED_BYTES {
        return Err(KmsError::SeedLength {
            expected: SEED_BYTES,
            actual: seed_bytes.len(),
        });
    }
    let seed = Seed::from_slice(&seed_bytes).map_err(|e| KmsError::Cms(e.to_string()))?;
    Ok(Unsealed {
        seed,
        sealed_seed,
        genesis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn request(sealed: Option<Vec<u8>>) -> UnsealRequest {
        UnsealRequest {
            region: "us-east-1".into(),
            kms_key_id: "alias/x".into(),
            kms_endpoint: None,
            credentials: AwsCredentials {
                access_key_id: "AKID".into(),
                secret_access_key: "s".into(),
                session_token: None,
            },
            sealed_seed: sealed,
        }
    }

    #[test]
    fn request_validation() {
        validate_request(&request(None)).unwrap();
        assert!(validate_request(&request(Some(vec![]))).is_err());
        assert!(validate_request(&request(Some(vec![0; MAX_SEALED_SEED_BYTES + 1]))).is_err());
        let mut r = request(None);
        r.kms_key_id = String::new();
        assert!(validate_request(&r).is_err());
        let mut r = request(None);
        r.credentials.secret_access_key = String::new();
        assert!(validate_request(&r).is_err());
    }

    #[test]
    fn error_kinds() {
        let e = KmsError::AccessDenied {
            operation: "Decrypt",
            message: "m".into(),
        };
        assert_eq!(e.wire_kind(), WireErrorKind::AccessDenied);
        let e = KmsError::PlaintextReturned {
            operation: "Decrypt",
        };
        assert_eq!(e.wire_kind(), WireErrorKind::Kms);
    }
}
