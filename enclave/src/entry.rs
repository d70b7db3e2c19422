//! Entry point of the `agentkeys-enclave` process: command line, logging, async runtime
//! and exit code around [`crate::server::run`].

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use crate::config::Args;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as text or JSON lines.
fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A subscriber may already be installed when embedded; that is fine.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Entry point of the binary (and of any process that wants to run the same code, such
/// as the parent's dev stack): parses `args` (including the program name), runs the
/// enclave service on a fresh Tokio runtime and returns the exit code.
pub fn run_from_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(args.log_json);
    if args.mock && !cfg!(feature = "mock") {
        eprintln!(
            "agentkeys-enclave: --mock needs a build with the cargo feature `mock` \
             (cargo build -p agentkeys-enclave --features mock); this build talks only to /dev/nsm"
        );
        return ExitCode::from(2);
    }
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agentkeys-enclave: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("agentkeys-enclave: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "enclave stopped");
            eprintln!("agentkeys-enclave: {e}");
            ExitCode::FAILURE
        }
    }
}
