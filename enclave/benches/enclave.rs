//! Enclave hot-path and unseal costs: ES256 signing with the enclave's signer (aws-lc-rs)
//! next to pure-Rust `p256`, JWT build + sign, the audit chain append, and the unseal
//! steps that run inside the enclave (RSA-2048 recipient key generation, BER/CMS unwrap
//! of a KMS-style `CiphertextForRecipient`, key ring derivation), and the cost of deciding
//! whose token to sign: a session seen for the first time (ES256 verification) against a
//! cached one (a lookup). Unseal target: ≤ 500 ms excluding the KMS round trip.

use agentkeys_enclave::audit::{AuditChain, AuditError};
use agentkeys_enclave::authz::nonce::NonceBook;
use agentkeys_enclave::authz::{session, AuthPolicy, Authorizer};
use agentkeys_enclave::cms::{parse_enveloped_data, unwrap_ciphertext_for_recipient, RecipientKey};
use agentkeys_enclave::jwt::{mint, MintParams, TokenPolicy};
use agentkeys_enclave::keys::{derive_secret, KeyRing, RingSpec, Seed, SigningKey};
use aws_lc_rs::rand::SystemRandom;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use p256::ecdsa::signature::Signer;

const WALLET: &str = "0x00000000000000000000000000000000be7c0001";

fn seed() -> Seed {
    Seed::from_slice(&[0x5e; 32]).unwrap()
}

/// A JWT signing input of realistic size (≈ 560 bytes).
fn signing_input() -> Vec<u8> {
    let key = SigningKey::derive(&seed(), 1).unwrap();
    let policy = TokenPolicy::with_defaults("https://broker.example.com").unwrap();
    let params = MintParams {
        wallet: WALLET,
        ttl_seconds: None,
        audience: None,
        ..Default::default()
    };
    let minted = mint(
        &policy,
        &key,
        &params,
        1_700_000_000,
        &SystemRandom::new(),
        (u64::MAX, 1),
    )
    .unwrap();
    let (input, _) = minted.jwt.rsplit_once('.').unwrap();
    input.as_bytes().to_vec()
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../fixtures/kms-recipient/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn bench_sign(c: &mut Criterion) {
    let msg = signing_input();
    let mut g = c.benchmark_group("es256_sign");
    let key = SigningKey::derive(&seed(), 1).unwrap();
    g.bench_function("enclave_signer_aws_lc_rs", |b| {
        b.iter(|| key.sign(black_box(&msg)).unwrap())
    });
    let secret = derive_secret(&seed(), 1).unwrap();
    let rc = p256::ecdsa::SigningKey::from(&secret);
    g.bench_function("p256_rustcrypto", |b| {
        b.iter(|| -> p256::ecdsa::Signature { rc.sign(black_box(&msg)) })
    });
    g.finish();
}

fn bench_jwt(c: &mut Criterion) {
    let key = SigningKey::derive(&seed(), 1).unwrap();
    let policy = TokenPolicy::with_defaults("https://broker.example.com").unwrap();
    let rng = SystemRandom::new();
    let params = MintParams {
        wallet: WALLET,
        ttl_seconds: Some(300),
        audience: None,
        ..Default::default()
    };
    let chain = AuditChain::new(7);
    let mut g = c.benchmark_group("jwt");
    g.bench_function("build_and_sign", |b| {
        b.iter(|| {
            mint(
                &policy,
                &key,
                black_box(&params),
                1_700_000_000,
                &rng,
                (7, 1),
            )
            .unwrap()
        })
    });
    g.bench_function("audit_chain_append", |b| {
        b.iter(|| {
            chain
                .append_with(|_, _| Ok::<_, AuditError>(()), |_| black_box([3u8; 32]))
                .unwrap()
        })
    });
    g.finish();
}

fn bench_unseal_steps(c: &mut Criterion) {
    let mut g = c.benchmark_group("unseal");
    let ber = fixture("openssl-oaep-aes256cbc-indefinite.ber");
    let der = fixture("openssl-oaep-aes256cbc-definite.der");
    let kms = fixture("enveloped-aes256cbc.ber");
    let pem = String::from_utf8(fixture("openssl-test-rsa2048-key.pem")).unwrap();
    let key = RecipientKey::from_pkcs8_pem(&pem).unwrap();
    assert_eq!(
        unwrap_ciphertext_for_recipient(&ber, &key).unwrap().len(),
        32
    );
    g.bench_function("cms_parse/kms_ber", |b| {
        b.iter(|| parse_enveloped_data(black_box(&kms)).unwrap())
    });
    g.bench_function("cms_unwrap/openssl_indefinite_ber", |b| {
        b.iter(|| unwrap_ciphertext_for_recipient(black_box(&ber), &key).unwrap())
    });
    g.bench_function("cms_unwrap/openssl_definite_der", |b| {
        b.iter(|| unwrap_ciphertext_for_recipient(black_box(&der), &key).unwrap())
    });
    g.bench_function("key_ring_derive", |b| {
        b.iter(|| KeyRing::derive(&seed(), RingSpec::default()).unwrap())
    });
    // RSA-2048 generation is slow and variable: a few samples are enough.
    g.sample_size(10);
    g.bench_function("rsa2048_recipient_key_generate", |b| {
        b.iter(|| RecipientKey::generate().unwrap())
    });
    g.finish();
}

/// A session token the way a session backend signs one (ES256, its key in the header),
/// issued at `now`, and the key's thumbprint.
fn session_token(n: u32, now: u64) -> (String, String) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let key = p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap();
    let point = key.verifying_key().to_encoded_point(false);
    let (x, y) = (
        URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    );
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT",
        "jwk": {"kty": "EC", "crv": "P-256", "x": x, "y": y}});
    let claims = serde_json::json!({"sub": WALLET, "aud": "https://broker.example.com",
        "iat": now, "exp": now + 3600, "jti": format!("s{n}")});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
    (
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes())),
        session::thumbprint(&x, &y),
    )
}

fn bench_authorize(c: &mut Criterion) {
    let now = 1_700_000_000;
    let (token, thumbprint) = session_token(0, now);
    let policy = AuthPolicy::new(
        &["signed-session".to_string()],
        &[thumbprint],
        "https://broker.example.com",
    )
    .unwrap();
    let nonces = NonceBook::new(&[1; 32]);
    let request = |token: &str| agentkeys_wire::MintJwtRequest {
        wallet: String::new(),
        ttl_seconds: None,
        audience: None,
        proof: Some(agentkeys_wire::WalletProof::Session(token.to_string())),
    };
    let mut g = c.benchmark_group("authorize");
    // First mint on a session: a fresh authorizer each time, so the ES256 verification runs.
    let first = request(&token);
    g.bench_function("session_first_mint", |b| {
        b.iter(|| {
            Authorizer::new(policy.clone())
                .authorize(black_box(&first), now, &nonces)
                .unwrap()
        })
    });
    let cached = Authorizer::new(policy.clone());
    cached.authorize(&first, now, &nonces).unwrap();
    g.bench_function("session_cached", |b| {
        b.iter(|| cached.authorize(black_box(&first), now, &nonces).unwrap())
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_sign,
    bench_jwt,
    bench_authorize,
    bench_unseal_steps
);
criterion_main!(benches);
