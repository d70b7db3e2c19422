//! `mock-nsm kms` driven by the `aws` CLI (skipped with a notice when `aws` is absent).

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use agentkeys_mock_nsm::MockNsm;
use base64::Engine as _;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(state: &Path) -> (Server, String) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_mock-nsm"))
        .args(["kms", "--listen", &format!("127.0.0.1:{port}"), "--state"])
        .arg(state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mock-nsm kms did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, format!("http://127.0.0.1:{port}"))
}

fn aws(dir: &Path, url: &str, args: &[&str]) -> Output {
    Command::new("aws")
        .args(["kms"])
        .args(args)
        .args([
            "--endpoint-url",
            url,
            "--region",
            "us-east-1",
            "--output",
            "json",
        ])
        .env("AWS_ACCESS_KEY_ID", "AKIDMOCK")
        .env("AWS_SECRET_ACCESS_KEY", "mock-secret")
        .env("AWS_CONFIG_FILE", dir.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("no-credentials"))
        .env_remove("AWS_PROFILE")
        .env("AWS_MAX_ATTEMPTS", "1")
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "aws failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn aws_cli_generate_data_key_decrypt_and_recipient() {
    if !Command::new("aws")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        println!("NOTICE: `aws` CLI not on PATH; aws CLI test skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start(&dir.path().join("state.json"));
    let b64 = base64::engine::general_purpose::STANDARD;

    let gdk = json(&aws(
        dir.path(),
        &url,
        &[
            "generate-data-key",
            "--key-id",
            "alias/x",
            "--key-spec",
            "AES_256",
            "--encryption-context",
            "purpose=test",
        ],
    ));
    let plaintext = b64.decode(gdk["Plaintext"].as_str().unwrap()).unwrap();
    assert_eq!(plaintext.len(), 32);
    let blob_path = dir.path().join("blob.bin");
    std::fs::write(
        &blob_path,
        b64.decode(gdk["CiphertextBlob"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let blob_arg = format!("fileb://{}", blob_path.display());

    let dec = json(&aws(
        dir.path(),
        &url,
        &[
            "decrypt",
            "--ciphertext-blob",
            &blob_arg,
            "--encryption-context",
            "purpose=test",
        ],
    ));
    assert_eq!(
        b64.decode(dec["Plaintext"].as_str().unwrap()).unwrap(),
        plaintext
    );
    assert_eq!(dec["KeyId"], gdk["KeyId"]);

    // Wrong context: KMS's error code surfaces in the CLI's message.
    let bad = aws(
        dir.path(),
        &url,
        &[
            "decrypt",
            "--ciphertext-blob",
            &blob_arg,
            "--encryption-context",
            "purpose=other",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("InvalidCiphertextException"));

    // Recipient: a mock document with an RSA key. A nested binary blob can only be passed
    // by AWS CLI v2 (base64 in JSON); v1 sends nested blobs as UTF-8 text, which cannot
    // carry a CBOR document, so with v1 only the refusal path is exercised.
    let key =
        aws_lc_rs::rsa::PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let spki = aws_lc_rs::encoding::AsDer::as_der(&key.public_key())
        .unwrap()
        .as_ref()
        .to_vec();
    let doc = MockNsm::default().attest(None, None, Some(spki)).unwrap();
    let version = Command::new("aws").arg("--version").output().unwrap();
    let version = format!(
        "{}{}",
        String::from_utf8_lossy(&version.stdout),
        String::from_utf8_lossy(&version.stderr)
    );
    if version.starts_with("aws-cli/1.") {
        let bad = aws(
            dir.path(),
            &url,
            &[
                "generate-data-key",
                "--key-id",
                "alias/x",
                "--key-spec",
                "AES_256",
                "--recipient",
                "AttestationDocument=not-a-document,KeyEncryptionAlgorithm=RSAES_OAEP_SHA_256",
            ],
        );
        assert!(!bad.status.success());
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert!(
            stderr.contains("ValidationException") && stderr.contains("check"),
            "{stderr}"
        );
        println!("NOTICE: {} cannot send a binary Recipient.AttestationDocument; recipient success path covered by the aws-sdk-kms tests", version.trim());
        return;
    }
    let recipient = serde_json::json!({
        "AttestationDocument": b64.encode(&doc),
        "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
    })
    .to_string();
    let out = json(&aws(
        dir.path(),
        &url,
        &[
            "generate-data-key",
            "--key-id",
            "alias/x",
            "--key-spec",
            "AES_256",
            "--cli-binary-format",
            "base64",
            "--recipient",
            &recipient,
        ],
    ));
    assert!(out.get("Plaintext").is_none_or(|p| p.is_null()), "{out}");
    let envelope = b64
        .decode(out["CiphertextForRecipient"].as_str().unwrap())
        .unwrap();
    assert_eq!(&envelope[..2], &[0x30, 0x80], "BER, indefinite length");
}
