//! Mock NSM cost: producing an attestation document (CBOR payload, ES384 COSE_Sign1 by
//! the mock leaf) and verifying it against the explicitly trusted mock root. The enclave
//! asks for a document at unseal (KMS `Recipient`) and per `/.well-known/nitro-attestation`.

use std::time::{SystemTime, UNIX_EPOCH};

use agentkeys_attestation::{verify, Policy, TrustAnchor};
use agentkeys_mock_nsm::{mock_root_pem, MockNsm, MockNsmConfig, Request, Response};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_bytes::ByteBuf;

fn attestation_request() -> Request {
    Request::Attestation {
        user_data: Some(ByteBuf::from(vec![0x11; 32])),
        nonce: Some(ByteBuf::from(vec![0x22; 32])),
        // An SPKI-sized public key (a P-256 SPKI is 91 bytes).
        public_key: Some(ByteBuf::from(vec![0x33; 91])),
    }
}

fn document(nsm: &MockNsm) -> Vec<u8> {
    match nsm.process(attestation_request()) {
        Response::Attestation { document } => document,
        other => panic!("unexpected NSM answer: {other:?}"),
    }
}

fn bench_nsm(c: &mut Criterion) {
    let nsm = MockNsm::new(MockNsmConfig::default());
    let mut g = c.benchmark_group("mock_nsm");
    g.bench_function("attestation_document", |b| {
        b.iter(|| nsm.process(black_box(attestation_request())))
    });
    let doc = document(&nsm);
    let anchor = TrustAnchor::mock_root_explicitly_trusted(&mock_root_pem()).unwrap();
    let now_ms = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let policy = Policy::default();
    verify(&doc, &anchor, now_ms, &policy).unwrap();
    g.bench_function("verify_mock_document", |b| {
        b.iter(|| verify(black_box(&doc), &anchor, now_ms, &policy).map(|_| ()))
    });
    g.finish();
}

criterion_group!(benches, bench_nsm);
criterion_main!(benches);
