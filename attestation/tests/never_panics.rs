//! Thousands of deterministic mutations of the genuine documents (bit flips, truncations,
//! overwritten and inserted bytes) go through `decode_unverified` and `verify`: each must
//! return, never panic, and no mutation of a signed byte may verify.

mod common;

use agentkeys_attestation::{decode_unverified, verify};
use common::*;

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mutations(doc: &[u8], rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    // Single bit flips spread over the whole document.
    for _ in 0..800 {
        let mut m = doc.to_vec();
        let at = rng.below(m.len());
        m[at] ^= 1 << rng.below(8);
        out.push(m);
    }
    // Every CBOR header area at the front gets every bit flipped.
    for at in 0..32.min(doc.len()) {
        for bit in 0..8 {
            let mut m = doc.to_vec();
            m[at] ^= 1 << bit;
            out.push(m);
        }
    }
    // Truncations.
    for _ in 0..150 {
        out.push(doc[..rng.below(doc.len())].to_vec());
    }
    // Overwritten bytes with values that are interesting CBOR heads.
    const HEADS: [u8; 12] = [
        0x00, 0x18, 0x1b, 0x3b, 0x5b, 0x5f, 0x7f, 0x9b, 0x9f, 0xbf, 0xd2, 0xff,
    ];
    for _ in 0..300 {
        let mut m = doc.to_vec();
        let at = rng.below(m.len());
        m[at] = HEADS[rng.below(HEADS.len())];
        out.push(m);
    }
    // Inserted and deleted bytes.
    for _ in 0..100 {
        let mut m = doc.to_vec();
        let at = rng.below(m.len());
        if rng.below(2) == 0 {
            m.insert(at, rng.next() as u8);
        } else {
            m.remove(at);
        }
        out.push(m);
    }
    out
}

#[test]
fn mutated_documents_never_panic_and_never_verify() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut decoded = 0usize;
    let mut verified_calls = 0usize;
    let mut total = 0usize;
    for f in fixtures() {
        for (n, m) in mutations(&f.bytes, &mut rng).into_iter().enumerate() {
            total += 1;
            let decode = decode_unverified(&m);
            if decode.is_ok() {
                decoded += 1;
            }
            // Full verification (five ECDSA P-384 checks) is slow in unoptimized builds:
            // run it on a deterministic sample; decoding runs on every mutation.
            if n % 48 == 0 {
                verified_calls += 1;
                let result = verify(&m, &aws(), f.timestamp_ms, &f.policy());
                if let Ok(v) = result {
                    // Only mutations outside the signed bytes may verify (e.g. the unprotected
                    // header), and they must decode to the same document.
                    assert_eq!(
                        v.document,
                        decode_unverified(&f.bytes).unwrap(),
                        "{}",
                        f.name
                    );
                }
            }
        }
    }
    assert!(total > 5000, "{total}");
    eprintln!("{total} mutations, {decoded} still decoded, {verified_calls} verified");
}

#[test]
fn random_inputs_never_panic() {
    let mut rng = Rng(42);
    for len in 0..2000usize {
        let bytes: Vec<u8> = (0..len % 300).map(|_| rng.next() as u8).collect();
        let _ = decode_unverified(&bytes);
        // Random bytes that start like a COSE_Sign1.
        let mut prefixed = vec![0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0];
        prefixed.extend_from_slice(&bytes);
        let _ = decode_unverified(&prefixed);
    }
}
