//! Local stand-ins for the services the broker talks to, for the dev stack and tests:
//! AWS STS ([`sts`]), the session backend ([`backend`]), an ACME CA ([`pebble`], the
//! packaged Pebble) and, from `agentkeys-mock-nsm`, AWS KMS. Loopback only.

pub mod backend;
pub mod pebble;
pub mod sts;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

/// Which stand-in to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StandInKind {
    /// The STS query/XML stand-in.
    Sts,
    /// The session backend stand-in.
    Backend,
    /// The KMS stand-in (mock NSM root).
    Kms,
}

/// Flags of `agentkeys-dev stand-in`.
#[derive(Clone, Debug, Args)]
pub struct StandInArgs {
    /// Which stand-in.
    #[arg(value_enum)]
    pub kind: StandInKind,
    /// Listen address (loopback).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// KMS stand-in state file (its keys persist across runs).
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// KMS stand-in: write the CloudTrail records of attested calls to this file.
    #[arg(long)]
    pub cloudtrail_file: Option<PathBuf>,
    /// Backend stand-in: sign sessions with the P-256 key in this file (32 bytes of hex,
    /// created when missing), for this issuer (`--session-issuer`). Without it, sessions
    /// are random tokens (for `parent-vouched` enclaves).
    #[arg(long, requires = "session_issuer")]
    pub session_key: Option<PathBuf>,
    /// Backend stand-in: the issuer signed sessions name as their `aud`.
    #[arg(long, requires = "session_key")]
    pub session_issuer: Option<String>,
}

/// A non-blocking listener on 127.0.0.1:`port` (0 = any free port).
pub fn bind_loopback(port: u16) -> anyhow::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn tokio_listener(l: std::net::TcpListener) -> anyhow::Result<tokio::net::TcpListener> {
    Ok(tokio::net::TcpListener::from_std(l)?)
}

/// Serves the KMS stand-in on `listener`, its keys kept in `state_file` and the
/// CloudTrail records of its attested calls written to `cloudtrail_file`.
pub async fn spawn_kms(
    listener: std::net::TcpListener,
    state_file: Option<PathBuf>,
    cloudtrail_file: Option<PathBuf>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let config = agentkeys_mock_nsm::kms::KmsConfig::new()
        .state_file(state_file)
        .cloudtrail_file(cloudtrail_file);
    let l = tokio_listener(listener)?;
    Ok(tokio::spawn(async move {
        if let Err(e) = agentkeys_mock_nsm::kms::serve(l, config).await {
            tracing::error!(error = %e, "KMS stand-in stopped");
        }
    }))
}

/// Serves the STS stand-in on `listener`.
pub fn spawn_sts(listener: std::net::TcpListener) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let l = tokio_listener(listener)?;
    Ok(tokio::spawn(async move {
        if let Err(e) = standin_sts(l).await {
            tracing::error!(error = %e, "STS stand-in stopped");
        }
    }))
}

/// Serves the session-backend stand-in on `listener`.
pub fn spawn_backend(
    listener: std::net::TcpListener,
    signer: Option<backend::SessionSigner>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let l = tokio_listener(listener)?;
    Ok(tokio::spawn(async move {
        if let Err(e) = standin_backend(l, signer).await {
            tracing::error!(error = %e, "backend stand-in stopped");
        }
    }))
}

async fn standin_sts(l: tokio::net::TcpListener) -> std::io::Result<()> {
    sts::serve(l, Default::default()).await
}

async fn standin_backend(
    l: tokio::net::TcpListener,
    signer: Option<backend::SessionSigner>,
) -> std::io::Result<()> {
    backend::serve(l, signer).await
}

/// `agentkeys-dev stand-in KIND --listen ADDR`.
pub async fn run_stand_in(args: StandInArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        bail!("stand-ins listen on loopback only; {} is not", args.listen);
    }
    let l = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    l.set_nonblocking(true)?;
    let addr = l.local_addr()?;
    println!("{:?} stand-in listening on http://{addr}", args.kind);
    let task = match args.kind {
        StandInKind::Sts => spawn_sts(l)?,
        StandInKind::Backend => {
            let signer = match (&args.session_key, &args.session_issuer) {
                (Some(key), Some(issuer)) => {
                    let signer = backend::SessionSigner::load_or_create(key, issuer)?;
                    println!("session key thumbprint {}", signer.thumbprint());
                    Some(signer)
                }
                _ => None,
            };
            spawn_backend(l, signer)?
        }
        StandInKind::Kms => spawn_kms(l, args.state_file, args.cloudtrail_file).await?,
    };
    tokio::select! {
        _ = agentkeys_broker::http::shutdown_signal() => {},
        _ = task => {},
    }
    Ok(())
}
