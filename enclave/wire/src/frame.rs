//! Framing: `u32` big-endian body length ‖ CBOR body.
//!
//! The pure functions ([`encode_frame`], [`decode_frame`], [`decode_body`],
//! [`body_length`]) take bytes and return messages without I/O, so they can be fuzzed;
//! [`read_frame`] and [`write_frame`] move frames over any tokio stream.

use std::io;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

use crate::messages::{RequestEnvelope, ResponseEnvelope};

/// Largest accepted frame body, in bytes.
///
/// The largest legitimate message is an attestation reply: an NSM COSE_Sign1 document
/// (about 4.5 KiB with its certificate bundle, plus at most 1 KiB each of `user_data`,
/// `nonce` and `public_key` per the NSM API limits) beside a JWKS of a handful of P-256
/// keys (< 1 KiB). An unseal request (STS session token up to a few KiB, a KMS
/// `CiphertextBlob` of a few hundred bytes) is smaller. 64 KiB leaves a wide margin
/// while bounding what one peer can make the other buffer: at most
/// [`MAX_IN_FLIGHT_PER_CONNECTION`](crate::MAX_IN_FLIGHT_PER_CONNECTION) × 64 KiB per
/// connection.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Size of the length prefix (`u32` big-endian).
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// CBOR nesting limit while decoding. Our messages nest at most 5 deep; the limit
/// bounds the stack used on hostile input (ciborium's default is 256).
pub const CBOR_RECURSION_LIMIT: usize = 32;

/// Why a frame could not be encoded, decoded, read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announced an empty body.
    #[error("frame length is 0: a frame body is at least one byte of CBOR")]
    Empty,
    /// The length prefix (or an encoded message) exceeds [`MAX_FRAME_BYTES`].
    #[error("frame body of {length} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Announced or encoded body length.
        length: u64,
        /// [`MAX_FRAME_BYTES`].
        max: usize,
    },
    /// Fewer bytes than the frame needs.
    #[error("truncated frame: expected {expected} bytes, got {actual}")]
    Truncated {
        /// Bytes needed (prefix + body).
        expected: usize,
        /// Bytes present.
        actual: usize,
    },
    /// Bytes after the frame (pure decoding) or after the CBOR item (in the body).
    #[error("{extra} unexpected bytes after the {after}")]
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
        /// `"frame"` or `"CBOR item"`.
        after: &'static str,
    },
    /// The body is not well-formed CBOR.
    #[error("invalid CBOR at body offset {offset}")]
    InvalidCbor {
        /// Offset of the syntax error in the body.
        offset: usize,
    },
    /// The body ended inside a CBOR item.
    #[error("CBOR body ends inside an item")]
    TruncatedCbor,
    /// Well-formed CBOR of the wrong shape or types for the message.
    #[error("CBOR does not match the message type{}: {message}", offset.map(|o| format!(" at body offset {o}")).unwrap_or_default())]
    WrongShape {
        /// Offset in the body, when known.
        offset: Option<usize>,
        /// What the decoder expected.
        message: String,
    },
    /// CBOR nested deeper than [`CBOR_RECURSION_LIMIT`].
    #[error("CBOR nests deeper than {limit} levels")]
    TooDeep {
        /// [`CBOR_RECURSION_LIMIT`].
        limit: usize,
    },
    /// A message could not be serialized.
    #[error("cannot encode message: {message}")]
    Encode {
        /// Serializer detail.
        message: String,
    },
    /// Transport failure.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Validates a length prefix and returns the body length it announces.
pub fn body_length(prefix: [u8; LENGTH_PREFIX_BYTES]) -> Result<usize, FrameError> {
    let length = u32::from_be_bytes(prefix);
    if length == 0 {
        return Err(FrameError::Empty);
    }
    let length = usize::try_from(length).map_err(|_| FrameError::TooLarge {
        length: u64::from(length),
        max: MAX_FRAME_BYTES,
    })?;
    if length > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge {
            length: length as u64,
            max: MAX_FRAME_BYTES,
        });
    }
    Ok(length)
}

/// Starting capacity of an encoded frame. A mint answer, the largest frame sent often
/// (a compact JWT of about 700 bytes plus its ids and hashes), fits without growing.
const FRAME_INITIAL_CAPACITY: usize = 1536;

/// A growable buffer that zeroizes each buffer it outgrows: encoding never leaves a
/// partial copy of a frame behind in freed memory, as `Vec`'s own reallocation would.
pub(crate) struct ZeroizingBuffer(pub(crate) Zeroizing<Vec<u8>>);

impl ZeroizingBuffer {
    /// An empty buffer with room for `capacity` bytes.
    pub(crate) fn with_capacity(capacity: usize) -> ZeroizingBuffer {
        ZeroizingBuffer(Zeroizing::new(Vec::with_capacity(capacity)))
    }

    /// Removes the first `n` bytes (at most all of them), zeroizing every byte that no
    /// longer belongs to the buffer's contents.
    pub(crate) fn consume(&mut self, n: usize) {
        use zeroize::Zeroize;
        let len = self.0.len();
        let n = n.min(len);
        if n == len {
            self.0.as_mut_slice().zeroize();
            self.0.clear();
            return;
        }
        self.0.copy_within(n..len, 0);
        self.0[len - n..len].zeroize();
        self.0.truncate(len - n);
    }
}

impl io::Write for ZeroizingBuffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let needed = self.0.len() + bytes.len();
        if needed > self.0.capacity() {
            let mut larger = Vec::with_capacity(needed.max(2 * self.0.capacity()));
            larger.extend_from_slice(&self.0);
            // The outgrown buffer is zeroized as it drops.
            self.0 = Zeroizing::new(larger);
        }
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Serializes `message` as a complete frame (prefix ‖ CBOR body).
///
/// The returned buffer is zeroized on drop (request frames can carry credentials), and
/// so is every smaller buffer used on the way.
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Zeroizing<Vec<u8>>, FrameError> {
    let mut buffer = ZeroizingBuffer::with_capacity(FRAME_INITIAL_CAPACITY);
    encode_frame_into(&mut buffer, message)?;
    Ok(buffer.0)
}

/// Appends `message` as a complete frame (prefix ‖ CBOR body) to `buffer`, which can
/// already hold frames. On failure `buffer` is left as it was, the bytes of the partial
/// frame zeroized.
pub(crate) fn encode_frame_into<T: Serialize>(
    buffer: &mut ZeroizingBuffer,
    message: &T,
) -> Result<(), FrameError> {
    use zeroize::Zeroize;
    let start = buffer.0.len();
    let undo = |buffer: &mut ZeroizingBuffer| {
        buffer.0[start..].zeroize();
        buffer.0.truncate(start);
    };
    buffer.0.extend_from_slice(&[0u8; LENGTH_PREFIX_BYTES]);
    if let Err(e) = ciborium::ser::into_writer(message, &mut *buffer) {
        undo(buffer);
        return Err(FrameError::Encode {
            message: e.to_string(),
        });
    }
    let length = buffer.0.len() - start - LENGTH_PREFIX_BYTES;
    if length > MAX_FRAME_BYTES {
        undo(buffer);
        return Err(FrameError::TooLarge {
            length: length as u64,
            max: MAX_FRAME_BYTES,
        });
    }
    // length <= MAX_FRAME_BYTES < u32::MAX, so the cast is exact.
    buffer.0[start..start + LENGTH_PREFIX_BYTES].copy_from_slice(&(length as u32).to_be_bytes());
    Ok(())
}

/// Decodes exactly one complete frame (prefix ‖ body, nothing after it).
pub fn decode_frame<T: DeserializeOwned>(frame: &[u8]) -> Result<T, FrameError> {
    let Some(prefix) = frame.first_chunk::<LENGTH_PREFIX_BYTES>() else {
        return Err(FrameError::Truncated {
            expected: LENGTH_PREFIX_BYTES,
            actual: frame.len(),
        });
    };
    let length = body_length(*prefix)?;
    let body = &frame[LENGTH_PREFIX_BYTES..];
    if body.len() < length {
        return Err(FrameError::Truncated {
            expected: LENGTH_PREFIX_BYTES + length,
            actual: frame.len(),
        });
    }
    if body.len() > length {
        return Err(FrameError::TrailingBytes {
            extra: body.len() - length,
            after: "frame",
        });
    }
    decode_body(body)
}

/// Decodes a frame body (the CBOR item, nothing after it).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    if body.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge {
            length: body.len() as u64,
            max: MAX_FRAME_BYTES,
        });
    }
    let mut reader = body;
    let value = ciborium::de::from_reader_with_recursion_limit(&mut reader, CBOR_RECURSION_LIMIT)
        .map_err(|error| match error {
        ciborium::de::Error::Io(_) => FrameError::TruncatedCbor,
        ciborium::de::Error::Syntax(offset) => FrameError::InvalidCbor { offset },
        ciborium::de::Error::Semantic(offset, message) => {
            FrameError::WrongShape { offset, message }
        }
        ciborium::de::Error::RecursionLimitExceeded => FrameError::TooDeep {
            limit: CBOR_RECURSION_LIMIT,
        },
    })?;
    if !reader.is_empty() {
        return Err(FrameError::TrailingBytes {
            extra: reader.len(),
            after: "CBOR item",
        });
    }
    Ok(value)
}

/// Decodes a complete request frame.
pub fn decode_request(frame: &[u8]) -> Result<RequestEnvelope, FrameError> {
    decode_frame(frame)
}

/// Decodes a complete response frame.
pub fn decode_response(frame: &[u8]) -> Result<ResponseEnvelope, FrameError> {
    decode_frame(frame)
}

#[derive(Deserialize)]
struct IdOnly {
    id: u64,
    #[allow(dead_code)]
    #[serde(default)]
    request: Option<IgnoredAny>,
}

/// Best effort: the request id of a body that does not decode as a request (to tag the
/// error reply). `None` if even the id cannot be read.
pub fn salvage_request_id(body: &[u8]) -> Option<u64> {
    decode_body::<IdOnly>(body).ok().map(|partial| partial.id)
}

/// Reads one frame body. `Ok(None)` on a clean end of stream before a new frame.
///
/// The prefix is validated before any body byte is read or buffered, so an oversized
/// announcement costs nothing; the stream is out of sync after any error.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Zeroizing<Vec<u8>>>, FrameError> {
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    let mut filled = 0;
    while filled < LENGTH_PREFIX_BYTES {
        let n = reader.read(&mut prefix[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(FrameError::Truncated {
                expected: LENGTH_PREFIX_BYTES,
                actual: filled,
            });
        }
        filled += n;
    }
    let length = body_length(prefix)?;
    let mut body = Zeroizing::new(vec![0u8; length]);
    let mut filled = 0;
    while filled < length {
        let n = reader.read(&mut body[filled..]).await?;
        if n == 0 {
            return Err(FrameError::Truncated {
                expected: LENGTH_PREFIX_BYTES + length,
                actual: LENGTH_PREFIX_BYTES + filled,
            });
        }
        filled += n;
    }
    Ok(Some(body))
}

/// Initial size of a [`FrameReader`]'s buffer: room for dozens of the usual few-hundred-
/// byte request and reply frames, so one `read` call serves many frames under load. The
/// buffer grows (up to a prefix plus [`MAX_FRAME_BYTES`]) only for a larger frame.
pub const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Reads frames from a stream through one reusable buffer: one `read` call can bring in
/// many frames, and no frame costs an allocation.
///
/// The buffer is zeroized on drop, and each frame's bytes are zeroized once the next
/// frame is asked for (frames can carry credentials). The prefix is validated before
/// the body is buffered, so an oversized announcement costs nothing; the stream is out
/// of sync after any error.
pub struct FrameReader<R> {
    reader: R,
    buffer: Zeroizing<Vec<u8>>,
    /// First byte not yet handed out.
    start: usize,
    /// End of the bytes read so far.
    end: usize,
    /// The bytes of the frame handed out last (prefix included), zeroized on the next call.
    handed_out: std::ops::Range<usize>,
}

impl<R> std::fmt::Debug for FrameReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the buffer's contents.
        f.debug_struct("FrameReader")
            .field("buffered", &(self.end - self.start))
            .field("capacity", &self.buffer.len())
            .finish()
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `reader` with a [`READ_BUFFER_BYTES`] buffer.
    pub fn new(reader: R) -> FrameReader<R> {
        FrameReader {
            reader,
            buffer: Zeroizing::new(vec![0u8; READ_BUFFER_BYTES]),
            start: 0,
            end: 0,
            handed_out: 0..0,
        }
    }

    /// Reads the next frame body, valid until the next call. `Ok(None)` on a clean end of
    /// stream before a new frame.
    pub async fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        use zeroize::Zeroize;
        self.buffer[self.handed_out.clone()].zeroize();
        self.handed_out = 0..0;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        loop {
            let buffered = self.end - self.start;
            // Until the prefix is in, only the prefix is needed; a frame is at least one
            // byte longer than its prefix, so `buffered >= needed` below means a whole frame.
            let needed = match self.buffered_prefix() {
                None => LENGTH_PREFIX_BYTES,
                Some(prefix) => match body_length(prefix) {
                    Ok(length) => LENGTH_PREFIX_BYTES + length,
                    Err(FrameError::Empty) => {
                        // An empty frame is complete: the stream stays in sync.
                        self.start += LENGTH_PREFIX_BYTES;
                        return Err(FrameError::Empty);
                    }
                    Err(error) => return Err(error),
                },
            };
            if buffered >= needed {
                let frame = self.start..self.start + needed;
                self.start = frame.end;
                self.handed_out = frame.clone();
                return Ok(Some(
                    &self.buffer[frame.start + LENGTH_PREFIX_BYTES..frame.end],
                ));
            }
            self.make_room(needed);
            let n = self.reader.read(&mut self.buffer[self.end..]).await?;
            if n == 0 {
                if buffered == 0 {
                    return Ok(None);
                }
                return Err(FrameError::Truncated {
                    expected: needed,
                    actual: buffered,
                });
            }
            self.end += n;
        }
    }

    /// The length prefix of the next frame, once all of it has been read.
    fn buffered_prefix(&self) -> Option<[u8; LENGTH_PREFIX_BYTES]> {
        self.buffer
            .get(self.start..self.end)?
            .first_chunk::<LENGTH_PREFIX_BYTES>()
            .copied()
    }

    /// Makes room after `start` for a frame of `needed` bytes: moves the buffered bytes to
    /// the front, or into a larger buffer (the old one is zeroized as it drops).
    fn make_room(&mut self, needed: usize) {
        use zeroize::Zeroize;
        if self.start + needed <= self.buffer.len() && self.end < self.buffer.len() {
            return;
        }
        let buffered = self.end - self.start;
        if needed <= self.buffer.len() {
            self.buffer.copy_within(self.start..self.end, 0);
            self.buffer[buffered..self.end].zeroize();
        } else {
            let mut larger = Zeroizing::new(vec![0u8; needed]);
            larger[..buffered].copy_from_slice(&self.buffer[self.start..self.end]);
            self.buffer = larger;
        }
        self.start = 0;
        self.end = buffered;
    }
}

/// Writes one complete frame (as made by [`encode_frame`]) and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
) -> Result<(), FrameError> {
    writer.write_all(frame).await?;
    writer.flush().await?;
    Ok(())
}

/// Largest batch of queued frames written with one `write_all`.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Writes queued frames until the queue closes, coalescing frames queued together into
/// one write. The batch buffer is zeroized between writes.
pub(crate) async fn pump_frames<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frames: &mut tokio::sync::mpsc::Receiver<Zeroizing<Vec<u8>>>,
) -> io::Result<()> {
    use std::io::Write as _;
    use zeroize::Zeroize;
    // The last frame of a batch can take it past its capacity: the buffer then grows
    // the way an encoded frame does, zeroizing what it outgrows.
    let mut batch = ZeroizingBuffer(Zeroizing::new(Vec::with_capacity(WRITE_BATCH_BYTES)));
    while let Some(frame) = frames.recv().await {
        batch.write_all(&frame)?;
        drop(frame);
        while batch.0.len() < WRITE_BATCH_BYTES {
            match frames.try_recv() {
                Ok(frame) => batch.write_all(&frame)?,
                Err(_) => break,
            }
        }
        let written = writer.write_all(&batch.0).await;
        // Only the bytes written can hold anything: zeroing the whole capacity would
        // cost a 64 KiB memset per write.
        batch.0.as_mut_slice().zeroize();
        batch.0.clear();
        written?;
        writer.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_past_its_capacity_is_written_whole_and_in_order() {
        let (queue, mut frames) = tokio::sync::mpsc::channel(8);
        // Three 40 KiB frames: the second takes the batch past its 64 KiB capacity.
        let sent: Vec<Vec<u8>> = (1..=3u8).map(|b| vec![b; 40 * 1024]).collect();
        for frame in &sent {
            queue.send(Zeroizing::new(frame.clone())).await.unwrap();
        }
        drop(queue);
        let mut written = Vec::new();
        pump_frames(&mut written, &mut frames).await.unwrap();
        assert_eq!(written, sent.concat());
    }
}
