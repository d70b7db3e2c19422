//! TLS to PostgreSQL: the `sslmode` and `sslrootcert` parameters of a `postgres://` URL,
//! and the rustls client configuration they make (through `tokio-postgres-rustls`, the
//! rustls connector for `tokio-postgres`).
//!
//! | `sslmode` | the connection |
//! |---|---|
//! | absent, `disable` | plain TCP (no TLS) |
//! | `require`, `verify-ca` | TLS; the server's chain must lead to a CA of `sslrootcert` |
//! | `verify-full` (recommended) | as `verify-ca`, and the certificate must name the host of the URL |
//!
//! `require` verifies the chain here, where libpq's `require` alone does not: a TLS
//! connection to whoever answers is no defence against the one who answers. `prefer` and
//! `allow` are refused: they fall back to plain TCP without saying so. Client
//! certificates (`sslcert`, `sslkey`) are not supported.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::audit::db::AuditDbError;

/// The URL parameters this module takes out of the URL before the driver parses the rest
/// (the driver knows `sslmode` only as disable/prefer/require, and no `sslrootcert`).
const TLS_PARAMS: [&str; 2] = ["sslmode", "sslrootcert"];

/// libpq parameters naming client certificates and revocation lists, which this build
/// does not support (libpq docs, "Parameter Key Words").
const UNSUPPORTED_PARAMS: [&str; 5] = ["sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir"];

/// How the broker connects to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgSslMode {
    /// No TLS.
    Disable,
    /// TLS, the chain verified against `sslrootcert`, any host name.
    VerifyCa,
    /// TLS, the chain verified against `sslrootcert` and the certificate naming the host.
    VerifyFull,
}

impl PgSslMode {
    /// The name used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            PgSslMode::Disable => "disable",
            PgSslMode::VerifyCa => "verify-ca",
            PgSslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS settings of one URL: the mode, and the client configuration for modes that use
/// TLS.
#[derive(Clone)]
pub struct PgTls {
    mode: PgSslMode,
    root_cert: Option<PathBuf>,
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTls")
            .field("mode", &self.mode)
            .field("root_cert", &self.root_cert)
            .finish()
    }
}

impl PgTls {
    /// The mode.
    pub fn mode(&self) -> PgSslMode {
        self.mode
    }

    /// The driver's SSL mode for this setting.
    pub fn driver_mode(&self) -> SslMode {
        match self.mode {
            PgSslMode::Disable => SslMode::Disable,
            PgSslMode::VerifyCa | PgSslMode::VerifyFull => SslMode::Require,
        }
    }

    /// The connector to pass to `tokio_postgres::Config::connect`. With `disable` the
    /// driver never starts TLS, so its configuration (no roots) is never used.
    pub fn connector(&self) -> MakeRustlsConnect {
        MakeRustlsConnect::new(ClientConfig::clone(&self.config))
    }

    /// A hint for a connection error under this setting (empty when there is none).
    pub fn hint(&self, reason: &str) -> String {
        let root = self
            .root_cert
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if reason.contains("UnknownIssuer") || reason.contains("BadSignature") {
            format!(
                " (sslmode={}: the server's certificate is not issued by a CA in sslrootcert={root})",
                self.mode.as_str()
            )
        } else if reason.contains("NotValidForName") || reason.contains("not valid for name") {
            " (sslmode=verify-full: the server's certificate does not name the host of the \
             URL; connect by a name the certificate holds)"
                .to_string()
        } else if self.mode == PgSslMode::Disable
            && (reason.contains("no encryption") || reason.contains("SSL"))
        {
            " (the server requires TLS: add sslmode=verify-full&sslrootcert=PATH to the URL)"
                .to_string()
        } else {
            String::new()
        }
    }
}

/// The crypto provider of every PostgreSQL TLS connection (the broker's: ring).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Splits the TLS parameters out of `url`: the URL without them (for the driver), and the
/// settings they make. `redacted` names the URL in errors.
pub fn split_tls(url: &str, redacted: &str) -> Result<(String, PgTls), AuditDbError> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut kept = Vec::new();
    let mut mode = None;
    let mut root_cert = None;
    for raw in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = url::form_urlencoded::parse(raw.as_bytes())
            .next()
            .unwrap_or_default();
        if UNSUPPORTED_PARAMS.contains(&key.as_ref()) {
            return Err(AuditDbError::UnsupportedTlsParam {
                redacted: redacted.to_string(),
                param: key.into_owned(),
            });
        }
        match key.as_ref() {
            "sslmode" => mode = Some(value.into_owned()),
            "sslrootcert" => root_cert = Some(PathBuf::from(value.into_owned())),
            k if TLS_PARAMS.contains(&k) => {}
            _ => kept.push(raw),
        }
    }
    let mode = match mode.as_deref() {
        None | Some("disable") => PgSslMode::Disable,
        Some("require") | Some("verify-ca") => PgSslMode::VerifyCa,
        Some("verify-full") => PgSslMode::VerifyFull,
        Some(other) => {
            return Err(AuditDbError::SslMode {
                redacted: redacted.to_string(),
                value: other.to_string(),
            })
        }
    };
    let config = match (mode, &root_cert) {
        (PgSslMode::Disable, _) => Arc::new(client_config(mode, None)?),
        (_, None) => {
            return Err(AuditDbError::NoRootCert {
                redacted: redacted.to_string(),
                mode: mode.as_str(),
            })
        }
        (_, Some(path)) => Arc::new(client_config(mode, Some(path))?),
    };
    let stripped = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((
        stripped,
        PgTls {
            mode,
            root_cert,
            config,
        },
    ))
}

/// The CA certificates of `path` (PEM).
fn read_roots(path: &Path) -> Result<RootCertStore, AuditDbError> {
    let bad = |reason: String| AuditDbError::RootCert {
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    Ok(roots)
}

/// The client configuration of `mode`, trusting the CAs of `path` (`disable`: none, and
/// the configuration is never used).
fn client_config(mode: PgSslMode, path: Option<&Path>) -> Result<ClientConfig, AuditDbError> {
    let shown = path.map(Path::to_path_buf).unwrap_or_default();
    let tls_error = |reason: String| AuditDbError::RootCert {
        path: shown.clone(),
        reason,
    };
    let roots = Arc::new(match path {
        Some(p) => read_roots(p)?,
        None => RootCertStore::empty(),
    });
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(e.to_string()))?;
    Ok(match mode {
        PgSslMode::VerifyFull | PgSslMode::Disable => {
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        PgSslMode::VerifyCa => {
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| tls_error(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
                .with_no_client_auth()
        }
    })
}

/// `verify-ca`: the web PKI verifier with the host name check left out, nothing else.
/// rustls has no such mode of its own (it always checks the name); the chain, validity
/// dates, key usage and the handshake signatures are still the web PKI verifier's.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The web PKI verifier checks the chain first and the name last: a name error
        // means the chain passed.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_sslmode_the_url_is_unchanged_and_plain() {
        let (u, tls) = split_tls("postgres://u@h/db?connect_timeout=3", "r").unwrap();
        assert_eq!(u, "postgres://u@h/db?connect_timeout=3");
        assert_eq!(tls.mode(), PgSslMode::Disable);
        assert_eq!(tls.driver_mode(), SslMode::Disable);
        let (u, _) = split_tls("postgres://u@h/db?sslmode=disable", "r").unwrap();
        assert_eq!(u, "postgres://u@h/db");
    }

    #[test]
    fn modes_that_fall_back_or_are_unknown_are_refused() {
        for bad in ["prefer", "allow", "verify_full", ""] {
            let e = split_tls(&format!("postgres://u@h/db?sslmode={bad}"), "r").unwrap_err();
            assert!(matches!(e, AuditDbError::SslMode { .. }), "{bad}: {e:?}");
        }
        let e = split_tls("postgres://u@h/db?sslmode=require&sslcert=/c.pem", "r").unwrap_err();
        assert!(e.to_string().contains("sslcert"), "{e}");
    }

    #[test]
    fn verifying_modes_need_a_readable_root_certificate() {
        for mode in ["require", "verify-ca", "verify-full"] {
            let e = split_tls(&format!("postgres://u@h/db?sslmode={mode}"), "r").unwrap_err();
            assert!(
                matches!(e, AuditDbError::NoRootCert { .. }),
                "{mode}: {e:?}"
            );
        }
        let e = split_tls(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            "r",
        )
        .unwrap_err();
        assert!(
            matches!(&e, AuditDbError::RootCert { path, .. } if path == Path::new("/nonexistent/ca.pem")),
            "{e:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = split_tls(
            &format!(
                "postgres://u@h/db?sslmode=verify-full&sslrootcert={}",
                empty.display()
            ),
            "r",
        )
        .unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }
}
