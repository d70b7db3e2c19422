//! Rendering of UNIX times for messages.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Renders UNIX milliseconds as RFC 3339 UTC, followed by the raw value.
pub(crate) fn fmt_unix_ms(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
    {
        Some(s) => format!("{s} ({ms} ms)"),
        None => format!("{ms} ms"),
    }
}

/// Renders UNIX milliseconds as RFC 3339 UTC only (empty on overflow).
pub(crate) fn rfc3339_ms(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}
