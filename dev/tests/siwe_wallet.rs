//! The dev stack's Sign-In with Ethereum signer (`agentkeys_dev::siwe_wallet`) against
//! code we did not write: Python's `eth-account` (PyPI) recovers our `personal_sign`
//! signatures to our EIP-55 address.
//!
//! Needs `python3` with `eth-account` (`python3 -m pip install eth-account`); without
//! them the tests fail and say so rather than pass unchecked.

use std::io::Write;
use std::process::{Command, Stdio};

use agentkeys_dev::siwe_wallet::{siwe_message, ThrowawayWallet};

/// How to get what these tests need.
const INSTALL: &str = "python3 -m pip install eth-account";

/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600;

/// `Account.recover_message(encode_defunct(text=message), signature=signature)`: the
/// EIP-55 address `eth-account` recovers. Fails the test, naming the install command, if
/// Python or `eth-account` is missing.
fn eth_account_recover(message: &str, signature: &[u8]) -> String {
    let script = "
import sys
from eth_account import Account
from eth_account.messages import encode_defunct
signature, message = sys.stdin.read().split('\\n', 1)
print(Account.recover_message(encode_defunct(text=message), signature=bytes.fromhex(signature)))
";
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
        .write_all(format!("{}\n{message}", hex::encode(signature)).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'eth_account'") {
        panic!("Python's eth-account is not installed: run `{INSTALL}`");
    }
    assert!(out.status.success(), "python3 failed: {stderr}");
    String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
}

#[test]
fn eth_account_recovers_our_siwe_signature() {
    let wallet = ThrowawayWallet::new();
    let message = siwe_message(
        "issuer.agentkeys.example",
        &wallet.address(),
        "https://issuer.agentkeys.example/v1/mint",
        1,
        "0123456789abcdef",
        T0,
        T0 + 300,
    );
    let signature = wallet.sign(&message);
    assert_eq!(eth_account_recover(&message, &signature), wallet.address());
}

#[test]
fn eth_account_recovers_the_fixed_key() {
    let key: [u8; 32] =
        hex::decode("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
            .unwrap()
            .try_into()
            .unwrap();
    let wallet = ThrowawayWallet::from_private_key(&key).unwrap();
    assert_eq!(
        wallet.address(),
        "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
    );
    // Any text, including non-ASCII (the EIP-191 length counts bytes).
    for message in ["hello", "", "héllo wörld\nsecond line"] {
        let signature = wallet.sign(message);
        assert_eq!(
            eth_account_recover(message, &signature),
            wallet.address(),
            "{message:?}"
        );
    }
}

#[test]
fn eth_account_recovers_another_address_for_another_message() {
    let wallet = ThrowawayWallet::new();
    let signature = wallet.sign("one message");
    let recovered = eth_account_recover("another message", &signature);
    assert_ne!(recovered, wallet.address());
    assert!(
        recovered.starts_with("0x") && recovered.len() == 42,
        "{recovered}"
    );
}
