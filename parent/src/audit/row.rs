//! A stored audit row and its canonical, hash-chained encoding.
//!
//! `row_hash = SHA-256(prev_hash ‖ encode(row))` where `encode` is, in order:
//!
//! | field | encoding |
//! |---|---|
//! | domain tag | `agentkeys-audit-row-v2` (22 bytes; `-v1` for format 1) |
//! | `id`, `ts_ms` | i64 big-endian, 8 bytes each |
//! | `event`, `outcome`, `detail` (at its place below) | u32 big-endian length ‖ UTF-8 |
//! | optional fields | `0x00` when absent; `0x01` ‖ value when present |
//! | optional strings | value = u32 big-endian length ‖ UTF-8 |
//! | optional u64 / u16 | value = big-endian, 8 / 2 bytes |
//! | optional hashes | value = the 32 raw bytes |
//!
//! Field order: id, ts_ms, event, outcome, bearer_sha256, wallet, kid, jti,
//! enclave_epoch, enclave_seq, jwt_sha256, enclave_head, signing_input (format 2 only),
//! status, detail. The first row's `prev_hash` is [`GENESIS_PREV_HASH`].
//!
//! Format 2 adds `signing_input`, the JWS signing input of the token a row is about (its
//! header and claims without the signature, so not a usable token), which the enclave's
//! chain hashes: `audit verify` checks the row's wallet, `kid`, `jti`, epoch and seq
//! against the claims the enclave signed. Format 1 rows (logs written before format 2)
//! have no such field and are walked with the format 1 encoding.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::sqlite::{u64_from_sql, RowDecodeError};
use super::{AuditEvent, NewAuditRow, Outcome};

/// The `prev_hash` of the first row: 32 zero bytes.
pub const GENESIS_PREV_HASH: [u8; 32] = [0u8; 32];

/// The encoding a stored row was hashed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RowFormat {
    /// Without `signing_input`; rows of logs written before format 2.
    V1,
    /// With `signing_input`; every row this build writes.
    V2,
}

impl RowFormat {
    /// The format this build writes.
    pub const CURRENT: RowFormat = RowFormat::V2;

    /// The number stored in the `row_format` column.
    pub fn number(self) -> i64 {
        match self {
            RowFormat::V1 => 1,
            RowFormat::V2 => 2,
        }
    }

    /// Parses a stored `row_format`.
    pub fn from_number(n: i64) -> Option<RowFormat> {
        match n {
            1 => Some(RowFormat::V1),
            2 => Some(RowFormat::V2),
            _ => None,
        }
    }

    /// Domain separation for the row encoding.
    fn domain(self) -> &'static [u8] {
        match self {
            RowFormat::V1 => b"agentkeys-audit-row-v1",
            RowFormat::V2 => b"agentkeys-audit-row-v2",
        }
    }
}

/// One row as stored: the appended entry, where it sits in the log and its chain hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Position in the log (1, 2, …).
    pub id: i64,
    /// The encoding its hash covers.
    pub format: RowFormat,
    /// When the row was appended (UNIX milliseconds).
    pub ts_ms: i64,
    /// What was appended.
    pub entry: NewAuditRow,
    /// The previous row's `row_hash` (zeros for the first row).
    pub prev_hash: [u8; 32],
    /// This row's chain hash.
    pub row_hash: [u8; 32],
}

/// The JSON shape of a row (hashes as lower-case hex) for `audit tail --json`.
#[derive(Debug, Serialize)]
pub struct AuditRowJson<'a> {
    id: i64,
    ts_ms: i64,
    event: &'static str,
    outcome: &'static str,
    bearer_sha256: Option<String>,
    wallet: Option<&'a str>,
    kid: Option<&'a str>,
    jti: Option<&'a str>,
    enclave_epoch: Option<u64>,
    enclave_seq: Option<u64>,
    jwt_sha256: Option<String>,
    enclave_head: Option<String>,
    signing_input: Option<&'a str>,
    row_format: i64,
    status: Option<u16>,
    detail: &'a str,
    prev_hash: String,
    row_hash: String,
}

impl AuditRow {
    /// The JSON view of this row.
    pub fn to_json(&self) -> AuditRowJson<'_> {
        let entry = &self.entry;
        AuditRowJson {
            id: self.id,
            ts_ms: self.ts_ms,
            event: entry.event.as_str(),
            outcome: entry.outcome.as_str(),
            bearer_sha256: entry.bearer_sha256.map(hex::encode),
            wallet: entry.wallet.as_deref(),
            kid: entry.kid.as_deref(),
            jti: entry.jti.as_deref(),
            enclave_epoch: entry.enclave_epoch,
            enclave_seq: entry.enclave_seq,
            jwt_sha256: entry.jwt_sha256.map(hex::encode),
            enclave_head: entry.enclave_head.map(hex::encode),
            signing_input: entry.signing_input.as_deref(),
            row_format: self.format.number(),
            status: entry.status,
            detail: &entry.detail,
            prev_hash: hex::encode(self.prev_hash),
            row_hash: hex::encode(self.row_hash),
        }
    }

    /// Recomputes this row's hash from its fields and `prev_hash`.
    pub fn compute_hash(&self) -> [u8; 32] {
        row_hash(&self.prev_hash, &self.encode())
    }

    /// The canonical encoding in the row's format (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        encode_row(self.format, self.id, self.ts_ms, &self.entry)
    }
}

/// The canonical encoding in `format` of `entry` stored as row `id` at `ts_ms` (see the
/// module documentation). Format 1 leaves `signing_input` out.
pub fn encode_row(format: RowFormat, id: i64, ts_ms: i64, entry: &NewAuditRow) -> Vec<u8> {
    let signing_input_len = entry.signing_input.as_ref().map_or(0, String::len);
    let mut out = Vec::with_capacity(256 + signing_input_len + entry.detail.len());
    out.extend_from_slice(format.domain());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&ts_ms.to_be_bytes());
    put_str(&mut out, entry.event.as_str());
    put_str(&mut out, entry.outcome.as_str());
    put_opt_hash(&mut out, entry.bearer_sha256.as_ref());
    put_opt_str(&mut out, entry.wallet.as_deref());
    put_opt_str(&mut out, entry.kid.as_deref());
    put_opt_str(&mut out, entry.jti.as_deref());
    put_opt_u64(&mut out, entry.enclave_epoch);
    put_opt_u64(&mut out, entry.enclave_seq);
    put_opt_hash(&mut out, entry.jwt_sha256.as_ref());
    put_opt_hash(&mut out, entry.enclave_head.as_ref());
    if format >= RowFormat::V2 {
        put_opt_str(&mut out, entry.signing_input.as_deref());
    }
    match entry.status {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            out.extend_from_slice(&s.to_be_bytes());
        }
    }
    put_str(&mut out, &entry.detail);
    out
}

/// `SHA-256(prev_hash ‖ encoding)`.
pub fn row_hash(prev_hash: &[u8; 32], encoding: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update(encoding);
    h.finalize().into()
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Lengths above u32::MAX cannot occur for rows SQLite accepts (1 GB limit); saturate
    // rather than wrap so the encoding stays injective for every representable row.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

fn put_opt_u64(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

fn put_opt_hash(out: &mut Vec<u8>, v: Option<&[u8; 32]>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(v);
        }
    }
}

/// A row's columns as a store read them, before decoding. `H` is how the store keeps a
/// hash: lower-case hex text in SQLite, `bytea` in PostgreSQL.
pub(crate) struct StoredRow<H> {
    pub id: i64,
    pub ts_ms: i64,
    pub event: String,
    pub outcome: String,
    pub bearer_sha256: Option<H>,
    pub wallet: Option<String>,
    pub kid: Option<String>,
    pub jti: Option<String>,
    pub enclave_epoch: Option<i64>,
    pub enclave_seq: Option<i64>,
    pub jwt_sha256: Option<H>,
    pub enclave_head: Option<H>,
    pub signing_input: Option<String>,
    pub row_format: i64,
    pub status: Option<i64>,
    pub detail: String,
    pub prev_hash: H,
    pub row_hash: H,
}

impl<H> StoredRow<H> {
    /// Decodes the columns; `hash` reads a stored hash (`None` when it is not 32 bytes)
    /// and `show` prints one for the error naming a bad column.
    pub(crate) fn decode(
        self,
        hash: impl Fn(&H) -> Option<[u8; 32]>,
        show: impl Fn(&H) -> String,
    ) -> Result<AuditRow, RowDecodeError> {
        let id = self.id;
        let bad = |column: &'static str, value: String| RowDecodeError { id, column, value };
        let hash32 = |column: &'static str, v: &H| hash(v).ok_or_else(|| bad(column, show(v)));
        let opt_hash =
            |column: &'static str, v: Option<H>| v.map(|v| hash32(column, &v)).transpose();
        Ok(AuditRow {
            id,
            format: RowFormat::from_number(self.row_format)
                .ok_or_else(|| bad("row_format", self.row_format.to_string()))?,
            ts_ms: self.ts_ms,
            entry: NewAuditRow {
                event: AuditEvent::parse(&self.event)
                    .ok_or_else(|| bad("event", self.event.clone()))?,
                outcome: Outcome::parse(&self.outcome)
                    .ok_or_else(|| bad("outcome", self.outcome.clone()))?,
                bearer_sha256: opt_hash("bearer_sha256", self.bearer_sha256)?,
                wallet: self.wallet,
                kid: self.kid,
                jti: self.jti,
                enclave_epoch: self.enclave_epoch.map(u64_from_sql),
                enclave_seq: self.enclave_seq.map(u64_from_sql),
                jwt_sha256: opt_hash("jwt_sha256", self.jwt_sha256)?,
                enclave_head: opt_hash("enclave_head", self.enclave_head)?,
                signing_input: self.signing_input,
                status: self
                    .status
                    .map(|s| u16::try_from(s).map_err(|_| bad("status", s.to_string())))
                    .transpose()?,
                detail: self.detail,
            },
            prev_hash: hash32("prev_hash", &self.prev_hash)?,
            row_hash: hash32("row_hash", &self.row_hash)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, Outcome};

    fn sample() -> AuditRow {
        AuditRow {
            id: 1,
            format: RowFormat::V2,
            ts_ms: 1_700_000_000_000,
            entry: NewAuditRow {
                event: AuditEvent::MintJwt,
                outcome: Outcome::Success,
                bearer_sha256: Some([1; 32]),
                wallet: Some("0xabc".into()),
                kid: Some("kid".into()),
                jti: Some("jti".into()),
                enclave_epoch: Some(7),
                enclave_seq: Some(1),
                jwt_sha256: Some([2; 32]),
                enclave_head: Some([3; 32]),
                signing_input: Some("aGVhZA.Y2xhaW1z".into()),
                status: Some(200),
                detail: String::new(),
            },
            prev_hash: GENESIS_PREV_HASH,
            row_hash: [0; 32],
        }
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = sample();
        let h = base.compute_hash();
        let mut variants = Vec::new();
        let mut r = base.clone();
        r.id = 2;
        variants.push(r);
        let mut r = base.clone();
        r.ts_ms += 1;
        variants.push(r);
        let mut r = base.clone();
        r.entry.event = AuditEvent::MintAwsCreds;
        variants.push(r);
        let mut r = base.clone();
        r.entry.outcome = Outcome::Failure;
        variants.push(r);
        let mut r = base.clone();
        r.entry.bearer_sha256 = None;
        variants.push(r);
        let mut r = base.clone();
        r.entry.wallet = Some("0xabd".into());
        variants.push(r);
        let mut r = base.clone();
        r.entry.kid = None;
        variants.push(r);
        let mut r = base.clone();
        r.entry.jti = Some("jtj".into());
        variants.push(r);
        let mut r = base.clone();
        r.entry.enclave_epoch = Some(8);
        variants.push(r);
        let mut r = base.clone();
        r.entry.enclave_seq = Some(2);
        variants.push(r);
        let mut r = base.clone();
        r.entry.jwt_sha256 = Some([9; 32]);
        variants.push(r);
        let mut r = base.clone();
        r.entry.enclave_head = None;
        variants.push(r);
        let mut r = base.clone();
        r.entry.signing_input = Some("aGVhZA.Y2xhaW1Z".into());
        variants.push(r);
        let mut r = base.clone();
        r.format = RowFormat::V1;
        variants.push(r);
        let mut r = base.clone();
        r.entry.status = Some(201);
        variants.push(r);
        let mut r = base.clone();
        r.entry.detail = "x".into();
        variants.push(r);
        let mut r = base.clone();
        r.prev_hash = [5; 32];
        variants.push(r);
        for v in variants {
            assert_ne!(v.compute_hash(), h, "{v:?}");
        }
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let mut a = sample();
        a.entry.wallet = Some("ab".into());
        a.entry.kid = Some("c".into());
        let mut b = sample();
        b.entry.wallet = Some("a".into());
        b.entry.kid = Some("bc".into());
        assert_ne!(a.encode(), b.encode());
        let mut c = sample();
        c.entry.wallet = None;
        c.entry.kid = Some(String::new());
        let mut d = sample();
        d.entry.wallet = Some(String::new());
        d.entry.kid = None;
        assert_ne!(c.encode(), d.encode());
    }

    #[test]
    fn hash_is_prev_then_encoding() {
        let r = sample();
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update(r.encode());
        let expected: [u8; 32] = h.finalize().into();
        assert_eq!(r.compute_hash(), expected);
        assert!(r.encode().starts_with(b"agentkeys-audit-row-v2"));
    }

    /// Format 1 is the format 2 encoding without `signing_input`, under its own domain, so
    /// logs written before format 2 still verify.
    #[test]
    fn format_1_leaves_the_signing_input_out() {
        let mut r = sample();
        r.entry.signing_input = None;
        let v2 = r.encode();
        r.format = RowFormat::V1;
        let v1 = r.encode();
        assert!(v1.starts_with(b"agentkeys-audit-row-v1"));
        // v2 has one more byte: the absent signing_input's 0x00.
        assert_eq!(v2.len(), v1.len() + 1);
        assert_eq!(
            &v1[22..],
            &{
                let mut without = v2[22..].to_vec();
                let at = without.len() - 1 - 4 - 2 - 1; // before status (0x01 ‖ u16) and detail
                assert_eq!(without.remove(at), 0);
                without
            }[..]
        );
        assert_eq!(RowFormat::from_number(1), Some(RowFormat::V1));
        assert_eq!(RowFormat::from_number(2), Some(RowFormat::V2));
        assert_eq!(RowFormat::from_number(3), None);
    }
}
