//! `agentkeys-dev`: the dev stack (`dev`), one stand-in alone (`stand-in`), and the
//! enclave child it starts (`enclave-child`, hidden).

use std::process::ExitCode;

use agentkeys_broker::cli::process;
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
    process::run(async move {
        match command {
            Command::Dev(args) => run_dev(args).await,
            Command::StandIn(args) => run_stand_in(args).await.map(|()| ExitCode::SUCCESS),
            Command::EnclaveChild(_) => Ok(ExitCode::FAILURE),
        }
    })
}
