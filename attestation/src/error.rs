//! Error types: one variant per failed check, each naming the field with the expected
//! and the actual value.

use std::fmt;

use crate::timefmt::fmt_unix_ms;

/// The checks of the verification checklist, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    /// The document is neither empty nor larger than [`crate::MAX_DOCUMENT_BYTES`].
    SizeBounds,
    /// The bytes are a COSE_Sign1 structure with ES384 as its only protected header.
    CoseStructure,
    /// The payload is an attestation document with exactly the AWS fields and bounds.
    PayloadSyntax,
    /// The leaf certificate chains through `cabundle` to the pinned root.
    CertificatePath,
    /// The COSE signature verifies with the leaf key over the received bytes.
    CoseSignature,
    /// The PCRs the policy names have the expected values.
    Pcrs,
    /// The document does not come from a debug-mode enclave (unless allowed).
    DebugMode,
    /// The nonce equals the expected one.
    Nonce,
    /// The user_data equals the expected one.
    UserData,
    /// The public_key equals the expected one.
    PublicKey,
    /// The document is neither older than the maximum age nor from the future.
    Freshness,
}

impl Check {
    /// Every check, in the order [`crate::verify`] runs them.
    pub const ALL: [Check; 11] = [
        Check::SizeBounds,
        Check::CoseStructure,
        Check::PayloadSyntax,
        Check::CertificatePath,
        Check::CoseSignature,
        Check::Pcrs,
        Check::DebugMode,
        Check::Nonce,
        Check::UserData,
        Check::PublicKey,
        Check::Freshness,
    ];

    /// A short stable name (used in CLI and JSON output).
    pub fn name(self) -> &'static str {
        match self {
            Check::SizeBounds => "size_bounds",
            Check::CoseStructure => "cose_structure",
            Check::PayloadSyntax => "payload_syntax",
            Check::CertificatePath => "certificate_path",
            Check::CoseSignature => "cose_signature",
            Check::Pcrs => "pcrs",
            Check::DebugMode => "debug_mode",
            Check::Nonce => "nonce",
            Check::UserData => "user_data",
            Check::PublicKey => "public_key",
            Check::Freshness => "freshness",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a certificate sits in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertPosition {
    /// The `certificate` field (the leaf that signs the document).
    Leaf,
    /// `cabundle[i]` (index 0 is the root, then intermediates towards the leaf).
    Bundle(usize),
}

impl fmt::Display for CertPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertPosition::Leaf => f.write_str("certificate (leaf)"),
            CertPosition::Bundle(i) => write!(f, "cabundle[{i}]"),
        }
    }
}

/// Failures of the three decoding steps: size bounds, COSE_Sign1 structure, payload syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The document has no bytes.
    #[error("size_bounds: document is empty")]
    Empty,
    /// The document is larger than any document the NSM can produce.
    #[error("size_bounds: document is {actual} bytes, expected at most {max}")]
    TooLarge {
        /// The bound.
        max: usize,
        /// The document's length.
        actual: usize,
    },
    /// The bytes are not well-formed CBOR.
    #[error("{check}: {field} is not well-formed CBOR: {message}")]
    Cbor {
        /// The step that decoded it.
        check: Check,
        /// The item being decoded.
        field: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// Bytes follow the CBOR item.
    #[error("{check}: {count} trailing byte(s) after {field}")]
    TrailingBytes {
        /// The step that decoded it.
        check: Check,
        /// The item that was followed by extra bytes.
        field: &'static str,
        /// How many bytes follow.
        count: usize,
    },
    /// The COSE_Sign1 carries a CBOR tag other than 18.
    #[error("cose_structure: CBOR tag is {actual}, expected none or 18 (COSE_Sign1)")]
    UnexpectedTag {
        /// The tag found.
        actual: u64,
    },
    /// The COSE_Sign1 array does not have four elements.
    #[error("cose_structure: COSE_Sign1 array has {actual} elements, expected 4")]
    CoseArrayLength {
        /// The number of elements found.
        actual: usize,
    },
    /// A CBOR item has the wrong type.
    #[error("{check}: {field} is {actual}, expected {expected}")]
    WrongType {
        /// The step that decoded it.
        check: Check,
        /// The field.
        field: String,
        /// The expected CBOR type.
        expected: &'static str,
        /// The CBOR type found.
        actual: &'static str,
    },
    /// The protected header has no `alg` (label 1).
    #[error("cose_structure: protected header has no alg (label 1), expected ES384 (-35)")]
    AlgMissing,
    /// The protected header's `alg` is not ES384.
    #[error("cose_structure: protected header alg is {actual}, expected ES384 (-35)")]
    AlgUnsupported {
        /// The value found.
        actual: String,
    },
    /// The protected header has a label other than `alg`.
    #[error("cose_structure: protected header has label {label}, expected only alg (1)")]
    UnexpectedHeader {
        /// The label found.
        label: String,
    },
    /// The COSE signature is not 96 bytes (ES384 r‖s).
    #[error("cose_structure: signature is {actual} bytes, expected 96 (ES384 r||s)")]
    SignatureLength {
        /// Its length.
        actual: usize,
    },
    /// A required payload field is missing.
    #[error("payload_syntax: field {field} is missing")]
    MissingField {
        /// The field.
        field: &'static str,
    },
    /// The payload has a field AWS does not define.
    #[error("payload_syntax: unexpected field {field}")]
    UnknownField {
        /// The key found.
        field: String,
    },
    /// A map key occurs twice.
    #[error("{check}: key {field} occurs more than once")]
    DuplicateKey {
        /// The step that decoded it.
        check: Check,
        /// The duplicated key.
        field: String,
    },
    /// A byte or text field's length is out of bounds.
    #[error("payload_syntax: {field} is {actual} bytes, expected {min}..={max}")]
    FieldLength {
        /// The field.
        field: String,
        /// Minimum length.
        min: usize,
        /// Maximum length.
        max: usize,
        /// Length found.
        actual: usize,
    },
    /// `digest` is not "SHA384".
    #[error("payload_syntax: digest is {actual:?}, expected \"SHA384\"")]
    Digest {
        /// The value found.
        actual: String,
    },
    /// `timestamp` is zero or does not fit an unsigned 64-bit integer.
    #[error("payload_syntax: timestamp is {actual}, expected an integer in 1..=2^64-1")]
    Timestamp {
        /// The value found.
        actual: String,
    },
    /// A PCR index is not in 0..=31.
    #[error("payload_syntax: PCR index is {actual}, expected an integer in 0..=31")]
    PcrIndex {
        /// The index found.
        actual: String,
    },
    /// A PCR value does not have a digest length.
    #[error("payload_syntax: pcrs[{index}] is {actual} bytes, expected 32, 48 or 64")]
    PcrLength {
        /// The PCR index.
        index: u16,
        /// Its length.
        actual: usize,
    },
    /// A map or array that must have entries is empty.
    #[error("payload_syntax: {field} is empty, expected at least one entry")]
    EmptyCollection {
        /// The field.
        field: &'static str,
    },
}

impl DecodeError {
    /// The checklist step that failed.
    pub fn check(&self) -> Check {
        match self {
            DecodeError::Empty | DecodeError::TooLarge { .. } => Check::SizeBounds,
            DecodeError::Cbor { check, .. }
            | DecodeError::TrailingBytes { check, .. }
            | DecodeError::WrongType { check, .. }
            | DecodeError::DuplicateKey { check, .. } => *check,
            DecodeError::UnexpectedTag { .. }
            | DecodeError::CoseArrayLength { .. }
            | DecodeError::AlgMissing
            | DecodeError::AlgUnsupported { .. }
            | DecodeError::UnexpectedHeader { .. }
            | DecodeError::SignatureLength { .. } => Check::CoseStructure,
            DecodeError::MissingField { .. }
            | DecodeError::UnknownField { .. }
            | DecodeError::FieldLength { .. }
            | DecodeError::Digest { .. }
            | DecodeError::Timestamp { .. }
            | DecodeError::PcrIndex { .. }
            | DecodeError::PcrLength { .. }
            | DecodeError::EmptyCollection { .. } => Check::PayloadSyntax,
        }
    }
}

/// Failures of the certificate path from the leaf to the pinned root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A certificate is not valid DER X.509.
    #[error("certificate_path: {position} is not a valid X.509 certificate: {message}")]
    Parse {
        /// Which certificate.
        position: CertPosition,
        /// The parser's message.
        message: String,
    },
    /// `cabundle[0]` is not the pinned root.
    #[error(
        "certificate_path: cabundle[0] is not the pinned root: expected SHA-256 {expected_sha256}, \
         actual {actual_sha256}"
    )]
    AnchorMismatch {
        /// SHA-256 (hex) of the pinned root.
        expected_sha256: String,
        /// SHA-256 (hex) of `cabundle[0]`.
        actual_sha256: String,
    },
    /// A certificate is not X.509 version 3.
    #[error("certificate_path: {position} version is {actual}, expected v3")]
    Version {
        /// Which certificate.
        position: CertPosition,
        /// The version found.
        actual: String,
    },
    /// A certificate is not signed with ECDSA with SHA-384.
    #[error(
        "certificate_path: {position} signatureAlgorithm is {actual}, expected ecdsa-with-SHA384 \
         (1.2.840.10045.4.3.3) without parameters"
    )]
    SignatureAlgorithm {
        /// Which certificate.
        position: CertPosition,
        /// The algorithm found.
        actual: String,
    },
    /// The outer and the TBS signature algorithms differ.
    #[error(
        "certificate_path: {position} tbsCertificate.signature differs from signatureAlgorithm"
    )]
    SignatureAlgorithmMismatch {
        /// Which certificate.
        position: CertPosition,
    },
    /// A certificate's key is not an EC P-384 key.
    #[error(
        "certificate_path: {position} subjectPublicKeyInfo is {actual}, expected id-ecPublicKey \
         on secp384r1 (1.3.132.0.34)"
    )]
    KeyAlgorithm {
        /// Which certificate.
        position: CertPosition,
        /// The algorithm / curve found.
        actual: String,
    },
    /// A certificate's key is not a valid P-384 point.
    #[error("certificate_path: {position} public key is not a valid P-384 point")]
    PublicKey {
        /// Which certificate.
        position: CertPosition,
    },
    /// A certificate's issuer is not the subject of the next certificate up.
    #[error("certificate_path: {position} issuer is {actual:?}, expected {expected:?} (subject of {issuer_position})")]
    IssuerName {
        /// Which certificate.
        position: CertPosition,
        /// The certificate that should have issued it.
        issuer_position: CertPosition,
        /// The issuer's subject.
        expected: String,
        /// The certificate's issuer field.
        actual: String,
    },
    /// A certificate's signature does not verify with the next key up.
    #[error("certificate_path: signature of {position} does not verify with the key of {issuer_position}")]
    Signature {
        /// Which certificate.
        position: CertPosition,
        /// The certificate whose key was used.
        issuer_position: CertPosition,
    },
    /// The verification time is before a certificate's notBefore.
    #[error("certificate_path: {position} is not valid yet: notBefore {}, verification time {}", fmt_unix_ms(*not_before_ms), fmt_unix_ms(*at_ms))]
    NotYetValid {
        /// Which certificate.
        position: CertPosition,
        /// notBefore (UNIX ms).
        not_before_ms: u64,
        /// Verification time (UNIX ms).
        at_ms: u64,
    },
    /// The verification time is after a certificate's notAfter.
    #[error("certificate_path: {position} has expired: notAfter {}, verification time {}", fmt_unix_ms(*not_after_ms), fmt_unix_ms(*at_ms))]
    Expired {
        /// Which certificate.
        position: CertPosition,
        /// notAfter (UNIX ms).
        not_after_ms: u64,
        /// Verification time (UNIX ms).
        at_ms: u64,
    },
    /// An extension could not be decoded.
    #[error("certificate_path: {position} extension {oid} is malformed: {message}")]
    Extension {
        /// Which certificate.
        position: CertPosition,
        /// The extension's OID.
        oid: String,
        /// The parser's message.
        message: String,
    },
    /// An extension occurs twice.
    #[error("certificate_path: {position} has extension {oid} more than once")]
    DuplicateExtension {
        /// Which certificate.
        position: CertPosition,
        /// The extension's OID.
        oid: String,
    },
    /// A critical extension this verifier does not process.
    #[error("certificate_path: {position} has unsupported critical extension {oid}")]
    UnknownCriticalExtension {
        /// Which certificate.
        position: CertPosition,
        /// The extension's OID.
        oid: String,
    },
    /// basicConstraints says CA where it must not, or not CA where it must.
    #[error("certificate_path: {position} basicConstraints cA is {actual}, expected {expected}")]
    BasicConstraints {
        /// Which certificate.
        position: CertPosition,
        /// Expected cA flag.
        expected: bool,
        /// Found cA flag (false when the extension is absent).
        actual: bool,
    },
    /// A required key usage bit is not set.
    #[error(
        "certificate_path: {position} keyUsage is {actual}, expected it to include {expected}"
    )]
    KeyUsage {
        /// Which certificate.
        position: CertPosition,
        /// The required usage.
        expected: &'static str,
        /// The usages found ("absent" when there is no extension).
        actual: String,
    },
    /// A CA's pathLenConstraint is smaller than the number of CAs below it.
    #[error(
        "certificate_path: {position} pathLenConstraint is {path_len}, but {actual} intermediate \
         CA certificate(s) follow it"
    )]
    PathLength {
        /// Which certificate.
        position: CertPosition,
        /// Its pathLenConstraint.
        path_len: u8,
        /// Intermediate CAs below it in the path.
        actual: usize,
    },
}

/// Failure of the COSE signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// r or s is not a valid P-384 scalar.
    #[error("cose_signature: signature is not a valid ES384 r||s value")]
    Encoding,
    /// The signature does not verify.
    #[error(
        "cose_signature: ES384 signature over the Sig_structure does not verify with the leaf key"
    )]
    Invalid,
}

/// Failures of the policy checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The policy names a PCR index outside 0..=31.
    #[error("pcrs: policy names PCR{index}, expected an index in 0..=31")]
    PolicyPcrIndex {
        /// The index.
        index: u16,
    },
    /// The document does not contain an expected PCR.
    #[error("pcrs: PCR{index} is absent, expected {expected}")]
    PcrMissing {
        /// The index.
        index: u16,
        /// Expected value (hex).
        expected: String,
    },
    /// A PCR has another value.
    #[error("pcrs: PCR{index} is {actual}, expected {expected}")]
    PcrMismatch {
        /// The index.
        index: u16,
        /// Expected value (hex).
        expected: String,
        /// Document value (hex).
        actual: String,
    },
    /// PCR0, PCR1 and PCR2 are all zero: the enclave runs in debug mode.
    #[error("debug_mode: PCR0, PCR1 and PCR2 are all zero (debug-mode enclave), expected a production enclave (pass allow_debug to accept)")]
    DebugMode,
    /// The document lacks a field the policy expects.
    #[error("{}: {field} is absent, expected {expected}", field_check(field))]
    FieldMissing {
        /// "nonce", "user_data" or "public_key".
        field: &'static str,
        /// Expected value (hex).
        expected: String,
    },
    /// A field differs from the expected value.
    #[error("{}: {field} is {actual}, expected {expected}", field_check(field))]
    FieldMismatch {
        /// "nonce", "user_data" or "public_key".
        field: &'static str,
        /// Expected value (hex).
        expected: String,
        /// Document value (hex).
        actual: String,
    },
    /// The document is older than the maximum age plus the clock skew.
    #[error(
        "freshness: document is {age_ms} ms old (timestamp {}, verification time {}), expected at \
         most {max_age_ms} ms + {skew_ms} ms clock skew",
        fmt_unix_ms(*timestamp_ms), fmt_unix_ms(*at_ms)
    )]
    TooOld {
        /// Document timestamp (UNIX ms).
        timestamp_ms: u64,
        /// Verification time (UNIX ms).
        at_ms: u64,
        /// Its age.
        age_ms: u64,
        /// Allowed age.
        max_age_ms: u64,
        /// Allowed skew.
        skew_ms: u64,
    },
    /// The document's timestamp is later than the verification time plus the clock skew.
    #[error(
        "freshness: document timestamp {} is later than verification time {} + {skew_ms} ms clock skew",
        fmt_unix_ms(*timestamp_ms), fmt_unix_ms(*at_ms)
    )]
    FromFuture {
        /// Document timestamp (UNIX ms).
        timestamp_ms: u64,
        /// Verification time (UNIX ms).
        at_ms: u64,
        /// Allowed skew.
        skew_ms: u64,
    },
}

fn field_check(field: &str) -> Check {
    match field {
        "nonce" => Check::Nonce,
        "user_data" => Check::UserData,
        _ => Check::PublicKey,
    }
}

impl PolicyError {
    /// The checklist step that failed.
    pub fn check(&self) -> Check {
        match self {
            PolicyError::PolicyPcrIndex { .. }
            | PolicyError::PcrMissing { .. }
            | PolicyError::PcrMismatch { .. } => Check::Pcrs,
            PolicyError::DebugMode => Check::DebugMode,
            PolicyError::FieldMissing { field, .. } | PolicyError::FieldMismatch { field, .. } => {
                field_check(field)
            }
            PolicyError::TooOld { .. } | PolicyError::FromFuture { .. } => Check::Freshness,
        }
    }
}

/// Any verification failure; [`VerifyError::check`] names the step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Size bounds, COSE structure or payload syntax.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Certificate path.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// COSE signature.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// Policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

impl VerifyError {
    /// The checklist step that failed.
    pub fn check(&self) -> Check {
        match self {
            VerifyError::Decode(e) => e.check(),
            VerifyError::Chain(_) => Check::CertificatePath,
            VerifyError::Signature(_) => Check::CoseSignature,
            VerifyError::Policy(e) => e.check(),
        }
    }
}

/// Failures creating a [`crate::TrustAnchor`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnchorError {
    /// The text is not PEM.
    #[error("trust anchor: not a PEM document: {message}")]
    Pem {
        /// The decoder's message.
        message: String,
    },
    /// The PEM block is not a certificate.
    #[error("trust anchor: PEM label is {actual:?}, expected \"CERTIFICATE\"")]
    Label {
        /// The label found.
        actual: String,
    },
    /// The certificate does not parse.
    #[error("trust anchor: not a valid X.509 certificate: {message}")]
    Certificate {
        /// The parser's message.
        message: String,
    },
    /// The certificate is not a validly self-signed P-384 root.
    #[error("trust anchor: {subject:?} is not a self-signed ES384 root: {reason}")]
    NotSelfSigned {
        /// The certificate's subject.
        subject: String,
        /// The check that failed, as it would be reported for `cabundle[0]`.
        reason: ChainError,
    },
    /// The certificate is the mock NSM root, refused unless trusted explicitly.
    #[error(
        "trust anchor: {subject:?} is the mock NSM root; it is trusted only through \
         mock_root_explicitly_trusted (CLI: --allow-mock-root)"
    )]
    MockRoot {
        /// The certificate's subject.
        subject: String,
    },
}

/// An error with its sources, `: `-separated, each cause once, so that a refused
/// certificate says why (e.g. "invalid peer certificate: UnknownIssuer") and not only
/// "error sending request" (reqwest's and hyper's own messages omit the cause).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
