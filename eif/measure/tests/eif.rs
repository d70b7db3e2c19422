//! EIF measurement tests: images are written here from the published format (header,
//! section headers, CRC) and the expected PCRs are computed independently with `sha2`.

use std::path::Path;

use agentkeys_attestation::measurements::{MeasurementsFileError, PublishedMeasurements};
use agentkeys_eif::{
    compare, measure_bytes, measure_file, ComparisonStatus, Crc32, CrcStatus, EifError,
    EifMeasurement, MeasureReport, SectionKind,
};
use base64::Engine;
use ciborium::value::Value as Cbor;
use sha2::{Digest, Sha384};

const ROOT_PEM: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/nitro-attestation/aws-nitro-root-g1.pem"
));

/// Independent CRC-32 (bitwise, no table) so the parser's table is checked against it.
fn crc32_bitwise(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// Test image writer following the published EIF layout.
struct Image {
    version: u16,
    sections: Vec<(u16, Vec<u8>)>,
}

impl Image {
    /// A v4 image laid out the way nitro-cli writes one: kernel, cmdline, metadata,
    /// ramdisks, then the optional signature.
    fn standard(ramdisks: &[&[u8]], signature: Option<Vec<u8>>) -> Image {
        let mut sections = vec![
            (1u16, b"KERNEL-bzImage-bytes".repeat(50)),
            (
                2,
                b"reboot=k panic=30 pci=off nomodules console=ttyS0".to_vec(),
            ),
            (
                5,
                br#"{"ImageName":"agentkeys-enclave","ImageVersion":"1"}"#.to_vec(),
            ),
        ];
        for r in ramdisks {
            sections.push((3, r.to_vec()));
        }
        if let Some(sig) = signature {
            sections.push((4, sig));
        }
        Image {
            version: 4,
            sections,
        }
    }

    fn write(&self) -> Vec<u8> {
        let mut header = Vec::with_capacity(548);
        header.extend_from_slice(b".eif");
        header.extend_from_slice(&self.version.to_be_bytes());
        header.extend_from_slice(&0u16.to_be_bytes()); // flags
        header.extend_from_slice(&(1024u64 * 1024 * 1024).to_be_bytes()); // default_mem
        header.extend_from_slice(&2u64.to_be_bytes()); // default_cpus
        header.extend_from_slice(&0u16.to_be_bytes()); // reserved
        header.extend_from_slice(&(self.sections.len() as u16).to_be_bytes());
        let mut offsets = [0u64; 32];
        let mut sizes = [0u64; 32];
        let mut at = 548u64;
        for (i, (_, data)) in self.sections.iter().enumerate() {
            offsets[i] = at;
            sizes[i] = data.len() as u64;
            at += 12 + data.len() as u64;
        }
        for o in offsets {
            header.extend_from_slice(&o.to_be_bytes());
        }
        for s in sizes {
            header.extend_from_slice(&s.to_be_bytes());
        }
        header.extend_from_slice(&0u32.to_be_bytes()); // unused
        assert_eq!(header.len(), 544);

        let mut body = Vec::new();
        for (kind, data) in &self.sections {
            body.extend_from_slice(&kind.to_be_bytes());
            body.extend_from_slice(&0u16.to_be_bytes());
            body.extend_from_slice(&(data.len() as u64).to_be_bytes());
            body.extend_from_slice(data);
        }
        let mut crc_input = header.clone();
        crc_input.extend_from_slice(&body);
        let crc = crc32_bitwise(&crc_input);

        let mut out = header;
        out.extend_from_slice(&crc.to_be_bytes());
        out.extend_from_slice(&body);
        out
    }
}

/// PCR = SHA-384(0^48 ‖ SHA-384(concatenation)).
fn expected_pcr(parts: &[&[u8]]) -> Vec<u8> {
    let mut inner = Sha384::new();
    for p in parts {
        inner.update(p);
    }
    let mut outer = Sha384::new();
    outer.update([0u8; 48]);
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

fn root_der() -> Vec<u8> {
    let b64: String = ROOT_PEM
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap()
}

/// The signature section as serde_cbor writes `Vec<PcrSignature>`: byte fields as
/// arrays of integers.
fn signature_section(cert_pem: &[u8], as_byte_string: bool) -> Vec<u8> {
    let bytes = |b: &[u8]| {
        if as_byte_string {
            Cbor::Bytes(b.to_vec())
        } else {
            Cbor::Array(b.iter().map(|x| Cbor::Integer((*x).into())).collect())
        }
    };
    let entry = Cbor::Map(vec![
        (Cbor::Text("signing_certificate".into()), bytes(cert_pem)),
        (
            Cbor::Text("signature".into()),
            bytes(&[0xd2, 0x84, 0x40, 0xa0, 0x40, 0x40]),
        ),
    ]);
    let mut out = Vec::new();
    ciborium::ser::into_writer(&Cbor::Array(vec![entry]), &mut out).unwrap();
    out
}

const BOOT: &[u8] = b"nitro-cli boot ramdisk: init, nsm.ko";
const APP: &[u8] = b"application ramdisk: /agentkeys-enclave";
const APP2: &[u8] = b"second application ramdisk";

#[test]
fn unsigned_image_pcrs_match_independent_computation() {
    let img = Image::standard(&[BOOT, APP], None);
    let bytes = img.write();
    let m = measure_bytes(&bytes).unwrap();
    let kernel = &img.sections[0].1;
    let cmdline = &img.sections[1].1;
    assert_eq!(m.pcr0.to_vec(), expected_pcr(&[kernel, cmdline, BOOT, APP]));
    assert_eq!(m.pcr1.to_vec(), expected_pcr(&[kernel, cmdline, BOOT]));
    assert_eq!(m.pcr2.to_vec(), expected_pcr(&[APP]));
    assert_eq!(m.pcr8, None);
    assert_eq!(m.header.version, 4);
    assert_eq!(m.header.num_sections, 5);
    assert_eq!(m.header.default_cpus, 2);
    assert!(!m.header.is_arm64());
    assert!(matches!(m.crc, CrcStatus::Verified(_)));
    assert_eq!(
        m.sections.iter().map(|s| s.kind).collect::<Vec<_>>(),
        vec![
            SectionKind::Kernel,
            SectionKind::Cmdline,
            SectionKind::Metadata,
            SectionKind::Ramdisk,
            SectionKind::Ramdisk
        ]
    );
    assert_eq!(
        m.metadata.as_ref().unwrap()["ImageName"],
        "agentkeys-enclave"
    );
    assert_eq!(m.pcrs().keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
}

#[test]
fn metadata_and_signature_do_not_change_pcr0_to_2() {
    let unsigned = measure_bytes(&Image::standard(&[BOOT, APP], None).write()).unwrap();
    let mut no_meta = Image::standard(&[BOOT, APP], None);
    no_meta.sections.remove(2);
    let no_meta = measure_bytes(&no_meta.write()).unwrap();
    let signed = measure_bytes(
        &Image::standard(
            &[BOOT, APP],
            Some(signature_section(ROOT_PEM.as_bytes(), false)),
        )
        .write(),
    )
    .unwrap();
    assert_eq!(unsigned.pcr0, no_meta.pcr0);
    assert_eq!(unsigned.pcr0, signed.pcr0);
    assert_eq!(unsigned.pcr1, signed.pcr1);
    assert_eq!(unsigned.pcr2, signed.pcr2);
}

#[test]
fn signed_image_pcr8_is_the_certificate_der() {
    for as_byte_string in [false, true] {
        let img = Image::standard(
            &[BOOT, APP],
            Some(signature_section(ROOT_PEM.as_bytes(), as_byte_string)),
        );
        let m = measure_bytes(&img.write()).unwrap();
        let der = root_der();
        assert_eq!(m.signing_certificate_der.as_deref(), Some(der.as_slice()));
        assert_eq!(m.pcr8.unwrap().to_vec(), expected_pcr(&[&der]));
        assert_eq!(
            m.pcrs().keys().copied().collect::<Vec<_>>(),
            vec![0, 1, 2, 8]
        );
    }
}

#[test]
fn several_app_ramdisks_all_go_to_pcr2_in_order() {
    let img = Image::standard(&[BOOT, APP, APP2], None);
    let m = measure_bytes(&img.write()).unwrap();
    let kernel = &img.sections[0].1;
    let cmdline = &img.sections[1].1;
    assert_eq!(m.pcr2.to_vec(), expected_pcr(&[APP, APP2]));
    assert_eq!(
        m.pcr0.to_vec(),
        expected_pcr(&[kernel, cmdline, BOOT, APP, APP2])
    );
    // Swapping the application ramdisks changes PCR0 and PCR2, not PCR1.
    let swapped = measure_bytes(&Image::standard(&[BOOT, APP2, APP], None).write()).unwrap();
    assert_ne!(swapped.pcr0, m.pcr0);
    assert_ne!(swapped.pcr2, m.pcr2);
    assert_eq!(swapped.pcr1, m.pcr1);
}

#[test]
fn one_ramdisk_only_gives_pcr2_of_empty_input() {
    let m = measure_bytes(&Image::standard(&[BOOT], None).write()).unwrap();
    assert_eq!(m.pcr2.to_vec(), expected_pcr(&[]));
}

#[test]
fn one_changed_byte_in_the_app_changes_pcr0_and_pcr2_only() {
    let a = measure_bytes(&Image::standard(&[BOOT, APP], None).write()).unwrap();
    let mut app = APP.to_vec();
    app[0] ^= 1;
    let b = measure_bytes(&Image::standard(&[BOOT, &app], None).write()).unwrap();
    assert_ne!(a.pcr0, b.pcr0);
    assert_eq!(a.pcr1, b.pcr1);
    assert_ne!(a.pcr2, b.pcr2);
}

#[test]
fn version_1_has_no_crc() {
    let mut img = Image::standard(&[BOOT, APP], None);
    img.sections.remove(2); // v1 predates the metadata section
    img.version = 1;
    let mut bytes = img.write();
    // A v1 file's CRC field is not checked: scribble on it.
    bytes[544..548].copy_from_slice(&[1, 2, 3, 4]);
    let m = measure_bytes(&bytes).unwrap();
    assert_eq!(m.crc, CrcStatus::NotPresent);
}

#[test]
fn measure_file_reads_from_disk_and_json_has_nitro_cli_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enclave.eif");
    std::fs::write(&path, Image::standard(&[BOOT, APP], None).write()).unwrap();
    let m = measure_file(&path).unwrap();
    let json = m.to_nitro_cli_json();
    assert_eq!(json["Measurements"]["PCR0"], hex::encode(m.pcr0));
    assert_eq!(json["Measurements"]["PCR1"], hex::encode(m.pcr1));
    assert_eq!(json["Measurements"]["PCR2"], hex::encode(m.pcr2));
    assert!(json["Measurements"].get("PCR8").is_none());
    // Round trip through the published-measurements parser.
    let published = PublishedMeasurements::from_json(&json.to_string()).unwrap();
    assert!(compare(&m, &published.pcrs)
        .iter()
        .all(|c| c.status() == ComparisonStatus::Match));
}

#[test]
fn missing_file_is_an_open_error() {
    let err = measure_file(std::path::Path::new("/nonexistent/enclave.eif")).unwrap_err();
    assert!(matches!(err, EifError::Open { .. }), "{err}");
}

#[test]
fn large_sections_stream_across_chunks() {
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let img = Image::standard(&[BOOT, &big], None);
    let m = measure_bytes(&img.write()).unwrap();
    assert_eq!(m.pcr2.to_vec(), expected_pcr(&[&big]));
}

// ---- negative tests -------------------------------------------------------------------

fn valid() -> Vec<u8> {
    Image::standard(&[BOOT, APP], None).write()
}

/// Recomputes the CRC after a deliberate edit, so the test reaches the check it aims at.
fn fix_crc(bytes: &mut [u8]) {
    let mut input = bytes[..544].to_vec();
    input.extend_from_slice(&bytes[548..]);
    let crc = crc32_bitwise(&input);
    bytes[544..548].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn bad_magic() {
    let mut b = valid();
    b[0..4].copy_from_slice(b"\x7fELF");
    let err = measure_bytes(&b).unwrap_err();
    assert!(
        matches!(err, EifError::BadMagic { found, .. } if &found == b"\x7fELF"),
        "{err}"
    );
    assert!(err.to_string().contains(".eif"));
}

#[test]
fn empty_and_short_files_are_truncated() {
    for len in [0usize, 4, 100, 547] {
        let err = measure_bytes(&valid()[..len]).unwrap_err();
        assert!(
            matches!(err, EifError::Truncated { .. }),
            "len {len}: {err}"
        );
    }
}

#[test]
fn unsupported_versions() {
    for v in [0u16, 5, 0xffff] {
        let mut b = valid();
        b[4..6].copy_from_slice(&v.to_be_bytes());
        let err = measure_bytes(&b).unwrap_err();
        assert!(
            matches!(err, EifError::UnsupportedVersion { version, max: 4 } if version == v),
            "{err}"
        );
    }
}

#[test]
fn bad_section_counts() {
    for n in [0u16, 33, 0xffff] {
        let mut b = valid();
        b[26..28].copy_from_slice(&n.to_be_bytes());
        let err = measure_bytes(&b).unwrap_err();
        assert!(
            matches!(err, EifError::BadSectionCount { num_sections, .. } if num_sections == n),
            "{err}"
        );
    }
}

#[test]
fn truncated_section_data() {
    let b = valid();
    // Cut inside the last ramdisk.
    let err = measure_bytes(&b[..b.len() - 3]).unwrap_err();
    match err {
        EifError::Truncated {
            needed, available, ..
        } => {
            assert_eq!(needed, APP.len() as u64);
            assert_eq!(available, APP.len() as u64 - 3);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn truncated_section_header() {
    let img = Image::standard(&[BOOT, APP], None);
    let b = img.write();
    let last_header_at = b.len() - APP.len() - 12;
    let err = measure_bytes(&b[..last_header_at + 5]).unwrap_err();
    assert!(
        matches!(
            err,
            EifError::Truncated {
                needed: 12,
                available: 5,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn missing_trailing_section_is_a_count_mismatch() {
    let b = valid();
    let last_header_at = b.len() - APP.len() - 12;
    let err = measure_bytes(&b[..last_header_at]).unwrap_err();
    assert!(
        matches!(
            err,
            EifError::SectionCountMismatch {
                declared: 5,
                found: 4
            }
        ),
        "{err}"
    );
}

#[test]
fn crc_mismatch() {
    let mut b = valid();
    let last = b.len() - 1;
    b[last] ^= 0x01;
    let err = measure_bytes(&b).unwrap_err();
    assert!(matches!(err, EifError::CrcMismatch { .. }), "{err}");
    // And a flipped header byte (default_mem) too.
    let mut b = valid();
    b[10] ^= 0x80;
    assert!(matches!(
        measure_bytes(&b).unwrap_err(),
        EifError::CrcMismatch { .. }
    ));
}

#[test]
fn invalid_section_type() {
    for t in [0u16, 6, 0x0100] {
        let mut b = valid();
        b[548..550].copy_from_slice(&t.to_be_bytes());
        fix_crc(&mut b);
        let err = measure_bytes(&b).unwrap_err();
        assert!(
            matches!(err, EifError::InvalidSectionType { index: 0, offset: 548, type_code } if type_code == t),
            "{err}"
        );
    }
}

#[test]
fn section_table_disagreeing_with_file() {
    // Offset table entry 1 (cmdline) off by one.
    let mut b = valid();
    let at = 28 + 8;
    let v = u64::from_be_bytes(b[at..at + 8].try_into().unwrap()) + 1;
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
    fix_crc(&mut b);
    let err = measure_bytes(&b).unwrap_err();
    assert!(
        matches!(
            err,
            EifError::SectionTableMismatch {
                index: 1,
                field: "offset",
                ..
            }
        ),
        "{err}"
    );
    // Size table entry 0 (kernel) wrong.
    let mut b = valid();
    let at = 28 + 8 * 32;
    b[at..at + 8].copy_from_slice(&7u64.to_be_bytes());
    fix_crc(&mut b);
    let err = measure_bytes(&b).unwrap_err();
    assert!(
        matches!(
            err,
            EifError::SectionTableMismatch {
                index: 0,
                field: "size",
                in_table: 7,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn trailing_bytes_are_refused() {
    let mut b = valid();
    b.extend_from_slice(&[0u8; 12]);
    fix_crc(&mut b);
    let err = measure_bytes(&b).unwrap_err();
    assert!(
        matches!(
            err,
            EifError::SectionCountMismatch {
                declared: 5,
                found: 6
            }
        ),
        "{err}"
    );
    let mut b = valid();
    b.extend_from_slice(&[0u8; 5]);
    let err = measure_bytes(&b).unwrap_err();
    assert!(matches!(err, EifError::Truncated { .. }), "{err}");
}

#[test]
fn required_sections() {
    let mut img = Image::standard(&[BOOT, APP], None);
    img.sections.retain(|(k, _)| *k != 3);
    let err = measure_bytes(&img.write()).unwrap_err();
    assert!(
        matches!(
            err,
            EifError::MissingSection {
                kind: SectionKind::Ramdisk
            }
        ),
        "{err}"
    );

    let mut img = Image::standard(&[BOOT, APP], None);
    img.sections.remove(0);
    let err = measure_bytes(&img.write()).unwrap_err();
    assert!(
        matches!(
            err,
            EifError::MissingSection {
                kind: SectionKind::Kernel
            }
        ),
        "{err}"
    );

    let mut img = Image::standard(&[BOOT, APP], None);
    img.sections.remove(1);
    let err = measure_bytes(&img.write()).unwrap_err();
    assert!(
        matches!(
            err,
            EifError::MissingSection {
                kind: SectionKind::Cmdline
            }
        ),
        "{err}"
    );
}

#[test]
fn duplicate_sections() {
    let mut img = Image::standard(&[BOOT, APP], None);
    let k = img.sections[0].clone();
    img.sections.insert(1, k);
    let err = measure_bytes(&img.write()).unwrap_err();
    assert!(
        matches!(
            err,
            EifError::DuplicateSection {
                kind: SectionKind::Kernel,
                index: 1
            }
        ),
        "{err}"
    );

    let sig = signature_section(ROOT_PEM.as_bytes(), false);
    let mut img = Image::standard(&[BOOT, APP], Some(sig.clone()));
    img.sections.push((4, sig));
    let err = measure_bytes(&img.write()).unwrap_err();
    assert!(
        matches!(
            err,
            EifError::DuplicateSection {
                kind: SectionKind::Signature,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn oversized_signature_section() {
    let img = Image::standard(&[BOOT, APP], Some(vec![0u8; 1024 * 1024 + 1]));
    let err = measure_bytes(&img.write()).unwrap_err();
    assert!(
        matches!(
            err,
            EifError::SectionTooLarge {
                kind: SectionKind::Signature,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn malformed_signature_sections() {
    let cases: Vec<Vec<u8>> = vec![
        vec![0xff, 0x00], // not CBOR
        {
            let mut v = Vec::new();
            ciborium::ser::into_writer(&Cbor::Text("x".into()), &mut v).unwrap();
            v
        },
        {
            let mut v = Vec::new();
            ciborium::ser::into_writer(&Cbor::Array(vec![]), &mut v).unwrap();
            v
        },
        {
            let mut v = Vec::new();
            let entry = Cbor::Map(vec![(Cbor::Text("signature".into()), Cbor::Bytes(vec![1]))]);
            ciborium::ser::into_writer(&Cbor::Array(vec![entry]), &mut v).unwrap();
            v
        },
        {
            let mut v = Vec::new();
            let entry = Cbor::Map(vec![(
                Cbor::Text("signing_certificate".into()),
                Cbor::Array(vec![Cbor::Integer(300.into())]),
            )]);
            ciborium::ser::into_writer(&Cbor::Array(vec![entry]), &mut v).unwrap();
            v
        },
    ];
    for (i, sig) in cases.into_iter().enumerate() {
        let err = measure_bytes(&Image::standard(&[BOOT, APP], Some(sig)).write()).unwrap_err();
        assert!(
            matches!(err, EifError::SignatureMalformed { .. }),
            "case {i}: {err}"
        );
    }
}

#[test]
fn signature_certificate_must_be_a_pem_certificate() {
    let not_pem = signature_section(b"hello", false);
    let err = measure_bytes(&Image::standard(&[BOOT, APP], Some(not_pem)).write()).unwrap_err();
    assert!(matches!(err, EifError::SigningCertificate { .. }), "{err}");

    let key_label = ROOT_PEM.replace("CERTIFICATE", "PUBLIC KEY");
    let sig = signature_section(key_label.as_bytes(), false);
    let err = measure_bytes(&Image::standard(&[BOOT, APP], Some(sig)).write()).unwrap_err();
    assert!(err.to_string().contains("PUBLIC KEY"), "{err}");

    let garbage = "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n";
    let sig = signature_section(garbage.as_bytes(), false);
    let err = measure_bytes(&Image::standard(&[BOOT, APP], Some(sig)).write()).unwrap_err();
    assert!(err.to_string().contains("X.509"), "{err}");
}

#[test]
fn malformed_metadata() {
    let mut img = Image::standard(&[BOOT, APP], None);
    img.sections[2].1 = b"{not json".to_vec();
    let err = measure_bytes(&img.write()).unwrap_err();
    assert!(matches!(err, EifError::MetadataMalformed { .. }), "{err}");
}

// ---- comparison with published measurements -------------------------------------------

#[test]
fn comparison_detects_mismatch_and_pcr8_presence() {
    let m = measure_bytes(&valid()).unwrap();
    let mut pcrs = m.pcrs();
    pcrs.get_mut(&2).unwrap()[0] ^= 1;
    pcrs.insert(8, vec![0xaa; 48]);
    let rows = compare(&m, &pcrs);
    let status: Vec<_> = rows.iter().map(|r| (r.index, r.status())).collect();
    assert_eq!(
        status,
        vec![
            (0, ComparisonStatus::Match),
            (1, ComparisonStatus::Match),
            (2, ComparisonStatus::Mismatch),
            (8, ComparisonStatus::NotInImage)
        ]
    );
    assert!(!rows[2].is_ok());
    assert!(!rows[3].is_ok());

    // A file listing only PCR0 for a signed image: PCR1/2/8 are informational.
    let signed = measure_bytes(
        &Image::standard(
            &[BOOT, APP],
            Some(signature_section(ROOT_PEM.as_bytes(), true)),
        )
        .write(),
    )
    .unwrap();
    let only0 = PublishedMeasurements::from_json(&format!(
        r#"{{"PCR0":"{}"}}"#,
        hex::encode_upper(signed.pcr0)
    ))
    .unwrap();
    let rows = compare(&signed, &only0.pcrs);
    assert!(rows.iter().all(|r| r.is_ok()));
    assert_eq!(
        rows.last().unwrap().status(),
        ComparisonStatus::NotPublished
    );
}

#[test]
fn crc_table_matches_the_check_value() {
    // The standard CRC-32 check value over "123456789".
    let mut c = Crc32::new();
    c.update(b"123456789");
    assert_eq!(c.finish(), 0xCBF4_3926);
    assert_eq!(crc32_bitwise(b"123456789"), 0xCBF4_3926);
}

/// What `agentkeys-attest measure --measurements FILE` prints for a measured image.
fn report_against(
    m: &EifMeasurement,
    measurements: &Path,
    json: bool,
) -> Result<MeasureReport, MeasurementsFileError> {
    let published = PublishedMeasurements::from_file(measurements)?;
    Ok(MeasureReport::new(m, Some(&published.pcrs), json))
}

#[test]
fn measure_report_text_json_and_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let eif_path = dir.path().join("enclave.eif");
    std::fs::write(&eif_path, valid()).unwrap();
    let m = measure_file(&eif_path).unwrap();

    let r = MeasureReport::new(&m, None, false);
    assert!(r.ok);
    assert!(r.output.contains(&format!("PCR0: {}", hex::encode(m.pcr0))));
    assert!(r.output.contains("(unsigned image)"));

    let good = dir.path().join("good.json");
    std::fs::write(&good, m.to_nitro_cli_json().to_string()).unwrap();
    let r = report_against(&m, &good, true).unwrap();
    assert!(r.ok);
    let v: serde_json::Value = serde_json::from_str(&r.output).unwrap();
    assert_eq!(v["Ok"], true);
    assert_eq!(v["Measurements"]["PCR0"], hex::encode(m.pcr0));
    assert_eq!(v["Eif"]["version"], 4);
    assert_eq!(v["Comparison"][0]["status"], "match");

    let mut bad_json = m.to_nitro_cli_json();
    bad_json["Measurements"]["PCR0"] = serde_json::Value::from("b".repeat(96));
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, bad_json.to_string()).unwrap();
    let r = report_against(&m, &bad, false).unwrap();
    assert!(!r.ok);
    assert!(r.output.contains("PCR0 MISMATCH"), "{}", r.output);
    assert!(r.output.contains("DO NOT match"));

    let err = report_against(&m, &dir.path().join("none.json"), false).unwrap_err();
    assert!(err.to_string().contains("none.json"), "{err}");
}
