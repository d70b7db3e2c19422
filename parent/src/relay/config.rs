//! Flags of the issuer listener (`agentkeys-broker serve --issuer-listen ...`), with
//! `BROKER_*` environment mirrors, and their validation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::config::ConfigError;

use super::{RelayConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS};

/// Name of the chain cache in the sealed seed's directory when `--issuer-chain-cache` is
/// not given.
pub const DEFAULT_CHAIN_CACHE_FILE: &str = "issuer-chain.pem";
/// Largest relay connection cap accepted (a sanity bound, as for `--max-connections`).
pub const MAX_ISSUER_MAX_CONNECTIONS: usize = 1_000_000;
/// Bounds of `--issuer-idle-timeout-ms`: below 1 s a TLS handshake over a slow link
/// could be cut; above 10 min a handful of silent clients hold slots for as long as
/// they like.
const IDLE_TIMEOUT_MS: (u64, u64) = (1_000, 600_000);
/// Bounds of `--issuer-connect-timeout-ms`: below 100 ms a loaded host could miss it;
/// above 60 s a client waits longer than any HTTP client's own connect timeout.
const CONNECT_TIMEOUT_MS: (u64, u64) = (100, 60_000);

/// Flags of the issuer listener.
#[derive(Clone, Debug, Default, Args)]
pub struct IssuerListenArgs {
    /// Listen for the issuer hostname here (e.g. `0.0.0.0:443`) and relay every connection,
    /// unread, to the enclave's TLS endpoint (`--enclave-tls`). The enclave terminates the
    /// issuer's TLS; the parent never sees its plaintext or its key.
    #[arg(long, env = "BROKER_ISSUER_LISTEN", value_name = "ADDR")]
    pub issuer_listen: Option<SocketAddr>,
    /// The enclave's TLS endpoint for the issuer hostname: `vsock:CID:5001` on Nitro,
    /// `unix:PATH` in mock mode. Required with `--issuer-listen`.
    #[arg(long, env = "BROKER_ENCLAVE_TLS", value_name = "ADDRESS")]
    pub enclave_tls: Option<String>,
    /// Where the issuer's public certificate chain is cached, and offered back to the
    /// enclave after each unseal (default: `issuer-chain.pem` beside `--sealed-seed`).
    #[arg(long, env = "BROKER_ISSUER_CHAIN_CACHE", value_name = "PATH")]
    pub issuer_chain_cache: Option<PathBuf>,
    /// Most issuer connections relayed at once; further ones are closed at once.
    #[arg(long, env = "BROKER_ISSUER_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub issuer_max_connections: usize,
    /// An issuer connection on which no byte moves either way for this long is closed, in
    /// milliseconds.
    #[arg(long, env = "BROKER_ISSUER_IDLE_TIMEOUT_MS", default_value_t = DEFAULT_IDLE_TIMEOUT.as_millis() as u64)]
    pub issuer_idle_timeout_ms: u64,
    /// Time to open the stream to the enclave's TLS endpoint, in milliseconds; the client
    /// is disconnected when it runs out.
    #[arg(long, env = "BROKER_ISSUER_CONNECT_TIMEOUT_MS", default_value_t = DEFAULT_CONNECT_TIMEOUT.as_millis() as u64)]
    pub issuer_connect_timeout_ms: u64,
}

/// The validated issuer listener.
#[derive(Clone, Debug)]
pub struct IssuerListenConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where and how to relay.
    pub relay: RelayConfig,
    /// The certificate chain cache.
    pub chain_cache: PathBuf,
}

/// Why the issuer listener's flags were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IssuerListenError {
    /// One of `--issuer-listen` / `--enclave-tls` without the other.
    #[error("--issuer-listen and --enclave-tls must be given together (only {given} is)")]
    Half {
        /// The flag that was given.
        given: &'static str,
    },
    /// `--enclave-tls` is not an address.
    #[error("--enclave-tls {address:?}: {reason}")]
    Address {
        /// The value given.
        address: String,
        /// Why.
        reason: String,
    },
    /// The issuer is not served over HTTPS, so there is no TLS for the enclave to end.
    #[error("--issuer-listen relays the issuer's TLS to the enclave, so --issuer must be an https:// URL, not {issuer:?}")]
    NotHttps {
        /// The issuer.
        issuer: String,
    },
    /// The issuer listener would take the mint API's address.
    #[error("--issuer-listen {addr} is the mint API's --bind; the issuer needs its own listener")]
    SameAsBind {
        /// The address.
        addr: SocketAddr,
    },
    /// A value is out of its allowed range ([`ConfigError::OutOfRange`]).
    #[error(transparent)]
    Range(#[from] ConfigError),
}

fn check_range(
    name: &'static str,
    value: u64,
    (min, max): (u64, u64),
) -> Result<u64, IssuerListenError> {
    crate::config::check_range(name, value, min, max)?;
    Ok(value)
}

impl IssuerListenArgs {
    /// Validates the flags: `None` when the issuer listener is off. `issuer` is the
    /// validated `--issuer`, `bind` the mint API's address, `sealed_seed` the sealed seed
    /// file (whose directory holds the chain cache by default).
    pub fn validate(
        &self,
        issuer: &str,
        bind: SocketAddr,
        sealed_seed: &Path,
    ) -> Result<Option<IssuerListenConfig>, IssuerListenError> {
        let (listen, address) = match (self.issuer_listen, &self.enclave_tls) {
            (None, None) => return Ok(None),
            (Some(_), None) => {
                return Err(IssuerListenError::Half {
                    given: "--issuer-listen",
                })
            }
            (None, Some(_)) => {
                return Err(IssuerListenError::Half {
                    given: "--enclave-tls",
                })
            }
            (Some(l), Some(a)) => (l, a),
        };
        let upstream = address.parse().map_err(|e: agentkeys_wire::AddressError| {
            IssuerListenError::Address {
                address: address.clone(),
                reason: e.to_string(),
            }
        })?;
        if !issuer.starts_with("https://") {
            return Err(IssuerListenError::NotHttps {
                issuer: issuer.to_string(),
            });
        }
        // Port 0 is any free port: two of those never collide.
        if listen == bind && listen.port() != 0 {
            return Err(IssuerListenError::SameAsBind { addr: listen });
        }
        let max_connections = check_range(
            "--issuer-max-connections",
            self.issuer_max_connections as u64,
            (1, MAX_ISSUER_MAX_CONNECTIONS as u64),
        )? as usize;
        let idle = check_range(
            "--issuer-idle-timeout-ms",
            self.issuer_idle_timeout_ms,
            IDLE_TIMEOUT_MS,
        )?;
        let connect = check_range(
            "--issuer-connect-timeout-ms",
            self.issuer_connect_timeout_ms,
            CONNECT_TIMEOUT_MS,
        )?;
        let chain_cache = self
            .issuer_chain_cache
            .clone()
            .unwrap_or_else(|| default_chain_cache(sealed_seed));
        Ok(Some(IssuerListenConfig {
            listen,
            relay: RelayConfig {
                upstream,
                max_connections,
                connect_timeout: Duration::from_millis(connect),
                idle_timeout: Duration::from_millis(idle),
            },
            chain_cache,
        }))
    }
}

/// `issuer-chain.pem` in the sealed seed's directory.
pub fn default_chain_cache(sealed_seed: &Path) -> PathBuf {
    match sealed_seed.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(DEFAULT_CHAIN_CACHE_FILE),
        _ => PathBuf::from(DEFAULT_CHAIN_CACHE_FILE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: IssuerListenArgs,
    }

    const ISSUER: &str = "https://issuer.example.com";
    const SEED: &str = "/var/lib/agentkeys/sealed-seed.bin";

    fn validate(args: &[&str]) -> Result<Option<IssuerListenConfig>, IssuerListenError> {
        let mut v = vec!["t"];
        v.extend_from_slice(args);
        T::try_parse_from(v).unwrap().a.validate(
            ISSUER,
            "127.0.0.1:8091".parse().unwrap(),
            Path::new(SEED),
        )
    }

    #[test]
    fn off_unless_both_flags_are_given() {
        assert!(validate(&[]).unwrap().is_none());
        assert_eq!(
            validate(&["--issuer-listen", "0.0.0.0:443"]).unwrap_err(),
            IssuerListenError::Half {
                given: "--issuer-listen"
            }
        );
        assert_eq!(
            validate(&["--enclave-tls", "vsock:16:5001"]).unwrap_err(),
            IssuerListenError::Half {
                given: "--enclave-tls"
            }
        );
    }

    #[test]
    fn defaults() {
        let c = validate(&[
            "--issuer-listen",
            "0.0.0.0:443",
            "--enclave-tls",
            "vsock:16:5001",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:443".parse().unwrap());
        assert_eq!(
            c.relay.upstream,
            agentkeys_wire::Address::Vsock {
                cid: 16,
                port: 5001
            }
        );
        assert_eq!(c.relay.max_connections, 1024);
        assert_eq!(c.relay.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.relay.connect_timeout, Duration::from_secs(2));
        assert_eq!(
            c.chain_cache,
            PathBuf::from("/var/lib/agentkeys/issuer-chain.pem")
        );
        assert_eq!(
            default_chain_cache(Path::new("sealed-seed.bin")),
            PathBuf::from("issuer-chain.pem")
        );
    }

    #[test]
    fn flags_and_bounds() {
        let c = validate(&[
            "--issuer-listen",
            "127.0.0.1:5001",
            "--enclave-tls",
            "unix:/run/tls.sock",
            "--issuer-chain-cache",
            "/tmp/chain.pem",
            "--issuer-max-connections",
            "8",
            "--issuer-idle-timeout-ms",
            "1500",
            "--issuer-connect-timeout-ms",
            "250",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.relay.max_connections, 8);
        assert_eq!(c.relay.idle_timeout, Duration::from_millis(1500));
        assert_eq!(c.relay.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.chain_cache, PathBuf::from("/tmp/chain.pem"));
        let both = [
            "--issuer-listen",
            "127.0.0.1:5001",
            "--enclave-tls",
            "unix:/x",
        ];
        for bad in [
            ["--issuer-max-connections", "0"],
            ["--issuer-idle-timeout-ms", "999"],
            ["--issuer-idle-timeout-ms", "600001"],
            ["--issuer-connect-timeout-ms", "99"],
            ["--issuer-connect-timeout-ms", "60001"],
        ] {
            let e = validate(&[&both[..], &bad[..]].concat()).unwrap_err();
            assert!(
                matches!(e, IssuerListenError::Range(ConfigError::OutOfRange { .. })),
                "{bad:?}"
            );
            assert!(e.to_string().contains(bad[0]), "{e}");
        }
    }

    #[test]
    fn a_bad_address_an_http_issuer_and_the_mint_address_are_refused() {
        let e = validate(&[
            "--issuer-listen",
            "127.0.0.1:5001",
            "--enclave-tls",
            "tcp:1",
        ])
        .unwrap_err();
        assert!(matches!(e, IssuerListenError::Address { .. }), "{e}");
        let e = validate(&[
            "--issuer-listen",
            "127.0.0.1:8091",
            "--enclave-tls",
            "unix:/x",
        ])
        .unwrap_err();
        assert!(matches!(e, IssuerListenError::SameAsBind { .. }), "{e}");
        let any = [
            "t",
            "--issuer-listen",
            "127.0.0.1:0",
            "--enclave-tls",
            "unix:/x",
        ];
        assert!(T::try_parse_from(any)
            .unwrap()
            .a
            .validate(ISSUER, "127.0.0.1:0".parse().unwrap(), Path::new(SEED))
            .is_ok());
        let v = [
            "t",
            "--issuer-listen",
            "127.0.0.1:5001",
            "--enclave-tls",
            "unix:/x",
        ];
        let e = T::try_parse_from(v)
            .unwrap()
            .a
            .validate(
                "http://127.0.0.1:8091",
                "127.0.0.1:8091".parse().unwrap(),
                Path::new(SEED),
            )
            .unwrap_err();
        assert!(matches!(e, IssuerListenError::NotHttps { .. }), "{e}");
    }
}
