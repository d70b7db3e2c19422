//! Round-trip throughput of the wire protocol on a Unix socket:
//! multiplexed persistent connections vs a new connection per request.
//!
//! `cargo run --release --example wire_bench -p agentkeys-wire [-- REQUESTS CONCURRENCY CONNECTIONS]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkeys_wire::frame::{decode_body, encode_frame, read_frame, write_frame};
use agentkeys_wire::*;
use tokio::sync::Semaphore;

async fn handler(request: Request) -> Result<Response, WireError> {
    match request {
        Request::MintJwt(m) => Ok(Response::Jwt(MintedJwt {
            jwt: "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIweGFiYyJ9.c2lnbmF0dXJl".into(),
            kid: "kid".into(),
            jti: "jti".into(),
            wallet: m.wallet,
            iat: 1,
            exp: 2,
            epoch: 3,
            seq: 4,
            jwt_sha256: [5; 32],
            head: [6; 32],
        })),
        _ => Err(WireError::new(WireErrorKind::InvalidRequest, "bench")),
    }
}

fn request() -> Request {
    Request::MintJwt(MintJwtRequest {
        wallet: "0x52908400098527886E0F7030069857D2E4169EE7".into(),
        ttl_seconds: Some(900),
        audience: None,
    })
}

fn arg(index: usize, default: usize) -> usize {
    std::env::args()
        .nth(index)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let requests = arg(1, 100_000);
    let concurrency = arg(2, 64);
    let connections = arg(3, 4);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.sock");
    let address = Address::Unix(path.clone());
    let listener = address.listen().await?;
    let server = tokio::spawn(serve(listener, handler));

    // Multiplexed: `connections` persistent connections, `concurrency` callers.
    let client = EnclaveClient::new(address.clone(), connections, Duration::from_secs(10));
    client.call(request()).await?; // warm up / connect
    let start = Instant::now();
    run(requests, concurrency, {
        let client = client.clone();
        move || {
            let client = client.clone();
            async move {
                client
                    .call(request())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        }
    })
    .await?;
    let multiplexed = start.elapsed();

    // One connection per request (connect, write, read, close), same concurrency.
    let per_request_n = requests / 4;
    let start = Instant::now();
    run(per_request_n, concurrency, {
        let address = address.clone();
        move || {
            let address = address.clone();
            async move {
                let mut stream = address.connect().await.map_err(|e| e.to_string())?;
                let frame = encode_frame(&RequestEnvelope {
                    id: 1,
                    request: request(),
                })
                .map_err(|e| e.to_string())?;
                write_frame(&mut stream, &frame)
                    .await
                    .map_err(|e| e.to_string())?;
                let body = read_frame(&mut stream)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("closed")?;
                let reply: ResponseEnvelope = decode_body(&body).map_err(|e| e.to_string())?;
                reply.result.map(|_| ()).map_err(|e| e.to_string())
            }
        }
    })
    .await?;
    let per_request = start.elapsed();

    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    let mux_rate = rate(requests, multiplexed);
    let per_rate = rate(per_request_n, per_request);
    println!(
        "multiplexed ({connections} connections, {concurrency} in flight): {requests} calls in {:.3} s = {:.0} calls/s, {:.1} µs/call",
        multiplexed.as_secs_f64(),
        mux_rate,
        multiplexed.as_secs_f64() * 1e6 / requests as f64
    );
    println!(
        "connection per request ({concurrency} in flight): {per_request_n} calls in {:.3} s = {:.0} calls/s, {:.1} µs/call",
        per_request.as_secs_f64(),
        per_rate,
        per_request.as_secs_f64() * 1e6 / per_request_n as f64
    );
    println!(
        "ratio multiplexed / per-request: {:.1}x",
        mux_rate / per_rate
    );
    server.abort();
    Ok(())
}

async fn run<F, Fut>(n: usize, concurrency: usize, make: F) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let call = make();
        tasks.spawn(async move {
            let result = call.await;
            drop(permit);
            result
        });
        while let Some(done) = tasks.try_join_next() {
            done.map_err(|e| e.to_string())??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    Ok(())
}
