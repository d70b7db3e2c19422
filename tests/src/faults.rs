//! Tools for fault-injection, hostile-input, secret-scanning and soak tests: process
//! groups that die with the test, a programmable session backend / STS that can be slow
//! or answer garbage, raw HTTP over TCP, RSS sampling, and a concurrent client driver
//! that records every answer it received.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;

use crate::binary;

/// The wallet the programmable backend vouches for.
pub const BACKEND_WALLET: &str = "0x00000000000000000000000000000000000000bb";
/// Bearers the programmable backend accepts start with this prefix; others get 401.
pub const GOOD_BEARER_PREFIX: &str = "good-";

/// A child process in its own process group; the whole group is killed on drop.
pub struct Group {
    child: Option<Child>,
    /// Process id (= process group id).
    pub pid: u32,
    /// Combined stdout/stderr log.
    pub log: PathBuf,
}

impl Group {
    /// Spawns `cmd` in a new process group with stdout and stderr appended to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<Group> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        cmd.stdin(Stdio::null()).stdout(f.try_clone()?).stderr(f);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", cmd.get_program().to_string_lossy()))?;
        Ok(Group {
            pid: child.id(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// Sends SIGKILL to the whole group and reaps the leader.
    pub fn kill(&mut self) {
        kill_group(self.pid, "KILL");
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Whether the leader has exited.
    pub fn exited(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.child.is_some() {
            kill_group(self.pid, "TERM");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && !self.exited() {
                std::thread::sleep(Duration::from_millis(20));
            }
            self.kill();
        }
    }
}

/// Sends `signal` to process group `pgid`.
pub fn kill_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// The full ready file of `agentkeys-dev dev` as JSON (includes `pid`, `sealed_seed`).
pub fn ready_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

/// `agentkeys-dev dev` started with custom environment (e.g. a debug log level),
/// in its own process group.
pub struct CustomDev {
    /// The process group.
    pub group: Group,
    /// The ready file contents.
    pub ready: serde_json::Value,
    /// Temporary directory holding the ready file and log.
    pub tmp: tempfile::TempDir,
}

impl CustomDev {
    /// Starts `dev` with `extra` flags and `env`, data in `data_dir` (or a temporary one).
    pub fn start(
        data_dir: Option<&Path>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<CustomDev> {
        let tmp = tempfile::Builder::new().prefix("ak-dev").tempdir()?;
        let data = data_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| tmp.path().join("data"));
        let ready_file = tmp.path().join("ready.json");
        let mut cmd = Command::new(binary("agentkeys-dev"));
        cmd.arg("dev")
            .arg("--data-dir")
            .arg(&data)
            .arg("--ready-file")
            .arg(&ready_file)
            .args(["--port", "0"])
            .args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut group = Group::spawn(cmd, &tmp.path().join("dev.log"))?;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(ready) = ready_json(&ready_file) {
                return Ok(CustomDev { group, ready, tmp });
            }
            if group.exited() {
                bail!("dev exited before ready:\n{}", group.log_text());
            }
            if Instant::now() > deadline {
                bail!("dev not ready in time:\n{}", group.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A string member of the ready file.
    pub fn get(&self, key: &str) -> String {
        self.ready[key].as_str().unwrap_or_default().to_string()
    }
}

/// Resident set size of `pid` in KiB (from `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// `host:port` of an `http://host:port` URL.
pub fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("http://ip:port URL")
}

/// What a raw HTTP exchange produced.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    /// Status code of the first response line, if any.
    pub status: Option<u16>,
    /// Everything read (lossy UTF-8).
    pub text: String,
    /// Time until the server answered or closed.
    pub elapsed: Duration,
    /// Whether the read ended with the server closing the connection (vs our timeout).
    pub closed: bool,
}

/// Sends `request` bytes on a fresh connection and reads the answer until the server
/// closes, `timeout` passes, or a complete response with `content-length` arrived.
pub fn raw_http(addr: SocketAddr, request: &[u8], timeout: Duration) -> RawAnswer {
    let started = Instant::now();
    let mut s = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => {
            return RawAnswer {
                status: None,
                text: format!("connect: {e}"),
                elapsed: started.elapsed(),
                closed: true,
            }
        }
    };
    let _ = s.set_write_timeout(Some(timeout));
    // The server may answer (431, 413) and close before the whole request is written.
    let _ = s.write_all(request);
    read_answer(&mut s, started, timeout)
}

/// Reads an HTTP answer from `s` (see [`raw_http`]).
pub fn read_answer(s: &mut TcpStream, started: Instant, timeout: Duration) -> RawAnswer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut closed = false;
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        let _ = s.set_read_timeout(Some(left));
        match s.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if response_complete(&buf) {
                    break;
                }
                if buf.len() > 4 * 1024 * 1024 {
                    break;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                break
            }
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok());
    RawAnswer {
        status,
        text,
        elapsed: started.elapsed(),
        closed,
    }
}

fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match len {
        Some(n) => buf.len() >= end + 4 + n,
        None => false,
    }
}

/// How the programmable backend answers `GET /session/validate`.
#[derive(Debug, Clone, Default)]
pub struct BackendMode {
    /// Wait before answering.
    pub delay: Duration,
    /// Answer this status with `{"error":"forced"}`.
    pub status: Option<u16>,
    /// Answer 200 with this body instead of `{"wallet":…}`.
    pub body: Option<Vec<u8>>,
    /// Close the connection without answering.
    pub hang_up: bool,
}

/// How the programmable STS answers any other request (`POST /`).
#[derive(Debug, Clone, Default)]
pub struct StsMode {
    /// Wait before answering.
    pub delay: Duration,
    /// Status code (default 200).
    pub status: Option<u16>,
    /// Body (default a non-XML garbage text).
    pub body: Option<Vec<u8>>,
}

/// A loopback HTTP/1.1 server playing session backend (`/session/validate`: bearers
/// starting with [`GOOD_BEARER_PREFIX`] map to [`BACKEND_WALLET`], others get 401) and
/// STS (every other path), each with knobs for delay, forced status and garbage.
pub struct Programmable {
    /// Base URL.
    pub url: String,
    /// Backend knobs.
    pub backend: Arc<Mutex<BackendMode>>,
    /// STS knobs.
    pub sts: Arc<Mutex<StsMode>>,
    /// Requests received per path.
    pub hits: Arc<Mutex<BTreeMap<String, u64>>>,
    stop: Arc<AtomicBool>,
}

impl Programmable {
    /// Starts the server on a free loopback port.
    pub fn start() -> Programmable {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        l.set_nonblocking(true).expect("nonblocking");
        let backend = Arc::new(Mutex::new(BackendMode::default()));
        let sts = Arc::new(Mutex::new(StsMode::default()));
        let hits = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, st, h, sp) = (backend.clone(), sts.clone(), hits.clone(), stop.clone());
        std::thread::spawn(move || {
            while !sp.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((s, _)) => {
                        let (b, st, h, sp) = (b.clone(), st.clone(), h.clone(), sp.clone());
                        std::thread::spawn(move || serve_programmable(s, b, st, h, sp));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Programmable {
            url,
            backend,
            sts,
            hits,
            stop,
        }
    }

    /// Replaces the backend behaviour.
    pub fn set_backend(&self, m: BackendMode) {
        *self.backend.lock().expect("lock") = m;
    }

    /// Replaces the STS behaviour.
    pub fn set_sts(&self, m: StsMode) {
        *self.sts.lock().expect("lock") = m;
    }

    /// Requests seen on `path`.
    pub fn hits(&self, path: &str) -> u64 {
        self.hits
            .lock()
            .expect("lock")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Programmable {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve_programmable(
    s: TcpStream,
    backend: Arc<Mutex<BackendMode>>,
    sts: Arc<Mutex<StsMode>>,
    hits: Arc<Mutex<BTreeMap<String, u64>>>,
    stop: Arc<AtomicBool>,
) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(read_half) = s.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut s = s;
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut len = 0usize;
        let mut auth = String::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("authorization") {
                    auth = v.trim().to_string();
                }
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let route = path.split('?').next().unwrap_or("").to_string();
        *hits.lock().expect("lock").entry(route.clone()).or_default() += 1;
        let (status, content_type, answer) = if route == "/session/validate" {
            let m = backend.lock().expect("lock").clone();
            std::thread::sleep(m.delay);
            if m.hang_up {
                return;
            }
            if let Some(st) = m.status {
                (st, "application/json", br#"{"error":"forced"}"#.to_vec())
            } else if let Some(b) = m.body {
                (200, "application/json", b)
            } else if auth
                .strip_prefix("Bearer ")
                .is_some_and(|t| t.starts_with(GOOD_BEARER_PREFIX))
            {
                (
                    200,
                    "application/json",
                    format!(r#"{{"wallet":"{BACKEND_WALLET}"}}"#).into_bytes(),
                )
            } else {
                (
                    401,
                    "application/json",
                    br#"{"error":"unauthorized"}"#.to_vec(),
                )
            }
        } else {
            let m = sts.lock().expect("lock").clone();
            std::thread::sleep(m.delay);
            (
                m.status.unwrap_or(200),
                "text/xml",
                m.body
                    .unwrap_or_else(|| b"<html><body>502 proxy error, not STS</body>".to_vec()),
            )
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nx-amzn-requestid: 00000000-0000-0000-0000-000000000000\r\n\r\n",
            answer.len()
        );
        if s.write_all(head.as_bytes()).is_err() || s.write_all(&answer).is_err() {
            return;
        }
    }
}

/// One answer a load client received.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Which client thread.
    pub client: usize,
    /// What was asked (free label).
    pub kind: &'static str,
    /// HTTP status, or `None` when no answer arrived (transport error or timeout).
    pub status: Option<u16>,
    /// Body (JSON when the broker answered).
    pub body: String,
    /// Transport error text when no answer arrived.
    pub error: Option<String>,
    /// Time to the answer.
    pub elapsed: Duration,
    /// When the request started, relative to the run start.
    pub at: Duration,
}

impl Outcome {
    /// The body as JSON (Null if not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Runs `clients` threads until `stop` is set or `max` passes; each calls `step(client,
/// iteration, http)` repeatedly and records the outcome. The per-request timeout of the
/// HTTP client is `request_timeout` (a request exceeding it is recorded with no status).
pub fn drive<F>(
    clients: usize,
    max: Duration,
    request_timeout: Duration,
    stop: Arc<AtomicBool>,
    step: F,
) -> Vec<Outcome>
where
    F: Fn(
            usize,
            u64,
            &reqwest::blocking::Client,
        ) -> (&'static str, reqwest::blocking::RequestBuilder)
        + Send
        + Sync
        + 'static,
{
    let step = Arc::new(step);
    let started = Instant::now();
    let counter = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for c in 0..clients {
        let step = step.clone();
        let stop = stop.clone();
        let counter = counter.clone();
        handles.push(std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(request_timeout)
                .pool_max_idle_per_host(2)
                .build()
                .expect("client");
            let mut out = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) && started.elapsed() < max {
                let (kind, rb) = step(c, i, &http);
                let at = started.elapsed();
                let t = Instant::now();
                let o = match rb.send() {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        Outcome {
                            client: c,
                            kind,
                            status: Some(status),
                            body: r.text().unwrap_or_default(),
                            error: None,
                            elapsed: t.elapsed(),
                            at,
                        }
                    }
                    Err(e) => Outcome {
                        client: c,
                        kind,
                        status: None,
                        body: String::new(),
                        error: Some(format!("{e:?}").chars().take(300).collect()),
                        elapsed: t.elapsed(),
                        at,
                    },
                };
                counter.fetch_add(1, Ordering::Relaxed);
                out.push(o);
                i += 1;
            }
            out
        }));
    }
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect()
}

/// Count of outcomes per status (`None` → "none").
pub fn status_counts(outcomes: &[Outcome]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for o in outcomes {
        let k = o
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "none".into());
        *m.entry(format!("{}:{k}", o.kind)).or_default() += 1;
    }
    m
}

/// The `jti` claim of a compact JWT (payload decoded without verification).
pub fn jwt_jti(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["jti"].as_str().map(str::to_string)
}

/// Every token a client received (200 answers of the mint routes): `(audit_id, jti)`;
/// `jti` is `None` for AWS credentials.
pub fn received_tokens(outcomes: &[Outcome]) -> Vec<(i64, Option<String>)> {
    outcomes
        .iter()
        .filter(|o| o.status == Some(200))
        .filter_map(|o| {
            let v = o.json();
            let id = v["audit_id"].as_i64()?;
            Some((id, v["jwt"].as_str().and_then(jwt_jti)))
        })
        .collect()
}

/// Checks that every received token has its success row (same audit id; same jti for
/// JWTs); returns a description of each missing or mismatched one.
pub fn missing_rows(tokens: &[(i64, Option<String>)], rows: &[serde_json::Value]) -> Vec<String> {
    let by_id: BTreeMap<i64, &serde_json::Value> = rows
        .iter()
        .filter_map(|r| Some((r["id"].as_i64()?, r)))
        .collect();
    let mut missing = Vec::new();
    for (id, jti) in tokens {
        match by_id.get(id) {
            None => missing.push(format!("audit_id {id}: no row")),
            Some(r) => {
                if r["outcome"] != "success" {
                    missing.push(format!("audit_id {id}: row is not a success: {r}"));
                }
                if let Some(j) = jti {
                    if r["jti"].as_str() != Some(j.as_str()) {
                        missing.push(format!("audit_id {id}: jti {j} but row has {}", r["jti"]));
                    }
                }
            }
        }
    }
    missing
}

/// Runs `agentkeys-broker audit verify --db DB [extra]`; returns (success, output).
pub fn audit_verify(db: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["audit", "verify", "--db"];
    let db = db.display().to_string();
    args.push(&db);
    args.extend_from_slice(extra);
    let out = crate::run("agentkeys-broker", &args);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `agentkeys-broker audit verify` of `stack`'s log against a fresh checkpoint attested by
/// its enclave (mock root): fails on any seq the enclave signed without a row.
pub fn audit_verify_live(stack: &crate::DevStack) -> (bool, String) {
    let root = stack.info.mock_root_pem.display().to_string();
    let measurements = stack.mock_measurements().display().to_string();
    audit_verify(
        &stack.info.audit_db,
        &[
            "--broker-url",
            &stack.info.broker_url,
            "--root",
            &root,
            "--allow-mock-root",
            "--measurements",
            &measurements,
        ],
    )
}

/// A small tmpfs mounted on a new temporary directory; unmounted (lazily) on drop.
/// Needs root and a kernel that lets this process mount; [`Tmpfs::mount`] says why not.
pub struct Tmpfs {
    /// Mount point.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `"2M"`).
    pub fn mount(size: &str) -> anyhow::Result<Tmpfs> {
        let dir = tempfile::Builder::new().prefix("ak-tmpfs").tempdir()?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()?;
        if !out.status.success() {
            bail!(
                "mount tmpfs: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Tmpfs {
            path: dir.path().to_path_buf(),
            _dir: dir,
        })
    }

    /// Fills the file system with `filler` until it is full; returns the bytes written.
    pub fn fill(&self, filler: &Path) -> u64 {
        let Ok(mut f) = std::fs::File::create(filler) else {
            return 0;
        };
        let block = vec![0xA5u8; 4096];
        let mut written = 0u64;
        while f.write_all(&block).is_ok() {
            written += block.len() as u64;
        }
        // The last partial block.
        let mut small = [0u8; 64];
        small.fill(0x5A);
        while f.write_all(&small).is_ok() {
            written += small.len() as u64;
        }
        let _ = f.sync_all();
        written
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
