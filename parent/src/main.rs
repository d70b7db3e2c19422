//! `agentkeys-broker`: the parent broker (serve), the mock dev stack (dev), the client
//! commands (creds) and the audit tools (audit verify|tail).

use std::path::PathBuf;
use std::process::ExitCode;

use agentkeys_broker::{app, audit, client, config::ServeArgs};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "agentkeys-broker",
    version,
    about = "AgentKeys Nitro broker (parent side)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker: the HTTP API in front of the enclave.
    Serve(Box<ServeArgs>),
    /// Run the whole system locally with mocks: enclave child, KMS/STS/backend stand-ins, broker.
    #[cfg(feature = "dev")]
    Dev(agentkeys_broker::dev::DevArgs),
    /// Run one stand-in alone (sts, backend or kms).
    #[cfg(feature = "dev")]
    StandIn(agentkeys_broker::dev::StandInArgs),
    /// Internal: run the enclave application (mock NSM) in this process.
    #[cfg(feature = "dev")]
    #[command(hide = true)]
    EnclaveChild(agentkeys_broker::dev::EnclaveChildArgs),
    /// Print AWS credentials from the broker (AWS `credential_process`).
    Creds(client::CredsArgs),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print the KMS key policy that binds the issuer seed to the attested enclave image.
    KmsPolicy(agentkeys_broker::policy::KmsPolicyArgs),
    /// Print the IAM OIDC provider command and the role trust policy for the issuer.
    IamOidc(agentkeys_broker::policy::IamOidcArgs),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the audit log's hash chain and, with a checkpoint, that no row was dropped.
    Verify(VerifyArgs),
    /// Show the most recent rows.
    Tail {
        /// Audit database.
        #[arg(long, env = "BROKER_AUDIT_DB")]
        db: PathBuf,
        /// Number of rows.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// Audit database.
    #[arg(long, env = "BROKER_AUDIT_DB")]
    db: PathBuf,
    /// Checkpoint file (JSON from /v1/audit/checkpoint, or an attestation document).
    #[arg(long, conflicts_with = "broker_url")]
    checkpoint: Option<PathBuf>,
    /// Fetch a fresh attested checkpoint from a running broker.
    #[arg(long)]
    broker_url: Option<String>,
    /// Root certificate (PEM) to verify the checkpoint document against, instead of the
    /// AWS Nitro Enclaves root.
    #[arg(long, alias = "root-pem", value_name = "PEM")]
    root: Option<PathBuf>,
    /// Accept the mock NSM root given by --root (development only).
    #[arg(long, requires = "root")]
    allow_mock_root: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The enclave child builds its own runtime and logging.
    #[cfg(feature = "dev")]
    if let Command::EnclaveChild(args) = cli.command {
        return agentkeys_broker::dev::run_enclave_child(args);
    }
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<ExitCode> = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => app::run_serve(*args).await.map(|()| ExitCode::SUCCESS),
            #[cfg(feature = "dev")]
            Command::Dev(args) => agentkeys_broker::dev::run_dev(args).await,
            #[cfg(feature = "dev")]
            Command::StandIn(args) => agentkeys_broker::dev::run_stand_in(args)
                .await
                .map(|()| ExitCode::SUCCESS),
            #[cfg(feature = "dev")]
            Command::EnclaveChild(_) => Ok(ExitCode::FAILURE),
            Command::Creds(args) => {
                let out = client::run_creds(&args).await?;
                println!("{out}");
                Ok(ExitCode::SUCCESS)
            }
            Command::Audit(AuditCommand::Tail { db, lines, json }) => {
                print!("{}", audit::cli::tail(&db, lines, json)?);
                Ok(ExitCode::SUCCESS)
            }
            Command::Audit(AuditCommand::Verify(args)) => verify(args).await,
            Command::KmsPolicy(args) => {
                println!("{}", agentkeys_broker::policy::run_kms_policy(&args)?);
                Ok(ExitCode::SUCCESS)
            }
            Command::IamOidc(args) => {
                println!("{}", agentkeys_broker::policy::run_iam_oidc(&args)?);
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let anchor = match (&args.root, args.allow_mock_root) {
        (None, _) => agentkeys_attestation::TrustAnchor::aws_nitro_root_g1(),
        (Some(p), allow_mock) => {
            let pem = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
            if allow_mock {
                mock_anchor(&pem)?
            } else {
                agentkeys_attestation::TrustAnchor::from_pem(&pem)?
            }
        }
    };
    let report = match (&args.broker_url, &args.checkpoint) {
        (Some(url), _) => {
            let nonce: [u8; 32] = rand::random();
            let fetched = client::fetch_checkpoint(url, &nonce).await?;
            let policy = agentkeys_attestation::Policy {
                nonce: Some(nonce.to_vec()),
                ..Default::default()
            };
            let trust = audit::verify::CheckpointTrust {
                anchor: &anchor,
                policy: &policy,
                at_unix_ms: now_ms(),
            };
            let cp = audit::verify::checkpoint_from_json(&fetched, Some(&trust))?;
            eprintln!(
                "enclave checkpoint (attested, fresh nonce): epoch {} seq {}",
                cp.epoch, cp.seq
            );
            audit::verify_chain(&args.db, Some(&cp))?
        }
        (None, Some(path)) => {
            let policy = agentkeys_attestation::Policy::default();
            let trust = audit::verify::CheckpointTrust {
                anchor: &anchor,
                policy: &policy,
                at_unix_ms: now_ms(),
            };
            audit::cli::verify_with_trust(&args.db, Some(path), Some(&trust))?
        }
        (None, None) => audit::cli::verify(&args.db, None)?,
    };
    print!("{}", report.render());
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(feature = "dev")]
fn mock_anchor(pem: &str) -> anyhow::Result<agentkeys_attestation::TrustAnchor> {
    Ok(agentkeys_attestation::TrustAnchor::mock_root_explicitly_trusted(pem)?)
}

#[cfg(not(feature = "dev"))]
fn mock_anchor(_pem: &str) -> anyhow::Result<agentkeys_attestation::TrustAnchor> {
    anyhow::bail!("--allow-mock-root needs a build with the `dev` feature")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENTKEYS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
