//! `agentkeys-eif` (what `agentkeys-attest measure` runs) against AWS's own EIF code,
//! `aws-nitro-enclaves-image-format` 0.8.1: EIFs built by AWS's `EifBuilder` from a real
//! Debian kernel, a command line and two cpio ramdisks (a boot ramdisk, and an
//! application ramdisk holding the static enclave binary), measured by AWS's builder,
//! by AWS's reader (`EifReader`) and by ours; then one byte changed in each section.
//!
//! AWS's `eif_build` example is not used: the published crate has no examples
//! (`autoexamples = false`, no `examples/` in the package), and the separately published
//! `eif_build` 0.2.1 CLI imports `utils::SignEnclaveInfo`, which the 0.8 library no longer
//! has. This test makes the same library calls `eif_build` makes (`EifBuilder::new`,
//! `add_ramdisk`, `write_to`, `get_pcrs`).
//!
//! Needs a kernel (`/boot/vmlinuz-*` from `apt-get install linux-image-cloud-amd64`, or
//! `AGENTKEYS_TEST_KERNEL`) and the musl enclave binary (`AGENTKEYS_ENCLAVE_BIN`, or the
//! release build under the main workspace's target directory); without either it fails
//! and says how to get it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use agentkeys_eif::{measure_bytes, measure_file, EifMeasurement, MeasureReport};
use agentkeys_eif_aws_crosscheck::{
    check_static_elf, cpio_newc, find_enclave_binary, find_kernel, is_bzimage, CpioEntry,
};
use aws_nitro_enclaves_image_format::defs::{EifBuildInfo, EifIdentityInfo};
use aws_nitro_enclaves_image_format::utils::eif_reader::EifReader;
use aws_nitro_enclaves_image_format::utils::EifBuilder;
use sha2::{Digest, Sha384};

/// A command line of the form nitro-cli's x86_64 boot blobs carry (the exact string only
/// has to be the same on both sides of the comparison).
const CMDLINE: &str = "reboot=k panic=30 pci=off nomodules console=ttyS0 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on";

/// The main workspace's target directory (where scripts/check-scripts.sh builds the
/// musl binary): `CARGO_TARGET_DIR` when set, else `<repository>/target`.
fn main_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// The inputs of one EIF, as files.
struct Inputs {
    dir: tempfile::TempDir,
    kernel: PathBuf,
    cmdline: String,
    ramdisks: Vec<PathBuf>,
    metadata: EifIdentityInfo,
}

fn metadata(custom: serde_json::Value) -> EifIdentityInfo {
    EifIdentityInfo {
        img_name: "agentkeys-enclave".into(),
        img_version: "1.0".into(),
        build_info: EifBuildInfo {
            build_time: "1970-01-01T00:00:00+00:00".into(),
            build_tool: "aws-crosscheck".into(),
            build_tool_version: "0.1.0".into(),
            img_os: "Debian".into(),
            img_kernel: "cloud-amd64".into(),
        },
        docker_info: serde_json::json!(null),
        custom_info: custom,
    }
}

/// The baseline inputs: the kernel, the command line, a boot ramdisk (a stand-in for
/// nitro-cli's `init` and NSM driver, which are not available here) and an application
/// ramdisk laid out as nitro-cli lays out the Docker image (`rootfs/`, `cmd`, `env`) with
/// the enclave binary at `rootfs/agentkeys-enclave`.
fn baseline() -> Inputs {
    let kernel_src = find_kernel().unwrap_or_else(|e| panic!("{e}"));
    let kernel_bytes = std::fs::read(&kernel_src)
        .unwrap_or_else(|e| panic!("cannot read the kernel {}: {e}", kernel_src.display()));
    assert!(
        is_bzimage(&kernel_bytes),
        "{} is not an x86 bzImage (no HdrS boot header)",
        kernel_src.display()
    );
    let binary_path = find_enclave_binary(&main_target_dir()).unwrap_or_else(|e| panic!("{e}"));
    let binary = std::fs::read(&binary_path).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("bzImage");
    std::fs::write(&kernel, &kernel_bytes).unwrap();
    let boot = cpio_newc(&[
        CpioEntry::file(
            "init",
            0o755,
            b"stand-in for nitro-cli's init (not executed here)\n".to_vec(),
        ),
        CpioEntry::file(
            "nsm.ko",
            0o644,
            b"stand-in for nitro-cli's NSM driver\n".to_vec(),
        ),
    ])
    .unwrap();
    let app = cpio_newc(&[
        CpioEntry::dir("rootfs"),
        CpioEntry::file("rootfs/agentkeys-enclave", 0o555, binary),
        CpioEntry::file(
            "cmd",
            0o644,
            b"/agentkeys-enclave\n--vsock-port\n5000\n--kms-proxy-port\n8001\n--log-json\n"
                .to_vec(),
        ),
        CpioEntry::file(
            "env",
            0o644,
            b"AGENTKEYS_ENCLAVE_ISSUER=https://issuer.example.com\n".to_vec(),
        ),
    ])
    .unwrap();
    let ramdisks = vec![dir.path().join("boot.cpio"), dir.path().join("app.cpio")];
    std::fs::write(&ramdisks[0], boot).unwrap();
    std::fs::write(&ramdisks[1], app).unwrap();
    Inputs {
        dir,
        kernel,
        cmdline: CMDLINE.into(),
        ramdisks,
        metadata: metadata(serde_json::json!(null)),
    }
}

/// PCR index -> lower-case hex.
type Pcrs = BTreeMap<u16, String>;

/// The PCRs of AWS's measurements map. Its "HashAlgorithm" is the Debug form of the
/// hasher: with sha2 0.10 (library 0.6 and later) "Sha512_48 { .. }", not the
/// "Sha384 { ... }" older nitro-cli releases print; the values are SHA-384 either way.
fn aws_pcrs(m: &BTreeMap<String, String>) -> Pcrs {
    let algo = m
        .get("HashAlgorithm")
        .map(String::as_str)
        .unwrap_or_default();
    assert!(
        ["Sha384 { ... }", "Sha512_48 { .. }"].contains(&algo),
        "HashAlgorithm {algo:?}"
    );
    let pcrs: Pcrs = m
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("PCR")?.parse().ok()?, v.clone())))
        .collect();
    for v in pcrs.values() {
        assert_eq!(v.len(), 96, "a SHA-384 PCR is 48 bytes: {v}");
    }
    pcrs
}

fn our_pcrs(m: &EifMeasurement) -> Pcrs {
    m.pcrs()
        .into_iter()
        .map(|(i, v)| (i, hex::encode(v)))
        .collect()
}

/// Builds the EIF with AWS's EifBuilder; returns its path and the PCRs AWS's builder
/// printed, after checking that AWS's reader and ours give the same.
fn build_and_measure(inputs: &Inputs, name: &str) -> (PathBuf, Pcrs) {
    let path = inputs.dir.path().join(name);
    let mut builder = EifBuilder::new(
        &inputs.kernel,
        inputs.cmdline.clone(),
        None,
        Sha384::new(),
        0, // flags: x86_64
        inputs.metadata.clone(),
    );
    for r in &inputs.ramdisks {
        builder.add_ramdisk(r);
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    let from_builder = aws_pcrs(&builder.write_to(&mut file));
    drop(file);

    let mut reader = EifReader::from_eif(path.display().to_string()).unwrap();
    assert!(reader.check_crc(), "AWS's reader: bad CRC on AWS's own EIF");
    let from_reader = aws_pcrs(&reader.get_measurements().unwrap());
    assert_eq!(
        from_builder, from_reader,
        "AWS's builder and reader disagree"
    );

    let ours = measure_file(&path).unwrap();
    assert_eq!(
        ours.header.version,
        aws_nitro_enclaves_image_format::defs::CURRENT_VERSION
    );
    assert_eq!(ours.sections.len(), 3 + inputs.ramdisks.len());
    assert_eq!(
        our_pcrs(&ours),
        from_builder,
        "agentkeys-eif and AWS's EifBuilder disagree on {name}"
    );
    (path, from_builder)
}

fn changed(a: &Pcrs, b: &Pcrs) -> BTreeSet<u16> {
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(k) != b.get(k))
        .copied()
        .collect()
}

fn flip_byte_in(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    assert!(at < b.len());
    b[at] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

#[test]
fn agentkeys_eif_computes_the_pcrs_aws_computes() {
    let inputs = baseline();
    let (path, pcrs) = build_and_measure(&inputs, "base.eif");
    assert_eq!(
        pcrs.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2],
        "unsigned: PCR0, 1, 2 only"
    );
    let ours = measure_file(&path).unwrap();
    assert!(matches!(ours.crc, agentkeys_eif::CrcStatus::Verified(_)));
    // The report `agentkeys-attest measure` prints shows the same values.
    let report = MeasureReport::new(&ours, None, false);
    for (i, v) in &pcrs {
        assert!(
            report.output.contains(&format!("PCR{i}: {v}")),
            "{}",
            report.output
        );
    }
    eprintln!(
        "kernel {} ({} bytes): AWS and agentkeys-eif agree:\nPCR0 {}\nPCR1 {}\nPCR2 {}",
        find_kernel().unwrap().display(),
        std::fs::metadata(&inputs.kernel).unwrap().len(),
        pcrs[&0],
        pcrs[&1],
        pcrs[&2]
    );
}

#[test]
fn one_byte_in_each_section_moves_exactly_the_pcrs_that_cover_it() {
    let base_inputs = baseline();
    let (_, base) = build_and_measure(&base_inputs, "base.eif");

    // (what changes, the PCRs that must change). PCR1 is kernel + cmdline + first
    // ramdisk, PCR2 the later ramdisks, PCR0 all of them; the metadata is in none.
    type Mutation = fn(&mut Inputs);
    let cases: [(&str, Mutation, &[u16]); 6] = [
        (
            "kernel",
            |i| {
                let len = std::fs::metadata(&i.kernel).unwrap().len() as usize;
                flip_byte_in(&i.kernel, len / 2);
            },
            &[0, 1],
        ),
        (
            "cmdline",
            |i| i.cmdline = i.cmdline.replacen("panic=30", "panic=31", 1),
            &[0, 1],
        ),
        (
            "first (boot) ramdisk",
            |i| flip_byte_in(&i.ramdisks[0], 120),
            &[0, 1],
        ),
        (
            "second (application) ramdisk: one byte of the enclave binary",
            |i| {
                let len = std::fs::metadata(&i.ramdisks[1]).unwrap().len() as usize;
                flip_byte_in(&i.ramdisks[1], len / 2);
            },
            &[0, 2],
        ),
        (
            "application ramdisk appended (a third ramdisk)",
            |i| {
                let extra = i.dir.path().join("extra.cpio");
                std::fs::write(&extra, cpio_newc(&[]).unwrap()).unwrap();
                i.ramdisks.push(extra);
            },
            &[0, 2],
        ),
        ("metadata", |i| i.metadata.img_version = "1.1".into(), &[]),
    ];
    for (what, mutate, expected) in cases {
        let mut inputs = baseline();
        mutate(&mut inputs);
        let (_, after) = build_and_measure(&inputs, "changed.eif");
        assert_eq!(
            changed(&base, &after),
            expected.iter().copied().collect::<BTreeSet<u16>>(),
            "a change in the {what} moved these PCRs"
        );
    }
}

#[test]
fn a_byte_changed_in_the_eif_file_itself_fails_the_crc_on_both_sides() {
    let inputs = baseline();
    let (path, _) = build_and_measure(&inputs, "base.eif");
    let original = std::fs::read(&path).unwrap();
    let ours = measure_bytes(&original).unwrap();
    // One byte inside each section's data: the kernel, cmdline, metadata and ramdisks.
    for s in &ours.sections {
        let at = usize::try_from(s.offset).unwrap() + 12 + usize::try_from(s.size).unwrap() / 2;
        let mut bytes = original.clone();
        bytes[at] ^= 0x01;
        let err = measure_bytes(&bytes)
            .err()
            .unwrap_or_else(|| panic!("a changed {} section measured without error", s.kind));
        assert!(
            err.to_string().to_lowercase().contains("crc"),
            "{}: {err}",
            s.kind
        );
        let changed_path = inputs.dir.path().join("flipped.eif");
        std::fs::write(&changed_path, &bytes).unwrap();
        let aws = EifReader::from_eif(changed_path.display().to_string());
        // AWS's reader measures it anyway (or rejects the metadata as JSON) but sees the CRC.
        if let Ok(r) = aws {
            assert!(
                !r.check_crc(),
                "AWS's reader accepted the CRC of a changed {}",
                s.kind
            );
        }
    }
}

#[test]
fn the_packed_enclave_binary_is_static() {
    let path = find_enclave_binary(&main_target_dir()).unwrap_or_else(|e| panic!("{e}"));
    let bytes = std::fs::read(&path).unwrap();
    let elf = check_static_elf(&bytes)
        .unwrap_or_else(|e| panic!("{}: not a static binary: {e}", path.display()));
    eprintln!(
        "{}: static ({}), no PT_INTERP, no DT_NEEDED",
        path.display(),
        if elf.pie { "static-pie" } else { "ET_EXEC" }
    );
    // The check does tell the difference: this test binary is dynamically linked (glibc).
    let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let err = check_static_elf(&me).unwrap_err();
    assert!(err.contains("dynamically linked"), "{err}");
}

#[test]
fn measure_names_the_commit_and_inputs_file_build_eif_records() {
    let mut inputs = baseline();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let sha = "ab".repeat(32);
    // What scripts/build-eif.sh passes to `nitro-cli build-enclave --metadata`.
    inputs.metadata = metadata(serde_json::json!({
        "agentkeys_source_commit": commit,
        "agentkeys_source_dirty": false,
        "agentkeys_build_inputs": "eif/inputs.env",
        "agentkeys_build_inputs_sha256": sha,
        "agentkeys_build_overrides": [],
    }));
    let (path, _) = build_and_measure(&inputs, "with-provenance.eif");
    let m = measure_file(&path).unwrap();
    let text = MeasureReport::new(&m, None, false).output;
    assert!(
        text.contains(&format!(
            "built from: {commit} with eif/inputs.env (sha256 {sha})"
        )),
        "{text}"
    );
    assert!(text.contains("no PCR covers"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&MeasureReport::new(&m, None, true).output).unwrap();
    assert_eq!(json["BuildProvenance"]["source_commit"], commit);
    assert_eq!(json["BuildProvenance"]["measured"], false);

    // Control characters in the metadata are not echoed.
    inputs.metadata = metadata(serde_json::json!({
        "agentkeys_source_commit": commit,
        "agentkeys_source_dirty": false,
        "agentkeys_build_inputs": "eif/inputs.env\u{1b}[2J",
        "agentkeys_build_inputs_sha256": sha,
    }));
    let (path, _) = build_and_measure(&inputs, "hostile-provenance.eif");
    let text = MeasureReport::new(&measure_file(&path).unwrap(), None, false).output;
    assert!(
        text.contains("built from: malformed EIF metadata"),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "{text:?}");

    // An image without it says so.
    let plain = baseline();
    let (path, _) = build_and_measure(&plain, "plain.eif");
    let text = MeasureReport::new(&measure_file(&path).unwrap(), None, false).output;
    assert!(text.contains("built from: not recorded"), "{text}");
}
