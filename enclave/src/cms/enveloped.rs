//! The one `EnvelopedData` profile KMS produces for a `Recipient` (RFC 5652 §6): a
//! `ContentInfo` of type envelopedData holding exactly one `KeyTransRecipientInfo` with
//! RSAES-OAEP (SHA-256, MGF1-SHA-256, empty label; RFC 8017 A.2.1) and an
//! `EncryptedContentInfo` with aes256-CBC (RFC 3565).
//!
//! Hand-written on the reader in `ber.rs`, which is what reads this BER at all (see
//! there). Strict rather than general: every field is checked where it is read, and any
//! deviation (a second recipient, an OAEP parameter left to its SHA-1 DEFAULT, another
//! cipher) is an error naming the field, what was expected and what was found.

use std::fmt;

use super::ber::{
    absent_or_null, check_tag, expect_octet_string, expect_oid, octet_string, small_integer,
    Element, Reader, Tag, TagClass,
};
use super::{hex_lower, CmsError, Result};

/// AES block / CBC IV length (FIPS 197, SP 800-38A).
pub(super) const AES_BLOCK_LEN: usize = 16;

/// `id-envelopedData` 1.2.840.113549.1.7.3 (RFC 5652 §6.1).
pub(super) const OID_ENVELOPED_DATA: &[u8] =
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
/// `id-data` 1.2.840.113549.1.7.1 (RFC 5652 §4).
pub(super) const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
/// `id-RSAES-OAEP` 1.2.840.113549.1.1.7 (RFC 8017 A.2.1).
pub(super) const OID_RSAES_OAEP: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07];
/// `id-mgf1` 1.2.840.113549.1.1.8 (RFC 8017 B.2.1).
pub(super) const OID_MGF1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
/// `id-pSpecified` 1.2.840.113549.1.1.9 (RFC 8017 A.2.1).
pub(super) const OID_P_SPECIFIED: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x09];
/// `id-sha256` 2.16.840.1.101.3.4.2.1 (RFC 5754 §2.2).
pub(super) const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
/// `id-aes256-CBC` 2.16.840.1.101.3.4.1.42 (RFC 3565 §4.1).
pub(super) const OID_AES256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];

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
            count: ber.len().saturating_sub(top.offset()),
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
