//! The `audit verify` and `audit tail` commands, as plain functions.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::audit::db::{AuditDb, PgUrl};
use crate::audit::row::AuditRow;
use crate::audit::sqlite::{row_columns, row_from_sql};
use crate::audit::verify::{
    load_checkpoint, verify_chain, AuditVerifyError, CheckpointError, CheckpointTrust,
    VerifyFailure, VerifyReport,
};

/// Why a command could not run (a failed verification is a report, not an error).
#[derive(Debug, thiserror::Error)]
pub enum AuditCliError {
    /// The log could not be read.
    #[error(transparent)]
    Verify(#[from] AuditVerifyError),
    /// The checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The log could not be read for `tail`.
    #[error("cannot read audit database {path}: {source}")]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored row is malformed.
    #[error(transparent)]
    Row(#[from] crate::audit::sqlite::RowDecodeError),
    /// A PostgreSQL log could not be read.
    #[error(transparent)]
    Postgres(#[from] crate::audit::verify::PgVerifyError),
    /// `--db` is neither a SQLite path nor a valid `postgres://` URL.
    #[error(transparent)]
    Db(#[from] crate::audit::db::AuditDbError),
    /// No runtime to read a PostgreSQL log with.
    #[error("cannot start the runtime to read PostgreSQL: {0}")]
    Runtime(std::io::Error),
}

/// `audit verify --db DB [--checkpoint FILE]`. The checkpoint file may be JSON
/// `{"epoch":..,"seq":..,"head":"hex"}`, JSON with a base64 `document`, or a raw or
/// base64 attestation document whose `user_data` is the 48-byte checkpoint; the
/// document is only decoded here (use [`verify_with_trust`] to verify it as well).
/// Exit non-zero when `!report.is_ok()`.
pub fn verify(db: &Path, checkpoint: Option<&Path>) -> Result<VerifyReport, AuditCliError> {
    verify_with_trust(db, checkpoint, None)
}

/// [`verify`], verifying the checkpoint's attestation document against `trust`.
pub fn verify_with_trust(
    db: &Path,
    checkpoint: Option<&Path>,
    trust: Option<&CheckpointTrust<'_>>,
) -> Result<VerifyReport, AuditCliError> {
    let cp = match checkpoint {
        Some(p) => Some(load_checkpoint(p, trust)?),
        None => None,
    };
    Ok(verify_chain(db, cp.as_ref())?)
}

/// Flags of `agentkeys-broker audit verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Audit log: a SQLite path (`sqlite:PATH` or a bare path) or a `postgres://` URL
    /// (every host's chain is verified and reported).
    #[arg(long, env = "BROKER_AUDIT_DB", value_parser = AuditDb::parse)]
    pub db: AuditDb,
    /// Checkpoint file (JSON from /v1/audit/checkpoint, or an attestation document).
    #[arg(long, conflicts_with = "broker_url")]
    pub checkpoint: Option<PathBuf>,
    /// Fetch a fresh attested checkpoint from a running broker. With a PostgreSQL log,
    /// repeat it for every host: each chain is checked against its own enclave's.
    #[arg(long)]
    pub broker_url: Vec<String>,
    /// Root certificate (PEM) to verify the checkpoint document against, instead of the
    /// AWS Nitro Enclaves root.
    #[arg(long, alias = "root-pem", value_name = "PEM")]
    pub root: Option<PathBuf>,
    /// Accept the mock NSM root given by --root (development only).
    #[arg(long, requires = "root")]
    pub allow_mock_root: bool,
    /// nitro-cli measurements JSON of the enclave image you rebuilt: the checkpoint's
    /// document must carry its PCR0, PCR1 and PCR2.
    #[arg(long, value_name = "FILE")]
    pub measurements: Option<PathBuf>,
    /// Check no PCRs of the checkpoint's document (printed as a warning): any enclave
    /// image signed by the trusted root could have made it.
    #[arg(long, conflicts_with = "measurements")]
    pub no_pcr_policy: bool,
    /// Verify an archived checkpoint at this time (UNIX seconds), or at `document`, the
    /// document's own timestamp; its certificates must have been valid then.
    #[arg(
        long,
        value_name = "UNIX_SECONDS|document",
        conflicts_with = "broker_url"
    )]
    pub at: Option<String>,
    /// AWS CloudTrail records (`aws cloudtrail lookup-events` JSON, or a decompressed
    /// CloudTrail log file); repeatable. Every attested unseal of the issuer key they show
    /// must be a boot the log records. Needs --kms-key-arn.
    #[arg(long, value_name = "FILE", requires = "kms_key_arn")]
    pub cloudtrail: Vec<PathBuf>,
    /// The issuer's KMS key ARN (the one the enclave image is pinned to), for --cloudtrail.
    #[arg(long, value_name = "ARN")]
    pub kms_key_arn: Option<String>,
    /// Tokens found outside the broker, one compact JWT per line; repeatable. Each must
    /// verify with --jwks and have its row (named by its agentkeys_epoch and agentkeys_seq
    /// claims; in a PostgreSQL log, in whichever host's chain), holding the same token and
    /// not marked mint_withheld.
    #[arg(long = "token", value_name = "FILE", requires = "jwks")]
    pub tokens: Vec<PathBuf>,
    /// The issuer's JWKS (as `agentkeys-attest verify --issuer` checked it), for --token.
    #[arg(long, value_name = "FILE")]
    pub jwks: Option<PathBuf>,
}

/// Printed when a checkpoint is checked without a PCR policy.
pub const NO_PCR_POLICY_WARNING: &str = "warning: --no-pcr-policy: the checkpoint document's PCRs are not checked; any enclave image signed by the trusted root could have made it";

/// The PCR policy for a checkpoint's document: required whenever there is a checkpoint.
fn checkpoint_pcrs(args: &VerifyArgs) -> anyhow::Result<std::collections::BTreeMap<u16, Vec<u8>>> {
    crate::cli::trust::expected_pcrs(
        args.measurements.as_deref(),
        args.no_pcr_policy,
        NO_PCR_POLICY_WARNING,
    )
    .map_err(|e| anyhow::anyhow!("--measurements: {e}"))?
    .ok_or_else(|| {
        anyhow::anyhow!(
            "no PCR policy for the checkpoint's document: give --measurements FILE (the nitro-cli measurements of the enclave image you rebuilt), or --no-pcr-policy to accept a checkpoint from any enclave image signed by the trusted root"
        )
    })
}

/// The time to verify an archived checkpoint at: `--at` seconds, or the document's own
/// timestamp with `--at document`; now otherwise.
fn checkpoint_time(at: Option<&str>, checkpoint: &Path) -> anyhow::Result<u64> {
    match at {
        None => Ok(agentkeys_attestation::now_unix_ms()),
        Some("document") => {
            let bytes = std::fs::read(checkpoint)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", checkpoint.display()))?;
            document_timestamp(&bytes).ok_or_else(|| {
                anyhow::anyhow!(
                    "--at document: {} holds no attestation document to take the time from",
                    checkpoint.display()
                )
            })
        }
        Some(seconds) => seconds
            .parse::<u64>()
            .map(|s| s.saturating_mul(1000))
            .map_err(|_| anyhow::anyhow!("--at {seconds:?}: expected UNIX seconds or `document`")),
    }
}

/// The `timestamp` (UNIX ms) of the attestation document in a checkpoint file, read
/// without verifying it.
fn document_timestamp(file: &[u8]) -> Option<u64> {
    let document = crate::audit::verify::document_in_checkpoint_file(file)?;
    agentkeys_attestation::decode_unverified(&document)
        .ok()
        .map(|d| d.timestamp_ms)
}

/// `agentkeys-broker audit verify`: prints the report; the exit code says whether it passed.
pub async fn run_verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let anchor = match (&args.root, args.allow_mock_root) {
        (None, _) => agentkeys_attestation::TrustAnchor::aws_nitro_root_g1(),
        (Some(p), allow_mock) => {
            let pem = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
            crate::cli::trust::anchor_from_pem(&pem, allow_mock).map_err(anyhow::Error::msg)?
        }
    };
    let db = match &args.db {
        AuditDb::Sqlite(path) => path.clone(),
        AuditDb::Postgres { url, .. } => return run_verify_pg(&args, url, &anchor).await,
    };
    if args.broker_url.len() > 1 {
        anyhow::bail!("a SQLite log has one enclave chain at a time: give one --broker-url");
    }
    let report = match (args.broker_url.first(), &args.checkpoint) {
        (Some(url), _) => {
            let cp = fetch_attested_checkpoint(&args, url, &anchor).await?;
            verify_chain(&db, Some(&cp))?
        }
        (None, Some(path)) => {
            let policy = agentkeys_attestation::Policy {
                expected_pcrs: checkpoint_pcrs(&args)?,
                ..Default::default()
            };
            let trust = CheckpointTrust {
                anchor: &anchor,
                policy: &policy,
                at_unix_ms: checkpoint_time(args.at.as_deref(), path)?,
            };
            verify_with_trust(&db, Some(path), Some(&trust))?
        }
        (None, None) => {
            if args.measurements.is_some() || args.no_pcr_policy || args.at.is_some() {
                anyhow::bail!(
                    "--measurements, --no-pcr-policy and --at apply to a checkpoint: give --checkpoint FILE or --broker-url URL"
                );
            }
            verify(&db, None)?
        }
    };
    let mut report = report;
    if !args.cloudtrail.is_empty() {
        let boots = crate::audit::verify::cloudtrail::boots_in_log(&db)?;
        check_cloudtrail(&args, &boots, &mut report)?;
    }
    if !args.tokens.is_empty() {
        check_found_tokens(&args, &db, &mut report)?;
    }
    Ok(print_report(&report))
}

/// Prints the report; the exit code says whether it passed.
fn print_report(report: &VerifyReport) -> ExitCode {
    print!("{}", report.render());
    if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A fresh checkpoint from the broker at `url`, its attestation document verified against
/// `anchor`, the PCR policy and a nonce of ours.
async fn fetch_attested_checkpoint(
    args: &VerifyArgs,
    url: &str,
    anchor: &agentkeys_attestation::TrustAnchor,
) -> anyhow::Result<agentkeys_wire::CheckpointStatement> {
    let expected_pcrs = checkpoint_pcrs(args)?;
    let nonce: [u8; 32] = rand::random();
    let fetched = crate::cli::creds::fetch_checkpoint(url, &nonce).await?;
    let policy = agentkeys_attestation::Policy {
        nonce: Some(nonce.to_vec()),
        expected_pcrs,
        ..Default::default()
    };
    let trust = CheckpointTrust {
        anchor,
        policy: &policy,
        at_unix_ms: agentkeys_attestation::now_unix_ms(),
    };
    let cp = crate::audit::verify::checkpoint_from_json(&fetched, Some(&trust))?;
    eprintln!(
        "enclave checkpoint (attested, fresh nonce): epoch {} seq {} module {} (from {url})",
        cp.epoch, cp.seq, cp.module_id
    );
    Ok(cp)
}

/// `audit verify --db postgres://…`: every chain, against the checkpoints of every
/// `--broker-url` (and `--checkpoint`).
async fn run_verify_pg(
    args: &VerifyArgs,
    url: &PgUrl,
    anchor: &agentkeys_attestation::TrustAnchor,
) -> anyhow::Result<ExitCode> {
    let mut checkpoints = Vec::new();
    for broker in &args.broker_url {
        checkpoints.push(fetch_attested_checkpoint(args, broker, anchor).await?);
    }
    if let Some(path) = &args.checkpoint {
        let policy = agentkeys_attestation::Policy {
            expected_pcrs: checkpoint_pcrs(args)?,
            ..Default::default()
        };
        let trust = CheckpointTrust {
            anchor,
            policy: &policy,
            at_unix_ms: checkpoint_time(args.at.as_deref(), path)?,
        };
        checkpoints.push(load_checkpoint(path, Some(&trust))?);
    } else if checkpoints.is_empty()
        && (args.measurements.is_some() || args.no_pcr_policy || args.at.is_some())
    {
        anyhow::bail!(
            "--measurements, --no-pcr-policy and --at apply to a checkpoint: give --checkpoint FILE or --broker-url URL"
        );
    }
    let mut report = crate::audit::verify::verify_pg(url, &checkpoints).await?;
    if !args.cloudtrail.is_empty() {
        // One key, one trail: the boots of every chain answer for the fleet's unseals.
        let by_chain = crate::audit::verify::postgres::boots_in_pg(url).await?;
        for (chain, boots) in &by_chain {
            eprintln!("cloudtrail: chain {chain}: {} enclave boots", boots.len());
        }
        let boots = by_chain.into_values().flatten().collect();
        check_cloudtrail(args, &boots, &mut report)?;
    }
    if !args.tokens.is_empty() {
        let (tokens, jwks) = found_tokens(args)?;
        let accounted =
            crate::audit::verify::postgres::check_tokens_pg(url, &tokens, &jwks, &mut report)
                .await?;
        eprintln!(
            "tokens: {accounted} of {} found tokens have their row",
            tokens.len()
        );
    }
    Ok(print_report(&report))
}

/// Adds a failure for every attested unseal in the CloudTrail files whose enclave has no
/// boot among `boots` (the module ids of the log's `enclave_unsealed` rows).
fn check_cloudtrail(
    args: &VerifyArgs,
    boots: &std::collections::BTreeSet<String>,
    report: &mut VerifyReport,
) -> anyhow::Result<()> {
    use crate::audit::verify::cloudtrail::{attested_unseals, hidden_boots};
    let key = args
        .kms_key_arn
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--cloudtrail needs --kms-key-arn"))?;
    agentkeys_wire::KmsKeyArn::parse(key).map_err(|e| anyhow::anyhow!("--kms-key-arn: {e}"))?;
    let mut unseals = Vec::new();
    for file in &args.cloudtrail {
        unseals.extend(attested_unseals(file, key)?);
    }
    eprintln!(
        "cloudtrail: {} attested unseals of {key}; {} enclave boots in the log",
        unseals.len(),
        boots.len()
    );
    for hidden in hidden_boots(&unseals, boots) {
        report.failures.push(VerifyFailure::HiddenBoot {
            module_id: hidden.module_id,
            operation: hidden.operation,
            time: hidden.time,
        });
    }
    Ok(())
}

/// Adds a failure for every token in the --token files that is not accounted for by its
/// row.
fn check_found_tokens(
    args: &VerifyArgs,
    db: &Path,
    report: &mut VerifyReport,
) -> anyhow::Result<()> {
    let (tokens, jwks) = found_tokens(args)?;
    let accounted = crate::audit::verify::tokens::check_tokens(db, &tokens, &jwks, report)?;
    eprintln!(
        "tokens: {accounted} of {} found tokens have their row",
        tokens.len()
    );
    Ok(())
}

/// The tokens of every --token file, and the --jwks keys to check them with.
fn found_tokens(
    args: &VerifyArgs,
) -> anyhow::Result<(
    Vec<crate::audit::verify::tokens::FoundToken>,
    Vec<agentkeys_attestation::jwks::Jwk>,
)> {
    use crate::audit::verify::tokens::read_tokens;
    let jwks_path = args
        .jwks
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--token needs --jwks FILE"))?;
    let jwks_bytes = std::fs::read(jwks_path)
        .map_err(|e| anyhow::anyhow!("--jwks: cannot read {}: {e}", jwks_path.display()))?;
    let jwks = agentkeys_attestation::jwks::parse_jwks(&jwks_bytes)
        .map_err(|e| anyhow::anyhow!("--jwks {}: {e}", jwks_path.display()))?;
    let mut tokens = Vec::new();
    for file in &args.tokens {
        tokens.extend(read_tokens(file)?);
    }
    Ok((tokens, jwks))
}

/// The last `n` rows, oldest first.
pub fn recent_rows(db: &Path, n: usize) -> Result<Vec<AuditRow>, AuditCliError> {
    let sql_err = |source| AuditCliError::Sqlite {
        path: db.to_path_buf(),
        source,
    };
    let (conn, version) = crate::audit::verify::open_log(db)?;
    let limit = i64::try_from(n).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {} FROM audit_log ORDER BY id DESC LIMIT ?1",
            row_columns(version)
        ))
        .map_err(sql_err)?;
    let mut rows = stmt.query([limit]).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(sql_err)? {
        out.push(row_from_sql(r).map_err(sql_err)??);
    }
    out.reverse();
    Ok(out)
}

/// The last `n` rows of all chains of a PostgreSQL log, oldest first, each with its chain.
pub fn recent_rows_pg(url: &PgUrl, n: usize) -> Result<Vec<(String, AuditRow)>, AuditCliError> {
    // A runtime of its own on a thread of its own (made and dropped there): the caller
    // may itself run on an async runtime.
    let rows = std::thread::scope(|s| {
        s.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(AuditCliError::Runtime)?;
            Ok::<_, AuditCliError>(
                runtime.block_on(crate::audit::verify::postgres::recent_rows_pg(url, n))?,
            )
        })
        .join()
    })
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
    rows.into_iter()
        .map(|(chain, row)| Ok((chain, row?)))
        .collect()
}

/// `audit tail --db DB [-n N] [--json]`: the last `n` rows as a table, or as JSON lines.
/// `DB` is a SQLite path (`sqlite:PATH` or a bare path) or a `postgres://` URL; the rows of
/// a PostgreSQL log come from every host's chain, ordered by time, each naming its chain
/// (`chain` in JSON; its `id` is the row's place in that chain).
pub fn tail(db: &Path, n: usize, json: bool) -> Result<String, AuditCliError> {
    let pg = match db.to_str().map(AuditDb::parse) {
        Some(Ok(AuditDb::Postgres { url, .. })) => Some(url),
        Some(Err(e)) => return Err(e.into()),
        Some(Ok(AuditDb::Sqlite(_))) | None => None,
    };
    let (rows, chains): (Vec<AuditRow>, Option<Vec<String>>) = match pg {
        Some(url) => {
            let (chains, rows) = recent_rows_pg(&url, n)?.into_iter().unzip();
            (rows, Some(chains))
        }
        None => {
            let path = match db.to_str().map(AuditDb::parse) {
                Some(Ok(AuditDb::Sqlite(p))) => p,
                _ => db.to_path_buf(),
            };
            (recent_rows(&path, n)?, None)
        }
    };
    if json {
        let mut out = String::new();
        for (i, r) in rows.iter().enumerate() {
            // Serializing plain strings and numbers cannot fail.
            let mut v = serde_json::to_value(r.to_json()).unwrap_or_default();
            if let (Some(chains), Some(obj)) = (&chains, v.as_object_mut()) {
                obj.insert("chain".into(), chains[i].clone().into());
            }
            out.push_str(&v.to_string());
            out.push('\n');
        }
        return Ok(out);
    }
    Ok(render(&rows, chains.as_deref()))
}

fn short(h: &Option<[u8; 32]>) -> String {
    h.map(|h| hex::encode(&h[..6]))
        .unwrap_or_else(|| "-".into())
}

fn fmt_ts(ts_ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_ms) * 1_000_000);
    match t {
        Ok(t) => t
            .format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .unwrap_or_else(|_| ts_ms.to_string()),
        Err(_) => ts_ms.to_string(),
    }
}

/// Renders rows as an aligned table.
pub fn render_table(rows: &[AuditRow]) -> String {
    render(rows, None)
}

/// Renders rows as an aligned table; with `chains` (one per row), a CHAIN column first.
fn render(rows: &[AuditRow], chains: Option<&[String]>) -> String {
    let mut header = vec![
        "ID",
        "TIME (UTC)",
        "EVENT",
        "OUTCOME",
        "STATUS",
        "WALLET",
        "EPOCH:SEQ",
        "JWT",
        "BEARER",
        "ROW_HASH",
        "DETAIL",
    ];
    if chains.is_some() {
        header.insert(0, "CHAIN");
    }
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for (i, r) in rows.iter().enumerate() {
        let mut line = vec![
            r.id.to_string(),
            fmt_ts(r.ts_ms),
            r.entry.event.to_string(),
            r.entry.outcome.to_string(),
            r.entry.status.map_or("-".into(), |s| s.to_string()),
            r.entry.wallet.clone().unwrap_or_else(|| "-".into()),
            match (r.entry.enclave_epoch, r.entry.enclave_seq) {
                (Some(e), Some(s)) => format!("{e}:{s}"),
                _ => "-".into(),
            },
            short(&r.entry.jwt_sha256),
            short(&r.entry.bearer_sha256),
            hex::encode(&r.row_hash[..6]),
            r.entry.detail.replace(['\n', '\r', '\t'], " "),
        ];
        if let Some(chains) = chains {
            line.insert(0, chains.get(i).cloned().unwrap_or_default());
        }
        table.push(line);
    }
    let cols = header.len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            table
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &table {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == cols {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no rows)\n");
    }
    out
}
