//! The EIF layout: sizes, versions and section kinds, as the `aws-nitro-enclaves-image-format`
//! crate defines them, and the big-endian field readers.

use std::fmt;

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

pub(crate) fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub(crate) fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}
