//! Boots the log does not show, found in AWS CloudTrail.
//!
//! Every enclave boot must unseal its seed through KMS, and CloudTrail records each
//! attested KMS call with the enclave's module id (AWS KMS developer guide, "Monitoring
//! requests for Nitro enclaves": `additionalEventData.recipient.attestationDocumentModuleId`).
//! The broker writes an `enclave_unsealed` row with the module id of every boot before it
//! serves. So an attested `Decrypt` or `GenerateDataKey` of the issuer key whose module id
//! has no such row is a boot the parent hid: one that could have signed tokens the log
//! never recorded.
//!
//! Accepted files: the JSON that `aws cloudtrail lookup-events` prints (`{"Events":
//! [{"CloudTrailEvent": "<JSON text>", …}]}`) and CloudTrail's log files in S3
//! (`{"Records": [...]}`, decompressed).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::audit::sqlite::open_read_only;
use crate::audit::AuditEvent;

/// KMS operations that release the seed to an attested enclave.
const UNSEAL_OPERATIONS: [&str; 2] = ["Decrypt", "GenerateDataKey"];

/// Why a CloudTrail file or the log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CloudTrailError {
    /// The file could not be read.
    #[error("cannot read CloudTrail file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not one of the accepted shapes.
    #[error("CloudTrail file {path}: {reason}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The log could not be read.
    #[error("cannot read the enclave boots in audit database {path}: {source}")]
    Log {
        /// The database.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
}

/// One attested unseal of the issuer key, as CloudTrail recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedUnseal {
    /// `Decrypt` or `GenerateDataKey`.
    pub operation: String,
    /// CloudTrail's `eventTime`.
    pub time: String,
    /// The enclave's module id.
    pub module_id: String,
    /// The enclave image digest (PCR0) KMS logged.
    pub image_digest: String,
}

/// The attested unseals of `key_arn` in the CloudTrail file at `path`.
pub fn attested_unseals(
    path: &Path,
    key_arn: &str,
) -> Result<Vec<AttestedUnseal>, CloudTrailError> {
    let text = std::fs::read_to_string(path).map_err(|source| CloudTrailError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    attested_unseals_in(&text, key_arn).map_err(|reason| CloudTrailError::Shape {
        path: path.to_path_buf(),
        reason,
    })
}

/// The attested unseals of `key_arn` in CloudTrail JSON text; the error says what shape
/// the text lacks.
pub fn attested_unseals_in(text: &str, key_arn: &str) -> Result<Vec<AttestedUnseal>, String> {
    let mut file: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let events: Vec<Value> = if let Some(Value::Array(records)) =
        file.get_mut("Records").map(Value::take)
    {
        records
    } else if let Some(events) = file.get("Events").and_then(Value::as_array) {
        let mut out = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let inner = e
                .get("CloudTrailEvent")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("Events[{i}] has no CloudTrailEvent text"))?;
            out.push(
                serde_json::from_str(inner)
                    .map_err(|e| format!("Events[{i}].CloudTrailEvent is not JSON: {e}"))?,
            );
        }
        out
    } else {
        return Err(
            "expected {\"Records\": [...]} (a CloudTrail log file) or {\"Events\": [...]} (aws cloudtrail lookup-events)".into(),
        );
    };
    let text_at = |v: &Value, pointer: &str| {
        v.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Ok(events
        .iter()
        .filter(|e| text_at(e, "/eventSource").as_deref() == Some("kms.amazonaws.com"))
        .filter(|e| {
            text_at(e, "/eventName").is_some_and(|n| UNSEAL_OPERATIONS.contains(&n.as_str()))
        })
        .filter(|e| names_key(e, key_arn))
        .filter_map(|e| {
            Some(AttestedUnseal {
                operation: text_at(e, "/eventName")?,
                time: text_at(e, "/eventTime").unwrap_or_default(),
                module_id: text_at(
                    e,
                    "/additionalEventData/recipient/attestationDocumentModuleId",
                )?,
                image_digest: text_at(
                    e,
                    "/additionalEventData/recipient/attestationDocumentEnclaveImageDigest",
                )
                .unwrap_or_default(),
            })
        })
        .collect())
}

/// Whether the event is about `key_arn`: its `resources` ARN or its requested key id.
fn names_key(event: &Value, key_arn: &str) -> bool {
    let in_resources = event
        .get("resources")
        .and_then(Value::as_array)
        .is_some_and(|r| {
            r.iter()
                .any(|x| x.get("ARN").and_then(Value::as_str) == Some(key_arn))
        });
    in_resources
        || event
            .pointer("/requestParameters/keyId")
            .and_then(Value::as_str)
            == Some(key_arn)
}

/// The module ids of the boots the log records (`enclave_unsealed` rows).
pub fn boots_in_log(db: &Path) -> Result<BTreeSet<String>, CloudTrailError> {
    let log_err = |source| CloudTrailError::Log {
        path: db.to_path_buf(),
        source,
    };
    let conn = open_read_only(db).map_err(log_err)?;
    let mut stmt = conn
        .prepare("SELECT detail FROM audit_log WHERE event = ?1")
        .map_err(log_err)?;
    let details = stmt
        .query_map([AuditEvent::EnclaveUnsealed.as_str()], |r| {
            r.get::<_, String>(0)
        })
        .map_err(log_err)?;
    let mut boots = BTreeSet::new();
    for detail in details {
        let detail = detail.map_err(log_err)?;
        if let Some(id) = boot_module_id(&detail) {
            boots.insert(id.to_string());
        }
    }
    Ok(boots)
}

/// The module id an `enclave_unsealed` row's detail names (`module_id=ID …`).
pub fn boot_module_id(detail: &str) -> Option<&str> {
    let id = detail.strip_prefix("module_id=")?;
    Some(id.split_whitespace().next().unwrap_or_default())
}

/// The attested unseals whose module id has no boot in the log.
pub fn hidden_boots(unseals: &[AttestedUnseal], boots: &BTreeSet<String>) -> Vec<AttestedUnseal> {
    unseals
        .iter()
        .filter(|u| !boots.contains(&u.module_id))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn event(name: &str, key: &str, module: Option<&str>) -> Value {
        let mut e = serde_json::json!({
            "eventTime": "2026-12-04T10:00:00Z",
            "eventSource": "kms.amazonaws.com",
            "eventName": name,
            "requestParameters": { "keyId": key },
            "resources": [{ "ARN": key, "type": "AWS::KMS::Key" }],
        });
        if let Some(m) = module {
            e["additionalEventData"] = serde_json::json!({
                "recipient": { "attestationDocumentModuleId": m, "attestationDocumentEnclaveImageDigest": "ab" }
            });
        }
        e
    }

    fn file(dir: &tempfile::TempDir, name: &str, v: &Value) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    }

    #[test]
    fn both_file_shapes_give_the_attested_unseals_of_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let other = "arn:aws:kms:us-east-1:111122223333:key/ffffffff-12ab-34cd-56ef-1234567890ab";
        let events = vec![
            event("Decrypt", KEY, Some("i-1-enc1")),
            event("GenerateDataKey", KEY, Some("i-1-enc2")),
            event("Decrypt", KEY, None),
            event("Decrypt", other, Some("i-1-enc3")),
            event("Encrypt", KEY, Some("i-1-enc4")),
        ];
        let records = file(&dir, "s3.json", &serde_json::json!({ "Records": events }));
        let lookup = serde_json::json!({
            "Events": events.iter().map(|e| serde_json::json!({
                "EventName": e["eventName"], "CloudTrailEvent": e.to_string()
            })).collect::<Vec<_>>()
        });
        let lookup = file(&dir, "lookup.json", &lookup);
        for path in [records, lookup] {
            let found = attested_unseals(&path, KEY).unwrap();
            let ids: Vec<&str> = found.iter().map(|u| u.module_id.as_str()).collect();
            assert_eq!(ids, ["i-1-enc1", "i-1-enc2"], "{}", path.display());
        }
    }

    #[test]
    fn hidden_boots_are_the_unseals_without_a_logged_boot() {
        let unseal = |m: &str| AttestedUnseal {
            operation: "Decrypt".into(),
            time: String::new(),
            module_id: m.into(),
            image_digest: String::new(),
        };
        let boots: BTreeSet<String> = ["a".to_string()].into();
        let hidden = hidden_boots(&[unseal("a"), unseal("b")], &boots);
        assert_eq!(hidden, vec![unseal("b")]);
    }

    #[test]
    fn other_files_are_refused_naming_the_shape() {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in [
            ("array.json", "[]"),
            ("object.json", r#"{"Items": []}"#),
            ("text.json", "not json"),
            (
                "bad-event.json",
                r#"{"Events": [{"EventName": "Decrypt"}]}"#,
            ),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            let e = attested_unseals(&p, KEY).unwrap_err();
            assert!(matches!(e, CloudTrailError::Shape { .. }), "{name}: {e}");
        }
        assert!(matches!(
            attested_unseals(&dir.path().join("missing.json"), KEY),
            Err(CloudTrailError::Read { .. })
        ));
    }
}
