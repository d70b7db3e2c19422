//! Helpers for end-to-end tests: locate (and if needed build) the shipped binaries, start
//! `agentkeys-dev dev` in a temporary data directory, wait for it, and stop it (its
//! whole process group) on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;

pub mod faults;
pub mod fleet;
pub mod issuer_tls;
pub mod postgres;

/// The wallet most tests use.
pub const WALLET: &str = "0x00000000000000000000000000000000000000aa";

/// The figures `agentkeys-bench --json` prints for each mint phase, named without the
/// phase's prefix (none for the plain phase, `https_` for the HTTPS one): the benchmark's
/// own test and the short run's test both hold its output to this list.
pub const MINT_PHASE_FIELDS: [&str; 10] = [
    "requests_per_second",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "errors",
    "audit_rows_match",
    "cpu_us_per_mint",
    "broker_cpu_us_per_mint",
    "enclave_cpu_us_per_mint",
    "audit_writer_cpu_us_per_mint",
];

/// How long a dev stack may take to become ready (a cold debug build on 2 cores).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The directory holding the workspace binaries of the profile the tests were built with
/// (`target/<profile>`), derived from the test executable's path (`target/<profile>/deps/…`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

static BUILT: OnceLock<Result<(), String>> = OnceLock::new();

const BINARIES: [&str; 4] = [
    "agentkeys-broker",
    "agentkeys-dev",
    "agentkeys-enclave",
    "agentkeys-attest",
];

/// Where a test host's broker finds what it serves with.
pub struct BrokerHost<'a> {
    /// The `agentkeys-broker` binary.
    pub binary: &'a Path,
    /// `--issuer`.
    pub issuer: &'a str,
    /// `--bind` (`IP:PORT`).
    pub bind: &'a str,
    /// The session backend.
    pub backend_url: &'a str,
    /// The enclave's Unix socket.
    pub enclave_socket: &'a Path,
    /// The sealed seed file.
    pub sealed_seed: &'a Path,
    /// The KMS key the enclave is pinned to.
    pub kms_key_arn: &'a str,
    /// The KMS stand-in.
    pub kms_url: &'a str,
}

/// `agentkeys-broker serve` for a test host: issuer, listener, backend, enclave, sealed
/// seed, the KMS stand-in (its fixed, non-secret dev credentials) and the data role, with
/// INFO logs; each harness adds what its hosts differ in.
pub fn broker_serve(host: &BrokerHost<'_>) -> Command {
    let mut serve = Command::new(host.binary);
    serve
        .arg("serve")
        .args(["--issuer", host.issuer])
        .args(["--bind", host.bind])
        .args(["--backend-url", host.backend_url])
        .arg("--enclave")
        .arg(format!("unix:{}", host.enclave_socket.display()))
        .arg("--sealed-seed")
        .arg(host.sealed_seed)
        .args(["--kms-key-id", host.kms_key_arn])
        .args(["--kms-endpoint", host.kms_url])
        .args(["--kms-access-key-id", "AKIADEVSTACK000000000"])
        .args(["--kms-secret-access-key", "dev-stack-not-a-secret"])
        .env(
            "BROKER_DATA_ROLE_ARN",
            "arn:aws:iam::000000000000:role/agentkeys-data-role",
        )
        .env("AGENTKEYS_LOG", "info");
    serve
}

/// Path of a shipped binary. Once per test run, `cargo build --bins --tests --workspace`
/// (same profile as the tests) makes sure the binaries exist and are current. `--tests`
/// resolves features as `cargo test` does, so this finds the binaries `cargo test` and
/// `scripts/test.sh` built instead of building a second variant of the workspace.
pub fn binary(name: &str) -> PathBuf {
    let dir = bin_dir();
    let built = BUILT.get_or_init(|| {
        // Up to date binaries make this a quick no-op; AGENTKEYS_E2E_NO_BUILD=1 skips it
        // when the binaries exist (e.g. prebuilt in CI).
        if std::env::var_os("AGENTKEYS_E2E_NO_BUILD").is_some()
            && BINARIES.iter().all(|b| dir.join(b).exists())
        {
            return Ok(());
        }
        let profile = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        // `cargo test` gives this process the test crate's CARGO_MANIFEST_DIR, CARGO_PKG_*,
        // ...; build scripts that watch those variables (ring's does) would rerun, and
        // everything above them would be rebuilt, if the inner cargo inherited them.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(set_by_cargo_for_the_test_crate) {
                cmd.env_remove(&key);
            }
        }
        cmd.current_dir(workspace_root())
            .args(["build", "--bins", "--tests", "--workspace"]);
        if profile == "release" {
            cmd.arg("--release");
        } else if profile != "debug" {
            cmd.args(["--profile", &profile]);
        }
        match cmd.status() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!(
                "cargo build --bins --tests --workspace failed: {s}"
            )),
            Err(e) => Err(format!("cannot run cargo: {e}")),
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    let p = dir.join(name);
    assert!(p.exists(), "{} does not exist", p.display());
    p
}

/// Whether `name` is one of the variables `cargo test` sets for the crate under test
/// (<https://doc.rust-lang.org/cargo/reference/environment-variables.html>), as opposed
/// to the user's own cargo settings such as `CARGO_TARGET_DIR` or `CARGO_HOME`.
fn set_by_cargo_for_the_test_crate(name: &str) -> bool {
    const PREFIXES: [&str; 4] = [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_BIN_",
        "CARGO_CRATE_",
    ];
    const NAMES: [&str; 2] = ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR"];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

/// The ready file of `agentkeys-dev dev`.
#[derive(Debug, Clone, Deserialize)]
pub struct ReadyInfo {
    /// Broker base URL (also the issuer).
    pub broker_url: String,
    /// Session backend.
    pub backend_url: String,
    /// STS endpoint.
    pub sts_url: String,
    /// KMS stand-in.
    pub kms_url: String,
    /// Mock root PEM file.
    pub mock_root_pem: PathBuf,
    /// Enclave child pid.
    pub enclave_pid: u32,
    /// Audit DB.
    pub audit_db: PathBuf,
    /// The KMS stand-in's CloudTrail records of attested calls.
    pub kms_cloudtrail: PathBuf,
    /// Data directory.
    pub data_dir: PathBuf,
}

/// Options for [`DevStack::start`].
#[derive(Debug, Clone, Default)]
pub struct DevOptions {
    /// Extra flags for `agentkeys-dev dev`.
    pub extra: Vec<String>,
    /// Reuse this data directory instead of a new temporary one.
    pub data_dir: Option<PathBuf>,
}

/// A running `agentkeys-dev dev`.
pub struct DevStack {
    child: Option<Child>,
    /// Ready-file contents.
    pub info: ReadyInfo,
    /// Ready file path.
    pub ready_file: PathBuf,
    /// Temporary directory (kept alive while the stack runs).
    pub tmp: Option<tempfile::TempDir>,
    /// Log file of the dev process (stdout+stderr).
    pub log: PathBuf,
    /// Blocking HTTP client.
    pub http: reqwest::blocking::Client,
}

impl DevStack {
    /// Starts a dev stack with default options.
    pub fn start() -> DevStack {
        Self::start_with(DevOptions::default())
    }

    /// Starts a dev stack and waits until its ready file appears.
    pub fn start_with(opts: DevOptions) -> DevStack {
        Self::try_start(opts).expect("dev stack starts")
    }

    /// [`DevStack::start_with`] returning errors.
    pub fn try_start(opts: DevOptions) -> anyhow::Result<DevStack> {
        let dev = binary("agentkeys-dev");
        let tmp = tempfile::Builder::new().prefix("ak-e2e").tempdir()?;
        let data_dir = opts
            .data_dir
            .clone()
            .unwrap_or_else(|| tmp.path().join("data"));
        let ready_file = tmp.path().join("ready.json");
        let log = tmp.path().join("dev.log");
        let log_file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(dev);
        cmd.arg("dev")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--ready-file")
            .arg(&ready_file)
            .args(if opts.extra.iter().any(|a| a == "--port") {
                &[][..]
            } else {
                &["--port", "0"][..]
            })
            .args(&opts.extra)
            .env("AGENTKEYS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().context("spawn agentkeys-dev dev")?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready_file) {
                if let Ok(info) = serde_json::from_str::<ReadyInfo>(&text) {
                    let http = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(20))
                        .build()?;
                    return Ok(DevStack {
                        child: Some(child),
                        info,
                        ready_file,
                        tmp: Some(tmp),
                        log,
                        http,
                    });
                }
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "dev exited with {status} before ready:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                kill_group(&mut child);
                bail!(
                    "dev not ready after {READY_TIMEOUT:?}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The dev process's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Re-reads the ready file (the enclave pid changes when the child is restarted).
    pub fn reload_info(&mut self) -> anyhow::Result<ReadyInfo> {
        let text = std::fs::read_to_string(&self.ready_file)?;
        self.info = serde_json::from_str(&text)?;
        Ok(self.info.clone())
    }

    /// Broker URL + path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.info.broker_url)
    }

    /// Creates a session for `wallet` at the backend stand-in; returns the bearer.
    pub fn create_session(&self, wallet: &str) -> String {
        let v: serde_json::Value = self
            .http
            .post(format!("{}/session/create", self.info.backend_url))
            .json(&serde_json::json!({ "wallet": wallet }))
            .send()
            .expect("backend answers")
            .json()
            .expect("backend JSON");
        v["token"].as_str().expect("token").to_string()
    }

    /// POSTs to a broker route with an optional bearer and body; returns status + text.
    pub fn post(&self, path: &str, bearer: Option<&str>, body: &str) -> (u16, String) {
        let mut rb = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(b) = bearer {
            rb = rb.bearer_auth(b);
        }
        let r = rb.send().expect("broker answers");
        let status = r.status().as_u16();
        (status, r.text().unwrap_or_default())
    }

    /// GETs a broker route; returns status + bytes.
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let r = self
            .http
            .get(self.url(path))
            .send()
            .expect("broker answers");
        let status = r.status().as_u16();
        (status, r.bytes().map(|b| b.to_vec()).unwrap_or_default())
    }

    /// The value of the unlabelled metric `name` in `GET /metrics`; -1 when it is absent.
    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(-1.0)
    }

    /// The `kid` of the first key the broker's JWKS serves.
    pub fn served_kid(&self) -> String {
        let (_, body) = self.get("/.well-known/jwks.json");
        let jwks: serde_json::Value = serde_json::from_slice(&body).expect("JWKS");
        jwks["keys"][0]["kid"].as_str().expect("kid").to_string()
    }

    /// The measurements file of the mock enclave image, which the dev stack writes into
    /// its data directory (`agentkeys-attest`/`audit verify --measurements`).
    pub fn mock_measurements(&self) -> PathBuf {
        self.info.data_dir.join("mock-measurements.json")
    }

    /// Audit rows (newest last) through `agentkeys-broker audit tail --json`.
    pub fn audit_rows(&self) -> Vec<serde_json::Value> {
        audit_rows(&self.info.audit_db)
    }

    /// Stops the stack (SIGTERM to the process group, then SIGKILL) and waits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_group(&mut c);
        }
    }
}

impl Drop for DevStack {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kill_group(child: &mut Child) {
    let pgid = format!("-{}", child.id());
    let _ = Command::new("kill")
        .args(["-TERM", "--", &pgid])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            // The group may still hold the enclave child; make sure it is gone.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &pgid])
                .stderr(Stdio::null())
                .status();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill")
        .args(["-KILL", "--", &pgid])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
}

/// Sends `signal` (e.g. `KILL`, `STOP`, `CONT`) to `pid`; a failed `kill` (no such
/// process) fails the test.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("run kill -{signal} {pid}: {e}"));
    assert!(
        status.success(),
        "kill -{signal} {pid} failed ({status}): no such process, so the test holds a stale pid"
    );
}

/// Stops `pid` with SIGSTOP and returns once the kernel reports it stopped (state `T` in
/// `/proc/PID/stat`), so nothing the test sends next can be answered by it.
pub fn stop(pid: u32) {
    signal(pid, "STOP");
    let stat = format!("/proc/{pid}/stat");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&stat).unwrap_or_default();
        // The state follows the parenthesised command name (proc(5)).
        let state = text
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        if state == Some('T') {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pid {pid} not stopped 5 s after SIGSTOP: {text:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Runs a shipped binary with arguments; returns its output.
pub fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(binary(bin))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"))
}

/// Splits audit rows into the `enclave_unsealed` rows (one per enclave boot, written
/// before the boot serves) and the rows about requests.
pub fn split_boot_rows(
    rows: Vec<serde_json::Value>,
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    rows.into_iter()
        .partition(|r| r["event"] == "enclave_unsealed")
}

/// Audit rows of `db` (oldest first) through `agentkeys-broker audit tail --json`.
pub fn audit_rows(db: &Path) -> Vec<serde_json::Value> {
    let out = run(
        "agentkeys-broker",
        &[
            "audit",
            "tail",
            "--db",
            &db.display().to_string(),
            "-n",
            "100000",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "audit tail failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("audit tail JSON line"))
        .collect()
}

/// A loopback port nobody listens on (bound then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A loopback server that accepts connections and never answers (a hung backend).
pub fn blackhole() -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let h = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
            if held.len() > 64 {
                break;
            }
        }
    });
    (port, h)
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(anyhow!("condition not met within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::set_by_cargo_for_the_test_crate;

    #[test]
    fn the_test_crates_own_cargo_variables_are_recognised() {
        for name in [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_EXE_agentkeys-bench",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
        ] {
            assert!(set_by_cargo_for_the_test_crate(name), "{name}");
        }
    }

    #[test]
    fn the_users_cargo_settings_are_kept() {
        for name in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_JOBS",
            "CARGO_INCREMENTAL",
            "RUSTFLAGS",
            "PATH",
        ] {
            assert!(!set_by_cargo_for_the_test_crate(name), "{name}");
        }
    }
}
