//! KMS `CiphertextForRecipient` unwrapping.
//!
//! When a KMS request carries a `Recipient` attestation document, KMS does not return
//! the plaintext: it returns `CiphertextForRecipient`, a CMS (RFC 5652) `EnvelopedData`
//! in BER with indefinite lengths. Exactly one `KeyTransRecipientInfo` wraps a 32-byte
//! AES key with RSAES-OAEP (SHA-256, MGF1-SHA-256, empty label, RFC 8017) under the
//! public key of the document, and the content is encrypted with AES-256-CBC and
//! PKCS#7 padding (RFC 3565).
//!
//! Three layers, one file each:
//! * `ber.rs`: a small BER reader (high tag numbers, definite and indefinite lengths,
//!   constructed OCTET STRINGs, a depth limit; never panics);
//! * `enveloped.rs`: a strict parser for that one profile of `EnvelopedData` (every
//!   deviation is an error naming the field, what was expected and what was found);
//! * `unwrap.rs`: the recipient key and the unwrap itself with aws-lc-rs (constant-time
//!   RSA-OAEP; AES-256-CBC).
//!
//! The RSA key is generated fresh at every boot ([`RecipientKey::generate`]) and never
//! leaves the enclave.
//!
//! These files use nothing else from the crate, so the `cms_ber` fuzz target
//! (`enclave/fuzz`) compiles them on their own with only aws-lc-rs, zeroize, thiserror
//! and base64.

mod ber;
mod enveloped;
mod unwrap;

pub use ber::{Tag, TagClass, MAX_DEPTH};
pub use enveloped::{parse_enveloped_data, EnvelopedData, RecipientId};
pub use unwrap::{unwrap_ciphertext_for_recipient, RecipientKey};

/// Why a `CiphertextForRecipient` could not be parsed or unwrapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmsError {
    /// The input ends inside an element.
    #[error("BER truncated at offset {offset}: {needed} more bytes needed, {available} available")]
    Truncated {
        /// Where the missing bytes should start.
        offset: usize,
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// Bytes after the outermost `ContentInfo`.
    #[error("{count} trailing bytes after the ContentInfo at offset {offset}")]
    TrailingData {
        /// Offset of the first extra byte.
        offset: usize,
        /// How many.
        count: usize,
    },
    /// A high-tag-number identifier is malformed (leading 0x80, overflow, or a number
    /// below 31 in the long form).
    #[error("invalid high-tag-number identifier at offset {offset}")]
    InvalidTag {
        /// Offset of the identifier.
        offset: usize,
    },
    /// Length octet 0xFF (reserved, X.690 §8.1.3.5 c).
    #[error("reserved length octet 0xFF at offset {offset}")]
    ReservedLength {
        /// Offset of the length octets.
        offset: usize,
    },
    /// A long-form length does not fit the input size.
    #[error("length at offset {offset} uses {octets} octets, more than supported")]
    LengthTooLong {
        /// Offset of the length octets.
        offset: usize,
        /// Number of subsequent length octets.
        octets: usize,
    },
    /// Indefinite length on a primitive element (X.690 §8.1.3.2 a).
    #[error("indefinite length on primitive {tag} at offset {offset}")]
    IndefinitePrimitive {
        /// Offset of the element.
        offset: usize,
        /// Its tag.
        tag: Tag,
    },
    /// An end-of-contents marker where none may appear.
    #[error("unexpected end-of-contents at offset {offset}")]
    UnexpectedEndOfContents {
        /// Offset of the marker.
        offset: usize,
    },
    /// An end-of-contents marker with a non-zero length octet.
    #[error("malformed end-of-contents (non-zero length) at offset {offset}")]
    MalformedEndOfContents {
        /// Offset of the marker.
        offset: usize,
    },
    /// An indefinite-length element never closed.
    #[error("indefinite-length {tag} at offset {offset} has no end-of-contents")]
    MissingEndOfContents {
        /// Offset of the element.
        offset: usize,
        /// Its tag.
        tag: Tag,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("BER nested deeper than {limit} levels at offset {offset}")]
    TooDeep {
        /// Offset of the element that went too deep.
        offset: usize,
        /// [`MAX_DEPTH`].
        limit: usize,
    },
    /// An element with another tag than the structure requires.
    #[error("{field} at offset {offset}: expected {expected}, found {actual}")]
    UnexpectedTag {
        /// The field being read.
        field: &'static str,
        /// Offset of the element.
        offset: usize,
        /// What was expected.
        expected: String,
        /// What was found.
        actual: Tag,
    },
    /// A required field is missing (its SEQUENCE ended).
    #[error("{field} missing: its enclosing structure ends at offset {offset}")]
    MissingField {
        /// The field.
        field: &'static str,
        /// Where the structure ended.
        offset: usize,
    },
    /// An element after the last field of a structure.
    #[error("unexpected {tag} after the last field of {structure} at offset {offset}")]
    UnexpectedElement {
        /// The structure.
        structure: &'static str,
        /// Offset of the extra element.
        offset: usize,
        /// Its tag.
        tag: Tag,
    },
    /// An INTEGER that is empty, negative, non-minimal or too large.
    #[error("{field} at offset {offset} is not a small non-negative INTEGER")]
    InvalidInteger {
        /// The field.
        field: &'static str,
        /// Offset.
        offset: usize,
    },
    /// An OBJECT IDENTIFIER other than the one required.
    #[error("{field}: expected OID {expected}, found {actual}")]
    UnexpectedOid {
        /// The field.
        field: &'static str,
        /// Expected OID (dotted, with its name).
        expected: &'static str,
        /// Found OID (dotted, or hex if malformed).
        actual: String,
    },
    /// A version number outside the profile.
    #[error("{structure} version: expected {expected}, found {actual}")]
    UnsupportedVersion {
        /// The structure.
        structure: &'static str,
        /// Accepted values.
        expected: &'static str,
        /// Found value.
        actual: u64,
    },
    /// Not exactly one recipient.
    #[error("expected exactly one RecipientInfo, found {actual}")]
    RecipientCount {
        /// Number of RecipientInfos.
        actual: usize,
    },
    /// A RecipientInfo that is not a KeyTransRecipientInfo.
    #[error("RecipientInfo is {actual}, expected KeyTransRecipientInfo (SEQUENCE)")]
    UnsupportedRecipientInfo {
        /// Its tag (`[1]` kari, `[2]` kekri, `[3]` pwri, `[4]` ori).
        actual: Tag,
    },
    /// A parameter whose value must be absent or NULL has another value.
    #[error("{field}: parameters must be absent or NULL, found {actual}")]
    UnexpectedParameters {
        /// The AlgorithmIdentifier.
        field: &'static str,
        /// What was found.
        actual: Tag,
    },
    /// The OAEP label (pSourceAlgorithm) is not empty.
    #[error("RSAES-OAEP label must be empty, found {length} bytes")]
    OaepLabel {
        /// Label length.
        length: usize,
    },
    /// The content-encryption IV is not 16 bytes.
    #[error("aes256-CBC IV: expected {expected} bytes, found {actual}")]
    IvLength {
        /// 16.
        expected: usize,
        /// Found length.
        actual: usize,
    },
    /// The ciphertext is empty or not a whole number of AES blocks.
    #[error("encryptedContent of {actual} bytes is not a non-zero multiple of 16")]
    CiphertextLength {
        /// Found length.
        actual: usize,
    },
    /// The encryptedContent field is absent (detached content is not supported).
    #[error("encryptedContent is absent")]
    MissingEncryptedContent,
    /// The encrypted key is not one RSA block for this key.
    #[error("encryptedKey: expected {expected} bytes for this RSA key, found {actual}")]
    EncryptedKeyLength {
        /// Key size in bytes.
        expected: usize,
        /// Found length.
        actual: usize,
    },
    /// RSA-OAEP decryption failed (wrong key, or corrupted encryptedKey).
    #[error("RSA-OAEP unwrap of the content key failed")]
    KeyUnwrap,
    /// The unwrapped content key is not an AES-256 key.
    #[error("unwrapped content key: expected {expected} bytes, found {actual}")]
    ContentKeyLength {
        /// 32.
        expected: usize,
        /// Found length.
        actual: usize,
    },
    /// AES-256-CBC decryption or PKCS#7 unpadding failed.
    #[error("AES-256-CBC decryption failed (bad padding or corrupted content)")]
    ContentDecrypt,
    /// RSA key generation failed.
    #[error("RSA-2048 key generation failed")]
    KeyGeneration,
    /// A supplied private key was rejected.
    #[error("RSA private key rejected: {reason}")]
    KeyRejected {
        /// Why.
        reason: String,
    },
}

/// Result of every step of reading and unwrapping.
type Result<T> = std::result::Result<T, CmsError>;

/// Lower-case hex for `Debug` output and error messages (the fuzz build has no `hex`).
fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
