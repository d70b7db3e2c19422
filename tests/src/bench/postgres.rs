//! The audit store comparison: the same mint load against a dev stack on SQLite and on
//! PostgreSQL, interleaved (SQLite, PostgreSQL, SQLite, PostgreSQL, …) so that a shared,
//! noisy machine drifts over both alike, then against a fleet (`dev --hosts N`) with the
//! load spread over every host's URL.
//!
//! PostgreSQL is a throw-away cluster ([`agentkeys_e2e::postgres::PgCluster`], the one the
//! tests use), a fresh database per phase. Each phase starts its own stack in a fresh data
//! directory, so no phase inherits another's log or sessions. Every phase checks that the
//! log holds exactly one success row per token returned (for a fleet, each host's tokens
//! against its own chain), and reports rows per commit from the broker's own counters
//! (`GET /dev/audit/stats`, the dev stack's route).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use serde_json::json;

use agentkeys_e2e::postgres::{postgres_required, PgCluster, REQUIRE_ENV};

use super::histogram::Histogram;
use super::load::{self, LoadResult, LoadSpec};
use super::stack::DevStack;

/// What the comparison drives.
pub struct CompareSpec<'a> {
    /// The `agentkeys-dev` binary.
    pub dev_bin: &'a Path,
    /// The route's path (`/v1/mint-oidc-jwt`).
    pub path: &'static str,
    /// The audit event of a successful request (`mint_jwt`).
    pub event: &'static str,
    /// Keep-alive connections (spread over the hosts of a fleet).
    pub connections: usize,
    /// Warm-up before each measured period.
    pub warmup: Duration,
    /// Measured period of each phase.
    pub duration: Duration,
    /// SQLite/PostgreSQL pairs.
    pub rounds: usize,
    /// Hosts of the fleet phase (0: none).
    pub fleet_hosts: u16,
}

/// Which store a phase ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// SQLite file, one host.
    Sqlite,
    /// PostgreSQL, one host.
    Postgres,
    /// PostgreSQL, several hosts.
    Fleet,
}

impl Store {
    fn label(self) -> &'static str {
        match self {
            Store::Sqlite => "sqlite",
            Store::Postgres => "postgres",
            Store::Fleet => "fleet",
        }
    }
}

/// One measured phase.
#[derive(Debug)]
pub struct Phase {
    /// The store.
    pub store: Store,
    /// Hosts the load was spread over.
    pub hosts: usize,
    /// Measured requests per second, summed over the hosts.
    pub rps: f64,
    /// Latency over every host.
    pub histogram: Histogram,
    /// Errors over the whole phase.
    pub errors: u64,
    /// The first error seen.
    pub first_error: Option<String>,
    /// Rows and commits the brokers made during the phase (warm-up included).
    pub rows: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Whether the log holds exactly one success row per token returned.
    pub audit_ok: bool,
    /// Tokens returned.
    pub tokens: u64,
}

impl Phase {
    /// Rows per commit (group commit size).
    pub fn rows_per_commit(&self) -> Option<f64> {
        (self.commits > 0).then(|| self.rows as f64 / self.commits as f64)
    }

    fn p99_ms(&self) -> f64 {
        self.histogram.quantile_ns(0.99) as f64 / 1e6
    }
}

/// Every phase of a run.
#[derive(Debug, Default)]
pub struct Comparison {
    /// In the order they ran.
    pub phases: Vec<Phase>,
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (n, sum) = v.fold((0usize, 0.0), |(n, s), x| (n + 1, s + x));
    (n > 0).then(|| sum / n as f64)
}

impl Comparison {
    fn mean_rps(&self, store: Store) -> Option<f64> {
        mean(
            self.phases
                .iter()
                .filter(|p| p.store == store)
                .map(|p| p.rps),
        )
    }

    /// PostgreSQL's mean mint rate over SQLite's on one host.
    pub fn ratio(&self) -> Option<f64> {
        let s = self.mean_rps(Store::Sqlite).filter(|s| *s > 0.0)?;
        Some(self.mean_rps(Store::Postgres)? / s)
    }

    /// Each round's PostgreSQL rate over the SQLite rate just before it.
    pub fn round_ratios(&self) -> Vec<f64> {
        let one_host: Vec<&Phase> = self
            .phases
            .iter()
            .filter(|p| p.store != Store::Fleet)
            .collect();
        one_host
            .chunks(2)
            .filter_map(|pair| match pair {
                [s, p] if s.store == Store::Sqlite && s.rps > 0.0 => Some(p.rps / s.rps),
                _ => None,
            })
            .collect()
    }

    /// What went wrong (errors, audit rows that do not match).
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        for (i, p) in self.phases.iter().enumerate() {
            let name = format!("{} phase {}", p.store.label(), i + 1);
            if p.errors > 0 {
                f.push(format!(
                    "{name}: {} errors (first: {})",
                    p.errors,
                    p.first_error.as_deref().unwrap_or("-")
                ));
            }
            if !p.audit_ok {
                f.push(format!(
                    "{name}: audit rows do not match the tokens returned"
                ));
            }
            if p.tokens == 0 {
                f.push(format!("{name}: no token returned"));
            }
        }
        f
    }

    /// The human report.
    pub fn print(&self) {
        println!();
        println!("audit stores, interleaved (each phase a fresh dev stack):");
        for (i, p) in self.phases.iter().enumerate() {
            println!(
                "  {:>2}. {:<8} {} host{}  {:>8.0} mints/s   p50 {:.2} ms   p99 {:.2} ms   \
                 {} rows/commit   errors {}   audit rows {}",
                i + 1,
                p.store.label(),
                p.hosts,
                if p.hosts == 1 { " " } else { "s" },
                p.rps,
                p.histogram.quantile_ns(0.5) as f64 / 1e6,
                p.p99_ms(),
                p.rows_per_commit()
                    .map_or("n/a".to_string(), |r| format!("{r:.1}")),
                p.errors,
                if p.audit_ok { "match" } else { "DIFFER" },
            );
        }
        let rounds: Vec<String> = self
            .round_ratios()
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect();
        println!(
            "  postgres / sqlite on one host = {} (mean of each store's phases; per round {})",
            self.ratio()
                .map_or("n/a".to_string(), |r| format!("{r:.3}")),
            if rounds.is_empty() {
                "n/a".to_string()
            } else {
                rounds.join(", ")
            }
        );
    }

    /// The figures for the `--json` line.
    pub fn json(&self) -> serde_json::Value {
        let phases: Vec<serde_json::Value> = self
            .phases
            .iter()
            .map(|p| {
                json!({
                    "store": p.store.label(),
                    "hosts": p.hosts,
                    "mints_per_second": (p.rps * 10.0).round() / 10.0,
                    "p99_ms": (p.p99_ms() * 1000.0).round() / 1000.0,
                    "rows_per_commit": p.rows_per_commit().map(|r| (r * 100.0).round() / 100.0),
                    "errors": p.errors,
                    "audit_rows_match": p.audit_ok,
                })
            })
            .collect();
        json!({
            "store_phases": phases,
            "postgres_over_sqlite": self.ratio().map(|r| (r * 1000.0).round() / 1000.0),
            "postgres_over_sqlite_rounds": self.round_ratios().iter().map(|r| (r * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
            "sqlite_mints_per_second": self.mean_rps(Store::Sqlite).map(|r| r.round()),
            "postgres_mints_per_second": self.mean_rps(Store::Postgres).map(|r| r.round()),
            "fleet_mints_per_second": self.mean_rps(Store::Fleet).map(|r| r.round()),
        })
    }
}

/// Runs the comparison; `Ok(None)` when PostgreSQL cannot start here (said on stdout),
/// unless `AGENTKEYS_REQUIRE_POSTGRES=1`.
pub fn run(
    load_rt: &tokio::runtime::Runtime,
    spec: &CompareSpec<'_>,
) -> anyhow::Result<Option<Comparison>> {
    let cluster = match PgCluster::try_start() {
        Ok(c) => c,
        Err(reason) if postgres_required() => {
            return Err(anyhow!(
                "PostgreSQL is required ({REQUIRE_ENV}=1) but cannot start: {reason}"
            ))
        }
        Err(reason) => {
            println!("postgres SKIPPED: the throw-away PostgreSQL cannot start here: {reason}");
            return Ok(None);
        }
    };
    let mut cmp = Comparison::default();
    let mut db_n = 0;
    let mut fresh_db = || -> anyhow::Result<String> {
        db_n += 1;
        let name = format!("bench_{db_n}");
        load_rt.block_on(pg_execute(
            &cluster.admin_url("postgres"),
            &format!("CREATE DATABASE {name}"),
        ))?;
        Ok(cluster.admin_url(&name))
    };
    for _ in 0..spec.rounds {
        cmp.phases
            .push(phase(load_rt, spec, Store::Sqlite, Vec::new(), None)?);
        let url = fresh_db()?;
        let extra = vec!["--audit-db".to_string(), url.clone()];
        cmp.phases
            .push(phase(load_rt, spec, Store::Postgres, extra, Some(&url))?);
    }
    if spec.fleet_hosts > 1 {
        let url = fresh_db()?;
        let extra = vec![
            "--hosts".to_string(),
            spec.fleet_hosts.to_string(),
            "--port".to_string(),
            "0".to_string(),
            "--audit-db".to_string(),
            url.clone(),
        ];
        cmp.phases
            .push(phase(load_rt, spec, Store::Fleet, extra, Some(&url))?);
    }
    Ok(Some(cmp))
}

async fn pg_connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to the benchmark's PostgreSQL")?;
    tokio::spawn(conn);
    Ok(client)
}

async fn pg_execute(url: &str, sql: &str) -> anyhow::Result<()> {
    pg_connect(url)
        .await?
        .batch_execute(sql)
        .await
        .with_context(|| format!("PostgreSQL: {sql}"))
}

/// The broker's commit counters at `base_url` (`GET /dev/audit/stats`): (commits, rows).
async fn audit_stats(http: &reqwest::Client, base_url: &str) -> anyhow::Result<(u64, u64)> {
    let v: serde_json::Value = http
        .get(format!("{base_url}/dev/audit/stats"))
        .send()
        .await
        .with_context(|| format!("GET {base_url}/dev/audit/stats"))?
        .json()
        .await?;
    let n = |k: &str| v[k].as_u64().ok_or_else(|| anyhow!("no {k} in {v}"));
    Ok((n("commits")?, n("rows")?))
}

/// [`audit_stats`] of every host, in order.
async fn every_audit_stats(
    http: &reqwest::Client,
    urls: &[String],
) -> anyhow::Result<Vec<(u64, u64)>> {
    let mut v = Vec::with_capacity(urls.len());
    for u in urls {
        v.push(audit_stats(http, u).await?);
    }
    Ok(v)
}

/// Success rows of `event` in `chain` against the tokens of one host's load.
async fn pg_audit_check(
    url: &str,
    chain: &str,
    event: &str,
    result: &LoadResult,
) -> anyhow::Result<bool> {
    let rows: BTreeSet<i64> = pg_connect(url)
        .await?
        .query(
            "SELECT chain_seq FROM audit_log WHERE chain_id = $1 AND event = $2 \
             AND outcome = 'success'",
            &[&chain, &event],
        )
        .await
        .context("reading audit_log")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let returned: BTreeSet<i64> = result.audit_ids.iter().copied().collect();
    Ok(rows == returned
        && returned.len() == result.audit_ids.len()
        && result.total_ok == result.audit_ids.len() as u64
        && result.missing_audit_ids == 0)
}

/// One phase: a fresh stack (with `extra` flags), sessions, load over every host's URL,
/// the audit check, and the brokers' commit counters.
fn phase(
    load_rt: &tokio::runtime::Runtime,
    spec: &CompareSpec<'_>,
    store: Store,
    extra: Vec<String>,
    pg_url: Option<&str>,
) -> anyhow::Result<Phase> {
    let dir = tempfile::Builder::new()
        .prefix("agentkeys-bench-store-")
        .tempdir()?;
    let mut stack = DevStack::start_with(spec.dev_bin, dir.path(), &extra)
        .with_context(|| format!("starting the {} stack", store.label()))?;
    let urls: Vec<String> = if stack.info.broker_urls.is_empty() {
        vec![stack.info.broker_url.clone()]
    } else {
        stack.info.broker_urls.clone()
    };
    let urls: Vec<String> = urls
        .iter()
        .map(|u| u.trim_end_matches('/').to_string())
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let bearers = load_rt.block_on(crate::create_sessions(
        stack.info.backend_url.trim_end_matches('/'),
        spec.connections,
    ))?;
    let sqlite_baseline = match store {
        Store::Sqlite => Some(crate::audit_baseline(&stack.info.audit_db)?),
        _ => None,
    };
    let before = load_rt.block_on(every_audit_stats(&http, &urls))?;
    let mut specs = Vec::with_capacity(urls.len());
    for (h, u) in urls.iter().enumerate() {
        let (host, addr) = crate::parse_base_url(u)?;
        specs.push(LoadSpec {
            addr,
            host,
            path: spec.path.into(),
            // Connection c goes to host c mod N.
            bearers: bearers
                .iter()
                .skip(h)
                .step_by(urls.len())
                .cloned()
                .collect(),
            body: Bytes::new(),
            content_type: "application/json",
            warmup: spec.warmup,
            duration: spec.duration,
            collect_audit_ids: true,
            cpu_pids: Vec::new(),
            tls: None,
        });
    }
    let results: Vec<LoadResult> =
        load_rt.block_on(futures_join(specs.into_iter().map(load::run).collect()));
    let after = load_rt.block_on(every_audit_stats(&http, &urls))?;
    let audit_ok = match (store, pg_url, sqlite_baseline) {
        (Store::Sqlite, _, Some(base)) => {
            crate::audit_check(&stack.info.audit_db, base, spec.event, &results[0])?.matches()
        }
        (_, Some(url), _) => {
            let mut ok = true;
            for (h, r) in results.iter().enumerate() {
                let chain = format!("host-{}", h + 1);
                ok &= load_rt.block_on(pg_audit_check(url, &chain, spec.event, r))?;
            }
            ok
        }
        _ => false,
    };
    stack.stop();
    let mut histogram = Histogram::new();
    for r in &results {
        histogram.merge(&r.histogram);
    }
    let (commits, rows) = before
        .iter()
        .zip(&after)
        .fold((0, 0), |(c, r), ((c0, r0), (c1, r1))| {
            (c + c1.saturating_sub(*c0), r + r1.saturating_sub(*r0))
        });
    Ok(Phase {
        store,
        hosts: urls.len(),
        rps: results.iter().map(LoadResult::requests_per_second).sum(),
        histogram,
        errors: results.iter().map(|r| r.errors).sum(),
        first_error: results.iter().find_map(|r| r.first_error.clone()),
        rows,
        commits,
        audit_ok,
        tokens: results.iter().map(|r| r.total_ok).sum(),
    })
}

/// Runs every load at once (each host's share of the connections) and waits for all.
async fn futures_join<F: std::future::Future<Output = LoadResult> + Send + 'static>(
    runs: Vec<F>,
) -> Vec<LoadResult> {
    let handles: Vec<_> = runs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap_or_default());
    }
    out
}
