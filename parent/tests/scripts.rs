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
    let out = Command::new("bash")
        .arg(script("build-eif.sh"))
        .args([
            "--issuer",
            "https://i.example.com",
            "--kms-key-arn",
            PINNED_KEY,
        ])
        .env_remove("RUST_IMAGE_DIGEST")
        .output()
        .unwrap();
    assert_fails(&out, "must be pinned");
    let out = bash(
        "build-eif.sh",
        &[
            "--issuer",
            "https://i.example.com",
            "--kms-key-arn",
            PINNED_KEY,
            "--rust-image-digest",
            "latest",
        ],
    );
    assert_fails(&out, "not sha256:");
}

#[test]
fn build_eif_pins_exactly_one_kms_key_arn() {
    let digest = format!("sha256:{}", "a".repeat(64));
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

/// A directory holding stand-ins for `docker` and `nitro-cli`: `docker run` answers as
/// an enclave binary would (`refuses_mock`: as a production build), and `nitro-cli`
/// prints measurements.
fn fake_build_tools(refuses_mock: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let run = if refuses_mock {
        "echo 'agentkeys-enclave: --mock needs a build with the cargo feature `mock`' >&2; exit 2"
    } else {
        "exit 0"
    };
    let docker = format!(
        "#!/bin/sh\necho \"docker $*\" >> \"$(dirname \"$0\")/calls\"\ncase \"$1\" in\n  run) {run} ;;\n  *) exit 0 ;;\nesac\n"
    );
    let nitro = "#!/bin/sh\nprintf '{\"Measurements\":{\"HashAlgorithm\":\"Sha384 { ... }\",\"PCR0\":\"aa\",\"PCR1\":\"bb\",\"PCR2\":\"cc\"}}\\n'\n";
    for (name, body) in [("docker", docker.as_str()), ("nitro-cli", nitro)] {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        let mut perm = std::fs::metadata(&p).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&p, perm).unwrap();
    }
    dir
}

fn build_eif_with(tools: &tempfile::TempDir) -> Output {
    let digest = format!("sha256:{}", "a".repeat(64));
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
        ])
        .args([
            "--rust-image-digest",
            &digest,
            "--tag",
            "agentkeys-enclave:test",
        ])
        .arg("--output")
        .arg(out_dir.join("e.eif"))
        .arg("--measurements")
        .arg(out_dir.join("m.json"))
        .env("PATH", path)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn build_eif_packs_only_a_binary_that_refuses_mock() {
    let tools = fake_build_tools(false);
    let out = build_eif_with(&tools);
    assert_fails(&out, "accepts --mock");
    assert!(!tools.path().join("out/e.eif").exists() && !tools.path().join("out/m.json").exists());

    let tools = fake_build_tools(true);
    let out = build_eif_with(&tools);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("refuses --mock"),
        "{}",
        text(&out.stderr)
    );
    let calls = std::fs::read_to_string(tools.path().join("calls")).unwrap();
    assert!(
        calls.contains(&format!("KMS_KEY_ARN={PINNED_KEY}")),
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
fn build_eif_names_the_missing_tool() {
    let digest = format!("sha256:{}", "a".repeat(64));
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
            "--rust-image-digest",
            &digest,
        ])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_fails(&out, "docker not found");
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
