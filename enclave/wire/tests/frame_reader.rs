//! The buffered [`FrameReader`]: frames split anywhere across reads, many frames in one
//! read, large frames, and every error the unbuffered reader gives.

use std::pin::Pin;
use std::task::{Context, Poll};

use agentkeys_wire::frame::{
    decode_body, encode_frame, FrameReader, LENGTH_PREFIX_BYTES, MAX_FRAME_BYTES, READ_BUFFER_BYTES,
};
use agentkeys_wire::*;
use tokio::io::{AsyncRead, ReadBuf};

/// A stream that hands out its bytes in chunks of at most `chunk` bytes per read.
struct Chunked {
    bytes: Vec<u8>,
    at: usize,
    chunk: usize,
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self
            .chunk
            .min(out.remaining())
            .min(self.bytes.len() - self.at);
        let at = self.at;
        out.put_slice(&self.bytes[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

fn chunked(bytes: Vec<u8>, chunk: usize) -> FrameReader<Chunked> {
    FrameReader::new(Chunked {
        bytes,
        at: 0,
        chunk,
    })
}

fn mint_frame(id: u64, subject: &str) -> Vec<u8> {
    encode_frame(&RequestEnvelope {
        id,
        request: Request::Attest {
            nonce: Some(subject.as_bytes().to_vec()),
        },
    })
    .unwrap()
    .to_vec()
}

async fn read_ids(reader: &mut FrameReader<Chunked>) -> Vec<(u64, Request)> {
    let mut seen = Vec::new();
    while let Some(body) = reader.next_frame().await.unwrap() {
        let envelope = decode_body::<RequestEnvelope>(body).unwrap();
        seen.push((envelope.id, envelope.request));
    }
    seen
}

fn stream_of(count: u64) -> (Vec<u8>, Vec<(u64, Request)>) {
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for id in 1..=count {
        let subject = format!("wallet-{id}-{}", "x".repeat((id as usize * 37) % 300));
        bytes.extend(mint_frame(id, &subject));
        expected.push((
            id,
            Request::Attest {
                nonce: Some(subject.into_bytes()),
            },
        ));
    }
    (bytes, expected)
}

#[tokio::test]
async fn many_frames_in_one_read_come_out_in_order() {
    let (bytes, expected) = stream_of(200);
    assert!(
        bytes.len() > READ_BUFFER_BYTES,
        "the stream must wrap the buffer"
    );
    let mut reader = chunked(bytes, usize::MAX);
    assert_eq!(read_ids(&mut reader).await, expected);
}

#[tokio::test]
async fn frames_split_at_every_chunk_size_come_out_whole() {
    let (bytes, expected) = stream_of(40);
    for chunk in [1, 2, 3, 4, 5, 7, 64, 333, 4096] {
        let mut reader = chunked(bytes.clone(), chunk);
        assert_eq!(read_ids(&mut reader).await, expected, "chunk {chunk}");
    }
}

#[tokio::test]
async fn a_frame_larger_than_the_buffer_grows_it() {
    let large = "y".repeat(READ_BUFFER_BYTES * 2);
    let mut bytes = mint_frame(1, "small");
    bytes.extend(mint_frame(2, &large));
    bytes.extend(mint_frame(3, "after"));
    let mut reader = chunked(bytes, 1000);
    let seen = read_ids(&mut reader).await;
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[1],
        (
            2,
            Request::Attest {
                nonce: Some(large.into_bytes())
            }
        )
    );
    assert_eq!(seen[2].0, 3);
}

#[tokio::test]
async fn a_clean_end_of_stream_is_none() {
    let mut reader = chunked(Vec::new(), 10);
    assert!(reader.next_frame().await.unwrap().is_none());
}

#[tokio::test]
async fn a_stream_cut_anywhere_is_truncated() {
    let frame = mint_frame(9, "cut");
    for cut in 1..frame.len() {
        let mut reader = chunked(frame[..cut].to_vec(), 3);
        match reader.next_frame().await {
            Err(FrameError::Truncated { expected, actual }) => {
                assert_eq!(actual, cut, "cut {cut}");
                let want = if cut < LENGTH_PREFIX_BYTES {
                    LENGTH_PREFIX_BYTES
                } else {
                    frame.len()
                };
                assert_eq!(expected, want, "cut {cut}");
            }
            other => panic!("cut {cut}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_oversized_prefix_is_refused_before_any_body_is_read() {
    let mut bytes = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes().to_vec();
    bytes.push(0);
    let mut reader = chunked(bytes, 64);
    match reader.next_frame().await {
        Err(FrameError::TooLarge { length, max }) => {
            assert_eq!(length, MAX_FRAME_BYTES as u64 + 1);
            assert_eq!(max, MAX_FRAME_BYTES);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_empty_frame_is_an_error_and_the_stream_stays_in_sync() {
    let mut bytes = vec![0, 0, 0, 0];
    bytes.extend(mint_frame(5, "next"));
    let mut reader = chunked(bytes, 2);
    assert!(matches!(reader.next_frame().await, Err(FrameError::Empty)));
    let body = reader.next_frame().await.unwrap().unwrap();
    assert_eq!(decode_body::<RequestEnvelope>(body).unwrap().id, 5);
}

#[tokio::test]
async fn the_debug_form_shows_no_buffered_bytes() {
    let secret = "wJalrXUtnFEMI-secret";
    let mut reader = chunked(mint_frame(1, secret), usize::MAX);
    let _ = reader.next_frame().await.unwrap().unwrap();
    let shown = format!("{reader:?}");
    assert!(!shown.contains(secret), "{shown}");
    assert!(shown.contains("capacity"), "{shown}");
}
