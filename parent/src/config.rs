//! Broker configuration: command-line flags with `BROKER_*` environment mirrors, and the
//! validation that turns them into a [`BrokerConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::audit::db::{default_chain_id, AuditDb, AuditDbError};

/// Lower bound of the JWT lifetime (`docs/architecture.md`, "Tokens": TTL in [60, 3600]).
pub const JWT_TTL_MIN_SECONDS: u32 = 60;
/// Upper bound of the JWT lifetime (`docs/architecture.md`, "Tokens").
pub const JWT_TTL_MAX_SECONDS: u32 = 3600;
/// Lower bound of the STS session duration (AWS STS `DurationSeconds` minimum).
pub const STS_DURATION_MIN_SECONDS: u32 = 900;
/// Upper bound of the STS session duration (AWS STS `DurationSeconds` maximum, 12 h).
pub const STS_DURATION_MAX_SECONDS: u32 = 43_200;
/// Role name used when only `ACCOUNT_ID` is known (`docs/operations.md`, `--role-arn`).
pub const DEFAULT_ROLE_NAME: &str = "agentkeys-data-role";

/// Default time a client has to send a complete request head (request line and headers),
/// and the idle time after which a keep-alive connection is closed, in milliseconds.
/// hyper's default is 30 s and nginx's `client_header_timeout` 60 s, both sized for
/// browsers on slow links; the broker's clients are programs sending a few hundred bytes
/// in one segment, so 10 s (twice the longest upstream timeout, the enclave's and STS's
/// 5 s) leaves a wide margin while cutting slowloris connections 3-6 times sooner.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Default time a client has to send the whole request body once its headers arrived, in
/// milliseconds. Bodies are at most `--body-limit-bytes` (16 KiB by default): 10 s is a
/// rate floor of 1.6 KB/s for the largest body (Apache `mod_reqtimeout`'s default body
/// rule is 20 s extended at 500 B/s; the broker's bodies are 2-3 orders of magnitude
/// smaller than what that rule is sized for).
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 10_000;
/// Default cap on open client connections. 4096 is Linux's default `net.core.somaxconn`
/// (since 5.4), i.e. the kernel's own queue size for connections not yet accepted; with
/// the 64 KiB head buffer below the worst case is about 256 MiB of read buffers. It needs
/// an open-file limit above it (the broker raises its soft `RLIMIT_NOFILE` to fit, up to
/// the hard limit, and says so when it cannot).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default largest request head (request line plus headers) in bytes: hyper's read
/// buffer limit (`max_buf_size`). hyper's default is about 400 KiB; nginx answers 431/400
/// above 4 × 8 KiB (`large_client_header_buffers`), and the longest legitimate header the
/// broker sees is a 4 KiB bearer, so 64 KiB is generous. Larger heads get 431.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Smallest head buffer hyper accepts (`http1::Builder::max_buf_size` panics below it).
pub const MIN_HEADER_BYTES: usize = 8 * 1024;
/// Largest value accepted for the header and body read timeouts: 5 minutes. A larger
/// value would let a handful of slow clients hold connections for as long as they like.
pub const MAX_READ_TIMEOUT_MS: u64 = 300_000;
/// Smallest value accepted for the header and body read timeouts: below 100 ms a client
/// on a normal network could not make it.
pub const MIN_READ_TIMEOUT_MS: u64 = 100;
/// Largest connection cap accepted (a sanity bound: beyond one million, file descriptors
/// and memory run out first).
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;

/// How `/v1/mint-aws-creds` obtains credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StsMode {
    /// `AssumeRoleWithWebIdentity` with the enclave-signed JWT; no parent credentials.
    WebIdentity,
    /// Plain `AssumeRole` with the parent's own credentials (the seed broker's mode).
    AssumeRole,
}

/// Flags of `agentkeys-broker serve`.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// OIDC issuer URL (`iss`); `https://`, or loopback `http://` with `--dev-mode`.
    #[arg(long, env = "BROKER_OIDC_ISSUER")]
    pub issuer: String,
    /// Address to listen on.
    #[arg(long, env = "BROKER_BIND", default_value = "127.0.0.1:8091")]
    pub bind: SocketAddr,
    /// Session backend base URL (`GET {url}/session/validate`).
    #[arg(long, env = "BROKER_BACKEND_URL")]
    pub backend_url: String,
    /// Enclave address: `vsock:CID:PORT` or `unix:PATH`.
    #[arg(long, env = "BROKER_ENCLAVE_ADDR", default_value = "vsock:16:5000")]
    pub enclave: String,
    /// Persistent multiplexed connections to the enclave.
    #[arg(long, env = "BROKER_ENCLAVE_CONNECTIONS", default_value_t = 4)]
    pub enclave_connections: usize,
    /// Timeout of one enclave call, in milliseconds.
    #[arg(long, env = "BROKER_ENCLAVE_TIMEOUT_MS", default_value_t = 5000)]
    pub enclave_timeout_ms: u64,
    /// How often the supervisor polls the enclave's status, in milliseconds.
    #[arg(long, env = "BROKER_SUPERVISE_INTERVAL_MS", default_value_t = 1000)]
    pub supervise_interval_ms: u64,
    /// Requested JWT lifetime in seconds, bounded [60, 3600].
    #[arg(long, env = "BROKER_OIDC_JWT_TTL_SECONDS", default_value_t = 300)]
    pub jwt_ttl_seconds: u32,
    /// Role for `/v1/mint-aws-creds`. Falls back to `BROKER_AGENT_ROLE_ARN`, then
    /// `arn:aws:iam::$ACCOUNT_ID:role/agentkeys-data-role`.
    #[arg(long, env = "BROKER_DATA_ROLE_ARN")]
    pub role_arn: Option<String>,
    /// STS session duration in seconds, bounded [900, 43200].
    #[arg(long, env = "BROKER_STS_DURATION_SECONDS", default_value_t = 3600)]
    pub sts_duration_seconds: u32,
    /// STS mode.
    #[arg(
        long,
        env = "BROKER_STS_MODE",
        value_enum,
        default_value = "web-identity"
    )]
    pub sts_mode: StsMode,
    /// STS endpoint override (e.g. a regional or local endpoint).
    #[arg(long, env = "BROKER_STS_ENDPOINT")]
    pub sts_endpoint: Option<String>,
    /// STS region.
    #[arg(long, env = "BROKER_STS_REGION", default_value = "us-east-1")]
    pub sts_region: String,
    /// Timeout of one STS call, in milliseconds.
    #[arg(long, env = "BROKER_STS_TIMEOUT_MS", default_value_t = 5000)]
    pub sts_timeout_ms: u64,
    /// Timeout of one session-backend call, in milliseconds.
    #[arg(long, env = "BROKER_BACKEND_TIMEOUT_MS", default_value_t = 2000)]
    pub backend_timeout_ms: u64,
    /// Seconds a validated bearer is remembered (keyed by its SHA-256); 0 disables.
    #[arg(long, env = "BROKER_SESSION_CACHE_SECONDS", default_value_t = 30)]
    pub session_cache_seconds: u64,
    /// Audit log: a SQLite path (`sqlite:PATH` or a bare path; one host), or a
    /// `postgres://USER:PASSWORD@HOST:PORT/DB` URL (a fleet sharing one log; see
    /// docs/fleet.md).
    #[arg(
        long,
        env = "BROKER_AUDIT_DB",
        default_value = "agentkeys-audit.db",
        value_parser = AuditDb::parse
    )]
    pub audit_db: AuditDb,
    /// This host's row chain in a PostgreSQL audit log (default: the host name). Every
    /// host of a fleet needs its own; ignored for SQLite.
    #[arg(long, env = "BROKER_AUDIT_CHAIN", value_name = "ID")]
    pub audit_chain: Option<String>,
    /// Sealed seed file (KMS `CiphertextBlob`), created on genesis with mode 0600.
    #[arg(
        long,
        env = "BROKER_SEALED_SEED_PATH",
        default_value = "sealed-seed.bin"
    )]
    pub sealed_seed: PathBuf,
    /// The KMS key ARN the enclave image is pinned to (its `--kms-key-arn`):
    /// `arn:aws:kms:REGION:ACCOUNT:key/KEY-ID`, not an alias. The enclave refuses any other.
    #[arg(long, env = "BROKER_KMS_KEY_ID", value_name = "KEY_ARN")]
    pub kms_key_id: String,
    /// KMS region; defaults to the key ARN's region, and must equal it when given.
    #[arg(long, env = "BROKER_KMS_REGION")]
    pub kms_region: Option<String>,
    /// KMS endpoint override (accepted by the enclave only in mock mode).
    #[arg(long, env = "BROKER_KMS_ENDPOINT")]
    pub kms_endpoint: Option<String>,
    /// Access key id lent to the enclave for KMS; default: the AWS default provider chain.
    #[arg(long, env = "BROKER_KMS_ACCESS_KEY_ID")]
    pub kms_access_key_id: Option<String>,
    /// Secret access key lent to the enclave for KMS (with `--kms-access-key-id`).
    #[arg(long, env = "BROKER_KMS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub kms_secret_access_key: Option<String>,
    /// Session token lent to the enclave for KMS.
    #[arg(long, env = "BROKER_KMS_SESSION_TOKEN", hide_env_values = true)]
    pub kms_session_token: Option<String>,
    /// TLS certificate chain (PEM); with `--tls-key` the broker serves HTTPS.
    #[arg(long, env = "BROKER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "BROKER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Maximum request body size in bytes (larger bodies get 413).
    #[arg(long, env = "BROKER_BODY_LIMIT_BYTES", default_value_t = 16 * 1024)]
    pub body_limit_bytes: usize,
    /// `max-age` of the JWKS `Cache-Control` header, in seconds.
    #[arg(long, env = "BROKER_JWKS_MAX_AGE_SECONDS", default_value_t = 300)]
    pub jwks_max_age_seconds: u64,
    /// HTTP limits of the listener.
    #[command(flatten)]
    pub http: HttpLimitArgs,
    /// The issuer listener, relayed to the enclave's TLS endpoint.
    #[command(flatten)]
    pub issuer_tls: crate::relay::config::IssuerListenArgs,
    /// A TLS-terminating proxy is in front: allows a non-loopback bind without TLS.
    #[arg(long, env = "BROKER_BEHIND_TLS_PROXY")]
    pub behind_tls_proxy: bool,
    /// Development mode: allows a loopback `http://` issuer.
    #[arg(long, env = "BROKER_DEV_MODE")]
    pub dev_mode: bool,
}

/// Flags for the limits of the HTTP listener (shared by `serve`; the dev stack uses the
/// defaults).
#[derive(Clone, Debug, Args)]
pub struct HttpLimitArgs {
    /// Time a client has to send a complete request head, and the idle time after which
    /// a keep-alive connection is closed, in milliseconds. Slower clients are disconnected
    /// (no answer: the request never arrived).
    #[arg(long, env = "BROKER_HEADER_READ_TIMEOUT_MS", default_value_t = DEFAULT_HEADER_READ_TIMEOUT_MS)]
    pub header_read_timeout_ms: u64,
    /// Time a client has to send the whole request body after its headers, in
    /// milliseconds; slower bodies get 408 `request_timeout`.
    #[arg(long, env = "BROKER_BODY_READ_TIMEOUT_MS", default_value_t = DEFAULT_BODY_READ_TIMEOUT_MS)]
    pub body_read_timeout_ms: u64,
    /// Most client connections open at once. Further connections wait in the kernel's
    /// accept queue until one closes (idle ones close after the header read timeout).
    #[arg(long, env = "BROKER_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Largest request head (request line and headers) in bytes; larger heads get 431.
    #[arg(long, env = "BROKER_MAX_HEADER_BYTES", default_value_t = DEFAULT_MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,
}

impl Default for HttpLimitArgs {
    fn default() -> Self {
        HttpLimitArgs {
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT_MS,
            body_read_timeout_ms: DEFAULT_BODY_READ_TIMEOUT_MS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

/// The validated limits of the HTTP listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time to receive a request head; also the keep-alive idle timeout and the TLS
    /// handshake timeout.
    pub header_read_timeout: Duration,
    /// Time to receive a request body once the head arrived.
    pub body_read_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Largest request head, in bytes.
    pub max_header_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_millis(DEFAULT_HEADER_READ_TIMEOUT_MS),
            body_read_timeout: Duration::from_millis(DEFAULT_BODY_READ_TIMEOUT_MS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

impl HttpLimitArgs {
    /// Validates the HTTP limits: timeouts in [100 ms, 5 min], a connection cap in
    /// [1, 1 000 000], a head limit of at least 8 KiB.
    pub fn validate(&self) -> Result<HttpLimits, ConfigError> {
        check_range(
            "--header-read-timeout-ms",
            self.header_read_timeout_ms,
            MIN_READ_TIMEOUT_MS,
            MAX_READ_TIMEOUT_MS,
        )?;
        check_range(
            "--body-read-timeout-ms",
            self.body_read_timeout_ms,
            MIN_READ_TIMEOUT_MS,
            MAX_READ_TIMEOUT_MS,
        )?;
        check_range(
            "--max-connections",
            self.max_connections as u64,
            1,
            MAX_MAX_CONNECTIONS as u64,
        )?;
        check_range(
            "--max-header-bytes",
            self.max_header_bytes as u64,
            MIN_HEADER_BYTES as u64,
            u32::MAX as u64,
        )?;
        Ok(HttpLimits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            max_connections: self.max_connections,
            max_header_bytes: self.max_header_bytes,
        })
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The issuer is not a URL.
    #[error("issuer {issuer:?} is not a URL: {reason}")]
    IssuerNotUrl {
        /// The value given.
        issuer: String,
        /// The parser's reason.
        reason: String,
    },
    /// The issuer scheme is not allowed.
    #[error("issuer {issuer:?} must use https:// (loopback http:// only with --dev-mode)")]
    IssuerScheme {
        /// The value given.
        issuer: String,
    },
    /// The issuer has a query or fragment.
    #[error("issuer {issuer:?} must not have a query or fragment")]
    IssuerQuery {
        /// The value given.
        issuer: String,
    },
    /// The issuer has credentials in it.
    #[error("issuer {issuer:?} must not contain user info")]
    IssuerUserInfo {
        /// The value given.
        issuer: String,
    },
    /// A value is out of its allowed range.
    #[error("{name} = {value} is outside [{min}, {max}]")]
    OutOfRange {
        /// Flag name.
        name: &'static str,
        /// The value given.
        value: u64,
        /// Lower bound.
        min: u64,
        /// Upper bound.
        max: u64,
    },
    /// A non-loopback plaintext bind without `--behind-tls-proxy`.
    #[error("refusing to listen on non-loopback {bind} without TLS; give --tls-cert/--tls-key or --behind-tls-proxy")]
    PlaintextBind {
        /// The bind address.
        bind: SocketAddr,
    },
    /// Only one of the TLS cert/key was given.
    #[error("--tls-cert and --tls-key must be given together")]
    TlsHalf,
    /// Only one of the two `DAEMON_*` keys was set.
    #[error("assume-role mode needs both DAEMON_ACCESS_KEY_ID and DAEMON_SECRET_ACCESS_KEY, or neither (default chain); only {present} is set")]
    DaemonKeyHalf {
        /// The one variable that is set.
        present: &'static str,
    },
    /// `--kms-key-id` is not the key ARN an enclave can be pinned to.
    #[error("--kms-key-id: {0}")]
    KmsKeyArn(#[from] agentkeys_wire::KeyArnError),
    /// `--kms-region` differs from the key ARN's region.
    #[error("--kms-region {given} differs from the region of --kms-key-id {key} ({key_region}); KMS calls go to the key's region")]
    KmsRegion {
        /// The region given.
        given: String,
        /// The key ARN.
        key: String,
        /// Its region.
        key_region: String,
    },
    /// Only one of the KMS access key id / secret was given.
    #[error("--kms-access-key-id and --kms-secret-access-key must be given together")]
    KmsKeyHalf,
    /// No role ARN could be determined.
    #[error("no role ARN: set BROKER_DATA_ROLE_ARN, BROKER_AGENT_ROLE_ARN or ACCOUNT_ID")]
    NoRoleArn,
    /// The backend URL is not a http(s) URL.
    #[error("backend URL {url:?} is not an http(s) URL")]
    BackendUrl {
        /// The value given.
        url: String,
    },
    /// The enclave address is not valid.
    #[error("enclave address {address:?}: {reason}")]
    EnclaveAddress {
        /// The value given.
        address: String,
        /// Why.
        reason: String,
    },
    /// The body limit is zero.
    #[error("--body-limit-bytes must be at least 1")]
    BodyLimitZero,
    /// The audit log's location or chain id is not usable.
    #[error(transparent)]
    AuditDb(#[from] AuditDbError),
    /// A PostgreSQL audit log without a chain id, and no host name to default to.
    #[error(
        "--audit-chain is required with a PostgreSQL --audit-db: the host name could not be read"
    )]
    NoAuditChain,
}

/// Validated issuer and the warnings its normalisation produced.
#[derive(Debug, PartialEq, Eq)]
pub struct ValidIssuer {
    /// The issuer, without a trailing slash.
    pub issuer: String,
    /// Warnings to log (e.g. the trailing slash that was stripped).
    pub warnings: Vec<String>,
}

/// Validates an issuer URL (`docs/operations.md`, `--issuer`): `https://`, no query or
/// fragment, no user info;
/// a loopback `http://` issuer only in dev mode; a trailing slash is stripped with a warning.
pub fn validate_issuer(raw: &str, dev_mode: bool) -> Result<ValidIssuer, ConfigError> {
    let parsed = url::Url::parse(raw).map_err(|e| ConfigError::IssuerNotUrl {
        issuer: raw.to_string(),
        reason: e.to_string(),
    })?;
    if parsed.query().is_some() || parsed.fragment().is_some() || raw.contains('?') {
        return Err(ConfigError::IssuerQuery {
            issuer: raw.to_string(),
        });
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ConfigError::IssuerUserInfo {
            issuer: raw.to_string(),
        });
    }
    match parsed.scheme() {
        "https" => {}
        "http" if dev_mode && host_is_loopback(&parsed) => {}
        _ => {
            return Err(ConfigError::IssuerScheme {
                issuer: raw.to_string(),
            })
        }
    }
    let mut warnings = Vec::new();
    let mut issuer = raw.to_string();
    while issuer.ends_with('/') {
        issuer.pop();
        if warnings.is_empty() {
            warnings.push(format!(
                "issuer {raw:?} had a trailing slash; using {:?} (STS compares iss exactly)",
                raw.trim_end_matches('/')
            ));
        }
    }
    Ok(ValidIssuer { issuer, warnings })
}

fn host_is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Resolves the role ARN: explicit value, then `BROKER_AGENT_ROLE_ARN`, then
/// `arn:aws:iam::$ACCOUNT_ID:role/agentkeys-data-role`.
pub fn resolve_role_arn(
    explicit: Option<&str>,
    agent_role_arn: Option<&str>,
    account_id: Option<&str>,
) -> Result<String, ConfigError> {
    fn non_empty(v: Option<&str>) -> Option<&str> {
        v.map(str::trim).filter(|v| !v.is_empty())
    }
    if let Some(v) = non_empty(explicit) {
        return Ok(v.to_string());
    }
    if let Some(v) = non_empty(agent_role_arn) {
        return Ok(v.to_string());
    }
    if let Some(account) = non_empty(account_id) {
        return Ok(format!("arn:aws:iam::{account}:role/{DEFAULT_ROLE_NAME}"));
    }
    Err(ConfigError::NoRoleArn)
}

/// Long-term credentials for the assume-role mode.
#[derive(Clone)]
pub enum DaemonCredentials {
    /// The AWS default provider chain.
    DefaultChain,
    /// `DAEMON_ACCESS_KEY_ID` / `DAEMON_SECRET_ACCESS_KEY`.
    Static {
        /// Access key id.
        access_key_id: String,
        /// Secret access key (never printed).
        secret_access_key: String,
    },
}

impl std::fmt::Debug for DaemonCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonCredentials::DefaultChain => f.write_str("DefaultChain"),
            DaemonCredentials::Static { access_key_id, .. } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"<redacted>")
                .finish(),
        }
    }
}

/// Reads the `DAEMON_*` pair: both or neither (never one).
pub fn daemon_credentials(
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
) -> Result<DaemonCredentials, ConfigError> {
    let non_empty = |v: Option<String>| v.filter(|v| !v.is_empty());
    match (non_empty(access_key_id), non_empty(secret_access_key)) {
        (None, None) => Ok(DaemonCredentials::DefaultChain),
        (Some(access_key_id), Some(secret_access_key)) => Ok(DaemonCredentials::Static {
            access_key_id,
            secret_access_key,
        }),
        (Some(_), None) => Err(ConfigError::DaemonKeyHalf {
            present: "DAEMON_ACCESS_KEY_ID",
        }),
        (None, Some(_)) => Err(ConfigError::DaemonKeyHalf {
            present: "DAEMON_SECRET_ACCESS_KEY",
        }),
    }
}

/// Credentials lent to the enclave for its KMS call.
#[derive(Clone)]
pub enum KmsCredentials {
    /// Resolved from the AWS default provider chain at each unseal.
    DefaultChain,
    /// Given by flags.
    Static(agentkeys_wire::AwsCredentials),
}

impl std::fmt::Debug for KmsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KmsCredentials::DefaultChain => f.write_str("DefaultChain"),
            KmsCredentials::Static(c) => f.debug_tuple("Static").field(c).finish(),
        }
    }
}

/// `value` of flag `name` within `[min, max]`, or [`ConfigError::OutOfRange`].
pub(crate) fn check_range(
    name: &'static str,
    value: u64,
    min: u64,
    max: u64,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::OutOfRange {
            name,
            value,
            min,
            max,
        });
    }
    Ok(())
}

/// The validated configuration of a running broker.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Issuer without a trailing slash.
    pub issuer: String,
    /// Listen address.
    pub bind: SocketAddr,
    /// Backend base URL without a trailing slash.
    pub backend_url: String,
    /// Enclave address.
    pub enclave: agentkeys_wire::Address,
    /// Enclave connections.
    pub enclave_connections: usize,
    /// Enclave call timeout.
    pub enclave_timeout: Duration,
    /// Supervisor poll interval.
    pub supervise_interval: Duration,
    /// JWT lifetime.
    pub jwt_ttl_seconds: u32,
    /// Role ARN (web-identity and assume-role).
    pub role_arn: Option<String>,
    /// STS session duration.
    pub sts_duration_seconds: u32,
    /// STS mode.
    pub sts_mode: StsMode,
    /// STS endpoint override.
    pub sts_endpoint: Option<String>,
    /// STS region.
    pub sts_region: String,
    /// STS timeout.
    pub sts_timeout: Duration,
    /// Credentials for assume-role mode.
    pub daemon_credentials: DaemonCredentials,
    /// Backend timeout.
    pub backend_timeout: Duration,
    /// Positive session cache lifetime (zero disables).
    pub session_cache: Duration,
    /// The audit log (for PostgreSQL, with this host's chain id).
    pub audit_db: AuditDb,
    /// Sealed seed path.
    pub sealed_seed: PathBuf,
    /// KMS key id.
    pub kms_key_id: String,
    /// KMS region.
    pub kms_region: String,
    /// KMS endpoint override.
    pub kms_endpoint: Option<String>,
    /// KMS credentials lent to the enclave.
    pub kms_credentials: KmsCredentials,
    /// TLS cert/key paths.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Body limit.
    pub body_limit_bytes: usize,
    /// JWKS cache max-age.
    pub jwks_max_age_seconds: u64,
    /// Dev mode.
    pub dev_mode: bool,
}

impl ServeArgs {
    /// Validates the flags (with the role-ARN and `DAEMON_*` environment fallbacks).
    /// Returns the configuration and warnings to log.
    pub fn validate(&self) -> Result<(BrokerConfig, Vec<String>), ConfigError> {
        let env = |k: &str| std::env::var(k).ok();
        self.validate_with_env(&env)
    }

    /// `--audit-db` with this host's chain: `--audit-chain`, or the host name.
    fn audit_db_with_chain(&self) -> Result<AuditDb, ConfigError> {
        match &self.audit_db {
            AuditDb::Sqlite(_) => Ok(self.audit_db.clone()),
            AuditDb::Postgres { .. } => {
                let chain = match &self.audit_chain {
                    Some(c) => c.clone(),
                    None => default_chain_id().ok_or(ConfigError::NoAuditChain)?,
                };
                Ok(self.audit_db.clone().with_chain(&chain)?)
            }
        }
    }

    /// [`ServeArgs::validate`] with an explicit environment lookup (for tests).
    pub fn validate_with_env(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(BrokerConfig, Vec<String>), ConfigError> {
        let ValidIssuer {
            issuer,
            mut warnings,
        } = validate_issuer(&self.issuer, self.dev_mode)?;
        check_range(
            "--jwt-ttl-seconds",
            self.jwt_ttl_seconds.into(),
            JWT_TTL_MIN_SECONDS.into(),
            JWT_TTL_MAX_SECONDS.into(),
        )?;
        check_range(
            "--sts-duration-seconds",
            self.sts_duration_seconds.into(),
            STS_DURATION_MIN_SECONDS.into(),
            STS_DURATION_MAX_SECONDS.into(),
        )?;
        check_range(
            "--enclave-connections",
            self.enclave_connections as u64,
            1,
            64,
        )?;
        if self.body_limit_bytes == 0 {
            return Err(ConfigError::BodyLimitZero);
        }
        self.http.validate()?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => return Err(ConfigError::TlsHalf),
        };
        if tls.is_none() && !self.bind.ip().is_loopback() && !self.behind_tls_proxy {
            return Err(ConfigError::PlaintextBind { bind: self.bind });
        }
        let backend = url::Url::parse(&self.backend_url).map_err(|_| ConfigError::BackendUrl {
            url: self.backend_url.clone(),
        })?;
        if !matches!(backend.scheme(), "http" | "https") {
            return Err(ConfigError::BackendUrl {
                url: self.backend_url.clone(),
            });
        }
        let enclave: agentkeys_wire::Address =
            self.enclave
                .parse()
                .map_err(
                    |e: agentkeys_wire::AddressError| ConfigError::EnclaveAddress {
                        address: self.enclave.clone(),
                        reason: e.to_string(),
                    },
                )?;
        let role_arn = match resolve_role_arn(
            self.role_arn.as_deref(),
            env("BROKER_AGENT_ROLE_ARN").as_deref(),
            env("ACCOUNT_ID").as_deref(),
        ) {
            Ok(r) => Some(r),
            Err(e) => {
                warnings.push(format!("{e}; /v1/mint-aws-creds will answer 502"));
                None
            }
        };
        let daemon_credentials = match self.sts_mode {
            StsMode::AssumeRole => {
                daemon_credentials(env("DAEMON_ACCESS_KEY_ID"), env("DAEMON_SECRET_ACCESS_KEY"))?
            }
            StsMode::WebIdentity => DaemonCredentials::DefaultChain,
        };
        let kms_key = agentkeys_wire::KmsKeyArn::parse(&self.kms_key_id)?;
        if let Some(given) = self.kms_region.as_deref() {
            if given != kms_key.region() {
                return Err(ConfigError::KmsRegion {
                    given: given.to_string(),
                    key: kms_key.to_string(),
                    key_region: kms_key.region().to_string(),
                });
            }
        }
        let kms_credentials = match (&self.kms_access_key_id, &self.kms_secret_access_key) {
            (Some(id), Some(secret)) => KmsCredentials::Static(agentkeys_wire::AwsCredentials {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
                session_token: self.kms_session_token.clone(),
            }),
            (None, None) => KmsCredentials::DefaultChain,
            _ => return Err(ConfigError::KmsKeyHalf),
        };
        Ok((
            BrokerConfig {
                issuer,
                bind: self.bind,
                backend_url: self.backend_url.trim_end_matches('/').to_string(),
                enclave,
                enclave_connections: self.enclave_connections,
                enclave_timeout: Duration::from_millis(self.enclave_timeout_ms),
                supervise_interval: Duration::from_millis(self.supervise_interval_ms.max(50)),
                jwt_ttl_seconds: self.jwt_ttl_seconds,
                role_arn,
                sts_duration_seconds: self.sts_duration_seconds,
                sts_mode: self.sts_mode,
                sts_endpoint: self.sts_endpoint.clone(),
                sts_region: self.sts_region.clone(),
                sts_timeout: Duration::from_millis(self.sts_timeout_ms),
                daemon_credentials,
                backend_timeout: Duration::from_millis(self.backend_timeout_ms),
                session_cache: Duration::from_secs(self.session_cache_seconds),
                audit_db: self.audit_db_with_chain()?,
                sealed_seed: self.sealed_seed.clone(),
                kms_key_id: kms_key.to_string(),
                kms_region: kms_key.region().to_string(),
                kms_endpoint: self.kms_endpoint.clone(),
                kms_credentials,
                tls,
                body_limit_bytes: self.body_limit_bytes,
                jwks_max_age_seconds: self.jwks_max_age_seconds,
                dev_mode: self.dev_mode,
            },
            warnings,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn args(extra: &[&str]) -> ServeArgs {
        let mut v = vec![
            "t",
            "--issuer",
            "https://issuer.example.com",
            "--backend-url",
            "http://127.0.0.1:1",
            "--enclave",
            "unix:/tmp/x.sock",
            "--kms-key-id",
            KEY_ARN,
        ];
        v.extend_from_slice(extra);
        T::try_parse_from(v).unwrap().serve
    }

    const KEY_ARN: &str =
        "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn the_kms_key_is_a_key_arn_and_gives_the_region() {
        let (c, _) = args(&[]).validate_with_env(&no_env).unwrap();
        assert_eq!(c.kms_key_id, KEY_ARN);
        assert_eq!(c.kms_region, "eu-west-1");
        let (c, _) = args(&["--kms-region", "eu-west-1"])
            .validate_with_env(&no_env)
            .unwrap();
        assert_eq!(c.kms_region, "eu-west-1");
        assert!(matches!(
            args(&["--kms-region", "us-east-1"]).validate_with_env(&no_env),
            Err(ConfigError::KmsRegion { .. })
        ));
        for alias in ["alias/k", "arn:aws:kms:eu-west-1:111122223333:alias/k", "k"] {
            let mut a = args(&[]);
            a.kms_key_id = alias.into();
            let e = a.validate_with_env(&no_env).unwrap_err();
            assert!(matches!(e, ConfigError::KmsKeyArn(_)), "{alias}: {e}");
            assert!(e.to_string().starts_with("--kms-key-id"), "{e}");
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn issuer_https_ok() {
        let v = validate_issuer("https://a.example.com/path", false).unwrap();
        assert_eq!(v.issuer, "https://a.example.com/path");
        assert!(v.warnings.is_empty());
    }

    #[test]
    fn issuer_trailing_slash_stripped_with_warning() {
        let v = validate_issuer("https://a.example.com/", false).unwrap();
        assert_eq!(v.issuer, "https://a.example.com");
        assert_eq!(v.warnings.len(), 1);
    }

    #[test]
    fn issuer_http_refused_outside_dev() {
        assert!(matches!(
            validate_issuer("http://127.0.0.1:8091", false),
            Err(ConfigError::IssuerScheme { .. })
        ));
    }

    #[test]
    fn issuer_http_loopback_in_dev() {
        assert!(validate_issuer("http://127.0.0.1:8091", true).is_ok());
        assert!(validate_issuer("http://localhost:8091", true).is_ok());
        assert!(validate_issuer("http://[::1]:8091", true).is_ok());
    }

    #[test]
    fn issuer_http_non_loopback_refused_in_dev() {
        assert!(validate_issuer("http://10.0.0.1:8091", true).is_err());
        assert!(validate_issuer("http://example.com", true).is_err());
    }

    #[test]
    fn issuer_query_fragment_refused() {
        assert!(matches!(
            validate_issuer("https://a.example.com/?x=1", false),
            Err(ConfigError::IssuerQuery { .. })
        ));
        assert!(matches!(
            validate_issuer("https://a.example.com/#f", false),
            Err(ConfigError::IssuerQuery { .. })
        ));
        assert!(matches!(
            validate_issuer("https://a.example.com/?", false),
            Err(ConfigError::IssuerQuery { .. })
        ));
    }

    #[test]
    fn issuer_userinfo_and_garbage_refused() {
        assert!(validate_issuer("https://u:p@a.example.com", false).is_err());
        assert!(validate_issuer("not a url", false).is_err());
        assert!(validate_issuer("ftp://a.example.com", false).is_err());
    }

    #[test]
    fn role_arn_fallbacks() {
        assert_eq!(
            resolve_role_arn(Some("arn:a"), Some("arn:b"), Some("1")).unwrap(),
            "arn:a"
        );
        assert_eq!(
            resolve_role_arn(None, Some("arn:b"), Some("1")).unwrap(),
            "arn:b"
        );
        assert_eq!(
            resolve_role_arn(Some(""), None, Some("123456789012")).unwrap(),
            "arn:aws:iam::123456789012:role/agentkeys-data-role"
        );
        assert_eq!(
            resolve_role_arn(None, None, None),
            Err(ConfigError::NoRoleArn)
        );
    }

    #[test]
    fn daemon_keys_both_or_neither() {
        assert!(matches!(
            daemon_credentials(None, None),
            Ok(DaemonCredentials::DefaultChain)
        ));
        assert!(matches!(
            daemon_credentials(Some("a".into()), Some("b".into())),
            Ok(DaemonCredentials::Static { .. })
        ));
        assert!(matches!(
            daemon_credentials(Some("a".into()), None),
            Err(ConfigError::DaemonKeyHalf {
                present: "DAEMON_ACCESS_KEY_ID"
            })
        ));
        assert!(matches!(
            daemon_credentials(None, Some("b".into())),
            Err(ConfigError::DaemonKeyHalf {
                present: "DAEMON_SECRET_ACCESS_KEY"
            })
        ));
    }

    #[test]
    fn daemon_debug_redacts() {
        let c = daemon_credentials(Some("AKIA".into()), Some("SECRETVALUE".into())).unwrap();
        assert!(!format!("{c:?}").contains("SECRETVALUE"));
    }

    #[test]
    fn assume_role_with_one_daemon_key_is_a_startup_error() {
        let a = args(&["--sts-mode", "assume-role"]);
        let env = |k: &str| (k == "DAEMON_ACCESS_KEY_ID").then(|| "AKIA".to_string());
        assert!(matches!(
            a.validate_with_env(&env),
            Err(ConfigError::DaemonKeyHalf { .. })
        ));
    }

    #[test]
    fn defaults_validate() {
        let (c, _) = args(&["--role-arn", "arn:x"])
            .validate_with_env(&no_env)
            .unwrap();
        assert_eq!(c.jwt_ttl_seconds, 300);
        assert_eq!(c.sts_duration_seconds, 3600);
        assert_eq!(c.role_arn.as_deref(), Some("arn:x"));
    }

    #[test]
    fn ttl_and_duration_bounds() {
        for bad in [
            vec!["--jwt-ttl-seconds", "59"],
            vec!["--jwt-ttl-seconds", "3601"],
            vec!["--sts-duration-seconds", "899"],
            vec!["--sts-duration-seconds", "43201"],
        ] {
            assert!(matches!(
                args(&bad).validate_with_env(&no_env),
                Err(ConfigError::OutOfRange { .. })
            ));
        }
    }

    #[test]
    fn plaintext_public_bind_refused_unless_proxy() {
        assert!(matches!(
            args(&["--bind", "0.0.0.0:8091"]).validate_with_env(&no_env),
            Err(ConfigError::PlaintextBind { .. })
        ));
        assert!(args(&["--bind", "0.0.0.0:8091", "--behind-tls-proxy"])
            .validate_with_env(&no_env)
            .is_ok());
    }

    #[test]
    fn tls_half_refused() {
        assert!(matches!(
            args(&["--tls-cert", "c.pem"]).validate_with_env(&no_env),
            Err(ConfigError::TlsHalf)
        ));
    }

    #[test]
    fn kms_key_half_refused() {
        assert!(matches!(
            args(&["--kms-access-key-id", "AKIA"]).validate_with_env(&no_env),
            Err(ConfigError::KmsKeyHalf)
        ));
    }

    #[test]
    fn bad_enclave_address_refused() {
        let mut a = args(&[]);
        a.enclave = "tcp:1".into();
        assert!(matches!(
            a.validate_with_env(&no_env),
            Err(ConfigError::EnclaveAddress { .. })
        ));
    }

    #[test]
    fn http_limit_defaults() {
        let a = args(&[]);
        assert_eq!(a.http.validate().unwrap(), HttpLimits::default());
        assert_eq!(
            HttpLimitArgs::default().validate().unwrap(),
            HttpLimits::default()
        );
        let d = HttpLimits::default();
        assert_eq!(d.header_read_timeout, Duration::from_secs(10));
        assert_eq!(d.body_read_timeout, Duration::from_secs(10));
        assert_eq!(d.max_connections, 4096);
        assert_eq!(d.max_header_bytes, 64 * 1024);
    }

    #[test]
    fn http_limit_flags_and_bounds() {
        let a = args(&[
            "--header-read-timeout-ms",
            "2500",
            "--body-read-timeout-ms",
            "3000",
            "--max-connections",
            "16",
            "--max-header-bytes",
            "16384",
        ]);
        let l = a.http.validate().unwrap();
        assert_eq!(l.header_read_timeout, Duration::from_millis(2500));
        assert_eq!(l.body_read_timeout, Duration::from_millis(3000));
        assert_eq!(l.max_connections, 16);
        assert_eq!(l.max_header_bytes, 16384);
        for bad in [
            vec!["--header-read-timeout-ms", "0"],
            vec!["--header-read-timeout-ms", "300001"],
            vec!["--body-read-timeout-ms", "99"],
            vec!["--max-connections", "0"],
            vec!["--max-header-bytes", "8191"],
        ] {
            let e = args(&bad).http.validate().unwrap_err();
            assert!(matches!(e, ConfigError::OutOfRange { .. }), "{bad:?}: {e}");
            assert!(e.to_string().contains(bad[0]), "{e}");
        }
    }

    #[test]
    fn missing_role_is_a_warning_not_an_error() {
        let (c, w) = args(&[]).validate_with_env(&no_env).unwrap();
        assert!(c.role_arn.is_none());
        assert!(w.iter().any(|w| w.contains("no role ARN")));
    }
}
