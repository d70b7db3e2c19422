//! Behaviour of the operator scripts under scripts/: the host setup's dry run and its
//! input checks, run-enclave's debug-mode refusal, build-eif's refusal of an unpinned
//! base image, and `bash -n` (plus shellcheck when installed) on every script.

use std::path::PathBuf;
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn script(name: &str) -> PathBuf {
    repo().join("scripts").join(name)
}

fn bash(name: &str, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(script(name))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn valid_flags() -> Vec<&'static str> {
    vec![
        "--non-interactive",
        "--dry-run",
        "--issuer",
        "https://issuer.example.com",
        "--region",
        "us-east-1",
        "--kms-key-id",
        KEY,
        "--backend-url",
        "https://backend.example.com",
        "--behind-tls-proxy",
    ]
}

/// Replaces (or appends) `flag value` in the valid flag set.
fn with(flag: &'static str, value: &'static str) -> Vec<&'static str> {
    let mut f = valid_flags();
    if let Some(i) = f.iter().position(|x| *x == flag) {
        f[i + 1] = value;
    } else {
        f.push(flag);
        f.push(value);
    }
    f
}

fn without(flag: &str) -> Vec<&'static str> {
    let mut f = valid_flags();
    let i = f.iter().position(|x| *x == flag).unwrap();
    f.drain(i..i + 2);
    f
}

fn assert_fails(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure; stdout: {}",
        text(&out.stdout)
    );
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
}

#[test]
fn setup_dry_run_prints_the_plan_and_changes_nothing() {
    let out = bash("setup-parent-host.sh", &valid_flags());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    for needle in [
        "AgentKeys parent host plan",
        "[dry-run] dnf install -y aws-nitro-enclaves-cli aws-nitro-enclaves-cli-devel",
        "[dry-run] write /etc/nitro_enclaves/allocator.yaml",
        "memory_mib: 512",
        "cpu_count: 2",
        "[dry-run] useradd --system",
        "BROKER_OIDC_ISSUER=https://issuer.example.com",
        "BROKER_STS_MODE=web-identity",
        "BROKER_BEHIND_TLS_PROXY=true",
        "BROKER_ENCLAVE_ADDR=vsock:16:5000",
        "- {address: kms.us-east-1.amazonaws.com, port: 443}",
        "ExecStart=/usr/bin/vsock-proxy 8001 kms.us-east-1.amazonaws.com 443",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/agentkeys",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "[dry-run] systemctl enable --now nitro-enclaves-allocator.service",
        "dry run: nothing was changed",
    ] {
        assert!(stdout.contains(needle), "plan lacks {needle:?}:\n{stdout}");
    }
    // No template placeholder survives.
    assert!(
        !stdout.contains('@') || !stdout.contains("@REGION@"),
        "{stdout}"
    );
    for placeholder in ["@REGION@", "@DATA_DIR@", "@EIF_PATH@", "@CAPABILITIES@"] {
        assert!(
            !stdout.contains(placeholder),
            "{placeholder} left in:\n{stdout}"
        );
    }
}

#[test]
fn setup_with_tls_files_and_high_port_has_no_capability() {
    let mut f = valid_flags();
    f.extend([
        "--tls-cert",
        "/etc/agentkeys/tls/fullchain.pem",
        "--tls-key",
        "/etc/agentkeys/tls/privkey.pem",
        "--bind",
        "0.0.0.0:8443",
        "--credential-mode",
        "assume-role",
        "--data-dir",
        "/srv/agentkeys",
    ]);
    f.retain(|x| *x != "--behind-tls-proxy");
    let out = bash("setup-parent-host.sh", &f);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(stdout.contains("BROKER_TLS_CERT=/etc/agentkeys/tls/fullchain.pem"));
    assert!(stdout.contains("BROKER_STS_MODE=assume-role"));
    assert!(stdout.contains("ReadWritePaths=/srv/agentkeys"));
    assert!(stdout.contains("| CapabilityBoundingSet=\n"), "{stdout}");
}

#[test]
fn setup_refuses_a_scheme_less_issuer() {
    let out = bash(
        "setup-parent-host.sh",
        &with("--issuer", "issuer.example.com"),
    );
    assert_fails(&out, "must start with https://");
    let out = bash(
        "setup-parent-host.sh",
        &with("--issuer", "http://issuer.example.com"),
    );
    assert_fails(&out, "must start with https://");
}

#[test]
fn setup_refuses_a_trailing_slash_issuer() {
    let out = bash(
        "setup-parent-host.sh",
        &with("--issuer", "https://issuer.example.com/"),
    );
    assert_fails(&out, "trailing slash");
}

#[test]
fn setup_refuses_query_and_port_in_the_issuer() {
    let out = bash(
        "setup-parent-host.sh",
        &with("--issuer", "https://issuer.example.com?a=b"),
    );
    assert_fails(&out, "query");
    let out = bash(
        "setup-parent-host.sh",
        &with("--issuer", "https://issuer.example.com:8443"),
    );
    assert_fails(&out, "port");
}

#[test]
fn setup_checks_the_issuer_before_anything_else() {
    // A bad issuer is reported even when other flags are missing or wrong too.
    let out = bash(
        "setup-parent-host.sh",
        &[
            "--non-interactive",
            "--dry-run",
            "--issuer",
            "https://x.example.com/",
            "--credential-mode",
            "nope",
        ],
    );
    assert_fails(&out, "trailing slash");
}

#[test]
fn setup_refuses_missing_required_flags() {
    for flag in ["--issuer", "--region", "--kms-key-id", "--backend-url"] {
        let out = bash("setup-parent-host.sh", &without(flag));
        assert_fails(&out, &format!("{flag} is required"));
    }
    let mut no_tls = valid_flags();
    no_tls.retain(|x| *x != "--behind-tls-proxy");
    let out = bash("setup-parent-host.sh", &no_tls);
    assert_fails(&out, "TLS is required");
}

#[test]
fn setup_refuses_an_unknown_credential_mode() {
    let out = bash(
        "setup-parent-host.sh",
        &with("--credential-mode", "instance-profile"),
    );
    assert_fails(&out, "--credential-mode 'instance-profile' is unknown");
}

#[test]
fn setup_refuses_other_bad_values() {
    let cases: [(&'static str, &'static str, &str); 10] = [
        ("--region", "mars-1", "--region"),
        ("--kms-key-id", "not-a-key", "--kms-key-id"),
        ("--kms-key-id", "alias/agentkeys", "never an alias"),
        (
            "--kms-key-id",
            "arn:aws:kms:us-east-1:111122223333:alias/agentkeys",
            "never an alias",
        ),
        (
            "--kms-key-id",
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "region 'eu-west-1'",
        ),
        ("--backend-url", "ftp://x", "--backend-url"),
        ("--data-dir", "relative/dir", "absolute"),
        ("--enclave-memory-mib", "32", "--enclave-memory-mib"),
        ("--enclave-cpus", "zero", "--enclave-cpus"),
        ("--bind", "localhost", "--bind"),
    ];
    for (flag, value, needle) in cases {
        let out = bash("setup-parent-host.sh", &with(flag, value));
        assert_fails(&out, needle);
    }
    let mut both = valid_flags();
    both.extend(["--tls-cert", "/a.pem", "--tls-key", "/b.pem"]);
    assert_fails(&bash("setup-parent-host.sh", &both), "either");
    let out = bash(
        "setup-parent-host.sh",
        &["--non-interactive", "--frobnicate"],
    );
    assert_fails(&out, "unknown argument: --frobnicate");
}

#[test]
fn setup_without_a_terminal_needs_non_interactive() {
    let out = bash(
        "setup-parent-host.sh",
        &["--dry-run", "--issuer", "https://i.example.com"],
    );
    assert_fails(&out, "--non-interactive");
}

#[test]
fn run_enclave_refuses_debug_mode_unless_acknowledged() {
    let out = bash("run-enclave.sh", &["--dry-run", "--debug-mode"]);
    assert_fails(&out, "--i-understand-debug-mode");
    assert!(text(&out.stderr).contains("PCR0"));
    let out = bash(
        "run-enclave.sh",
        &["--dry-run", "--debug-mode", "--i-understand-debug-mode"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("DEBUG MODE"));
    assert!(text(&out.stdout).contains("--debug-mode"));
}

#[test]
fn run_enclave_dry_run_and_bad_values() {
    let out = bash(
        "run-enclave.sh",
        &[
            "--dry-run",
            "--cpu-count",
            "4",
            "--memory",
            "1024",
            "--enclave-cid",
            "20",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("nitro-cli run-enclave"), "{stdout}");
    assert!(
        stdout.contains("--cpu-count 4 --memory 1024 --enclave-cid 20"),
        "{stdout}"
    );
    assert!(!stdout.contains("--debug-mode"));
    assert_fails(
        &bash("run-enclave.sh", &["--dry-run", "--enclave-cid", "3"]),
        "--enclave-cid",
    );
    assert_fails(
        &bash("run-enclave.sh", &["--dry-run", "--memory", "10"]),
        "--memory",
    );
}

/// The key ARN build-eif.sh pins into the image in these tests.
const PINNED_KEY: &str = KEY;

/// A digest in the format eif/inputs.env holds (not a real image's: the tools are fakes).
fn test_digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

/// A copy of the committed eif/inputs.env in `dir`, with RUST_IMAGE_DIGEST replaced by
/// `digest` (the committed file may hold the all-zero placeholder).
fn inputs_copy(dir: &std::path::Path, digest: &str) -> PathBuf {
    let committed = std::fs::read_to_string(repo().join("eif/inputs.env")).unwrap();
    let mut replaced = 0;
    let text: String = committed
        .lines()
        .map(|l| {
            if l.starts_with("RUST_IMAGE_DIGEST=") {
                replaced += 1;
                format!("RUST_IMAGE_DIGEST={digest}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_eq!(replaced, 1, "eif/inputs.env sets RUST_IMAGE_DIGEST once");
    let p = dir.join("inputs.env");
    std::fs::write(&p, text).unwrap();
    p
}

/// The value of `key` in an inputs file.
fn input_value(path: &std::path::Path, key: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing from {}", path.display()));
    line[key.len() + 1..].trim_matches('"').to_string()
}

#[test]
fn build_eif_refuses_bad_issuer_and_unpinned_base_image() {
    let out = bash(
        "build-eif.sh",
        &[
            "--issuer",
            "https://i.example.com/",
            "--kms-key-arn",
            PINNED_KEY,
        ],
    );
    assert_fails(&out, "trailing slash");
    // The all-zero placeholder of an inputs file that was never pinned is refused.
    let dir = tempfile::tempdir().unwrap();
    let placeholder = inputs_copy(dir.path(), &test_digest('0'));
    let out = Command::new("bash")
        .arg(script("build-eif.sh"))
        .args([
            "--issuer",
            "https://i.example.com",
            "--kms-key-arn",
            PINNED_KEY,
            "--session-key-thumbprint",
            THUMBPRINT,
        ])
        .arg("--inputs")
        .arg(&placeholder)
        .output()
        .unwrap();
    assert_fails(&out, "the builder image is not pinned");
    assert_fails(&out, "scripts/update-eif-inputs.sh");
    let out = bash(
        "build-eif.sh",
        &[
            "--issuer",
            "https://i.example.com",
            "--kms-key-arn",
            PINNED_KEY,
            "--session-key-thumbprint",
            THUMBPRINT,
            "--rust-image-digest",
            "latest",
        ],
    );
    assert_fails(&out, "not sha256:");
}

#[test]
fn build_eif_pins_exactly_one_kms_key_arn() {
    let digest = test_digest('a');
    let base = [
        "--issuer",
        "https://i.example.com",
        "--rust-image-digest",
        &digest,
    ];
    assert_fails(&bash("build-eif.sh", &base), "--kms-key-arn is required");
    for bad in [
        "alias/agentkeys",
        "arn:aws:kms:us-east-1:111122223333:alias/agentkeys",
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        "arn:aws:kms:us-east-1:11112222333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    ] {
        let mut args = base.to_vec();
        args.extend(["--kms-key-arn", bad]);
        assert_fails(&bash("build-eif.sh", &args), "never an alias");
    }
}

/// A session key thumbprint (RFC 7638 §3.1's example).
const THUMBPRINT: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

/// The authorization modes go into the image as agentkeys-enclave would take them; a
/// configuration the enclave would refuse is refused before anything is built.
#[test]
fn build_eif_checks_the_authorization_modes() {
    let digest = test_digest('a');
    let base = [
        "--issuer",
        "https://i.example.com",
        "--kms-key-arn",
        PINNED_KEY,
        "--rust-image-digest",
        &digest,
    ];
    let cases: [(&[&str], &str); 6] = [
        (
            &[],
            "--auth-mode signed-session needs --session-key-thumbprint",
        ),
        (
            &["--auth-mode", "magic"],
            "is not signed-session, wallet-signature or parent-vouched",
        ),
        (
            &["--auth-mode", "parent-vouched,signed-session"],
            "cannot be combined",
        ),
        (
            &[
                "--auth-mode",
                "parent-vouched",
                "--session-key-thumbprint",
                THUMBPRINT,
            ],
            "only used with --auth-mode signed-session",
        ),
        (&["--session-key-thumbprint", "short"], "43-character"),
        (
            &[
                "--session-key-thumbprint",
                THUMBPRINT,
                "--session-key-thumbprint",
                THUMBPRINT,
                "--session-key-thumbprint",
                THUMBPRINT,
                "--session-key-thumbprint",
                THUMBPRINT,
                "--session-key-thumbprint",
                THUMBPRINT,
            ],
            "at most 4",
        ),
    ];
    for (extra, names) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        assert_fails(&bash("build-eif.sh", &args), names);
    }
}

#[test]
fn the_committed_inputs_file_is_complete_and_consistent() {
    // Read and validated by the same shell code build-eif.sh uses; only the digest may
    // still be the placeholder.
    let out = Command::new("bash")
        .arg("-c")
        .arg(
            r#"set -eu; . "$1/scripts/lib/common.sh"
               read_eif_inputs "$1/eif/inputs.env" || exit 1
               validate_eif_inputs "$1" || exit 1
               echo "toolchain=$EIF_RUST_TOOLCHAIN target=$EIF_RUST_TARGET epoch=$EIF_SOURCE_DATE_EPOCH""#,
        )
        .arg("check")
        .arg(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("target=x86_64-unknown-linux-musl"),
        "{stdout}"
    );
    // The toolchain pinned for the image is the one the tag names and at least the
    // workspace's rust-version.
    let inputs = repo().join("eif/inputs.env");
    let toolchain = input_value(&inputs, "RUST_TOOLCHAIN");
    assert_eq!(
        input_value(&inputs, "RUST_IMAGE"),
        format!("rust:{toolchain}-alpine")
    );
    // Every value is documented: a comment line directly precedes each assignment.
    let text = std::fs::read_to_string(&inputs).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.contains('=') && !l.starts_with('#') {
            assert!(
                i > 0 && lines[i - 1].starts_with('#'),
                "eif/inputs.env: {l} has no comment above it"
            );
        }
    }
}

#[test]
fn build_eif_refuses_a_malformed_inputs_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = inputs_copy(dir.path(), &test_digest('a'));
    let committed = std::fs::read_to_string(&good).unwrap();
    for (bad, needle) in [
        (
            committed.replace("RUST_TARGET=", "RUST_TARGET=$(id)"),
            "not a KEY=value line",
        ),
        (
            format!("{committed}UNKNOWN_INPUT=1\n"),
            "unknown key UNKNOWN_INPUT",
        ),
        (
            format!("{committed}SOURCE_DATE_EPOCH=5\n"),
            "SOURCE_DATE_EPOCH is set twice",
        ),
        (
            committed.replace("RUST_TOOLCHAIN=", "#RUST_TOOLCHAIN="),
            "RUST_TOOLCHAIN is missing",
        ),
        (
            committed.replace("RUST_TOOLCHAIN=1.", "RUST_TOOLCHAIN=9."),
            "does not name toolchain",
        ),
        (
            committed.replace("APK_PACKAGES=\"\"", "APK_PACKAGES=\"musl-dev\""),
            "not name=exact-version",
        ),
    ] {
        assert_ne!(bad, committed, "the mutation for {needle:?} applied");
        let p = dir.path().join("bad.env");
        std::fs::write(&p, bad).unwrap();
        let out = Command::new("bash")
            .arg(script("build-eif.sh"))
            .args([
                "--issuer",
                "https://i.example.com",
                "--kms-key-arn",
                PINNED_KEY,
                "--session-key-thumbprint",
                THUMBPRINT,
            ])
            .arg("--inputs")
            .arg(&p)
            .output()
            .unwrap();
        assert_fails(&out, needle);
    }
}

/// How the fake `docker` and `nitro-cli` behave.
#[derive(Clone, Copy, Default)]
struct Fakes {
    /// `docker run` answers as a production enclave binary does (refuses --mock).
    refuses_mock: bool,
    /// `docker info` fails (no daemon).
    no_daemon: bool,
    /// Each `nitro-cli build-enclave` prints another PCR2 (a build that is not
    /// reproducible).
    pcr2_varies: bool,
}

/// A directory holding stand-ins for `docker` and `nitro-cli`. Both append their
/// arguments to `calls`; `nitro-cli` copies the file given with --metadata to
/// `metadata.json` and prints measurements.
fn fake_build_tools(f: Fakes) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let run = if f.refuses_mock {
        "echo 'agentkeys-enclave: --mock needs a build with the cargo feature `mock`' >&2; exit 2"
    } else {
        "exit 0"
    };
    let info = if f.no_daemon { "exit 1" } else { "exit 0" };
    let docker = format!(
        "#!/bin/sh\necho \"docker $*\" >> \"$(dirname \"$0\")/calls\"\ncase \"$1\" in\n  run) {run} ;;\n  info) {info} ;;\n  *) exit 0 ;;\nesac\n"
    );
    let pcr2 = if f.pcr2_varies {
        "$(wc -l < \"$d/calls\" | tr -d ' ')"
    } else {
        "cc"
    };
    let nitro = format!(
        "#!/bin/sh\nd=\"$(dirname \"$0\")\"\necho \"nitro-cli $*\" >> \"$d/calls\"\nwhile [ $# -gt 0 ]; do\n  if [ \"$1\" = --metadata ]; then cp \"$2\" \"$d/metadata.json\"; fi\n  shift\ndone\nprintf '{{\"Measurements\":{{\"HashAlgorithm\":\"Sha384 {{ ... }}\",\"PCR0\":\"aa\",\"PCR1\":\"bb\",\"PCR2\":\"%s\"}}}}\\n' \"{pcr2}\"\n"
    );
    for (name, body) in [("docker", docker.as_str()), ("nitro-cli", nitro.as_str())] {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        let mut perm = std::fs::metadata(&p).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&p, perm).unwrap();
    }
    dir
}

/// build-eif.sh with the fake tools first on PATH, reading `inputs`, plus `extra` flags.
fn build_eif_with(tools: &tempfile::TempDir, inputs: &std::path::Path, extra: &[&str]) -> Output {
    let out_dir = tools.path().join("out");
    let path = format!(
        "{}:{}",
        tools.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("bash")
        .arg(script("build-eif.sh"))
        .args([
            "--issuer",
            "https://i.example.com",
            "--kms-key-arn",
            PINNED_KEY,
            "--session-key-thumbprint",
            THUMBPRINT,
            "--tag",
            "agentkeys-enclave:test",
        ])
        .arg("--inputs")
        .arg(inputs)
        .arg("--output")
        .arg(out_dir.join("e.eif"))
        .arg("--measurements")
        .arg(out_dir.join("m.json"))
        .args(extra)
        .env("PATH", path)
        .env("TMPDIR", tools.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn calls(tools: &tempfile::TempDir) -> String {
    std::fs::read_to_string(tools.path().join("calls")).unwrap_or_default()
}

#[test]
fn build_eif_packs_only_a_binary_that_refuses_mock() {
    let tools = fake_build_tools(Fakes::default());
    let inputs = inputs_copy(tools.path(), &test_digest('a'));
    let out = build_eif_with(&tools, &inputs, &[]);
    assert_fails(&out, "accepts --mock");
    assert!(!tools.path().join("out/e.eif").exists() && !tools.path().join("out/m.json").exists());

    let tools = fake_build_tools(Fakes {
        refuses_mock: true,
        ..Fakes::default()
    });
    let inputs = inputs_copy(tools.path(), &test_digest('a'));
    let out = build_eif_with(&tools, &inputs, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("refuses --mock"),
        "{}",
        text(&out.stderr)
    );
    let calls = calls(&tools);
    assert!(
        calls.contains(&format!("KMS_KEY_ARN={PINNED_KEY}")),
        "{calls}"
    );
    assert!(calls.contains("AUTH_MODES=signed-session"), "{calls}");
    assert!(
        calls.contains(&format!("SESSION_KEYS={THUMBPRINT}")),
        "{calls}"
    );
    assert!(
        calls.contains(
            "run --rm --network none --entrypoint /agentkeys-enclave agentkeys-enclave:test --mock"
        ),
        "{calls}"
    );
}

#[test]
fn build_eif_takes_every_input_from_the_inputs_file_and_records_it() {
    let tools = fake_build_tools(Fakes {
        refuses_mock: true,
        ..Fakes::default()
    });
    let digest = test_digest('d');
    let inputs = inputs_copy(tools.path(), &digest);
    let out = build_eif_with(&tools, &inputs, &[]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("overridden"), "{stderr}");
    let calls = calls(&tools);
    // Each input reaches docker build as the build argument eif/Dockerfile reads.
    for key in [
        "RUST_IMAGE",
        "RUST_IMAGE_DIGEST",
        "RUST_TOOLCHAIN",
        "RUST_TARGET",
        "ENCLAVE_RUSTFLAGS",
        "APK_PACKAGES",
        "SOURCE_DATE_EPOCH",
    ] {
        let arg = format!("--build-arg {key}={}", input_value(&inputs, key));
        assert!(calls.contains(&arg), "{arg:?} not in {calls}");
    }
    assert!(
        calls.contains(&format!("RUST_IMAGE_DIGEST={digest}")),
        "{calls}"
    );
    // The EIF's metadata names the inputs file by its hash and the source commit.
    assert!(
        calls.contains("nitro-cli build-enclave --docker-uri agentkeys-enclave:test"),
        "{calls}"
    );
    assert!(calls.contains(" --metadata "), "{calls}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tools.path().join("metadata.json")).unwrap())
            .unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&inputs).unwrap()))
    };
    assert_eq!(
        meta["agentkeys_build_inputs_sha256"],
        sha.as_str(),
        "{meta}"
    );
    assert_eq!(
        meta["agentkeys_build_inputs"],
        inputs.display().to_string().as_str(),
        "{meta}"
    );
    assert_eq!(meta["agentkeys_build_overrides"], serde_json::json!([]));
    let head = Command::new("git")
        .arg("-C")
        .arg(repo())
        .args(["rev-parse", "HEAD"])
        .output();
    if let Some(h) = head.ok().filter(|h| h.status.success()) {
        assert_eq!(
            meta["agentkeys_source_commit"],
            text(&h.stdout).trim(),
            "{meta}"
        );
    }
    assert!(stderr.contains("built from:"), "{stderr}");
}

#[test]
fn build_eif_overrides_warn_and_are_recorded() {
    let tools = fake_build_tools(Fakes {
        refuses_mock: true,
        ..Fakes::default()
    });
    let inputs = inputs_copy(tools.path(), &test_digest('a'));
    let other = test_digest('e');
    let out = build_eif_with(
        &tools,
        &inputs,
        &["--rust-image-digest", &other, "--source-date-epoch", "7"],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("build inputs overridden on the command line")
            && stderr.contains("its PCRs will not match"),
        "{stderr}"
    );
    let calls = calls(&tools);
    assert!(
        calls.contains(&format!("RUST_IMAGE_DIGEST={other}")),
        "{calls}"
    );
    assert!(calls.contains("SOURCE_DATE_EPOCH=7"), "{calls}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tools.path().join("metadata.json")).unwrap())
            .unwrap();
    assert_eq!(
        meta["agentkeys_build_overrides"],
        serde_json::json!([format!("RUST_IMAGE_DIGEST={other}"), "SOURCE_DATE_EPOCH=7"])
    );
    // A new image tag without its digest is refused: the file's digest is another tag's.
    let out = build_eif_with(&tools, &inputs, &["--rust-image", "rust:1.99.0-alpine"]);
    assert_fails(&out, "--rust-image needs --rust-image-digest too");
}

#[test]
fn check_reproducible_skips_without_a_docker_daemon() {
    let tools = fake_build_tools(Fakes {
        refuses_mock: true,
        no_daemon: true,
        ..Fakes::default()
    });
    let inputs = inputs_copy(tools.path(), &test_digest('a'));
    let out = build_eif_with(&tools, &inputs, &["--check-reproducible"]);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("SKIPPED") && stdout.contains("cannot reach the Docker daemon"),
        "{stdout}"
    );
    assert!(!calls(&tools).contains("docker build"), "{}", calls(&tools));
    // A bad input is still an error, not a skip.
    let out = build_eif_with(
        &tools,
        &inputs,
        &["--check-reproducible", "--rust-image-digest", "latest"],
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn check_reproducible_builds_twice_without_cache_and_compares() {
    let tools = fake_build_tools(Fakes {
        refuses_mock: true,
        ..Fakes::default()
    });
    let inputs = inputs_copy(tools.path(), &test_digest('a'));
    let out = build_eif_with(&tools, &inputs, &["--check-reproducible"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("REPRODUCIBLE: two clean builds"),
        "{stdout}"
    );
    for i in 0..3 {
        assert!(stdout.contains(&format!("PCR{i} equal:")), "{stdout}");
    }
    let calls = calls(&tools);
    let builds: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("docker build"))
        .collect();
    assert_eq!(builds.len(), 2, "{calls}");
    for (n, b) in builds.iter().enumerate() {
        assert!(b.contains("--no-cache --pull"), "{b}");
        assert!(
            b.contains(&format!("--tag agentkeys-enclave:test-repro{}", n + 1)),
            "{b}"
        );
    }
    // The first image is removed before the second build starts.
    let rm1 = calls
        .find("docker image rm --force agentkeys-enclave:test-repro1\n")
        .unwrap();
    let build2 = calls.find("--tag agentkeys-enclave:test-repro2").unwrap();
    let last_rm1 = calls
        .rfind("docker image rm --force agentkeys-enclave:test-repro1\n")
        .unwrap();
    assert!(rm1 < build2 && last_rm1 < build2, "{calls}");
    assert_eq!(calls.matches("nitro-cli build-enclave").count(), 2);

    let tools = fake_build_tools(Fakes {
        refuses_mock: true,
        pcr2_varies: true,
        ..Fakes::default()
    });
    let inputs = inputs_copy(tools.path(), &test_digest('a'));
    let out = build_eif_with(&tools, &inputs, &["--check-reproducible"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("NOT REPRODUCIBLE")
            && stdout.contains("PCR2 DIFFERS")
            && stdout.contains("PCR0 equal")
            && stdout.contains("PCR1 equal"),
        "{stdout}"
    );
}

#[test]
fn build_eif_names_the_missing_tool() {
    let digest = test_digest('a');
    // Absolute path to bash: the child's PATH holds nothing.
    let bash_path = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("bash"))
                .find(|b| b.is_file())
        })
        .unwrap();
    let out = Command::new(bash_path)
        .arg(script("build-eif.sh"))
        .args([
            "--issuer",
            "https://i.example.com",
            "--kms-key-arn",
            PINNED_KEY,
            "--session-key-thumbprint",
            THUMBPRINT,
            "--rust-image-digest",
            &digest,
        ])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_fails(&out, "docker not found");
}

/// update-eif-inputs.sh on a copy of the committed inputs file, with the fake tools (or
/// none) first on PATH.
fn update_inputs(
    inputs: &std::path::Path,
    tools: Option<&std::path::Path>,
    args: &[&str],
) -> Output {
    let mut path = std::env::var("PATH").unwrap_or_default();
    if let Some(t) = tools {
        path = format!("{}:{path}", t.display());
    }
    Command::new("bash")
        .arg(script("update-eif-inputs.sh"))
        .arg("--inputs")
        .arg(inputs)
        .args(args)
        .env("PATH", path)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn update_inputs_rewrites_only_the_named_values() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = inputs_copy(dir.path(), &test_digest('0'));
    let before = std::fs::read_to_string(&inputs).unwrap();
    let digest = test_digest('1');
    let out = update_inputs(&inputs, None, &["--digest", &digest]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = std::fs::read_to_string(&inputs).unwrap();
    let changed: Vec<(&str, &str)> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(before.lines().count(), after.lines().count());
    assert_eq!(
        changed,
        vec![(
            "RUST_IMAGE_DIGEST=sha256:0000000000000000000000000000000000000000000000000000000000000000",
            format!("RUST_IMAGE_DIGEST={digest}").as_str()
        )]
    );
    assert!(text(&out.stdout).contains(&format!("+RUST_IMAGE_DIGEST={digest}")));

    // --dry-run shows the change and keeps the file.
    let out = update_inputs(&inputs, None, &["--source-date-epoch", "9", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("+SOURCE_DATE_EPOCH=9"));
    assert_eq!(std::fs::read_to_string(&inputs).unwrap(), after);

    // Pinned package versions are written quoted and read back.
    let out = update_inputs(
        &inputs,
        None,
        &["--apk-packages", "musl-dev=1.2.5-r10 gcc=14.2.0-r6"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        input_value(&inputs, "APK_PACKAGES"),
        "musl-dev=1.2.5-r10 gcc=14.2.0-r6"
    );
    assert!(std::fs::read_to_string(&inputs)
        .unwrap()
        .contains("APK_PACKAGES=\"musl-dev=1.2.5-r10 gcc=14.2.0-r6\""));
}

#[test]
fn update_inputs_refuses_bad_or_stale_values() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = inputs_copy(dir.path(), &test_digest('a'));
    let before = std::fs::read_to_string(&inputs).unwrap();
    for (args, needle) in [
        (vec!["--digest", "sha256:abc"], "is not sha256:"),
        (vec!["--digest", &test_digest('0')], "placeholder"),
        (
            vec!["--rust-toolchain", "1.99.0"],
            "give its digest with --resolve or --digest",
        ),
        (
            vec!["--rust-toolchain", "1.80.0", "--digest", &test_digest('b')],
            "older than the workspace's rust-version",
        ),
        (vec!["--apk-packages", "gcc"], "not name=exact-version"),
        (vec!["--source-date-epoch", "yesterday"], "not a number"),
        (vec![], "nothing to change"),
    ] {
        let out = update_inputs(&inputs, None, &args);
        assert_fails(&out, needle);
        assert_eq!(
            std::fs::read_to_string(&inputs).unwrap(),
            before,
            "{args:?}"
        );
    }
    // --resolve needs docker buildx; the fake docker has none that prints a digest.
    let tools = tempfile::tempdir().unwrap();
    let docker = tools.path().join("docker");
    std::fs::write(&docker, "#!/bin/sh\nexit 1\n").unwrap();
    let mut perm = std::fs::metadata(&docker).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&docker, perm).unwrap();
    let out = update_inputs(&inputs, Some(tools.path()), &["--resolve"]);
    assert_fails(&out, "buildx");
    assert_eq!(std::fs::read_to_string(&inputs).unwrap(), before);
}

#[test]
fn update_inputs_resolves_a_new_toolchain_through_buildx() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = inputs_copy(dir.path(), &test_digest('a'));
    let resolved = test_digest('c');
    let tools = tempfile::tempdir().unwrap();
    let docker = tools.path().join("docker");
    // What `docker buildx imagetools inspect <tag>` prints: the index digest first, then
    // one per platform.
    std::fs::write(
        &docker,
        format!(
            "#!/bin/sh\necho \"docker $*\" >> \"$(dirname \"$0\")/calls\"\ncase \"$*\" in\n  'buildx version') echo 'github.com/docker/buildx v0.20.0' ;;\n  'buildx imagetools inspect rust:1.99.0-alpine') printf 'Name:      docker.io/library/rust:1.99.0-alpine\\nMediaType: application/vnd.oci.image.index.v1+json\\nDigest:    {resolved}\\n\\nManifests:\\n  Name:      docker.io/library/rust:1.99.0-alpine@{other}\\n' ;;\n  *) exit 1 ;;\nesac\n",
            other = test_digest('f')
        ),
    )
    .unwrap();
    let mut perm = std::fs::metadata(&docker).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&docker, perm).unwrap();
    let out = update_inputs(
        &inputs,
        Some(tools.path()),
        &["--rust-toolchain", "1.99.0", "--resolve"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(input_value(&inputs, "RUST_TOOLCHAIN"), "1.99.0");
    assert_eq!(input_value(&inputs, "RUST_IMAGE"), "rust:1.99.0-alpine");
    assert_eq!(input_value(&inputs, "RUST_IMAGE_DIGEST"), resolved);
}

#[test]
fn every_script_parses_and_passes_shellcheck_when_available() {
    let dir = repo().join("scripts");
    let mut files = vec![];
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "sh") {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 5, "{files:?}");
    for f in &files {
        let out = Command::new("bash").arg("-n").arg(f).output().unwrap();
        assert!(
            out.status.success(),
            "bash -n {}: {}",
            f.display(),
            text(&out.stderr)
        );
    }
    match Command::new("shellcheck").arg("--version").output() {
        Ok(o) if o.status.success() => {
            let out = Command::new("shellcheck")
                .args(["--external-sources", "--source-path=SCRIPTDIR"])
                .args(&files)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out.stdout));
        }
        _ => eprintln!(
            "shellcheck not installed: only bash -n was run (scripts/check-scripts.sh installs it)"
        ),
    }
}

/// The ACME directory tests use (Let's Encrypt's production directory).
const ACME: &str = "https://acme-v02.api.letsencrypt.org/directory";

fn with_acme(extra: &[&'static str]) -> Vec<&'static str> {
    let mut f = valid_flags();
    f.extend(["--acme-directory", ACME]);
    f.extend_from_slice(extra);
    f
}

/// With `--acme-directory` the setup lets the enclave reach the CA (allowlist entry and a
/// proxy unit for its host) and has the broker relay the issuer hostname to the enclave's
/// TLS; the mint API moves off port 443. Without it, none of that is written.
#[test]
fn setup_with_an_acme_directory_relays_the_issuer_host_to_the_enclave() {
    let out = bash("setup-parent-host.sh", &with_acme(&[]));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    for needle in [
        "- {address: acme-v02.api.letsencrypt.org, port: 443}",
        "ExecStart=/usr/bin/vsock-proxy 8002 acme-v02.api.letsencrypt.org 443",
        "[dry-run] systemctl enable --now agentkeys-vsock-proxy-acme.service",
        "BROKER_ISSUER_LISTEN=0.0.0.0:443",
        "BROKER_ENCLAVE_TLS=vsock:16:5001",
        "BROKER_BIND=0.0.0.0:8443",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "issuer relay       0.0.0.0:443 -> enclave vsock:16:5001",
    ] {
        assert!(stdout.contains(needle), "plan lacks {needle:?}:\n{stdout}");
    }

    let out = bash("setup-parent-host.sh", &valid_flags());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(stdout.contains("BROKER_BIND=0.0.0.0:443"), "{stdout}");
    for absent in [
        "agentkeys-vsock-proxy-acme",
        "BROKER_ISSUER_LISTEN",
        "BROKER_ENCLAVE_TLS",
        "issuer relay",
        "letsencrypt",
    ] {
        assert!(!stdout.contains(absent), "plan has {absent:?}:\n{stdout}");
    }
}

/// The relay follows the enclave's CID and the chosen addresses; with both listeners on
/// high ports the broker gets no capability, and an issuer port other than 443 is warned.
#[test]
fn setup_issuer_listen_takes_the_cid_addresses_and_ports_given() {
    let out = bash(
        "setup-parent-host.sh",
        &with_acme(&[
            "--enclave-cid",
            "20",
            "--issuer-listen",
            "10.0.0.5:443",
            "--bind",
            "10.0.0.6:443",
        ]),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    for needle in [
        "BROKER_ISSUER_LISTEN=10.0.0.5:443",
        "BROKER_BIND=10.0.0.6:443",
        "BROKER_ENCLAVE_TLS=vsock:20:5001",
        "BROKER_ENCLAVE_ADDR=vsock:20:5000",
    ] {
        assert!(stdout.contains(needle), "plan lacks {needle:?}:\n{stdout}");
    }

    let out = bash(
        "setup-parent-host.sh",
        &with_acme(&["--issuer-listen", "0.0.0.0:4443", "--bind", "0.0.0.0:8443"]),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        !stdout.contains("CAP_NET_BIND_SERVICE"),
        "no listener below 1024 needs no capability:\n{stdout}"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "--issuer-listen port 4443: AWS STS fetches the issuer's documents on port 443"
        ),
        "{stderr}"
    );
}

#[test]
fn setup_refuses_bad_acme_and_relay_values() {
    let cases: [(&[&'static str], &str); 10] = [
        (
            &["--acme-directory", "http://acme.example.com/directory"],
            "--acme-directory: ACME directory 'http://acme.example.com/directory' must start with https://",
        ),
        (
            &["--acme-directory", "https://acme.example.com/dir?x=1"],
            "must not contain a query",
        ),
        (
            &["--acme-directory", "https://acme.example.com:14000/dir"],
            "must use port 443",
        ),
        (
            &["--acme-directory", "https://10.0.0.1/dir"],
            "is not a DNS name",
        ),
        (
            &["--acme-directory", ACME, "--acme-proxy-port", "8001"],
            "--acme-proxy-port must differ from --kms-proxy-port (8001)",
        ),
        (
            &["--acme-directory", ACME, "--acme-proxy-port", "80"],
            "--acme-proxy-port must be 1024..65535",
        ),
        (
            &["--acme-directory", ACME, "--bind", "0.0.0.0:443"],
            "--issuer-listen 0.0.0.0:443 and --bind 0.0.0.0:443 both take port 443",
        ),
        (
            &[
                "--acme-directory",
                ACME,
                "--issuer-listen",
                "10.0.0.5:8443",
            ],
            "--issuer-listen 10.0.0.5:8443 and --bind 0.0.0.0:8443 both take port 8443",
        ),
        (
            &["--acme-directory", ACME, "--issuer-listen", "issuer:443"],
            "--issuer-listen 'issuer:443' must be IP:PORT",
        ),
        (
            &["--issuer-listen", "0.0.0.0:443"],
            "--issuer-listen needs --acme-directory",
        ),
    ];
    for (extra, needle) in cases {
        let mut f = valid_flags();
        f.extend_from_slice(extra);
        let out = bash("setup-parent-host.sh", &f);
        assert_fails(&out, needle);
        assert!(
            !text(&out.stdout).contains("[dry-run]"),
            "{extra:?} refused only after the plan ran:\n{}",
            text(&out.stdout)
        );
    }
}

/// `--acme-directory` goes into the image as the build argument eif/Dockerfile reads
/// (measured with the rest); a URL the enclave could not use is refused before anything is
/// built.
#[test]
fn build_eif_checks_the_acme_directory_and_passes_it_into_the_image() {
    let digest = test_digest('a');
    for (bad, names) in [
        (
            "http://acme.example.com/directory",
            "must start with https://",
        ),
        ("https://acme.example.com:14000/dir", "must use port 443"),
        ("https://user@acme.example.com/dir", "user info"),
        ("https://acme/dir", "is not a DNS name"),
    ] {
        let args = [
            "--issuer",
            "https://i.example.com",
            "--kms-key-arn",
            PINNED_KEY,
            "--session-key-thumbprint",
            THUMBPRINT,
            "--rust-image-digest",
            &digest,
            "--acme-directory",
            bad,
        ];
        assert_fails(&bash("build-eif.sh", &args), names);
    }

    // The calls a successful build with the fake tools makes, given `extra` flags.
    let build_calls = |extra: &[&str]| {
        let tools = fake_build_tools(Fakes {
            refuses_mock: true,
            ..Fakes::default()
        });
        let inputs = inputs_copy(tools.path(), &digest);
        let out = build_eif_with(&tools, &inputs, extra);
        assert!(out.status.success(), "{}", text(&out.stderr));
        calls(&tools)
    };
    let made = build_calls(&["--acme-directory", ACME]);
    assert!(
        made.contains(&format!("--build-arg ACME_DIRECTORY={ACME} ")),
        "{made}"
    );
    let made = build_calls(&[]);
    assert!(
        made.contains("--build-arg ACME_DIRECTORY= "),
        "without --acme-directory the image terminates no issuer TLS: {made}"
    );
}
