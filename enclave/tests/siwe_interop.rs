//! Sign-In with Ethereum against code we did not write: Python's `eth-account` (PyPI)
//! signs messages with `personal_sign`, and the enclave's verifier
//! (`agentkeys_enclave::authz::siwe`) must accept exactly those that match.
//!
//! Needs `python3` with `eth-account` (`python3 -m pip install eth-account`); without
//! them the tests fail and say so rather than pass unchecked.

use std::io::Write;
use std::process::{Command, Stdio};

use agentkeys_enclave::authz::siwe::{parse, verify, SiweError, SiweExpectations};

/// A well-known test key and the address `eth-account` gives it.
const KEY: &str = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
const ADDRESS: &str = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23";
/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600;
const DOMAIN: &str = "issuer.agentkeys.example";

/// How to get what these tests need.
const INSTALL: &str = "python3 -m pip install eth-account";

/// Runs `script` with `python3`, feeding it `input` on standard input, and returns its
/// standard output without the final newline. Fails the test, naming the install
/// command, if Python or `eth-account` is missing.
fn python(script: &str, input: &str) -> String {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("python3 cannot be started ({e}): install Python 3, then run `{INSTALL}`")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'eth_account'") {
        panic!("Python's eth-account is not installed: run `{INSTALL}`");
    }
    assert!(out.status.success(), "python3 failed: {stderr}");
    String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
}

/// `eth-account`'s `personal_sign` of `message` with `key` (hex), as raw bytes.
fn eth_account_sign(key: &str, message: &str) -> Vec<u8> {
    let script = "
import sys
from eth_account import Account
from eth_account.messages import encode_defunct
data = sys.stdin.read()
key, message = data.split('\\n', 1)
signed = Account.sign_message(encode_defunct(text=message), private_key=key)
print(bytes(signed.signature).hex())
";
    hex::decode(python(script, &format!("{key}\n{message}"))).unwrap()
}

/// A SIWE message written here, independently of the dev crate's writer.
fn message(address: &str, nonce: &str) -> String {
    format!(
        "{DOMAIN} wants you to sign in with your Ethereum account:
{address}

Mint an AgentKeys token for this wallet.

URI: https://{DOMAIN}/v1/mint
Version: 1
Chain ID: 1
Nonce: {nonce}
Issued At: 2026-01-01T00:00:00Z
Expiration Time: 2026-01-01T00:05:00.500Z
Request ID: req-42
Resources:
- https://{DOMAIN}/v1/aws-creds"
    )
}

fn expect() -> SiweExpectations<'static> {
    SiweExpectations {
        domain: DOMAIN,
        now: T0 + 20,
        max_lifetime_seconds: 300,
        clock_skew_seconds: 30,
    }
}

#[test]
fn eth_account_signature_verifies() {
    let text = message(ADDRESS, "n0nce0123456789");
    let signature = eth_account_sign(KEY, &text);
    assert_eq!(signature.len(), 65);
    assert!(
        signature[64] == 27 || signature[64] == 28,
        "{}",
        signature[64]
    );
    let verified = verify(&text, &signature, &expect()).unwrap();
    assert_eq!(verified.wallet.eip55(), ADDRESS);
    assert_eq!(verified.nonce, "n0nce0123456789");
    assert_eq!(verified.expires_at, T0 + 300);
}

#[test]
fn eth_account_signature_of_another_message_is_refused() {
    let text = message(ADDRESS, "n0nce0123456789");
    let other = message(ADDRESS, "n0nce0123456780");
    let signature = eth_account_sign(KEY, &other);
    match verify(&text, &signature, &expect()) {
        Err(SiweError::SignerMismatch { signer, address }) => {
            assert_eq!(address.eip55(), ADDRESS);
            assert_ne!(signer, address);
        }
        other => panic!("expected SignerMismatch, got {other:?}"),
    }
    // The signature does verify the message it was made for.
    assert!(verify(&other, &signature, &expect()).is_ok());
}

/// A key `eth-account` makes: its EIP-55 address is what our parser requires, and a
/// message naming it verifies; a message naming the fixed key's address but signed by
/// this key does not.
#[test]
fn eth_account_random_key_and_checksum_agree() {
    let script = "
from eth_account import Account
account = Account.create()
print(account.key.hex().removeprefix('0x'))
print(account.address)
";
    let out = python(script, "");
    let (key, address) = out.split_once('\n').unwrap();
    let text = message(address, "r4nd0mNonce");
    assert_eq!(parse(&text).unwrap().address.eip55(), address);
    let signature = eth_account_sign(key, &text);
    let verified = verify(&text, &signature, &expect()).unwrap();
    assert_eq!(verified.wallet.eip55(), address);

    let fixed = message(ADDRESS, "r4nd0mNonce");
    let signature = eth_account_sign(key, &fixed);
    assert!(matches!(
        verify(&fixed, &signature, &expect()),
        Err(SiweError::SignerMismatch { .. })
    ));
}

/// Messages that differ from what the enclave requires are refused even with a valid
/// `eth-account` signature.
#[test]
fn eth_account_signed_but_wrong_message_is_refused() {
    let good = message(ADDRESS, "n0nce0123456789");
    for (text, check) in [
        (
            good.replacen(DOMAIN, "evil.example", 1),
            (|e: &SiweError| matches!(e, SiweError::DomainMismatch { .. }))
                as fn(&SiweError) -> bool,
        ),
        (good.replace('\n', "\r\n"), |e| {
            matches!(e, SiweError::CarriageReturn { .. })
        }),
        (
            good.replacen(ADDRESS, &ADDRESS.to_ascii_lowercase(), 1),
            |e| matches!(e, SiweError::AddressChecksum { .. }),
        ),
        (good.replacen("00:05:00.500Z", "01:00:00Z", 1), |e| {
            matches!(e, SiweError::LifetimeTooLong { .. })
        }),
    ] {
        let signature = eth_account_sign(KEY, &text);
        let e = verify(&text, &signature, &expect()).unwrap_err();
        assert!(check(&e), "{e}");
    }
}
