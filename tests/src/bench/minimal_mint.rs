//! The least a mint can cost in this architecture, measured: a "minimal mint" built from
//! nothing but the steps the design requires of every mint, each done the cheapest way
//! this benchmark knows.
//!
//! The CPU floor (`cpu_floor_us`) is one signature plus one bare HTTP request. A mint of
//! this design also has to cross to another process, which holds the key, and has to
//! make a row durable before it answers. The minimal mint does exactly that and nothing
//! else:
//!
//! 1. a minimal axum route (`POST /x`, runtime threads named [`FRONT_THREADS`]) takes the
//!    request;
//! 2. it sends a 64-byte request frame to a signing process over one multiplexed Unix
//!    socket; that process (this binary again, [`SIGNER_FLAG`]) reads what has arrived on
//!    one blocking thread, signs the same fixed signing input with the enclave's signer
//!    for each frame, and writes all the answers in one write;
//! 3. the route hands a row (the signature's SHA-256 and the signing input, as the
//!    broker's audit row keeps them, chained to the previous row's hash) to a writer
//!    thread ([`WRITER_THREAD`]) that inserts whatever is queued in one SQLite
//!    transaction (WAL, `synchronous=FULL`, 16 KiB pages, as the broker's audit log) and
//!    commits, then wakes the routes it committed for;
//! 4. the route answers the signature and the row id as JSON.
//!
//! It leaves out what a real mint adds on top: the bearer and session check, the JWT's
//! claims and encoding, the enclave's audit chain, request framing with CBOR, error
//! handling. So its CPU a request is a lower bound for any implementation of this
//! design on this machine, and [`MinimalMint::cpu_us`] against the floor says how much
//! of a target stated against the floor the design itself already spends.
//!
//! The framing is hand-written because it is the point: a length, an id and the payload,
//! with no encoding at all.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::cpu;
use super::load::{self, LoadResult, LoadSpec};

/// Name of the minimal route's runtime threads (at most 15 bytes, as `comm` keeps).
pub const FRONT_THREADS: &str = "minimal-front";
/// Name of the minimal route's SQLite writer thread.
pub const WRITER_THREAD: &str = "minimal-writer";
/// The hidden flag that turns this binary into the minimal mint's signing process.
pub const SIGNER_FLAG: &str = "--minimal-signer";

/// Bytes of a request frame's payload: about what a wallet, a TTL and an id take.
const REQUEST_PAYLOAD_BYTES: usize = 64;
/// A frame's header: the body's length (u32, little-endian), then the request id (u64).
const HEADER_BYTES: usize = 4 + 8;
/// An ES256 signature, `r || s` (RFC 7518, section 3.4).
const SIGNATURE_BYTES: usize = 64;
/// How long the signing process may take to connect back.
const SIGNER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Read size of both ends: room for a few hundred frames a read.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// The page size the broker gives a new SQLite audit log
/// (`NEW_DATABASE_PAGE_SIZE` in `parent/src/audit/sqlite.rs`).
const PAGE_SIZE: u32 = 16 * 1024;

/// What the minimal mint cost, per successful request.
#[derive(Debug)]
pub struct MinimalMint {
    /// The load run against the minimal route.
    pub load: LoadResult,
    /// CPU of the route's runtime threads, µs.
    pub front_us: Option<f64>,
    /// CPU of the signing process, µs.
    pub signer_us: Option<f64>,
    /// CPU of the SQLite writer thread, µs.
    pub writer_us: Option<f64>,
    /// Rows in the table at the end, to check against the 200s.
    pub rows: u64,
}

impl MinimalMint {
    /// The whole: route + signer + writer, µs a request.
    pub fn cpu_us(&self) -> Option<f64> {
        Some(self.front_us? + self.signer_us? + self.writer_us?)
    }

    /// A failure to report: errors, or rows that do not match the 200s.
    pub fn failure(&self) -> Option<String> {
        if self.load.errors > 0 {
            return Some(format!(
                "minimal mint had {} errors (first: {})",
                self.load.errors,
                self.load.first_error.as_deref().unwrap_or("-")
            ));
        }
        (self.rows != self.load.total_ok).then(|| {
            format!(
                "minimal mint wrote {} rows for {} answers",
                self.rows, self.load.total_ok
            )
        })
    }
}

/// Writes one frame: header, then `payload`.
fn put_frame(out: &mut Vec<u8>, id: u64, payload: &[u8]) {
    let body_len = (8 + payload.len()) as u32;
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The complete frames at the front of a buffer, as `(id, payload)`, and how many bytes
/// they take.
type Frames<'a> = (Vec<(u64, &'a [u8])>, usize);

/// The complete frames at the front of `buf`; a frame whose body is shorter than its id
/// is an error.
fn split_frames(buf: &[u8]) -> anyhow::Result<Frames<'_>> {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(len_bytes) = buf.get(at..at + 4) {
        let body_len = u32::from_le_bytes(len_bytes.try_into()?) as usize;
        if body_len < 8 {
            bail!("frame body of {body_len} bytes has no room for its id");
        }
        let Some(body) = buf.get(at + 4..at + 4 + body_len) else {
            break;
        };
        let id = u64::from_le_bytes(body[..8].try_into()?);
        frames.push((id, &body[8..]));
        at += 4 + body_len;
    }
    Ok((frames, at))
}

/// The signing process: connects to `socket`, then for every batch of request frames that
/// arrives, signs `message` once per frame and writes the answers in one write. Returns
/// when the socket closes.
pub fn run_signer(socket: &Path, message: &[u8]) -> anyhow::Result<()> {
    use agentkeys_enclave::keys::{Seed, SigningKey};
    let seed = Seed::from_slice(&[0x5e; 32]).map_err(|e| anyhow!("signer seed: {e}"))?;
    let key = SigningKey::derive(&seed, 1).map_err(|e| anyhow!("deriving: {e}"))?;
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let mut inbox: Vec<u8> = Vec::with_capacity(READ_BUFFER_BYTES);
    let mut chunk = vec![0u8; READ_BUFFER_BYTES];
    let mut answers: Vec<u8> = Vec::with_capacity(READ_BUFFER_BYTES);
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        inbox.extend_from_slice(&chunk[..n]);
        let (frames, used) = split_frames(&inbox)?;
        for (id, _payload) in frames {
            let signature = key.sign(message).map_err(|e| anyhow!("sign: {e}"))?;
            put_frame(&mut answers, id, &signature);
        }
        inbox.drain(..used);
        stream.write_all(&answers)?;
        answers.clear();
    }
}

/// The route's side of the socket: requests written under a lock, answers read by one
/// task that hands each to its waiter.
struct SignerLink {
    writer: tokio::sync::Mutex<tokio::net::unix::OwnedWriteHalf>,
    waiters: Mutex<HashMap<u64, oneshot::Sender<[u8; SIGNATURE_BYTES]>>>,
    next_id: AtomicU64,
}

impl SignerLink {
    fn waiters(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<[u8; SIGNATURE_BYTES]>>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn sign(&self) -> anyhow::Result<[u8; SIGNATURE_BYTES]> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters().insert(id, tx);
        let mut frame = Vec::with_capacity(HEADER_BYTES + REQUEST_PAYLOAD_BYTES);
        put_frame(&mut frame, id, &[0x77; REQUEST_PAYLOAD_BYTES]);
        if let Err(error) = self.writer.lock().await.write_all(&frame).await {
            self.waiters().remove(&id);
            return Err(error.into());
        }
        Ok(rx.await?)
    }

    async fn read_answers(self: Arc<Self>, mut reader: tokio::net::unix::OwnedReadHalf) {
        let mut inbox: Vec<u8> = Vec::with_capacity(READ_BUFFER_BYTES);
        let mut chunk = vec![0u8; READ_BUFFER_BYTES];
        loop {
            let n = match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            inbox.extend_from_slice(&chunk[..n]);
            let Ok((frames, used)) = split_frames(&inbox) else {
                break;
            };
            {
                let mut waiters = self.waiters();
                for (id, payload) in frames {
                    let (Some(waiter), Ok(signature)) = (waiters.remove(&id), payload.try_into())
                    else {
                        continue;
                    };
                    let _ = waiter.send(signature);
                }
            }
            inbox.drain(..used);
        }
        // Callers still waiting see their channel closed.
        self.waiters().clear();
    }
}

/// A row for the writer and where to say its id.
struct Append {
    /// SHA-256 of the signature.
    digest: [u8; 32],
    /// The signed bytes, stored whole as the broker's row stores the JWS signing input.
    signing_input: Arc<str>,
    reply: oneshot::Sender<i64>,
}

/// The writer thread: one transaction for everything queued, then the answers.
fn run_writer(conn: rusqlite::Connection, queue: mpsc::Receiver<Append>) -> anyhow::Result<()> {
    let mut prev = [0u8; 32];
    let mut batch: Vec<Append> = Vec::new();
    let mut done: Vec<(i64, oneshot::Sender<i64>)> = Vec::new();
    while let Ok(first) = queue.recv() {
        batch.push(first);
        batch.extend(queue.try_iter());
        conn.execute_batch("BEGIN")?;
        {
            let mut insert = conn.prepare_cached(
                "INSERT INTO rows (digest, signing_input, prev_hash, row_hash) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for Append {
                digest,
                signing_input,
                reply,
            } in batch.drain(..)
            {
                let row_hash: [u8; 32] = Sha256::new()
                    .chain_update(prev)
                    .chain_update(digest)
                    .chain_update(signing_input.as_bytes())
                    .finalize()
                    .into();
                let id = insert.insert(rusqlite::params![
                    &digest[..],
                    &*signing_input,
                    &prev[..],
                    &row_hash[..]
                ])?;
                prev = row_hash;
                done.push((id, reply));
            }
        }
        conn.execute_batch("COMMIT")?;
        for (id, reply) in done.drain(..) {
            let _ = reply.send(id);
        }
    }
    Ok(())
}

fn open_table(path: &Path) -> anyhow::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("SQLite refused WAL mode (got {mode})");
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE rows (id INTEGER PRIMARY KEY, digest BLOB NOT NULL, \
         signing_input TEXT NOT NULL, prev_hash BLOB NOT NULL, row_hash BLOB NOT NULL)",
    )?;
    Ok(conn)
}

struct Route {
    signer: Arc<SignerLink>,
    writer: mpsc::Sender<Append>,
    /// What the signing process signs.
    signing_input: Arc<str>,
}

async fn mint(
    State(route): State<Arc<Route>>,
) -> Result<axum::Json<serde_json::Value>, StatusCode> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let internal = |_| StatusCode::INTERNAL_SERVER_ERROR;
    let signature = route.signer.sign().await.map_err(internal)?;
    let (tx, rx) = oneshot::channel();
    let digest: [u8; 32] = Sha256::digest(signature).into();
    let append = Append {
        digest,
        signing_input: route.signing_input.clone(),
        reply: tx,
    };
    route
        .writer
        .send(append)
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let id = rx.await.map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(axum::Json(serde_json::json!({
        "signature": URL_SAFE_NO_PAD.encode(signature),
        "audit_id": id,
    })))
}

/// Kills and reaps the signing process however the measurement ends.
struct SignerProcess(Child);

impl Drop for SignerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Accepts the signing process's connection, or fails if it exits or takes too long.
fn accept_signer(listener: &UnixListener, child: &mut Child) -> anyhow::Result<UnixStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + SIGNER_CONNECT_TIMEOUT;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(true)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(status) = child.try_wait()? {
            bail!("the minimal mint's signing process exited before connecting ({status})");
        }
        if Instant::now() > deadline {
            bail!("the minimal mint's signing process did not connect within {SIGNER_CONNECT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Serves the minimal mint, drives it with the same load as the broker, and reads what
/// each part spent.
pub fn measure(
    load_rt: &tokio::runtime::Runtime,
    signing_input: &str,
    threads: usize,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<MinimalMint> {
    let dir = tempfile::Builder::new()
        .prefix("agentkeys-bench-minimal-")
        .tempdir()?;
    let socket: PathBuf = dir.path().join("signer.sock");
    let listener = UnixListener::bind(&socket)?;
    let child = Command::new(std::env::current_exe()?)
        .arg(SIGNER_FLAG)
        .arg(&socket)
        .arg(signing_input)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting the minimal mint's signing process")?;
    let mut signer_process = SignerProcess(child);
    let signer_pid = signer_process.0.id();
    let stream = accept_signer(&listener, &mut signer_process.0)?;

    let conn = open_table(&dir.path().join("minimal.db"))?;
    let (writer_tx, writer_rx) = mpsc::channel::<Append>();
    let writer = std::thread::Builder::new()
        .name(WRITER_THREAD.into())
        .spawn(move || run_writer(conn, writer_rx))?;

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(FRONT_THREADS)
        .enable_all()
        .build()?;
    let (addr, route) = server_rt.block_on(async {
        let stream = tokio::net::UnixStream::from_std(stream)?;
        let (reader, writer) = stream.into_split();
        let signer = Arc::new(SignerLink {
            writer: tokio::sync::Mutex::new(writer),
            waiters: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        });
        tokio::spawn(signer.clone().read_answers(reader));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let route = Arc::new(Route {
            signer,
            writer: writer_tx,
            signing_input: Arc::from(signing_input),
        });
        let app = axum::Router::new()
            .route("/x", post(mint))
            .with_state(route.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        anyhow::Ok((addr, route))
    })?;

    let result = load_rt.block_on(load::run(LoadSpec {
        cpu_pids: vec![Some(std::process::id()), Some(signer_pid)],
        ..LoadSpec::minimal_route(addr, connections, warmup, duration)
    }));
    server_rt.shutdown_background();
    // The writer ends once every sender is gone: the route's, dropped here, and the
    // server's (its runtime is shut down).
    drop(route);
    let written = writer
        .join()
        .map_err(|_| anyhow!("the minimal mint's writer thread panicked"))?;
    written.context("the minimal mint's writer")?;
    drop(signer_process);

    let rows: u64 = rusqlite::Connection::open(dir.path().join("minimal.db"))?.query_row(
        "SELECT count(*) FROM rows",
        [],
        |r| r.get(0),
    )?;
    let hz = cpu::clock_ticks_per_second();
    let (own, signer) = match &result.cpu_window {
        Some((before, after)) => {
            let mut w = cpu::window(before, after, hz).into_iter();
            (w.next().flatten(), w.next().flatten())
        }
        None => (None, None),
    };
    let per = |d: Option<Duration>| d.and_then(|d| cpu::us_per(d, result.measured_ok));
    let thread = |comm: &str| per(own.as_ref().and_then(|o| o.by_comm.get(comm).copied()));
    Ok(MinimalMint {
        front_us: thread(FRONT_THREADS),
        writer_us: thread(WRITER_THREAD),
        signer_us: per(signer.map(|s| s.total)),
        rows,
        load: result,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_whole_and_keep_a_partial_tail() {
        let mut buf = Vec::new();
        put_frame(&mut buf, 7, b"abc");
        put_frame(&mut buf, 8, &[1; 64]);
        let whole = buf.len();
        put_frame(&mut buf, 9, b"tail");
        buf.truncate(buf.len() - 2);
        let (frames, used) = split_frames(&buf).unwrap();
        assert_eq!(used, whole);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], (7, &b"abc"[..]));
        assert_eq!(frames[1].0, 8);
        assert_eq!(frames[1].1.len(), 64);
    }

    #[test]
    fn a_frame_without_room_for_its_id_is_refused() {
        let mut buf = 4u32.to_le_bytes().to_vec();
        buf.extend_from_slice(&[0; 4]);
        let err = split_frames(&buf).unwrap_err();
        assert!(err.to_string().contains("no room for its id"), "{err}");
    }

    #[test]
    fn errors_or_missing_rows_are_failures() {
        let mut m = MinimalMint {
            load: LoadResult {
                total_ok: 10,
                ..LoadResult::default()
            },
            front_us: Some(1.0),
            signer_us: Some(2.0),
            writer_us: Some(3.0),
            rows: 10,
        };
        assert_eq!(m.failure(), None);
        assert_eq!(m.cpu_us(), Some(6.0));
        m.rows = 9;
        let f = m.failure().unwrap();
        assert!(f.contains("9 rows for 10 answers"), "{f}");
        m.rows = 10;
        m.load.errors = 1;
        m.load.first_error = Some("500".into());
        let f = m.failure().unwrap();
        assert!(f.contains("1 errors (first: 500)"), "{f}");
        m.writer_us = None;
        assert_eq!(m.cpu_us(), None);
    }

    #[test]
    fn rows_chain_and_answer_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_table(&dir.path().join("t.db")).unwrap();
        let (tx, rx) = mpsc::channel();
        let mut replies = Vec::new();
        for b in 0..3u8 {
            let (reply, wait) = oneshot::channel();
            let signing_input = Arc::from("eyJ.eyJ");
            tx.send(Append {
                digest: [b; 32],
                signing_input,
                reply,
            })
            .unwrap();
            replies.push(wait);
        }
        drop(tx);
        run_writer(conn, rx).unwrap();
        let ids: Vec<i64> = replies
            .into_iter()
            .map(|r| r.blocking_recv().unwrap())
            .collect();
        assert_eq!(ids, vec![1, 2, 3]);
        let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        let links: Vec<(Vec<u8>, Vec<u8>)> = conn
            .prepare("SELECT prev_hash, row_hash FROM rows ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(links[0].0, vec![0; 32]);
        assert_eq!(links[1].0, links[0].1);
        assert_eq!(links[2].0, links[1].1);
    }
}
