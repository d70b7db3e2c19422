//! The throw-away PostgreSQL cluster of the end-to-end tests and `agentkeys-bench`. One
//! copy serves both crates: the broker's tests cannot depend on this crate (it depends on
//! the broker), so the helper lives in `parent/tests/support_pg/mod.rs`, uses only the
//! standard library and `tempfile`, and is included here by path.

#[path = "../../parent/tests/support_pg/mod.rs"]
mod support_pg;

pub use support_pg::{postgres_required, PgCluster, PgTls, REQUIRE_ENV, SUPERUSER_PASSWORD};
