//! The 548-byte header at the start of an EIF.

use crate::error::EifError;
use crate::format::{
    be_u16, be_u32, be_u64, EIF_HDR_ARCH_ARM64, EIF_HEADER_LEN, EIF_MAGIC, MAX_NUM_SECTIONS,
    MAX_SUPPORTED_VERSION,
};

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
