//! `agentkeys-enclave`: the enclave application (see `agentkeys_enclave`).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

fn main() -> std::process::ExitCode {
    agentkeys_enclave::run_from_args(std::env::args_os())
}
