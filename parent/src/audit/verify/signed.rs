//! What the enclave signed, read back from a JWS signing input: the fields a row about a
//! token must repeat (`kid`, `jti`, wallet, epoch, seq).
//!
//! The signing input is `BASE64URL(header) '.' BASE64URL(claims)` (RFC 7515 §5.1); the
//! enclave's audit chain hashes it, so once the chain is checked against an attested
//! checkpoint these fields are what the enclave signed, and a row that says otherwise was
//! edited.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use agentkeys_wire::{EPOCH_CLAIM, SEQ_CLAIM, WALLET_CLAIM};

use crate::audit::NewAuditRow;

/// The fields of a signed token that name it and its audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedFields {
    /// The header's `kid`.
    pub kid: String,
    /// The `jti` claim.
    pub jti: String,
    /// The wallet claim.
    pub wallet: String,
    /// The epoch claim.
    pub epoch: u64,
    /// The seq claim.
    pub seq: u64,
}

/// Why a signing input could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedFieldsError {
    /// Not two base64url parts joined by one `.`.
    #[error("not a JWS signing input (header.claims): {parts} parts")]
    Shape {
        /// How many `.`-separated parts it has.
        parts: usize,
    },
    /// A part is not base64url.
    #[error("the {part} is not base64url")]
    Base64 {
        /// `header` or `claims`.
        part: &'static str,
    },
    /// A part is not the JSON expected, or lacks a member.
    #[error("the {part} is not the JSON the enclave signs: {reason}")]
    Json {
        /// `header` or `claims`.
        part: &'static str,
        /// What serde said.
        reason: String,
    },
    /// The epoch claim is not a decimal u64.
    #[error("claim {EPOCH_CLAIM} is {value:?}, not a decimal 64-bit number")]
    Epoch {
        /// What it holds.
        value: String,
    },
}

#[derive(Deserialize)]
struct Header {
    kid: String,
}

#[derive(Deserialize)]
struct Claims {
    jti: String,
    #[serde(rename = "agentkeys_user_wallet")]
    wallet: String,
    #[serde(rename = "agentkeys_epoch")]
    epoch: String,
    #[serde(rename = "agentkeys_seq")]
    seq: u64,
}

/// Reads the fields of `signing_input`.
pub fn parse_signing_input(signing_input: &str) -> Result<SignedFields, SignedFieldsError> {
    let parts: Vec<&str> = signing_input.split('.').collect();
    let [header, claims] = parts[..] else {
        return Err(SignedFieldsError::Shape { parts: parts.len() });
    };
    let header: Header = decode_part("header", header)?;
    let claims: Claims = decode_part("claims", claims)?;
    let epoch = claims
        .epoch
        .parse::<u64>()
        .ok()
        .filter(|e| e.to_string() == claims.epoch)
        .ok_or(SignedFieldsError::Epoch {
            value: claims.epoch.chars().take(40).collect(),
        })?;
    Ok(SignedFields {
        kid: header.kid,
        jti: claims.jti,
        wallet: claims.wallet,
        epoch,
        seq: claims.seq,
    })
}

fn decode_part<T: for<'de> Deserialize<'de>>(
    part: &'static str,
    b64: &str,
) -> Result<T, SignedFieldsError> {
    let json = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| SignedFieldsError::Base64 { part })?;
    serde_json::from_slice(&json).map_err(|e| SignedFieldsError::Json {
        part,
        reason: e.to_string(),
    })
}

/// A field on which a row and its signed token disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    /// The row column (`wallet`, `kid`, `jti`, `enclave_epoch`, `enclave_seq`).
    pub field: &'static str,
    /// What the row holds (`null` when empty).
    pub row: String,
    /// What the token holds.
    pub signed: String,
}

/// Every field on which `row` says something other than the token it is about.
pub fn disagreements(row: &NewAuditRow, signed: &SignedFields) -> Vec<Disagreement> {
    fn text(v: Option<&str>) -> String {
        v.map_or_else(|| "null".to_owned(), str::to_owned)
    }
    fn number(v: Option<u64>) -> String {
        v.map_or_else(|| "null".to_owned(), |n| n.to_string())
    }
    let pairs = [
        ("wallet", text(row.wallet.as_deref()), signed.wallet.clone()),
        ("kid", text(row.kid.as_deref()), signed.kid.clone()),
        ("jti", text(row.jti.as_deref()), signed.jti.clone()),
        (
            "enclave_epoch",
            number(row.enclave_epoch),
            signed.epoch.to_string(),
        ),
        (
            "enclave_seq",
            number(row.enclave_seq),
            signed.seq.to_string(),
        ),
    ];
    pairs
        .into_iter()
        .filter(|(_, row, signed)| row != signed)
        .map(|(field, row, signed)| Disagreement { field, row, signed })
        .collect()
}

/// The claim names read here are the ones the enclave writes (`agentkeys_wire`).
const _: () = {
    assert!(matches!(EPOCH_CLAIM.as_bytes(), b"agentkeys_epoch"));
    assert!(matches!(SEQ_CLAIM.as_bytes(), b"agentkeys_seq"));
    assert!(matches!(WALLET_CLAIM.as_bytes(), b"agentkeys_user_wallet"));
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, Outcome};

    const WALLET: &str = "0x00000000000000000000000000000000000000aa";

    fn signing_input(epoch: &str, seq: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"jti":"j1","agentkeys_user_wallet":"{WALLET}","agentkeys_epoch":"{epoch}","agentkeys_seq":{seq},"sub":"x"}}"#
        ));
        format!("{header}.{claims}")
    }

    fn row() -> NewAuditRow {
        NewAuditRow::new(AuditEvent::MintJwt, Outcome::Success)
            .wallet(WALLET)
            .token_ids("k1", "j1")
            .enclave(18_000_000_000_000_000_007, 3, [0; 32], [0; 32])
    }

    #[test]
    fn a_faithful_row_agrees_with_its_token() {
        let signed = parse_signing_input(&signing_input("18000000000000000007", 3)).unwrap();
        assert_eq!(signed.epoch, 18_000_000_000_000_000_007);
        assert_eq!(signed.seq, 3);
        assert!(disagreements(&row(), &signed).is_empty());
    }

    #[test]
    fn every_edited_field_is_named() {
        let signed = parse_signing_input(&signing_input("18000000000000000007", 3)).unwrap();
        type Edit = fn(&mut NewAuditRow);
        let cases: [(&str, Edit); 5] = [
            ("wallet", |r| {
                r.wallet = Some("0x".to_owned() + &"b".repeat(40))
            }),
            ("kid", |r| r.kid = None),
            ("jti", |r| r.jti = Some("j2".into())),
            ("enclave_epoch", |r| r.enclave_epoch = Some(1)),
            ("enclave_seq", |r| r.enclave_seq = Some(4)),
        ];
        for (field, edit) in cases {
            let mut r = row();
            edit(&mut r);
            let found = disagreements(&r, &signed);
            assert_eq!(found.len(), 1, "{field}: {found:?}");
            assert_eq!(found[0].field, field);
        }
    }

    #[test]
    fn malformed_signing_inputs_are_refused() {
        let good = signing_input("5", 1);
        let (header, claims) = good.split_once('.').unwrap();
        assert_eq!(
            parse_signing_input(header),
            Err(SignedFieldsError::Shape { parts: 1 })
        );
        assert_eq!(
            parse_signing_input(&format!("{good}.sig")),
            Err(SignedFieldsError::Shape { parts: 3 })
        );
        assert_eq!(
            parse_signing_input(&format!("{header}.!!")),
            Err(SignedFieldsError::Base64 { part: "claims" })
        );
        let not_json = URL_SAFE_NO_PAD.encode("[]");
        assert!(matches!(
            parse_signing_input(&format!("{not_json}.{claims}")),
            Err(SignedFieldsError::Json { part: "header", .. })
        ));
        for epoch in ["-1", "05", "1e3", "18446744073709551616", ""] {
            assert!(
                matches!(
                    parse_signing_input(&signing_input(epoch, 1)),
                    Err(SignedFieldsError::Epoch { .. })
                ),
                "{epoch}"
            );
        }
        let without_seq = URL_SAFE_NO_PAD
            .encode(r#"{"jti":"j","agentkeys_user_wallet":"w","agentkeys_epoch":"1"}"#);
        assert!(matches!(
            parse_signing_input(&format!("{header}.{without_seq}")),
            Err(SignedFieldsError::Json { part: "claims", .. })
        ));
    }
}
