//! The published measurements file (the JSON `nitro-cli` prints) and the PCR extend rule.

use agentkeys_attestation::measurements::{self, MeasurementsError, PublishedMeasurements};
use sha2::{Digest, Sha384};

#[test]
fn published_measurements_parse_nitro_cli_output() {
    let pcr = |c: char| c.to_string().repeat(96);
    let text = format!(
        r#"{{"Measurements":{{"HashAlgorithm":"Sha384 {{ ... }}","PCR0":"{}","PCR1":"{}","PCR2":"{}","PCR8":"{}"}}}}"#,
        pcr('a'),
        pcr('B'),
        pcr('0'),
        pcr('9')
    );
    let p = PublishedMeasurements::from_json(&text).unwrap();
    assert_eq!(p.pcrs.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 8]);
    assert_eq!(p.hex(1).unwrap(), pcr('b'));
    assert_eq!(p.pcrs[&8], vec![0x99; 48]);
}

#[test]
fn published_measurements_negative() {
    let good = "a".repeat(96);
    type Check = fn(&MeasurementsError) -> bool;
    let cases: Vec<(String, Check)> = vec![
        ("not json".into(), |e| {
            matches!(e, MeasurementsError::Json { .. })
        }),
        ("[1]".into(), |e| matches!(e, MeasurementsError::Shape)),
        (r#"{"Measurements": 3}"#.into(), |e| {
            matches!(e, MeasurementsError::Shape)
        }),
        (format!(r#"{{"PCR1":"{good}"}}"#), |e| {
            matches!(e, MeasurementsError::MissingPcr0)
        }),
        (r#"{"PCR0":"abcd"}"#.into(), |e| {
            matches!(e, MeasurementsError::BadLength { index: 0, len: 4 })
        }),
        (format!(r#"{{"PCR0":"{}"}}"#, "g".repeat(96)), |e| {
            matches!(e, MeasurementsError::NotHex { index: 0 })
        }),
        (r#"{"PCR0": 5}"#.into(), |e| {
            matches!(e, MeasurementsError::NotAString { .. })
        }),
        (format!(r#"{{"PCR0":"{good}","PCR32":"{good}"}}"#), |e| {
            matches!(e, MeasurementsError::BadName { .. })
        }),
        (
            format!(r#"{{"HashAlgorithm":"Sha256 {{ ... }}","PCR0":"{good}"}}"#),
            |e| matches!(e, MeasurementsError::HashAlgorithm { .. }),
        ),
    ];
    for (text, check) in cases {
        let err = PublishedMeasurements::from_json(&text).unwrap_err();
        assert!(check(&err), "{text}: {err}");
    }
}

#[test]
fn extend_from_zero_is_the_pcr_rule() {
    let mut h = Sha384::new();
    h.update([0u8; 48]);
    h.update(b"arn:aws:iam::123456789012:role/parent");
    assert_eq!(
        measurements::extend_from_zero(b"arn:aws:iam::123456789012:role/parent").to_vec(),
        h.finalize().to_vec()
    );
}
