//! The KMS stand-in driven by the real `aws-sdk-kms` through an endpoint override.

use std::process::Command;

use agentkeys_mock_nsm::kms::{serve, KmsConfig};
use agentkeys_mock_nsm::{default_boot_pcrs, MockNsm, MockNsmConfig};
use aws_lc_rs::cipher::{DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey, AES_256};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{
    KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA256_MGF1SHA256,
};
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyEncryptionMechanism, RecipientInfo};
use aws_sdk_kms::Client;
use base64::Engine as _;

const CONTEXT: [(&str, &str); 2] = [
    ("agentkeys:purpose", "oidc-issuer-seed"),
    ("agentkeys:issuer", "https://issuer.example"),
];

async fn start(config: KmsConfig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, config));
    format!("http://{addr}")
}

fn client(url: &str) -> Client {
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(Credentials::new(
            "AKIDMOCK",
            "mock-secret",
            None,
            None,
            "test",
        ))
        .endpoint_url(url)
        .build();
    Client::from_conf(config)
}

/// An RSA-2048 key pair: the private key and its SPKI DER.
fn rsa_key() -> (PrivateDecryptingKey, Vec<u8>) {
    let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
    let spki = key.public_key().as_der().unwrap().as_ref().to_vec();
    (key, spki)
}

fn recipient(document: Vec<u8>) -> RecipientInfo {
    RecipientInfo::builder()
        .attestation_document(Blob::new(document))
        .key_encryption_algorithm(KeyEncryptionMechanism::RsaesOaepSha256)
        .build()
}

/// Minimal BER tree (enough for CMS EnvelopedData with indefinite lengths).
#[derive(Debug)]
struct Node {
    tag: u8,
    content: Vec<u8>,
    children: Vec<Node>,
}

fn parse(buf: &[u8]) -> (Node, usize) {
    let tag = buf[0];
    let first = buf[1];
    let (len, mut pos) = if first == 0x80 {
        (None, 2)
    } else if first < 0x80 {
        (Some(first as usize), 2)
    } else {
        let n = (first & 0x7f) as usize;
        let mut len = 0usize;
        for b in &buf[2..2 + n] {
            len = (len << 8) | *b as usize;
        }
        (Some(len), 2 + n)
    };
    let constructed = tag & 0x20 != 0;
    let mut node = Node {
        tag,
        content: Vec::new(),
        children: Vec::new(),
    };
    match (constructed, len) {
        (false, Some(len)) => {
            node.content = buf[pos..pos + len].to_vec();
            (node, pos + len)
        }
        (true, Some(len)) => {
            let end = pos + len;
            while pos < end {
                let (child, used) = parse(&buf[pos..end]);
                node.children.push(child);
                pos += used;
            }
            (node, end)
        }
        (true, None) => {
            while buf[pos..pos + 2] != [0, 0] {
                let (child, used) = parse(&buf[pos..]);
                node.children.push(child);
                pos += used;
            }
            (node, pos + 2)
        }
        (false, None) => panic!("indefinite primitive"),
    }
}

/// Decrypts a CiphertextForRecipient with our RSA key (aws-lc-rs, independent BER walk).
fn open_envelope(key: PrivateDecryptingKey, spki: &[u8], envelope: &[u8]) -> Vec<u8> {
    let (root, used) = parse(envelope);
    assert_eq!(used, envelope.len(), "trailing bytes");
    assert_eq!(root.tag, 0x30);
    assert_eq!(hex::encode(&root.children[0].content), "2a864886f70d010703");
    let enveloped = &root.children[1].children[0];
    assert_eq!(enveloped.children[0].content, [2]);
    let ktri = &enveloped.children[1].children[0];
    assert_eq!(ktri.children[0].content, [2]);
    assert_eq!(ktri.children[1].tag, 0x80);
    assert_eq!(ktri.children[1].content.len(), 32);
    assert_eq!(
        ktri.children[1].content,
        <[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(spki)).to_vec()
    );
    assert_eq!(
        hex::encode(&ktri.children[2].children[0].content),
        "2a864886f70d010107"
    );
    let encrypted_key = &ktri.children[3].content;
    let eci = &enveloped.children[2];
    assert_eq!(hex::encode(&eci.children[0].content), "2a864886f70d010701");
    assert_eq!(
        hex::encode(&eci.children[1].children[0].content),
        "60864801650304012a"
    );
    let iv: [u8; 16] = eci.children[1].children[1]
        .content
        .clone()
        .try_into()
        .unwrap();
    let content_node = &eci.children[2];
    assert_eq!(content_node.tag, 0xa0);
    let mut content: Vec<u8> = content_node
        .children
        .iter()
        .flat_map(|c| c.content.clone())
        .collect();

    let oaep = OaepPrivateDecryptingKey::new(key).unwrap();
    let mut cek = vec![0u8; oaep.min_output_size()];
    let cek = oaep
        .decrypt(&OAEP_SHA256_MGF1SHA256, encrypted_key, &mut cek, None)
        .unwrap()
        .to_vec();
    assert_eq!(cek.len(), 32);
    let aes = PaddedBlockDecryptingKey::cbc_pkcs7(UnboundCipherKey::new(&AES_256, &cek).unwrap())
        .unwrap();
    aes.decrypt(
        &mut content,
        DecryptionContext::Iv128(FixedLength::from(iv)),
    )
    .unwrap()
    .to_vec()
}

#[tokio::test]
async fn generate_data_key_and_decrypt_round_trip() {
    let url = start(KmsConfig::new()).await;
    let kms = client(&url);
    let mut gdk = kms
        .generate_data_key()
        .key_id("alias/agentkeys-dev")
        .key_spec(DataKeySpec::Aes256);
    for (k, v) in CONTEXT {
        gdk = gdk.encryption_context(k, v);
    }
    let out = gdk.send().await.unwrap();
    let plaintext = out.plaintext().unwrap().as_ref().to_vec();
    assert_eq!(plaintext.len(), 32);
    assert!(out.ciphertext_for_recipient().is_none());
    let key_arn = out.key_id().unwrap().to_string();
    assert!(
        key_arn.starts_with("arn:aws:kms:eu-west-1:000000000000:key/"),
        "{key_arn}"
    );
    let blob = out.ciphertext_blob().unwrap().clone();

    let mut dec = kms.decrypt().ciphertext_blob(blob.clone());
    for (k, v) in CONTEXT {
        dec = dec.encryption_context(k, v);
    }
    let out = dec.send().await.unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), plaintext.as_slice());
    assert_eq!(out.key_id().unwrap(), key_arn);

    // Naming the key by alias or by ARN also works.
    for key_id in ["alias/agentkeys-dev", key_arn.as_str()] {
        let mut dec = kms.decrypt().ciphertext_blob(blob.clone()).key_id(key_id);
        for (k, v) in CONTEXT {
            dec = dec.encryption_context(k, v);
        }
        assert_eq!(
            dec.send().await.unwrap().plaintext().unwrap().as_ref(),
            plaintext.as_slice()
        );
    }

    // AES_128 and NumberOfBytes.
    let out = kms
        .generate_data_key()
        .key_id("k2")
        .key_spec(DataKeySpec::Aes128)
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref().len(), 16);
    let out = kms
        .generate_data_key()
        .key_id("k2")
        .number_of_bytes(64)
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref().len(), 64);
    let out = kms
        .generate_random()
        .number_of_bytes(100)
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref().len(), 100);
}

#[tokio::test]
async fn encryption_context_mismatch_is_invalid_ciphertext() {
    let url = start(KmsConfig::new()).await;
    let kms = client(&url);
    let out = kms
        .generate_data_key()
        .key_id("alias/ctx")
        .key_spec(DataKeySpec::Aes256)
        .encryption_context("agentkeys:issuer", "https://a.example")
        .send()
        .await
        .unwrap();
    let blob = out.ciphertext_blob().unwrap().clone();
    for context in [
        vec![("agentkeys:issuer", "https://b.example")],
        vec![],
        vec![("agentkeys:issuer", "https://a.example"), ("extra", "x")],
    ] {
        let mut dec = kms.decrypt().ciphertext_blob(blob.clone());
        for (k, v) in &context {
            dec = dec.encryption_context(*k, *v);
        }
        let err = dec.send().await.unwrap_err().into_service_error();
        assert!(
            err.is_invalid_ciphertext_exception(),
            "{context:?}: {err:?}"
        );
    }
    // Tampered blob.
    let mut bytes = blob.into_inner();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let err = kms
        .decrypt()
        .ciphertext_blob(Blob::new(bytes))
        .encryption_context("agentkeys:issuer", "https://a.example")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_invalid_ciphertext_exception(), "{err:?}");
}

#[tokio::test]
async fn wrong_key_is_refused() {
    let url = start(KmsConfig::new()).await;
    let kms = client(&url);
    let out = kms
        .generate_data_key()
        .key_id("alias/one")
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    let blob = out.ciphertext_blob().unwrap().clone();
    // Create a second key, then name it when decrypting the first key's blob.
    kms.generate_data_key()
        .key_id("alias/two")
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    let err = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .key_id("alias/two")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_incorrect_key_exception(), "{err:?}");
    let err = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .key_id("alias/never-created")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_not_found_exception(), "{err:?}");
    // A different stand-in (other master keys) cannot open it.
    let other = client(&start(KmsConfig::new()).await);
    let err = other
        .decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_invalid_ciphertext_exception(), "{err:?}");
    // Garbage blob.
    let err = kms
        .decrypt()
        .ciphertext_blob(Blob::new(vec![1, 2, 3]))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_invalid_ciphertext_exception(), "{err:?}");
}

#[tokio::test]
async fn state_file_keeps_keys_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("kms-state.json");
    let first = client(&start(KmsConfig::new().state_file(Some(state.clone()))).await);
    let out = first
        .generate_data_key()
        .key_id("alias/dev")
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    let second = client(&start(KmsConfig::new().state_file(Some(state.clone()))).await);
    let dec = second
        .decrypt()
        .ciphertext_blob(out.ciphertext_blob().unwrap().clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        dec.plaintext().unwrap().as_ref(),
        out.plaintext().unwrap().as_ref()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

#[tokio::test]
async fn recipient_gets_ciphertext_for_recipient_only() {
    let url = start(KmsConfig::new().require_pcr0(vec![default_boot_pcrs()[&0].to_vec()])).await;
    let kms = client(&url);
    let nsm = MockNsm::new(MockNsmConfig::default());

    let (key, spki) = rsa_key();
    let doc = nsm.attest(None, None, Some(spki.clone())).unwrap();
    let mut gdk = kms
        .generate_data_key()
        .key_id("alias/seal")
        .key_spec(DataKeySpec::Aes256)
        .recipient(recipient(doc));
    for (k, v) in CONTEXT {
        gdk = gdk.encryption_context(k, v);
    }
    let out = gdk.send().await.unwrap();
    assert!(
        out.plaintext().is_none(),
        "Plaintext must be absent with a Recipient"
    );
    let envelope = out.ciphertext_for_recipient().unwrap().as_ref().to_vec();
    let data_key = open_envelope(key, &spki, &envelope);
    assert_eq!(data_key.len(), 32);

    // Independent CMS implementation: openssl decrypts the same envelope.
    if Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let (key2, spki2) = rsa_key();
        let doc = nsm.attest(None, None, Some(spki2)).unwrap();
        let mut dec = kms
            .decrypt()
            .ciphertext_blob(out.ciphertext_blob().unwrap().clone())
            .recipient(recipient(doc));
        for (k, v) in CONTEXT {
            dec = dec.encryption_context(k, v);
        }
        let dec_out = dec.send().await.unwrap();
        assert!(dec_out.plaintext().is_none());
        let dir = tempfile::tempdir().unwrap();
        let env_path = dir.path().join("env.ber");
        std::fs::write(
            &env_path,
            dec_out.ciphertext_for_recipient().unwrap().as_ref(),
        )
        .unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(key2.as_der().unwrap().as_ref())
        );
        let key_path = dir.path().join("key.pem");
        std::fs::write(&key_path, pem).unwrap();
        let res = Command::new("openssl")
            .args(["cms", "-decrypt", "-inform", "DER", "-in"])
            .arg(&env_path)
            .arg("-inkey")
            .arg(&key_path)
            .output()
            .unwrap();
        assert!(
            res.status.success(),
            "openssl cms: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        assert_eq!(
            res.stdout, data_key,
            "Decrypt with Recipient returns the same data key"
        );
    } else {
        println!("NOTICE: openssl not found; CMS cross-check with openssl skipped");
    }

    // Decrypt with a recipient, decrypted with our own walk.
    let (key3, spki3) = rsa_key();
    let doc = nsm.attest(None, None, Some(spki3.clone())).unwrap();
    let mut dec = kms
        .decrypt()
        .ciphertext_blob(out.ciphertext_blob().unwrap().clone())
        .recipient(recipient(doc));
    for (k, v) in CONTEXT {
        dec = dec.encryption_context(k, v);
    }
    let dec_out = dec.send().await.unwrap();
    assert_eq!(
        open_envelope(
            key3,
            &spki3,
            dec_out.ciphertext_for_recipient().unwrap().as_ref()
        ),
        data_key
    );

    // GenerateRandom with a recipient.
    let (key4, spki4) = rsa_key();
    let doc = nsm.attest(None, None, Some(spki4.clone())).unwrap();
    let rnd = kms
        .generate_random()
        .number_of_bytes(48)
        .recipient(recipient(doc))
        .send()
        .await
        .unwrap();
    assert!(rnd.plaintext().is_none());
    assert_eq!(
        open_envelope(
            key4,
            &spki4,
            rnd.ciphertext_for_recipient().unwrap().as_ref()
        )
        .len(),
        48
    );
}

async fn refused(kms: &Client, document: Vec<u8>) -> (String, String) {
    let err = kms
        .generate_data_key()
        .key_id("alias/seal")
        .key_spec(DataKeySpec::Aes256)
        .recipient(recipient(document))
        .send()
        .await
        .unwrap_err();
    let err = err.into_service_error();
    (
        err.code().unwrap_or("").to_string(),
        err.message().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn recipient_policy_failures_are_access_denied_naming_the_check() {
    let pcr0 = default_boot_pcrs()[&0].to_vec();
    let kms = client(&start(KmsConfig::new().require_pcr0(vec![pcr0])).await);
    let (_, spki) = rsa_key();

    // Debug-mode enclave: PCR0 is zero → the PCR0 policy refuses it... and without a PCR0
    // policy the debug check does.
    let debug = MockNsm::new(MockNsmConfig::default().debug_mode(true));
    let (code, message) =
        refused(&kms, debug.attest(None, None, Some(spki.clone())).unwrap()).await;
    assert_eq!(code, "AccessDeniedException");
    assert!(message.contains("debug_mode"), "{message}");
    let no_pcr_policy = client(&start(KmsConfig::new()).await);
    let (code, message) = refused(
        &no_pcr_policy,
        debug.attest(None, None, Some(spki.clone())).unwrap(),
    )
    .await;
    assert_eq!(code, "AccessDeniedException");
    assert!(message.contains("debug_mode"), "{message}");

    // Another image (wrong PCR0).
    let other = MockNsm::new(MockNsmConfig::default().pcr(0, [0x42; 48]).unwrap());
    let (code, message) =
        refused(&kms, other.attest(None, None, Some(spki.clone())).unwrap()).await;
    assert_eq!(code, "AccessDeniedException");
    assert!(
        message.contains("pcr0") && message.contains(&"42".repeat(48)),
        "{message}"
    );
}

#[tokio::test]
async fn unverifiable_recipient_documents_are_rejected() {
    let kms = client(&start(KmsConfig::new()).await);
    let nsm = MockNsm::default();
    let (_, spki) = rsa_key();

    // A genuine AWS document: its chain ends at the AWS root, not the trusted mock root.
    let aws = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/nitro-attestation/aws-real-2022-07-06.cose"
    ))
    .unwrap();
    let (code, message) = refused(&kms, aws).await;
    assert_eq!(code, "ValidationException");
    assert!(message.contains("certificate_path"), "{message}");

    // A tampered mock document.
    let mut doc = nsm
        .attest(Some(vec![0x77; 32]), None, Some(spki.clone()))
        .unwrap();
    let pos = doc.windows(32).position(|w| w == [0x77; 32]).unwrap();
    doc[pos] ^= 1;
    let (code, message) = refused(&kms, doc).await;
    assert_eq!(code, "ValidationException");
    assert!(message.contains("cose_signature"), "{message}");

    // Garbage.
    let (code, message) = refused(&kms, b"not a document".to_vec()).await;
    assert_eq!(code, "ValidationException");
    assert!(message.contains("check"), "{message}");

    // No public key, or a key that is not RSA.
    let (code, message) = refused(&kms, nsm.attest(None, None, None).unwrap()).await;
    assert_eq!(code, "ValidationException");
    assert!(message.contains("public_key"), "{message}");
    let (code, _) = refused(
        &kms,
        nsm.attest(None, None, Some(vec![0x30, 0x00])).unwrap(),
    )
    .await;
    assert_eq!(code, "ValidationException");

    // A stale document (older than the age limit).
    let old = MockNsm::new(MockNsmConfig::default().clock(std::sync::Arc::new(|| {
        agentkeys_mock_nsm::Clock::now_unix_ms(&agentkeys_mock_nsm::SystemClock) - 3_600_000
    })));
    let (code, message) = refused(&kms, old.attest(None, None, Some(spki)).unwrap()).await;
    assert_eq!(code, "AccessDeniedException");
    assert!(message.contains("freshness"), "{message}");
}
