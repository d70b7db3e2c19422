//! Client side: `agentkeys-broker creds`, usable as an AWS `credential_process`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

/// Environment variable holding the bearer when `--bearer-file` is not given.
pub const BEARER_ENV: &str = "AGENTKEYS_BEARER";
/// Time budget of the whole request (STS included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CredsFormat {
    /// AWS `credential_process` JSON (`Version: 1`).
    CredentialProcess,
    /// `export AWS_…=…` lines for a shell.
    Env,
    /// The broker's JSON answer.
    Json,
}

/// Flags of `agentkeys-broker creds`.
#[derive(Clone, Debug, Args)]
pub struct CredsArgs {
    /// Broker base URL.
    #[arg(long, env = "AGENTKEYS_BROKER_URL")]
    pub broker_url: String,
    /// File holding the bearer (otherwise `AGENTKEYS_BEARER`).
    #[arg(long)]
    pub bearer_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "credential-process")]
    pub format: CredsFormat,
    /// Requested STS duration in seconds.
    #[arg(long)]
    pub duration_seconds: Option<u32>,
}

/// Why `creds` failed.
#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    /// No bearer.
    #[error("no bearer: give --bearer-file or set {BEARER_ENV}")]
    NoBearer,
    /// The bearer file could not be read.
    #[error("cannot read bearer file {path}: {source}")]
    BearerFile {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Transport failure.
    #[error("request to {url} failed: {message}")]
    Transport {
        /// URL.
        url: String,
        /// Message.
        message: String,
    },
    /// The broker answered an error.
    #[error("broker answered HTTP {status}: {error}: {message}")]
    Broker {
        /// Status.
        status: u16,
        /// Error kind.
        error: String,
        /// Message.
        message: String,
    },
    /// The answer is not the expected JSON.
    #[error("unexpected answer from the broker: {0}")]
    Malformed(String),
}

/// The broker's credentials answer.
#[derive(Deserialize)]
pub struct CredsAnswer {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token.
    pub session_token: String,
    /// Expiration (RFC 3339).
    pub expiration: String,
    /// Wallet.
    pub wallet: String,
    /// Audit row id.
    pub audit_id: i64,
}

fn read_bearer(args: &CredsArgs) -> Result<String, CredsError> {
    let raw = match &args.bearer_file {
        Some(path) => std::fs::read_to_string(path).map_err(|source| CredsError::BearerFile {
            path: path.clone(),
            source,
        })?,
        None => std::env::var(BEARER_ENV).map_err(|_| CredsError::NoBearer)?,
    };
    let bearer = raw.trim().to_string();
    if bearer.is_empty() {
        return Err(CredsError::NoBearer);
    }
    Ok(bearer)
}

/// Renders credentials in `format`.
pub fn render(c: &CredsAnswer, format: CredsFormat) -> String {
    match format {
        CredsFormat::CredentialProcess => serde_json::json!({
            "Version": 1,
            "AccessKeyId": c.access_key_id,
            "SecretAccessKey": c.secret_access_key,
            "SessionToken": c.session_token,
            "Expiration": c.expiration,
        })
        .to_string(),
        CredsFormat::Env => format!(
            "export AWS_ACCESS_KEY_ID={}\nexport AWS_SECRET_ACCESS_KEY={}\nexport AWS_SESSION_TOKEN={}\nexport AWS_CREDENTIAL_EXPIRATION={}",
            c.access_key_id, c.secret_access_key, c.session_token, c.expiration
        ),
        CredsFormat::Json => serde_json::json!({
            "access_key_id": c.access_key_id,
            "secret_access_key": c.secret_access_key,
            "session_token": c.session_token,
            "expiration": c.expiration,
            "wallet": c.wallet,
            "audit_id": c.audit_id,
        })
        .to_string(),
    }
}

/// Fetches credentials and returns the rendered output.
pub async fn run_creds(args: &CredsArgs) -> Result<String, CredsError> {
    let bearer = read_bearer(args)?;
    let url = format!(
        "{}/v1/mint-aws-creds",
        args.broker_url.trim_end_matches('/')
    );
    let body = match args.duration_seconds {
        Some(d) => serde_json::json!({ "duration_seconds": d }).to_string(),
        None => "{}".to_string(),
    };
    let (status, text) = exchange(&url, |client| {
        client
            .post(&url)
            .bearer_auth(&bearer)
            .header("content-type", "application/json")
            .body(body)
    })
    .await?;
    if status != 200 {
        #[derive(Deserialize)]
        struct Err {
            error: String,
            message: String,
        }
        return Err(match serde_json::from_str::<Err>(&text) {
            Ok(e) => CredsError::Broker {
                status,
                error: e.error,
                message: e.message,
            },
            Err(_) => CredsError::Broker {
                status,
                error: "unknown".into(),
                message: text.chars().take(200).collect(),
            },
        });
    }
    let answer: CredsAnswer =
        serde_json::from_str(&text).map_err(|e| CredsError::Malformed(e.to_string()))?;
    Ok(render(&answer, args.format))
}

/// Sends the request `build` makes with a client bounded by [`REQUEST_TIMEOUT`] and
/// returns the status and body text; a transport failure names `url`.
async fn exchange(
    url: &str,
    build: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
) -> Result<(u16, String), CredsError> {
    let transport = |e: reqwest::Error| CredsError::Transport {
        url: url.to_owned(),
        message: crate::session::describe_reqwest(&e),
    };
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(transport)?;
    let response = build(&client).send().await.map_err(transport)?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(transport)?;
    Ok((status, text))
}

/// Fetches `GET {broker}/v1/audit/checkpoint?nonce=<hex>` and returns the JSON text.
pub async fn fetch_checkpoint(broker_url: &str, nonce: &[u8]) -> Result<String, CredsError> {
    let url = format!(
        "{}/v1/audit/checkpoint?nonce={}",
        broker_url.trim_end_matches('/'),
        hex::encode(nonce)
    );
    let (status, text) = exchange(&url, |client| client.get(&url)).await?;
    if status != 200 {
        return Err(CredsError::Broker {
            status,
            error: "checkpoint".into(),
            message: text.chars().take(300).collect(),
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> CredsAnswer {
        CredsAnswer {
            access_key_id: "ASIA1".into(),
            secret_access_key: "s".into(),
            session_token: "t".into(),
            expiration: "2030-01-01T00:00:00Z".into(),
            wallet: "0xw".into(),
            audit_id: 7,
        }
    }

    #[test]
    fn credential_process_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&render(&answer(), CredsFormat::CredentialProcess)).unwrap();
        assert_eq!(v["Version"], 1);
        assert_eq!(v["AccessKeyId"], "ASIA1");
        assert_eq!(v["SecretAccessKey"], "s");
        assert_eq!(v["SessionToken"], "t");
        assert_eq!(v["Expiration"], "2030-01-01T00:00:00Z");
    }

    #[test]
    fn env_shape() {
        let s = render(&answer(), CredsFormat::Env);
        assert!(s.contains("export AWS_ACCESS_KEY_ID=ASIA1"));
        assert!(s.contains("export AWS_SESSION_TOKEN=t"));
    }

    #[test]
    fn missing_bearer_file_is_an_error() {
        let args = CredsArgs {
            broker_url: "http://127.0.0.1:1".into(),
            bearer_file: Some("/nonexistent/bearer".into()),
            format: CredsFormat::Json,
            duration_seconds: None,
        };
        assert!(matches!(
            read_bearer(&args),
            Err(CredsError::BearerFile { .. })
        ));
    }

    #[test]
    fn empty_bearer_file_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("b");
        std::fs::write(&p, "\n").unwrap();
        let args = CredsArgs {
            broker_url: "http://127.0.0.1:1".into(),
            bearer_file: Some(p),
            format: CredsFormat::Json,
            duration_seconds: None,
        };
        assert!(matches!(read_bearer(&args), Err(CredsError::NoBearer)));
    }
}
