//! Enclave Image File (EIF) reading and measurement, for `agentkeys-attest measure`.
//!
//! An auditor recomputes the PCRs of an enclave image from the `.eif` file alone, without
//! `nitro-cli`, and compares them with the measurements the operator published (the JSON
//! `nitro-cli build-enclave` prints) and with the PCRs in an attestation document.
//!
//! AWS's `aws-nitro-enclaves-image-format` crate (Apache-2.0) can measure an existing
//! image (`EifReader::from_eif`, then `get_measurements`), but version 0.8.1 depends
//! unconditionally on `openssl` (the system OpenSSL library), `aws-nitro-enclaves-cose`,
//! the AWS KMS SDK and a multi-threaded tokio runtime, and requires Rust 1.94.1. Its
//! reader also allocates each section at the size the file declares and indexes the
//! signature array without checking that it has an entry; an auditor measures images it
//! does not trust, so this crate streams the large sections, caps the small ones and
//! reports every malformed image as an [`EifError`] naming the failed check.
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

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod crc;
mod error;
mod format;
mod header;
mod measure;
mod report;
mod signature;

pub use crc::Crc32;
pub use error::EifError;
pub use format::{
    SectionKind, EIF_HDR_ARCH_ARM64, EIF_HEADER_LEN, EIF_MAGIC, FIRST_VERSION_WITH_CRC,
    MAX_NUM_SECTIONS, MAX_SUPPORTED_VERSION, SECTION_HEADER_LEN,
};
pub use header::EifHeader;
pub use measure::{
    measure_bytes, measure_file, measure_reader, CrcStatus, EifMeasurement, Pcr, SectionInfo,
    MAX_SMALL_SECTION_BYTES, PCR_LEN,
};
pub use report::{compare, BuildProvenance, ComparisonStatus, MeasureReport, PcrComparison};
pub use signature::signing_certificate_from_signature_section;
