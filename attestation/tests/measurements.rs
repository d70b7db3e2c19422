//! The published measurements file (the JSON `nitro-cli` prints) and the PCR extend rule.

use agentkeys_attestation::expected_pcrs_from_measurements;
use agentkeys_attestation::measurements::{
    self, MeasurementsError, MeasurementsFileError, PublishedMeasurements,
};
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

/// Nitro-cli measurements JSON listing PCRs `indices`, each filled with its index.
fn measurements_json(indices: &[u16]) -> String {
    let members: Vec<String> = indices
        .iter()
        .map(|i| format!(r#""PCR{i}":"{}""#, hex::encode([*i as u8; 48])))
        .collect();
    format!(
        r#"{{"Measurements":{{"HashAlgorithm":"Sha384 {{ ... }}",{}}}}}"#,
        members.join(",")
    )
}

#[test]
fn expected_measurements_need_pcr0_pcr1_and_pcr2() {
    let full = measurements_json(&[0, 1, 2, 8]);
    let p = PublishedMeasurements::expected_from_json(&full).unwrap();
    assert_eq!(p.pcrs.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 8]);
    assert_eq!(expected_pcrs_from_measurements(&full).unwrap(), p.pcrs);
    for (indices, missing) in [
        (&[8u16][..], vec![0u16, 1, 2]),
        (&[0, 2][..], vec![1]),
        (&[1, 2][..], vec![0]),
        (&[0, 1, 8][..], vec![2]),
    ] {
        let text = measurements_json(indices);
        let err = PublishedMeasurements::expected_from_json(&text).unwrap_err();
        assert!(
            matches!(&err, MeasurementsError::MissingImagePcrs { missing: m } if *m == missing),
            "{indices:?}: {err:?}"
        );
        let names: Vec<String> = missing.iter().map(|i| format!("PCR{i}")).collect();
        assert!(
            err.to_string()
                .starts_with(&format!("measurements JSON has no {};", names.join(", "))),
            "{err}"
        );
        assert!(matches!(
            expected_pcrs_from_measurements(&text),
            Err(MeasurementsError::MissingImagePcrs { .. })
        ));
    }
    // Publishing (kms-policy, measure) needs PCR0 only.
    assert!(PublishedMeasurements::from_json(&measurements_json(&[0])).is_ok());
}

#[test]
fn expected_measurements_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("only-pcr8.json");
    std::fs::write(&path, measurements_json(&[8])).unwrap();
    let err = PublishedMeasurements::expected_from_file(&path).unwrap_err();
    assert!(
        matches!(
            &err,
            MeasurementsFileError::Parse {
                source: MeasurementsError::MissingImagePcrs { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "{}: measurements JSON has no PCR0",
            path.display()
        )),
        "{err}"
    );
    assert!(PublishedMeasurements::from_file(&path).is_err());
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
