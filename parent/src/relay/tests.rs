//! The relay against a Unix-socket server the test owns (no enclave needed): every byte
//! forwarded exactly, half-close, the cap, the idle timeout, an unreachable enclave, and
//! shutdown.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::*;

/// How long a test waits for something that should happen at once.
const SOON: Duration = Duration::from_secs(5);

struct Setup {
    relay: RelayHandle,
    metrics: RelayMetrics,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

/// A relay on 127.0.0.1 to a Unix socket path in a fresh directory (not yet listening).
fn relay_to_fresh_socket(tune: impl FnOnce(&mut RelayConfig)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("tls.sock");
    let mut config = RelayConfig::new(Address::Unix(socket.clone()));
    tune(&mut config);
    let metrics = RelayMetrics::default();
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let relay = spawn(listener, config, metrics.clone()).unwrap();
    Setup {
        relay,
        metrics,
        socket,
        _dir: dir,
    }
}

/// A server on `socket` that hands each accepted stream to the test.
fn upstream(socket: &PathBuf) -> mpsc::UnboundedReceiver<UnixStream> {
    let listener = UnixListener::bind(socket).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            if tx.send(s).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next stream the server accepted.
async fn next(accepted: &mut mpsc::UnboundedReceiver<UnixStream>) -> UnixStream {
    tokio::time::timeout(SOON, accepted.recv())
        .await
        .expect("the relay connects within 5 s")
        .expect("the server runs")
}

async fn connect(s: &Setup) -> TcpStream {
    TcpStream::connect(s.relay.local_addr()).await.unwrap()
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// Reads until EOF; `None` if that takes longer than `within` (or the read fails).
async fn read_to_eof<S: AsyncReadExt + Unpin>(s: &mut S, within: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut out)).await {
        Ok(Ok(_)) => Some(out),
        _ => None,
    }
}

/// Writes `bytes` on `from` and checks they arrive, unchanged, on `to`.
async fn passes<W, R>(from: &mut W, to: &mut R, bytes: &[u8])
where
    W: AsyncWriteExt + Unpin,
    R: AsyncReadExt + Unpin,
{
    from.write_all(bytes).await.unwrap();
    let mut got = vec![0u8; bytes.len()];
    tokio::time::timeout(SOON, to.read_exact(&mut got))
        .await
        .expect("the bytes arrive within 5 s")
        .unwrap();
    assert_eq!(got, bytes);
}

/// Whether the peer closes `s` (EOF, or a reset when unread bytes were discarded) within
/// `within`, with no byte received.
async fn closed_without_a_byte(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(within, s.read(&mut buf)).await {
        Ok(Ok(0)) => true,
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionReset,
        _ => false,
    }
}

#[tokio::test]
async fn every_byte_is_forwarded_unchanged_both_ways() {
    let s = relay_to_fresh_socket(|_| {});
    let mut accepted = upstream(&s.socket);
    let mut client = connect(&s).await;
    let mut server = next(&mut accepted).await;
    // Larger than any copy buffer, in both directions at once.
    let up = random(3 * 1024 * 1024 + 17);
    let down = random(2 * 1024 * 1024 + 5);
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let up2 = up.clone();
    let down2 = down.clone();
    let (sent_up, sent_down, got_up, got_down) = tokio::join!(
        async {
            cw.write_all(&up2).await.unwrap();
            cw.shutdown().await.unwrap();
        },
        async {
            sw.write_all(&down2).await.unwrap();
            sw.shutdown().await.unwrap();
        },
        read_to_eof(&mut sr, SOON),
        read_to_eof(&mut cr, SOON),
    );
    let ((), ()) = (sent_up, sent_down);
    assert!(
        got_up.as_deref() == Some(&up[..]),
        "client → enclave differs"
    );
    assert!(
        got_down.as_deref() == Some(&down[..]),
        "enclave → client differs"
    );
    drop(client);
    drop(server);
    tokio::time::timeout(SOON, async {
        while s.metrics.open.get() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(s.metrics.bytes_to_enclave.get(), up.len() as u64);
    assert_eq!(s.metrics.bytes_from_enclave.get(), down.len() as u64);
    assert_eq!(s.metrics.connections.get(), 1);
}

#[tokio::test]
async fn a_half_close_reaches_the_other_side_and_the_answer_still_comes_back() {
    let s = relay_to_fresh_socket(|_| {});
    let mut accepted = upstream(&s.socket);
    let mut client = connect(&s).await;
    let mut server = next(&mut accepted).await;
    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap();
    // The enclave side sees the request, then EOF ...
    let got = read_to_eof(&mut server, SOON).await;
    assert_eq!(got.as_deref(), Some(&b"request"[..]));
    // ... and its answer, written after that EOF, still reaches the client.
    tokio::time::sleep(Duration::from_millis(100)).await;
    server
        .write_all(b"answer after the client's EOF")
        .await
        .unwrap();
    server.shutdown().await.unwrap();
    let back = read_to_eof(&mut client, SOON).await;
    assert_eq!(back.as_deref(), Some(&b"answer after the client's EOF"[..]));
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_never_reach_the_enclave() {
    let s = relay_to_fresh_socket(|c| c.max_connections = 2);
    let mut accepted = upstream(&s.socket);
    let first = connect(&s).await;
    let second = connect(&s).await;
    let held: Vec<UnixStream> = vec![next(&mut accepted).await, next(&mut accepted).await];
    // Over the cap: closed by the relay without a byte, and the enclave never sees it.
    let mut third = connect(&s).await;
    assert!(
        closed_without_a_byte(&mut third, SOON).await,
        "the relay closes it"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), accepted.recv())
            .await
            .is_err(),
        "a connection over the cap reached the enclave"
    );
    assert_eq!(s.metrics.refused.get(), 1);
    // Once a slot frees, the next connection is relayed.
    drop(first);
    drop(held);
    tokio::time::timeout(SOON, async {
        while s.metrics.open.get() > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let mut fourth = connect(&s).await;
    let mut server = next(&mut accepted).await;
    passes(&mut fourth, &mut server, b"x").await;
    drop(second);
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout_and_a_busy_one_is_not() {
    let idle = Duration::from_millis(400);
    let s = relay_to_fresh_socket(|c| c.idle_timeout = idle);
    let mut accepted = upstream(&s.socket);

    // Busy: a byte every 100 ms for three idle periods, then the answer.
    let mut busy = connect(&s).await;
    let mut busy_server = next(&mut accepted).await;
    let started = Instant::now();
    while started.elapsed() < idle * 3 {
        passes(&mut busy, &mut busy_server, b".").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    passes(&mut busy_server, &mut busy, b"still open").await;
    assert_eq!(s.metrics.idle_closed.get(), 0);
    drop(busy);
    drop(busy_server);

    // Silent: connects and sends nothing; both sides are closed after the timeout.
    let started = Instant::now();
    let mut silent = connect(&s).await;
    let mut silent_server = next(&mut accepted).await;
    let client_side = read_to_eof(&mut silent, SOON).await;
    let enclave_side = read_to_eof(&mut silent_server, SOON).await;
    assert_eq!(client_side.as_deref(), Some(&b""[..]));
    assert_eq!(enclave_side.as_deref(), Some(&b""[..]));
    let took = started.elapsed();
    assert!(
        took >= idle,
        "closed after {took:?}, before the idle timeout"
    );
    assert_eq!(s.metrics.idle_closed.get(), 1);
}

#[tokio::test]
async fn an_unreachable_enclave_closes_the_client_and_the_relay_keeps_accepting() {
    let s = relay_to_fresh_socket(|_| {});
    // Nobody listens on the socket path yet.
    let mut client = connect(&s).await;
    let _ = client.write_all(b"hello").await;
    assert!(
        closed_without_a_byte(&mut client, SOON).await,
        "the client is disconnected"
    );
    assert_eq!(s.metrics.upstream_failures.get(), 1);
    // The enclave comes up: the next connection is relayed.
    let mut accepted = upstream(&s.socket);
    let mut client = connect(&s).await;
    let mut server = next(&mut accepted).await;
    passes(&mut client, &mut server, b"hello").await;
    assert_eq!(s.metrics.upstream_failures.get(), 1);
}

#[tokio::test]
async fn shutdown_stops_accepting_and_closes_what_outlives_the_grace_period() {
    let s = relay_to_fresh_socket(|_| {});
    let mut accepted = upstream(&s.socket);
    let addr = s.relay.local_addr();
    let mut client = connect(&s).await;
    let mut server = next(&mut accepted).await;
    let grace = Duration::from_millis(600);
    let started = Instant::now();
    let shutdown = tokio::spawn(s.relay.shutdown(grace));
    // Within the grace period an open connection still carries its answer ...
    tokio::time::sleep(Duration::from_millis(100)).await;
    passes(&mut server, &mut client, b"answer").await;
    // ... and once it is over, shutdown closes it before returning.
    tokio::time::timeout(SOON, shutdown)
        .await
        .expect("shutdown finishes after the grace period")
        .unwrap();
    assert!(started.elapsed() >= grace);
    let mut one = [0u8; 1];
    assert!(
        matches!(client.try_read(&mut one), Ok(0)),
        "client side open"
    );
    assert!(
        matches!(server.try_read(&mut one), Ok(0)),
        "enclave side open"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[test]
fn the_counters_are_exposed_under_their_names() {
    let mut registry = Registry::default();
    let m = RelayMetrics::register(&mut registry);
    m.connections.inc();
    m.bytes_to_enclave.inc_by(42);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("\nagentkeys_issuer_relay_connections_total 1\n"),
        "{text}"
    );
    assert!(text.contains("\nagentkeys_issuer_relay_bytes_to_enclave_total 42\n"));
    assert!(text.contains("\nagentkeys_issuer_relay_open 0\n"));
}
