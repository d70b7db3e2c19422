//! `agentkeys-broker`: the parent broker (serve), the client command (creds), the audit
//! tools (audit verify|tail), the AWS policy generators (kms-policy, iam-oidc) and the
//! issuer's DNS CAA record (caa-record).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::path::PathBuf;
use std::process::ExitCode;

use agentkeys_broker::cli::audit::VerifyArgs;
use agentkeys_broker::cli::{audit, aws_policies, caa, creds, process};
use agentkeys_broker::{broker, config::ServeArgs};
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
    /// Print AWS credentials from the broker (AWS `credential_process`).
    Creds(creds::CredsArgs),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print the KMS key policy that binds the issuer seed to the attested enclave image.
    KmsPolicy(aws_policies::KmsPolicyArgs),
    /// Print the IAM OIDC provider command and the role trust policy for the issuer.
    IamOidc(aws_policies::IamOidcArgs),
    /// Print the DNS CAA record that lets only the enclave's attested ACME account obtain
    /// certificates for the issuer host.
    CaaRecord(caa::CaaArgs),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the audit log's hash chain and, with a checkpoint, that no row was dropped.
    Verify(Box<VerifyArgs>),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    process::run(async move {
        match cli.command {
            Command::Serve(args) => broker::run_serve(*args).await.map(|()| ExitCode::SUCCESS),
            Command::Creds(args) => {
                let out = creds::run_creds(&args).await?;
                println!("{out}");
                Ok(ExitCode::SUCCESS)
            }
            Command::Audit(AuditCommand::Tail { db, lines, json }) => {
                print!("{}", audit::tail(&db, lines, json)?);
                Ok(ExitCode::SUCCESS)
            }
            Command::Audit(AuditCommand::Verify(args)) => audit::run_verify(*args).await,
            Command::KmsPolicy(args) => {
                println!("{}", aws_policies::run_kms_policy(&args)?);
                Ok(ExitCode::SUCCESS)
            }
            Command::IamOidc(args) => {
                println!("{}", aws_policies::run_iam_oidc(&args)?);
                Ok(ExitCode::SUCCESS)
            }
            Command::CaaRecord(args) => {
                println!("{}", caa::run_caa_record(&args).await?);
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
