//! Step 6: what the verifier expects of an authentic document (PCRs, debug mode, nonce,
//! user_data, public_key, age), and the loader for `nitro-cli` measurements.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::decode::MAX_PCR_INDEX;
use crate::document::AttestationDocument;
use crate::error::PolicyError;
use crate::measurements::{MeasurementsError, PublishedMeasurements};

/// Default leeway between the verifier's clock and the NSM's. The NSM timestamps with the
/// host's clock; one minute covers NTP-disciplined hosts with room to spare.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// What the verifier requires beyond authenticity. `Policy::default()` constrains nothing
/// except that debug-mode documents are refused (and that no document may come from the
/// future beyond [`DEFAULT_CLOCK_SKEW`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// PCR index (0..=31) → expected value. Any subset.
    pub expected_pcrs: BTreeMap<u16, Vec<u8>>,
    /// Accept documents whose PCR0, PCR1 and PCR2 are all zero (debug-mode enclaves).
    pub allow_debug: bool,
    /// Expected `nonce`.
    pub nonce: Option<Vec<u8>>,
    /// Expected `user_data`.
    pub user_data: Option<Vec<u8>>,
    /// Expected `public_key`.
    pub public_key: Option<Vec<u8>>,
    /// Maximum age of the document at verification time.
    pub max_age: Option<Duration>,
    /// Leeway added to `max_age` and allowed for timestamps after the verification time.
    pub clock_skew: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            expected_pcrs: BTreeMap::new(),
            allow_debug: false,
            nonce: None,
            user_data: None,
            public_key: None,
            max_age: None,
            clock_skew: DEFAULT_CLOCK_SKEW,
        }
    }
}

/// Step 6: the policy checks, in checklist order.
pub(crate) fn apply_policy(
    document: &AttestationDocument,
    at_ms: u64,
    policy: &Policy,
) -> Result<(), PolicyError> {
    check_pcrs(document, &policy.expected_pcrs)?;
    check_debug_mode(document, policy.allow_debug)?;
    check_field("nonce", document.nonce.as_deref(), policy.nonce.as_deref())?;
    check_field(
        "user_data",
        document.user_data.as_deref(),
        policy.user_data.as_deref(),
    )?;
    check_field(
        "public_key",
        document.public_key.as_deref(),
        policy.public_key.as_deref(),
    )?;
    check_freshness(
        document.timestamp_ms,
        at_ms,
        policy.max_age,
        policy.clock_skew,
    )
}

/// Every expected PCR is present with the expected value.
fn check_pcrs(
    document: &AttestationDocument,
    expected: &BTreeMap<u16, Vec<u8>>,
) -> Result<(), PolicyError> {
    for (&index, want) in expected {
        if index > MAX_PCR_INDEX {
            return Err(PolicyError::PolicyPcrIndex { index });
        }
        match document.pcrs.get(&index) {
            None => {
                return Err(PolicyError::PcrMissing {
                    index,
                    expected: hex::encode(want),
                })
            }
            Some(got) if got != want => {
                return Err(PolicyError::PcrMismatch {
                    index,
                    expected: hex::encode(want),
                    actual: hex::encode(got),
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// A debug-mode enclave's memory is readable from the parent: refuse unless allowed.
fn check_debug_mode(document: &AttestationDocument, allow_debug: bool) -> Result<(), PolicyError> {
    if document.is_debug_mode() && !allow_debug {
        return Err(PolicyError::DebugMode);
    }
    Ok(())
}

/// `field` equals the expected value when one is set.
fn check_field(
    field: &'static str,
    actual: Option<&[u8]>,
    expected: Option<&[u8]>,
) -> Result<(), PolicyError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    match actual {
        None => Err(PolicyError::FieldMissing {
            field,
            expected: hex::encode(expected),
        }),
        Some(actual) if actual != expected => Err(PolicyError::FieldMismatch {
            field,
            expected: hex::encode(expected),
            actual: hex::encode(actual),
        }),
        Some(_) => Ok(()),
    }
}

/// Not from the future beyond the skew; not older than max_age + skew.
fn check_freshness(
    timestamp_ms: u64,
    at_ms: u64,
    max_age: Option<Duration>,
    clock_skew: Duration,
) -> Result<(), PolicyError> {
    let skew_ms = duration_ms(clock_skew);
    if timestamp_ms > at_ms.saturating_add(skew_ms) {
        return Err(PolicyError::FromFuture {
            timestamp_ms,
            at_ms,
            skew_ms,
        });
    }
    if let Some(max_age) = max_age {
        let max_age_ms = duration_ms(max_age);
        let age_ms = at_ms.saturating_sub(timestamp_ms);
        if age_ms > max_age_ms.saturating_add(skew_ms) {
            return Err(PolicyError::TooOld {
                timestamp_ms,
                at_ms,
                age_ms,
                max_age_ms,
                skew_ms,
            });
        }
    }
    Ok(())
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Reads `nitro-cli` measurements (`build-enclave` / `describe-eif` output,
/// `{"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": "hex", ...}}`) into the
/// expected PCR map of a [`Policy`]. PCR0, PCR1 and PCR2 are required
/// ([`PublishedMeasurements::expected_from_json`]).
pub fn expected_pcrs_from_measurements(
    json: &str,
) -> Result<BTreeMap<u16, Vec<u8>>, MeasurementsError> {
    PublishedMeasurements::expected_from_json(json).map(|m| m.pcrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_bounds() {
        let skew = Duration::from_secs(1);
        let max = Some(Duration::from_secs(10));
        assert!(check_freshness(100_000, 100_000, max, skew).is_ok());
        assert!(check_freshness(100_000, 111_000, max, skew).is_ok());
        assert!(matches!(
            check_freshness(100_000, 111_001, max, skew),
            Err(PolicyError::TooOld { age_ms: 11_001, .. })
        ));
        assert!(check_freshness(101_000, 100_000, None, skew).is_ok());
        assert!(matches!(
            check_freshness(101_001, 100_000, None, skew),
            Err(PolicyError::FromFuture { .. })
        ));
        assert!(check_freshness(u64::MAX, u64::MAX, Some(Duration::MAX), Duration::MAX).is_ok());
    }
}
