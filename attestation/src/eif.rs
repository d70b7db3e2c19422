//! Enclave Image File (EIF) parsing and measurement.
//!
//! An auditor recomputes the PCRs of an enclave image from the `.eif` file alone, without
//! `nitro-cli`, and compares them with the measurements the operator published (the JSON
//! `nitro-cli build-enclave` prints) and with the PCRs in an attestation document.
//!
//! # Format (EIF version 1 to 4)
//!
//! All integers are big-endian. The file starts with a 548-byte header:
//!
//! | field | size |
//! |---|---|
//! | magic `.eif` | 4 |
//! | version | u16 |
//! | flags (bit 0: aarch64) | u16 |
//! | default memory (bytes) | u64 |
//! | default CPU count | u64 |
//! | reserved | u16 |
//! | number of sections | u16 |
//! | section offsets | 32 × u64 |
//! | section sizes | 32 × u64 |
//! | unused | u32 |
//! | CRC-32 (IEEE) | u32 |
//!
//! Then the sections follow back to back, each a 12-byte section header (type u16, flags
//! u16, data size u64) and its data. Section types: 1 kernel, 2 cmdline, 3 ramdisk,
//! 4 signature (CBOR), 5 metadata (JSON). The header's offset table points at each
//! section header, in file order; the size table holds each section's data size.
//! The CRC covers every byte of the file except the CRC field itself (version ≥ 2).
//!
//! # Measurements (what `nitro-cli` computes, and the Nitro hypervisor measures)
//!
//! Every PCR is `SHA-384(0⁴⁸ ‖ SHA-384(data))`, where `data` is, in file order:
//!
//! * PCR0: kernel, cmdline and every ramdisk (not the metadata, not the signature);
//! * PCR1: kernel, cmdline and the first ramdisk (the boot ramdisk `nitro-cli` supplies);
//! * PCR2: every ramdisk after the first (the application, i.e. the Docker image);
//! * PCR8: the DER of the signing certificate in the signature section (signed images only).
//!
//! Source: the reader and builder of the `aws-nitro-enclaves-image-format` crate
//! (`EifReader::from_eif`, `get_pcrs`, `EifHasher::tpm_extend_finalize_reset`).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha384};

/// The file magic: ASCII `.eif` (image-format crate, `EIF_MAGIC`).
pub const EIF_MAGIC: [u8; 4] = *b".eif";
/// Size of the EIF header in bytes (image-format crate, `EifHeader::size()`).
pub const EIF_HEADER_LEN: usize = 548;
/// Size of a section header in bytes (image-format crate, `EifSectionHeader::size()`).
pub const SECTION_HEADER_LEN: usize = 12;
/// Number of slots in the header's offset and size tables (image-format crate, `MAX_NUM_SECTIONS`).
pub const MAX_NUM_SECTIONS: usize = 32;
/// Highest EIF version this parser knows (image-format crate, `CURRENT_VERSION`:
/// v2 added the CRC, v3 the signature section, v4 the metadata section).
pub const MAX_SUPPORTED_VERSION: u16 = 4;
/// First version whose header carries a CRC (image-format crate, "V1 -> V2: Add support
/// to generate and check CRC").
pub const FIRST_VERSION_WITH_CRC: u16 = 2;
/// Header flag bit for an aarch64 image (image-format crate, `EIF_HDR_ARCH_ARM64`).
pub const EIF_HDR_ARCH_ARM64: u16 = 0x1;
/// Length of a SHA-384 PCR value in bytes.
pub const PCR_LEN: usize = 48;
/// Cap on the signature and metadata sections, which are read into memory. Real ones are
/// a few KiB (one certificate and one COSE_Sign1; a JSON object); this bounds a hostile file.
pub const MAX_SMALL_SECTION_BYTES: u64 = 1024 * 1024;
/// Read buffer for streaming the kernel and ramdisks through the hashers.
const CHUNK: usize = 64 * 1024;

/// A PCR value (SHA-384 digest).
pub type Pcr = [u8; PCR_LEN];

/// The kind of an EIF section (the u16 type in the section header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SectionKind {
    /// Type 1: the enclave kernel (bzImage / Image).
    Kernel,
    /// Type 2: the kernel command line.
    Cmdline,
    /// Type 3: an initramfs (the first is the boot ramdisk, the rest the application).
    Ramdisk,
    /// Type 4: CBOR array of PCR signatures (signing certificate + COSE_Sign1 over PCR0).
    Signature,
    /// Type 5: JSON build metadata (not measured).
    Metadata,
}

impl SectionKind {
    /// The section type as stored in the file.
    pub fn type_code(self) -> u16 {
        match self {
            SectionKind::Kernel => 1,
            SectionKind::Cmdline => 2,
            SectionKind::Ramdisk => 3,
            SectionKind::Signature => 4,
            SectionKind::Metadata => 5,
        }
    }

    /// Decodes a section type; 0 (`EifSectionInvalid`) and unknown values are refused.
    pub fn from_type_code(code: u16) -> Option<SectionKind> {
        match code {
            1 => Some(SectionKind::Kernel),
            2 => Some(SectionKind::Cmdline),
            3 => Some(SectionKind::Ramdisk),
            4 => Some(SectionKind::Signature),
            5 => Some(SectionKind::Metadata),
            _ => None,
        }
    }
}

impl fmt::Display for SectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SectionKind::Kernel => "kernel",
            SectionKind::Cmdline => "cmdline",
            SectionKind::Ramdisk => "ramdisk",
            SectionKind::Signature => "signature",
            SectionKind::Metadata => "metadata",
        })
    }
}

/// Errors from parsing or measuring an EIF file.
#[derive(Debug, thiserror::Error)]
pub enum EifError {
    /// The file could not be opened.
    #[error("cannot open EIF file {path}: {source}")]
    Open {
        /// The path given.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A read failed for a reason other than end of file.
    #[error("I/O error reading {what} at offset {offset}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// File offset of the read.
        offset: u64,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file ends inside a structure.
    #[error(
        "truncated EIF: {what} at offset {offset} needs {needed} bytes, only {available} present"
    )]
    Truncated {
        /// What was being read.
        what: String,
        /// File offset where it starts.
        offset: u64,
        /// Bytes it needs.
        needed: u64,
        /// Bytes the file still had.
        available: u64,
    },
    /// The first four bytes are not `.eif`.
    #[error("not an EIF file: magic is {found:02x?}, expected {expected:02x?} (\".eif\")")]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
        /// The magic expected.
        expected: [u8; 4],
    },
    /// The version is 0 or newer than this parser knows.
    #[error("unsupported EIF version {version} (this tool knows versions 1 to {max})")]
    UnsupportedVersion {
        /// Version in the header.
        version: u16,
        /// Highest known version.
        max: u16,
    },
    /// The header declares more sections than its tables hold, or none.
    #[error("EIF header declares {num_sections} sections; must be 1 to {max}")]
    BadSectionCount {
        /// Declared count.
        num_sections: u16,
        /// Table capacity.
        max: usize,
    },
    /// A section header carries an unknown or invalid type.
    #[error("section {index} at offset {offset} has invalid type {type_code}")]
    InvalidSectionType {
        /// Section index in file order.
        index: usize,
        /// File offset of the section header.
        offset: u64,
        /// The type value found.
        type_code: u16,
    },
    /// A section's position or size disagrees with the header's tables.
    #[error("section {index} ({kind}): header table says {field} {in_table}, file has {in_file}")]
    SectionTableMismatch {
        /// Section index in file order.
        index: usize,
        /// Section kind.
        kind: SectionKind,
        /// `offset` or `size`.
        field: &'static str,
        /// Value in the EIF header table.
        in_table: u64,
        /// Value found while walking the file.
        in_file: u64,
    },
    /// The number of sections in the file differs from the header's count.
    #[error("EIF header declares {declared} sections, file contains {found}")]
    SectionCountMismatch {
        /// Count in the header.
        declared: u16,
        /// Sections found.
        found: usize,
    },
    /// Bytes follow the last declared section.
    #[error("{count} unexpected bytes after the last section (offset {offset})")]
    TrailingData {
        /// Offset where the extra bytes start.
        offset: u64,
        /// How many extra bytes (at least; counted up to a cap).
        count: u64,
    },
    /// A required section is absent.
    #[error("EIF has no {kind} section")]
    MissingSection {
        /// The missing kind.
        kind: SectionKind,
    },
    /// A section that may appear once appears again.
    #[error("EIF has more than one {kind} section (second at index {index})")]
    DuplicateSection {
        /// The duplicated kind.
        kind: SectionKind,
        /// Index of the second one.
        index: usize,
    },
    /// A signature or metadata section is larger than the cap.
    #[error("{kind} section is {size} bytes; at most {max} accepted")]
    SectionTooLarge {
        /// Section kind.
        kind: SectionKind,
        /// Declared size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// The CRC-32 in the header does not match the file.
    #[error("EIF CRC-32 mismatch: header says {in_header:08x}, file computes {computed:08x}")]
    CrcMismatch {
        /// CRC stored in the header.
        in_header: u32,
        /// CRC computed over the file.
        computed: u32,
    },
    /// The signature section is not the CBOR structure nitro-cli writes.
    #[error("signature section malformed: {reason}")]
    SignatureMalformed {
        /// What is wrong.
        reason: String,
    },
    /// The signing certificate in the signature section is not a PEM certificate.
    #[error("signing certificate in the signature section is not a PEM certificate: {reason}")]
    SigningCertificate {
        /// What is wrong.
        reason: String,
    },
    /// The metadata section is not JSON.
    #[error("metadata section is not valid JSON: {reason}")]
    MetadataMalformed {
        /// Parser message.
        reason: String,
    },
}

/// The decoded EIF header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EifHeader {
    /// Format version (1–4).
    pub version: u16,
    /// Header flags (bit 0: aarch64).
    pub flags: u16,
    /// Default enclave memory in bytes.
    pub default_mem: u64,
    /// Default enclave CPU count.
    pub default_cpus: u64,
    /// Declared number of sections.
    pub num_sections: u16,
    /// Offsets of the section headers (first `num_sections` entries).
    pub section_offsets: Vec<u64>,
    /// Data sizes of the sections (first `num_sections` entries).
    pub section_sizes: Vec<u64>,
    /// CRC-32 stored in the header.
    pub crc32: u32,
}

impl EifHeader {
    /// Decodes and checks the 548-byte header (magic, version, section count).
    pub fn decode(bytes: &[u8; EIF_HEADER_LEN]) -> Result<EifHeader, EifError> {
        let mut magic = [0u8; 4];
        magic.copy_from_slice(&bytes[0..4]);
        if magic != EIF_MAGIC {
            return Err(EifError::BadMagic {
                found: magic,
                expected: EIF_MAGIC,
            });
        }
        let version = be_u16(bytes, 4);
        if version == 0 || version > MAX_SUPPORTED_VERSION {
            return Err(EifError::UnsupportedVersion {
                version,
                max: MAX_SUPPORTED_VERSION,
            });
        }
        let flags = be_u16(bytes, 6);
        let default_mem = be_u64(bytes, 8);
        let default_cpus = be_u64(bytes, 16);
        // bytes 24..26: reserved
        let num_sections = be_u16(bytes, 26);
        if num_sections == 0 || usize::from(num_sections) > MAX_NUM_SECTIONS {
            return Err(EifError::BadSectionCount {
                num_sections,
                max: MAX_NUM_SECTIONS,
            });
        }
        let offsets_at = 28;
        let sizes_at = offsets_at + 8 * MAX_NUM_SECTIONS;
        let n = usize::from(num_sections);
        let section_offsets = (0..n).map(|i| be_u64(bytes, offsets_at + 8 * i)).collect();
        let section_sizes = (0..n).map(|i| be_u64(bytes, sizes_at + 8 * i)).collect();
        // bytes 540..544: unused; 544..548: CRC
        let crc32 = be_u32(bytes, EIF_HEADER_LEN - 4);
        Ok(EifHeader {
            version,
            flags,
            default_mem,
            default_cpus,
            num_sections,
            section_offsets,
            section_sizes,
            crc32,
        })
    }

    /// True when the header flags mark an aarch64 image.
    pub fn is_arm64(&self) -> bool {
        self.flags & EIF_HDR_ARCH_ARM64 != 0
    }
}

/// One section as found in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionInfo {
    /// Section kind.
    pub kind: SectionKind,
    /// Offset of its section header.
    pub offset: u64,
    /// Data size.
    pub size: u64,
    /// Section flags.
    pub flags: u16,
}

/// Whether the CRC was checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrcStatus {
    /// The header CRC matched the file (value shown).
    Verified(u32),
    /// Version 1 images carry no CRC.
    NotPresent,
}

/// The result of measuring an EIF file.
#[derive(Clone, Debug)]
pub struct EifMeasurement {
    /// The decoded header.
    pub header: EifHeader,
    /// Sections in file order.
    pub sections: Vec<SectionInfo>,
    /// PCR0: the whole image (kernel, cmdline, all ramdisks).
    pub pcr0: Pcr,
    /// PCR1: kernel, cmdline, first ramdisk.
    pub pcr1: Pcr,
    /// PCR2: the ramdisks after the first.
    pub pcr2: Pcr,
    /// PCR8: the signing certificate, when the image is signed.
    pub pcr8: Option<Pcr>,
    /// CRC check result.
    pub crc: CrcStatus,
    /// DER of the signing certificate, when signed.
    pub signing_certificate_der: Option<Vec<u8>>,
    /// The metadata section, when present (build tool, Docker image info; not measured).
    pub metadata: Option<Value>,
}

impl EifMeasurement {
    /// The PCRs by index (0, 1, 2 and 8 when signed), for comparison with an attestation
    /// document or a policy.
    pub fn pcrs(&self) -> BTreeMap<u16, Vec<u8>> {
        let mut map = BTreeMap::new();
        map.insert(0, self.pcr0.to_vec());
        map.insert(1, self.pcr1.to_vec());
        map.insert(2, self.pcr2.to_vec());
        if let Some(pcr8) = self.pcr8 {
            map.insert(8, pcr8.to_vec());
        }
        map
    }

    /// The measurements in the JSON shape `nitro-cli build-enclave` prints.
    pub fn to_nitro_cli_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        // nitro-cli prints the Debug form of its sha2 hasher here.
        m.insert("HashAlgorithm".into(), Value::from("Sha384 { ... }"));
        for (index, value) in self.pcrs() {
            m.insert(format!("PCR{index}"), Value::from(hex::encode(value)));
        }
        let mut top = serde_json::Map::new();
        top.insert("Measurements".into(), Value::Object(m));
        Value::Object(top)
    }
}

/// `SHA-384(0⁴⁸ ‖ data)`: one extend of a zeroed PCR with `data`.
pub fn extend_from_zero(data: &[u8]) -> Pcr {
    let mut h = Sha384::new();
    h.update([0u8; PCR_LEN]);
    h.update(data);
    h.finalize().into()
}

/// Measures the EIF file at `path`.
pub fn measure_file(path: &Path) -> Result<EifMeasurement, EifError> {
    let file = File::open(path).map_err(|source| EifError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    measure_reader(BufReader::with_capacity(CHUNK, file))
}

/// Measures an EIF held in memory.
pub fn measure_bytes(bytes: &[u8]) -> Result<EifMeasurement, EifError> {
    measure_reader(bytes)
}

/// Measures an EIF read from `reader` (streamed: the kernel and ramdisks are not kept).
pub fn measure_reader<R: Read>(reader: R) -> Result<EifMeasurement, EifError> {
    let mut input = Input {
        reader,
        offset: 0,
        crc: Crc32::new(),
    };

    let mut header_bytes = [0u8; EIF_HEADER_LEN];
    input.read_exact(&mut header_bytes, "EIF header")?;
    let header = EifHeader::decode(&header_bytes)?;
    // The CRC covers the header except its last field (the CRC itself).
    let mut crc = Crc32::new();
    crc.update(&header_bytes[..EIF_HEADER_LEN - 4]);
    input.crc = crc;

    let mut image = Sha384::new();
    let mut bootstrap = Sha384::new();
    let mut app = Sha384::new();
    let mut sections = Vec::with_capacity(usize::from(header.num_sections));
    let mut ramdisks = 0usize;
    let mut signature: Option<Vec<u8>> = None;
    let mut metadata_bytes: Option<Vec<u8>> = None;
    let mut seen_kernel = false;
    let mut seen_cmdline = false;

    loop {
        let index = sections.len();
        let section_offset = input.offset;
        let mut sh = [0u8; SECTION_HEADER_LEN];
        match input.read_exact_or_eof(&mut sh, &format!("section {index} header"))? {
            ReadOutcome::Eof => break,
            ReadOutcome::Full => {}
        }
        if index >= usize::from(header.num_sections) {
            return Err(EifError::SectionCountMismatch {
                declared: header.num_sections,
                found: index + 1,
            });
        }
        let type_code = be_u16(&sh, 0);
        let flags = be_u16(&sh, 2);
        let size = be_u64(&sh, 4);
        let kind = SectionKind::from_type_code(type_code).ok_or(EifError::InvalidSectionType {
            index,
            offset: section_offset,
            type_code,
        })?;
        check_table(&header, index, kind, "offset", section_offset)?;
        check_table(&header, index, kind, "size", size)?;

        match kind {
            SectionKind::Kernel | SectionKind::Cmdline => {
                let seen = if kind == SectionKind::Kernel {
                    &mut seen_kernel
                } else {
                    &mut seen_cmdline
                };
                if *seen {
                    return Err(EifError::DuplicateSection { kind, index });
                }
                *seen = true;
                input.stream(
                    size,
                    &format!("{kind} section"),
                    &mut [&mut image, &mut bootstrap],
                )?;
            }
            SectionKind::Ramdisk => {
                let what = format!("ramdisk {ramdisks}");
                if ramdisks == 0 {
                    input.stream(size, &what, &mut [&mut image, &mut bootstrap])?;
                } else {
                    input.stream(size, &what, &mut [&mut image, &mut app])?;
                }
                ramdisks += 1;
            }
            SectionKind::Signature | SectionKind::Metadata => {
                let slot = if kind == SectionKind::Signature {
                    &mut signature
                } else {
                    &mut metadata_bytes
                };
                if slot.is_some() {
                    return Err(EifError::DuplicateSection { kind, index });
                }
                if size > MAX_SMALL_SECTION_BYTES {
                    return Err(EifError::SectionTooLarge {
                        kind,
                        size,
                        max: MAX_SMALL_SECTION_BYTES,
                    });
                }
                // Bounded by the cap just checked.
                let mut buf = vec![0u8; size as usize];
                input.read_exact(&mut buf, &format!("{kind} section"))?;
                *slot = Some(buf);
            }
        }
        sections.push(SectionInfo {
            kind,
            offset: section_offset,
            size,
            flags,
        });
    }

    if sections.len() != usize::from(header.num_sections) {
        return Err(EifError::SectionCountMismatch {
            declared: header.num_sections,
            found: sections.len(),
        });
    }
    if !seen_kernel {
        return Err(EifError::MissingSection {
            kind: SectionKind::Kernel,
        });
    }
    if !seen_cmdline {
        return Err(EifError::MissingSection {
            kind: SectionKind::Cmdline,
        });
    }
    if ramdisks == 0 {
        return Err(EifError::MissingSection {
            kind: SectionKind::Ramdisk,
        });
    }

    let computed = input.crc.finish();
    let crc = if header.version >= FIRST_VERSION_WITH_CRC {
        if computed != header.crc32 {
            return Err(EifError::CrcMismatch {
                in_header: header.crc32,
                computed,
            });
        }
        CrcStatus::Verified(computed)
    } else {
        CrcStatus::NotPresent
    };

    let signing_certificate_der = match &signature {
        Some(bytes) => Some(signing_certificate_from_signature_section(bytes)?),
        None => None,
    };
    let pcr8 = signing_certificate_der
        .as_deref()
        .map(|der| extend_from_zero(&Sha384::digest(der)));
    let metadata = match metadata_bytes {
        Some(bytes) => {
            Some(
                serde_json::from_slice(&bytes).map_err(|e| EifError::MetadataMalformed {
                    reason: e.to_string(),
                })?,
            )
        }
        None => None,
    };

    Ok(EifMeasurement {
        header,
        sections,
        pcr0: extend_from_zero(&image.finalize()),
        pcr1: extend_from_zero(&bootstrap.finalize()),
        pcr2: extend_from_zero(&app.finalize()),
        pcr8,
        crc,
        signing_certificate_der,
        metadata,
    })
}

fn check_table(
    header: &EifHeader,
    index: usize,
    kind: SectionKind,
    field: &'static str,
    in_file: u64,
) -> Result<(), EifError> {
    let table = if field == "offset" {
        &header.section_offsets
    } else {
        &header.section_sizes
    };
    // `index < num_sections == table.len()` was checked by the caller.
    let in_table = table.get(index).copied().unwrap_or(u64::MAX);
    if in_table != in_file {
        return Err(EifError::SectionTableMismatch {
            index,
            kind,
            field,
            in_table,
            in_file,
        });
    }
    Ok(())
}

/// Extracts the DER signing certificate from the signature section: a CBOR array of
/// `{ signing_certificate: PEM bytes, signature: COSE_Sign1 bytes }` (serde_cbor of
/// `Vec<PcrSignature>`; the byte fields are arrays of integers, a byte string is accepted
/// too). PCR8 measures the first entry's certificate.
pub fn signing_certificate_from_signature_section(bytes: &[u8]) -> Result<Vec<u8>, EifError> {
    use ciborium::value::Value as Cbor;
    let malformed = |reason: String| EifError::SignatureMalformed { reason };
    let value: Cbor =
        ciborium::de::from_reader(bytes).map_err(|e| malformed(format!("not CBOR: {e}")))?;
    let entries = match value {
        Cbor::Array(entries) => entries,
        other => {
            return Err(malformed(format!(
                "expected an array, found {}",
                cbor_kind(&other)
            )))
        }
    };
    let first = entries
        .into_iter()
        .next()
        .ok_or_else(|| malformed("the signature array is empty".into()))?;
    let fields = match first {
        Cbor::Map(fields) => fields,
        other => {
            return Err(malformed(format!(
                "expected a map in the signature array, found {}",
                cbor_kind(&other)
            )))
        }
    };
    let cert_value = fields
        .into_iter()
        .find(|(k, _)| matches!(k, Cbor::Text(t) if t == "signing_certificate"))
        .map(|(_, v)| v)
        .ok_or_else(|| malformed("no signing_certificate field".into()))?;
    let pem = cbor_bytes(cert_value).map_err(|r| malformed(format!("signing_certificate: {r}")))?;
    let (label, der) = der::pem::decode_vec(&pem).map_err(|e| EifError::SigningCertificate {
        reason: e.to_string(),
    })?;
    if label != "CERTIFICATE" {
        return Err(EifError::SigningCertificate {
            reason: format!("PEM label is {label:?}, expected \"CERTIFICATE\""),
        });
    }
    {
        use der::Decode;
        x509_cert::Certificate::from_der(&der).map_err(|e| EifError::SigningCertificate {
            reason: format!("not an X.509 certificate: {e}"),
        })?;
    }
    Ok(der)
}

fn cbor_kind(v: &ciborium::value::Value) -> &'static str {
    use ciborium::value::Value as Cbor;
    match v {
        Cbor::Integer(_) => "an integer",
        Cbor::Bytes(_) => "a byte string",
        Cbor::Float(_) => "a float",
        Cbor::Text(_) => "a text string",
        Cbor::Bool(_) => "a boolean",
        Cbor::Null => "null",
        Cbor::Tag(..) => "a tagged value",
        Cbor::Array(_) => "an array",
        Cbor::Map(_) => "a map",
        _ => "an unknown CBOR value",
    }
}

fn cbor_bytes(v: ciborium::value::Value) -> Result<Vec<u8>, String> {
    use ciborium::value::Value as Cbor;
    match v {
        Cbor::Bytes(b) => Ok(b),
        Cbor::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Cbor::Integer(i) => u8::try_from(i128::from(i))
                    .map_err(|_| format!("array element {} is not a byte", i128::from(i))),
                other => Err(format!("array element is {}", cbor_kind(&other))),
            })
            .collect(),
        other => Err(format!("expected bytes, found {}", cbor_kind(&other))),
    }
}

enum ReadOutcome {
    Full,
    Eof,
}

struct Input<R> {
    reader: R,
    offset: u64,
    crc: Crc32,
}

impl<R: Read> Input<R> {
    /// Fills `buf`; returns how many bytes were read before end of file.
    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<usize, EifError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(EifError::Io {
                        what: what.to_string(),
                        offset: self.offset + filled as u64,
                        source,
                    })
                }
            }
        }
        Ok(filled)
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), EifError> {
        match self.read_exact_or_eof(buf, what)? {
            ReadOutcome::Full => Ok(()),
            ReadOutcome::Eof => Err(EifError::Truncated {
                what: what.to_string(),
                offset: self.offset,
                needed: buf.len() as u64,
                available: 0,
            }),
        }
    }

    /// Reads all of `buf`, or nothing at a clean end of file; a partial read is truncation.
    fn read_exact_or_eof(&mut self, buf: &mut [u8], what: &str) -> Result<ReadOutcome, EifError> {
        let got = self.fill(buf, what)?;
        if got == 0 && !buf.is_empty() {
            return Ok(ReadOutcome::Eof);
        }
        if got < buf.len() {
            return Err(EifError::Truncated {
                what: what.to_string(),
                offset: self.offset,
                needed: buf.len() as u64,
                available: got as u64,
            });
        }
        self.crc.update(buf);
        self.offset += buf.len() as u64;
        Ok(ReadOutcome::Full)
    }

    /// Streams `size` bytes through the CRC and the given hashers.
    fn stream(
        &mut self,
        size: u64,
        what: &str,
        hashers: &mut [&mut Sha384],
    ) -> Result<(), EifError> {
        let start = self.offset;
        let mut remaining = size;
        let mut buf = vec![0u8; CHUNK];
        while remaining > 0 {
            let want = remaining.min(CHUNK as u64) as usize;
            let got = self.fill(&mut buf[..want], what)?;
            self.crc.update(&buf[..got]);
            for h in hashers.iter_mut() {
                h.update(&buf[..got]);
            }
            self.offset += got as u64;
            remaining -= got as u64;
            if got < want {
                return Err(EifError::Truncated {
                    what: what.to_string(),
                    offset: start,
                    needed: size,
                    available: size - remaining,
                });
            }
        }
        Ok(())
    }
}

/// CRC-32/ISO-HDLC (the "IEEE" CRC of zlib and Ethernet): reflected polynomial
/// 0xEDB88320, initial value and final XOR 0xFFFFFFFF. The image-format crate uses
/// `crc::CRC_32_ISO_HDLC` when writing and `crc32::IEEE` when reading: the same CRC.
#[derive(Clone, Debug)]
pub struct Crc32 {
    state: u32,
}

/// Byte-wise lookup table for [`Crc32`], built at compile time.
const CRC32_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

impl Crc32 {
    /// A fresh CRC.
    pub fn new() -> Crc32 {
        Crc32 { state: 0xFFFF_FFFF }
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut c = self.state;
        for &b in bytes {
            c = CRC32_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
        }
        self.state = c;
    }

    /// The CRC of everything fed so far.
    pub fn finish(&self) -> u32 {
        self.state ^ 0xFFFF_FFFF
    }
}

impl Default for Crc32 {
    fn default() -> Self {
        Crc32::new()
    }
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

// ---------------------------------------------------------------------------------------
// Published measurements (the JSON `nitro-cli build-enclave` / `describe-eif` print)
// ---------------------------------------------------------------------------------------

/// Errors reading a measurements JSON file.
#[derive(Debug, thiserror::Error)]
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

/// Highest PCR index an NSM exposes (PCR0..PCR31).
pub const MAX_PCR_INDEX: u16 = 31;

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
        if !pcrs.contains_key(&0) {
            return Err(MeasurementsError::MissingPcr0);
        }
        Ok(PublishedMeasurements { pcrs })
    }

    /// Reads and parses a measurements file.
    pub fn from_file(path: &Path) -> Result<PublishedMeasurements, MeasurementsFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| MeasurementsFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        PublishedMeasurements::from_json(&text).map_err(|source| MeasurementsFileError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// PCR value as lower-case hex.
    pub fn hex(&self, index: u16) -> Option<String> {
        self.pcrs.get(&index).map(hex::encode)
    }
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

/// One row of a comparison between computed and published measurements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrComparison {
    /// PCR index.
    pub index: u16,
    /// Value computed from the EIF (None: the image has no such PCR, e.g. PCR8 unsigned).
    pub computed: Option<Vec<u8>>,
    /// Value published (None: not listed).
    pub published: Option<Vec<u8>>,
}

/// Outcome of one PCR comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComparisonStatus {
    /// Both sides have the PCR and agree.
    Match,
    /// Both sides have the PCR and differ.
    Mismatch,
    /// The published file lists a PCR the image does not produce (PCR8 for an unsigned
    /// image): a failure.
    NotInImage,
    /// The image produces a PCR the file does not list: informational only.
    NotPublished,
}

impl PcrComparison {
    /// The outcome of this row.
    pub fn status(&self) -> ComparisonStatus {
        match (&self.computed, &self.published) {
            (Some(a), Some(b)) if a == b => ComparisonStatus::Match,
            (Some(_), Some(_)) => ComparisonStatus::Mismatch,
            (None, Some(_)) => ComparisonStatus::NotInImage,
            // (None, None) cannot be produced by `compare`.
            (_, None) => ComparisonStatus::NotPublished,
        }
    }

    /// True unless this row is a failure (`Mismatch` or `NotInImage`).
    pub fn is_ok(&self) -> bool {
        matches!(
            self.status(),
            ComparisonStatus::Match | ComparisonStatus::NotPublished
        )
    }
}

/// Compares the computed PCRs (0, 1, 2, 8) with published ones, one row for each of
/// those present on either side. A PCR published for an image that does not produce it
/// (PCR8 for an unsigned image) fails; a computed PCR the file omits is reported only.
/// PCRs an image does not determine (3, 4: the parent's role and instance) are ignored.
pub fn compare(measured: &EifMeasurement, published: &PublishedMeasurements) -> Vec<PcrComparison> {
    let computed = measured.pcrs();
    [0u16, 1, 2, 8]
        .into_iter()
        .filter(|i| computed.contains_key(i) || published.pcrs.contains_key(i))
        .map(|index| PcrComparison {
            index,
            computed: computed.get(&index).cloned(),
            published: published.pcrs.get(&index).cloned(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// `agentkeys-attest measure EIF [--measurements FILE] [--json]`
// ---------------------------------------------------------------------------------------

/// Errors of [`measure_report`] (exit status 2 in the CLI: nothing was compared).
#[derive(Debug, thiserror::Error)]
pub enum MeasureReportError {
    /// The EIF could not be measured.
    #[error(transparent)]
    Eif(#[from] EifError),
    /// The measurements file could not be read.
    #[error(transparent)]
    Measurements(#[from] MeasurementsFileError),
}

/// The outcome of `measure`: the text to print and whether every comparison passed
/// (always true without a measurements file).
#[derive(Clone, Debug)]
pub struct MeasureReport {
    /// Human-readable or JSON output.
    pub output: String,
    /// False when a published PCR differs from the image (CLI exit status 1).
    pub ok: bool,
}

/// Measures `eif` and, with `measurements`, compares with the published values.
pub fn measure_report(
    eif: &Path,
    measurements: Option<&Path>,
    json: bool,
) -> Result<MeasureReport, MeasureReportError> {
    let m = measure_file(eif)?;
    let rows = match measurements {
        Some(path) => Some(compare(&m, &PublishedMeasurements::from_file(path)?)),
        None => None,
    };
    let ok = rows
        .as_ref()
        .is_none_or(|r| r.iter().all(PcrComparison::is_ok));
    let status_name = |s: ComparisonStatus| match s {
        ComparisonStatus::Match => "match",
        ComparisonStatus::Mismatch => "MISMATCH",
        ComparisonStatus::NotInImage => "NOT-IN-IMAGE",
        ComparisonStatus::NotPublished => "not-published",
    };
    let crc = match m.crc {
        CrcStatus::Verified(v) => format!("{v:08x} (verified)"),
        CrcStatus::NotPresent => "none (EIF version 1)".to_string(),
    };
    let output = if json {
        let mut v = m.to_nitro_cli_json();
        if let Value::Object(top) = &mut v {
            top.insert(
                "Eif".into(),
                serde_json::json!({
                    "version": m.header.version,
                    "arch": if m.header.is_arm64() { "aarch64" } else { "x86_64" },
                    "crc32": crc,
                    "signed": m.pcr8.is_some(),
                    "sections": m.sections.iter().map(|s| serde_json::json!({
                        "kind": s.kind.to_string(), "offset": s.offset, "size": s.size
                    })).collect::<Vec<_>>(),
                }),
            );
            if let Some(rows) = &rows {
                top.insert(
                    "Comparison".into(),
                    Value::Array(
                        rows.iter()
                            .map(|r| {
                                serde_json::json!({
                                    "pcr": r.index,
                                    "status": status_name(r.status()),
                                    "computed": r.computed.as_ref().map(hex::encode),
                                    "published": r.published.as_ref().map(hex::encode),
                                })
                            })
                            .collect(),
                    ),
                );
                top.insert("Ok".into(), Value::Bool(ok));
            }
        }
        serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
    } else {
        let mut out = String::new();
        out.push_str(&format!(
            "EIF version {} ({}), {} sections, CRC-32 {}\n",
            m.header.version,
            if m.header.is_arm64() {
                "aarch64"
            } else {
                "x86_64"
            },
            m.sections.len(),
            crc
        ));
        for (index, value) in m.pcrs() {
            out.push_str(&format!("PCR{index}: {}\n", hex::encode(value)));
        }
        if m.pcr8.is_none() {
            out.push_str("PCR8: (unsigned image)\n");
        }
        if let Some(rows) = &rows {
            for r in rows {
                out.push_str(&format!("PCR{} {}\n", r.index, status_name(r.status())));
            }
            out.push_str(if ok {
                "measurements match\n"
            } else {
                "measurements DO NOT match\n"
            });
        }
        out
    };
    Ok(MeasureReport { output, ok })
}
