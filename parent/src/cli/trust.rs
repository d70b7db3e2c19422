//! What the commands that verify an attestation document (`audit verify`, `caa-record`)
//! trust: the root `--root` / `--allow-mock-root` name, and the PCRs `--measurements` /
//! `--no-pcr-policy` expect. One home for both rules; each command names its own
//! document in its messages.

use std::collections::BTreeMap;
use std::path::Path;

use agentkeys_attestation::TrustAnchor;

/// The anchor of a `--root` PEM: the mock NSM root only with `allow_mock_root`, and only in
/// a build with the `mock-root` feature (the dev stack's).
pub fn anchor_from_pem(pem: &str, allow_mock_root: bool) -> Result<TrustAnchor, String> {
    if allow_mock_root {
        mock_anchor(pem)
    } else {
        TrustAnchor::from_pem(pem).map_err(|e| e.to_string())
    }
}

#[cfg(feature = "mock-root")]
fn mock_anchor(pem: &str) -> Result<TrustAnchor, String> {
    TrustAnchor::mock_root_explicitly_trusted(pem).map_err(|e| e.to_string())
}

#[cfg(not(feature = "mock-root"))]
fn mock_anchor(_pem: &str) -> Result<TrustAnchor, String> {
    Err("--allow-mock-root needs a build with the `mock-root` feature (the dev stack's)".into())
}

/// The PCRs a document must carry: those of the `--measurements` file; none with
/// `--no-pcr-policy` (after printing `warning` on stderr); `Ok(None)` when neither was
/// given, which each command refuses in its own words. The error is the measurements
/// file's.
pub fn expected_pcrs(
    measurements: Option<&Path>,
    no_pcr_policy: bool,
    warning: &str,
) -> Result<Option<BTreeMap<u16, Vec<u8>>>, String> {
    match (measurements, no_pcr_policy) {
        (Some(path), _) => {
            agentkeys_attestation::measurements::PublishedMeasurements::expected_from_file(path)
                .map(|m| Some(m.pcrs))
                .map_err(|e| e.to_string())
        }
        (None, true) => {
            eprintln!("{warning}");
            Ok(Some(BTreeMap::new()))
        }
        (None, false) => Ok(None),
    }
}
