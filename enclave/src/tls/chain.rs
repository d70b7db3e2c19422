//! Checking a certificate chain before it is served: the parent's cached copy after a
//! restart (outside bytes) and the CA's answer to an order.
//!
//! The enclave serves a chain only if its leaf certifies the enclave's own TLS key, names
//! the issuer host, and is valid now. The CA's signatures are the clients' to check (they
//! trust the CA, the enclave does not need to); a chain whose leaf fails one of these three
//! checks could never have come from an honest order, so it is refused with the reason.

use der::{Decode, Encode};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

/// Largest chain accepted, in PEM bytes: a leaf and two intermediates take about 6 KiB;
/// 64 KiB leaves room for long chains without letting a cache file grow unbounded.
pub const MAX_CHAIN_PEM_BYTES: usize = 64 * 1024;
/// Most certificates in a chain (a leaf and up to three intermediates in practice).
pub const MAX_CHAIN_CERTIFICATES: usize = 8;

/// Why a chain is not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// Larger than any chain we serve.
    #[error("chain is {actual} bytes of PEM, more than {max}")]
    TooLarge {
        /// Size found.
        actual: usize,
        /// [`MAX_CHAIN_PEM_BYTES`].
        max: usize,
    },
    /// No `CERTIFICATE` block, or a block that is not valid PEM.
    #[error("chain is not PEM certificates: {reason}")]
    NotPem {
        /// What is wrong.
        reason: String,
    },
    /// More certificates than [`MAX_CHAIN_CERTIFICATES`].
    #[error("chain has {actual} certificates, more than {max}")]
    TooManyCertificates {
        /// Count found.
        actual: usize,
        /// The limit.
        max: usize,
    },
    /// A certificate is not DER X.509.
    #[error("certificate {index} of the chain is not X.509: {reason}")]
    NotX509 {
        /// Position in the chain (0 = leaf).
        index: usize,
        /// Decoder message.
        reason: String,
    },
    /// The leaf certifies another key.
    #[error("the leaf certifies another key (SPKI SHA-256 {found}, this enclave's TLS key is {expected})")]
    OtherKey {
        /// SHA-256 of the leaf's SPKI, hex.
        found: String,
        /// SHA-256 of the enclave's TLS key SPKI, hex.
        expected: String,
    },
    /// The leaf does not name the issuer host.
    #[error("the leaf names {names:?}, not the issuer host {hostname}")]
    OtherName {
        /// The issuer host.
        hostname: String,
        /// The DNS names in the leaf's subjectAltName.
        names: Vec<String>,
    },
    /// The leaf has expired.
    #[error("the leaf expired at {not_after} (UNIX seconds); now is {now}")]
    Expired {
        /// The leaf's notAfter.
        not_after: u64,
        /// The enclave's clock.
        now: u64,
    },
    /// The leaf is not valid yet.
    #[error("the leaf is valid only from {not_before} (UNIX seconds); now is {now}")]
    NotYetValid {
        /// The leaf's notBefore.
        not_before: u64,
        /// The enclave's clock.
        now: u64,
    },
}

/// A chain that passed [`check_chain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedChain {
    /// The chain as PEM, leaf first (re-encoded: exactly the certificates, nothing else).
    pub pem: String,
    /// The certificates, leaf first, as served in the handshake.
    pub der: Vec<CertificateDer<'static>>,
    /// The leaf's notBefore, UNIX seconds.
    pub not_before: u64,
    /// The leaf's notAfter, UNIX seconds.
    pub not_after: u64,
}

/// Splits PEM text into its `CERTIFICATE` blocks (DER), refusing anything else but
/// whitespace between them.
pub fn parse_pem_chain(pem: &str) -> Result<Vec<CertificateDer<'static>>, ChainError> {
    if pem.len() > MAX_CHAIN_PEM_BYTES {
        return Err(ChainError::TooLarge {
            actual: pem.len(),
            max: MAX_CHAIN_PEM_BYTES,
        });
    }
    let mut reader = pem.as_bytes();
    let mut certs = Vec::new();
    loop {
        match rustls_pemfile::read_one(&mut reader) {
            Ok(None) => break,
            Ok(Some(rustls_pemfile::Item::X509Certificate(der))) => {
                if certs.len() == MAX_CHAIN_CERTIFICATES {
                    return Err(ChainError::TooManyCertificates {
                        actual: certs.len() + 1,
                        max: MAX_CHAIN_CERTIFICATES,
                    });
                }
                certs.push(der);
            }
            Ok(Some(_)) => {
                return Err(ChainError::NotPem {
                    reason: "a PEM block that is not a CERTIFICATE".into(),
                })
            }
            Err(e) => {
                return Err(ChainError::NotPem {
                    reason: format!("{e:?}"),
                })
            }
        }
    }
    if certs.is_empty() {
        return Err(ChainError::NotPem {
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// Checks `pem` (leaf first) against the enclave's TLS key (`tls_spki_sha256`), the
/// issuer `hostname` (lower case) and the clock (`now`, UNIX seconds).
pub fn check_chain(
    pem: &str,
    tls_spki_sha256: &[u8; 32],
    hostname: &str,
    now: u64,
) -> Result<CheckedChain, ChainError> {
    let der = parse_pem_chain(pem)?;
    let mut leaf = None;
    for (index, cert) in der.iter().enumerate() {
        let parsed = Certificate::from_der(cert.as_ref()).map_err(|e| ChainError::NotX509 {
            index,
            reason: e.to_string(),
        })?;
        if index == 0 {
            leaf = Some(parsed);
        }
    }
    let Some(leaf) = leaf else {
        return Err(ChainError::NotPem {
            reason: "no CERTIFICATE block".into(),
        });
    };
    let tbs = &leaf.tbs_certificate;
    let spki = tbs
        .subject_public_key_info
        .to_der()
        .map_err(|e| ChainError::NotX509 {
            index: 0,
            reason: e.to_string(),
        })?;
    let found: [u8; 32] = Sha256::digest(&spki).into();
    if &found != tls_spki_sha256 {
        return Err(ChainError::OtherKey {
            found: hex::encode(found),
            expected: hex::encode(tls_spki_sha256),
        });
    }
    let names = dns_names(&leaf)?;
    if !names.iter().any(|n| n.eq_ignore_ascii_case(hostname)) {
        return Err(ChainError::OtherName {
            hostname: hostname.to_string(),
            names,
        });
    }
    let not_before = tbs.validity.not_before.to_unix_duration().as_secs();
    let not_after = tbs.validity.not_after.to_unix_duration().as_secs();
    if now < not_before {
        return Err(ChainError::NotYetValid { not_before, now });
    }
    if now >= not_after {
        return Err(ChainError::Expired { not_after, now });
    }
    Ok(CheckedChain {
        pem: to_pem(&der),
        der,
        not_before,
        not_after,
    })
}

/// The DNS names of a certificate's subjectAltName (none if it has no such extension).
fn dns_names(cert: &Certificate) -> Result<Vec<String>, ChainError> {
    let san = cert
        .tbs_certificate
        .get::<SubjectAltName>()
        .map_err(|e| ChainError::NotX509 {
            index: 0,
            reason: format!("subjectAltName: {e}"),
        })?;
    Ok(san
        .map(|(_, san)| {
            san.0
                .into_iter()
                .filter_map(|n| match n {
                    GeneralName::DnsName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// PEM text of DER certificates, leaf first.
pub fn to_pem(der: &[CertificateDer<'_>]) -> String {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    let mut out = String::new();
    for cert in der {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = STANDARD.encode(cert.as_ref());
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}
