//! Prometheus metrics of the broker, exposed by the Prometheus project's `prometheus-client`
//! crate in the Prometheus text format, version 0.0.4 ([`CONTENT_TYPE`]).
//!
//! The request path takes no lock and allocates nothing. Counters and gauges are the crate's
//! atomics. The per-route and per-status series are created once, in [`Metrics::default`],
//! and their handles kept in arrays indexed by [`Route`] and status, so [`Metrics::record`]
//! never looks a label set up: the crate's `Family` is not used, as each of its lookups takes
//! its lock. The registry exposes the same handles under their fixed label sets (`Labelled`,
//! encoded by the crate's `MetricEncoder::encode_family`), in route and status order. Every
//! known series is therefore exposed from the start, at 0 until something is recorded.
//!
//! The latency histogram's buckets are kept in atomics by `Latency`, which the crate encodes
//! (`MetricEncoder::encode_histogram`) exactly as it encodes its own histogram. The crate's
//! `metrics::histogram::Histogram` is not used: in `prometheus-client` 0.26 its buckets sit
//! behind a `Mutex` that every `observe` takes, which would put a lock on every request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{
    prometheus_text, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// `Content-Type` of [`Metrics::render`]'s output: the Prometheus text format 0.0.4, as
/// `prometheus-client` declares it for its `prometheus_text` encoder.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

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

/// Each route with its `route` label: the paths the router of `crate::http::routes` serves
/// (`docs/api.md`), and `other` for the rest.
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
        ROUTES
            .iter()
            .position(|(r, _)| *r == self)
            .unwrap_or(ROUTES.len() - 1)
    }
}

/// Status codes with their own series, with their `status` label: the statuses the broker
/// answers with (`docs/api.md`, errors); the last entry, `other`, counts the rest.
const STATUSES: [(u16, &str); 10] = [
    (200, "200"),
    (400, "400"),
    (401, "401"),
    (404, "404"),
    (405, "405"),
    (413, "413"),
    (500, "500"),
    (502, "502"),
    (503, "503"),
    (0, "other"),
];

fn status_index(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|(s, _)| *s == status)
        .unwrap_or(STATUSES.len() - 1)
}

/// Upper bounds (seconds) of the latency histogram buckets: fine below 10 ms, where the
/// mint routes answer (p50 about 4–5 ms, p99 target 10 ms, `docs/performance.md`), coarse
/// above it.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// Bytes reserved for one exposition: every series is exposed (100 request counters,
/// 10 histograms of 15 lines), about 24 KB of text.
const RENDER_CAPACITY: usize = 32 * 1024;

/// Label set of `agentkeys_http_requests_total`: `route`, `status`.
type RequestLabels = [(&'static str, &'static str); 2];
/// Label set of `agentkeys_http_request_duration_seconds`: `route`.
type RouteLabels = [(&'static str, &'static str); 1];

/// A latency histogram over [`BUCKETS`] kept in atomics; clones share the same cells.
#[derive(Clone, Debug, Default)]
struct Latency(Arc<LatencyCells>);

#[derive(Debug, Default)]
struct LatencyCells {
    /// Observations per bucket (not cumulative), the first bucket whose bound they meet.
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Latency {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.0.count.fetch_add(1, Ordering::Relaxed);
        self.0
            .sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: [(f64, u64); BUCKETS.len()] =
            std::array::from_fn(|i| (BUCKETS[i], self.0.buckets[i].load(Ordering::Relaxed)));
        // Read after the buckets, and never below them, so that `+Inf` stays the largest.
        let in_buckets: u64 = buckets.iter().map(|(_, n)| n).sum();
        let count = self.0.count.load(Ordering::Relaxed).max(in_buckets);
        let sum = self.0.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Series of one metric under fixed label sets, exposed in the order given; the metrics are
/// handles shared with [`Metrics`], which updates them without looking their labels up.
#[derive(Debug)]
struct Labelled<L, M>(Vec<(L, M)>);

impl<L, M> EncodeMetric for Labelled<L, M>
where
    L: EncodeLabelSet,
    M: EncodeMetric + TypedMetric,
{
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, metric) in &self.0 {
            metric.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }
}

/// The broker's metrics: the registry that renders them and handles on its series.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: [[Counter; STATUSES.len()]; ROUTES.len()],
    latency: [Latency; ROUTES.len()],
    /// Session checks answered from the cache.
    pub session_cache_hits: Counter,
    /// Session checks sent to the backend.
    pub session_backend_calls: Counter,
    /// Tokens returned.
    pub tokens_issued: Counter,
    /// Credentials returned.
    pub credentials_issued: Counter,
    /// Tokens withheld because their audit row failed.
    pub tokens_withheld: Counter,
    enclave_ready: Gauge,
    enclave_unseals: Counter,
    audit_pending_withheld: Gauge,
    abandoned_mints: Gauge,
    /// The issuer relay's counters.
    pub relay: crate::relay::RelayMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();

        let requests: [[Counter; STATUSES.len()]; ROUTES.len()] =
            std::array::from_fn(|_| std::array::from_fn(|_| Counter::default()));
        let mut request_series: Vec<(RequestLabels, Counter)> =
            Vec::with_capacity(ROUTES.len() * STATUSES.len());
        for ((_, route), counters) in ROUTES.iter().zip(&requests) {
            for ((_, status), c) in STATUSES.iter().zip(counters) {
                request_series.push(([("route", *route), ("status", *status)], c.clone()));
            }
        }
        registry.register(
            "agentkeys_http_requests",
            "HTTP requests by route and status",
            Labelled(request_series),
        );

        let latency: [Latency; ROUTES.len()] = std::array::from_fn(|_| Latency::default());
        let latency_series: Vec<(RouteLabels, Latency)> = ROUTES
            .iter()
            .zip(&latency)
            .map(|((_, route), h)| ([("route", *route)], h.clone()))
            .collect();
        registry.register(
            "agentkeys_http_request_duration_seconds",
            "Request latency by route",
            Labelled(latency_series),
        );

        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        // Counter names are registered without `_total`: the encoder appends it.
        let session_cache_hits = counter(
            &mut registry,
            "agentkeys_session_cache_hits",
            "Session checks answered from the positive cache",
        );
        let session_backend_calls = counter(
            &mut registry,
            "agentkeys_session_backend_calls",
            "Session checks sent to the backend",
        );
        let tokens_issued = counter(
            &mut registry,
            "agentkeys_tokens_issued",
            "JWTs returned to callers (each with a durable audit row)",
        );
        let credentials_issued = counter(
            &mut registry,
            "agentkeys_credentials_issued",
            "AWS credentials returned to callers",
        );
        let tokens_withheld = counter(
            &mut registry,
            "agentkeys_tokens_withheld",
            "Signed JWTs withheld because their audit row could not be written",
        );
        let enclave_ready = gauge(
            &mut registry,
            "agentkeys_enclave_ready",
            "1 when the enclave is unsealed and published",
        );
        let enclave_unseals = counter(
            &mut registry,
            "agentkeys_enclave_unseals",
            "Successful unseals since start",
        );
        let audit_pending_withheld = gauge(
            &mut registry,
            "agentkeys_audit_pending_withheld",
            "mint_withheld rows waiting to be written",
        );
        let abandoned_mints = gauge(
            &mut registry,
            "agentkeys_abandoned_mints",
            "Mints whose clients disconnected, still finishing so that each is recorded",
        );
        let relay = crate::relay::RelayMetrics::register(&mut registry);

        Metrics {
            registry,
            requests,
            latency,
            session_cache_hits,
            session_backend_calls,
            tokens_issued,
            credentials_issued,
            tokens_withheld,
            enclave_ready,
            enclave_unseals,
            audit_pending_withheld,
            abandoned_mints,
            relay,
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
        self.requests[r][status_index(status)].inc();
        self.latency[r].observe(elapsed);
    }

    /// Number of requests recorded for `route` with `status`.
    pub fn count(&self, route: Route, status: u16) -> u64 {
        self.requests[route.index()][status_index(status)].get()
    }

    /// The Prometheus text exposition ([`CONTENT_TYPE`]), with the scrape-time values `g`.
    ///
    /// `g` is stored in the registry's gauges before encoding; concurrent scrapes each store
    /// values read at their own scrape, so either exposition shows current values.
    pub fn render(&self, g: &Gauges) -> Result<String, std::fmt::Error> {
        self.enclave_ready.set(i64::from(g.enclave_ready));
        self.enclave_unseals
            .inner()
            .store(g.enclave_unseals, Ordering::Relaxed);
        self.audit_pending_withheld
            .set(i64::try_from(g.audit_pending_withheld).unwrap_or(i64::MAX));
        self.abandoned_mints
            .set(i64::try_from(g.abandoned_mints).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(RENDER_CAPACITY);
        prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges() -> Gauges {
        Gauges {
            enclave_ready: true,
            enclave_unseals: 1,
            audit_pending_withheld: 0,
            abandoned_mints: 3,
        }
    }

    /// The value of the unlabelled series `name`, read as the end-to-end tests read it.
    fn value(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    }

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
        m.record(Route::MintJwt, 200, Duration::from_secs(3));
        assert_eq!(m.count(Route::MintJwt, 200), 3);
        m.tokens_issued.inc();
        let text = m.render(&gauges()).unwrap();
        assert!(text.contains("\nagentkeys_abandoned_mints 3\n"), "{text}");
        assert!(text.contains(
            "agentkeys_http_requests_total{route=\"/v1/mint-oidc-jwt\",status=\"200\"} 3\n"
        ));
        assert!(text.contains(
            "agentkeys_http_requests_total{route=\"/v1/mint-oidc-jwt\",status=\"other\"} 1\n"
        ));
        assert!(
            text.contains("agentkeys_http_requests_total{route=\"/healthz\",status=\"200\"} 0\n")
        );
        let h = "agentkeys_http_request_duration_seconds";
        let mint = "route=\"/v1/mint-oidc-jwt\"";
        assert!(text.contains(&format!("{h}_bucket{{{mint},le=\"0.0005\"}} 0\n")));
        assert!(text.contains(&format!("{h}_bucket{{{mint},le=\"0.001\"}} 1\n")));
        assert!(text.contains(&format!("{h}_bucket{{{mint},le=\"0.005\"}} 3\n")));
        assert!(text.contains(&format!("{h}_bucket{{{mint},le=\"2.5\"}} 3\n")));
        assert!(text.contains(&format!("{h}_bucket{{{mint},le=\"+Inf\"}} 4\n")));
        assert!(
            text.contains(&format!("{h}_sum{{{mint}}} 3.0088\n")),
            "{text}"
        );
        assert!(text.contains(&format!("{h}_count{{{mint}}} 4\n")));
        assert_eq!(value(&text, "agentkeys_enclave_ready"), Some(1.0));
        assert_eq!(value(&text, "agentkeys_enclave_unseals_total"), Some(1.0));
        assert_eq!(value(&text, "agentkeys_tokens_issued_total"), Some(1.0));
        assert_eq!(value(&text, "agentkeys_tokens_withheld_total"), Some(0.0));
        assert_eq!(value(&text, "agentkeys_audit_pending_withheld"), Some(0.0));
        assert!(text.len() <= RENDER_CAPACITY, "{}", text.len());
    }

    #[test]
    fn descriptors_keep_names_and_types() {
        let text = Metrics::default().render(&gauges()).unwrap();
        for (name, kind) in [
            ("agentkeys_http_requests_total", "counter"),
            ("agentkeys_http_request_duration_seconds", "histogram"),
            ("agentkeys_session_cache_hits_total", "counter"),
            ("agentkeys_session_backend_calls_total", "counter"),
            ("agentkeys_tokens_issued_total", "counter"),
            ("agentkeys_credentials_issued_total", "counter"),
            ("agentkeys_tokens_withheld_total", "counter"),
            ("agentkeys_enclave_ready", "gauge"),
            ("agentkeys_enclave_unseals_total", "counter"),
            ("agentkeys_audit_pending_withheld", "gauge"),
            ("agentkeys_abandoned_mints", "gauge"),
        ] {
            assert!(
                text.contains(&format!("\n# TYPE {name} {kind}\n")),
                "{name}: {text}"
            );
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
        assert!(!text.contains(".."), "{text}");
        // Series come in route, then status order.
        let at = |route: &str, status: &str| {
            text.find(&format!(
                "agentkeys_http_requests_total{{route=\"{route}\",status=\"{status}\"}} 0\n"
            ))
        };
        assert!(at("/healthz", "200") < at("/healthz", "400"));
        assert!(at("/healthz", "other") < at("/readyz", "200"));
        assert!(at("/metrics", "other") < at("other", "200"));
        assert!(at("other", "200").is_some());
        assert!(!text.contains("_total_total"), "{text}");
        assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    }
}
