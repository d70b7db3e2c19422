//! ES256 signing throughput on one core: the enclave's signer (aws-lc-rs) against the
//! pure-Rust `p256` crate, over a JWT-sized signing input.
//!
//! `cargo run --release -p agentkeys-enclave --example sign_bench [-- SECONDS]`

use std::time::{Duration, Instant};

use agentkeys_enclave::keys::{Seed, SigningKey};
use p256::ecdsa::signature::Signer;

/// Length of a typical `header.claims` signing input of a minted token.
const SIGNING_INPUT_BYTES: usize = 420;

fn measure(label: &str, budget: Duration, mut f: impl FnMut()) -> f64 {
    // Warm-up.
    for _ in 0..200 {
        f();
    }
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < budget {
        for _ in 0..256 {
            f();
        }
        n += 256;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    println!("{label:<28} {rate:>10.0} signs/s/core  ({n} signatures)");
    rate
}

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let budget = Duration::from_secs(seconds);
    let message = vec![b'a'; SIGNING_INPUT_BYTES];
    let seed = match Seed::from_slice(&[0x5a; 32]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("seed: {e}");
            std::process::exit(1);
        }
    };
    let secret = match agentkeys_enclave::keys::derive_secret(&seed, 1) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("derive: {e}");
            std::process::exit(1);
        }
    };
    let lc = match SigningKey::from_secret(1, &secret) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("key: {e}");
            std::process::exit(1);
        }
    };
    let rc = p256::ecdsa::SigningKey::from(&secret);

    println!("ES256 over a {SIGNING_INPUT_BYTES}-byte signing input, one thread, {seconds} s each");
    let a = measure("aws-lc-rs (enclave signer)", budget, || {
        let _ = std::hint::black_box(lc.sign(std::hint::black_box(&message)));
    });
    let b = measure("p256 0.13 (RustCrypto)", budget, || {
        let s: p256::ecdsa::Signature = rc.sign(std::hint::black_box(&message));
        std::hint::black_box(s);
    });
    println!("ratio aws-lc-rs / p256: {:.2}x", a / b);
}
