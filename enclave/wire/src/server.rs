//! The server side: serve framed requests on accepted streams.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use zeroize::Zeroizing;

use crate::address::Listener;
use crate::frame::{
    decode_body, encode_frame, pump_frames, salvage_request_id, FrameError, FrameReader,
};
use crate::messages::{
    RequestEnvelope, Response, ResponseEnvelope, WireError, WireErrorKind, UNKNOWN_REQUEST_ID,
};
use crate::Request;

/// Requests one connection may have in flight at once; further frames are not read
/// until one finishes (back-pressure). With [`MAX_FRAME_BYTES`](crate::MAX_FRAME_BYTES)
/// this bounds a connection's buffered requests to 16 MiB.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 256;

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

async fn send_reply(
    replies: &mpsc::Sender<Zeroizing<Vec<u8>>>,
    id: u64,
    result: Result<Response, WireError>,
) {
    let frame = match encode_frame(&ResponseEnvelope { id, result }) {
        Ok(frame) => frame,
        Err(error) => {
            let kind = match error {
                FrameError::TooLarge { .. } => WireErrorKind::FrameTooLarge,
                _ => WireErrorKind::Internal,
            };
            let fallback = ResponseEnvelope {
                id,
                result: Err(WireError::new(
                    kind,
                    format!("cannot encode reply: {error}"),
                )),
            };
            match encode_frame(&fallback) {
                Ok(frame) => frame,
                Err(error) => {
                    tracing::error!(%error, "cannot encode an error reply");
                    return;
                }
            }
        }
    };
    // The connection may be gone; the reply is then dropped.
    let _ = replies.send(frame).await;
}

/// Polls `future` once with a waker that does nothing. A future that is still pending
/// must be polled again with a real waker (by the task it is moved to), which replaces
/// the no-op one, as the `Future` contract requires of every implementation.
fn poll_once_without_waker<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// The reply for a handler's outcome; a panic becomes an `Internal` error.
fn handler_result(
    name: &'static str,
    outcome: std::thread::Result<Result<Response, WireError>>,
) -> Result<Response, WireError> {
    outcome.unwrap_or_else(|_| {
        tracing::error!(request = name, "request handler panicked");
        Err(WireError::new(
            WireErrorKind::Internal,
            format!("{name} handler failed"),
        ))
    })
}

/// Serves one accepted stream until the peer closes it or sends a frame that breaks
/// the framing.
///
/// A request whose handler finishes on its first poll is answered by the reading task
/// (so a handler that computes for long before its first `await` delays the reading of
/// the connection's next frames); one that has to wait runs on its own task (at most
/// [`MAX_IN_FLIGHT_PER_CONNECTION`] at once); replies are written as they complete,
/// tagged with the request id. A frame that is framed correctly but does not decode
/// gets a `Malformed` error reply (with its id if that can be read, otherwise id 0)
/// and the connection goes on; an empty frame gets a `Malformed` reply; an oversized
/// length gets a `FrameTooLarge` reply and the connection is closed (its body is never
/// read); a truncated frame or transport error closes the connection. A handler that
/// panics yields an `Internal` error reply. Returns once every reply has been written
/// (or the peer is gone).
pub async fn serve_connection<S, H, Fut>(stream: S, handler: H)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    H: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response, WireError>> + Send + 'static,
{
    let (reader, mut writer) = tokio::io::split(stream);
    let handler = Arc::new(handler);
    let (replies, mut queue) = mpsc::channel::<Zeroizing<Vec<u8>>>(MAX_IN_FLIGHT_PER_CONNECTION);

    // Both sides run inside this future, and request tasks live in a JoinSet it owns:
    // dropping the future closes the connection and aborts its requests.
    let write_side = async move {
        if let Err(error) = pump_frames(&mut writer, &mut queue).await {
            tracing::debug!(%error, "reply write failed; connection closed");
        }
    };
    let read_side = async move {
        let mut frames = FrameReader::new(reader);
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_CONNECTION));
        let mut requests = JoinSet::new();
        loop {
            while requests.try_join_next().is_some() {}
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let body = match frames.next_frame().await {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(FrameError::Empty) => {
                    tracing::warn!("empty frame");
                    let error =
                        WireError::new(WireErrorKind::Malformed, FrameError::Empty.to_string());
                    send_reply(&replies, UNKNOWN_REQUEST_ID, Err(error)).await;
                    continue;
                }
                Err(error @ FrameError::TooLarge { .. }) => {
                    tracing::warn!(%error, "oversized frame; closing the connection");
                    let error = WireError::new(WireErrorKind::FrameTooLarge, error.to_string());
                    send_reply(&replies, UNKNOWN_REQUEST_ID, Err(error)).await;
                    break;
                }
                Err(error) => {
                    tracing::debug!(%error, "connection ended");
                    break;
                }
            };
            match decode_body::<RequestEnvelope>(body) {
                Ok(RequestEnvelope { id, request }) => {
                    let name = request.name();
                    let handler = handler.clone();
                    // A panicking handler becomes an error reply.
                    let mut outcome = Box::pin(
                        AssertUnwindSafe(async move { handler(request).await }).catch_unwind(),
                    );
                    match poll_once_without_waker(outcome.as_mut()) {
                        // Requests that never wait (minting) are answered here: no task,
                        // no wake-up of another worker.
                        Poll::Ready(outcome) => {
                            send_reply(&replies, id, handler_result(name, outcome)).await;
                            drop(permit);
                        }
                        Poll::Pending => {
                            let replies = replies.clone();
                            requests.spawn(async move {
                                let result = handler_result(name, outcome.await);
                                send_reply(&replies, id, result).await;
                                drop(permit);
                            });
                        }
                    }
                }
                Err(error) => {
                    let id = salvage_request_id(body).unwrap_or(UNKNOWN_REQUEST_ID);
                    tracing::warn!(id, %error, "undecodable request frame");
                    let error = WireError::new(WireErrorKind::Malformed, error.to_string());
                    send_reply(&replies, id, Err(error)).await;
                }
            }
        }
        drop(replies);
        // Let requests already read finish and their replies be written.
        while requests.join_next().await.is_some() {}
    };
    tokio::join!(read_side, write_side);
}

/// Accepts connections on `listener` forever, serving each with [`serve_connection`]
/// on its own task. A failing connection never affects the others; a failed `accept`
/// is logged and retried. Dropping (or aborting) this future closes every connection
/// it accepted.
pub async fn serve<H, Fut>(listener: Listener, handler: H)
where
    H: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response, WireError>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "connection accepted");
                    let handler = handler.clone();
                    connections.spawn(serve_connection(stream, move |request| (*handler)(request)));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
