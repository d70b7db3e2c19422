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

/// What the EIF's metadata section says about how the image was built: the custom
/// metadata `scripts/build-eif.sh` passes to `nitro-cli build-enclave --metadata`.
/// The metadata section is not measured (no PCR covers it), so this is the builder's
/// claim; a rebuild from that commit and inputs file that reproduces the PCRs confirms it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildProvenance {
    /// Full git commit id (40 or 64 lower-case hex digits).
    pub source_commit: String,
    /// The work tree had uncommitted changes when the image was built.
    pub source_dirty: bool,
    /// The inputs file, as the repository names it (`eif/inputs.env`).
    pub inputs_file: String,
    /// SHA-256 of the inputs file (64 lower-case hex digits).
    pub inputs_sha256: String,
    /// Inputs overridden on build-eif.sh's command line (`KEY=value`).
    pub overrides: Vec<String>,
}

/// Longest inputs-file name and override entry accepted from the metadata, and the most
/// override entries (build-eif.sh writes at most four short ones).
const MAX_PROVENANCE_TEXT: usize = 256;
const MAX_OVERRIDES: usize = 16;

fn is_lower_hex(s: &str, lens: &[usize]) -> bool {
    lens.contains(&s.len()) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Printable ASCII without control characters, so that metadata cannot rewrite the
/// terminal it is printed on.
fn is_printable(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_PROVENANCE_TEXT && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

impl BuildProvenance {
    /// Reads the provenance from an image's metadata (`CustomMetadata`). `Ok(None)`: the
    /// image records none (built by other means, or without git). `Err`: it records one
    /// that is malformed (the reason; the values are not echoed).
    pub fn from_metadata(metadata: Option<&Value>) -> Result<Option<BuildProvenance>, String> {
        let Some(custom) = metadata.and_then(|m| m.get("CustomMetadata")) else {
            return Ok(None);
        };
        let Some(commit) = custom.get("agentkeys_source_commit") else {
            return Ok(None);
        };
        let commit = commit
            .as_str()
            .ok_or("agentkeys_source_commit is not a string")?;
        if commit.is_empty() {
            // Built from a tree without git: nothing to name.
            return Ok(None);
        }
        if !is_lower_hex(commit, &[40, 64]) {
            return Err("agentkeys_source_commit is not a git commit id".into());
        }
        let source_dirty = custom
            .get("agentkeys_source_dirty")
            .and_then(Value::as_bool)
            .ok_or("agentkeys_source_dirty is not a boolean")?;
        let inputs_file = custom
            .get("agentkeys_build_inputs")
            .and_then(Value::as_str)
            .filter(|s| is_printable(s))
            .ok_or("agentkeys_build_inputs is not a printable file name")?;
        let inputs_sha256 = custom
            .get("agentkeys_build_inputs_sha256")
            .and_then(Value::as_str)
            .filter(|s| is_lower_hex(s, &[64]))
            .ok_or("agentkeys_build_inputs_sha256 is not a SHA-256 in hex")?;
        let overrides = match custom.get("agentkeys_build_overrides") {
            None => vec![],
            Some(Value::Array(a)) if a.len() <= MAX_OVERRIDES => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .filter(|s| is_printable(s))
                        .map(str::to_string)
                        .ok_or("agentkeys_build_overrides holds a non-printable entry")
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err("agentkeys_build_overrides is not a short list".into()),
        };
        Ok(Some(BuildProvenance {
            source_commit: commit.to_string(),
            source_dirty,
            inputs_file: inputs_file.to_string(),
            inputs_sha256: inputs_sha256.to_string(),
            overrides,
        }))
    }
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
        let provenance = BuildProvenance::from_metadata(m.metadata.as_ref());
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
                top.insert(
                    "BuildProvenance".into(),
                    match &provenance {
                        Ok(Some(p)) => serde_json::json!({
                            "measured": false,
                            "source_commit": p.source_commit,
                            "source_dirty": p.source_dirty,
                            "inputs_file": p.inputs_file,
                            "inputs_sha256": p.inputs_sha256,
                            "overrides": p.overrides,
                        }),
                        Ok(None) => Value::Null,
                        Err(e) => serde_json::json!({ "measured": false, "error": e }),
                    },
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
            match &provenance {
                Ok(Some(p)) => {
                    out.push_str(&format!(
                        "built from: {}{} with {} (sha256 {})\n",
                        p.source_commit,
                        if p.source_dirty {
                            " plus uncommitted changes"
                        } else {
                            ""
                        },
                        p.inputs_file,
                        p.inputs_sha256
                    ));
                    if !p.overrides.is_empty() {
                        out.push_str(&format!(
                            "built with inputs overridden: {}\n",
                            p.overrides.join(", ")
                        ));
                    }
                    out.push_str(
                        "  (the builder's claim, from the EIF metadata, which no PCR covers: \
                         rebuild that commit with that inputs file and compare the PCRs)\n",
                    );
                }
                Ok(None) => out.push_str(
                    "built from: not recorded in the EIF metadata (scripts/build-eif.sh records \
                     the commit and eif/inputs.env)\n",
                ),
                Err(e) => out.push_str(&format!("built from: malformed EIF metadata ({e})\n")),
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

#[cfg(test)]
mod tests {
    use super::BuildProvenance;
    use serde_json::json;

    fn meta(custom: serde_json::Value) -> serde_json::Value {
        json!({ "ImageName": "x", "CustomMetadata": custom })
    }

    #[test]
    fn provenance_is_read_from_the_custom_metadata_build_eif_writes() {
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let sha = "ab".repeat(32);
        let good = json!({
            "agentkeys_source_commit": commit,
            "agentkeys_source_dirty": true,
            "agentkeys_build_inputs": "eif/inputs.env",
            "agentkeys_build_inputs_sha256": sha,
            "agentkeys_build_overrides": ["SOURCE_DATE_EPOCH=7"],
        });
        let p = BuildProvenance::from_metadata(Some(&meta(good.clone())))
            .unwrap()
            .unwrap();
        assert_eq!(p.source_commit, commit);
        assert!(p.source_dirty);
        assert_eq!(p.inputs_file, "eif/inputs.env");
        assert_eq!(p.inputs_sha256, sha);
        assert_eq!(p.overrides, vec!["SOURCE_DATE_EPOCH=7".to_string()]);

        // Absent: no metadata, no custom metadata, no commit, or an empty one (no git).
        assert_eq!(BuildProvenance::from_metadata(None), Ok(None));
        assert_eq!(BuildProvenance::from_metadata(Some(&json!({}))), Ok(None));
        assert_eq!(
            BuildProvenance::from_metadata(Some(&meta(json!(null)))),
            Ok(None)
        );
        let mut no_git = good.clone();
        no_git["agentkeys_source_commit"] = json!("");
        assert_eq!(
            BuildProvenance::from_metadata(Some(&meta(no_git))),
            Ok(None)
        );

        // Malformed: each field checked; the values are not echoed.
        for (field, bad) in [
            ("agentkeys_source_commit", json!("HEAD")),
            ("agentkeys_source_commit", json!(7)),
            ("agentkeys_source_dirty", json!("no")),
            ("agentkeys_build_inputs", json!("eif/inputs.env\u{1b}[2J")),
            ("agentkeys_build_inputs", json!("")),
            ("agentkeys_build_inputs_sha256", json!("AB".repeat(32))),
            ("agentkeys_build_overrides", json!(["ok", "\n"])),
            ("agentkeys_build_overrides", json!(vec!["A=1"; 17])),
        ] {
            let mut m = good.clone();
            m[field] = bad.clone();
            let err = BuildProvenance::from_metadata(Some(&meta(m)))
                .expect_err(&format!("{field} = {bad} accepted"));
            assert!(err.contains(field), "{err}");
            assert!(!err.contains('\u{1b}') && !err.contains('\n'), "{err:?}");
        }
    }
}
