//! The current time as the verifier takes it: UNIX milliseconds. Every check of a
//! document or certificate takes its instant as an argument; this is the one place the
//! workspace reads the system clock for it (and for audit timestamps).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the UNIX epoch (0 if the clock is set before 1970; saturating).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
