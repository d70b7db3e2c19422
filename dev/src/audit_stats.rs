//! `GET /dev/audit/stats`: the broker's group-commit counters, so a benchmark can report
//! rows per commit of the SQLite and the PostgreSQL store alike (neither shows commits
//! from outside: SQLite's file does not count them, and PostgreSQL's own counters include
//! every other transaction on the server).

use agentkeys_broker::audit::AuditBackend;
use axum::routing::get;
use axum::{Json, Router};

/// The dev-only route serving `backend`'s counters as
/// `{"commits": N, "rows": N, "failed_commits": N}`.
pub fn router(backend: AuditBackend) -> Router {
    Router::new().route(
        "/dev/audit/stats",
        get(move || {
            let s = backend.stats();
            async move {
                Json(serde_json::json!({
                    "commits": s.commits,
                    "rows": s.rows,
                    "failed_commits": s.failed_commits,
                }))
            }
        }),
    )
}
