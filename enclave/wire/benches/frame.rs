//! Wire protocol cost: frame encode/decode of the hot-path messages (`MintJwt` request,
//! `Jwt` response), and the round trip over a Unix socket to a server that answers at
//! once (the hop the parent pays per mint, without the signing): the multiplexed client
//! on persistent connections against a new connection per request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkeys_wire::frame::{
    decode_body, decode_request, decode_response, encode_frame, read_frame, write_frame,
};
use agentkeys_wire::{
    serve, Address, EnclaveClient, MintJwtRequest, MintedJwt, Request, RequestEnvelope, Response,
    ResponseEnvelope, WalletProof,
};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

fn mint_request(id: u64) -> RequestEnvelope {
    RequestEnvelope {
        id,
        request: Request::MintJwt(MintJwtRequest {
            wallet: "0x00000000000000000000000000000000be7c0001".into(),
            ttl_seconds: Some(300),
            audience: None,
            // A signed session as the broker forwards it (about 600 bytes).
            proof: Some(WalletProof::Session("s".repeat(600))),
        }),
    }
}

/// A response as large as a real one: a ~560-byte JWT plus the chain fields.
fn minted() -> MintedJwt {
    MintedJwt {
        jwt: "e".repeat(560),
        kid: "Zk0aPZVw2T7VxS0eW2lQj9eXb8yVQm6iKxqJm0n3cF8".into(),
        jti: "6f1c0a3e5b7d49e8a2c4f6b8d0e1a3c5".into(),
        wallet: "0x00000000000000000000000000000000be7c0001".into(),
        iat: 1_700_000_000,
        exp: 1_700_000_300,
        epoch: 0x1234_5678_9abc_def0,
        seq: 42,
        jwt_sha256: [7; 32],
        signing_input_sha256: [7; 32],
        head: [9; 32],
    }
}

fn jwt_response(id: u64) -> ResponseEnvelope {
    ResponseEnvelope {
        id,
        result: Ok(Response::Jwt(minted())),
    }
}

fn bench_frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire_frame");
    let req = mint_request(1);
    let req_frame = encode_frame(&req).unwrap();
    let resp = jwt_response(1);
    let resp_frame = encode_frame(&resp).unwrap();
    g.bench_function("encode/mint_request", |b| {
        b.iter(|| encode_frame(black_box(&req)).unwrap())
    });
    g.bench_function("decode/mint_request", |b| {
        b.iter(|| decode_request(black_box(&req_frame)).unwrap())
    });
    g.bench_function("encode/jwt_response", |b| {
        b.iter(|| encode_frame(black_box(&resp)).unwrap())
    });
    g.bench_function("decode/jwt_response", |b| {
        b.iter(|| decode_response(black_box(&resp_frame)).unwrap())
    });
    g.finish();
}

/// Calls in flight in the concurrent case (the benchmark's default connection count).
const IN_FLIGHT: u64 = 64;

fn bench_round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let address = Address::Unix(dir.path().join("wire.sock"));
    let listener = rt.block_on(address.listen()).unwrap();
    let answer = Arc::new(minted());
    rt.spawn(serve(listener, move |_request: Request| {
        let answer = answer.clone();
        async move { Ok(Response::Jwt((*answer).clone())) }
    }));
    let mut g = c.benchmark_group("wire_round_trip");
    for connections in [1usize, 4] {
        let client = Arc::new(EnclaveClient::new(
            address.clone(),
            connections,
            Duration::from_secs(5),
        ));
        // Sequential: the latency of one hop.
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("sequential/{connections}conn"), |b| {
            b.iter_custom(|iters| {
                let client = client.clone();
                rt.block_on(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        client.call(mint_request(0).request).await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
        // 64 calls in flight: what the multiplexing buys under load.
        g.throughput(Throughput::Elements(IN_FLIGHT));
        g.bench_function(format!("concurrent64/{connections}conn"), |b| {
            b.iter_custom(|iters| {
                let client = client.clone();
                rt.block_on(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let calls = (0..IN_FLIGHT).map(|_| {
                            let client = client.clone();
                            tokio::spawn(async move { client.call(mint_request(0).request).await })
                        });
                        for call in futures::future::join_all(calls).await {
                            call.unwrap().unwrap();
                        }
                    }
                    start.elapsed()
                })
            })
        });
    }
    // Connect, write, read, close: what the multiplexed client saves.
    g.throughput(Throughput::Elements(1));
    g.bench_function("sequential/connection_per_request", |b| {
        b.iter_custom(|iters| {
            let address = address.clone();
            rt.block_on(async move {
                let frame = encode_frame(&mint_request(1)).unwrap();
                let start = Instant::now();
                for _ in 0..iters {
                    let mut stream = address.connect().await.unwrap();
                    write_frame(&mut stream, &frame).await.unwrap();
                    let body = read_frame(&mut stream).await.unwrap().unwrap();
                    let reply: ResponseEnvelope = decode_body(&body).unwrap();
                    reply.result.unwrap();
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench_frames, bench_round_trip);
criterion_main!(benches);
