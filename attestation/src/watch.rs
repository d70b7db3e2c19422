//! What `agentkeys-attest watch` compares from one audit of a live issuer to the next.
//!
//! The first audit that passes is the baseline. Every later audit is compared with it:
//! a different TLS key, JWKS, image measurement or ACME account is a change the auditor
//! is alerted to, however long ago the baseline was taken. A new certificate for the same
//! key (a renewal) is compared with the audit just before it and reported as a normal
//! event. A failed check is an alert; a failed fetch (the issuer down, a timeout, a
//! certificate the TLS client refuses) is reported and retried, since it shows no key of
//! anyone else's to anyone.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::measurements::IMAGE_PCRS;
use crate::online::{OnlineError, OnlineReport};
use crate::timefmt::rfc3339_ms;

/// PCR8 (the image's signing certificate), compared too when the document has it.
const SIGNING_CERT_PCR: u16 = 8;

/// Hex digits of a hash shown on a watch line (64 bits: enough to tell values apart at a
/// glance; alerts print the full values).
pub const PREFIX_HEX_DIGITS: usize = 16;

/// The values of one passing audit that `watch` compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// SHA-256 of the TLS leaf's SPKI, hex (None for a plain-HTTP issuer).
    pub tls_spki_sha256: Option<String>,
    /// SHA-256 of the first TLS leaf's DER, hex.
    pub tls_cert_sha256: Option<String>,
    /// Serial of the first TLS leaf, hex.
    pub tls_serial: Option<String>,
    /// notAfter of the first TLS leaf, UNIX ms.
    pub tls_not_after_ms: Option<u64>,
    /// SHA-256 of the JWKS bytes served, hex.
    pub jwks_sha256: String,
    /// The image measurements of the JWKS document (PCR0, 1, 2 and 8 when present), hex.
    pub pcrs: BTreeMap<u16, String>,
    /// The attested ACME account URI (None for a plain-HTTP issuer).
    pub acme_account_uri: Option<String>,
}

impl Observation {
    /// The values of a passing audit.
    pub fn from_report(report: &OnlineReport) -> Observation {
        let leaf = report.tls.as_ref().and_then(|t| t.leaf());
        let pcrs = report
            .verified
            .document
            .pcrs
            .iter()
            .filter(|(index, _)| IMAGE_PCRS.contains(index) || **index == SIGNING_CERT_PCR)
            .map(|(index, value)| (*index, hex::encode(value)))
            .collect();
        Observation {
            tls_spki_sha256: leaf.map(|l| l.spki_sha256_hex()),
            tls_cert_sha256: leaf.map(|l| hex::encode(l.cert_sha256)),
            tls_serial: leaf.map(|l| l.serial_hex.clone()),
            tls_not_after_ms: leaf.map(|l| l.not_after_ms),
            jwks_sha256: report.jwks_sha256_hex.clone(),
            pcrs,
            acme_account_uri: report
                .acme_account
                .as_ref()
                .map(|a| a.statement.account_uri.clone()),
        }
    }
}

/// One difference from the baseline that the auditor is alerted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key of the TLS certificate changed.
    TlsKey {
        /// Baseline SPKI SHA-256.
        was: Option<String>,
        /// Now.
        now: Option<String>,
    },
    /// The JWKS bytes changed.
    Jwks {
        /// Baseline SHA-256.
        was: String,
        /// Now.
        now: String,
    },
    /// An image measurement changed (another enclave image holds the key).
    Measurement {
        /// The PCR.
        index: u16,
        /// Baseline value.
        was: Option<String>,
        /// Now.
        now: Option<String>,
    },
    /// The attested ACME account changed.
    AcmeAccount {
        /// Baseline account URI.
        was: Option<String>,
        /// Now.
        now: Option<String>,
    },
}

fn or_none(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("(none)")
}

impl Change {
    /// A short stable name (`tls_key`, `jwks`, `pcr<N>`, `acme_account`).
    pub fn name(&self) -> String {
        match self {
            Change::TlsKey { .. } => "tls_key".to_owned(),
            Change::Jwks { .. } => "jwks".to_owned(),
            Change::Measurement { index, .. } => format!("pcr{index}"),
            Change::AcmeAccount { .. } => "acme_account".to_owned(),
        }
    }

    /// What changed, with the full values.
    pub fn describe(&self) -> String {
        match self {
            Change::TlsKey { was, now } => format!(
                "TLS certificate key changed: SPKI SHA-256 was {}, now {}",
                or_none(was),
                or_none(now)
            ),
            Change::Jwks { was, now } => {
                format!("JWKS changed: SHA-256 was {was}, now {now}")
            }
            Change::Measurement { index, was, now } => format!(
                "attested measurement PCR{index} changed: was {}, now {}",
                or_none(was),
                or_none(now)
            ),
            Change::AcmeAccount { was, now } => format!(
                "ACME account changed: was {}, now {}",
                or_none(was),
                or_none(now)
            ),
        }
    }
}

/// The changes from `baseline` to `now`.
pub fn changes(baseline: &Observation, now: &Observation) -> Vec<Change> {
    let mut changes = Vec::new();
    if baseline.tls_spki_sha256 != now.tls_spki_sha256 {
        changes.push(Change::TlsKey {
            was: baseline.tls_spki_sha256.clone(),
            now: now.tls_spki_sha256.clone(),
        });
    }
    if baseline.jwks_sha256 != now.jwks_sha256 {
        changes.push(Change::Jwks {
            was: baseline.jwks_sha256.clone(),
            now: now.jwks_sha256.clone(),
        });
    }
    let indices: std::collections::BTreeSet<u16> = baseline
        .pcrs
        .keys()
        .chain(now.pcrs.keys())
        .copied()
        .collect();
    for index in indices {
        let (was, value) = (baseline.pcrs.get(&index), now.pcrs.get(&index));
        if was != value {
            changes.push(Change::Measurement {
                index,
                was: was.cloned(),
                now: value.cloned(),
            });
        }
    }
    if baseline.acme_account_uri != now.acme_account_uri {
        changes.push(Change::AcmeAccount {
            was: baseline.acme_account_uri.clone(),
            now: now.acme_account_uri.clone(),
        });
    }
    changes
}

/// The result of one check of a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check passed and nothing changed from the baseline.
    Ok {
        /// What the audit showed.
        observation: Observation,
        /// A new certificate for the same key since the previous passing audit: the
        /// previous certificate's serial.
        renewed_from: Option<String>,
    },
    /// Every check passed, but something differs from the baseline.
    Changed {
        /// What the audit showed.
        observation: Observation,
        /// What differs.
        changes: Vec<Change>,
    },
    /// A check failed.
    Failed {
        /// The failed check's name.
        check: &'static str,
        /// The error.
        message: String,
    },
    /// The issuer could not be fetched (retried at the next interval).
    FetchError {
        /// The error.
        message: String,
    },
}

impl Outcome {
    /// The word a watch line shows.
    pub fn result(&self) -> &'static str {
        match self {
            Outcome::Ok {
                renewed_from: None, ..
            } => "OK",
            Outcome::Ok { .. } => "RENEWED",
            Outcome::Changed { .. } => "CHANGED",
            Outcome::Failed { .. } => "FAIL",
            Outcome::FetchError { .. } => "FETCH-ERROR",
        }
    }

    /// True when the auditor must look: a change from the baseline or a failed check.
    pub fn is_alert(&self) -> bool {
        matches!(self, Outcome::Changed { .. } | Outcome::Failed { .. })
    }

    /// The alert messages (empty when [`is_alert`](Self::is_alert) is false).
    pub fn alerts(&self) -> Vec<String> {
        match self {
            Outcome::Changed { changes, .. } => changes.iter().map(Change::describe).collect(),
            Outcome::Failed { check, message } => vec![format!("check {check} failed: {message}")],
            _ => Vec::new(),
        }
    }

    /// What the audit showed, when it passed.
    pub fn observation(&self) -> Option<&Observation> {
        match self {
            Outcome::Ok { observation, .. } | Outcome::Changed { observation, .. } => {
                Some(observation)
            }
            _ => None,
        }
    }
}

/// The state of a watch: the baseline and the last passing audit.
#[derive(Debug, Default)]
pub struct Watch {
    baseline: Option<Observation>,
    last: Option<Observation>,
}

impl Watch {
    /// A watch with no baseline yet.
    pub fn new() -> Watch {
        Watch::default()
    }

    /// The baseline, once an audit passed.
    pub fn baseline(&self) -> Option<&Observation> {
        self.baseline.as_ref()
    }

    /// Records one audit and says what it showed.
    pub fn record(&mut self, result: &Result<OnlineReport, OnlineError>) -> Outcome {
        let report = match result {
            Ok(report) => report,
            Err(e) if e.is_transport() => {
                return Outcome::FetchError {
                    message: e.to_string(),
                }
            }
            Err(e) => {
                return Outcome::Failed {
                    check: e.failed_check_name(),
                    message: e.to_string(),
                }
            }
        };
        let observation = Observation::from_report(report);
        let renewed_from = self.last.as_ref().and_then(|last| {
            let same_key = last.tls_spki_sha256 == observation.tls_spki_sha256;
            let new_cert = last.tls_cert_sha256 != observation.tls_cert_sha256;
            (same_key && new_cert).then(|| last.tls_serial.clone().unwrap_or_default())
        });
        self.last = Some(observation.clone());
        let Some(baseline) = &self.baseline else {
            self.baseline = Some(observation.clone());
            return Outcome::Ok {
                observation,
                renewed_from: None,
            };
        };
        let changes = changes(baseline, &observation);
        if changes.is_empty() {
            Outcome::Ok {
                observation,
                renewed_from,
            }
        } else {
            Outcome::Changed {
                observation,
                changes,
            }
        }
    }
}

/// A watch line's time: whole seconds are precise enough for checks seconds apart.
fn whole_seconds(unix_ms: u64) -> u64 {
    unix_ms - unix_ms % 1000
}

fn prefix(value: &str) -> &str {
    value.get(..PREFIX_HEX_DIGITS).unwrap_or(value)
}

/// The text lines of one check: the check line, then one `ALERT: ` line per alert.
pub fn render_lines(at_unix_ms: u64, outcome: &Outcome) -> Vec<String> {
    let time = rfc3339_ms(whole_seconds(at_unix_ms));
    let mut line = format!("{time} {}", outcome.result());
    match outcome {
        Outcome::Ok { observation, .. } | Outcome::Changed { observation, .. } => {
            let o = observation;
            line.push_str(&format!(
                " leaf_spki={} not_after={} jwks={} pcr0={} acme={}",
                o.tls_spki_sha256.as_deref().map_or("-", prefix),
                o.tls_not_after_ms
                    .map_or_else(|| "-".to_owned(), rfc3339_ms),
                prefix(&o.jwks_sha256),
                o.pcrs.get(&0).map_or("-", |v| prefix(v)),
                o.acme_account_uri.as_deref().unwrap_or("-"),
            ));
            if let Outcome::Ok {
                renewed_from: Some(serial),
                ..
            } = outcome
            {
                line.push_str(&format!(
                    " renewed: same key, new certificate (serial {} -> {})",
                    serial,
                    o.tls_serial.as_deref().unwrap_or("-")
                ));
            }
        }
        Outcome::Failed { check, .. } => line.push_str(&format!(" check={check}")),
        Outcome::FetchError { message } => {
            line.push_str(&format!(" {message} (not an alert; retried)"));
        }
    }
    let mut lines = vec![line];
    lines.extend(outcome.alerts().into_iter().map(|a| format!("ALERT: {a}")));
    lines
}

/// One check as a JSON object (one line of `watch --json`).
pub fn render_json(at_unix_ms: u64, outcome: &Outcome) -> Value {
    let observation = outcome.observation().map(|o| {
        json!({
            "leaf_spki_sha256": o.tls_spki_sha256,
            "leaf_sha256": o.tls_cert_sha256,
            "leaf_serial": o.tls_serial,
            "leaf_not_after": o.tls_not_after_ms.map(rfc3339_ms),
            "jwks_sha256": o.jwks_sha256,
            "pcrs": o.pcrs,
            "acme_account_uri": o.acme_account_uri,
        })
    });
    let (failed_check, error) = match outcome {
        Outcome::Failed { check, message } => (Some(*check), Some(message.as_str())),
        Outcome::FetchError { message } => (None, Some(message.as_str())),
        _ => (None, None),
    };
    let renewed_from = match outcome {
        Outcome::Ok { renewed_from, .. } => renewed_from.clone(),
        _ => None,
    };
    let changes: Vec<String> = match outcome {
        Outcome::Changed { changes, .. } => changes.iter().map(Change::name).collect(),
        _ => Vec::new(),
    };
    json!({
        "time": rfc3339_ms(whole_seconds(at_unix_ms)),
        "result": outcome.result(),
        "alert": outcome.is_alert(),
        "alerts": outcome.alerts(),
        "changes": changes,
        "renewed_from_serial": renewed_from,
        "failed_check": failed_check,
        "error": error,
        "observation": observation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation() -> Observation {
        Observation {
            tls_spki_sha256: Some("aa".repeat(32)),
            tls_cert_sha256: Some("c1".repeat(32)),
            tls_serial: Some("01".to_owned()),
            tls_not_after_ms: Some(1_800_000_000_000),
            jwks_sha256: "bb".repeat(32),
            pcrs: [
                (0, "00".repeat(48)),
                (1, "11".repeat(48)),
                (2, "22".repeat(48)),
            ]
            .into_iter()
            .collect(),
            acme_account_uri: Some("https://ca.example/acct/1".to_owned()),
        }
    }

    #[test]
    fn nothing_changed_is_no_change() {
        assert!(changes(&observation(), &observation()).is_empty());
    }

    #[test]
    fn each_watched_value_is_a_named_change() {
        let base = observation();
        type Edit = fn(&mut Observation);
        let cases: [(&str, Edit); 5] = [
            ("tls_key", |o| o.tls_spki_sha256 = Some("dd".repeat(32))),
            ("jwks", |o| o.jwks_sha256 = "ee".repeat(32)),
            ("pcr0", |o| {
                o.pcrs.insert(0, "ff".repeat(48));
            }),
            ("pcr8", |o| {
                o.pcrs.insert(8, "88".repeat(48));
            }),
            ("acme_account", |o| {
                o.acme_account_uri = Some("https://ca.example/acct/2".to_owned())
            }),
        ];
        for (name, edit) in cases {
            let mut now = base.clone();
            edit(&mut now);
            let found = changes(&base, &now);
            assert_eq!(found.len(), 1, "{name}: {found:?}");
            assert_eq!(found[0].name(), name);
        }
    }

    #[test]
    fn a_new_certificate_for_the_same_key_is_no_change() {
        let base = observation();
        let mut renewed = base.clone();
        renewed.tls_cert_sha256 = Some("c2".repeat(32));
        renewed.tls_serial = Some("02".to_owned());
        renewed.tls_not_after_ms = Some(1_900_000_000_000);
        assert!(changes(&base, &renewed).is_empty());
    }

    #[test]
    fn lines_show_prefixes_and_alerts() {
        let outcome = Outcome::Changed {
            observation: observation(),
            changes: vec![Change::Jwks {
                was: "bb".repeat(32),
                now: "ee".repeat(32),
            }],
        };
        let lines = render_lines(0, &outcome);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("1970-01-01T00:00:00Z CHANGED leaf_spki=aaaaaaaaaaaaaaaa not_after=2027-01-15T08:00:00Z jwks=bbbbbbbbbbbbbbbb pcr0=0000000000000000 acme=https://ca.example/acct/1"), "{}", lines[0]);
        assert_eq!(
            lines[1],
            format!(
                "ALERT: JWKS changed: SHA-256 was {}, now {}",
                "bb".repeat(32),
                "ee".repeat(32)
            )
        );
        let fetch = Outcome::FetchError {
            message: "GET x: timed out".to_owned(),
        };
        assert_eq!(render_lines(0, &fetch).len(), 1);
        assert!(!fetch.is_alert());
    }
}
