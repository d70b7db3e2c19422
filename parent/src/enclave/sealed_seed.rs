//! The sealed seed file: the KMS `CiphertextBlob` the enclave returns on genesis.
//! Written atomically (temporary file, fsync, rename, fsync of the directory) with mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Largest sealed seed accepted from disk (a KMS `CiphertextBlob` for a 32-byte key is
/// under 200 bytes; the wire frame cap bounds it anyway).
pub const MAX_SEALED_SEED_BYTES: u64 = 16 * 1024;

/// Sealed-seed file errors.
#[derive(Debug, thiserror::Error)]
pub enum SeedFileError {
    /// Reading failed.
    #[error("cannot read sealed seed {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than any sealed seed.
    #[error("sealed seed {path} is {actual} bytes, more than {max}")]
    TooLarge {
        /// File.
        path: PathBuf,
        /// Size found.
        actual: u64,
        /// [`MAX_SEALED_SEED_BYTES`].
        max: u64,
    },
    /// The file is empty.
    #[error("sealed seed {path} is empty")]
    Empty {
        /// File.
        path: PathBuf,
    },
    /// Writing failed.
    #[error("cannot write sealed seed {path}: {source}")]
    Write {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Reads the sealed seed; `Ok(None)` when the file does not exist (genesis).
pub fn read_sealed_seed(path: &Path) -> Result<Option<Vec<u8>>, SeedFileError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SeedFileError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if meta.len() > MAX_SEALED_SEED_BYTES {
        return Err(SeedFileError::TooLarge {
            path: path.to_path_buf(),
            actual: meta.len(),
            max: MAX_SEALED_SEED_BYTES,
        });
    }
    let bytes = std::fs::read(path).map_err(|source| SeedFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.is_empty() {
        return Err(SeedFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(Some(bytes))
}

/// Writes the sealed seed atomically with mode 0600.
pub fn write_sealed_seed(path: &Path, bytes: &[u8]) -> Result<(), SeedFileError> {
    write_atomically(path, bytes, 0o600).map_err(|source| SeedFileError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Replaces `path` with `bytes` atomically (a temporary file in the same directory,
/// fsync, rename, fsync of the directory), created with `mode`: a reader sees the old
/// contents or the new ones, never a mix, even across a crash.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_string());
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn missing_is_none() {
        let d = tempfile::tempdir().unwrap();
        assert!(read_sealed_seed(&d.path().join("nope")).unwrap().is_none());
    }

    #[test]
    fn write_then_read_mode_0600() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("seed.bin");
        write_sealed_seed(&p, b"blob").unwrap();
        assert_eq!(read_sealed_seed(&p).unwrap().unwrap(), b"blob");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Overwrite is atomic and leaves no temporary file behind.
        write_sealed_seed(&p, b"blob2").unwrap();
        assert_eq!(read_sealed_seed(&p).unwrap().unwrap(), b"blob2");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn empty_and_huge_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("seed.bin");
        std::fs::write(&p, b"").unwrap();
        assert!(matches!(
            read_sealed_seed(&p),
            Err(SeedFileError::Empty { .. })
        ));
        std::fs::write(&p, vec![0u8; (MAX_SEALED_SEED_BYTES + 1) as usize]).unwrap();
        assert!(matches!(
            read_sealed_seed(&p),
            Err(SeedFileError::TooLarge { .. })
        ));
    }
}
