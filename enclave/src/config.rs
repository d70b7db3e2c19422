//! Command line and configuration of the enclave binary: parsing and validation only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use agentkeys_wire::Address;
use clap::Parser;

use crate::authz::{AuthConfigError, AuthPolicy};
use crate::jwt::{
    TokenPolicy, DEFAULT_AUDIENCE, DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS, MIN_TTL_SECONDS,
};
use crate::keys::RingSpec;
use crate::kms::{
    KeyArnError, KmsKeyArn, KmsSettings, DEFAULT_KMS_PROXY_PORT, KMS_OPERATION_TIMEOUT, PARENT_CID,
};
use crate::tls::transport::DEFAULT_ACME_PROXY_PORT;

/// Default vsock port the enclave listens on. Source: `docs/protocol.md`, "Transport and
/// addresses" (the enclave listens on `vsock:any:5000`).
pub const DEFAULT_VSOCK_PORT: u32 = 5000;
/// Default vsock port of the enclave's issuer TLS endpoint, where the parent relays the
/// issuer hostname's TCP connections. Source: `docs/protocol.md`, "Transport and
/// addresses" (the wire on 5000, the relayed issuer TLS on 5001).
pub const DEFAULT_TLS_VSOCK_PORT: u32 = 5001;
/// Length of a PCR value (SHA-384). Source: AWS Nitro Enclaves attestation document spec.
pub const PCR_BYTES: usize = 48;

/// Configuration errors (reported before anything starts).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The issuer URL is unusable.
    #[error("invalid --issuer {issuer:?}: {reason}")]
    Issuer {
        /// The rejected issuer.
        issuer: String,
        /// Why.
        reason: String,
    },
    /// A `--mock-pcr` value is malformed.
    #[error("invalid --mock-pcr {value:?}: {reason}")]
    MockPcr {
        /// The rejected value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A mock-only flag without `--mock`.
    #[error("{flag} requires --mock")]
    NeedsMock {
        /// The flag.
        flag: &'static str,
    },
    /// Token policy rejected.
    #[error("{0}")]
    Token(String),
    /// `--kms-key-arn` is not a pinnable key ARN.
    #[error("invalid --kms-key-arn: {0}")]
    KmsKeyArn(#[from] KeyArnError),
    /// `--mock` on a vsock listener: the mock NSM never serves the production transport.
    #[error("--mock needs --usock: the mock NSM never listens on vsock, where a parent would take it for a real enclave")]
    MockOnVsock,
    /// The authorization modes or session keys are unusable.
    #[error("{0}")]
    Auth(#[from] AuthConfigError),
    /// `--acme-directory` is unusable.
    #[error("invalid --acme-directory {url:?}: {reason}")]
    AcmeDirectory {
        /// The rejected URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The issuer cannot be the name of an ACME certificate.
    #[error("--acme-directory needs an https:// --issuer whose host is a DNS name: {reason}")]
    IssuerTlsHost {
        /// Why.
        reason: String,
    },
    /// `--acme-contact` is not a `mailto:` URL.
    #[error("invalid --acme-contact {value:?}: expected mailto:ADDRESS")]
    AcmeContact {
        /// The rejected value.
        value: String,
    },
    /// `--acme-renew-before` is zero.
    #[error("--acme-renew-before must be at least 1 second")]
    RenewBefore,
    /// An issuer TLS flag without `--acme-directory`.
    #[error("{flag} requires --acme-directory")]
    NeedsAcmeDirectory {
        /// The flag.
        flag: &'static str,
    },
    /// `--mock` with the issuer's TLS on a vsock listener.
    #[error("--mock with --acme-directory needs --tls-usock: the mock NSM never listens on vsock")]
    MockTlsOnVsock,
    /// `--mock` where a Nitro Secure Module exists.
    #[error("--mock refused: {device} exists, so this is a Nitro Enclave and must attest with its real NSM")]
    MockWithNsmDevice {
        /// The device found.
        device: &'static str,
    },
}

/// The Nitro Secure Module's device node inside an enclave (AWS Nitro Enclaves NSM API).
pub const NSM_DEVICE: &str = "/dev/nsm";

/// `agentkeys-enclave`: the enclave application.
#[derive(Debug, Clone, Parser)]
#[command(name = "agentkeys-enclave", version, about)]
pub struct Args {
    /// vsock port to listen on (CID any). Production transport.
    #[arg(long, default_value_t = DEFAULT_VSOCK_PORT, conflicts_with = "usock")]
    pub vsock_port: u32,
    /// Listen on a Unix socket instead of vsock (mock mode and tests).
    #[arg(long, value_name = "PATH")]
    pub usock: Option<PathBuf>,
    /// Use the mock NSM (needs a build with the cargo feature `mock`).
    #[arg(long)]
    pub mock: bool,
    /// Mock NSM in debug mode (PCR0/1/2/8 read as zero).
    #[arg(long)]
    pub mock_debug: bool,
    /// Boot value of a mock PCR, `N=HEX` (96 hex digits); repeatable.
    #[arg(long, value_name = "N=HEX")]
    pub mock_pcr: Vec<String>,
    /// Issuer URL (`iss`): https://…, or http://loopback only with --mock.
    #[arg(long, env = "AGENTKEYS_ENCLAVE_ISSUER")]
    pub issuer: String,
    /// The one KMS key this enclave unseals with: its full key ARN
    /// (`arn:aws:kms:REGION:ACCOUNT:key/KEY-ID`, no alias). Part of the measured image;
    /// the region of every KMS call comes from it.
    #[arg(long, env = "AGENTKEYS_ENCLAVE_KMS_KEY_ARN", value_name = "ARN")]
    pub kms_key_arn: String,
    /// Allowed audience; the first is the default. Repeatable.
    #[arg(long, default_values_t = vec![DEFAULT_AUDIENCE.to_string()])]
    pub audience: Vec<String>,
    /// Default token lifetime (seconds).
    #[arg(long, default_value_t = DEFAULT_TTL_SECONDS)]
    pub ttl_default: u32,
    /// Shortest lifetime a request may ask for.
    #[arg(long, default_value_t = MIN_TTL_SECONDS)]
    pub ttl_min: u32,
    /// Longest lifetime a request may ask for.
    #[arg(long, default_value_t = MAX_TTL_SECONDS)]
    pub ttl_max: u32,
    /// vsock port of the parent's vsock-proxy to KMS.
    #[arg(long, default_value_t = DEFAULT_KMS_PROXY_PORT)]
    pub kms_proxy_port: u32,
    /// Signing key version (rotation: v1, v2, …).
    #[arg(long, default_value_t = 1)]
    pub key_version: u32,
    /// Publish the next key version in the JWKS before it signs.
    #[arg(long)]
    pub publish_next_key: bool,
    /// Earlier key versions kept in the JWKS.
    #[arg(long, default_value_t = 1)]
    pub keep_previous_keys: u32,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
    /// How the enclave decides whose token it signs: `signed-session` (the session
    /// backend's signed token), `wallet-signature` (a Sign-In with Ethereum message the
    /// wallet signed) or `parent-vouched` (the parent's word, alone). Repeatable or
    /// comma-separated; part of the measured image.
    #[arg(
        long = "auth-mode",
        env = "AGENTKEYS_ENCLAVE_AUTH_MODES",
        value_delimiter = ',',
        default_value = "signed-session",
        value_name = "MODE"
    )]
    pub auth_modes: Vec<String>,
    /// RFC 7638 thumbprint (43 base64url characters) of an ES256 key the session backend
    /// signs sessions with; repeatable (up to 4, for rotation with overlap). Part of the
    /// measured image.
    #[arg(
        long = "session-key-thumbprint",
        env = "AGENTKEYS_ENCLAVE_SESSION_KEYS",
        value_delimiter = ',',
        value_name = "THUMBPRINT",
        // A base64url thumbprint may start with '-'.
        allow_hyphen_values = true
    )]
    pub session_key_thumbprints: Vec<String>,
    /// The ACME (RFC 8555) directory URL of the CA that certifies the issuer's TLS key.
    /// Given, the enclave terminates the issuer's TLS itself (certificate for the host of
    /// `--issuer`); absent, it serves no TLS. Part of the measured image.
    #[arg(long, env = "AGENTKEYS_ENCLAVE_ACME_DIRECTORY", value_name = "URL")]
    pub acme_directory: Option<String>,
    /// vsock port of the issuer TLS endpoint the parent relays to (CID any). Production.
    #[arg(long, default_value_t = DEFAULT_TLS_VSOCK_PORT, conflicts_with = "tls_usock")]
    pub tls_vsock_port: u32,
    /// Unix socket of the issuer TLS endpoint instead of vsock (mock mode and tests).
    #[arg(long, value_name = "PATH")]
    pub tls_usock: Option<PathBuf>,
    /// Extra root certificate (PEM) trusted for the CA's own HTTPS (mock mode only: a
    /// test CA such as Pebble on loopback).
    #[arg(long, value_name = "PEM_FILE")]
    pub acme_root: Option<PathBuf>,
    /// vsock port of the parent's vsock-proxy to the CA's host (port 443).
    #[arg(long, default_value_t = DEFAULT_ACME_PROXY_PORT)]
    pub acme_proxy_port: u32,
    /// Renew when the certificate has less than this many seconds left (default: one
    /// third of its lifetime).
    #[arg(long, value_name = "SECS")]
    pub acme_renew_before: Option<u64>,
    /// Contact of the ACME account (`mailto:ADDRESS`).
    #[arg(long, value_name = "MAILTO")]
    pub acme_contact: Option<String>,
}

/// Mock NSM options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MockOptions {
    /// Use the mock NSM.
    pub enabled: bool,
    /// Debug mode.
    pub debug: bool,
    /// Boot PCR values.
    pub pcrs: BTreeMap<u16, [u8; PCR_BYTES]>,
}

/// Everything the enclave needs to run.
#[derive(Debug, Clone)]
pub struct EnclaveConfig {
    /// Whose tokens the enclave signs.
    pub auth: AuthPolicy,
    /// Where to listen.
    pub listen: Address,
    /// Mock NSM options.
    pub mock: MockOptions,
    /// Token policy.
    pub policy: TokenPolicy,
    /// Key versions published.
    pub ring: RingSpec,
    /// vsock port of the KMS proxy.
    pub kms_proxy_port: u32,
    /// Timeout of a KMS call.
    pub kms_timeout: Duration,
    /// The pinned KMS key.
    pub kms_key: KmsKeyArn,
    /// The issuer's TLS, when the enclave terminates it (`--acme-directory`).
    pub issuer_tls: Option<IssuerTlsConfig>,
}

impl EnclaveConfig {
    /// KMS settings derived from this configuration.
    pub fn kms_settings(&self) -> KmsSettings {
        KmsSettings {
            mock: self.mock.enabled,
            proxy_cid: PARENT_CID,
            proxy_port: self.kms_proxy_port,
            issuer: self.policy.issuer().to_string(),
            key: self.kms_key.clone(),
            timeout: self.kms_timeout,
        }
    }
}

/// Validates the issuer: `https://host[:port][/path]` without query, fragment, userinfo
/// or trailing slash; `http://` only to a loopback host and only in mock mode.
pub fn validate_issuer(issuer: &str, mock: bool) -> Result<String, ConfigError> {
    let err = |reason: &str| ConfigError::Issuer {
        issuer: issuer.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = issuer.trim_end_matches('/');
    if trimmed != issuer {
        tracing::warn!(issuer, "trailing slash stripped from the issuer");
    }
    if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err("contains whitespace"));
    }
    let uri: http::Uri = trimmed.parse().map_err(|_| err("not a URL"))?;
    let host = uri.host().ok_or_else(|| err("no host"))?;
    if trimmed.contains('?') || trimmed.contains('#') {
        return Err(err("must not have a query or fragment"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(err("must not carry user info"));
    }
    match uri.scheme_str() {
        Some("https") => Ok(trimmed.to_string()),
        Some("http") => {
            let loopback = matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1");
            if !mock {
                Err(err(
                    "must be https:// (http:// is allowed only with --mock)",
                ))
            } else if !loopback {
                Err(err("http:// is allowed only to a loopback host"))
            } else {
                Ok(trimmed.to_string())
            }
        }
        _ => Err(err("scheme must be https")),
    }
}

/// The issuer host an ACME certificate names: the host of an `https://` issuer, lower
/// case, which must be a DNS name (a CA certifies no IP address through TLS-ALPN-01 here)
/// with at least two labels.
pub fn issuer_tls_hostname(issuer: &str) -> Result<String, ConfigError> {
    let err = |reason: &str| ConfigError::IssuerTlsHost {
        reason: reason.to_string(),
    };
    let uri: http::Uri = issuer.parse().map_err(|_| err("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(err(&format!("{issuer:?} is not https://")));
    }
    let host = uri
        .host()
        .ok_or_else(|| err("no host"))?
        .to_ascii_lowercase();
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return Err(err(&format!("{host} is an IP address")));
    }
    let labels_ok = host.len() <= 253
        && host.split('.').count() >= 2
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if !labels_ok {
        return Err(err(&format!("{host:?} is not a DNS name")));
    }
    Ok(host)
}

/// Checks an ACME directory URL: `https://HOST[:PORT]/PATH` without user info, query or
/// fragment. Outside mock mode the port must be 443 (the vsock-proxy forwards to the CA
/// host's 443); in mock mode the host must be loopback (a test CA such as Pebble).
pub fn validate_acme_directory(url: &str, mock: bool) -> Result<AcmeDirectory, ConfigError> {
    let err = |reason: &str| ConfigError::AcmeDirectory {
        url: url.chars().take(256).collect(),
        reason: reason.to_string(),
    };
    if url.len() > agentkeys_wire::statement::MAX_URL_CHARS {
        return Err(err(&format!(
            "longer than {} characters",
            agentkeys_wire::statement::MAX_URL_CHARS
        )));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err("contains whitespace"));
    }
    if url.contains('?') || url.contains('#') {
        return Err(err("must not have a query or fragment"));
    }
    let uri: http::Uri = url.parse().map_err(|_| err("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(err("scheme must be https"));
    }
    let authority = uri.authority().ok_or_else(|| err("no host"))?;
    if authority.as_str().contains('@') {
        return Err(err("must not carry user info"));
    }
    let host = authority.host().to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(443);
    let loopback = matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]");
    if mock && !loopback {
        return Err(err(
            "mock mode accepts only a loopback CA (https://127.0.0.1:PORT/…, https://localhost:PORT/…)",
        ));
    }
    if !mock && port != 443 {
        return Err(err(
            "the port must be 443: the vsock-proxy forwards to the CA host's port 443",
        ));
    }
    if !mock && (loopback || host.parse::<std::net::IpAddr>().is_ok()) {
        return Err(err("the CA must be named by its DNS name"));
    }
    Ok(AcmeDirectory {
        url: url.to_string(),
        host,
        port,
    })
}

/// A checked ACME directory URL and the one host every URL of the CA must be on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeDirectory {
    /// The directory URL as given.
    pub url: String,
    /// Its host, lower case (an IPv6 literal keeps its brackets).
    pub host: String,
    /// Its port (443 unless given).
    pub port: u16,
}

/// The issuer's TLS as the enclave runs it.
#[derive(Debug, Clone)]
pub struct IssuerTlsConfig {
    /// Where the relayed connections arrive.
    pub listen: Address,
    /// The issuer host the certificate names.
    pub hostname: String,
    /// The CA.
    pub directory: AcmeDirectory,
    /// Mock mode: talk to a loopback CA directly, trusting `acme_root`.
    pub mock: bool,
    /// Extra root (PEM file) for the CA's HTTPS, mock mode only.
    pub acme_root: Option<PathBuf>,
    /// vsock port of the proxy to the CA's host.
    pub proxy_port: u32,
    /// Renew when this little is left; `None` = a third of the certificate's lifetime.
    pub renew_before: Option<Duration>,
    /// Account contact (`mailto:`).
    pub contact: Option<String>,
    /// Timing of the ACME client.
    pub timing: crate::tls::AcmeTiming,
}

/// The default listening address in production: vsock, any CID.
pub fn vsock_listen_address(port: u32) -> Address {
    Address::Vsock {
        cid: agentkeys_wire::address::VSOCK_CID_ANY,
        port,
    }
}

/// Parses `N=HEX` (N < 32, 48 bytes of hex).
pub fn parse_mock_pcr(value: &str) -> Result<(u16, [u8; PCR_BYTES]), ConfigError> {
    let err = |reason: String| ConfigError::MockPcr {
        value: value.chars().take(128).collect(),
        reason,
    };
    let (index, hex_value) = value
        .split_once('=')
        .ok_or_else(|| err("expected N=HEX".into()))?;
    let index: u16 = index
        .parse()
        .map_err(|_| err(format!("PCR index {index:?} is not a number")))?;
    let bytes = hex::decode(hex_value).map_err(|e| err(format!("bad hex: {e}")))?;
    let pcr: [u8; PCR_BYTES] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| err(format!("{} bytes, expected {PCR_BYTES}", bytes.len())))?;
    Ok((index, pcr))
}

impl Args {
    /// Validates the arguments into a configuration.
    pub fn into_config(self) -> Result<EnclaveConfig, ConfigError> {
        let nsm_present = std::path::Path::new(NSM_DEVICE).exists();
        self.into_config_on(nsm_present)
    }

    /// [`Args::into_config`] on a machine that has (`nsm_present`) or lacks the NSM device.
    pub fn into_config_on(self, nsm_present: bool) -> Result<EnclaveConfig, ConfigError> {
        if self.mock {
            if nsm_present {
                return Err(ConfigError::MockWithNsmDevice { device: NSM_DEVICE });
            }
            if self.usock.is_none() {
                return Err(ConfigError::MockOnVsock);
            }
        } else {
            if self.mock_debug {
                return Err(ConfigError::NeedsMock {
                    flag: "--mock-debug",
                });
            }
            if !self.mock_pcr.is_empty() {
                return Err(ConfigError::NeedsMock { flag: "--mock-pcr" });
            }
        }
        let issuer = validate_issuer(&self.issuer, self.mock)?;
        let kms_key = KmsKeyArn::parse(&self.kms_key_arn)?;
        let policy = TokenPolicy::new(
            &issuer,
            self.audience,
            self.ttl_default,
            self.ttl_min,
            self.ttl_max,
        )
        .map_err(|e| ConfigError::Token(e.to_string()))?;
        let auth = AuthPolicy::new(&self.auth_modes, &self.session_key_thumbprints, &issuer)?;
        let mut pcrs = BTreeMap::new();
        for v in &self.mock_pcr {
            let (i, p) = parse_mock_pcr(v)?;
            pcrs.insert(i, p);
        }
        let listen = match self.usock {
            Some(path) => Address::Unix(path),
            None => vsock_listen_address(self.vsock_port),
        };
        // An empty value (the image's ENV when built without a directory) means none.
        let acme_directory = self.acme_directory.filter(|d| !d.is_empty());
        let issuer_tls = match acme_directory {
            None => {
                if self.acme_root.is_some() {
                    return Err(ConfigError::NeedsAcmeDirectory {
                        flag: "--acme-root",
                    });
                }
                if self.acme_renew_before.is_some() {
                    return Err(ConfigError::NeedsAcmeDirectory {
                        flag: "--acme-renew-before",
                    });
                }
                if self.acme_contact.is_some() {
                    return Err(ConfigError::NeedsAcmeDirectory {
                        flag: "--acme-contact",
                    });
                }
                None
            }
            Some(url) => {
                if self.acme_root.is_some() && !self.mock {
                    return Err(ConfigError::NeedsMock {
                        flag: "--acme-root",
                    });
                }
                if self.mock && self.tls_usock.is_none() {
                    return Err(ConfigError::MockTlsOnVsock);
                }
                let directory = validate_acme_directory(&url, self.mock)?;
                let hostname = issuer_tls_hostname(&issuer)?;
                if let Some(c) = &self.acme_contact {
                    let ok = c.strip_prefix("mailto:").is_some_and(|a| {
                        a.contains('@')
                            && a.len() <= 254
                            && a.bytes().all(|b| b.is_ascii_graphic() && b != b',')
                    });
                    if !ok {
                        return Err(ConfigError::AcmeContact {
                            value: c.chars().take(128).collect(),
                        });
                    }
                }
                if self.acme_renew_before == Some(0) {
                    return Err(ConfigError::RenewBefore);
                }
                Some(IssuerTlsConfig {
                    listen: match self.tls_usock {
                        Some(path) => Address::Unix(path),
                        None => vsock_listen_address(self.tls_vsock_port),
                    },
                    hostname,
                    directory,
                    mock: self.mock,
                    acme_root: self.acme_root,
                    proxy_port: self.acme_proxy_port,
                    renew_before: self.acme_renew_before.map(Duration::from_secs),
                    contact: self.acme_contact,
                    timing: crate::tls::AcmeTiming::default(),
                })
            }
        };
        Ok(EnclaveConfig {
            listen,
            mock: MockOptions {
                enabled: self.mock,
                debug: self.mock_debug,
                pcrs,
            },
            policy,
            auth,
            ring: RingSpec {
                active: self.key_version,
                publish_next: self.publish_next_key,
                keep_previous: self.keep_previous_keys,
            },
            kms_proxy_port: self.kms_proxy_port,
            kms_timeout: KMS_OPERATION_TIMEOUT,
            kms_key,
            issuer_tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Args, clap::Error> {
        let mut v = vec![
            "agentkeys-enclave",
            "--issuer",
            "https://issuer.example.com",
            "--kms-key-arn",
            KEY_ARN,
            "--session-key-thumbprint",
            THUMBPRINT,
        ];
        v.extend_from_slice(extra);
        Args::try_parse_from(v)
    }

    /// A session key thumbprint (RFC 7638 §3.1's example).
    const THUMBPRINT: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

    const KEY_ARN: &str =
        "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    /// Configuration on a build machine (no NSM device), whatever this machine has.
    fn config(extra: &[&str]) -> Result<EnclaveConfig, ConfigError> {
        args(extra).unwrap().into_config_on(false)
    }

    #[test]
    fn defaults() {
        let c = args(&[]).unwrap().into_config_on(false).unwrap();
        assert_eq!(
            c.listen,
            Address::Vsock {
                cid: agentkeys_wire::address::VSOCK_CID_ANY,
                port: 5000
            }
        );
        assert!(!c.mock.enabled);
        assert_eq!(c.policy.issuer(), "https://issuer.example.com");
        assert_eq!(c.policy.audiences(), ["sts.amazonaws.com"]);
        assert_eq!(c.kms_proxy_port, 8000);
        assert_eq!(c.kms_settings().proxy_cid, 3);
    }

    #[test]
    fn usock_and_vsock_conflict() {
        assert!(args(&["--usock", "/tmp/x", "--vsock-port", "1"]).is_err());
        let c = args(&["--usock", "/tmp/x"])
            .unwrap()
            .into_config_on(false)
            .unwrap();
        assert_eq!(c.listen, Address::Unix("/tmp/x".into()));
    }

    #[test]
    fn issuer_rules() {
        assert_eq!(
            validate_issuer("https://a.example/", false).unwrap(),
            "https://a.example"
        );
        assert_eq!(
            validate_issuer("https://a.example/p", false).unwrap(),
            "https://a.example/p"
        );
        assert!(validate_issuer("http://127.0.0.1:8080", false).is_err());
        assert_eq!(
            validate_issuer("http://127.0.0.1:8080", true).unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(validate_issuer("http://localhost:1", true).is_ok());
        assert!(validate_issuer("http://example.com", true).is_err());
        assert!(validate_issuer("ftp://a.example", false).is_err());
        assert!(validate_issuer("https://a.example?x=1", false).is_err());
        assert!(validate_issuer("https://a.example#f", false).is_err());
        assert!(validate_issuer("https://u@a.example", false).is_err());
        assert!(validate_issuer("a.example", false).is_err());
        assert!(validate_issuer("", false).is_err());
        assert!(validate_issuer("https://a b", false).is_err());
    }

    #[test]
    fn mock_flags_need_mock() {
        assert_eq!(
            args(&["--mock-debug"])
                .unwrap()
                .into_config_on(false)
                .unwrap_err(),
            ConfigError::NeedsMock {
                flag: "--mock-debug"
            }
        );
        let pcr = format!("0={}", "ab".repeat(48));
        assert!(args(&["--mock-pcr", &pcr])
            .unwrap()
            .into_config_on(false)
            .is_err());
        let c = args(&["--mock", "--usock", "/tmp/x", "--mock-pcr", &pcr])
            .unwrap()
            .into_config_on(false)
            .unwrap();
        assert_eq!(c.mock.pcrs[&0], [0xab; 48]);
    }

    #[test]
    fn mock_pcr_parsing() {
        assert!(parse_mock_pcr("0").is_err());
        assert!(parse_mock_pcr("x=00").is_err());
        assert!(parse_mock_pcr("0=zz").is_err());
        assert!(parse_mock_pcr("0=00").is_err());
        assert_eq!(
            parse_mock_pcr(&format!("4={}", "01".repeat(48))).unwrap().0,
            4
        );
    }

    #[test]
    fn ttl_bounds_checked() {
        assert!(args(&["--ttl-max", "7200"])
            .unwrap()
            .into_config_on(false)
            .is_err());
        assert!(args(&["--ttl-min", "10"])
            .unwrap()
            .into_config_on(false)
            .is_err());
        assert!(args(&["--ttl-default", "30"])
            .unwrap()
            .into_config_on(false)
            .is_err());
        let c = args(&["--ttl-default", "900", "--audience", "a", "--audience", "b"])
            .unwrap()
            .into_config_on(false)
            .unwrap();
        assert_eq!(c.policy.resolve_ttl(None).unwrap(), 900);
        assert_eq!(c.policy.audiences(), ["a", "b"]);
    }

    #[test]
    fn the_kms_key_arn_is_required_and_pinned() {
        let c = config(&[]).unwrap();
        assert_eq!(c.kms_settings().key.as_str(), KEY_ARN);
        assert_eq!(c.kms_settings().key.region(), "eu-west-1");
        assert!(
            Args::try_parse_from(["agentkeys-enclave", "--issuer", "https://i.example"]).is_err()
        );
        for bad in [
            "alias/agentkeys",
            "arn:aws:kms:eu-west-1:111122223333:alias/a",
            "k",
        ] {
            let e = args(&[]).map(|mut a| {
                a.kms_key_arn = bad.into();
                a.into_config_on(false)
            });
            assert!(
                matches!(e, Ok(Err(ConfigError::KmsKeyArn(_)))),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn mock_needs_a_unix_socket_and_no_nsm_device() {
        assert_eq!(config(&["--mock"]).unwrap_err(), ConfigError::MockOnVsock);
        assert!(config(&["--mock", "--usock", "/tmp/x"]).is_ok());
        let on_nitro = args(&["--mock", "--usock", "/tmp/x"])
            .unwrap()
            .into_config_on(true);
        assert_eq!(
            on_nitro.unwrap_err(),
            ConfigError::MockWithNsmDevice { device: NSM_DEVICE }
        );
        // Without --mock the device is what the enclave uses.
        assert!(args(&[]).unwrap().into_config_on(true).is_ok());
    }

    #[test]
    fn authorization_modes_and_session_keys() {
        use crate::authz::AuthMode;
        let c = config(&[]).unwrap();
        assert_eq!(c.auth.modes(), [AuthMode::SignedSession]);
        assert_eq!(c.auth.session_keys(), [THUMBPRINT]);
        assert_eq!(c.auth.domain(), "issuer.example.com");
        let c = config(&["--auth-mode", "wallet-signature,signed-session"]).unwrap();
        assert_eq!(
            c.auth.modes(),
            [AuthMode::SignedSession, AuthMode::WalletSignature]
        );
        let base = [
            "agentkeys-enclave",
            "--issuer",
            "https://i.example.com:8443/x",
            "--kms-key-arn",
            KEY_ARN,
        ];
        let only = |extra: &[&str]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            Args::try_parse_from(v).unwrap().into_config_on(false)
        };
        let vouched = only(&["--auth-mode", "parent-vouched"]).unwrap();
        assert_eq!(vouched.auth.modes(), [AuthMode::ParentVouched]);
        assert_eq!(
            only(&["--auth-mode", "wallet-signature"])
                .unwrap()
                .auth
                .domain(),
            "i.example.com:8443"
        );
        let refused = [
            (vec![], AuthConfigError::NoSessionKey),
            (
                vec!["--auth-mode", "magic"],
                AuthConfigError::UnknownMode("magic".into()),
            ),
            (
                vec!["--auth-mode", "parent-vouched,wallet-signature"],
                AuthConfigError::VouchedWithProof {
                    other: "wallet-signature",
                },
            ),
            (
                vec![
                    "--auth-mode",
                    "parent-vouched",
                    "--session-key-thumbprint",
                    THUMBPRINT,
                ],
                AuthConfigError::SessionKeyUnused,
            ),
            (
                vec!["--session-key-thumbprint", "abc"],
                AuthConfigError::Thumbprint("abc".into()),
            ),
        ];
        for (extra, expected) in refused {
            assert_eq!(
                only(&extra).unwrap_err(),
                ConfigError::Auth(expected),
                "{extra:?}"
            );
        }
        // A thumbprint may start with '-' (base64url), as a separate argument too.
        let dash = format!("-{}", &THUMBPRINT[1..]);
        let c = only(&[
            "--auth-mode",
            "signed-session",
            "--session-key-thumbprint",
            &dash,
        ])
        .unwrap();
        assert_eq!(c.auth.session_keys(), std::slice::from_ref(&dash));
        let five = [THUMBPRINT; 5].join(",");
        assert_eq!(
            only(&["--session-key-thumbprint", &five]).unwrap_err(),
            ConfigError::Auth(AuthConfigError::TooManySessionKeys { found: 5, max: 4 })
        );
    }

    const DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

    #[test]
    fn issuer_tls_is_on_only_with_an_acme_directory() {
        assert!(config(&[]).unwrap().issuer_tls.is_none());
        assert!(config(&["--acme-directory", ""])
            .unwrap()
            .issuer_tls
            .is_none());
        let c = config(&["--acme-directory", DIRECTORY]).unwrap();
        let tls = c.issuer_tls.unwrap();
        assert_eq!(tls.hostname, "issuer.example.com");
        assert_eq!(tls.directory.host, "acme-v02.api.letsencrypt.org");
        assert_eq!(tls.directory.port, 443);
        assert_eq!(tls.proxy_port, 8002);
        assert_ne!(tls.proxy_port, c.kms_proxy_port);
        assert_eq!(
            tls.listen,
            Address::Vsock {
                cid: agentkeys_wire::address::VSOCK_CID_ANY,
                port: 5001
            }
        );
        assert_eq!(tls.renew_before, None);
        for (flag, value) in [
            ("--acme-root", "/tmp/root.pem"),
            ("--acme-renew-before", "60"),
            ("--acme-contact", "mailto:ops@example.com"),
        ] {
            assert_eq!(
                config(&[flag, value]).unwrap_err(),
                ConfigError::NeedsAcmeDirectory {
                    flag: match flag {
                        "--acme-root" => "--acme-root",
                        "--acme-renew-before" => "--acme-renew-before",
                        _ => "--acme-contact",
                    }
                }
            );
        }
    }

    #[test]
    fn issuer_tls_flags_are_checked() {
        let with = |extra: &[&str]| {
            let mut v = vec!["--acme-directory", DIRECTORY];
            v.extend_from_slice(extra);
            config(&v)
        };
        assert_eq!(
            with(&["--acme-root", "/tmp/root.pem"]).unwrap_err(),
            ConfigError::NeedsMock {
                flag: "--acme-root"
            }
        );
        assert!(matches!(
            with(&["--acme-contact", "ops@example.com"]),
            Err(ConfigError::AcmeContact { .. })
        ));
        assert_eq!(
            with(&["--acme-renew-before", "0"]).unwrap_err(),
            ConfigError::RenewBefore
        );
        let c = with(&[
            "--acme-renew-before",
            "86400",
            "--acme-contact",
            "mailto:a@b.example",
        ])
        .unwrap()
        .issuer_tls
        .unwrap();
        assert_eq!(c.renew_before, Some(Duration::from_secs(86400)));
        assert_eq!(c.contact.as_deref(), Some("mailto:a@b.example"));
        assert_eq!(
            with(&["--mock", "--usock", "/tmp/x"]).unwrap_err(),
            ConfigError::MockTlsOnVsock
        );
        let mock = with(&["--mock", "--usock", "/tmp/x", "--tls-usock", "/tmp/t"]);
        // A production directory is refused in mock mode: only a loopback test CA.
        assert!(matches!(mock, Err(ConfigError::AcmeDirectory { .. })));
        let mock = config(&[
            "--mock",
            "--usock",
            "/tmp/x",
            "--tls-usock",
            "/tmp/t",
            "--acme-directory",
            "https://127.0.0.1:14000/dir",
            "--acme-root",
            "/tmp/root.pem",
        ])
        .unwrap()
        .issuer_tls
        .unwrap();
        assert_eq!(mock.listen, Address::Unix("/tmp/t".into()));
        assert!(mock.mock);
        assert_eq!(mock.directory.port, 14000);
    }

    #[test]
    fn acme_directory_rules() {
        for ok in [
            DIRECTORY,
            "https://acme.example.com:443/dir",
            "https://ACME.example.com/dir",
        ] {
            validate_acme_directory(ok, false).unwrap();
        }
        for bad in [
            "http://acme.example.com/dir",
            "https://acme.example.com:14000/dir",
            "https://127.0.0.1/dir",
            "https://localhost/dir",
            "https://u@acme.example.com/dir",
            "https://acme.example.com/dir?x=1",
            "https://acme.example.com/dir#f",
            "https://acme example.com/dir",
            "",
        ] {
            assert!(validate_acme_directory(bad, false).is_err(), "{bad}");
        }
        for ok in [
            "https://127.0.0.1:14000/dir",
            "https://localhost:14000/dir",
            "https://[::1]:14000/dir",
        ] {
            validate_acme_directory(ok, true).unwrap();
        }
        for bad in ["https://10.0.0.1:14000/dir", "http://127.0.0.1:14000/dir"] {
            assert!(validate_acme_directory(bad, true).is_err(), "{bad}");
        }
        let long = format!("https://acme.example.com/{}", "d".repeat(200));
        assert!(validate_acme_directory(&long, false).is_err());
    }

    #[test]
    fn the_certificate_name_is_the_issuer_dns_host() {
        assert_eq!(
            issuer_tls_hostname("https://Issuer.Example.com/path").unwrap(),
            "issuer.example.com"
        );
        for bad in [
            "http://issuer.example.com",
            "https://10.1.2.3",
            "https://[::1]",
            "https://localhost",
            "https://issuer_x.example.com",
        ] {
            assert!(issuer_tls_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn issuer_required() {
        assert!(Args::try_parse_from(["agentkeys-enclave"]).is_err());
    }
}
