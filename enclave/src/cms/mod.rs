//! KMS `CiphertextForRecipient` unwrapping.
//!
//! When a KMS request carries a `Recipient` attestation document, KMS does not return
//! the plaintext: it returns `CiphertextForRecipient`, a CMS (RFC 5652) `EnvelopedData`
//! in BER with indefinite lengths. Exactly one `KeyTransRecipientInfo` wraps a 32-byte
//! AES key with RSAES-OAEP (SHA-256, MGF1-SHA-256, empty label, RFC 8017) under the
//! public key of the document, and the content is encrypted with AES-256-CBC and
//! PKCS#7 padding (RFC 3565).
//!
//! This module holds a small BER reader (high tag numbers, definite and indefinite
//! lengths, constructed OCTET STRINGs, a depth limit; never panics), a strict parser
//! for that one profile of `EnvelopedData` (every deviation is an error naming the
//! field, what was expected and what was found), and the unwrap itself with aws-lc-rs
//! (constant-time RSA-OAEP; AES-256-CBC).
//!
//! The RSA key is generated fresh at every boot ([`RecipientKey::generate`]) and never
//! leaves the enclave.

use std::fmt;

use aws_lc_rs::cipher::{DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey, AES_256};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{
    KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA256_MGF1SHA256,
};
use zeroize::Zeroizing;

/// Deepest BER nesting accepted. A KMS `EnvelopedData` nests 11 levels (ContentInfo →
/// … → MGF1 hash AlgorithmIdentifier → OID); 32 leaves room and bounds recursion.
pub const MAX_DEPTH: usize = 32;

/// AES-256 key length (FIPS 197).
const CONTENT_KEY_LEN: usize = 32;
/// AES block / CBC IV length (FIPS 197, SP 800-38A).
const AES_BLOCK_LEN: usize = 16;

/// `id-envelopedData` 1.2.840.113549.1.7.3 (RFC 5652 §6.1).
const OID_ENVELOPED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
/// `id-data` 1.2.840.113549.1.7.1 (RFC 5652 §4).
const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
/// `id-RSAES-OAEP` 1.2.840.113549.1.1.7 (RFC 8017 A.2.1).
const OID_RSAES_OAEP: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07];
/// `id-mgf1` 1.2.840.113549.1.1.8 (RFC 8017 B.2.1).
const OID_MGF1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
/// `id-pSpecified` 1.2.840.113549.1.1.9 (RFC 8017 A.2.1).
const OID_P_SPECIFIED: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x09];
/// `id-sha256` 2.16.840.1.101.3.4.2.1 (RFC 5754 §2.2).
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
/// `id-aes256-CBC` 2.16.840.1.101.3.4.1.42 (RFC 3565 §4.1).
const OID_AES256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];

/// Universal tag numbers (X.680 §8.4).
const UNIVERSAL_INTEGER: u32 = 2;
const UNIVERSAL_OCTET_STRING: u32 = 4;
const UNIVERSAL_NULL: u32 = 5;
const UNIVERSAL_OID: u32 = 6;
const UNIVERSAL_SEQUENCE: u32 = 16;
const UNIVERSAL_SET: u32 = 17;

/// Class of a BER tag (X.690 §8.1.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagClass {
    /// Universal.
    Universal,
    /// Application.
    Application,
    /// Context-specific (`[n]`).
    ContextSpecific,
    /// Private.
    Private,
}

/// A BER tag: class, constructed bit and number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    /// Tag class.
    pub class: TagClass,
    /// Constructed (`true`) or primitive encoding.
    pub constructed: bool,
    /// Tag number.
    pub number: u32,
}

impl Tag {
    const fn universal(number: u32, constructed: bool) -> Tag {
        Tag {
            class: TagClass::Universal,
            constructed,
            number,
        }
    }

    const fn context(number: u32, constructed: bool) -> Tag {
        Tag {
            class: TagClass::ContextSpecific,
            constructed,
            number,
        }
    }

    const SEQUENCE: Tag = Tag::universal(UNIVERSAL_SEQUENCE, true);
    const SET: Tag = Tag::universal(UNIVERSAL_SET, true);
    const INTEGER: Tag = Tag::universal(UNIVERSAL_INTEGER, false);
    const OID: Tag = Tag::universal(UNIVERSAL_OID, false);
    const NULL: Tag = Tag::universal(UNIVERSAL_NULL, false);

    fn is_octet_string(&self) -> bool {
        self.class == TagClass::Universal && self.number == UNIVERSAL_OCTET_STRING
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let form = if self.constructed {
            "constructed"
        } else {
            "primitive"
        };
        match self.class {
            TagClass::Universal => {
                let name = match self.number {
                    0 => "end-of-contents",
                    1 => "BOOLEAN",
                    2 => "INTEGER",
                    3 => "BIT STRING",
                    4 => "OCTET STRING",
                    5 => "NULL",
                    6 => "OBJECT IDENTIFIER",
                    16 => "SEQUENCE",
                    17 => "SET",
                    other => return write!(f, "UNIVERSAL {other} ({form})"),
                };
                write!(f, "{name} ({form})")
            }
            TagClass::Application => write!(f, "[APPLICATION {}] ({form})", self.number),
            TagClass::ContextSpecific => write!(f, "[{}] ({form})", self.number),
            TagClass::Private => write!(f, "[PRIVATE {}] ({form})", self.number),
        }
    }
}

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

type Result<T> = std::result::Result<T, CmsError>;

/// One BER element: its tag, where it starts, and its contents (without the
/// end-of-contents marker of an indefinite length).
#[derive(Clone, Copy, Debug)]
struct Element<'a> {
    tag: Tag,
    offset: usize,
    contents: &'a [u8],
    /// Absolute offset of `contents[0]`.
    contents_offset: usize,
    depth: usize,
}

/// Reads consecutive BER elements from a slice.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Absolute offset of `data[0]` in the whole input.
    base: usize,
    /// Depth of the elements this reader yields.
    depth: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Reader<'a> {
        Reader {
            data,
            pos: 0,
            base: 0,
            depth: 0,
        }
    }

    /// A reader over the children of a constructed element.
    fn children(element: &Element<'a>) -> Reader<'a> {
        Reader {
            data: element.contents,
            pos: 0,
            base: element.contents_offset,
            depth: element.depth + 1,
        }
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn byte(&mut self) -> Result<u8> {
        match self.data.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(CmsError::Truncated {
                offset: self.offset(),
                needed: 1,
                available: 0,
            }),
        }
    }

    fn at_end_of_contents(&self) -> bool {
        self.data.get(self.pos) == Some(&0) && self.data.get(self.pos + 1).is_some()
    }

    /// Reads an end-of-contents marker (`00 00`).
    fn end_of_contents(&mut self) -> Result<()> {
        let offset = self.offset();
        let _ = self.byte()?;
        if self.byte()? != 0 {
            return Err(CmsError::MalformedEndOfContents { offset });
        }
        Ok(())
    }

    fn tag(&mut self) -> Result<Tag> {
        let offset = self.offset();
        let first = self.byte()?;
        let class = match first >> 6 {
            0 => TagClass::Universal,
            1 => TagClass::Application,
            2 => TagClass::ContextSpecific,
            _ => TagClass::Private,
        };
        let constructed = first & 0x20 != 0;
        let mut number = u32::from(first & 0x1f);
        if number == 0x1f {
            // High-tag-number form (X.690 §8.1.2.4): base-128, no leading 0x80.
            number = 0;
            let mut count = 0;
            loop {
                let b = self.byte()?;
                if count == 0 && b == 0x80 {
                    return Err(CmsError::InvalidTag { offset });
                }
                count += 1;
                if number > (u32::MAX >> 7) {
                    return Err(CmsError::InvalidTag { offset });
                }
                number = (number << 7) | u32::from(b & 0x7f);
                if b & 0x80 == 0 {
                    break;
                }
            }
            if number < 0x1f {
                return Err(CmsError::InvalidTag { offset });
            }
        }
        Ok(Tag {
            class,
            constructed,
            number,
        })
    }

    /// `Some(length)` for a definite length, `None` for indefinite.
    fn length(&mut self) -> Result<Option<usize>> {
        let offset = self.offset();
        let first = self.byte()?;
        match first {
            0x00..=0x7f => Ok(Some(usize::from(first))),
            0x80 => Ok(None),
            0xff => Err(CmsError::ReservedLength { offset }),
            _ => {
                let octets = usize::from(first & 0x7f);
                if octets > std::mem::size_of::<u32>() {
                    return Err(CmsError::LengthTooLong { offset, octets });
                }
                let mut length: usize = 0;
                for _ in 0..octets {
                    length = (length << 8) | usize::from(self.byte()?);
                }
                Ok(Some(length))
            }
        }
    }

    /// Reads the next element. End-of-contents is an error here (callers that allow it
    /// check [`at_end_of_contents`](Self::at_end_of_contents) first).
    fn element(&mut self) -> Result<Element<'a>> {
        let offset = self.offset();
        if self.depth > MAX_DEPTH {
            return Err(CmsError::TooDeep {
                offset,
                limit: MAX_DEPTH,
            });
        }
        let tag = self.tag()?;
        let length = self.length()?;
        if tag == Tag::universal(0, false) {
            return Err(CmsError::UnexpectedEndOfContents { offset });
        }
        let start = self.pos;
        match length {
            Some(length) => {
                let available = self.data.len() - start;
                if length > available {
                    return Err(CmsError::Truncated {
                        offset: self.base + start,
                        needed: length,
                        available,
                    });
                }
                self.pos = start + length;
                Ok(Element {
                    tag,
                    offset,
                    contents: &self.data[start..start + length],
                    contents_offset: self.base + start,
                    depth: self.depth,
                })
            }
            None => {
                if !tag.constructed {
                    return Err(CmsError::IndefinitePrimitive { offset, tag });
                }
                // Skip the children to find the matching end-of-contents.
                let mut inner = Reader {
                    data: self.data,
                    pos: start,
                    base: self.base,
                    depth: self.depth + 1,
                };
                loop {
                    if inner.is_empty() {
                        return Err(CmsError::MissingEndOfContents { offset, tag });
                    }
                    if inner.at_end_of_contents() {
                        let end = inner.pos;
                        inner.end_of_contents()?;
                        self.pos = inner.pos;
                        return Ok(Element {
                            tag,
                            offset,
                            contents: &self.data[start..end],
                            contents_offset: self.base + start,
                            depth: self.depth,
                        });
                    }
                    match inner.element() {
                        Ok(_) => {}
                        // A child cut short by the end of input means the
                        // end-of-contents is missing too; report the child.
                        Err(error) => return Err(error),
                    }
                }
            }
        }
    }

    /// Reads the next element, which must exist (`field` names it in errors).
    fn required(&mut self, field: &'static str) -> Result<Element<'a>> {
        if self.is_empty() {
            return Err(CmsError::MissingField {
                field,
                offset: self.offset(),
            });
        }
        self.element()
    }

    /// Reads the next element and checks its tag.
    fn expect(&mut self, field: &'static str, tag: Tag) -> Result<Element<'a>> {
        let element = self.required(field)?;
        check_tag(&element, field, tag)?;
        Ok(element)
    }

    /// The next element's tag, without consuming it.
    fn peek_tag(&self) -> Result<Option<Tag>> {
        if self.is_empty() {
            return Ok(None);
        }
        let mut probe = Reader {
            data: self.data,
            pos: self.pos,
            base: self.base,
            depth: self.depth,
        };
        probe.tag().map(Some)
    }

    /// Checks that nothing follows the last field of `structure`.
    fn finish(&mut self, structure: &'static str) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let offset = self.offset();
        let tag = self.tag()?;
        Err(CmsError::UnexpectedElement {
            structure,
            offset,
            tag,
        })
    }
}

fn check_tag(element: &Element<'_>, field: &'static str, tag: Tag) -> Result<()> {
    if element.tag != tag {
        return Err(CmsError::UnexpectedTag {
            field,
            offset: element.offset,
            expected: tag.to_string(),
            actual: element.tag,
        });
    }
    Ok(())
}

/// The bytes of an OCTET STRING (or an IMPLICIT one with another tag): primitive, or
/// constructed from OCTET STRING segments (X.690 §8.7.3), recursively.
fn octet_string(element: &Element<'_>, field: &'static str) -> Result<Vec<u8>> {
    if !element.tag.constructed {
        return Ok(element.contents.to_vec());
    }
    let mut out = Vec::new();
    let mut segments = Reader::children(element);
    while !segments.is_empty() {
        let segment = segments.element()?;
        if !segment.tag.is_octet_string() {
            return Err(CmsError::UnexpectedTag {
                field,
                offset: segment.offset,
                expected: "OCTET STRING segment".to_owned(),
                actual: segment.tag,
            });
        }
        out.extend_from_slice(&octet_string(&segment, field)?);
    }
    Ok(out)
}

fn expect_octet_string(reader: &mut Reader<'_>, field: &'static str) -> Result<Vec<u8>> {
    let element = reader.required(field)?;
    if !element.tag.is_octet_string() {
        return Err(CmsError::UnexpectedTag {
            field,
            offset: element.offset,
            expected: "OCTET STRING".to_owned(),
            actual: element.tag,
        });
    }
    octet_string(&element, field)
}

/// A small non-negative INTEGER (DER-minimal; versions only).
fn small_integer(reader: &mut Reader<'_>, field: &'static str) -> Result<u64> {
    let element = reader.expect(field, Tag::INTEGER)?;
    let bytes = element.contents;
    let invalid = CmsError::InvalidInteger {
        field,
        offset: element.offset,
    };
    let Some(&first) = bytes.first() else {
        return Err(invalid);
    };
    if first & 0x80 != 0
        || bytes.len() > 8
        || (bytes.len() > 1 && first == 0 && bytes[1] & 0x80 == 0)
    {
        return Err(invalid);
    }
    Ok(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

/// Renders OID contents as dotted text (hex if malformed) for error messages.
fn oid_text(contents: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    let mut in_arc = false;
    for &b in contents {
        if value > (u64::MAX >> 7) {
            return format!("malformed OID {}", hex_lower(contents));
        }
        value = (value << 7) | u64::from(b & 0x7f);
        in_arc = b & 0x80 != 0;
        if !in_arc {
            arcs.push(value);
            value = 0;
        }
    }
    if contents.is_empty() || in_arc {
        return format!("malformed OID {}", hex_lower(contents));
    }
    let mut text = String::new();
    for (i, arc) in arcs.iter().enumerate() {
        if i == 0 {
            let (a, b) = match *arc {
                x if x < 40 => (0, x),
                x if x < 80 => (1, x - 40),
                x => (2, x - 80),
            };
            text.push_str(&format!("{a}.{b}"));
        } else {
            text.push_str(&format!(".{arc}"));
        }
    }
    text
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn expect_oid(
    reader: &mut Reader<'_>,
    field: &'static str,
    oid: &[u8],
    expected: &'static str,
) -> Result<()> {
    let element = reader.expect(field, Tag::OID)?;
    if element.contents != oid {
        return Err(CmsError::UnexpectedOid {
            field,
            expected,
            actual: oid_text(element.contents),
        });
    }
    Ok(())
}

/// AlgorithmIdentifier parameters that must be absent or NULL.
fn absent_or_null(reader: &mut Reader<'_>, field: &'static str) -> Result<()> {
    if reader.is_empty() {
        return Ok(());
    }
    let element = reader.element()?;
    if element.tag != Tag::NULL || !element.contents.is_empty() {
        return Err(CmsError::UnexpectedParameters {
            field,
            actual: element.tag,
        });
    }
    reader.finish(field)
}

/// `SEQUENCE { id-sha256, NULL OPTIONAL }`.
fn sha256_identifier(element: &Element<'_>, field: &'static str) -> Result<()> {
    check_tag(element, field, Tag::SEQUENCE)?;
    let mut reader = Reader::children(element);
    expect_oid(
        &mut reader,
        field,
        OID_SHA256,
        "2.16.840.1.101.3.4.2.1 (sha256)",
    )?;
    absent_or_null(&mut reader, field)
}

/// RSAES-OAEP-params (RFC 8017 A.2.1) restricted to SHA-256, MGF1-SHA-256 and an empty
/// label. Omitted fields take their DEFAULTs (SHA-1, MGF1-SHA-1), which are refused.
fn oaep_parameters(reader: &mut Reader<'_>) -> Result<()> {
    const FIELD: &str = "keyEncryptionAlgorithm parameters (RSAES-OAEP-params)";
    let params = reader.expect(FIELD, Tag::SEQUENCE)?;
    reader.finish("keyEncryptionAlgorithm")?;
    let mut fields = Reader::children(&params);

    // hashAlgorithm [0] EXPLICIT, DEFAULT sha1.
    if fields.peek_tag()? != Some(Tag::context(0, true)) {
        return Err(CmsError::UnexpectedOid {
            field: "RSAES-OAEP hashAlgorithm",
            expected: "2.16.840.1.101.3.4.2.1 (sha256)",
            actual: "1.3.14.3.2.26 (sha1, by DEFAULT: field absent)".to_owned(),
        });
    }
    let hash = fields.element()?;
    let mut hash_reader = Reader::children(&hash);
    let hash_id = hash_reader.expect("RSAES-OAEP hashAlgorithm", Tag::SEQUENCE)?;
    hash_reader.finish("RSAES-OAEP hashAlgorithm")?;
    sha256_identifier(&hash_id, "RSAES-OAEP hashAlgorithm")?;

    // maskGenAlgorithm [1] EXPLICIT, DEFAULT mgf1SHA1.
    if fields.peek_tag()? != Some(Tag::context(1, true)) {
        return Err(CmsError::UnexpectedOid {
            field: "RSAES-OAEP maskGenAlgorithm hash",
            expected: "2.16.840.1.101.3.4.2.1 (sha256)",
            actual: "1.3.14.3.2.26 (sha1, by DEFAULT: field absent)".to_owned(),
        });
    }
    let mgf = fields.element()?;
    let mut mgf_reader = Reader::children(&mgf);
    let mgf_id = mgf_reader.expect("RSAES-OAEP maskGenAlgorithm", Tag::SEQUENCE)?;
    mgf_reader.finish("RSAES-OAEP maskGenAlgorithm")?;
    let mut mgf_fields = Reader::children(&mgf_id);
    expect_oid(
        &mut mgf_fields,
        "RSAES-OAEP maskGenAlgorithm",
        OID_MGF1,
        "1.2.840.113549.1.1.8 (mgf1)",
    )?;
    let mgf_hash = mgf_fields.expect("RSAES-OAEP maskGenAlgorithm hash", Tag::SEQUENCE)?;
    mgf_fields.finish("RSAES-OAEP maskGenAlgorithm")?;
    sha256_identifier(&mgf_hash, "RSAES-OAEP maskGenAlgorithm hash")?;

    // pSourceAlgorithm [2] EXPLICIT, DEFAULT pSpecifiedEmpty.
    if fields.peek_tag()? == Some(Tag::context(2, true)) {
        let source = fields.element()?;
        let mut source_reader = Reader::children(&source);
        let source_id = source_reader.expect("RSAES-OAEP pSourceAlgorithm", Tag::SEQUENCE)?;
        source_reader.finish("RSAES-OAEP pSourceAlgorithm")?;
        let mut source_fields = Reader::children(&source_id);
        expect_oid(
            &mut source_fields,
            "RSAES-OAEP pSourceAlgorithm",
            OID_P_SPECIFIED,
            "1.2.840.113549.1.1.9 (pSpecified)",
        )?;
        let label = expect_octet_string(&mut source_fields, "RSAES-OAEP label")?;
        source_fields.finish("RSAES-OAEP pSourceAlgorithm")?;
        if !label.is_empty() {
            return Err(CmsError::OaepLabel {
                length: label.len(),
            });
        }
    }
    fields.finish("RSAES-OAEP-params")
}

/// How the recipient is named (not checked: the key is ours for this boot only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecipientId {
    /// `issuerAndSerialNumber` (its contents, undecoded).
    IssuerAndSerialNumber(Vec<u8>),
    /// `[0] subjectKeyIdentifier`.
    SubjectKeyIdentifier(Vec<u8>),
}

/// The fields of an `EnvelopedData` this profile uses.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvelopedData {
    /// The recipient identifier.
    pub recipient: RecipientId,
    /// RSA-OAEP encrypted content-encryption key.
    pub encrypted_key: Vec<u8>,
    /// AES-256-CBC IV.
    pub iv: [u8; AES_BLOCK_LEN],
    /// AES-256-CBC ciphertext (PKCS#7 padded), chunks joined.
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for EnvelopedData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvelopedData")
            .field("recipient", &self.recipient)
            .field(
                "encrypted_key",
                &format!("<{} bytes>", self.encrypted_key.len()),
            )
            .field("iv", &hex_lower(&self.iv))
            .field("ciphertext", &format!("<{} bytes>", self.ciphertext.len()))
            .finish()
    }
}

/// Parses a `ContentInfo` holding an `EnvelopedData` of the KMS profile. Pure and
/// total: any input yields a value or an error, never a panic.
pub fn parse_enveloped_data(ber: &[u8]) -> Result<EnvelopedData> {
    let mut top = Reader::new(ber);
    let content_info = top.expect("ContentInfo", Tag::SEQUENCE)?;
    if !top.is_empty() {
        return Err(CmsError::TrailingData {
            offset: top.offset(),
            count: ber.len().saturating_sub(top.pos),
        });
    }

    // ContentInfo ::= SEQUENCE { contentType, content [0] EXPLICIT ANY }
    let mut ci = Reader::children(&content_info);
    expect_oid(
        &mut ci,
        "ContentInfo contentType",
        OID_ENVELOPED_DATA,
        "1.2.840.113549.1.7.3 (envelopedData)",
    )?;
    let explicit = ci.expect("ContentInfo content", Tag::context(0, true))?;
    ci.finish("ContentInfo")?;
    let mut explicit_reader = Reader::children(&explicit);
    let enveloped = explicit_reader.expect("EnvelopedData", Tag::SEQUENCE)?;
    explicit_reader.finish("ContentInfo content [0]")?;

    // EnvelopedData ::= SEQUENCE { version, originatorInfo [0] IMPLICIT OPTIONAL,
    //   recipientInfos SET, encryptedContentInfo, unprotectedAttrs [1] IMPLICIT OPTIONAL }
    let mut ed = Reader::children(&enveloped);
    let version = small_integer(&mut ed, "EnvelopedData version")?;
    if version != 0 && version != 2 {
        return Err(CmsError::UnsupportedVersion {
            structure: "EnvelopedData",
            expected: "0 or 2",
            actual: version,
        });
    }
    if ed.peek_tag()? == Some(Tag::context(0, true)) {
        let _originator_info = ed.element()?;
    }
    let recipient_infos = ed.expect("EnvelopedData recipientInfos", Tag::SET)?;
    let mut ris = Reader::children(&recipient_infos);
    let mut infos = Vec::new();
    while !ris.is_empty() {
        infos.push(ris.element()?);
    }
    let [info] = infos.as_slice() else {
        return Err(CmsError::RecipientCount {
            actual: infos.len(),
        });
    };
    if info.tag != Tag::SEQUENCE {
        return Err(CmsError::UnsupportedRecipientInfo { actual: info.tag });
    }
    let (recipient, encrypted_key) = key_trans_recipient_info(info)?;

    let eci = ed.expect("EncryptedContentInfo", Tag::SEQUENCE)?;
    if ed.peek_tag()? == Some(Tag::context(1, true)) {
        let _unprotected_attrs = ed.element()?;
    }
    ed.finish("EnvelopedData")?;

    let (iv, ciphertext) = encrypted_content_info(&eci)?;
    Ok(EnvelopedData {
        recipient,
        encrypted_key,
        iv,
        ciphertext,
    })
}

/// KeyTransRecipientInfo ::= SEQUENCE { version, rid, keyEncryptionAlgorithm,
/// encryptedKey }.
fn key_trans_recipient_info(info: &Element<'_>) -> Result<(RecipientId, Vec<u8>)> {
    let mut ktri = Reader::children(info);
    let version = small_integer(&mut ktri, "KeyTransRecipientInfo version")?;
    let rid = ktri.required("KeyTransRecipientInfo rid")?;
    let recipient = if rid.tag == Tag::SEQUENCE {
        if version != 0 {
            return Err(CmsError::UnsupportedVersion {
                structure: "KeyTransRecipientInfo (issuerAndSerialNumber)",
                expected: "0",
                actual: version,
            });
        }
        RecipientId::IssuerAndSerialNumber(rid.contents.to_vec())
    } else if rid.tag.class == TagClass::ContextSpecific && rid.tag.number == 0 {
        if version != 2 {
            return Err(CmsError::UnsupportedVersion {
                structure: "KeyTransRecipientInfo (subjectKeyIdentifier)",
                expected: "2",
                actual: version,
            });
        }
        RecipientId::SubjectKeyIdentifier(octet_string(&rid, "rid subjectKeyIdentifier")?)
    } else {
        return Err(CmsError::UnexpectedTag {
            field: "KeyTransRecipientInfo rid",
            offset: rid.offset,
            expected: "issuerAndSerialNumber (SEQUENCE) or [0] subjectKeyIdentifier".to_owned(),
            actual: rid.tag,
        });
    };

    let algorithm = ktri.expect("keyEncryptionAlgorithm", Tag::SEQUENCE)?;
    let mut alg = Reader::children(&algorithm);
    expect_oid(
        &mut alg,
        "keyEncryptionAlgorithm",
        OID_RSAES_OAEP,
        "1.2.840.113549.1.1.7 (id-RSAES-OAEP)",
    )?;
    oaep_parameters(&mut alg)?;

    let encrypted_key = expect_octet_string(&mut ktri, "encryptedKey")?;
    ktri.finish("KeyTransRecipientInfo")?;
    Ok((recipient, encrypted_key))
}

/// EncryptedContentInfo ::= SEQUENCE { contentType, contentEncryptionAlgorithm,
/// encryptedContent [0] IMPLICIT OCTET STRING OPTIONAL }.
fn encrypted_content_info(eci: &Element<'_>) -> Result<([u8; AES_BLOCK_LEN], Vec<u8>)> {
    let mut reader = Reader::children(eci);
    expect_oid(
        &mut reader,
        "EncryptedContentInfo contentType",
        OID_DATA,
        "1.2.840.113549.1.7.1 (data)",
    )?;
    let algorithm = reader.expect("contentEncryptionAlgorithm", Tag::SEQUENCE)?;
    let mut alg = Reader::children(&algorithm);
    expect_oid(
        &mut alg,
        "contentEncryptionAlgorithm",
        OID_AES256_CBC,
        "2.16.840.1.101.3.4.1.42 (aes256-CBC)",
    )?;
    let iv_bytes = expect_octet_string(&mut alg, "aes256-CBC IV")?;
    alg.finish("contentEncryptionAlgorithm")?;
    let iv: [u8; AES_BLOCK_LEN] =
        iv_bytes
            .as_slice()
            .try_into()
            .map_err(|_| CmsError::IvLength {
                expected: AES_BLOCK_LEN,
                actual: iv_bytes.len(),
            })?;

    if reader.is_empty() {
        return Err(CmsError::MissingEncryptedContent);
    }
    let content = reader.element()?;
    if content.tag.class != TagClass::ContextSpecific || content.tag.number != 0 {
        return Err(CmsError::UnexpectedTag {
            field: "encryptedContent",
            offset: content.offset,
            expected: "[0] (primitive or constructed)".to_owned(),
            actual: content.tag,
        });
    }
    let ciphertext = octet_string(&content, "encryptedContent")?;
    reader.finish("EncryptedContentInfo")?;
    if ciphertext.is_empty() || ciphertext.len() % AES_BLOCK_LEN != 0 {
        return Err(CmsError::CiphertextLength {
            actual: ciphertext.len(),
        });
    }
    Ok((iv, ciphertext))
}

/// The enclave's per-boot RSA-2048 key: KMS encrypts `CiphertextForRecipient` to its
/// public half, named in the attestation document's `public_key`. The private half
/// never leaves this value (no export; `Debug` shows only a fingerprint).
pub struct RecipientKey {
    key: OaepPrivateDecryptingKey,
    spki_der: Vec<u8>,
}

impl fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.spki_der);
        f.debug_struct("RecipientKey")
            .field("bits", &self.key.key_size_bits())
            .field("spki_sha256", &hex_lower(digest.as_ref()))
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl RecipientKey {
    /// A fresh RSA-2048 key (the size KMS accepts for `RSAES_OAEP_SHA_256` recipients).
    pub fn generate() -> Result<RecipientKey> {
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048)
            .map_err(|_| CmsError::KeyGeneration)?;
        Self::from_private_key(key)
    }

    /// From a PKCS#8 DER private key (tests and fixtures).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<RecipientKey> {
        let key = PrivateDecryptingKey::from_pkcs8(der).map_err(|e| CmsError::KeyRejected {
            reason: e.to_string(),
        })?;
        Self::from_private_key(key)
    }

    /// From a PEM `PRIVATE KEY` (PKCS#8) block (tests and fixtures).
    pub fn from_pkcs8_pem(pem: &str) -> Result<RecipientKey> {
        use base64::Engine as _;
        const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
        const END: &str = "-----END PRIVATE KEY-----";
        let rejected = |reason: &str| CmsError::KeyRejected {
            reason: reason.to_owned(),
        };
        let start = pem
            .find(BEGIN)
            .ok_or_else(|| rejected("no \"-----BEGIN PRIVATE KEY-----\" line"))?
            + BEGIN.len();
        let end = pem[start..]
            .find(END)
            .ok_or_else(|| rejected("no \"-----END PRIVATE KEY-----\" line"))?
            + start;
        let body: Zeroizing<String> = Zeroizing::new(
            pem[start..end]
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect(),
        );
        let der = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .map_err(|_| rejected("PEM body is not base64"))?,
        );
        Self::from_pkcs8_der(&der)
    }

    fn from_private_key(key: PrivateDecryptingKey) -> Result<RecipientKey> {
        let spki_der = key
            .public_key()
            .as_der()
            .map_err(|_| CmsError::KeyRejected {
                reason: "cannot encode the public key".to_owned(),
            })?
            .as_ref()
            .to_vec();
        let key = OaepPrivateDecryptingKey::new(key).map_err(|_| CmsError::KeyRejected {
            reason: "not usable for RSA-OAEP".to_owned(),
        })?;
        Ok(RecipientKey { key, spki_der })
    }

    /// The public key as X.509 `SubjectPublicKeyInfo` DER (the attestation document's
    /// `public_key`).
    pub fn public_key_spki_der(&self) -> Vec<u8> {
        self.spki_der.clone()
    }

    /// RSA modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.key_size_bits()
    }

    /// RSA-OAEP-SHA-256 (MGF1-SHA-256, empty label) decryption of the content key.
    fn unwrap_content_key(&self, encrypted_key: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let expected = self.key.key_size_bytes();
        if encrypted_key.len() != expected {
            return Err(CmsError::EncryptedKeyLength {
                expected,
                actual: encrypted_key.len(),
            });
        }
        let mut buffer = Zeroizing::new(vec![0u8; self.key.min_output_size()]);
        let plaintext = self
            .key
            .decrypt(&OAEP_SHA256_MGF1SHA256, encrypted_key, &mut buffer, None)
            .map_err(|_| CmsError::KeyUnwrap)?;
        Ok(Zeroizing::new(plaintext.to_vec()))
    }
}

/// Unwraps a KMS `CiphertextForRecipient`: parses the `EnvelopedData`, unwraps the
/// content key with `key` (RSA-OAEP-SHA-256) and decrypts the content (AES-256-CBC,
/// PKCS#7). The plaintext is zeroized on drop.
pub fn unwrap_ciphertext_for_recipient(
    ber: &[u8],
    key: &RecipientKey,
) -> Result<Zeroizing<Vec<u8>>> {
    let enveloped = parse_enveloped_data(ber)?;
    let content_key = key.unwrap_content_key(&enveloped.encrypted_key)?;
    if content_key.len() != CONTENT_KEY_LEN {
        return Err(CmsError::ContentKeyLength {
            expected: CONTENT_KEY_LEN,
            actual: content_key.len(),
        });
    }
    let cipher_key =
        UnboundCipherKey::new(&AES_256, &content_key).map_err(|_| CmsError::ContentDecrypt)?;
    let decrypting =
        PaddedBlockDecryptingKey::cbc_pkcs7(cipher_key).map_err(|_| CmsError::ContentDecrypt)?;
    let mut buffer = Zeroizing::new(enveloped.ciphertext);
    let plaintext = decrypting
        .decrypt(
            &mut buffer,
            DecryptionContext::Iv128(FixedLength::from(enveloped.iv)),
        )
        .map_err(|_| CmsError::ContentDecrypt)?;
    Ok(Zeroizing::new(plaintext.to_vec()))
}

#[cfg(test)]
mod tests;
