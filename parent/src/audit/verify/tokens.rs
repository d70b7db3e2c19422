//! Tokens found outside the broker (in a relying party's log, an incident, a client's
//! cache), each checked against the row the log holds for it.
//!
//! A token names its row: its `agentkeys_epoch` and `agentkeys_seq` claims are its place
//! in the enclave's chain. A token that verifies with the issuer's JWKS was signed by the
//! enclave, so the log must hold a row for that `(epoch, seq)` with the same signing
//! input, and that row must not say the token was withheld. This is what catches a row
//! relabelled `mint_withheld` after its token was handed out: the enclave's chain covers
//! what was signed, not whether the parent handed it out.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use agentkeys_attestation::jwks::Jwk;

use super::chain::{open_log, AuditVerifyError};
use super::signed::parse_signing_input;
use super::{VerifyFailure, VerifyReport};
use crate::audit::row::AuditRow;
use crate::audit::sqlite::{row_columns, row_from_sql, u64_to_sql};
use crate::audit::AuditEvent;

/// A token as found, with where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundToken {
    /// `FILE:LINE`.
    pub source: String,
    /// The compact JWS.
    pub jwt: String,
}

/// Why a file of tokens could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TokensFileError {
    /// The file could not be read.
    #[error("cannot read tokens file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no token.
    #[error("tokens file {path} holds no token (one compact JWT per line)")]
    Empty {
        /// The file.
        path: String,
    },
}

/// Reads one compact JWT per line; blank lines and lines starting with `#` are skipped.
pub fn read_tokens(path: &Path) -> Result<Vec<FoundToken>, TokensFileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TokensFileError::Read {
        path: name.clone(),
        source,
    })?;
    let tokens: Vec<FoundToken> = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(number, line)| FoundToken {
            source: format!("{name}:{number}"),
            jwt: line.to_owned(),
        })
        .collect();
    if tokens.is_empty() {
        return Err(TokensFileError::Empty { path: name });
    }
    Ok(tokens)
}

/// A token that verified: its signing input, hash and place in the chain.
pub(super) struct Verified<'a> {
    signing_input: &'a str,
    jwt_sha256: [u8; 32],
    /// Its `agentkeys_epoch` claim.
    pub(super) epoch: u64,
    /// Its `agentkeys_seq` claim.
    pub(super) seq: u64,
}

/// Checks that `token` is a token `jwks` signed and returns what names its row; a token
/// that is not is recorded in `report` as [`VerifyFailure::TokenInvalid`].
pub(super) fn verify_or_report<'a>(
    token: &'a FoundToken,
    jwks: &[Jwk],
    report: &mut VerifyReport,
) -> Option<Verified<'a>> {
    match verify_token(token, jwks) {
        Ok(v) => Some(v),
        Err(reason) => {
            report.failures.push(VerifyFailure::TokenInvalid {
                source: token.source.clone(),
                reason,
            });
            None
        }
    }
}

/// Checks that `token` is a token `jwks` signed; returns what names its row.
fn verify_token<'a>(token: &'a FoundToken, jwks: &[Jwk]) -> Result<Verified<'a>, String> {
    let (signing_input, signature) = token
        .jwt
        .rsplit_once('.')
        .ok_or_else(|| "not a compact JWS (header.claims.signature)".to_owned())?;
    let fields = parse_signing_input(signing_input).map_err(|e| e.to_string())?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "the signature is not base64url".to_owned())?;
    let key = jwks
        .iter()
        .find(|k| k.kid == fields.kid)
        .ok_or_else(|| format!("kid {:?} is not in the JWKS", fields.kid))?;
    if !key.verifies_es256(signing_input.as_bytes(), &signature) {
        return Err(format!(
            "its ES256 signature does not verify with kid {:?}",
            fields.kid
        ));
    }
    Ok(Verified {
        signing_input,
        jwt_sha256: Sha256::digest(token.jwt.as_bytes()).into(),
        epoch: fields.epoch,
        seq: fields.seq,
    })
}

/// Whether `row` records exactly `token` (by signing input, or by the whole JWT's hash
/// for format 1 rows).
fn records(row: &AuditRow, token: &Verified<'_>) -> bool {
    row.entry.signing_input.as_deref() == Some(token.signing_input)
        || row.entry.jwt_sha256 == Some(token.jwt_sha256)
}

/// Checks every found token against the log at `db`, adding a failure for each token
/// that is not this issuer's, has no row, has a row that records another token, or whose
/// row says it was withheld. Returns how many tokens were accounted for.
pub fn check_tokens(
    db: &Path,
    tokens: &[FoundToken],
    jwks: &[Jwk],
    report: &mut VerifyReport,
) -> Result<usize, AuditVerifyError> {
    let (conn, version) = open_log(db)?;
    let sql_err = |source| AuditVerifyError::Sqlite {
        path: db.to_path_buf(),
        source,
    };
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {} FROM audit_log WHERE enclave_epoch = ?1 AND enclave_seq = ?2 ORDER BY id",
            row_columns(version)
        ))
        .map_err(sql_err)?;
    let mut accounted = 0;
    for token in tokens {
        let Some(verified) = verify_or_report(token, jwks, report) else {
            continue;
        };
        let mut rows = Vec::new();
        let mut query = stmt
            .query([u64_to_sql(verified.epoch), u64_to_sql(verified.seq)])
            .map_err(sql_err)?;
        while let Some(r) = query.next().map_err(sql_err)? {
            // An undecodable row is named by the walk of the whole log.
            if let Ok(row) = row_from_sql(r).map_err(sql_err)? {
                rows.push(row);
            }
        }
        let failure = judge(&token.source, &verified, &rows).map(|(f, _)| f);
        match failure {
            Some(f) => report.failures.push(f),
            None => accounted += 1,
        }
    }
    Ok(accounted)
}

/// What the rows of a token's `(epoch, seq)` say about it: `None` when one of them
/// records this very token as sent; otherwise the failure, with the index in `rows` of
/// the row it names (a withheld row, or the row that records another token).
pub(super) fn judge(
    source: &str,
    token: &Verified<'_>,
    rows: &[AuditRow],
) -> Option<(VerifyFailure, Option<usize>)> {
    let matching: Vec<usize> = (0..rows.len())
        .filter(|i| records(&rows[*i], token))
        .collect();
    if rows.is_empty() {
        Some((
            VerifyFailure::TokenWithoutRow {
                source: source.to_owned(),
                epoch: token.epoch,
                seq: token.seq,
            },
            None,
        ))
    } else if let Some(withheld) = matching
        .iter()
        .find(|i| rows[**i].entry.event == AuditEvent::MintWithheld)
    {
        Some((
            VerifyFailure::TokenWithheld {
                source: source.to_owned(),
                id: rows[*withheld].id,
            },
            Some(*withheld),
        ))
    } else if matching.is_empty() {
        Some((
            VerifyFailure::TokenDisagrees {
                source: source.to_owned(),
                id: rows[0].id,
            },
            Some(0),
        ))
    } else {
        None
    }
}
