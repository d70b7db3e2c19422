//! The multiplexed client against a toy server on a Unix socket.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkeys_wire::frame::{decode_body, encode_frame, read_frame};
use agentkeys_wire::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The toy enclave: Status echoes the number of connections seen in `epoch`;
/// MintJwt echoes the wallet (after a delay derived from it, so replies come back out
/// of order); Attest sleeps for the nonce's first byte × 100 ms; AuditCheckpoint panics,
/// at once without a nonce and after a short wait with one.
async fn toy(request: Request) -> Result<Response, WireError> {
    match request {
        Request::Status => Ok(Response::Status(EnclaveStatus {
            unsealed: false,
            mock: true,
            issuer: "toy".into(),
            kids: vec![],
            active_kid: None,
            epoch: 0,
            seq: 0,
            module_id: "i-0123456789abcdef0-enc0123456789abcdef".into(),
            auth_modes: vec!["parent-vouched".into()],
        })),
        Request::MintJwt(m) => {
            let n: u64 = m.wallet.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis((64 - n % 64) * 2)).await;
            Ok(Response::Jwt(MintedJwt {
                jwt: format!("jwt-{}", m.wallet),
                kid: "k".into(),
                jti: m.wallet.clone(),
                wallet: m.wallet,
                iat: 0,
                exp: 0,
                epoch: 0,
                seq: n,
                jwt_sha256: [0; 32],
                signing_input_sha256: [0; 32],
                head: [0; 32],
            }))
        }
        Request::Attest { nonce } => {
            let secs = nonce.and_then(|n| n.first().copied()).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(u64::from(secs) * 100)).await;
            Err(WireError::new(WireErrorKind::NotUnsealed, "toy"))
        }
        Request::AuditCheckpoint { nonce } => {
            if nonce.is_some() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("toy handler panics")
        }
        Request::Unseal(_) => Err(WireError::new(WireErrorKind::Kms, "toy")),
        Request::SiweNonce | Request::IssuerTls(_) => {
            Err(WireError::new(WireErrorKind::Unauthorized, "toy"))
        }
    }
}

async fn start_server(path: &Path) -> tokio::task::JoinHandle<()> {
    let address = Address::Unix(path.to_path_buf());
    let listener = address.listen().await.unwrap();
    tokio::spawn(serve(listener, toy))
}

/// Counts accepted connections, otherwise the toy.
async fn start_counting_server(
    path: &Path,
    accepted: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve_connection(stream, toy));
        }
    })
}

fn client(path: &Path, connections: usize, timeout: Duration) -> EnclaveClient {
    EnclaveClient::new(Address::Unix(path.to_path_buf()), connections, timeout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_are_multiplexed_over_two_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.sock");
    let accepted = Arc::new(AtomicUsize::new(0));
    let _server = start_counting_server(&path, accepted.clone()).await;
    let client = client(&path, 2, Duration::from_secs(10));

    let calls = (0..64u64).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            let minted = client
                .mint_jwt(MintJwtRequest {
                    wallet: i.to_string(),
                    ttl_seconds: None,
                    audience: None,
                    proof: None,
                })
                .await
                .unwrap();
            assert_eq!(minted.wallet, i.to_string());
            assert_eq!(minted.jwt, format!("jwt-{i}"));
            assert_eq!(minted.seq, i);
        })
    });
    for call in futures::future::join_all(calls).await {
        call.unwrap();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // Keeps using the same two connections.
    for _ in 0..10 {
        client.status().await.unwrap();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// The kind of the server's error reply; anything else fails the test.
fn remote_error_kind<T: std::fmt::Debug>(result: Result<T, ClientError>) -> WireErrorKind {
    match result {
        Err(ClientError::Remote(e)) => e.kind,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[tokio::test]
async fn remote_errors_and_handler_panics_are_replies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.sock");
    let _server = start_server(&path).await;
    let client = client(&path, 1, Duration::from_secs(5));
    assert_eq!(
        remote_error_kind(client.attest(None).await),
        WireErrorKind::NotUnsealed
    );
    assert_eq!(
        remote_error_kind(client.audit_checkpoint(None).await),
        WireErrorKind::Internal
    );
    // A handler that panics after it has waited (on its own task) is an error reply too.
    assert_eq!(
        remote_error_kind(client.audit_checkpoint(Some(vec![1])).await),
        WireErrorKind::Internal
    );
    // The connection survived the panics.
    client.status().await.unwrap();
    // A reply of the wrong kind is a protocol error.
    let wrong = client.call(Request::Status).await.unwrap();
    assert!(matches!(wrong, Response::Status(_)));
}

#[tokio::test]
async fn a_waiting_request_does_not_hold_up_the_next_on_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.sock");
    let _server = start_server(&path).await;
    let client = client(&path, 1, Duration::from_secs(5));
    let slow = {
        let client = client.clone();
        // Attest waits 1 s in the toy.
        tokio::spawn(async move { client.attest(Some(vec![10])).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    client.status().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "Status waited {:?} behind the slow request",
        started.elapsed()
    );
    assert!(!slow.is_finished());
    assert!(matches!(slow.await.unwrap(), Err(ClientError::Remote(_))));
}

#[tokio::test]
async fn timeout_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.sock");
    let _server = start_server(&path).await;
    let client = client(&path, 1, Duration::from_millis(300));
    let start = Instant::now();
    match client.attest(Some(vec![30])).await {
        Err(ClientError::Timeout { request, after }) => {
            assert_eq!(request, "Attest");
            assert_eq!(after, Duration::from_millis(300));
        }
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(2));
    // A late reply for the abandoned call is ignored; the connection still works.
    client.status().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_death_fails_calls_fast_and_client_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.sock");
    let server = start_server(&path).await;
    let client = client(&path, 2, Duration::from_secs(20));
    client.status().await.unwrap();

    // In-flight calls (the handler sleeps 5 s) fail promptly when the server dies.
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.attest(Some(vec![50])).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = Instant::now();
    server.abort();
    let _ = server.await;
    for call in in_flight {
        match call.await.unwrap() {
            Err(ClientError::Io { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "{:?}",
        killed.elapsed()
    );

    // While it is down: fast failures, no hang.
    let start = Instant::now();
    for _ in 0..4 {
        let err = client.status().await.unwrap_err();
        assert!(
            matches!(err, ClientError::Connect { .. } | ClientError::Io { .. }),
            "{err:?}"
        );
    }
    assert!(start.elapsed() < Duration::from_secs(2));

    // Back up at the same path (stale socket file replaced): the client reconnects by itself.
    let _server = start_server(&path).await;
    for _ in 0..8 {
        client.status().await.unwrap();
    }
}

#[tokio::test]
async fn connect_error_names_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody.sock");
    let client = client(&path, 1, Duration::from_secs(1));
    match client.status().await {
        Err(e @ ClientError::Connect { .. }) => assert!(e.to_string().contains("nobody.sock")),
        other => panic!("{other:?}"),
    }
}

async fn raw_reply(stream: &mut UnixStream) -> ResponseEnvelope {
    let body = tokio::time::timeout(Duration::from_secs(5), read_frame(stream))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    decode_body(&body).unwrap()
}

#[tokio::test]
async fn malformed_frames_get_error_replies_and_other_connections_continue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.sock");
    let _server = start_server(&path).await;
    let good = client(&path, 1, Duration::from_secs(5));
    good.status().await.unwrap();

    let mut raw = UnixStream::connect(&path).await.unwrap();
    // Zero-length frame: error reply with id 0, connection stays usable.
    raw.write_all(&[0, 0, 0, 0]).await.unwrap();
    let reply = raw_reply(&mut raw).await;
    assert_eq!(reply.id, 0);
    assert_eq!(reply.result.unwrap_err().kind, WireErrorKind::Malformed);

    // Garbage body: id 0.
    raw.write_all(&[0, 0, 0, 3, 0xff, 0xfe, 0xfd])
        .await
        .unwrap();
    let reply = raw_reply(&mut raw).await;
    assert_eq!(reply.id, 0);
    assert_eq!(reply.result.unwrap_err().kind, WireErrorKind::Malformed);

    // Wrong type with a readable id: the error carries the id.
    let value = ciborium::Value::Map(vec![
        (ciborium::Value::Text("id".into()), 41.into()),
        (
            ciborium::Value::Text("request".into()),
            ciborium::Value::Text("Sign".into()),
        ),
    ]);
    let mut body = Vec::new();
    ciborium::ser::into_writer(&value, &mut body).unwrap();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    raw.write_all(&frame).await.unwrap();
    let reply = raw_reply(&mut raw).await;
    assert_eq!(reply.id, 41);
    let err = reply.result.unwrap_err();
    assert_eq!(err.kind, WireErrorKind::Malformed);

    // Still in sync: a good request on the same raw connection works.
    let frame = encode_frame(&RequestEnvelope {
        id: 42,
        request: Request::Status,
    })
    .unwrap();
    raw.write_all(&frame).await.unwrap();
    let reply = raw_reply(&mut raw).await;
    assert_eq!(reply.id, 42);
    assert!(reply.result.is_ok());

    // Oversized length: FrameTooLarge reply, then the connection is closed.
    raw.write_all(&[0x00, 0x10, 0x00, 0x01]).await.unwrap();
    let reply = raw_reply(&mut raw).await;
    assert_eq!(reply.id, 0);
    assert_eq!(reply.result.unwrap_err().kind, WireErrorKind::FrameTooLarge);
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);

    // Truncated frame then hang-up: the server just closes that connection.
    let mut raw2 = UnixStream::connect(&path).await.unwrap();
    raw2.write_all(&[0, 0, 0, 100, 1, 2, 3]).await.unwrap();
    raw2.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw2.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());

    // Pure garbage connections.
    for seed in 0..20u8 {
        let mut raw3 = UnixStream::connect(&path).await.unwrap();
        let garbage: Vec<u8> = (0..200u32)
            .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
            .collect();
        let _ = raw3.write_all(&garbage).await;
        let _ = raw3.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), raw3.read_to_end(&mut sink)).await;
    }

    // The well-behaved client was never affected.
    for _ in 0..5 {
        good.status().await.unwrap();
    }
}

/// A client with a 40 ms timeout whose late replies go to the returned queue.
fn late_client(path: &Path) -> (EnclaveClient, tokio::sync::mpsc::Receiver<Response>) {
    let (late, late_replies) = tokio::sync::mpsc::channel(4);
    let client = EnclaveClient::with_late_replies(
        Address::Unix(path.to_path_buf()),
        1,
        Duration::from_millis(40),
        late,
    );
    (client, late_replies)
}

#[tokio::test]
async fn a_reply_after_the_timeout_goes_to_the_late_queue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.sock");
    let _server = start_server(&path).await;
    // The toy answers wallet "0" after 128 ms: past the 40 ms timeout.
    let (client, mut late_replies) = late_client(&path);
    let request = MintJwtRequest {
        wallet: "0".into(),
        ttl_seconds: None,
        audience: None,
        proof: None,
    };
    match client.mint_jwt(request).await {
        Err(ClientError::Timeout { request, .. }) => assert_eq!(request, "MintJwt"),
        other => panic!("{other:?}"),
    }
    let reply = tokio::time::timeout(Duration::from_secs(5), late_replies.recv())
        .await
        .expect("the late reply was handed over")
        .expect("the queue is open");
    match reply {
        Response::Jwt(minted) => assert_eq!(minted.jwt, "jwt-0"),
        other => panic!("{other:?}"),
    }
    // Replies to callers that waited do not go there.
    client.status().await.unwrap();
    assert!(late_replies.try_recv().is_err());
}

#[tokio::test]
async fn a_late_error_reply_is_not_handed_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.sock");
    let _server = start_server(&path).await;
    let (client, mut late_replies) = late_client(&path);
    // The toy refuses Attest after nonce[0] × 100 ms: an error, and late.
    assert!(matches!(
        client.attest(Some(vec![1])).await,
        Err(ClientError::Timeout { .. })
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.status().await.unwrap();
    assert!(late_replies.try_recv().is_err());
}
