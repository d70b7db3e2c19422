//! A BER reader (X.690) for KMS `CiphertextForRecipient`: identifiers with high tag
//! numbers, definite and indefinite lengths, end-of-contents markers, constructed OCTET
//! STRINGs and a nesting limit ([`MAX_DEPTH`]), plus the value helpers the
//! `EnvelopedData` parser needs (INTEGER, OID, OCTET STRING, NULL). Every read is
//! bounds-checked and fails with a [`CmsError`] carrying the offset; no input panics.
//!
//! Hand-written because KMS sends BER with indefinite lengths, not DER: `cms` 0.2 decodes
//! through `der` 0.7, which refuses an indefinite length outright; `der` 0.8 reads them
//! only behind its `ber` feature, which `cms` builds on from its 0.3 pre-releases. A
//! reader that accepts exactly what this profile needs stays small enough to audit and
//! to fuzz on its own.

use std::fmt;

use super::{hex_lower, CmsError, Result};

/// Deepest BER nesting accepted. A KMS `EnvelopedData` nests 11 levels (ContentInfo →
/// … → MGF1 hash AlgorithmIdentifier → OID); 32 leaves room and bounds recursion.
pub const MAX_DEPTH: usize = 32;

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
    pub(super) const fn universal(number: u32, constructed: bool) -> Tag {
        Tag {
            class: TagClass::Universal,
            constructed,
            number,
        }
    }

    pub(super) const fn context(number: u32, constructed: bool) -> Tag {
        Tag {
            class: TagClass::ContextSpecific,
            constructed,
            number,
        }
    }

    pub(super) const SEQUENCE: Tag = Tag::universal(UNIVERSAL_SEQUENCE, true);
    pub(super) const SET: Tag = Tag::universal(UNIVERSAL_SET, true);
    pub(super) const INTEGER: Tag = Tag::universal(UNIVERSAL_INTEGER, false);
    pub(super) const OID: Tag = Tag::universal(UNIVERSAL_OID, false);
    pub(super) const NULL: Tag = Tag::universal(UNIVERSAL_NULL, false);

    pub(super) fn is_octet_string(&self) -> bool {
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

/// One BER element: its tag, where it starts, and its contents (without the
/// end-of-contents marker of an indefinite length).
#[derive(Clone, Copy, Debug)]
pub(super) struct Element<'a> {
    pub(super) tag: Tag,
    pub(super) offset: usize,
    pub(super) contents: &'a [u8],
    /// Absolute offset of `contents[0]`.
    contents_offset: usize,
    depth: usize,
}

/// Reads consecutive BER elements from a slice.
pub(super) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Absolute offset of `data[0]` in the whole input.
    base: usize,
    /// Depth of the elements this reader yields.
    depth: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(data: &'a [u8]) -> Reader<'a> {
        Reader {
            data,
            pos: 0,
            base: 0,
            depth: 0,
        }
    }

    /// A reader over the children of a constructed element.
    pub(super) fn children(element: &Element<'a>) -> Reader<'a> {
        Reader {
            data: element.contents,
            pos: 0,
            base: element.contents_offset,
            depth: element.depth + 1,
        }
    }

    pub(super) fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub(super) fn is_empty(&self) -> bool {
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
    pub(super) fn element(&mut self) -> Result<Element<'a>> {
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
    pub(super) fn required(&mut self, field: &'static str) -> Result<Element<'a>> {
        if self.is_empty() {
            return Err(CmsError::MissingField {
                field,
                offset: self.offset(),
            });
        }
        self.element()
    }

    /// Reads the next element and checks its tag.
    pub(super) fn expect(&mut self, field: &'static str, tag: Tag) -> Result<Element<'a>> {
        let element = self.required(field)?;
        check_tag(&element, field, tag)?;
        Ok(element)
    }

    /// The next element's tag, without consuming it.
    pub(super) fn peek_tag(&self) -> Result<Option<Tag>> {
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
    pub(super) fn finish(&mut self, structure: &'static str) -> Result<()> {
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

/// Checks that `element` has `tag` (`field` names it in the error).
pub(super) fn check_tag(element: &Element<'_>, field: &'static str, tag: Tag) -> Result<()> {
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
pub(super) fn octet_string(element: &Element<'_>, field: &'static str) -> Result<Vec<u8>> {
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

/// Reads the next element, which must be an OCTET STRING, and returns its bytes.
pub(super) fn expect_octet_string(reader: &mut Reader<'_>, field: &'static str) -> Result<Vec<u8>> {
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
pub(super) fn small_integer(reader: &mut Reader<'_>, field: &'static str) -> Result<u64> {
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
pub(super) fn oid_text(contents: &[u8]) -> String {
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

/// Reads the next element, which must be the OBJECT IDENTIFIER `oid` (`expected` is its
/// dotted name for the error).
pub(super) fn expect_oid(
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
pub(super) fn absent_or_null(reader: &mut Reader<'_>, field: &'static str) -> Result<()> {
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
