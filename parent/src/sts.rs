//! The STS exchange behind `/v1/mint-aws-creds`: `AssumeRoleWithWebIdentity` with the
//! enclave-signed JWT (no parent credentials), or the older `AssumeRole` mode.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials as SdkCredentials;
use aws_sdk_sts::config::{Region, SharedCredentialsProvider};
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::types::Tag;
use zeroize::Zeroizing;

use crate::config::{BrokerConfig, DaemonCredentials, StsMode};

/// Session tag key carrying the wallet in assume-role mode (the same name as the JWT's
/// principal tag: `docs/architecture.md`, "Tokens").
pub const WALLET_TAG_KEY: &str = "agentkeys_user_wallet";

/// Temporary credentials returned to the client. The secret access key and session
/// token are zeroized when dropped and never shown by `Debug`.
pub struct IssuedCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Zeroizing<String>,
    /// Session token.
    pub session_token: Zeroizing<String>,
    /// Expiration, RFC 3339.
    pub expiration: String,
}

impl std::fmt::Debug for IssuedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &"<redacted>")
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// An STS failure: the STS error code (or a transport class) and message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{code}: {message}")]
pub struct StsError {
    /// STS error code (`InvalidIdentityToken`, …) or `Timeout`/`Unreachable`/`NoRoleArn`.
    pub code: String,
    /// Message.
    pub message: String,
}

/// Role session name derived from the wallet: `agentkeys-<wallet>` (52 characters, within
/// STS's `[\w+=,.@-]{2,64}`); anything outside the alphabet becomes `-`.
pub fn session_name(wallet: &str) -> String {
    let mut name: String = format!("agentkeys-{wallet}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    // STS limit: 64 characters.
    name.truncate(64);
    name
}

/// Clamps a requested duration into STS's [900, 43200] and the configured maximum.
pub fn bounded_duration(requested: Option<u32>, configured: u32) -> u32 {
    requested
        .unwrap_or(configured)
        .clamp(crate::config::STS_DURATION_MIN_SECONDS, configured)
}

/// The STS client for the configured mode.
#[derive(Clone)]
pub struct StsExchanger {
    client: aws_sdk_sts::Client,
    mode: StsMode,
    role_arn: Option<String>,
    duration_seconds: u32,
}

impl StsExchanger {
    /// Builds the client. Web-identity mode uses no credentials at all; assume-role mode
    /// uses `DAEMON_*` or the default provider chain.
    pub async fn new(config: &BrokerConfig) -> StsExchanger {
        let timeouts = aws_sdk_sts::config::timeout::TimeoutConfig::builder()
            .operation_timeout(config.sts_timeout)
            .connect_timeout(Duration::from_secs(3).min(config.sts_timeout))
            .build();
        let mut builder = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.sts_region.clone()))
            .timeout_config(timeouts)
            .retry_config(aws_sdk_sts::config::retry::RetryConfig::standard().with_max_attempts(2));
        if let Some(endpoint) = &config.sts_endpoint {
            builder = builder.endpoint_url(endpoint.clone());
        }
        if config.sts_mode == StsMode::AssumeRole {
            let provider = match &config.daemon_credentials {
                DaemonCredentials::Static {
                    access_key_id,
                    secret_access_key,
                } => SharedCredentialsProvider::new(SdkCredentials::new(
                    access_key_id.clone(),
                    secret_access_key.clone(),
                    None,
                    None,
                    "DAEMON_ACCESS_KEY_ID",
                )),
                DaemonCredentials::DefaultChain => {
                    let loaded = aws_config::defaults(BehaviorVersion::latest())
                        .region(Region::new(config.sts_region.clone()))
                        .load()
                        .await;
                    match loaded.credentials_provider() {
                        Some(p) => p,
                        None => {
                            tracing::warn!("assume-role mode: no credentials in the default chain");
                            return StsExchanger {
                                client: aws_sdk_sts::Client::from_conf(builder.build()),
                                mode: config.sts_mode,
                                role_arn: config.role_arn.clone(),
                                duration_seconds: config.sts_duration_seconds,
                            };
                        }
                    }
                }
            };
            builder = builder.credentials_provider(provider);
        }
        StsExchanger {
            client: aws_sdk_sts::Client::from_conf(builder.build()),
            mode: config.sts_mode,
            role_arn: config.role_arn.clone(),
            duration_seconds: config.sts_duration_seconds,
        }
    }

    /// The mode.
    pub fn mode(&self) -> StsMode {
        self.mode
    }

    /// Exchanges `jwt` (web-identity) or the parent's credentials (assume-role) for
    /// temporary credentials for `wallet`.
    pub async fn exchange(
        &self,
        jwt: Option<&str>,
        wallet: &str,
        duration: Option<u32>,
    ) -> Result<IssuedCredentials, StsError> {
        let role_arn = self.role_arn.as_deref().ok_or_else(|| StsError {
            code: "NoRoleArn".into(),
            message: "no role ARN configured".into(),
        })?;
        let duration = bounded_duration(duration, self.duration_seconds) as i32;
        let name = session_name(wallet);
        let creds = match (self.mode, jwt) {
            (StsMode::WebIdentity, Some(jwt)) => {
                self.client
                    .assume_role_with_web_identity()
                    .role_arn(role_arn)
                    .role_session_name(name)
                    .web_identity_token(jwt)
                    .duration_seconds(duration)
                    .send()
                    .await
                    .map_err(map_sdk_error)?
                    .credentials
            }
            (StsMode::WebIdentity, None) => {
                return Err(StsError {
                    code: "Internal".into(),
                    message: "web-identity exchange without a token".into(),
                })
            }
            (StsMode::AssumeRole, _) => {
                let tag = Tag::builder()
                    .key(WALLET_TAG_KEY)
                    .value(wallet)
                    .build()
                    .map_err(|e| StsError {
                        code: "Internal".into(),
                        message: e.to_string(),
                    })?;
                self.client
                    .assume_role()
                    .role_arn(role_arn)
                    .role_session_name(name)
                    .duration_seconds(duration)
                    .tags(tag)
                    .transitive_tag_keys(WALLET_TAG_KEY)
                    .send()
                    .await
                    .map_err(map_sdk_error)?
                    .credentials
            }
        };
        let creds = creds.ok_or_else(|| StsError {
            code: "MalformedResponse".into(),
            message: "STS answer has no Credentials".into(),
        })?;
        check_issued_credentials(&creds, std::time::SystemTime::now())?;
        let expiration = creds
            .expiration()
            .fmt(aws_smithy_types_format())
            .map_err(|e| StsError {
                code: "MalformedResponse".into(),
                message: e.to_string(),
            })?;
        Ok(IssuedCredentials {
            access_key_id: creds.access_key_id().to_string(),
            secret_access_key: Zeroizing::new(creds.secret_access_key().to_string()),
            session_token: Zeroizing::new(creds.session_token().to_string()),
            expiration,
        })
    }
}

/// Refuses credentials that the SDK parsed from a truncated or garbled answer: it fills
/// missing members with empty strings and the epoch, which must never reach a client.
fn check_issued_credentials(
    creds: &aws_sdk_sts::types::Credentials,
    now: std::time::SystemTime,
) -> Result<(), StsError> {
    let malformed = |what: &str| StsError {
        code: "MalformedResponse".into(),
        message: format!("STS answer has {what}"),
    };
    // AWS access key ids are 16 to 128 characters (IAM `AccessKeyIdType`).
    if creds.access_key_id().len() < 16 {
        return Err(malformed("no valid AccessKeyId"));
    }
    if creds.secret_access_key().is_empty() {
        return Err(malformed("an empty SecretAccessKey"));
    }
    if creds.session_token().is_empty() {
        return Err(malformed("an empty SessionToken"));
    }
    let expiration = std::time::SystemTime::try_from(*creds.expiration())
        .map_err(|_| malformed("an Expiration out of range"))?;
    if expiration <= now {
        return Err(malformed("an Expiration in the past"));
    }
    Ok(())
}

fn aws_smithy_types_format() -> aws_sdk_sts::primitives::DateTimeFormat {
    aws_sdk_sts::primitives::DateTimeFormat::DateTime
}

fn map_sdk_error<E, R>(e: SdkError<E, R>) -> StsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            StsError {
                code: err.code().unwrap_or("Unknown").to_string(),
                message: err.message().unwrap_or("").to_string(),
            }
        }
        SdkError::TimeoutError(_) => StsError {
            code: "Timeout".into(),
            message: "STS did not answer in time".into(),
        },
        SdkError::DispatchFailure(d) => StsError {
            code: if d.is_timeout() {
                "Timeout".into()
            } else {
                "Unreachable".into()
            },
            message: format!("{d:?}").chars().take(300).collect(),
        },
        SdkError::ResponseError(_) => StsError {
            code: "MalformedResponse".into(),
            message: "STS answer could not be parsed".into(),
        },
        _ => StsError {
            code: "Unknown".into(),
            message: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_credentials_debug_redacts() {
        let c = IssuedCredentials {
            access_key_id: "ASIAEXAMPLEEXAMPLE".into(),
            secret_access_key: Zeroizing::new("SECRET-KEY-VALUE".into()),
            session_token: Zeroizing::new("SESSION-TOKEN-VALUE".into()),
            expiration: "2030-01-01T00:00:00Z".into(),
        };
        let dbg = format!("{c:?}");
        assert!(dbg.contains("ASIAEXAMPLEEXAMPLE"), "{dbg}");
        assert!(!dbg.contains("SECRET-KEY-VALUE"), "{dbg}");
        assert!(!dbg.contains("SESSION-TOKEN-VALUE"), "{dbg}");
    }

    fn valid(name: &str) -> bool {
        (2..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
    }

    #[test]
    fn session_names_are_valid() {
        let n = session_name("0x00000000000000000000000000000000000000aa");
        assert_eq!(n, "agentkeys-0x00000000000000000000000000000000000000aa");
        assert!(valid(&n));
        assert!(valid(&session_name("a b/c")));
        assert!(valid(&session_name(&"x".repeat(200))));
        assert!(valid(&session_name("")));
    }

    #[test]
    fn durations_are_bounded() {
        assert_eq!(bounded_duration(None, 3600), 3600);
        assert_eq!(bounded_duration(Some(1), 3600), 900);
        assert_eq!(bounded_duration(Some(100_000), 3600), 3600);
        assert_eq!(bounded_duration(Some(1200), 43_200), 1200);
    }
}

#[cfg(test)]
mod issued_credentials_tests {
    use super::check_issued_credentials;
    use aws_sdk_sts::primitives::DateTime;
    use aws_sdk_sts::types::Credentials;
    use std::time::{Duration, SystemTime};

    fn creds(key: &str, secret: &str, token: &str, expires_in: i64) -> Credentials {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        Credentials::builder()
            .access_key_id(key)
            .secret_access_key(secret)
            .session_token(token)
            .expiration(DateTime::from_secs(now + expires_in))
            .build()
            .unwrap()
    }

    #[test]
    fn complete_credentials_pass() {
        let c = creds("ASIAABCDEFGHIJKLMNOP", "secret", "token", 3600);
        assert!(check_issued_credentials(&c, SystemTime::now()).is_ok());
    }

    #[test]
    fn truncated_access_key_id_is_refused() {
        let c = creds("ASIA", "secret", "token", 3600);
        let e = check_issued_credentials(&c, SystemTime::now()).unwrap_err();
        assert_eq!(e.code, "MalformedResponse");
        assert!(e.message.contains("AccessKeyId"), "{}", e.message);
    }

    #[test]
    fn empty_secret_is_refused() {
        let c = creds("ASIAABCDEFGHIJKLMNOP", "", "token", 3600);
        let e = check_issued_credentials(&c, SystemTime::now()).unwrap_err();
        assert!(e.message.contains("SecretAccessKey"), "{}", e.message);
    }

    #[test]
    fn empty_session_token_is_refused() {
        let c = creds("ASIAABCDEFGHIJKLMNOP", "secret", "", 3600);
        let e = check_issued_credentials(&c, SystemTime::now()).unwrap_err();
        assert!(e.message.contains("SessionToken"), "{}", e.message);
    }

    #[test]
    fn expired_credentials_are_refused() {
        let c = creds("ASIAABCDEFGHIJKLMNOP", "secret", "token", -10);
        let e =
            check_issued_credentials(&c, SystemTime::now() + Duration::from_secs(1)).unwrap_err();
        assert!(e.message.contains("Expiration"), "{}", e.message);
    }
}
