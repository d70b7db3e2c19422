//! `agentkeys-dev dev --api-tls`, from the real binary: refused without `--acme pebble`
//! (the parent would terminate the issuer's TLS), and with it a mint over HTTPS by a
//! client we did not write (curl, trusting only the CA the ready file names).
//!
//! The HTTPS test prints `SKIPPED: …` and passes when Pebble is not installed, unless
//! `AGENTKEYS_REQUIRE_PEBBLE=1`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use agentkeys_dev::standins::pebble::skip_reason;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

const DEV: &str = env!("CARGO_BIN_EXE_agentkeys-dev");
/// A cold debug build on 2 loaded cores may take this long to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the stack gets to stop after SIGTERM before its group is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// `agentkeys-dev dev` in a process group of its own (Pebble and the enclave child with
/// it), stopped on drop.
struct Stack {
    child: Child,
    log: PathBuf,
}

impl Stack {
    fn start(data_dir: &Path, ready: &Path, extra: &[&str]) -> Stack {
        let log = data_dir.with_extension("log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(DEV);
        cmd.arg("dev")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--ready-file")
            .arg(ready)
            .args(["--port", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        Stack {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn wait_ready(&mut self, ready: &Path) -> serde_json::Value {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(v) = std::fs::read(ready)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            {
                return v;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("dev exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "not ready after {READY_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status, once the stack has exited on its own within `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let Ok(pid) = i32::try_from(self.child.id()) else {
            return;
        };
        let group = Pid::from_raw(pid);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever of the group is left (Pebble, if the stack did not stop in time).
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl")
}

#[test]
fn api_tls_without_acme_pebble_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("d");
    // A stack that is not refused keeps running: it is stopped (with its group) on drop.
    let mut stack = Stack::start(&data_dir, &dir.path().join("ready.json"), &["--api-tls"]);
    let status = stack.wait_exit(READY_TIMEOUT);
    let log = stack.log();
    let status =
        status.unwrap_or_else(|| panic!("still running: --api-tls was not refused\n{log}"));
    assert!(!status.success(), "{log}");
    assert!(log.contains("--api-tls needs --acme pebble"), "{log}");
    assert!(log.contains("terminate the issuer's TLS"), "{log}");
    // Nothing was served and no key was made.
    assert!(!data_dir.join("api-tls-key.pem").exists());
}

#[test]
fn api_tls_with_acme_pebble_serves_mints_over_https() {
    if skip_reason().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let ready = dir.path().join("ready.json");
    let mut stack = Stack::start(&data, &ready, &["--acme", "pebble", "--api-tls"]);
    let info = stack.wait_ready(&ready);

    let broker = info["broker_url"].as_str().unwrap().to_string();
    assert!(broker.starts_with("https://127.0.0.1:"), "{info}");
    let ca = info["api_tls_ca_pem"].as_str().unwrap().to_string();
    assert_eq!(Path::new(&ca), data.join("api-tls-ca.pem"));
    assert!(info["issuer"]
        .as_str()
        .unwrap()
        .starts_with("https://issuer.agentkeys.test:"));
    let key = data.join("api-tls-key.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A session from the backend stand-in (plain HTTP on loopback).
    let backend = info["backend_url"].as_str().unwrap();
    let created = curl(&[
        "-X",
        "POST",
        &format!("{backend}/session/create"),
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"wallet":"0x00000000000000000000000000000000000000aa"}"#,
    ]);
    assert!(created.status.success(), "{created:?}");
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let token = created["token"].as_str().unwrap();

    // The mint over HTTPS, curl trusting only the stack's CA.
    let mint = format!("{broker}/v1/mint-oidc-jwt");
    let auth = format!("authorization: Bearer {token}");
    let out = curl(&["--fail", "--cacert", &ca, "-X", "POST", &mint, "-H", &auth]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        stack.log()
    );
    let minted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(minted["jwt"].as_str().unwrap().split('.').count(), 3);
    assert!(minted["audit_id"].as_i64().is_some(), "{minted}");

    // Without the CA, curl refuses the certificate: it is the stack's own, not a public one.
    let untrusted = curl(&["-X", "POST", &mint, "-H", &auth]);
    assert!(!untrusted.status.success(), "{untrusted:?}");
    // And plain HTTP on that port is not the mint API.
    let plain = curl(&[
        "--fail",
        "-X",
        "POST",
        &mint.replacen("https://", "http://", 1),
        "-H",
        &auth,
    ]);
    assert!(!plain.status.success(), "{plain:?}");
}
