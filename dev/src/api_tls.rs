//! `agentkeys-dev dev --acme pebble --api-tls`: the mint API over HTTPS.
//!
//! The broker's listener serves the mint API with a certificate made for the dev stack
//! (a throw-away CA and a leaf for `localhost` and `127.0.0.1`, both new on every start),
//! as a production broker does with `--tls-cert`/`--tls-key`. Only in the Pebble mode:
//! there the issuer is a hostname of its own whose TLS ends in the enclave, so the parent
//! terminating the *mint API's* TLS is legitimate. Without it the issuer is the broker's
//! own URL, and a parent holding that URL's TLS key would be terminating the issuer's
//! TLS, which is what an issuer audit (`agentkeys-attest verify --issuer`) flags.

use std::path::{Path, PathBuf};

use anyhow::Context;
use zeroize::Zeroizing;

/// The CA clients of the mint API trust (`curl --cacert`), in the data directory.
pub const API_TLS_CA_FILE: &str = "api-tls-ca.pem";
/// The leaf certificate the broker serves, in the data directory.
pub const API_TLS_CERT_FILE: &str = "api-tls-cert.pem";
/// The leaf's private key (mode 0600), in the data directory.
pub const API_TLS_KEY_FILE: &str = "api-tls-key.pem";
/// Mode of the key file: its owner alone may read it.
const KEY_FILE_MODE: u32 = 0o600;

/// Why `--api-tls` is refused without `--acme pebble`, and what to do instead.
pub const NEEDS_PEBBLE: &str = "--api-tls needs --acme pebble: without it the issuer is the \
broker's own URL, so a certificate on the broker's listener would make the parent terminate \
the issuer's TLS (the key that `agentkeys-attest verify --issuer` must find in the enclave). \
Add --acme pebble (the issuer then gets a hostname of its own whose TLS ends in the \
enclave, and the mint API may have TLS of its own), or drop --api-tls";

/// A throw-away CA and a leaf for `localhost` and `127.0.0.1` signed by it, all PEM.
pub struct LoopbackCertificates {
    /// The CA certificate: what clients trust.
    pub ca_pem: String,
    /// The leaf certificate: what the server presents.
    pub leaf_pem: String,
    /// The leaf's private key (PKCS#8).
    pub key_pem: Zeroizing<String>,
}

/// Makes a CA named `ca_name` (its common name) and a loopback leaf signed by it, both
/// ECDSA P-256 (rcgen's default key type).
pub fn loopback_certificates(ca_name: &str) -> anyhow::Result<LoopbackCertificates> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        SanType,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()])?;
    leaf.subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let leaf_pem = leaf.signed_by(&key, &issuer)?.pem();
    Ok(LoopbackCertificates {
        ca_pem,
        leaf_pem,
        key_pem: Zeroizing::new(key.serialize_pem()),
    })
}

/// The mint API's TLS files in the data directory.
#[derive(Clone, Debug)]
pub struct ApiTls {
    /// The CA clients trust.
    pub ca: PathBuf,
    /// The leaf certificate the broker serves.
    pub cert: PathBuf,
    /// The leaf's key.
    pub key: PathBuf,
}

impl ApiTls {
    /// Makes a new CA and leaf and writes them into `data_dir` (the key with mode 0600).
    pub fn write(data_dir: &Path) -> anyhow::Result<ApiTls> {
        let certs = loopback_certificates("agentkeys dev stack mint API CA")
            .context("cannot make the mint API's TLS certificate")?;
        let tls = ApiTls {
            ca: data_dir.join(API_TLS_CA_FILE),
            cert: data_dir.join(API_TLS_CERT_FILE),
            key: data_dir.join(API_TLS_KEY_FILE),
        };
        // The key first: a cert on disk without its key would be served by nobody.
        agentkeys_broker::enclave::sealed_seed::write_atomically(
            &tls.key,
            certs.key_pem.as_bytes(),
            KEY_FILE_MODE,
        )
        .with_context(|| format!("cannot write {}", tls.key.display()))?;
        crate::stack::write_atomically(&tls.cert, certs.leaf_pem.as_bytes())?;
        crate::stack::write_atomically(&tls.ca, certs.ca_pem.as_bytes())?;
        Ok(tls)
    }

    /// The broker listener's `(certificate, key)` paths.
    pub fn serve_paths(&self) -> (PathBuf, PathBuf) {
        (self.cert.clone(), self.key.clone())
    }
}

/// An HTTP client of a mint API whose certificate chains to the CA in the PEM file `ca`
/// (besides the usual roots).
pub fn client_trusting(ca: &Path, timeout: std::time::Duration) -> anyhow::Result<reqwest::Client> {
    let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
    let root = reqwest::Certificate::from_pem(&pem)
        .with_context(|| format!("{} is not a PEM certificate", ca.display()))?;
    Ok(reqwest::Client::builder()
        .add_root_certificate(root)
        .timeout(timeout)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_written_with_a_private_key_and_new_on_each_start() {
        let dir = tempfile::tempdir().unwrap();
        let first = ApiTls::write(dir.path()).unwrap();
        assert_eq!(mode(&first.key), 0o600);
        for p in [&first.ca, &first.cert] {
            let text = std::fs::read_to_string(p).unwrap();
            assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");
        }
        assert!(std::fs::read_to_string(&first.key)
            .unwrap()
            .contains("PRIVATE KEY"));
        let cert = std::fs::read(&first.cert).unwrap();
        let second = ApiTls::write(dir.path()).unwrap();
        assert_ne!(std::fs::read(&second.cert).unwrap(), cert);
        assert_eq!(mode(&second.key), 0o600);
        assert!(client_trusting(&second.ca, std::time::Duration::from_secs(1)).is_ok());
    }
}
