//! The comparison of an image's PCRs with published ones, and the report
//! `agentkeys-attest measure` prints.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::measure::{CrcStatus, EifMeasurement};

/// One row of a comparison between computed and published measurements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrComparison {
    /// PCR index.
    pub index: u16,
    /// Value computed from the EIF (None: the image has no such PCR, e.g. PCR8 unsigned).
    pub computed: Option<Vec<u8>>,
    /// Value published (None: not listed).
    pub published: Option<Vec<u8>>,
}

/// Outcome of one PCR comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComparisonStatus {
    /// Both sides have the PCR and agree.
    Match,
    /// Both sides have the PCR and differ.
    Mismatch,
    /// The published file lists a PCR the image does not produce (PCR8 for an unsigned
    /// image): a failure.
    NotInImage,
    /// The image produces a PCR the file does not list: informational only.
    NotPublished,
}

impl PcrComparison {
    /// The outcome of this row.
    pub fn status(&self) -> ComparisonStatus {
        match (&self.computed, &self.published) {
            (Some(a), Some(b)) if a == b => ComparisonStatus::Match,
            (Some(_), Some(_)) => ComparisonStatus::Mismatch,
            (None, Some(_)) => ComparisonStatus::NotInImage,
            // (None, None) cannot be produced by `compare`.
            (_, None) => ComparisonStatus::NotPublished,
        }
    }

    /// True unless this row is a failure (`Mismatch` or `NotInImage`).
    pub fn is_ok(&self) -> bool {
        matches!(
            self.status(),
            ComparisonStatus::Match | ComparisonStatus::NotPublished
        )
    }
}

/// Compares the computed PCRs (0, 1, 2, 8) with published ones, one row for each of
/// those present on either side. A PCR published for an image that does not produce it
/// (PCR8 for an unsigned image) fails; a computed PCR the file omits is reported only.
/// PCRs an image does not determine (3, 4: the parent's role and instance) are ignored.
/// `published` maps a PCR index to its value, as in the operator's measurements file.
pub fn compare(
    measured: &EifMeasurement,
    published: &BTreeMap<u16, Vec<u8>>,
) -> Vec<PcrComparison> {
    let computed = measured.pcrs();
    [0u16, 1, 2, 8]
        .into_iter()
        .filter(|i| computed.contains_key(i) || published.contains_key(i))
        .map(|index| PcrComparison {
            index,
            computed: computed.get(&index).cloned(),
            published: published.get(&index).cloned(),
        })
        .collect()
}

/// The outcome of `measure`: the text to print and whether every comparison passed
/// (always true without a measurements file).
#[derive(Clone, Debug)]
pub struct MeasureReport {
    /// Human-readable or JSON output.
    pub output: String,
    /// False when a published PCR differs from the image (CLI exit status 1).
    pub ok: bool,
}

impl MeasureReport {
    /// Renders the measurement of an image and, with `published` (PCR index → value, as
    /// in the operator's measurements file), its comparison with those PCRs. `json`: the
    /// JSON `nitro-cli` prints, with the image layout and the comparison added.
    pub fn new(
        m: &EifMeasurement,
        published: Option<&BTreeMap<u16, Vec<u8>>>,
        json: bool,
    ) -> MeasureReport {
        let rows = published.map(|published| compare(m, published));
        let ok = rows
            .as_ref()
            .is_none_or(|r| r.iter().all(PcrComparison::is_ok));
        let status_name = |s: ComparisonStatus| match s {
            ComparisonStatus::Match => "match",
            ComparisonStatus::Mismatch => "MISMATCH",
            ComparisonStatus::NotInImage => "NOT-IN-IMAGE",
            ComparisonStatus::NotPublished => "not-published",
        };
        let crc = match m.crc {
            CrcStatus::Verified(v) => format!("{v:08x} (verified)"),
            CrcStatus::NotPresent => "none (EIF version 1)".to_string(),
        };
        let output = if json {
            let mut v = m.to_nitro_cli_json();
            if let Value::Object(top) = &mut v {
                top.insert(
                    "Eif".into(),
                    serde_json::json!({
                        "version": m.header.version,
                        "arch": if m.header.is_arm64() { "aarch64" } else { "x86_64" },
                        "crc32": crc,
                        "signed": m.pcr8.is_some(),
                        "sections": m.sections.iter().map(|s| serde_json::json!({
                            "kind": s.kind.to_string(), "offset": s.offset, "size": s.size
                        })).collect::<Vec<_>>(),
                    }),
                );
                if let Some(rows) = &rows {
                    top.insert(
                        "Comparison".into(),
                        Value::Array(
                            rows.iter()
                                .map(|r| {
                                    serde_json::json!({
                                        "pcr": r.index,
                                        "status": status_name(r.status()),
                                        "computed": r.computed.as_ref().map(hex::encode),
                                        "published": r.published.as_ref().map(hex::encode),
                                    })
                                })
                                .collect(),
                        ),
                    );
                    top.insert("Ok".into(), Value::Bool(ok));
                }
            }
            serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
        } else {
            let mut out = String::new();
            out.push_str(&format!(
                "EIF version {} ({}), {} sections, CRC-32 {}\n",
                m.header.version,
                if m.header.is_arm64() {
                    "aarch64"
                } else {
                    "x86_64"
                },
                m.sections.len(),
                crc
            ));
            for (index, value) in m.pcrs() {
                out.push_str(&format!("PCR{index}: {}\n", hex::encode(value)));
            }
            if m.pcr8.is_none() {
                out.push_str("PCR8: (unsigned image)\n");
            }
            if let Some(rows) = &rows {
                for r in rows {
                    out.push_str(&format!("PCR{} {}\n", r.index, status_name(r.status())));
                }
                out.push_str(if ok {
                    "measurements match\n"
                } else {
                    "measurements DO NOT match\n"
                });
            }
            out
        };
        MeasureReport { output, ok }
    }
}
