//! Prometheus metrics kept in atomics (no locks, no allocation on the request path).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Routes with their own series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/healthz`
    Healthz,
    /// `/readyz`
    Readyz,
    /// discovery
    Discovery,
    /// JWKS
    Jwks,
    /// attestation
    Attestation,
    /// `/v1/mint-oidc-jwt`
    MintJwt,
    /// `/v1/mint-aws-creds`
    MintAwsCreds,
    /// `/v1/audit/checkpoint`
    Checkpoint,
    /// `/metrics`
    Metrics,
    /// anything else
    Other,
}

const ROUTES: [(Route, &str); 10] = [
    (Route::Healthz, "/healthz"),
    (Route::Readyz, "/readyz"),
    (Route::Discovery, "/.well-known/openid-configuration"),
    (Route::Jwks, "/.well-known/jwks.json"),
    (Route::Attestation, "/.well-known/nitro-attestation"),
    (Route::MintJwt, "/v1/mint-oidc-jwt"),
    (Route::MintAwsCreds, "/v1/mint-aws-creds"),
    (Route::Checkpoint, "/v1/audit/checkpoint"),
    (Route::Metrics, "/metrics"),
    (Route::Other, "other"),
];

impl Route {
    /// The route of a request path.
    pub fn of_path(path: &str) -> Route {
        ROUTES
            .iter()
            .find(|(_, p)| *p == path)
            .map(|(r, _)| *r)
            .unwrap_or(Route::Other)
    }

    fn index(self) -> usize {
        ROUTES.iter().position(|(r, _)| *r == self).unwrap_or(9)
    }
}

/// Status codes with their own series; the rest count as `other`.
const STATUSES: [u16; 10] = [200, 400, 401, 404, 405, 413, 500, 502, 503, 0];

fn status_index(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|s| *s == status)
        .unwrap_or(STATUSES.len() - 1)
}

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// All counters.
pub struct Metrics {
    requests: [[AtomicU64; STATUSES.len()]; ROUTES.len()],
    latency: [Histogram; ROUTES.len()],
    /// Session checks answered from the cache.
    pub session_cache_hits: AtomicU64,
    /// Session checks sent to the backend.
    pub session_backend_calls: AtomicU64,
    /// Tokens returned.
    pub tokens_issued: AtomicU64,
    /// Credentials returned.
    pub credentials_issued: AtomicU64,
    /// Tokens withheld because their audit row failed.
    pub tokens_withheld: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency: std::array::from_fn(|_| Histogram::new()),
            session_cache_hits: AtomicU64::new(0),
            session_backend_calls: AtomicU64::new(0),
            tokens_issued: AtomicU64::new(0),
            credentials_issued: AtomicU64::new(0),
            tokens_withheld: AtomicU64::new(0),
        }
    }
}

/// Gauges read at scrape time.
pub struct Gauges {
    /// Enclave ready.
    pub enclave_ready: bool,
    /// Enclave unseals since start.
    pub enclave_unseals: u64,
    /// Audit withheld rows pending.
    pub audit_pending_withheld: usize,
    /// Mints whose clients left, still finishing.
    pub abandoned_mints: usize,
}

impl Metrics {
    /// Records one request.
    pub fn record(&self, route: Route, status: u16, elapsed: Duration) {
        let r = route.index();
        self.requests[r][status_index(status)].fetch_add(1, Ordering::Relaxed);
        self.latency[r].observe(elapsed);
    }

    /// Number of requests recorded for `route` with `status`.
    pub fn count(&self, route: Route, status: u16) -> u64 {
        self.requests[route.index()][status_index(status)].load(Ordering::Relaxed)
    }

    /// Prometheus text exposition.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(8192);
        out.push_str("# HELP agentkeys_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE agentkeys_http_requests_total counter\n");
        for (ri, (_, path)) in ROUTES.iter().enumerate() {
            for (si, status) in STATUSES.iter().enumerate() {
                let v = self.requests[ri][si].load(Ordering::Relaxed);
                if v == 0 {
                    continue;
                }
                let status = if *status == 0 {
                    "other".to_string()
                } else {
                    status.to_string()
                };
                let _ = writeln!(
                    out,
                    "agentkeys_http_requests_total{{route=\"{path}\",status=\"{status}\"}} {v}"
                );
            }
        }
        out.push_str("# HELP agentkeys_http_request_duration_seconds Request latency by route.\n");
        out.push_str("# TYPE agentkeys_http_request_duration_seconds histogram\n");
        for (ri, (_, path)) in ROUTES.iter().enumerate() {
            let h = &self.latency[ri];
            let count = h.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (bi, b) in BUCKETS.iter().enumerate() {
                cumulative += h.buckets[bi].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "agentkeys_http_request_duration_seconds_bucket{{route=\"{path}\",le=\"{b}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "agentkeys_http_request_duration_seconds_bucket{{route=\"{path}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "agentkeys_http_request_duration_seconds_sum{{route=\"{path}\"}} {}",
                h.sum_us.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "agentkeys_http_request_duration_seconds_count{{route=\"{path}\"}} {count}"
            );
        }
        let counters: [(&str, &str, &AtomicU64); 5] = [
            (
                "agentkeys_session_cache_hits_total",
                "Session checks answered from the positive cache.",
                &self.session_cache_hits,
            ),
            (
                "agentkeys_session_backend_calls_total",
                "Session checks sent to the backend.",
                &self.session_backend_calls,
            ),
            (
                "agentkeys_tokens_issued_total",
                "JWTs returned to callers (each with a durable audit row).",
                &self.tokens_issued,
            ),
            (
                "agentkeys_credentials_issued_total",
                "AWS credentials returned to callers.",
                &self.credentials_issued,
            ),
            (
                "agentkeys_tokens_withheld_total",
                "Signed JWTs withheld because their audit row could not be written.",
                &self.tokens_withheld,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP agentkeys_enclave_ready 1 when the enclave is unsealed and published.\n# TYPE agentkeys_enclave_ready gauge\nagentkeys_enclave_ready {}",
            u8::from(g.enclave_ready)
        );
        let _ = writeln!(
            out,
            "# HELP agentkeys_enclave_unseals_total Successful unseals since start.\n# TYPE agentkeys_enclave_unseals_total counter\nagentkeys_enclave_unseals_total {}",
            g.enclave_unseals
        );
        let _ = writeln!(
            out,
            "# HELP agentkeys_audit_pending_withheld mint_withheld rows waiting to be written.\n# TYPE agentkeys_audit_pending_withheld gauge\nagentkeys_audit_pending_withheld {}",
            g.audit_pending_withheld
        );
        let _ = writeln!(
            out,
            "# HELP agentkeys_abandoned_mints Mints whose clients disconnected, still finishing so that each is recorded.\n# TYPE agentkeys_abandoned_mints gauge\nagentkeys_abandoned_mints {}",
            g.abandoned_mints
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map() {
        assert_eq!(Route::of_path("/v1/mint-oidc-jwt"), Route::MintJwt);
        assert_eq!(Route::of_path("/nope"), Route::Other);
    }

    #[test]
    fn render_counts() {
        let m = Metrics::default();
        m.record(Route::MintJwt, 200, Duration::from_micros(800));
        m.record(Route::MintJwt, 200, Duration::from_millis(4));
        m.record(Route::MintJwt, 418, Duration::from_millis(4));
        assert_eq!(m.count(Route::MintJwt, 200), 2);
        let text = m.render(&Gauges {
            enclave_ready: true,
            enclave_unseals: 1,
            audit_pending_withheld: 0,
            abandoned_mints: 3,
        });
        assert!(text.contains("\nagentkeys_abandoned_mints 3\n"), "{text}");
        assert!(text.contains(
            "agentkeys_http_requests_total{route=\"/v1/mint-oidc-jwt\",status=\"200\"} 2"
        ));
        assert!(text.contains("status=\"other\"} 1"));
        assert!(text.contains(
            "agentkeys_http_request_duration_seconds_bucket{route=\"/v1/mint-oidc-jwt\",le=\"0.001\"} 1"
        ));
        assert!(text.contains("agentkeys_enclave_ready 1"));
    }
}
