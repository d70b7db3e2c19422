//! The enclave as a child process of the dev stack: the `agentkeys-enclave` code with the
//! mock NSM, run either by re-executing this program (`enclave-child`) or from a given
//! executable, listening on a Unix socket, restarted whenever it dies.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;

/// Unix socket paths are limited to 108 bytes (`sun_path`, unix(7)); longer data-dir
/// paths fall back to the temporary directory.
const MAX_SOCKET_PATH: usize = 100;

/// Flags of the hidden `enclave-child` subcommand: passed through to the enclave.
#[derive(Clone, Debug, Args)]
pub struct EnclaveChildArgs {
    /// Arguments of `agentkeys-enclave`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs the enclave application in this process (blocking; builds its own runtime).
pub fn run_enclave_child(args: EnclaveChildArgs) -> ExitCode {
    // The child dies with the dev process, even one killed with SIGKILL (an enclave
    // started from `--enclave-bin` relies on `kill_on_drop` and the caller's process group).
    if let Err(e) = set_pdeathsig(Signal::SIGKILL) {
        eprintln!("warning: the enclave child cannot follow its parent's death: {e}");
    }
    let mut argv = vec!["agentkeys-enclave".to_string()];
    argv.extend(args.args);
    agentkeys_enclave::run_from_args(argv)
}

/// The enclave's socket in `data_dir`, or in the temporary directory when that path is
/// too long for a Unix socket.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    let p = data_dir.join("enclave.sock");
    if p.as_os_str().len() <= MAX_SOCKET_PATH {
        p
    } else {
        std::env::temp_dir().join(format!("agentkeys-enclave-{}.sock", std::process::id()))
    }
}

/// The enclave child and its restarts.
pub struct EnclaveChild {
    program: PathBuf,
    args: Vec<String>,
    socket: PathBuf,
    pid: Arc<AtomicU32>,
    stopping: Arc<AtomicBool>,
}

impl EnclaveChild {
    /// A child running `program args`, listening on `socket`; not started yet.
    pub fn new(program: PathBuf, args: Vec<String>, socket: PathBuf) -> EnclaveChild {
        EnclaveChild {
            program,
            args,
            socket,
            pid: Arc::new(AtomicU32::new(0)),
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The process id of the running child (0 before the first start).
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::SeqCst)
    }

    /// A handle that reads the running child's process id, across restarts.
    pub fn pid_handle(&self) -> Arc<AtomicU32> {
        self.pid.clone()
    }

    /// Starts the child once (removing a stale socket first).
    pub fn spawn_once(&self) -> anyhow::Result<tokio::process::Child> {
        let _ = std::fs::remove_file(&self.socket);
        let mut cmd = tokio::process::Command::new(&self.program);
        // The enclave logs every request at info; the broker already logs what matters.
        let log = std::env::var("AGENTKEYS_ENCLAVE_LOG").unwrap_or_else(|_| "warn".to_string());
        cmd.args(&self.args)
            .env("RUST_LOG", log)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| {
            format!("cannot start the enclave child {}", self.program.display())
        })?;
        self.pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
        Ok(child)
    }

    /// Keeps the child running until `stop` flips; restarts it when it dies.
    pub async fn supervise(
        self,
        mut child: tokio::process::Child,
        mut stop: watch::Receiver<bool>,
        on_restart: impl Fn(u32) + Send + 'static,
    ) {
        loop {
            tokio::select! {
                status = child.wait() => {
                    if self.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    tracing::warn!(?status, "enclave child exited; restarting");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    match self.spawn_once() {
                        Ok(c) => {
                            child = c;
                            on_restart(self.pid.load(Ordering::SeqCst));
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "enclave restart failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            // Loop again with a child that has already exited.
                        }
                    }
                }
                _ = stop.changed() => {
                    self.stopping.store(true, Ordering::SeqCst);
                    terminate(&mut child).await;
                    let _ = std::fs::remove_file(&self.socket);
                    return;
                }
            }
        }
    }
}

async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    if tokio::time::timeout(Duration::from_secs(3), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
