//! The multiplexed client the parent uses to talk to the enclave.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::AbortHandle;

use crate::address::Address;
use crate::frame::{decode_body, encode_frame_into, FrameReader, ZeroizingBuffer};
use crate::messages::{
    Attestation, AuditCheckpoint, EnclaveStatus, MintJwtRequest, MintedJwt, Request,
    RequestEnvelope, Response, ResponseEnvelope, UnsealRequest, UnsealResult, WireError,
    UNKNOWN_REQUEST_ID,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be opened.
    #[error("cannot connect to the enclave at {address}: {source}")]
    Connect {
        /// The address tried.
        address: String,
        /// The transport error.
        #[source]
        source: io::Error,
    },
    /// The connection failed while the call was in flight (or just before).
    #[error("enclave connection failed: {message}")]
    Io {
        /// What happened to the connection.
        message: String,
    },
    /// No answer within the per-call timeout.
    #[error("{request} request to the enclave timed out after {after:?}")]
    Timeout {
        /// Request name.
        request: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The enclave answered with an error.
    #[error("enclave refused the request: {0}")]
    Remote(WireError),
    /// The request could not be encoded, or the answer was not the expected one.
    #[error("enclave protocol error: {message}")]
    Protocol {
        /// Detail.
        message: String,
    },
}

type Reply = Result<Result<Response, WireError>, ClientError>;

/// Where a client hands the successful replies whose caller had stopped waiting (timed
/// out or cancelled). A late [`Response::Jwt`] is a token the enclave signed and counted
/// in its audit chain: the owner of the client must record it.
pub type LateReplies = mpsc::Sender<Response>;

#[derive(Default)]
struct Pending {
    waiters: HashMap<u64, oneshot::Sender<Reply>>,
    /// Set once the connection is dead: why.
    closed: Option<String>,
}

struct Shared {
    pending: Mutex<Pending>,
    late: Option<LateReplies>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    fn register(&self, id: u64) -> Result<oneshot::Receiver<Reply>, ClientError> {
        let mut pending = self.lock();
        if let Some(reason) = &pending.closed {
            return Err(ClientError::Io {
                message: reason.clone(),
            });
        }
        let (tx, rx) = oneshot::channel();
        pending.waiters.insert(id, tx);
        Ok(rx)
    }

    fn complete(&self, envelope: ResponseEnvelope) {
        let waiter = self.lock().waiters.remove(&envelope.id);
        match waiter {
            Some(waiter) => {
                // The caller may have given up (timeout); nothing to do then.
                let _ = waiter.send(Ok(envelope.result));
            }
            None if envelope.id == UNKNOWN_REQUEST_ID => {
                tracing::warn!(
                    result = ?envelope.result.err(),
                    "enclave could not read one of our frames"
                );
            }
            None => match (envelope.result, &self.late) {
                (Ok(response), Some(late)) => {
                    let reply = response.name();
                    if let Err(error) = late.try_send(response) {
                        tracing::error!(
                            id = envelope.id,
                            reply,
                            %error,
                            "a reply for a call no longer waiting could not be handed over"
                        );
                    }
                }
                _ => tracing::debug!(id = envelope.id, "reply for a call no longer waiting"),
            },
        }
    }

    fn remove(&self, id: u64) {
        self.lock().waiters.remove(&id);
    }

    fn fail_all(&self, reason: String) {
        let waiters = {
            let mut pending = self.lock();
            if pending.closed.is_none() {
                pending.closed = Some(reason.clone());
            }
            std::mem::take(&mut pending.waiters)
        };
        for (_, waiter) in waiters {
            let _ = waiter.send(Err(ClientError::Io {
                message: reason.clone(),
            }));
        }
    }
}

/// Removes a waiter when its call ends early (timeout, cancellation, send failure).
struct WaiterGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        self.shared.remove(self.id);
    }
}

/// Most request bytes a connection holds unwritten before callers wait (back-pressure):
/// about 1 600 mint requests of ≈ 650 bytes, or 16 of the largest frames.
const OUTBOX_LIMIT_BYTES: usize = 1024 * 1024;

/// Starting capacity of a connection's outbox: a few dozen usual request frames.
const OUTBOX_INITIAL_CAPACITY: usize = 16 * 1024;

/// A connection's sending side: the frames not yet written and the stream's write half.
///
/// A caller appends its frame and, when no write is pending, writes the outbox itself
/// without waiting; only what the socket does not take at once is left to the flusher
/// task, which writes it when the socket is writable. So a request costs no hand-off to
/// another task while the socket keeps up, and frames queued together still leave in one
/// write.
struct Outbox {
    state: Mutex<OutboxState>,
    /// Wakes the flusher when a caller left bytes it could not write.
    flush: Notify,
    /// Wakes callers waiting for room once the flusher has written.
    room: Notify,
}

struct OutboxState {
    writer: Pin<Box<dyn AsyncWrite + Send>>,
    /// Encoded frames not yet written, zeroized as they are written (requests can carry
    /// credentials).
    pending: ZeroizingBuffer,
    /// The flusher owns the writing of `pending` (the socket refused part of it).
    flushing: bool,
    /// Set once a write failed: why.
    failed: Option<String>,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl OutboxState {
    /// Writes `pending` until it is empty or the socket would block.
    fn write_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.0.is_empty() {
            match self.writer.as_mut().poll_write(cx, &self.pending.0) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero)))
                }
                Poll::Ready(Ok(n)) => self.pending.consume(n),
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.writer.as_mut().poll_flush(cx)
    }
}

/// One persistent connection: its outbox (written by callers, or by a flusher task when
/// the socket is full) and a reader task.
struct Connection {
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    reader: AbortHandle,
    flusher: AbortHandle,
}

impl Connection {
    fn start<S>(stream: S, late: Option<LateReplies>) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read_half, write_half) = tokio::io::split(stream);
        let shared = Arc::new(Shared {
            pending: Mutex::default(),
            late,
        });
        let outbox = Arc::new(Outbox {
            state: Mutex::new(OutboxState {
                writer: Box::pin(write_half),
                pending: ZeroizingBuffer::with_capacity(OUTBOX_INITIAL_CAPACITY),
                flushing: false,
                failed: None,
            }),
            flush: Notify::new(),
            room: Notify::new(),
        });

        let flusher_shared = shared.clone();
        let flusher_outbox = outbox.clone();
        let flusher = tokio::spawn(async move {
            loop {
                flusher_outbox.flush.notified().await;
                let written = std::future::poll_fn(|cx| {
                    let mut state = flusher_outbox.lock();
                    let written = std::task::ready!(state.write_pending(cx));
                    state.flushing = false;
                    if let Err(error) = &written {
                        state.failed = Some(format!("write failed: {error}"));
                    }
                    Poll::Ready(written)
                })
                .await;
                flusher_outbox.room.notify_waiters();
                if let Err(error) = written {
                    flusher_shared.fail_all(format!("write failed: {error}"));
                    return;
                }
            }
        })
        .abort_handle();

        let reader_shared = shared.clone();
        let reader = tokio::spawn(async move {
            let mut frames = FrameReader::new(read_half);
            let reason = loop {
                match frames.next_frame().await {
                    Ok(Some(body)) => match decode_body::<ResponseEnvelope>(body) {
                        Ok(envelope) => reader_shared.complete(envelope),
                        Err(error) => break format!("undecodable reply: {error}"),
                    },
                    Ok(None) => break "connection closed by the enclave".to_owned(),
                    Err(error) => break format!("read failed: {error}"),
                }
            };
            reader_shared.fail_all(reason);
        })
        .abort_handle();

        Connection {
            shared,
            outbox,
            reader,
            flusher,
        }
    }

    /// Encodes `envelope` into the outbox and writes the outbox now if no write is
    /// pending; waits while the outbox is full.
    async fn send(&self, envelope: &RequestEnvelope) -> Result<(), ClientError> {
        loop {
            let room = self.outbox.room.notified();
            tokio::pin!(room);
            {
                let mut state = self.outbox.lock();
                if let Some(reason) = &state.failed {
                    return Err(ClientError::Io {
                        message: reason.clone(),
                    });
                }
                if state.pending.0.len() < OUTBOX_LIMIT_BYTES {
                    encode_frame_into(&mut state.pending, envelope).map_err(|error| {
                        ClientError::Protocol {
                            message: format!(
                                "cannot encode {} request: {error}",
                                envelope.request.name()
                            ),
                        }
                    })?;
                    if state.flushing {
                        // The flusher writes it with what is already waiting.
                        return Ok(());
                    }
                    // A waker that does nothing: if the socket would block, the flusher
                    // polls again with its own, which replaces this one.
                    match state.write_pending(&mut Context::from_waker(Waker::noop())) {
                        Poll::Ready(Ok(())) => return Ok(()),
                        Poll::Pending => {
                            state.flushing = true;
                            drop(state);
                            self.outbox.flush.notify_one();
                            return Ok(());
                        }
                        Poll::Ready(Err(error)) => {
                            let reason = format!("write failed: {error}");
                            state.failed = Some(reason.clone());
                            drop(state);
                            self.shared.fail_all(reason.clone());
                            return Err(ClientError::Io { message: reason });
                        }
                    }
                }
                // Full: wait for the flusher, registered before the lock is released so
                // that its wake-up cannot be missed.
                room.as_mut().enable();
            }
            room.await;
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared
            .fail_all("connection dropped by the client".to_owned());
        self.reader.abort();
        self.flusher.abort();
    }
}

/// One pooled connection: the live connection (fast path, a plain mutex held for a
/// clone) and an async lock serializing reconnects.
#[derive(Default)]
struct Slot {
    current: Mutex<Option<Arc<Connection>>>,
    connecting: tokio::sync::Mutex<()>,
}

impl Slot {
    fn live(&self) -> Option<Arc<Connection>> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current
            .as_ref()
            .filter(|connection| !connection.shared.is_closed())
            .cloned()
    }
}

struct Inner {
    address: Address,
    timeout: Duration,
    slots: Vec<Slot>,
    next_slot: AtomicUsize,
    next_id: AtomicU64,
    late: Option<LateReplies>,
}

/// A client for the enclave: a small pool of persistent connections used round-robin,
/// each carrying many concurrent requests matched to replies by request id.
///
/// Connections are opened lazily on first use and re-opened on the next call after a
/// failure; calls in flight on a connection that dies fail at once with
/// [`ClientError::Io`]. Every call has a timeout covering connect, send and reply.
/// Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct EnclaveClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EnclaveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnclaveClient")
            .field("address", &self.inner.address)
            .field("connections", &self.inner.slots.len())
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

impl EnclaveClient {
    /// A client for `address` with `connections` persistent connections (at least 1) and
    /// a per-call `timeout`. Connects lazily; needs no runtime until the first call.
    /// Replies whose caller stopped waiting are dropped.
    pub fn new(address: Address, connections: usize, timeout: Duration) -> EnclaveClient {
        Self::build(address, connections, timeout, None)
    }

    /// Like [`EnclaveClient::new`], but successful replies whose caller stopped waiting
    /// (timeout, cancellation) go to `late` instead of being dropped; when `late` is full
    /// or closed, such a reply is logged as an error and dropped.
    pub fn with_late_replies(
        address: Address,
        connections: usize,
        timeout: Duration,
        late: LateReplies,
    ) -> EnclaveClient {
        Self::build(address, connections, timeout, Some(late))
    }

    fn build(
        address: Address,
        connections: usize,
        timeout: Duration,
        late: Option<LateReplies>,
    ) -> EnclaveClient {
        let slots = (0..connections.max(1)).map(|_| Slot::default()).collect();
        EnclaveClient {
            inner: Arc::new(Inner {
                address,
                timeout,
                slots,
                next_slot: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                late,
            }),
        }
    }

    /// The enclave address.
    pub fn address(&self) -> &Address {
        &self.inner.address
    }

    /// Sends `request` and waits for its reply. An error reply becomes
    /// [`ClientError::Remote`].
    pub async fn call(&self, request: Request) -> Result<Response, ClientError> {
        let name = request.name();
        let id = self.next_id();
        let envelope = RequestEnvelope { id, request };
        let after = self.inner.timeout;
        match tokio::time::timeout(after, self.exchange(&envelope)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                request: name,
                after,
            }),
        }
    }

    fn next_id(&self) -> u64 {
        loop {
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            if id != UNKNOWN_REQUEST_ID {
                return id;
            }
        }
    }

    async fn exchange(&self, envelope: &RequestEnvelope) -> Result<Response, ClientError> {
        let id = envelope.id;
        let slot = self.inner.next_slot.fetch_add(1, Ordering::Relaxed) % self.inner.slots.len();
        let connection = self.connection(slot).await?;
        let reply = connection.shared.register(id)?;
        let _guard = WaiterGuard {
            shared: connection.shared.clone(),
            id,
        };
        connection.send(envelope).await?;
        drop(connection);
        match reply.await {
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(remote))) => Err(ClientError::Remote(remote)),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ClientError::Io {
                message: "connection closed before the reply".to_owned(),
            }),
        }
    }

    async fn connection(&self, slot: usize) -> Result<Arc<Connection>, ClientError> {
        let Some(slot) = self.inner.slots.get(slot) else {
            return Err(ClientError::Protocol {
                message: "connection slot out of range".to_owned(),
            });
        };
        if let Some(connection) = slot.live() {
            return Ok(connection);
        }
        let _connecting = slot.connecting.lock().await;
        // Another call may have reconnected while this one waited.
        if let Some(connection) = slot.live() {
            return Ok(connection);
        }
        // Dead or never opened: drop the old one (aborting its tasks) and reconnect.
        let old = slot
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(old);
        let stream = self
            .inner
            .address
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                address: self.inner.address.to_string(),
                source,
            })?;
        let connection = Arc::new(Connection::start(stream, self.inner.late.clone()));
        *slot.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(connection.clone());
        Ok(connection)
    }

    /// [`Request::Status`].
    pub async fn status(&self) -> Result<EnclaveStatus, ClientError> {
        match self.call(Request::Status).await? {
            Response::Status(status) => Ok(status),
            other => Err(unexpected("Status", &other)),
        }
    }

    /// [`Request::Unseal`].
    pub async fn unseal(&self, request: UnsealRequest) -> Result<UnsealResult, ClientError> {
        match self.call(Request::Unseal(request)).await? {
            Response::Unsealed(result) => Ok(result),
            other => Err(unexpected("Unsealed", &other)),
        }
    }

    /// [`Request::MintJwt`].
    pub async fn mint_jwt(&self, request: MintJwtRequest) -> Result<MintedJwt, ClientError> {
        match self.call(Request::MintJwt(request)).await? {
            Response::Jwt(jwt) => Ok(jwt),
            other => Err(unexpected("Jwt", &other)),
        }
    }

    /// [`Request::Attest`].
    pub async fn attest(&self, nonce: Option<Vec<u8>>) -> Result<Attestation, ClientError> {
        match self.call(Request::Attest { nonce }).await? {
            Response::Attestation(attestation) => Ok(attestation),
            other => Err(unexpected("Attestation", &other)),
        }
    }

    /// [`Request::AuditCheckpoint`].
    pub async fn audit_checkpoint(
        &self,
        nonce: Option<Vec<u8>>,
    ) -> Result<AuditCheckpoint, ClientError> {
        match self.call(Request::AuditCheckpoint { nonce }).await? {
            Response::Checkpoint(checkpoint) => Ok(checkpoint),
            other => Err(unexpected("Checkpoint", &other)),
        }
    }

    /// [`Request::SiweNonce`]: a nonce and the last UNIX second it is accepted.
    pub async fn siwe_nonce(&self) -> Result<(String, u64), ClientError> {
        match self.call(Request::SiweNonce).await? {
            Response::SiweNonce { nonce, expires_at } => Ok((nonce, expires_at)),
            other => Err(unexpected("SiweNonce", &other)),
        }
    }
}

fn unexpected(expected: &str, actual: &Response) -> ClientError {
    ClientError::Protocol {
        message: format!("expected a {expected} reply, got {}", actual.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameReader;

    /// A request of about `size` bytes on the wire.
    fn large_request(id: u64, size: usize) -> RequestEnvelope {
        RequestEnvelope {
            id,
            request: Request::Attest {
                nonce: Some(vec![(id % 251) as u8; size]),
            },
        }
    }

    /// Reads `count` request frames from `peer` and checks their ids and contents.
    async fn read_requests(peer: tokio::net::UnixStream, count: u64, size: usize) {
        let mut frames = FrameReader::new(peer);
        for id in 1..=count {
            let body = frames.next_frame().await.unwrap().unwrap();
            let envelope: RequestEnvelope = decode_body(body).unwrap();
            assert_eq!(envelope.id, id, "frames arrive whole and in order");
            match envelope.request {
                Request::Attest { nonce: Some(nonce) } => {
                    assert_eq!(nonce, vec![(id % 251) as u8; size])
                }
                other => panic!("unexpected request {}", other.name()),
            }
        }
    }

    #[tokio::test]
    async fn frames_the_socket_does_not_take_at_once_are_written_by_the_flusher() {
        let (ours, peer) = tokio::net::UnixStream::pair().unwrap();
        let connection = Connection::start(ours, None);
        const SIZE: usize = 32 * 1024;
        const COUNT: u64 = 24;
        // 768 KiB: more than a Unix socket buffers while its peer does not read, less
        // than the outbox holds, so every send returns and the rest waits in the outbox.
        for id in 1..=COUNT {
            connection.send(&large_request(id, SIZE)).await.unwrap();
        }
        {
            let state = connection.outbox.lock();
            assert!(state.flushing, "the socket refused part of the frames");
            assert!(!state.pending.0.is_empty());
        }
        tokio::time::timeout(Duration::from_secs(20), read_requests(peer, COUNT, SIZE))
            .await
            .expect("the flusher writes what the socket refused");
        let state = connection.outbox.lock();
        assert!(!state.flushing);
        assert!(state.pending.0.is_empty());
    }

    #[tokio::test]
    async fn a_full_outbox_makes_callers_wait_until_the_flusher_has_written() {
        let (ours, peer) = tokio::net::UnixStream::pair().unwrap();
        let connection = Arc::new(Connection::start(ours, None));
        const SIZE: usize = 60 * 1024;
        let mut sent = 0;
        let mut waiting = None;
        // The outbox holds 1 MiB; the socket a few hundred KiB more.
        for id in 1..=64u64 {
            let connection = connection.clone();
            let mut send =
                tokio::spawn(async move { connection.send(&large_request(id, SIZE)).await });
            match tokio::time::timeout(Duration::from_millis(200), &mut send).await {
                Ok(result) => {
                    result.unwrap().unwrap();
                    sent = id;
                }
                Err(_) => {
                    waiting = Some(send);
                    break;
                }
            }
        }
        let waiting = waiting.expect("a send waits once the outbox is full");
        assert!(connection.outbox.lock().pending.0.len() >= OUTBOX_LIMIT_BYTES);
        let reader = tokio::spawn(read_requests(peer, sent + 1, SIZE));
        tokio::time::timeout(Duration::from_secs(20), async {
            waiting.await.unwrap().unwrap();
            reader.await.unwrap();
        })
        .await
        .expect("the waiting send goes on once the flusher has written");
    }

    #[test]
    fn a_partial_write_keeps_the_rest_in_order() {
        let mut buffer = ZeroizingBuffer::with_capacity(8);
        buffer.0.extend_from_slice(b"abcdefghij");
        buffer.consume(3);
        assert_eq!(&buffer.0[..], b"defghij");
        buffer.consume(7);
        assert!(buffer.0.is_empty());
        buffer.0.extend_from_slice(b"xy");
        buffer.consume(10);
        assert!(buffer.0.is_empty());
    }
}
