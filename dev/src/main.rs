//! `agentkeys-dev`: the dev stack (`dev`), one stand-in alone (`stand-in`), and the
//! enclave child it starts (`enclave-child`, hidden).

use std::process::ExitCode;

use agentkeys_dev::enclave_child::{run_enclave_child, EnclaveChildArgs};
use agentkeys_dev::stack::{run_dev, DevArgs};
use agentkeys_dev::standins::{run_stand_in, StandInArgs};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "agentkeys-dev",
    version,
    about = "AgentKeys dev stack: the whole system on loopback with the mock Nitro platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system locally with mocks: enclave child, KMS/STS/backend stand-ins, broker.
    Dev(DevArgs),
    /// Run one stand-in alone (sts, backend or kms).
    StandIn(StandInArgs),
    /// Internal: run the enclave application (mock NSM) in this process.
    #[command(hide = true)]
    EnclaveChild(EnclaveChildArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The enclave child builds its own runtime and logging.
    let command = match cli.command {
        Command::EnclaveChild(args) => return run_enclave_child(args),
        other => other,
    };
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
    let result = runtime.block_on(async move {
        match command {
            Command::Dev(args) => run_dev(args).await,
            Command::StandIn(args) => run_stand_in(args).await.map(|()| ExitCode::SUCCESS),
            Command::EnclaveChild(_) => Ok(ExitCode::FAILURE),
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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENTKEYS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
