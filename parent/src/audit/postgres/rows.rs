//! Rows as PostgreSQL stores them: the insert's parameters and the decoding of a selected
//! row back into an [`AuditRow`] (the chain's `chain_seq` is the row's `id`, the number its
//! hash covers).

use tokio_postgres::types::ToSql;

use crate::audit::row::{AuditRow, RowFormat, StoredRow};
use crate::audit::sqlite::{u64_to_sql, RowDecodeError};
use crate::audit::NewAuditRow;

/// The insert of a whole batch in one statement: the chain id, then one array per other
/// column, element `i` of each being row `i` ([`PgBatchValues::params`]). One statement
/// is one round trip and, outside an explicit transaction, one commit: against a pipelined
/// `INSERT` per row inside `BEGIN`/`COMMIT` it raised the PostgreSQL store's mint rate from
/// 0.34 of SQLite's to 0.48 – 0.69 on the development machine (`agentkeys-bench`,
/// docs/fleet.md "Throughput").
pub(super) const INSERT_ROWS: &str = "INSERT INTO audit_log (chain_id, chain_seq, ts_ms, event, \
     outcome, bearer_sha256, wallet, kid, jti, enclave_epoch, enclave_seq, jwt_sha256, \
     enclave_head, signing_input, row_format, status, detail, prev_hash, row_hash) \
     SELECT $1::text, * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], \
     $6::bytea[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::bigint[], \
     $12::bytea[], $13::bytea[], $14::text[], $15::smallint[], $16::integer[], $17::text[], \
     $18::bytea[], $19::bytea[])";

/// The columns of `audit_log` in the order [`row_from_pg`] reads them.
pub(crate) const PG_ROW_COLUMNS: &str = "chain_id, chain_seq, ts_ms, event, outcome, \
     bearer_sha256, wallet, kid, jti, enclave_epoch, enclave_seq, jwt_sha256, enclave_head, \
     signing_input, row_format, status, detail, prev_hash, row_hash";

/// One row's insert parameters, borrowed from the row being appended.
pub(super) struct PgRowValues<'a> {
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
    /// The values of `entry` stored as row `seq` of its chain.
    pub(super) fn new(
        seq: i64,
        ts_ms: i64,
        entry: &'a NewAuditRow,
        prev: [u8; 32],
        hash: [u8; 32],
    ) -> PgRowValues<'a> {
        PgRowValues {
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
}

/// The parameters of [`INSERT_ROWS`] for rows of one chain: one array per column.
pub(super) struct PgBatchValues<'a> {
    chain: &'a str,
    seq: Vec<i64>,
    ts_ms: Vec<i64>,
    event: Vec<&'static str>,
    outcome: Vec<&'static str>,
    bearer: Vec<Option<&'a [u8]>>,
    wallet: Vec<Option<&'a str>>,
    kid: Vec<Option<&'a str>>,
    jti: Vec<Option<&'a str>>,
    epoch: Vec<Option<i64>>,
    enclave_seq: Vec<Option<i64>>,
    jwt: Vec<Option<&'a [u8]>>,
    head: Vec<Option<&'a [u8]>>,
    signing_input: Vec<Option<&'a str>>,
    format: Vec<i16>,
    status: Vec<Option<i32>>,
    detail: Vec<&'a str>,
    prev: Vec<&'a [u8]>,
    hash: Vec<&'a [u8]>,
}

impl<'a> PgBatchValues<'a> {
    /// The columns of `rows`, all of `chain`.
    pub(super) fn new(chain: &'a str, rows: &'a [PgRowValues<'a>]) -> PgBatchValues<'a> {
        PgBatchValues {
            chain,
            seq: rows.iter().map(|r| r.seq).collect(),
            ts_ms: rows.iter().map(|r| r.ts_ms).collect(),
            event: rows.iter().map(|r| r.event).collect(),
            outcome: rows.iter().map(|r| r.outcome).collect(),
            bearer: rows.iter().map(|r| r.bearer).collect(),
            wallet: rows.iter().map(|r| r.entry.wallet.as_deref()).collect(),
            kid: rows.iter().map(|r| r.entry.kid.as_deref()).collect(),
            jti: rows.iter().map(|r| r.entry.jti.as_deref()).collect(),
            epoch: rows.iter().map(|r| r.epoch).collect(),
            enclave_seq: rows.iter().map(|r| r.enclave_seq).collect(),
            jwt: rows.iter().map(|r| r.jwt).collect(),
            head: rows.iter().map(|r| r.head).collect(),
            signing_input: rows
                .iter()
                .map(|r| r.entry.signing_input.as_deref())
                .collect(),
            format: rows.iter().map(|r| r.format).collect(),
            status: rows.iter().map(|r| r.status).collect(),
            detail: rows.iter().map(|r| r.entry.detail.as_str()).collect(),
            prev: rows.iter().map(|r| &r.prev[..]).collect(),
            hash: rows.iter().map(|r| &r.hash[..]).collect(),
        }
    }

    /// The parameters of [`INSERT_ROWS`].
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 19] {
        [
            &self.chain,
            &self.seq,
            &self.ts_ms,
            &self.event,
            &self.outcome,
            &self.bearer,
            &self.wallet,
            &self.kid,
            &self.jti,
            &self.epoch,
            &self.enclave_seq,
            &self.jwt,
            &self.head,
            &self.signing_input,
            &self.format,
            &self.status,
            &self.detail,
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
