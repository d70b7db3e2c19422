//! What every command-line program of the broker side does around its command: logging
//! to standard error filtered by `AGENTKEYS_LOG`, a multi-threaded tokio runtime, and one
//! `error: …` line with exit code 1 for a command that fails.

use std::future::Future;
use std::process::ExitCode;

/// Logs to standard error at the level `AGENTKEYS_LOG` names (`info` by default).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENTKEYS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Starts logging and a runtime, runs `command` on it, and turns its error into a
/// printed `error: …` (with its causes) and a failing exit code.
pub fn run(command: impl Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
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
    match runtime.block_on(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
