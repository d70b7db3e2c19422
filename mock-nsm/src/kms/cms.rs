//! `CiphertextForRecipient`: CMS EnvelopedData in BER, shaped like what KMS sends.
//!
//! Layout (compare `fixtures/kms-recipient/enveloped-aes256cbc.ber`, an AWS sample, with
//! `openssl asn1parse -inform DER -i`):
//!
//! ```text
//! ContentInfo SEQUENCE (indefinite) {
//!   contentType envelopedData (1.2.840.113549.1.7.3)
//!   [0] EXPLICIT (indefinite) EnvelopedData SEQUENCE (indefinite) {
//!     version 2
//!     recipientInfos SET { KeyTransRecipientInfo SEQUENCE {
//!       version 2
//!       rid [0] IMPLICIT SubjectKeyIdentifier (32 bytes)
//!       keyEncryptionAlgorithm { rsaesOaep, RSAES-OAEP-params {
//!           [0] hashFunc sha256 (NULL params), [1] maskGenFunc mgf1(sha256 (NULL params)) } }
//!       encryptedKey OCTET STRING (modulus length)
//!     } }
//!     encryptedContentInfo SEQUENCE (indefinite) {
//!       contentType data (1.2.840.113549.1.7.1)
//!       contentEncryptionAlgorithm { aes256-CBC, IV OCTET STRING (16) }
//!       [0] IMPLICIT encryptedContent, constructed (indefinite): OCTET STRING chunks
//!     }
//!   }
//! }
//! ```

use aws_lc_rs::cipher::{EncryptionContext, PaddedBlockEncryptingKey, UnboundCipherKey, AES_256};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// DER of OID 1.2.840.113549.1.7.3 (id-envelopedData, RFC 5652 §6.1).
const OID_ENVELOPED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
/// DER of OID 1.2.840.113549.1.7.1 (id-data, RFC 5652 §4).
const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
/// DER of OID 1.2.840.113549.1.1.7 (id-RSAES-OAEP, RFC 8017 appendix C).
const OID_RSAES_OAEP: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07];
/// DER of OID 1.2.840.113549.1.1.8 (id-mgf1, RFC 8017 appendix C).
const OID_MGF1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
/// DER of OID 2.16.840.1.101.3.4.2.1 (id-sha256, RFC 5754 §2.2).
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
/// DER of OID 2.16.840.1.101.3.4.1.42 (id-aes256-CBC, RFC 3565 §4.1).
const OID_AES256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];
/// Size of the OCTET STRING chunks inside the constructed encryptedContent (BER
/// streaming, as CMS encoders emit it).
pub const CONTENT_CHUNK: usize = 1024;
/// Smallest RSA modulus accepted for a recipient key (KMS accepts RSA 2048/3072/4096).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted for a recipient key.
pub const MAX_RSA_BITS: usize = 4096;

/// Errors building `CiphertextForRecipient`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmsError {
    /// The recipient key is not an RSA SubjectPublicKeyInfo.
    #[error("the attestation document's public_key is not a DER RSA SubjectPublicKeyInfo: {0}")]
    NotRsa(String),
    /// The RSA key size is not supported.
    #[error("recipient RSA key is {bits} bits; supported: {min}..={max}")]
    KeySize {
        /// The key size.
        bits: usize,
        /// Smallest accepted.
        min: usize,
        /// Largest accepted.
        max: usize,
    },
    /// A cryptographic primitive failed.
    #[error("{0} failed")]
    Crypto(&'static str),
}

fn len_bytes(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![len as u8];
    }
    let be = len.to_be_bytes();
    let skip = be.iter().take_while(|b| **b == 0).count();
    let mut out = vec![0x80 | (be.len() - skip) as u8];
    out.extend_from_slice(&be[skip..]);
    out
}

/// A definite-length TLV.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(len_bytes(content.len()));
    out.extend_from_slice(content);
    out
}

/// An indefinite-length constructed TLV: `tag 80 content 00 00`.
fn indefinite(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![tag, 0x80];
    for p in parts {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(&[0, 0]);
    out
}

fn algorithm(oid: &[u8], params: &[u8]) -> Vec<u8> {
    let mut body = tlv(0x06, oid);
    body.extend_from_slice(params);
    tlv(0x30, &body)
}

/// The rsaesOaep AlgorithmIdentifier with SHA-256 and MGF1-SHA-256 (empty label = default
/// pSourceFunc, omitted).
fn rsaes_oaep_sha256() -> Vec<u8> {
    let null = [0x05, 0x00];
    let sha256 = algorithm(OID_SHA256, &null);
    let mgf1 = algorithm(OID_MGF1, &sha256);
    let mut params = tlv(0xa0, &sha256);
    params.extend(tlv(0xa1, &mgf1));
    algorithm(OID_RSAES_OAEP, &tlv(0x30, &params))
}

/// The subject key identifier naming the recipient: SHA-256 of its SPKI DER (32 bytes,
/// the identifier length KMS uses).
pub fn recipient_key_id(spki_der: &[u8]) -> [u8; 32] {
    Sha256::digest(spki_der).into()
}

/// Validates that `spki_der` is an RSA key KMS would encrypt to.
pub fn parse_recipient_key(spki_der: &[u8]) -> Result<OaepPublicEncryptingKey, CmsError> {
    let key =
        PublicEncryptingKey::from_der(spki_der).map_err(|e| CmsError::NotRsa(e.to_string()))?;
    let bits = key.key_size_bits();
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(CmsError::KeySize {
            bits,
            min: MIN_RSA_BITS,
            max: MAX_RSA_BITS,
        });
    }
    OaepPublicEncryptingKey::new(key).map_err(|_| CmsError::Crypto("RSA-OAEP key setup"))
}

/// Encrypts `plaintext` to the RSA key `spki_der`: a fresh AES-256 content key wrapped with
/// RSAES-OAEP (SHA-256, MGF1-SHA-256, empty label), content in AES-256-CBC with PKCS#7.
pub fn envelope(spki_der: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CmsError> {
    let rsa = parse_recipient_key(spki_der)?;
    let mut content_key = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(content_key.as_mut_slice()).map_err(|_| CmsError::Crypto("RNG"))?;
    let mut iv = [0u8; 16];
    aws_lc_rs::rand::fill(&mut iv).map_err(|_| CmsError::Crypto("RNG"))?;

    let mut encrypted_key = vec![0u8; rsa.ciphertext_size()];
    let written = rsa
        .encrypt(
            &OAEP_SHA256_MGF1SHA256,
            content_key.as_slice(),
            &mut encrypted_key,
            None,
        )
        .map_err(|_| CmsError::Crypto("RSA-OAEP encryption"))?
        .len();
    encrypted_key.truncate(written);

    let cipher_key = UnboundCipherKey::new(&AES_256, content_key.as_slice())
        .map_err(|_| CmsError::Crypto("AES key setup"))?;
    let cbc = PaddedBlockEncryptingKey::cbc_pkcs7(cipher_key)
        .map_err(|_| CmsError::Crypto("AES-CBC setup"))?;
    let mut content = plaintext.to_vec();
    cbc.less_safe_encrypt(
        &mut content,
        EncryptionContext::Iv128(FixedLength::from(iv)),
    )
    .map_err(|_| CmsError::Crypto("AES-256-CBC encryption"))?;

    Ok(encode(
        &recipient_key_id(spki_der),
        &encrypted_key,
        &iv,
        &content,
    ))
}

/// BER encoding of the EnvelopedData (see the module documentation).
pub fn encode(key_id: &[u8], encrypted_key: &[u8], iv: &[u8; 16], content: &[u8]) -> Vec<u8> {
    let version2 = [0x02, 0x01, 0x02];
    let mut ktri = version2.to_vec();
    ktri.extend(tlv(0x80, key_id));
    ktri.extend(rsaes_oaep_sha256());
    ktri.extend(tlv(0x04, encrypted_key));
    let recipient_infos = tlv(0x31, &tlv(0x30, &ktri));

    let chunks: Vec<Vec<u8>> = content
        .chunks(CONTENT_CHUNK)
        .map(|c| tlv(0x04, c))
        .collect();
    let chunk_refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    let encrypted_content = indefinite(0xa0, &chunk_refs);
    let encrypted_content_info = indefinite(
        0x30,
        &[
            &tlv(0x06, OID_DATA),
            &algorithm(OID_AES256_CBC, &tlv(0x04, iv)),
            &encrypted_content,
        ],
    );
    let enveloped_data = indefinite(
        0x30,
        &[&version2, &recipient_infos, &encrypted_content_info],
    );
    let explicit = indefinite(0xa0, &[&enveloped_data]);
    indefinite(0x30, &[&tlv(0x06, OID_ENVELOPED_DATA), &explicit])
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/kms-recipient/enveloped-aes256cbc.ber"
    );

    #[test]
    fn reproduces_the_aws_sample_byte_for_byte() {
        // Re-encoding the AWS sample's key id, encrypted key, IV and ciphertext with our
        // writer gives exactly AWS's bytes: same structure, same BER choices.
        let aws = std::fs::read(FIXTURE).unwrap();
        let key_id = &aws[33..65];
        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../fixtures/kms-recipient/expected.json"
            ))
            .unwrap(),
        )
        .unwrap();
        let e = &expected["enveloped-aes256cbc.ber"];
        let hex_field = |k: &str| hex::decode(e[k].as_str().unwrap()).unwrap();
        let iv: [u8; 16] = hex_field("iv_hex").try_into().unwrap();
        let ours = encode(
            key_id,
            &hex_field("encrypted_key_hex"),
            &iv,
            &hex_field("ciphertext_hex"),
        );
        assert_eq!(hex::encode(&ours), hex::encode(&aws));
    }

    #[test]
    fn long_lengths_and_chunks() {
        assert_eq!(len_bytes(0x7f), [0x7f]);
        assert_eq!(len_bytes(0x80), [0x81, 0x80]);
        assert_eq!(len_bytes(0x100), [0x82, 0x01, 0x00]);
        let out = encode(&[1; 32], &[2; 512], &[3; 16], &[4; 2500]);
        // Three chunks: 1024 + 1024 + 452.
        let needle = [0x04, 0x82, 0x04, 0x00];
        assert_eq!(out.windows(4).filter(|w| *w == needle).count(), 2);
        assert!(out.windows(4).any(|w| w == [0x04, 0x82, 0x01, 0xc4]));
    }

    #[test]
    fn rejects_non_rsa_and_small_keys() {
        assert!(matches!(
            parse_recipient_key(b"not a key"),
            Err(CmsError::NotRsa(_))
        ));
        let ec = p384::SecretKey::random(&mut rand::rngs::OsRng);
        let spki = p384::pkcs8::EncodePublicKey::to_public_key_der(&ec.public_key()).unwrap();
        assert!(parse_recipient_key(spki.as_bytes()).is_err());
    }
}
