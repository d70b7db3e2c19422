//! Streaming an EIF through the CRC and the PCR hashers.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha384};

use crate::crc::Crc32;
use crate::error::EifError;
use crate::format::{
    be_u16, be_u64, SectionKind, EIF_HEADER_LEN, FIRST_VERSION_WITH_CRC, SECTION_HEADER_LEN,
};
use crate::header::EifHeader;
use crate::signature::signing_certificate_from_signature_section;

/// Length of a SHA-384 PCR value in bytes.
pub const PCR_LEN: usize = 48;
/// Cap on the signature and metadata sections, which are read into memory. Real ones are
/// a few KiB (one certificate and one COSE_Sign1; a JSON object); this bounds a hostile file.
pub const MAX_SMALL_SECTION_BYTES: u64 = 1024 * 1024;
/// Read buffer for streaming the kernel and ramdisks through the hashers.
const CHUNK: usize = 64 * 1024;

/// A PCR value (SHA-384 digest).
pub type Pcr = [u8; PCR_LEN];

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
fn extend_from_zero(data: &[u8]) -> Pcr {
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
