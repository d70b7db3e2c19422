//! Master keys of the KMS stand-in: created on first use, kept in memory and, when a state
//! file is configured, persisted (mode 0600, atomic replace) so a dev data directory
//! survives restarts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// Format tag written into the state file.
const STATE_FORMAT: &str = "agentkeys-mock-kms-state-v1";

/// Errors of the key store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state file could not be read or written.
    #[error("KMS state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The state file is not in the expected format.
    #[error("KMS state file {path} is invalid: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The RNG failed.
    #[error("random generator failed")]
    Rng,
}

/// A 32-byte master key, zeroized on drop and redacted in Debug.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    /// The key bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    format: String,
    /// key id → base64 master key.
    keys: BTreeMap<String, String>,
    /// alias name (`alias/…`) → key id.
    aliases: BTreeMap<String, String>,
}

impl Drop for StateFile {
    fn drop(&mut self) {
        for v in self.keys.values_mut() {
            v.zeroize();
        }
    }
}

#[derive(Default)]
struct Inner {
    keys: BTreeMap<String, MasterKey>,
    aliases: BTreeMap<String, String>,
}

/// The key store.
pub struct KeyStore {
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("path", &self.path)
            .field("keys", &self.lock().keys.len())
            .finish()
    }
}

fn random_key() -> Result<MasterKey, StoreError> {
    let mut key = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(key.as_mut_slice()).map_err(|_| StoreError::Rng)?;
    Ok(MasterKey(key))
}

/// A random key id in KMS's UUID shape.
fn random_key_id() -> Result<String, StoreError> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| StoreError::Rng)?;
    b[6] = (b[6] & 0x0f) | 0x40; // UUID version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

impl KeyStore {
    /// An in-memory store, or one loaded from `path` (created on first write).
    pub fn open(path: Option<PathBuf>) -> Result<KeyStore, StoreError> {
        let mut inner = Inner::default();
        if let Some(path) = &path {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let bytes = Zeroizing::new(bytes);
                    inner = Self::parse(path, &bytes)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StoreError::Io {
                        path: path.clone(),
                        source,
                    })
                }
            }
        }
        Ok(KeyStore {
            path,
            inner: Mutex::new(inner),
        })
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Inner, StoreError> {
        let format_err = |reason: String| StoreError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let state: StateFile =
            serde_json::from_slice(bytes).map_err(|e| format_err(e.to_string()))?;
        if state.format != STATE_FORMAT {
            return Err(format_err(format!(
                "format is {:?}, expected {STATE_FORMAT:?}",
                state.format
            )));
        }
        let mut inner = Inner::default();
        for (id, b64) in &state.keys {
            let raw = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| format_err(format!("key {id}: not base64")))?,
            );
            let key: [u8; 32] = raw
                .as_slice()
                .try_into()
                .map_err(|_| format_err(format!("key {id}: {} bytes, expected 32", raw.len())))?;
            inner
                .keys
                .insert(id.clone(), MasterKey(Zeroizing::new(key)));
        }
        for (alias, id) in &state.aliases {
            if !inner.keys.contains_key(id) {
                return Err(format_err(format!("alias {alias} names unknown key {id}")));
            }
        }
        inner.aliases = state.aliases.clone();
        Ok(inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every mutation is a single insert; a poisoned lock still holds consistent maps.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key for a canonical reference (`alias/NAME` or a key id), created on first use.
    /// Returns the key id and its master key.
    pub fn resolve_or_create(&self, reference: &str) -> Result<(String, MasterKey), StoreError> {
        let mut inner = self.lock();
        let id = if reference.starts_with("alias/") {
            match inner.aliases.get(reference) {
                Some(id) => id.clone(),
                None => {
                    let id = random_key_id()?;
                    inner.aliases.insert(reference.to_string(), id.clone());
                    id
                }
            }
        } else {
            reference.to_string()
        };
        if let Some(key) = inner.keys.get(&id) {
            let key = key.clone();
            drop(inner);
            return Ok((id, key));
        }
        let key = random_key()?;
        inner.keys.insert(id.clone(), key.clone());
        self.persist(&inner)?;
        Ok((id, key))
    }

    /// The key with this id, if it exists (no creation: blobs name existing keys).
    pub fn get(&self, id: &str) -> Option<MasterKey> {
        self.lock().keys.get(id).cloned()
    }

    /// The key id an alias points to, if any.
    pub fn alias_target(&self, alias: &str) -> Option<String> {
        self.lock().aliases.get(alias).cloned()
    }

    fn persist(&self, inner: &Inner) -> Result<(), StoreError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let io_err = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let state = StateFile {
            format: STATE_FORMAT.to_string(),
            keys: inner
                .keys
                .iter()
                .map(|(id, k)| {
                    (
                        id.clone(),
                        base64::engine::general_purpose::STANDARD.encode(k.bytes()),
                    )
                })
                .collect(),
            aliases: inner.aliases.clone(),
        };
        let text =
            Zeroizing::new(
                serde_json::to_vec_pretty(&state).map_err(|e| StoreError::Format {
                    path: path.clone(),
                    reason: e.to_string(),
                })?,
            );
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let tmp = path.with_extension("tmp");
        {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut f = options.open(&tmp).map_err(io_err)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(std::fs::Permissions::from_mode(0o600))
                    .map_err(io_err)?;
            }
            f.write_all(&text).map_err(io_err)?;
            f.sync_all().map_err(io_err)?;
        }
        std::fs::rename(&tmp, path).map_err(io_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_once_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/kms-state.json");
        let store = KeyStore::open(Some(path.clone())).unwrap();
        let (id1, k1) = store.resolve_or_create("alias/dev").unwrap();
        let (id1b, k1b) = store.resolve_or_create("alias/dev").unwrap();
        assert_eq!(id1, id1b);
        assert_eq!(k1.bytes(), k1b.bytes());
        let (id2, k2) = store
            .resolve_or_create("1234abcd-12ab-34cd-56ef-1234567890ab")
            .unwrap();
        assert_eq!(id2, "1234abcd-12ab-34cd-56ef-1234567890ab");
        assert_ne!(k1.bytes(), k2.bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let reopened = KeyStore::open(Some(path.clone())).unwrap();
        assert_eq!(reopened.get(&id1).unwrap().bytes(), k1.bytes());
        assert_eq!(reopened.alias_target("alias/dev").unwrap(), id1);
        assert!(!format!("{:?}", reopened.get(&id1).unwrap()).contains(&hex::encode(k1.bytes())));
    }

    #[test]
    fn corrupt_state_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            KeyStore::open(Some(path.clone())),
            Err(StoreError::Format { .. })
        ));
        std::fs::write(
            &path,
            r#"{"format":"agentkeys-mock-kms-state-v1","keys":{"k":"AAAA"},"aliases":{}}"#,
        )
        .unwrap();
        assert!(matches!(
            KeyStore::open(Some(path.clone())),
            Err(StoreError::Format { .. })
        ));
        std::fs::write(&path, r#"{"format":"other","keys":{},"aliases":{}}"#).unwrap();
        assert!(matches!(
            KeyStore::open(Some(path)),
            Err(StoreError::Format { .. })
        ));
    }

    #[test]
    fn random_ids_look_like_uuids() {
        let id = random_key_id().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }
}
