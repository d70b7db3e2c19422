//! Attestation verification cost: full verify (COSE_Sign1 ES384 signature, 4-certificate
//! chain to the pinned AWS root, policy) of genuine AWS documents at their own timestamps,
//! and decoding alone. Target: full verify ≤ 2 ms.

use agentkeys_attestation::{decode_unverified, verify, Policy, TrustAnchor};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

/// (fixture file, timestamp_ms from fixtures/nitro-attestation/index.json)
const DOCUMENTS: [(&str, u64); 2] = [
    ("aws-real-2022-07-06.cose", 1_657_117_102_484),
    ("ev-beta-valid.bin", 1_665_651_482_136),
];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../fixtures/nitro-attestation/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn bench_verify(c: &mut Criterion) {
    let anchor = TrustAnchor::aws_nitro_root_g1();
    let policy = Policy::default();
    let mut group = c.benchmark_group("attestation");
    for (name, at) in DOCUMENTS {
        let doc = fixture(name);
        // Fail loudly if the fixture does not verify: a benchmark of an error path is useless.
        verify(&doc, &anchor, at, &policy).unwrap_or_else(|e| panic!("{name}: {e}"));
        group.bench_function(format!("verify/{name}"), |b| {
            b.iter(|| verify(black_box(&doc), &anchor, at, &policy).map(|_| ()))
        });
        group.bench_function(format!("decode_unverified/{name}"), |b| {
            b.iter(|| decode_unverified(black_box(&doc)).map(|_| ()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
