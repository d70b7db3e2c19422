//! The load generator: keep-alive HTTP/1.1 connections (hyper 1 client connections),
//! one task per connection, requests sent one after another on each connection; over
//! plain TCP or over TLS ([`LoadSpec::tls`], a `tokio_rustls` stream under the same
//! hyper client).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::cpu::Snapshot;
use super::histogram::Histogram;
use super::tls::TlsClient;

/// What to drive.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Server address.
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Request path (`/v1/mint-oidc-jwt`).
    pub path: String,
    /// One bearer per connection (`None`: no `Authorization` header). Its length is the
    /// connection count.
    pub bearers: Vec<Option<String>>,
    /// Request body.
    pub body: Bytes,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Requests before the measurement starts (counted for errors and audit ids, not timed).
    pub warmup: Duration,
    /// Measured period.
    pub duration: Duration,
    /// Pull `"audit_id"` out of every 200 response body.
    pub collect_audit_ids: bool,
    /// Processes whose CPU is read ([`Snapshot`]) when the measured period starts and
    /// when it ends (empty: none).
    pub cpu_pids: Vec<Option<u32>>,
    /// Speak TLS on each connection (`None`: plain HTTP).
    pub tls: Option<TlsClient>,
}

impl LoadSpec {
    /// `POST /x` with an empty body and no bearer on `connections` connections to an
    /// in-process route at `addr`, plain HTTP, no CPU read: the shape of the benchmark's
    /// own minimal routes.
    pub fn minimal_route(
        addr: SocketAddr,
        connections: usize,
        warmup: Duration,
        duration: Duration,
    ) -> LoadSpec {
        LoadSpec {
            addr,
            host: addr.to_string(),
            path: "/x".into(),
            bearers: vec![None; connections],
            body: Bytes::new(),
            content_type: "application/json",
            warmup,
            duration,
            collect_audit_ids: false,
            cpu_pids: Vec::new(),
            tls: None,
        }
    }
}

/// The outcome of one load run.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Latency of the requests started inside the measured period.
    pub histogram: Histogram,
    /// 200 responses to requests started inside the measured period.
    pub measured_ok: u64,
    /// Requests (any outcome) started inside the measured period.
    pub measured_requests: u64,
    /// Actual measured wall time (first measured start to last measured completion).
    pub measured_elapsed: Duration,
    /// 200 responses over the whole run (warm-up included).
    pub total_ok: u64,
    /// Non-200 responses and transport failures over the whole run.
    pub errors: u64,
    /// Count of each non-200 status seen.
    pub error_statuses: std::collections::BTreeMap<u16, u64>,
    /// Transport failures (connect, send, body).
    pub transport_errors: u64,
    /// The first failure seen, for the report.
    pub first_error: Option<String>,
    /// `audit_id` of every 200 (when collected), in no particular order.
    pub audit_ids: Vec<i64>,
    /// 200 responses whose body carried no integer `audit_id` (when collected).
    pub missing_audit_ids: u64,
    /// CPU of [`LoadSpec::cpu_pids`] at the start and at the end of the measured period.
    pub cpu_window: Option<(Snapshot, Snapshot)>,
}

impl LoadResult {
    /// Measured requests per second (measured 200s and errors alike).
    pub fn requests_per_second(&self) -> f64 {
        let secs = self.measured_elapsed.as_secs_f64();
        if secs <= 0.0 {
            0.0
        } else {
            self.measured_requests as f64 / secs
        }
    }

    fn absorb(&mut self, other: ConnResult) {
        self.histogram.merge(&other.histogram);
        self.measured_ok += other.measured_ok;
        self.measured_requests += other.measured_requests;
        self.total_ok += other.total_ok;
        self.errors += other.errors;
        self.transport_errors += other.transport_errors;
        for (k, v) in other.error_statuses {
            *self.error_statuses.entry(k).or_default() += v;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.audit_ids.extend(other.audit_ids);
        self.missing_audit_ids += other.missing_audit_ids;
    }
}

#[derive(Default)]
struct ConnResult {
    histogram: Histogram,
    measured_ok: u64,
    measured_requests: u64,
    total_ok: u64,
    errors: u64,
    transport_errors: u64,
    error_statuses: std::collections::BTreeMap<u16, u64>,
    first_error: Option<String>,
    audit_ids: Vec<i64>,
    missing_audit_ids: u64,
    last_done: Option<Instant>,
}

impl ConnResult {
    fn fail(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }
}

/// Pulls the integer after `"audit_id":` out of a JSON body without a full parse (the
/// load generator must stay cheap next to the server it measures).
pub fn find_audit_id(body: &[u8]) -> Option<i64> {
    const KEY: &[u8] = b"\"audit_id\"";
    let at = body.windows(KEY.len()).position(|w| w == KEY)?;
    let rest = &body[at + KEY.len()..];
    let rest = trim_start(rest);
    let rest = trim_start(rest.strip_prefix(b":")?);
    let end = rest
        .iter()
        .position(|b| !(b.is_ascii_digit() || *b == b'-'))
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

/// Runs the load: every connection starts at once, warms up, then is measured.
pub async fn run(spec: LoadSpec) -> LoadResult {
    let spec = Arc::new(spec);
    let start = Instant::now();
    let measure_start = start + spec.warmup;
    let end = measure_start + spec.duration;
    // The CPU sampler: its window is the measured period, whose requests are counted
    // by when they start; at most one request per connection straddles each edge.
    let sampler = (!spec.cpu_pids.is_empty()).then(|| {
        let pids = spec.cpu_pids.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_start.into()).await;
            let before = Snapshot::take(&pids);
            tokio::time::sleep_until(end.into()).await;
            (before, Snapshot::take(&pids))
        })
    });
    let mut tasks = Vec::with_capacity(spec.bearers.len());
    for i in 0..spec.bearers.len() {
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            connection(&spec, i, measure_start, end).await
        }));
    }
    let mut result = LoadResult::default();
    let mut last_done = measure_start;
    for t in tasks {
        match t.await {
            Ok(r) => {
                if let Some(d) = r.last_done {
                    last_done = last_done.max(d);
                }
                result.absorb(r);
            }
            Err(e) => {
                result.errors += 1;
                result
                    .first_error
                    .get_or_insert(format!("load task failed: {e}"));
            }
        }
    }
    if let Some(s) = sampler {
        result.cpu_window = s.await.ok();
    }
    result.measured_elapsed = last_done.saturating_duration_since(measure_start);
    if result.measured_elapsed < spec.duration / 2 {
        // Every connection died early: report the nominal period so the rate is not inflated.
        result.measured_elapsed = spec.duration;
    }
    result
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr, tls: Option<&TlsClient>) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("set_nodelay: {e}"))?;
    match tls {
        None => http1_over(stream, addr).await,
        Some(t) => {
            let stream = t
                .connector
                .connect(t.server_name.clone(), stream)
                .await
                .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
            http1_over(stream, addr).await
        }
    }
}

/// An HTTP/1.1 client connection over `io` (TCP, or TLS over TCP), its connection task
/// spawned.
async fn http1_over<IO>(io: IO, addr: SocketAddr) -> Result<Sender, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP/1.1 handshake with {addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Most consecutive transport failures on one connection before it gives up.
const MAX_RECONNECTS: u32 = 3;

async fn connection(spec: &LoadSpec, i: usize, measure_start: Instant, end: Instant) -> ConnResult {
    let mut r = ConnResult::default();
    let auth = spec.bearers[i].as_ref().map(|b| format!("Bearer {b}"));
    let mut sender: Option<Sender> = None;
    let mut failures = 0u32;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let s = match sender.as_mut() {
            Some(s) => s,
            None => match connect(spec.addr, spec.tls.as_ref()).await {
                Ok(s) => sender.insert(s),
                Err(e) => {
                    r.transport_errors += 1;
                    r.fail(e);
                    failures += 1;
                    if failures > MAX_RECONNECTS {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(spec.path.as_str())
            .header(HOST, spec.host.as_str())
            .header(CONTENT_TYPE, spec.content_type);
        if let Some(a) = &auth {
            req = req.header(AUTHORIZATION, a.as_str());
        }
        let req = match req.body(Full::new(spec.body.clone())) {
            Ok(req) => req,
            Err(e) => {
                r.fail(format!("building the request: {e}"));
                break;
            }
        };
        let outcome = async {
            s.ready().await.map_err(|e| format!("connection: {e}"))?;
            let resp = s
                .send_request(req)
                .await
                .map_err(|e| format!("send: {e}"))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        }
        .await;
        let done = Instant::now();
        let measured = t0 >= measure_start;
        if measured {
            r.measured_requests += 1;
            r.last_done = Some(done);
        }
        match outcome {
            Ok((status, body)) => {
                failures = 0;
                if status == StatusCode::OK {
                    r.total_ok += 1;
                    if measured {
                        r.measured_ok += 1;
                        r.histogram.record(done - t0);
                    }
                    if spec.collect_audit_ids {
                        match find_audit_id(&body) {
                            Some(id) => r.audit_ids.push(id),
                            None => r.missing_audit_ids += 1,
                        }
                    }
                } else {
                    *r.error_statuses.entry(status.as_u16()).or_default() += 1;
                    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                    r.fail(format!("HTTP {status}: {text}"));
                    if measured {
                        r.histogram.record(done - t0);
                    }
                }
            }
            Err(e) => {
                r.transport_errors += 1;
                r.fail(e);
                sender = None;
                failures += 1;
                if failures > MAX_RECONNECTS {
                    break;
                }
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::find_audit_id;

    #[test]
    fn audit_id_is_found() {
        assert_eq!(find_audit_id(br#"{"jwt":"a.b.c","audit_id":42}"#), Some(42));
        assert_eq!(find_audit_id(br#"{"audit_id" : 7 ,"x":1}"#), Some(7));
        assert_eq!(
            find_audit_id(br#"{"audit_id":123456789012}"#),
            Some(123456789012)
        );
    }

    #[test]
    fn audit_id_absent_or_malformed() {
        assert_eq!(find_audit_id(br#"{"jwt":"a"}"#), None);
        assert_eq!(find_audit_id(br#"{"audit_id":"x"}"#), None);
        assert_eq!(find_audit_id(br#"{"audit_id"}"#), None);
        assert_eq!(find_audit_id(b""), None);
    }
}
