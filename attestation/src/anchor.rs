//! The pinned trust anchor: the AWS Nitro Enclaves root certificate, or (only when asked
//! for explicitly) the mock NSM root.

use std::fmt;

use der::Decode;
use sha2::{Digest, Sha256};
use x509_cert::name::Name;
use x509_cert::Certificate;

use crate::certificate::check_self_signed_root;
use crate::error::AnchorError;
use crate::oids;

/// The AWS Nitro Enclaves Root-G1 certificate, PEM. Source: AWS Nitro Enclaves User Guide,
/// "Verifying the root of trust" (`AWS_NitroEnclaves_Root-G1.zip`).
pub const AWS_NITRO_ROOT_G1_PEM: &str = include_str!("roots/aws-nitro-root-g1.pem");

/// The same certificate, DER (the bytes compared with `cabundle[0]`).
const AWS_NITRO_ROOT_G1_DER: &[u8] = include_bytes!("roots/aws-nitro-root-g1.der");

/// SHA-256 of the Root-G1 DER, as published by AWS next to the download
/// ("Verifying the root of trust"). Tests check that the embedded certificate matches it.
pub const AWS_NITRO_ROOT_G1_SHA256: &str =
    "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";

/// Subject of Root-G1 (RFC 4514 rendering).
const AWS_NITRO_ROOT_G1_SUBJECT: &str = "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US";

/// The organization name that marks the mock NSM root (`O=AgentKeys Mock Nitro` in its
/// subject). A root carrying it is refused unless trusted explicitly.
pub const MOCK_ROOT_ORGANIZATION: &str = "AgentKeys Mock Nitro";

/// A pinned root certificate: verification requires `cabundle[0]` to be byte-for-byte this
/// certificate; `cabundle[0]` itself is never trusted.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustAnchor {
    der: Vec<u8>,
    sha256: [u8; 32],
    subject: String,
    mock: bool,
}

impl fmt::Debug for TrustAnchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustAnchor")
            .field("subject", &self.subject)
            .field("sha256", &self.sha256_hex())
            .field("mock", &self.mock)
            .finish()
    }
}

impl TrustAnchor {
    /// AWS Nitro Enclaves Root-G1, embedded, checked against its pinned SHA-256. Tests check
    /// its self-signature, which [`TrustAnchor::from_der`] checks for other roots.
    pub fn aws_nitro_root_g1() -> TrustAnchor {
        TrustAnchor {
            der: AWS_NITRO_ROOT_G1_DER.to_vec(),
            sha256: Sha256::digest(AWS_NITRO_ROOT_G1_DER).into(),
            subject: AWS_NITRO_ROOT_G1_SUBJECT.to_owned(),
            mock: false,
        }
    }

    /// A caller-supplied root (PEM). Refuses the mock root (its subject is marked with
    /// `O=AgentKeys Mock Nitro`).
    pub fn from_pem(pem: &str) -> Result<TrustAnchor, AnchorError> {
        Self::from_der(&pem_to_der(pem)?)
    }

    /// A caller-supplied root (DER). Refuses the mock root.
    pub fn from_der(der: &[u8]) -> Result<TrustAnchor, AnchorError> {
        let anchor = Self::parse(der)?;
        if anchor.mock {
            return Err(AnchorError::MockRoot {
                subject: anchor.subject,
            });
        }
        Ok(anchor)
    }

    /// The mock root; only with cargo feature `mock-root` AND called explicitly (the CLI's
    /// `--allow-mock-root`). Accepts any root certificate, marked or not.
    #[cfg(feature = "mock-root")]
    pub fn mock_root_explicitly_trusted(pem: &str) -> Result<TrustAnchor, AnchorError> {
        Self::parse(&pem_to_der(pem)?)
    }

    fn parse(der: &[u8]) -> Result<TrustAnchor, AnchorError> {
        let cert = Certificate::from_der(der).map_err(|e| AnchorError::Certificate {
            message: e.to_string(),
        })?;
        let subject = cert.tbs_certificate.subject.to_string();
        let mock = is_mock_name(&cert.tbs_certificate.subject);
        check_self_signed_root(der, cert).map_err(|reason| AnchorError::NotSelfSigned {
            subject: subject.clone(),
            reason,
        })?;
        Ok(TrustAnchor {
            der: der.to_vec(),
            sha256: Sha256::digest(der).into(),
            subject,
            mock,
        })
    }

    /// The root certificate, DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// SHA-256 of the DER.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// SHA-256 of the DER, lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// The root's subject (RFC 4514).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// True when the subject carries the mock root marker.
    pub fn is_mock(&self) -> bool {
        self.mock
    }

    /// True for the embedded AWS Root-G1.
    pub fn is_aws_nitro_root_g1(&self) -> bool {
        self.sha256_hex() == AWS_NITRO_ROOT_G1_SHA256
    }
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, AnchorError> {
    let (label, der) =
        der::pem::decode_vec(pem.trim().as_bytes()).map_err(|e| AnchorError::Pem {
            message: e.to_string(),
        })?;
    if label != "CERTIFICATE" {
        return Err(AnchorError::Label {
            actual: label.to_owned(),
        });
    }
    Ok(der)
}

/// True when an organization (O) attribute of `name` contains [`MOCK_ROOT_ORGANIZATION`].
pub(crate) fn is_mock_name(name: &Name) -> bool {
    let marker = MOCK_ROOT_ORGANIZATION.as_bytes();
    let by_attribute = name.0.iter().flat_map(|rdn| rdn.0.iter()).any(|atv| {
        atv.oid == oids::ORGANIZATION_NAME
            && atv
                .value
                .value()
                .windows(marker.len())
                .any(|window| window == marker)
    });
    let by_rendering = name
        .to_string()
        .contains(&format!("O={MOCK_ROOT_ORGANIZATION}"));
    by_attribute || by_rendering
}
