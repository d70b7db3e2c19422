//! Reading an enclave checkpoint: its attestation document, alone or inside the JSON
//! the broker serves. A checkpoint without its document is refused: its fields are only
//! the parent's word, and the parent is what the checkpoint checks.

use std::path::{Path, PathBuf};

use agentkeys_wire::{CheckpointStatement, StatementError};
use base64::Engine;
use serde::Deserialize;

use crate::audit::sqlite::decode_hash;

/// Why a checkpoint could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading the file failed.
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The JSON form is malformed.
    #[error("checkpoint JSON is malformed: {0}")]
    Json(String),
    /// `head` is not 64 hex digits.
    #[error("checkpoint head must be 64 hex digits, got {0:?}")]
    Head(String),
    /// The attestation document could not be decoded.
    #[error("checkpoint attestation document cannot be decoded: {0}")]
    Document(String),
    /// The attestation document failed verification.
    #[error("checkpoint attestation document failed verification: {0}")]
    Verification(String),
    /// The document has no `user_data`.
    #[error("checkpoint attestation document carries no user_data")]
    NoUserData,
    /// `user_data` is not an audit checkpoint statement (another kind of document, e.g.
    /// the JWKS attestation, or an older format).
    #[error("checkpoint document is not an audit checkpoint: {0}")]
    UserData(#[source] StatementError),
    /// JSON fields without the attestation document that would prove them.
    #[error("checkpoint has no attestation document: epoch/seq/head alone are the parent's word; fetch it with --broker-url or save the whole JSON of GET /v1/audit/checkpoint")]
    NoDocument,
    /// The JSON's module id disagrees with its own attested document.
    #[error(
        "checkpoint JSON names enclave {json_module} but its document was made by {doc_module}"
    )]
    ModuleDisagrees {
        /// From JSON.
        json_module: String,
        /// From the document.
        doc_module: String,
    },
    /// The JSON's epoch/seq/head disagree with its own attested document.
    #[error("checkpoint JSON says epoch {json_epoch} seq {json_seq} but its document attests epoch {doc_epoch} seq {doc_seq}")]
    Disagrees {
        /// From JSON.
        json_epoch: u64,
        /// From JSON.
        json_seq: u64,
        /// From the document.
        doc_epoch: u64,
        /// From the document.
        doc_seq: u64,
    },
}

/// How to check a checkpoint's attestation document.
pub struct CheckpointTrust<'a> {
    /// The pinned root.
    pub anchor: &'a agentkeys_attestation::TrustAnchor,
    /// PCR and other constraints.
    pub policy: &'a agentkeys_attestation::Policy,
    /// Verification time (UNIX ms); use the document's own time for archived documents.
    pub at_unix_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointJson {
    epoch: Option<u64>,
    seq: Option<u64>,
    head: Option<String>,
    module_id: Option<String>,
    /// Base64 COSE_Sign1 attestation document whose user_data is the checkpoint.
    document: Option<String>,
}

/// Extracts the checkpoint from an attestation document's `user_data`. With `trust`,
/// the document is fully verified first (signature, certificate path, policy);
/// without it, it is only decoded.
pub fn checkpoint_from_document(
    document: &[u8],
    trust: Option<&CheckpointTrust<'_>>,
) -> Result<CheckpointStatement, CheckpointError> {
    let doc = match trust {
        Some(t) => {
            agentkeys_attestation::verify(document, t.anchor, t.at_unix_ms, t.policy)
                .map_err(|e| CheckpointError::Verification(e.to_string()))?
                .document
        }
        None => agentkeys_attestation::decode_unverified(document)
            .map_err(|e| CheckpointError::Document(e.to_string()))?,
    };
    let user_data = doc.user_data.ok_or(CheckpointError::NoUserData)?;
    CheckpointStatement::decode(&user_data).map_err(CheckpointError::UserData)
}

/// Parses a checkpoint given as JSON: `{"document":"base64"}`, optionally with the
/// epoch/seq/head (and module_id) the broker serves beside it, which must then agree
/// with the document.
pub fn checkpoint_from_json(
    text: &str,
    trust: Option<&CheckpointTrust<'_>>,
) -> Result<CheckpointStatement, CheckpointError> {
    let j: CheckpointJson =
        serde_json::from_str(text).map_err(|e| CheckpointError::Json(e.to_string()))?;
    let from_doc = match &j.document {
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| CheckpointError::Json(format!("document is not base64: {e}")))?;
            Some(checkpoint_from_document(&bytes, trust)?)
        }
        None => None,
    };
    let from_fields = match (j.epoch, j.seq, &j.head) {
        (Some(epoch), Some(seq), Some(head)) => Some((
            epoch,
            seq,
            decode_hash(head.trim()).ok_or_else(|| CheckpointError::Head(head.clone()))?,
        )),
        (None, None, None) => None,
        _ => {
            return Err(CheckpointError::Json(
                "epoch, seq and head must be given together".into(),
            ))
        }
    };
    let Some(d) = from_doc else {
        return Err(CheckpointError::NoDocument);
    };
    if let Some((epoch, seq, head)) = from_fields {
        if (epoch, seq, head) != (d.epoch, d.seq, d.head) {
            return Err(CheckpointError::Disagrees {
                json_epoch: epoch,
                json_seq: seq,
                doc_epoch: d.epoch,
                doc_seq: d.seq,
            });
        }
    }
    if let Some(json_module) = j.module_id.filter(|m| *m != d.module_id) {
        return Err(CheckpointError::ModuleDisagrees {
            json_module,
            doc_module: d.module_id,
        });
    }
    Ok(d)
}

/// Reads a checkpoint file: JSON (see [`checkpoint_from_json`]), a raw COSE_Sign1
/// attestation document, or that document in base64.
pub fn load_checkpoint(
    path: &Path,
    trust: Option<&CheckpointTrust<'_>>,
) -> Result<CheckpointStatement, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let trimmed = bytes.trim_ascii();
    if trimmed.first() == Some(&b'{') {
        let text =
            std::str::from_utf8(trimmed).map_err(|e| CheckpointError::Json(e.to_string()))?;
        return checkpoint_from_json(text, trust);
    }
    checkpoint_from_document(&bare_document(bytes), trust)
}

/// The attestation document in a checkpoint file, whichever form it has (see
/// [`load_checkpoint`]); `None` for JSON without a base64 `document`.
pub fn document_in_checkpoint_file(bytes: &[u8]) -> Option<Vec<u8>> {
    let trimmed = bytes.trim_ascii();
    if trimmed.first() == Some(&b'{') {
        let v: serde_json::Value = serde_json::from_slice(trimmed).ok()?;
        let b64 = v.get("document")?.as_str()?;
        return base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok();
    }
    Some(bare_document(bytes.to_vec()))
}

/// A document given alone: base64 text, or the raw COSE_Sign1 bytes.
fn bare_document(bytes: Vec<u8>) -> Vec<u8> {
    std::str::from_utf8(bytes.trim_ascii())
        .ok()
        .and_then(|text| base64::engine::general_purpose::STANDARD.decode(text).ok())
        .unwrap_or(bytes)
}
