//! Step 4: the certificate path from the leaf through `cabundle` to the pinned root
//! (RFC 5280 §6.1, restricted to what the Nitro PKI uses: ECDSA P-384 with SHA-384 only).

use std::collections::BTreeSet;

use der::Decode;
use sha2::{Digest, Sha256};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
use x509_cert::Certificate;

use crate::anchor::TrustAnchor;
use crate::certificate::{
    check_issued_by, check_signature_algorithm, check_version, p384_public_key, unix_ms,
    CertificateSummary, PathCert,
};
use crate::document::AttestationDocument;
use crate::error::{CertPosition, ChainError};
use crate::es384::Es384PublicKey;
use crate::oids;

/// The outcome of a successful path validation.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedChain {
    /// The leaf's key, which must have signed the COSE_Sign1.
    pub leaf_key: Es384PublicKey,
    /// Root first, leaf last.
    pub certificates: Vec<CertificateSummary>,
}

/// Step 4: validates leaf ← cabundle[n-1] ← … ← cabundle[0] = pinned root at `at_ms`.
pub(crate) fn verify_certificate_path(
    document: &AttestationDocument,
    anchor: &TrustAnchor,
    at_ms: u64,
) -> Result<VerifiedChain, ChainError> {
    let path = parse_path(document)?;
    check_anchor_pinned(&path, anchor)?;

    let mut keys = Vec::with_capacity(path.len());
    for entry in &path {
        check_version(entry)?;
        check_signature_algorithm(entry)?;
        keys.push(p384_public_key(entry)?);
    }
    // The root is the pinned anchor, byte for byte, and its self-signature was checked
    // once when the anchor was built (RFC 5280 §6.1 takes the anchor as input, unverified).
    // Every other certificate is signed by the one above it.
    for (i, entry) in path.iter().enumerate().skip(1) {
        check_issued_by(entry, &path[i - 1], &keys[i - 1])?;
    }
    for entry in &path {
        check_validity(entry, at_ms)?;
    }
    let bundle_len = path.len() - 1;
    for (i, entry) in path[..bundle_len].iter().enumerate() {
        let intermediates_below = bundle_len - 1 - i;
        check_ca_constraints(entry, intermediates_below)?;
    }
    check_leaf_constraints(&path[bundle_len])?;

    let leaf_key = keys.swap_remove(bundle_len);
    Ok(VerifiedChain {
        leaf_key,
        certificates: summarize_validated_path(&path),
    })
}

/// Summaries of a path whose names were checked to chain: each certificate's issuer is
/// the subject of the one above it, and the root is self-issued, so each name is rendered
/// once (rendering looks every attribute type up in the OID database).
fn summarize_validated_path(path: &[PathCert<'_>]) -> Vec<CertificateSummary> {
    let mut summaries: Vec<CertificateSummary> = Vec::with_capacity(path.len());
    for entry in path {
        let subject = entry.cert.tbs_certificate.subject.to_string();
        let issuer = match summaries.last() {
            Some(above) => above.subject.clone(),
            None => subject.clone(),
        };
        summaries.push(CertificateSummary::with_names(
            entry.position,
            entry.der,
            &entry.cert,
            subject,
            issuer,
        ));
    }
    summaries
}

/// Parses `cabundle` (root first) followed by the leaf.
fn parse_path(document: &AttestationDocument) -> Result<Vec<PathCert<'_>>, ChainError> {
    let bundle = document
        .cabundle
        .iter()
        .enumerate()
        .map(|(i, der)| (CertPosition::Bundle(i), der.as_slice()));
    let leaf = std::iter::once((CertPosition::Leaf, document.certificate.as_slice()));
    let path = bundle
        .chain(leaf)
        .map(|(position, der)| {
            Certificate::from_der(der)
                .map(|cert| PathCert {
                    position,
                    der,
                    cert,
                })
                .map_err(|e| ChainError::Parse {
                    position,
                    message: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if path.len() < 2 {
        // Payload syntax guarantees a non-empty cabundle; keep the invariant local too.
        return Err(ChainError::AnchorMismatch {
            expected_sha256: String::new(),
            actual_sha256: "absent".to_owned(),
        });
    }
    Ok(path)
}

/// `cabundle[0]` must be the pinned root, byte for byte.
fn check_anchor_pinned(path: &[PathCert<'_>], anchor: &TrustAnchor) -> Result<(), ChainError> {
    let root = &path[0];
    if root.der != anchor.der() {
        return Err(ChainError::AnchorMismatch {
            expected_sha256: anchor.sha256_hex(),
            actual_sha256: hex::encode(Sha256::digest(root.der)),
        });
    }
    Ok(())
}

/// notBefore ≤ at ≤ notAfter (RFC 5280 §4.1.2.5).
fn check_validity(entry: &PathCert<'_>, at_ms: u64) -> Result<(), ChainError> {
    let validity = &entry.cert.tbs_certificate.validity;
    let not_before_ms = unix_ms(validity.not_before);
    let not_after_ms = unix_ms(validity.not_after);
    if at_ms < not_before_ms {
        return Err(ChainError::NotYetValid {
            position: entry.position,
            not_before_ms,
            at_ms,
        });
    }
    if at_ms > not_after_ms {
        return Err(ChainError::Expired {
            position: entry.position,
            not_after_ms,
            at_ms,
        });
    }
    Ok(())
}

/// The two extensions the checks use, after refusing duplicates and unknown critical ones.
struct Constraints {
    basic: Option<BasicConstraints>,
    key_usage: Option<KeyUsage>,
}

fn extensions(entry: &PathCert<'_>) -> Result<Constraints, ChainError> {
    let mut seen = BTreeSet::new();
    let mut constraints = Constraints {
        basic: None,
        key_usage: None,
    };
    let list = entry
        .cert
        .tbs_certificate
        .extensions
        .as_deref()
        .unwrap_or(&[]);
    for ext in list {
        let oid = ext.extn_id;
        if !seen.insert(oid) {
            return Err(ChainError::DuplicateExtension {
                position: entry.position,
                oid: oid.to_string(),
            });
        }
        let malformed = |e: der::Error| ChainError::Extension {
            position: entry.position,
            oid: oid.to_string(),
            message: e.to_string(),
        };
        if oid == oids::BASIC_CONSTRAINTS {
            constraints.basic =
                Some(BasicConstraints::from_der(ext.extn_value.as_bytes()).map_err(malformed)?);
        } else if oid == oids::KEY_USAGE {
            constraints.key_usage =
                Some(KeyUsage::from_der(ext.extn_value.as_bytes()).map_err(malformed)?);
        } else if ext.critical {
            return Err(ChainError::UnknownCriticalExtension {
                position: entry.position,
                oid: oid.to_string(),
            });
        }
    }
    Ok(constraints)
}

/// CA certificates: basicConstraints cA = TRUE, keyUsage with keyCertSign, and a
/// pathLenConstraint (when present) not smaller than the intermediate CAs below
/// (RFC 5280 §4.2.1.9, §6.1.4 (k)–(n)).
fn check_ca_constraints(
    entry: &PathCert<'_>,
    intermediates_below: usize,
) -> Result<(), ChainError> {
    let constraints = extensions(entry)?;
    let basic = constraints.basic.unwrap_or(BasicConstraints {
        ca: false,
        path_len_constraint: None,
    });
    if !basic.ca {
        return Err(ChainError::BasicConstraints {
            position: entry.position,
            expected: true,
            actual: false,
        });
    }
    match &constraints.key_usage {
        Some(usage) if usage.key_cert_sign() => {}
        other => {
            return Err(ChainError::KeyUsage {
                position: entry.position,
                expected: "keyCertSign",
                actual: describe_key_usage(other.as_ref()),
            })
        }
    }
    if let Some(path_len) = basic.path_len_constraint {
        if usize::from(path_len) < intermediates_below {
            return Err(ChainError::PathLength {
                position: entry.position,
                path_len,
                actual: intermediates_below,
            });
        }
    }
    Ok(())
}

/// The leaf: not a CA, keyUsage with digitalSignature (it signs the COSE_Sign1).
fn check_leaf_constraints(entry: &PathCert<'_>) -> Result<(), ChainError> {
    let constraints = extensions(entry)?;
    if constraints.basic.as_ref().is_some_and(|b| b.ca) {
        return Err(ChainError::BasicConstraints {
            position: entry.position,
            expected: false,
            actual: true,
        });
    }
    match &constraints.key_usage {
        Some(usage) if usage.digital_signature() => Ok(()),
        other => Err(ChainError::KeyUsage {
            position: entry.position,
            expected: "digitalSignature",
            actual: describe_key_usage(other.as_ref()),
        }),
    }
}

fn describe_key_usage(usage: Option<&KeyUsage>) -> String {
    let Some(usage) = usage else {
        return "absent".to_owned();
    };
    let names = [
        (usage.digital_signature(), "digitalSignature"),
        (usage.non_repudiation(), "nonRepudiation"),
        (usage.key_encipherment(), "keyEncipherment"),
        (usage.data_encipherment(), "dataEncipherment"),
        (usage.key_agreement(), "keyAgreement"),
        (usage.key_cert_sign(), "keyCertSign"),
        (usage.crl_sign(), "cRLSign"),
        (usage.encipher_only(), "encipherOnly"),
        (usage.decipher_only(), "decipherOnly"),
    ];
    let set: Vec<&str> = names
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
    if set.is_empty() {
        "empty".to_owned()
    } else {
        set.join(",")
    }
}
