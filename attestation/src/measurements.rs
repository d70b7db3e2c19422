//! The measurements an operator publishes for an enclave image: the JSON
//! `nitro-cli build-enclave` and `describe-eif` print. An auditor compares them with the PCRs
//! of an attestation document, or with those `agentkeys-attest measure` computes from the
//! image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha384};

use crate::decode::MAX_PCR_INDEX;

/// Length of a SHA-384 PCR value in bytes.
pub const PCR_LEN: usize = 48;

/// The PCRs that identify an enclave image, which `nitro-cli` always publishes: PCR0 (the
/// image file), PCR1 (kernel and boot ramfs) and PCR2 (the application). A verifier pins a
/// document to all three.
pub const IMAGE_PCRS: [u16; 3] = [0, 1, 2];

/// A PCR value (SHA-384 digest).
pub type Pcr = [u8; PCR_LEN];

/// `SHA-384(0⁴⁸ ‖ data)`: one extend of a zeroed PCR with `data`.
pub fn extend_from_zero(data: &[u8]) -> Pcr {
    let mut h = Sha384::new();
    h.update([0u8; PCR_LEN]);
    h.update(data);
    h.finalize().into()
}

/// Errors reading a measurements JSON file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeasurementsError {
    /// Not JSON.
    #[error("measurements file is not JSON: {reason}")]
    Json {
        /// Parser message.
        reason: String,
    },
    /// Neither `{"Measurements": {...}}` nor a flat object of `PCRn` members.
    #[error("measurements JSON must be an object with a \"Measurements\" object or PCRn members")]
    Shape,
    /// PCR0 is required.
    #[error("measurements JSON has no PCR0")]
    MissingPcr0,
    /// Measurements to verify a document against lack some of PCR0, PCR1 and PCR2.
    #[error(
        "measurements JSON has no {}; verifying a document needs PCR0, PCR1 and PCR2 of the \
         image (nitro-cli lists all three)",
        pcr_names(missing)
    )]
    MissingImagePcrs {
        /// The indices among [`IMAGE_PCRS`] that the file does not list.
        missing: Vec<u16>,
    },
    /// A `PCRn` member is not a string.
    #[error("measurement {name} is not a string")]
    NotAString {
        /// Member name.
        name: String,
    },
    /// A `PCRn` member name has a bad index.
    #[error("measurement name {name:?} is not PCR0..PCR31")]
    BadName {
        /// Member name.
        name: String,
    },
    /// A PCR value is not 96 hex digits.
    #[error("PCR{index} must be 96 hex digits (SHA-384), got {len} characters")]
    BadLength {
        /// PCR index.
        index: u16,
        /// Characters found.
        len: usize,
    },
    /// A PCR value contains non-hex characters.
    #[error("PCR{index} is not hexadecimal")]
    NotHex {
        /// PCR index.
        index: u16,
    },
    /// The hash algorithm named is not SHA-384.
    #[error("HashAlgorithm is {found:?}; only SHA-384 measurements are supported")]
    HashAlgorithm {
        /// The value found.
        found: String,
    },
}

/// Measurements as published: PCR index → 48-byte value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedMeasurements {
    /// The PCRs listed.
    pub pcrs: BTreeMap<u16, Vec<u8>>,
}

impl PublishedMeasurements {
    /// Parses `{"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": "<hex>", …}}`
    /// (nitro-cli's output) or the inner object alone. PCR0 is required; values are
    /// 96 hex digits, either case.
    pub fn from_json(text: &str) -> Result<PublishedMeasurements, MeasurementsError> {
        let pcrs = parse_pcrs(text)?;
        if !pcrs.contains_key(&0) {
            return Err(MeasurementsError::MissingPcr0);
        }
        Ok(PublishedMeasurements { pcrs })
    }

    /// Parses measurements that a document is verified against: as [`Self::from_json`],
    /// but PCR0, PCR1 and PCR2 ([`IMAGE_PCRS`]) are all required, so that a truncated or
    /// hand-edited file cannot leave part of the image unchecked.
    pub fn expected_from_json(text: &str) -> Result<PublishedMeasurements, MeasurementsError> {
        let pcrs = parse_pcrs(text)?;
        let missing: Vec<u16> = IMAGE_PCRS
            .into_iter()
            .filter(|index| !pcrs.contains_key(index))
            .collect();
        if !missing.is_empty() {
            return Err(MeasurementsError::MissingImagePcrs { missing });
        }
        Ok(PublishedMeasurements { pcrs })
    }

    /// Reads and parses a measurements file.
    pub fn from_file(path: &Path) -> Result<PublishedMeasurements, MeasurementsFileError> {
        read_file(path, PublishedMeasurements::from_json)
    }

    /// Reads and parses a measurements file that a document is verified against
    /// ([`Self::expected_from_json`]).
    pub fn expected_from_file(path: &Path) -> Result<PublishedMeasurements, MeasurementsFileError> {
        read_file(path, PublishedMeasurements::expected_from_json)
    }

    /// PCR value as lower-case hex.
    pub fn hex(&self, index: u16) -> Option<String> {
        self.pcrs.get(&index).map(hex::encode)
    }
}

/// `PCR0, PCR1` for the indices given.
fn pcr_names(indices: &[u16]) -> String {
    indices
        .iter()
        .map(|index| format!("PCR{index}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads `path` and parses its text with `parse`, naming the file in every error.
fn read_file(
    path: &Path,
    parse: fn(&str) -> Result<PublishedMeasurements, MeasurementsError>,
) -> Result<PublishedMeasurements, MeasurementsFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| MeasurementsFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|source| MeasurementsFileError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// The PCR members of `{"Measurements": {...}}` or of the inner object alone; which PCRs
/// must be present is the caller's rule.
fn parse_pcrs(text: &str) -> Result<BTreeMap<u16, Vec<u8>>, MeasurementsError> {
    let value: Value = serde_json::from_str(text).map_err(|e| MeasurementsError::Json {
        reason: e.to_string(),
    })?;
    let obj = match &value {
        Value::Object(top) => match top.get("Measurements") {
            Some(Value::Object(inner)) => inner,
            Some(_) => return Err(MeasurementsError::Shape),
            None => top,
        },
        _ => return Err(MeasurementsError::Shape),
    };
    let mut pcrs = BTreeMap::new();
    for (name, v) in obj {
        if name == "HashAlgorithm" {
            let found = v.as_str().unwrap_or_default().to_string();
            if !found.to_ascii_lowercase().starts_with("sha384") {
                return Err(MeasurementsError::HashAlgorithm { found });
            }
            continue;
        }
        let Some(digits) = name.strip_prefix("PCR") else {
            continue;
        };
        let index: u16 = digits
            .parse()
            .ok()
            .filter(|i| *i <= MAX_PCR_INDEX && !digits.starts_with('+'))
            .ok_or_else(|| MeasurementsError::BadName { name: name.clone() })?;
        let s = v
            .as_str()
            .ok_or_else(|| MeasurementsError::NotAString { name: name.clone() })?;
        pcrs.insert(index, parse_pcr_hex(index, s)?);
    }
    Ok(pcrs)
}

/// Errors reading a measurements file from disk.
#[derive(Debug, thiserror::Error)]
pub enum MeasurementsFileError {
    /// The file could not be read.
    #[error("cannot read measurements file {path}: {source}")]
    Read {
        /// The path given.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The file's content is wrong.
    #[error("{path}: {source}")]
    Parse {
        /// The path given.
        path: PathBuf,
        /// What is wrong.
        source: MeasurementsError,
    },
}

/// Parses a 96-hex-digit PCR value (either case).
pub fn parse_pcr_hex(index: u16, s: &str) -> Result<Vec<u8>, MeasurementsError> {
    let s = s.trim();
    if s.len() != 2 * PCR_LEN {
        return Err(MeasurementsError::BadLength {
            index,
            len: s.len(),
        });
    }
    hex::decode(s).map_err(|_| MeasurementsError::NotHex { index })
}
