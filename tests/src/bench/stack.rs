//! Starting and stopping `agentkeys-dev dev` for a benchmark run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nix::sys::signal::Signal;
use serde::Deserialize;

/// How long the stack may take to write its ready file before the run is abandoned.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `dev` gets to stop after SIGINT before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The ready file written by `agentkeys-dev dev --ready-file`.
#[derive(Debug, Clone, Deserialize)]
pub struct ReadyInfo {
    /// The broker's base URL.
    pub broker_url: String,
    /// The session-backend stand-in.
    pub backend_url: String,
    /// The STS stand-in (in the `dev` process), when the file says so.
    #[serde(default)]
    pub sts_url: Option<String>,
    /// The enclave child process.
    pub enclave_pid: u32,
    /// The SQLite audit log.
    pub audit_db: PathBuf,
    /// The `dev` process itself (the broker runs inside it), when the file says so.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Every host's broker URL (`dev --hosts N`; absent from a one-host SQLite stack).
    #[serde(default)]
    pub broker_urls: Vec<String>,
    /// The issuer's TLS in the enclave (`dev --acme pebble`).
    #[serde(default)]
    pub issuer_tls: Option<IssuerTlsInfo>,
    /// The CA of the mint API's own TLS (`dev --api-tls`; the broker URL is then https).
    #[serde(default)]
    pub api_tls_ca_pem: Option<PathBuf>,
}

/// The ready file's `issuer_tls` member (`dev --acme pebble`, dev/src/pebble_mode.rs
/// `IssuerTlsReady`).
#[derive(Debug, Clone, Deserialize)]
pub struct IssuerTlsInfo {
    /// `https://<issuer host>:<port>`.
    pub issuer_url: String,
    /// The issuer's port on 127.0.0.1.
    pub tls_port: u16,
    /// Pebble's issuing root: what the issuer's clients trust.
    pub pebble_root_pem: PathBuf,
}

/// A running dev stack; stopped (SIGINT, then SIGKILL) when dropped.
pub struct DevStack {
    child: Option<Child>,
    /// What the stack reported once ready.
    pub info: ReadyInfo,
    /// Time from spawn to the ready file.
    pub ready_in: Duration,
    /// Combined stdout/stderr of `dev`.
    pub log: PathBuf,
}

/// The `agentkeys-dev` binary next to this executable.
pub fn sibling_dev_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
    let candidate = dir.join(format!("agentkeys-dev{}", std::env::consts::EXE_SUFFIX));
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!(
        "agentkeys-dev not found at {} (it must sit next to agentkeys-bench): run \
         `cargo build --release --workspace --bins` (or without --release for a debug build) first, \
         or pass --dev-bin PATH, or target a running broker with --url",
        candidate.display()
    )
}

/// `given` (joined with `sub` when that is not empty), or a fresh temporary directory
/// named after `prefix`, removed when the returned guard is dropped.
pub fn data_dir_or_temp(
    given: Option<&Path>,
    sub: &str,
    prefix: &str,
) -> anyhow::Result<(Option<tempfile::TempDir>, PathBuf)> {
    match given {
        Some(d) if sub.is_empty() => Ok((None, d.to_path_buf())),
        Some(d) => Ok((None, d.join(sub))),
        None => {
            let t = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .context("creating a temporary data directory")?;
            let d = t.path().to_path_buf();
            Ok((Some(t), d))
        }
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl DevStack {
    /// Spawns `agentkeys-dev dev` with `data_dir` and waits for its ready file.
    pub fn start(dev: &Path, data_dir: &Path) -> anyhow::Result<DevStack> {
        DevStack::start_with(dev, data_dir, &[])
    }

    /// [`start`](Self::start) with `extra` flags for `dev` (`--hosts`, `--audit-db`).
    pub fn start_with(dev: &Path, data_dir: &Path, extra: &[String]) -> anyhow::Result<DevStack> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let ready_file = data_dir.join("bench-ready.json");
        let _ = std::fs::remove_file(&ready_file);
        let log = data_dir.join("bench-dev.log");
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let port = free_port()?;
        let spawned_at = Instant::now();
        let child = Command::new(dev)
            .arg("dev")
            .arg("--ready-file")
            .arg(&ready_file)
            .arg("--data-dir")
            .arg(data_dir)
            .args(if extra.iter().any(|a| a == "--port") {
                Vec::new()
            } else {
                vec!["--port".to_string(), port.to_string()]
            })
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning {} dev", dev.display()))?;
        let mut stack = DevStack {
            child: Some(child),
            info: ReadyInfo {
                broker_url: String::new(),
                backend_url: String::new(),
                sts_url: None,
                enclave_pid: 0,
                audit_db: PathBuf::new(),
                pid: None,
                broker_urls: Vec::new(),
                issuer_tls: None,
                api_tls_ca_pem: None,
            },
            ready_in: Duration::ZERO,
            log,
        };
        loop {
            if let Ok(bytes) = std::fs::read(&ready_file) {
                if let Ok(info) = serde_json::from_slice::<ReadyInfo>(&bytes) {
                    stack.ready_in = spawned_at.elapsed();
                    stack.info = info;
                    return Ok(stack);
                }
            }
            if let Some(c) = stack.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    stack.child = None;
                    bail!(
                        "agentkeys-dev dev exited ({status}) before it was ready; its log \
                         ({}):\n{}",
                        stack.log.display(),
                        tail(&stack.log)
                    );
                }
            }
            if spawned_at.elapsed() > READY_TIMEOUT {
                bail!(
                    "agentkeys-dev dev was not ready after {READY_TIMEOUT:?}; its log ({}):\n{}",
                    stack.log.display(),
                    tail(&stack.log)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The process running the broker: the `dev` process itself.
    pub fn broker_pid(&self) -> Option<u32> {
        self.info
            .pid
            .or_else(|| self.child.as_ref().map(|c| c.id()))
    }

    /// Stops the stack: SIGINT, then SIGKILL after [`STOP_TIMEOUT`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // The pid of our own child, which has not been reaped.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGINT);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for DevStack {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last lines of a log file.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Peak resident set size (`VmHWM`) of `pid` in MiB, from `/proc/PID/status`.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm_kib(&status).map(|kib| kib as f64 / 1024.0)
}

/// Parses the `VmHWM:   1234 kB` line.
pub fn parse_vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut parts = line["VmHWM:".len()..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(n),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_parsed() {
        let s = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    5120 kB\nVmRSS:\t 4000 kB\n";
        assert_eq!(parse_vm_hwm_kib(s), Some(5120));
        assert_eq!(parse_vm_hwm_kib("Name: x\n"), None);
        assert_eq!(parse_vm_hwm_kib("VmHWM: lots kB\n"), None);
        assert_eq!(parse_vm_hwm_kib("VmHWM: 12 MB\n"), None);
    }

    #[test]
    fn own_peak_rss_is_readable() {
        let mib = peak_rss_mib(std::process::id()).unwrap();
        assert!(mib > 0.0);
    }

    #[test]
    fn ready_file_parses_with_extra_fields() {
        let j = r#"{"broker_url":"http://127.0.0.1:1","issuer":"x","backend_url":"http://127.0.0.1:2",
            "sts_url":"http://127.0.0.1:3","kms_url":"k","mock_root_pem":"/p","enclave_pid":5,
            "audit_db":"/d/audit.db","data_dir":"/d","pid":4}"#;
        let r: ReadyInfo = serde_json::from_str(j).unwrap();
        assert_eq!(r.enclave_pid, 5);
        assert_eq!(r.pid, Some(4));
        assert_eq!(r.sts_url.as_deref(), Some("http://127.0.0.1:3"));
        assert!(r.issuer_tls.is_none() && r.api_tls_ca_pem.is_none());
    }

    #[test]
    fn ready_file_of_the_https_mode_parses() {
        let j = r#"{"broker_url":"https://127.0.0.1:1","backend_url":"http://127.0.0.1:2",
            "enclave_pid":5,"audit_db":"/d/audit.db","pid":4,
            "api_tls_ca_pem":"/d/api-tls-ca.pem",
            "issuer_tls":{"issuer_url":"https://issuer.agentkeys.test:9","issuer_host":"issuer.agentkeys.test",
              "tls_port":9,"pebble_root_pem":"/d/root.pem","acme_directory":"https://127.0.0.1:8/dir"}}"#;
        let r: ReadyInfo = serde_json::from_str(j).unwrap();
        assert_eq!(
            r.api_tls_ca_pem.as_deref(),
            Some(Path::new("/d/api-tls-ca.pem"))
        );
        let t = r.issuer_tls.unwrap();
        assert_eq!(
            (t.tls_port, t.issuer_url.as_str()),
            (9, "https://issuer.agentkeys.test:9")
        );
    }
}
