//! `agentkeys-enclave`: the enclave application (see `agentkeys_enclave`).

fn main() -> std::process::ExitCode {
    agentkeys_enclave::run_from_args(std::env::args_os())
}
