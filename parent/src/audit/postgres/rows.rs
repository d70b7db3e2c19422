//! Rows as PostgreSQL stores them: the insert's parameters and the decoding of a selected
//! row back into an [`AuditRow`] (the chain's `chain_seq` is the row's `id`, the number its
//! hash covers).

use tokio_postgres::types::ToSql;

use crate::audit::row::{AuditRow, RowFormat, StoredRow};
use crate::audit::sqlite::{u64_to_sql, RowDecodeError};
use crate::audit::NewAuditRow;

/// The insert of one row; parameters in [`PgRowValues::params`] order.
pub(super) const INSERT_ROW: &str = "INSERT INTO audit_log (chain_id, chain_seq, ts_ms, event, \
     outcome, bearer_sha256, wallet, kid, jti, enclave_epoch, enclave_seq, jwt_sha256, \
     enclave_head, signing_input, row_format, status, detail, prev_hash, row_hash) VALUES ($1, \
     $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)";

/// The columns of `audit_log` in the order [`row_from_pg`] reads them.
pub(crate) const PG_ROW_COLUMNS: &str = "chain_id, chain_seq, ts_ms, event, outcome, \
     bearer_sha256, wallet, kid, jti, enclave_epoch, enclave_seq, jwt_sha256, enclave_head, \
     signing_input, row_format, status, detail, prev_hash, row_hash";

/// One row's insert parameters, borrowed from the row being appended.
pub(super) struct PgRowValues<'a> {
    chain: &'a str,
    seq: i64,
    ts_ms: i64,
    entry: &'a NewAuditRow,
    event: &'static str,
    outcome: &'static str,
    bearer: Option<&'a [u8]>,
    epoch: Option<i64>,
    enclave_seq: Option<i64>,
    jwt: Option<&'a [u8]>,
    head: Option<&'a [u8]>,
    format: i16,
    status: Option<i32>,
    prev: Vec<u8>,
    hash: Vec<u8>,
}

impl<'a> PgRowValues<'a> {
    /// The values of `entry` stored as row `seq` of `chain`.
    pub(super) fn new(
        chain: &'a str,
        seq: i64,
        ts_ms: i64,
        entry: &'a NewAuditRow,
        prev: [u8; 32],
        hash: [u8; 32],
    ) -> PgRowValues<'a> {
        PgRowValues {
            chain,
            seq,
            ts_ms,
            entry,
            event: entry.event.as_str(),
            outcome: entry.outcome.as_str(),
            bearer: entry.bearer_sha256.as_ref().map(|h| &h[..]),
            epoch: entry.enclave_epoch.map(u64_to_sql),
            enclave_seq: entry.enclave_seq.map(u64_to_sql),
            jwt: entry.jwt_sha256.as_ref().map(|h| &h[..]),
            head: entry.enclave_head.as_ref().map(|h| &h[..]),
            // Row formats are 1 and 2: they fit a SMALLINT.
            format: i16::try_from(RowFormat::CURRENT.number()).unwrap_or(i16::MAX),
            status: entry.status.map(i32::from),
            prev: prev.to_vec(),
            hash: hash.to_vec(),
        }
    }

    /// The parameters of [`INSERT_ROW`].
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 19] {
        [
            &self.chain,
            &self.seq,
            &self.ts_ms,
            &self.event,
            &self.outcome,
            &self.bearer,
            &self.entry.wallet,
            &self.entry.kid,
            &self.entry.jti,
            &self.epoch,
            &self.enclave_seq,
            &self.jwt,
            &self.head,
            &self.entry.signing_input,
            &self.format,
            &self.status,
            &self.entry.detail,
            &self.prev,
            &self.hash,
        ]
    }
}

/// Reads one row selected with [`PG_ROW_COLUMNS`]: its chain id, and the row or what in it
/// cannot be decoded.
pub(crate) fn row_from_pg(
    r: &tokio_postgres::Row,
) -> Result<(String, Result<AuditRow, RowDecodeError>), tokio_postgres::Error> {
    let chain: String = r.try_get(0)?;
    let stored = StoredRow {
        id: r.try_get(1)?,
        ts_ms: r.try_get(2)?,
        event: r.try_get(3)?,
        outcome: r.try_get(4)?,
        bearer_sha256: r.try_get::<_, Option<Vec<u8>>>(5)?,
        wallet: r.try_get(6)?,
        kid: r.try_get(7)?,
        jti: r.try_get(8)?,
        enclave_epoch: r.try_get(9)?,
        enclave_seq: r.try_get(10)?,
        jwt_sha256: r.try_get(11)?,
        enclave_head: r.try_get(12)?,
        signing_input: r.try_get(13)?,
        row_format: i64::from(r.try_get::<_, i16>(14)?),
        status: r.try_get::<_, Option<i32>>(15)?.map(i64::from),
        detail: r.try_get(16)?,
        prev_hash: r.try_get(17)?,
        row_hash: r.try_get(18)?,
    };
    let decoded = stored.decode(
        |v: &Vec<u8>| <[u8; 32]>::try_from(v.as_slice()).ok(),
        |v| hex::encode(v),
    );
    Ok((chain, decoded))
}
