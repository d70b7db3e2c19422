//! Where the audit log lives: `--audit-db` as `sqlite:PATH`, a bare path (SQLite), or a
//! `postgres://` / `postgresql://` URL.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use super::postgres::tls::{split_tls, PgTls};
use super::postgres::PgAuditStore;
use super::sqlite::{AuditStats, SqliteAuditStore};
use super::{AuditError, AuditStore, GroupCommitConfig};

/// The URL schemes that select the PostgreSQL store (those libpq accepts).
const POSTGRES_SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

/// The prefix that names a SQLite path explicitly.
const SQLITE_PREFIX: &str = "sqlite:";

/// The longest chain id accepted: it is stored in every row and printed in every report,
/// so a host name's length (RFC 1035 gives 253 for a full name) is plenty.
pub const MAX_CHAIN_ID_LEN: usize = 253;

/// A value of `--audit-db` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditDbError {
    /// Empty value.
    #[error("--audit-db is empty: give a SQLite path or a postgres:// URL")]
    Empty,
    /// `sqlite:` with nothing after it.
    #[error("--audit-db sqlite: names no file")]
    EmptySqlitePath,
    /// The PostgreSQL URL does not parse (the message never repeats the URL, which may
    /// hold a password).
    #[error("--audit-db: malformed PostgreSQL URL {redacted}: {reason}")]
    MalformedUrl {
        /// The URL with its password replaced.
        redacted: String,
        /// What the parser said.
        reason: String,
    },
    /// The URL names no database user (PostgreSQL needs one).
    #[error("--audit-db: the PostgreSQL URL {redacted} names no user (postgres://USER[:PASSWORD]@HOST/DB)")]
    NoUser {
        /// The URL with its password replaced.
        redacted: String,
    },
    /// A chain id that cannot be used.
    #[error("audit chain id {0:?} is not valid: give 1 to 253 printable ASCII characters without spaces (--audit-chain)")]
    BadChainId(String),
    /// An `sslmode` this build does not take.
    #[error("--audit-db {redacted}: sslmode={value:?} is not supported: use verify-full (recommended), verify-ca, require or disable (prefer and allow fall back to plain TCP without saying so)")]
    SslMode {
        /// The URL with its password replaced.
        redacted: String,
        /// The value given.
        value: String,
    },
    /// A TLS mode that verifies the server without a CA file to verify it against.
    #[error("--audit-db {redacted}: sslmode={mode} needs sslrootcert=PATH, the PEM file of the CA that issued the server's certificate (for RDS and Aurora, the region's bundle AWS publishes)")]
    NoRootCert {
        /// The URL with its password replaced.
        redacted: String,
        /// The mode.
        mode: &'static str,
    },
    /// The `sslrootcert` file cannot be used.
    #[error("--audit-db sslrootcert={}: {reason}", path.display())]
    RootCert {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A libpq TLS parameter this build does not support (client certificates, CRLs).
    #[error("--audit-db {redacted}: the parameter {param} is not supported (client certificates and revocation lists are not; the broker authenticates with a password)")]
    UnsupportedTlsParam {
        /// The URL with its password replaced.
        redacted: String,
        /// The parameter.
        param: String,
    },
}

/// A PostgreSQL connection URL, kept with a redacted form for messages and reports.
#[derive(Clone)]
pub struct PgUrl {
    /// Shared: a configuration is several hundred bytes and never changes once parsed.
    config: Arc<tokio_postgres::Config>,
    redacted: String,
    tls: PgTls,
}

impl PgUrl {
    /// Parses a `postgres://` or `postgresql://` URL.
    pub fn parse(url: &str) -> Result<PgUrl, AuditDbError> {
        let redacted = redact(url);
        // URL schemes are case-insensitive (RFC 3986); the driver accepts lower case only.
        let normalized = match url.split_once("://") {
            Some((scheme, rest)) => format!("{}://{rest}", scheme.to_ascii_lowercase()),
            None => url.to_string(),
        };
        let (normalized, tls) = split_tls(&normalized, &redacted)?;
        let mut config = tokio_postgres::Config::from_str(&normalized).map_err(|e| {
            AuditDbError::MalformedUrl {
                redacted: redacted.clone(),
                reason: e.to_string(),
            }
        })?;
        config.ssl_mode(tls.driver_mode());
        if config.get_hosts().is_empty() {
            return Err(AuditDbError::MalformedUrl {
                redacted,
                reason: "no host".into(),
            });
        }
        if config.get_user().is_none() {
            return Err(AuditDbError::NoUser { redacted });
        }
        Ok(PgUrl {
            config: Arc::new(config),
            redacted,
            tls,
        })
    }

    /// The driver's connection configuration.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The TLS settings (`sslmode`, `sslrootcert`).
    pub fn tls(&self) -> &PgTls {
        &self.tls
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// `url` with the password of its userinfo replaced by `***`, and the whole userinfo
/// replaced when it cannot be split safely.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".into();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        None => url.to_string(),
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => format!("{scheme}://{userinfo}@{host}{tail}"),
        },
    }
}

/// Which store holds the audit log.
#[derive(Clone, Debug)]
pub enum AuditDb {
    /// A SQLite file (one host).
    Sqlite(PathBuf),
    /// A PostgreSQL database shared by a fleet. `chain` names this broker's own row chain
    /// (one per host); it is filled from `--audit-chain` (or the host name) when the
    /// configuration is validated, and empty straight out of [`AuditDb::parse`].
    Postgres {
        /// Where to connect.
        url: PgUrl,
        /// This broker's row chain.
        chain: String,
    },
}

impl AuditDb {
    /// Parses `--audit-db`: `sqlite:PATH`, `postgres://…`, `postgresql://…`, or a bare
    /// path (SQLite, as before PostgreSQL was supported).
    pub fn parse(value: &str) -> Result<AuditDb, AuditDbError> {
        if value.is_empty() {
            return Err(AuditDbError::Empty);
        }
        if let Some(path) = value.strip_prefix(SQLITE_PREFIX) {
            if path.is_empty() {
                return Err(AuditDbError::EmptySqlitePath);
            }
            return Ok(AuditDb::Sqlite(PathBuf::from(path)));
        }
        let lower = value.get(..POSTGRES_SCHEMES[1].len()).unwrap_or(value);
        if POSTGRES_SCHEMES
            .iter()
            .any(|s| lower.to_ascii_lowercase().starts_with(s))
        {
            return Ok(AuditDb::Postgres {
                url: PgUrl::parse(value)?,
                chain: String::new(),
            });
        }
        Ok(AuditDb::Sqlite(PathBuf::from(value)))
    }

    /// The SQLite path, when the log is a SQLite file.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            AuditDb::Sqlite(p) => Some(p),
            AuditDb::Postgres { .. } => None,
        }
    }

    /// Sets the chain id of a PostgreSQL log (checked with [`check_chain_id`]); a SQLite
    /// log has one chain and ignores it.
    pub fn with_chain(self, chain: &str) -> Result<AuditDb, AuditDbError> {
        match self {
            AuditDb::Sqlite(p) => Ok(AuditDb::Sqlite(p)),
            AuditDb::Postgres { url, .. } => Ok(AuditDb::Postgres {
                url,
                chain: check_chain_id(chain)?.to_string(),
            }),
        }
    }
}

impl fmt::Display for AuditDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditDb::Sqlite(p) => write!(f, "{}", p.display()),
            AuditDb::Postgres { url, .. } => write!(f, "{url}"),
        }
    }
}

impl FromStr for AuditDb {
    type Err = AuditDbError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AuditDb::parse(s)
    }
}

impl From<PathBuf> for AuditDb {
    fn from(path: PathBuf) -> Self {
        AuditDb::Sqlite(path)
    }
}

/// Checks a chain id: 1 to [`MAX_CHAIN_ID_LEN`] printable ASCII characters, no spaces.
pub fn check_chain_id(chain: &str) -> Result<&str, AuditDbError> {
    let ok = !chain.is_empty()
        && chain.len() <= MAX_CHAIN_ID_LEN
        && chain.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(chain)
    } else {
        Err(AuditDbError::BadChainId(chain.to_string()))
    }
}

/// Where Linux keeps the host name (the default chain id).
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

/// The default chain id: this machine's host name, when it can be read.
pub fn default_chain_id() -> Option<String> {
    std::fs::read_to_string(HOSTNAME_FILE)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| check_chain_id(s).is_ok())
}

/// The store a broker writes to, as opened from an [`AuditDb`].
#[derive(Clone, Debug)]
pub enum AuditBackend {
    /// The SQLite store.
    Sqlite(Arc<SqliteAuditStore>),
    /// The PostgreSQL store.
    Postgres(Arc<PgAuditStore>),
}

impl AuditBackend {
    /// Opens the store `db` names (PostgreSQL: connects, checks durability, migrates, locks
    /// the chain; see [`PgAuditStore::open`]).
    pub async fn open(db: &AuditDb, config: GroupCommitConfig) -> Result<AuditBackend, AuditError> {
        match db {
            AuditDb::Sqlite(path) => Ok(AuditBackend::Sqlite(Arc::new(SqliteAuditStore::open(
                path, config,
            )?))),
            AuditDb::Postgres { url, chain } => Ok(AuditBackend::Postgres(Arc::new(
                PgAuditStore::open(url, chain, config).await?,
            ))),
        }
    }

    /// The store as the handlers use it.
    pub fn store(&self) -> Arc<dyn AuditStore> {
        match self {
            AuditBackend::Sqlite(s) => s.clone(),
            AuditBackend::Postgres(s) => s.clone(),
        }
    }

    /// Commit counters.
    pub fn stats(&self) -> AuditStats {
        match self {
            AuditBackend::Sqlite(s) => s.stats(),
            AuditBackend::Postgres(s) => s.stats(),
        }
    }

    /// Stops the writer once it has answered what is queued (SQLite: waits for it).
    pub fn close(&self) {
        match self {
            AuditBackend::Sqlite(s) => s.close(),
            AuditBackend::Postgres(s) => s.close(),
        }
    }

    /// [`close`](Self::close), waiting at most `grace` for the PostgreSQL writer too.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        match self {
            AuditBackend::Sqlite(s) => s.close(),
            AuditBackend::Postgres(s) => s.shutdown(grace).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_paths_and_sqlite_prefix_are_sqlite() {
        for (value, path) in [
            ("agentkeys-audit.db", "agentkeys-audit.db"),
            ("/var/lib/a.db", "/var/lib/a.db"),
            ("sqlite:/var/lib/a.db", "/var/lib/a.db"),
            ("sqlite:rel.db", "rel.db"),
        ] {
            let db = AuditDb::parse(value).unwrap();
            assert_eq!(db.sqlite_path(), Some(Path::new(path)), "{value}");
        }
        assert_eq!(
            AuditDb::parse("sqlite:").unwrap_err(),
            AuditDbError::EmptySqlitePath
        );
        assert_eq!(AuditDb::parse("").unwrap_err(), AuditDbError::Empty);
    }

    #[test]
    fn postgres_urls_parse_and_hide_their_password() {
        for scheme in ["postgres", "postgresql", "POSTGRES"] {
            let value = format!("{scheme}://broker:s3cret@db.example:5433/audit?connect_timeout=3");
            let db = AuditDb::parse(&value).unwrap();
            let AuditDb::Postgres { url, chain } = &db else {
                panic!("{value} is not postgres: {db:?}");
            };
            assert!(chain.is_empty());
            assert_eq!(url.config().get_user(), Some("broker"));
            assert_eq!(url.config().get_dbname(), Some("audit"));
            assert_eq!(url.config().get_ports(), [5433]);
            for shown in [
                db.to_string(),
                format!("{db:?}"),
                url.redacted().to_string(),
            ] {
                assert!(!shown.contains("s3cret"), "{shown}");
                assert!(
                    shown.contains("broker:***@db.example:5433/audit"),
                    "{shown}"
                );
            }
        }
    }

    #[test]
    fn malformed_postgres_urls_are_named_without_the_password() {
        let e = AuditDb::parse("postgres://u:pw@h:notaport/db").unwrap_err();
        assert!(matches!(e, AuditDbError::MalformedUrl { .. }), "{e:?}");
        let m = e.to_string();
        assert!(m.contains("malformed PostgreSQL URL"), "{m}");
        assert!(!m.contains(":pw@"), "{m}");
        let e = AuditDb::parse("postgres://h/db").unwrap_err();
        assert!(matches!(e, AuditDbError::NoUser { .. }), "{e:?}");
    }

    #[test]
    fn chain_ids_are_checked() {
        let db = AuditDb::parse("postgres://u@h/db").unwrap();
        let db = db.with_chain("host-a.eu-west-1").unwrap();
        assert!(matches!(&db, AuditDb::Postgres { chain, .. } if chain == "host-a.eu-west-1"));
        for bad in ["", "a b", "tab\t", &"x".repeat(MAX_CHAIN_ID_LEN + 1), "é"] {
            assert!(
                matches!(check_chain_id(bad), Err(AuditDbError::BadChainId(_))),
                "{bad:?}"
            );
        }
        // SQLite has one chain: the id does not matter.
        assert!(AuditDb::parse("a.db").unwrap().with_chain("").is_ok());
    }

    #[test]
    fn redaction_keeps_what_has_no_password() {
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("nonsense"), "<not a URL>");
    }
}
