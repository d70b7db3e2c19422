//! The mock attestation PKI, shaped like the AWS Nitro Enclaves PKI.
//!
//! AWS: a P-384 root (`CN=aws.nitro-enclaves`, 30 years) → a regional intermediate
//! (pathLen 2) → a zonal intermediate (pathLen 1) → an instance intermediate (pathLen 0,
//! keyCertSign only) → a per-enclave leaf that lives 3 hours, has no EKU, no SAN, and
//! key usage digitalSignature + nonRepudiation. Every signature is ECDSA P-384 / SHA-384.
//!
//! The mock mirrors that shape. Its root and intermediates are derived from
//! [`MOCK_PKI_SEED`], a **published** constant: the mock PKI is public by design and
//! protects nothing. Determinism is what lets an enclave's mock NSM and a separate KMS
//! stand-in process agree on the same root without exchanging anything. The root's subject
//! carries `O=AgentKeys Mock Nitro` ([`MOCK_ROOT_ORGANIZATION`]) so that production
//! verifiers can recognise and refuse it.
//!
//! The leaf key is random (generated with the OS RNG) and re-issued by the mock NSM when
//! its 3-hour validity runs out.

use std::sync::OnceLock;
use std::time::Duration;

use const_oid::db::rfc4519;
use const_oid::db::rfc5912::ECDSA_WITH_SHA_384;
use const_oid::AssociatedOid;
use der::asn1::{Any, BitString, GeneralizedTime, OctetString, SetOfVec, UtcTime};
use der::{Decode, Encode, EncodePem, Tag};
use p384::ecdsa::signature::Signer;
use p384::ecdsa::{Signature, SigningKey};
use p384::pkcs8::EncodePublicKey;
use sha2::{Digest as _, Sha256, Sha384};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

/// The published seed of the mock PKI. Public by design: anyone can re-derive the mock
/// root and intermediate keys from it, which is exactly why the mock root must never be
/// trusted outside development and tests.
pub const MOCK_PKI_SEED: &[u8] =
    b"agentkeys-mock-nitro-pki-v1 | PUBLIC SEED | this PKI is a mock and protects nothing";

/// The organization name that marks the mock root (and every mock certificate).
/// Verifiers refuse a root whose subject carries this `O=` unless explicitly told.
pub const MOCK_ROOT_ORGANIZATION: &str = "AgentKeys Mock Nitro";

/// Common name of the mock root, echoing AWS's `aws.nitro-enclaves`.
pub const MOCK_ROOT_COMMON_NAME: &str = "aws.nitro-enclaves mock root";

/// Leaf certificate lifetime: 3 hours, like the AWS Nitro leaf (`docs/attestation.md`,
/// "Certificate path"; and the
/// NotBefore/NotAfter of every genuine document in `fixtures/nitro-attestation`).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(3 * 60 * 60);

/// Root validity start: the AWS Nitro Enclaves Root-G1 NotBefore (2019-10-28T13:28:05Z).
const ROOT_NOT_BEFORE_UNIX: u64 = 1_572_269_285;
/// Root validity end: the AWS Nitro Enclaves Root-G1 NotAfter (2049-10-28T14:28:05Z).
const ROOT_NOT_AFTER_UNIX: u64 = 2_519_044_085;
/// Intermediates are valid 2020-01-01T00:00:00Z …
const INTERMEDIATE_NOT_BEFORE_UNIX: u64 = 1_577_836_800;
/// … to 2049-10-28T00:00:00Z (inside the root; deterministic, so not short-lived like AWS's).
const INTERMEDIATE_NOT_AFTER_UNIX: u64 = 2_518_992_000;
/// 2050-01-01T00:00:00Z: RFC 5280 §4.1.2.5 switches from UTCTime to GeneralizedTime here.
const GENERALIZED_TIME_FROM_UNIX: u64 = 2_524_608_000;

/// Instance id used in the mock instance intermediate's CN.
pub const MOCK_INSTANCE_ID: &str = "i-0123456789abcdef0";
/// Region label used in mock certificate names.
pub const MOCK_REGION: &str = "mock-region-1";

/// Errors building mock certificates. They only arise from programming errors or
/// out-of-range clock values; callers turn them into `ErrorCode::InternalError`.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// DER encoding failed.
    #[error("DER encoding of {what} failed: {source}")]
    Der {
        /// Which structure.
        what: &'static str,
        /// The encoder's error.
        source: der::Error,
    },
    /// The SPKI of a key could not be encoded.
    #[error("public key encoding failed: {0}")]
    PublicKey(String),
    /// A time outside what X.509 can encode.
    #[error("time {unix_seconds} s cannot be encoded in a certificate: {source}")]
    Time {
        /// The time.
        unix_seconds: u64,
        /// The encoder's error.
        source: der::Error,
    },
}

fn der_err(what: &'static str) -> impl FnOnce(der::Error) -> PkiError {
    move |source| PkiError::Der { what, source }
}

/// One certificate authority of the mock chain: its certificate and signing key.
pub struct MockCa {
    /// DER of the certificate.
    pub certificate_der: Vec<u8>,
    name: Name,
    key: SigningKey,
    key_id: Vec<u8>,
}

impl std::fmt::Debug for MockCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockCa")
            .field("certificate_der_len", &self.certificate_der.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The deterministic part of the mock PKI: the root and the three intermediates.
#[derive(Debug)]
pub struct MockPki {
    /// Root first, then regional, zonal and instance intermediates (AWS's `cabundle` order).
    pub chain: Vec<MockCa>,
}

/// A leaf certificate with its key, valid for [`LEAF_VALIDITY`].
pub struct MockLeaf {
    /// DER of the leaf certificate.
    pub certificate_der: Vec<u8>,
    /// NotBefore, UNIX seconds.
    pub not_before_unix: u64,
    /// NotAfter, UNIX seconds.
    pub not_after_unix: u64,
    pub(crate) key: SigningKey,
}

impl std::fmt::Debug for MockLeaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockLeaf")
            .field("not_before_unix", &self.not_before_unix)
            .field("not_after_unix", &self.not_after_unix)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The process-wide mock PKI (built once; identical in every process).
pub fn mock_pki() -> &'static MockPki {
    static PKI: OnceLock<MockPki> = OnceLock::new();
    PKI.get_or_init(|| match MockPki::derive() {
        Ok(pki) => pki,
        // Only reachable through a programming error in fixed inputs, never from input.
        Err(e) => panic!("the fixed mock PKI could not be built: {e}"),
    })
}

/// DER of the mock root certificate (deterministic: the same bytes in every process).
pub fn mock_root_der() -> Vec<u8> {
    mock_pki().chain[0].certificate_der.clone()
}

/// PEM of the mock root certificate (deterministic: the same text in every process).
pub fn mock_root_pem() -> String {
    let der = &mock_pki().chain[0].certificate_der;
    match Certificate::from_der(der).and_then(|c| c.to_pem(der::pem::LineEnding::LF)) {
        Ok(pem) => pem,
        Err(e) => panic!("the fixed mock root could not be PEM-encoded: {e}"),
    }
}

/// The `cabundle` of a mock document: root first, then the intermediates.
pub fn mock_cabundle() -> Vec<Vec<u8>> {
    mock_pki()
        .chain
        .iter()
        .map(|ca| ca.certificate_der.clone())
        .collect()
}

/// Derives a P-384 key from the published seed and a label (SHA-384 of
/// seed ‖ "/" ‖ label ‖ counter, retried in the negligible case of an invalid scalar).
fn derive_key(label: &str) -> SigningKey {
    for counter in 0u32.. {
        let mut h = Sha384::new();
        h.update(MOCK_PKI_SEED);
        h.update(b"/");
        h.update(label.as_bytes());
        h.update(counter.to_be_bytes());
        let bytes = h.finalize();
        if let Ok(key) = SigningKey::from_bytes(&bytes) {
            return key;
        }
    }
    unreachable!("a 2^-190 event happened 2^32 times in a row")
}

/// A 16-byte positive serial number derived from the seed and a label.
fn derive_serial(label: &str) -> Vec<u8> {
    let mut h = Sha384::new();
    h.update(MOCK_PKI_SEED);
    h.update(b"/serial/");
    h.update(label.as_bytes());
    h.finalize()[..16].to_vec()
}

/// Attribute value types used in names.
#[derive(Clone, Copy)]
enum Str {
    Printable,
    Utf8,
}

fn name(parts: &[(const_oid::ObjectIdentifier, Str, &str)]) -> Result<Name, PkiError> {
    let mut rdns = Vec::with_capacity(parts.len());
    for (oid, kind, value) in parts {
        let tag = match kind {
            Str::Printable => Tag::PrintableString,
            Str::Utf8 => Tag::Utf8String,
        };
        let atv = AttributeTypeAndValue {
            oid: *oid,
            value: Any::new(tag, value.as_bytes()).map_err(der_err("name attribute"))?,
        };
        let set = SetOfVec::try_from(vec![atv]).map_err(der_err("RDN"))?;
        rdns.push(RelativeDistinguishedName(set));
    }
    Ok(RdnSequence(rdns))
}

fn mock_name(cn: &str, with_locality: bool) -> Result<Name, PkiError> {
    let mut parts = vec![(rfc4519::C, Str::Printable, "US")];
    if with_locality {
        parts.push((rfc4519::ST, Str::Utf8, "Washington"));
        parts.push((rfc4519::L, Str::Utf8, "Seattle"));
    }
    parts.push((rfc4519::O, Str::Utf8, MOCK_ROOT_ORGANIZATION));
    parts.push((rfc4519::OU, Str::Utf8, "Mock"));
    parts.push((rfc4519::CN, Str::Utf8, cn));
    name(&parts)
}

fn time(unix_seconds: u64) -> Result<Time, PkiError> {
    let d = Duration::from_secs(unix_seconds);
    if unix_seconds < GENERALIZED_TIME_FROM_UNIX {
        UtcTime::from_unix_duration(d).map(Time::UtcTime)
    } else {
        GeneralizedTime::from_unix_duration(d).map(Time::GeneralTime)
    }
    .map_err(|source| PkiError::Time {
        unix_seconds,
        source,
    })
}

fn spki_of(key: &SigningKey) -> Result<SubjectPublicKeyInfoOwned, PkiError> {
    let doc = key
        .verifying_key()
        .to_public_key_der()
        .map_err(|e| PkiError::PublicKey(e.to_string()))?;
    SubjectPublicKeyInfoOwned::from_der(doc.as_bytes()).map_err(der_err("SPKI"))
}

/// Key identifier: RFC 7093 §2 method 1 (leftmost 160 bits of SHA-256 of the
/// subjectPublicKey BIT STRING contents).
fn key_id(spki: &SubjectPublicKeyInfoOwned) -> Vec<u8> {
    Sha256::digest(spki.subject_public_key.raw_bytes())[..20].to_vec()
}

fn extension<T: AssociatedOid + Encode>(
    value: &T,
    critical: bool,
    what: &'static str,
) -> Result<Extension, PkiError> {
    let der = value.to_der().map_err(der_err(what))?;
    Ok(Extension {
        extn_id: T::OID,
        critical,
        extn_value: OctetString::new(der).map_err(der_err(what))?,
    })
}

struct CertSpec<'a> {
    serial: &'a [u8],
    not_before: u64,
    not_after: u64,
    subject: Name,
    spki: SubjectPublicKeyInfoOwned,
    extensions: Vec<Extension>,
}

fn sign_certificate(
    spec: CertSpec<'_>,
    issuer: &Name,
    issuer_key: &SigningKey,
) -> Result<Vec<u8>, PkiError> {
    let algorithm = AlgorithmIdentifierOwned {
        oid: ECDSA_WITH_SHA_384,
        parameters: None,
    };
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(spec.serial).map_err(der_err("serial number"))?,
        signature: algorithm.clone(),
        issuer: issuer.clone(),
        validity: Validity {
            not_before: time(spec.not_before)?,
            not_after: time(spec.not_after)?,
        },
        subject: spec.subject,
        subject_public_key_info: spec.spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(spec.extensions),
    };
    let tbs_der = tbs.to_der().map_err(der_err("TBSCertificate"))?;
    // ECDSA P-384 with SHA-384; RFC 6979 nonces make the fixed CAs byte-for-byte stable.
    let signature: Signature = issuer_key.sign(&tbs_der);
    let signature_der = signature.to_der();
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: algorithm,
        signature: BitString::from_bytes(signature_der.as_bytes()).map_err(der_err("signature"))?,
    };
    cert.to_der().map_err(der_err("Certificate"))
}

impl MockPki {
    fn derive() -> Result<MockPki, PkiError> {
        let ca_usage =
            KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyCertSign | KeyUsages::CRLSign);

        // Root: BasicConstraints CA (critical, no pathLen), SKI, KeyUsage (critical)
        // digitalSignature|keyCertSign|cRLSign, exactly like AWS Root-G1.
        let root_key = derive_key("root");
        let root_spki = spki_of(&root_key)?;
        let root_kid = key_id(&root_spki);
        let root_name = mock_name(MOCK_ROOT_COMMON_NAME, false)?;
        let root_der = sign_certificate(
            CertSpec {
                serial: &derive_serial("root"),
                not_before: ROOT_NOT_BEFORE_UNIX,
                not_after: ROOT_NOT_AFTER_UNIX,
                subject: root_name.clone(),
                spki: root_spki,
                extensions: vec![
                    extension(
                        &BasicConstraints {
                            ca: true,
                            path_len_constraint: None,
                        },
                        true,
                        "basic constraints",
                    )?,
                    extension(
                        &SubjectKeyIdentifier(
                            OctetString::new(root_kid.clone()).map_err(der_err("SKI"))?,
                        ),
                        false,
                        "subject key identifier",
                    )?,
                    extension(&ca_usage, true, "key usage")?,
                ],
            },
            &root_name,
            &root_key,
        )?;
        let mut chain = vec![MockCa {
            certificate_der: root_der,
            name: root_name,
            key: root_key,
            key_id: root_kid,
        }];

        // Regional (pathLen 2) and zonal (pathLen 1) intermediates: BC critical, AKI, SKI,
        // KeyUsage critical digitalSignature|keyCertSign|cRLSign, like AWS's.
        let intermediates = [
            (
                "regional",
                format!("b5e1c0de0123abcd.{MOCK_REGION}.aws.nitro-enclaves"),
                2u8,
            ),
            (
                "zonal",
                format!("0f1e2d3c4b5a6978.zonal.{MOCK_REGION}.aws.nitro-enclaves"),
                1u8,
            ),
        ];
        for (label, cn, path_len) in intermediates {
            let key = derive_key(label);
            let spki = spki_of(&key)?;
            let kid = key_id(&spki);
            let subject = mock_name(&cn, false)?;
            let issuer = chain
                .last()
                .ok_or(PkiError::PublicKey("empty chain".into()))?;
            let der = sign_certificate(
                CertSpec {
                    serial: &derive_serial(label),
                    not_before: INTERMEDIATE_NOT_BEFORE_UNIX,
                    not_after: INTERMEDIATE_NOT_AFTER_UNIX,
                    subject: subject.clone(),
                    spki,
                    extensions: vec![
                        extension(
                            &BasicConstraints {
                                ca: true,
                                path_len_constraint: Some(path_len),
                            },
                            true,
                            "basic constraints",
                        )?,
                        extension(
                            &AuthorityKeyIdentifier {
                                key_identifier: Some(
                                    OctetString::new(issuer.key_id.clone())
                                        .map_err(der_err("AKI"))?,
                                ),
                                authority_cert_issuer: None,
                                authority_cert_serial_number: None,
                            },
                            false,
                            "authority key identifier",
                        )?,
                        extension(
                            &SubjectKeyIdentifier(
                                OctetString::new(kid.clone()).map_err(der_err("SKI"))?,
                            ),
                            false,
                            "subject key identifier",
                        )?,
                        extension(&ca_usage, true, "key usage")?,
                    ],
                },
                &issuer.name,
                &issuer.key,
            )?;
            chain.push(MockCa {
                certificate_der: der,
                name: subject,
                key,
                key_id: kid,
            });
        }

        // Instance intermediate (pathLen 0): BC critical and KeyUsage critical keyCertSign
        // only, no key identifiers: exactly AWS's per-instance CA.
        let key = derive_key("instance");
        let spki = spki_of(&key)?;
        let kid = key_id(&spki);
        let subject = mock_name(
            &format!("{MOCK_INSTANCE_ID}.{MOCK_REGION}.aws.nitro-enclaves"),
            true,
        )?;
        let issuer = chain
            .last()
            .ok_or(PkiError::PublicKey("empty chain".into()))?;
        let der = sign_certificate(
            CertSpec {
                serial: &derive_serial("instance"),
                not_before: INTERMEDIATE_NOT_BEFORE_UNIX,
                not_after: INTERMEDIATE_NOT_AFTER_UNIX,
                subject: subject.clone(),
                spki,
                extensions: vec![
                    extension(
                        &BasicConstraints {
                            ca: true,
                            path_len_constraint: Some(0),
                        },
                        true,
                        "basic constraints",
                    )?,
                    extension(&KeyUsage(KeyUsages::KeyCertSign.into()), true, "key usage")?,
                ],
            },
            &issuer.name,
            &issuer.key,
        )?;
        chain.push(MockCa {
            certificate_der: der,
            name: subject,
            key,
            key_id: kid,
        });
        Ok(MockPki { chain })
    }

    /// Issues a leaf for `module_id`, valid from `now_unix` for [`LEAF_VALIDITY`], with a
    /// fresh random P-384 key.
    ///
    /// Like AWS's leaf: BasicConstraints CA:FALSE (critical), KeyUsage digitalSignature +
    /// nonRepudiation (not critical), no EKU, no SAN, no key identifiers; serial number =
    /// the 8-byte enclave id from the module id ‖ 4 zero bytes ‖ issuance time (u32 s).
    pub fn issue_leaf(&self, module_id: &str, now_unix: u64) -> Result<MockLeaf, PkiError> {
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let spki = spki_of(&key)?;
        let issuer = self
            .chain
            .last()
            .ok_or(PkiError::PublicKey("empty chain".into()))?;
        let not_after = now_unix.saturating_add(LEAF_VALIDITY.as_secs());
        let mut serial = enclave_id_bytes(module_id).to_vec();
        serial.extend_from_slice(&[0, 0, 0, 0]);
        serial.extend_from_slice(&u32::try_from(now_unix).unwrap_or(u32::MAX).to_be_bytes());
        let der = sign_certificate(
            CertSpec {
                serial: &serial,
                not_before: now_unix,
                not_after,
                subject: mock_name(&format!("{module_id}.{MOCK_REGION}.aws"), true)?,
                spki,
                extensions: vec![
                    extension(
                        &BasicConstraints {
                            ca: false,
                            path_len_constraint: None,
                        },
                        true,
                        "basic constraints",
                    )?,
                    extension(
                        &KeyUsage(KeyUsages::DigitalSignature | KeyUsages::NonRepudiation),
                        false,
                        "key usage",
                    )?,
                ],
            },
            &issuer.name,
            &issuer.key,
        )?;
        Ok(MockLeaf {
            certificate_der: der,
            not_before_unix: now_unix,
            not_after_unix: not_after,
            key,
        })
    }
}

/// The 8-byte enclave id of a module id `i-…-encXXXXXXXXXXXXXXXX` (16 hex digits after
/// `enc`), or the first 8 bytes of its SHA-256 when it has another shape.
fn enclave_id_bytes(module_id: &str) -> [u8; 8] {
    let mut out = [0u8; 8];
    if let Some((_, tail)) = module_id.rsplit_once("-enc") {
        if let Ok(bytes) = hex::decode(tail) {
            if bytes.len() == 8 {
                out.copy_from_slice(&bytes);
                return out;
            }
        }
    }
    out.copy_from_slice(&Sha256::digest(module_id.as_bytes())[..8]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_deterministic_and_marked() {
        let a = mock_root_pem();
        let b = mock_root_pem();
        assert_eq!(a, b);
        // Re-deriving from scratch gives the same bytes (RFC 6979 signatures).
        let again = MockPki::derive().unwrap();
        assert_eq!(again.chain[0].certificate_der, mock_root_der());
        assert_eq!(
            again.chain[3].certificate_der,
            mock_pki().chain[3].certificate_der
        );
        let cert = Certificate::from_der(&mock_root_der()).unwrap();
        let subject = cert.tbs_certificate.subject.to_string();
        assert!(subject.contains("O=AgentKeys Mock Nitro"), "{subject}");
        assert!(
            subject.contains("CN=aws.nitro-enclaves mock root"),
            "{subject}"
        );
        assert!(a.starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn chain_has_decreasing_path_lengths() {
        let pki = mock_pki();
        assert_eq!(pki.chain.len(), 4);
        let mut expected = [None, Some(2u8), Some(1), Some(0)].into_iter();
        for ca in &pki.chain {
            let cert = Certificate::from_der(&ca.certificate_der).unwrap();
            let exts = cert.tbs_certificate.extensions.unwrap();
            let bc = exts
                .iter()
                .find(|e| e.extn_id == BasicConstraints::OID)
                .unwrap();
            assert!(bc.critical);
            let bc = BasicConstraints::from_der(bc.extn_value.as_bytes()).unwrap();
            assert!(bc.ca);
            assert_eq!(bc.path_len_constraint, expected.next().unwrap());
        }
    }

    #[test]
    fn leaf_has_no_eku_or_san_and_lives_three_hours() {
        let leaf = mock_pki()
            .issue_leaf("i-0123456789abcdef0-enc0123456789abcdef", 1_700_000_000)
            .unwrap();
        let cert = Certificate::from_der(&leaf.certificate_der).unwrap();
        let exts = cert.tbs_certificate.extensions.unwrap();
        assert_eq!(exts.len(), 2);
        assert!(exts
            .iter()
            .all(|e| e.extn_id == BasicConstraints::OID || e.extn_id == KeyUsage::OID));
        assert_eq!(leaf.not_after_unix - leaf.not_before_unix, 3 * 3600);
        assert_eq!(
            hex::encode(cert.tbs_certificate.serial_number.as_bytes()),
            format!("0123456789abcdef00000000{:08x}", 1_700_000_000u32)
        );
    }

    #[test]
    fn enclave_id_from_odd_module_ids() {
        assert_eq!(
            enclave_id_bytes("i-07e25f3bada361dec-enc0181d3dff86da785"),
            [0x01, 0x81, 0xd3, 0xdf, 0xf8, 0x6d, 0xa7, 0x85]
        );
        // Non-hex or other shapes still give 8 bytes.
        assert_eq!(enclave_id_bytes("weird").len(), 8);
        assert_eq!(enclave_id_bytes("x-encZZ").len(), 8);
    }
}
