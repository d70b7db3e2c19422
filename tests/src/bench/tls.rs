//! TLS for the benchmark's HTTPS phases: the load generator's rustls client, and the
//! minimal axum route served over rustls (the server side of the HTTPS floor).
//!
//! Both use rustls with the `ring` provider because the broker does: it installs ring as
//! its process-wide provider (`agentkeys_broker::broker::install_crypto_provider`) and its
//! listener builds its server configuration from that default
//! (`parent/src/http/listener.rs`, `load_tls`). The floor server is set up as that
//! listener is (one certificate, ALPN `http/1.1` only, hyper's HTTP/1.1 server over a
//! `tokio_rustls` acceptor, `TCP_NODELAY`), minus the broker's timeouts and caps, so the
//! two differ by what the broker does, not by how TLS is served.

use std::fmt;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The only application protocol the broker's listener offers (`load_tls`).
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The provider both sides use (see the module's comment).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client for a load run: the rustls connector and the name the server's
/// certificate must carry.
#[derive(Clone)]
pub struct TlsClient {
    /// Connects over an established TCP stream.
    pub connector: tokio_rustls::TlsConnector,
    /// Checked against the server's certificate (a DNS name or an IP address).
    pub server_name: ServerName<'static>,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// A client that trusts only the certificates in `ca_pem` (PEM) and checks the server
    /// against `server_name`; it offers ALPN `http/1.1` as curl and browsers do.
    pub fn trusting(ca_pem: &[u8], server_name: &str) -> anyhow::Result<TlsClient> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots
                .add(cert.context("reading the CA's PEM")?)
                .context("the CA certificate is not usable as a trust anchor")?;
        }
        if roots.is_empty() {
            anyhow::bail!("the CA's PEM holds no certificate");
        }
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("rustls protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| anyhow!("`{server_name}` is not a TLS server name: {e}"))?;
        Ok(TlsClient {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// A server configuration like the broker's: the certificate chain `cert_pem` with the
/// key `key_pem`, ALPN `http/1.1` only.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<rustls::ServerConfig> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("reading the server certificate's PEM")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("reading the server key's PEM")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("rustls protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the server certificate and key do not go together")?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// Serves `app` over TLS on `listener` until the runtime stops: each connection is
/// accepted, handshaken and served by hyper's HTTP/1.1 server (keep-alive) on a task of
/// its own.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: axum::Router,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let http = Arc::new(hyper::server::conn::http1::Builder::new());
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // A failed accept concerns one connection (or a full descriptor table that a
            // closing connection frees): go on, as the broker's accept loop does.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, http, app) = (acceptor.clone(), http.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = http
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_and_server_configs_from_the_dev_stack_helper() {
        let certs = agentkeys_dev::api_tls::loopback_certificates("bench test CA").unwrap();
        let client = TlsClient::trusting(certs.ca_pem.as_bytes(), "127.0.0.1").unwrap();
        assert!(matches!(client.server_name, ServerName::IpAddress(_)));
        assert!(TlsClient::trusting(certs.ca_pem.as_bytes(), "localhost").is_ok());
        let server = server_config(certs.leaf_pem.as_bytes(), certs.key_pem.as_bytes()).unwrap();
        assert_eq!(server.alpn_protocols, vec![ALPN_HTTP1.to_vec()]);
    }

    #[test]
    fn bad_inputs_say_what_is_wrong() {
        let e = TlsClient::trusting(b"not a pem", "127.0.0.1").unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e:#}");
        let certs = agentkeys_dev::api_tls::loopback_certificates("bench test CA").unwrap();
        let e = TlsClient::trusting(certs.ca_pem.as_bytes(), "not a name!").unwrap_err();
        assert!(e.to_string().contains("not a TLS server name"), "{e:#}");
        let other = agentkeys_dev::api_tls::loopback_certificates("other").unwrap();
        let e = server_config(certs.leaf_pem.as_bytes(), other.key_pem.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("do not go together"), "{e:#}");
    }
}
