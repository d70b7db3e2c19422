//! Why an EIF file could not be measured.

use std::path::PathBuf;

use crate::format::SectionKind;

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
