//! Wallet addresses: the one rule the parent (session check) and the enclave (mint) both
//! apply, so that the wallet the parent vouches for and the wallet the enclave signs can
//! never be read differently on the two sides of the trust boundary.
//!
//! # The rule
//!
//! A wallet is an Ethereum address written as text: the lower-case prefix `0x` followed
//! by exactly 40 ASCII hex digits (20 bytes). [`Wallet::parse`] accepts exactly that and
//! nothing else:
//!
//! * **Digits in any case.** `a`–`f` and `A`–`F` are both accepted, so all-lower-case,
//!   all-upper-case and EIP-55 mixed-case (checksummed) addresses all parse. The EIP-55
//!   checksum is **not** verified: it guards a human typing an address, whereas the wallet
//!   here comes from the session backend, which is the authority on it; verifying it would
//!   refuse addresses the backend vouches for.
//! * **Prefix `0x` only, not `0X`.** An upper-case `0X` is refused. EIP-55 and the
//!   Ethereum JSON-RPC hex encoding write the prefix in lower case, the IAM trust policy
//!   matches `sub` against `agentkeys:agent:0x*`, and the enclave — the side that signs —
//!   has always refused `0X`. Accepting it would widen what the signer accepts for no
//!   client that needs it, so the stricter choice is kept.
//! * **Nothing else.** No surrounding whitespace is trimmed, no prefix-less form is
//!   accepted, and only ASCII digits count (`'١'`, `'０'` and other Unicode digits are
//!   refused): both sides compare what they receive, byte for byte.
//!
//! The normal form — what [`Wallet`] holds, what goes into the token's `sub` and
//! `agentkeys_user_wallet` claims and into the audit log — is the whole address in lower
//! case.
//!
//! # EIP-55 checksums
//!
//! [`Wallet::eip55`] writes a wallet in EIP-55 mixed case, and [`Wallet::from_bytes`]
//! builds one from the 20 bytes of an address. They are here, beside the rule, so that
//! every place that checks or writes a checksummed address uses the same code: the
//! enclave's Sign-In with Ethereum check (EIP-4361 requires the message's address in
//! EIP-55 form) and the dev stack's test signer. The rule above still does not verify
//! checksums; code that must (such as SIWE) compares its input with [`Wallet::eip55`].

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::Arc;

use sha3::{Digest, Keccak256};

/// Bytes in an Ethereum address: the rightmost 160 bits of the Keccak-256 hash of the
/// account's public key (Ethereum yellow paper, Appendix F, "Signing Transactions").
pub const WALLET_BYTES: usize = 20;

/// Hex digits in a wallet after the prefix: two per byte of [`WALLET_BYTES`].
pub const WALLET_HEX_DIGITS: usize = 2 * WALLET_BYTES;

/// Prefix of a wallet's text form (EIP-55; Ethereum JSON-RPC hex encoding).
pub const WALLET_PREFIX: &str = "0x";

/// Length of a wallet's text form in bytes: [`WALLET_PREFIX`] plus [`WALLET_HEX_DIGITS`].
pub const WALLET_LEN: usize = WALLET_PREFIX.len() + WALLET_HEX_DIGITS;

/// Why a string is not a wallet. The values describe the input without repeating more
/// than two of its characters, so the error is safe to log and bounded in size whatever
/// the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    /// The string is empty.
    #[error("wallet is empty; expected 0x followed by {WALLET_HEX_DIGITS} hex digits")]
    Empty,
    /// The string does not start with the lower-case prefix `0x` (this includes `0X`, a
    /// missing prefix and leading whitespace).
    #[error("wallet starts with {found:?}, expected the lower-case prefix 0x")]
    Prefix {
        /// The first two characters of the input (fewer if it is shorter).
        found: String,
    },
    /// A character after the prefix is not an ASCII hex digit.
    #[error("wallet character {index} is {found:?}, not an ASCII hex digit")]
    NonHex {
        /// Position of the first such character, counted in characters from the start of
        /// the input (the prefix occupies 0 and 1).
        index: usize,
        /// The character.
        found: char,
    },
    /// The prefix is followed by hex digits only, but not by exactly
    /// [`WALLET_HEX_DIGITS`] of them.
    #[error("wallet has {digits} hex digits after 0x, expected {WALLET_HEX_DIGITS}")]
    Length {
        /// How many hex digits follow the prefix.
        digits: usize,
    },
}

/// A wallet that satisfies the rule of this module, in normal (lower-case) form. The
/// only way to build one is [`Wallet::parse`] (or its [`FromStr`]/[`TryFrom`] forms).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Wallet(String);

impl Wallet {
    /// Checks `s` against the rule (module documentation) and returns it lower-cased.
    ///
    /// Checks in this order, reporting the first failure: empty; prefix; the first
    /// character after the prefix that is not an ASCII hex digit; the number of digits.
    pub fn parse(s: &str) -> Result<Wallet, WalletError> {
        if s.is_empty() {
            return Err(WalletError::Empty);
        }
        let Some(digits) = s.strip_prefix(WALLET_PREFIX) else {
            return Err(WalletError::Prefix {
                found: s.chars().take(WALLET_PREFIX.len()).collect(),
            });
        };
        if let Some((i, found)) = digits
            .chars()
            .enumerate()
            .find(|(_, c)| !c.is_ascii_hexdigit())
        {
            return Err(WalletError::NonHex {
                index: WALLET_PREFIX.len() + i,
                found,
            });
        }
        // Every character left is ASCII, so bytes and characters agree.
        if digits.len() != WALLET_HEX_DIGITS {
            return Err(WalletError::Length {
                digits: digits.len(),
            });
        }
        Ok(Wallet(s.to_ascii_lowercase()))
    }

    /// The normal form: `0x` and 40 lower-case hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The normal form as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The wallet whose 20 address bytes are `bytes` (for example the last 20 bytes of
    /// the Keccak-256 hash of a public key), in normal form.
    pub fn from_bytes(bytes: &[u8; WALLET_BYTES]) -> Wallet {
        Wallet(format!("{WALLET_PREFIX}{}", hex::encode(bytes)))
    }

    /// The wallet in EIP-55 mixed-case checksum encoding: hex digit `i` of the address is
    /// written in upper case when it is a letter (`a`–`f`) and nibble `i` of
    /// Keccak-256(the 40 lower-case hex digits, as ASCII) is 8 or more; everything else,
    /// the `0x` prefix included, is lower case.
    ///
    /// An address is correctly checksummed exactly when it equals this string; an address
    /// without letters is its own EIP-55 form, any other all-lower-case or all-upper-case
    /// address almost never is.
    pub fn eip55(&self) -> String {
        let digits = &self.0[WALLET_PREFIX.len()..];
        let hash = Keccak256::digest(digits.as_bytes());
        let mut out = String::with_capacity(WALLET_LEN);
        out.push_str(WALLET_PREFIX);
        for (i, c) in digits.chars().enumerate() {
            let byte = hash[i / 2];
            let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0x0f };
            out.push(if nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            });
        }
        out
    }
}

impl Deref for Wallet {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Wallet {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Wallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Wallet {
    type Err = WalletError;

    fn from_str(s: &str) -> Result<Wallet, WalletError> {
        Wallet::parse(s)
    }
}

impl TryFrom<&str> for Wallet {
    type Error = WalletError;

    fn try_from(s: &str) -> Result<Wallet, WalletError> {
        Wallet::parse(s)
    }
}

impl From<Wallet> for String {
    fn from(w: Wallet) -> String {
        w.0
    }
}

impl From<Wallet> for Arc<str> {
    fn from(w: Wallet) -> Arc<str> {
        w.0.into()
    }
}

impl PartialEq<str> for Wallet {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Wallet {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOWER: &str = "0xabcdef0123456789abcdef0123456789abcdef01";

    fn digits(n: usize) -> String {
        "a".repeat(n)
    }

    #[test]
    fn constants_agree() {
        assert_eq!(WALLET_HEX_DIGITS, 40);
        assert_eq!(WALLET_LEN, 42);
        assert_eq!(LOWER.len(), WALLET_LEN);
    }

    #[test]
    fn lower_case_is_kept() {
        let w = Wallet::parse(LOWER).unwrap();
        assert_eq!(w.as_str(), LOWER);
        assert_eq!(w, LOWER);
    }

    #[test]
    fn digits_of_any_case_are_lower_cased() {
        for input in [
            "0xABCDEF0123456789ABCDEF0123456789ABCDEF01",
            "0xAbCdEf0123456789aBcDeF0123456789AbCdEf01",
            // EIP-55 test vector (a valid checksum).
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            // The same address with a wrong checksum: the checksum is not verified.
            "0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        ] {
            let w = Wallet::parse(input).unwrap();
            assert_eq!(w.as_str(), input.to_ascii_lowercase(), "{input}");
        }
        assert_eq!(
            Wallet::parse("0xABCDEF0123456789ABCDEF0123456789ABCDEF01").unwrap(),
            LOWER
        );
    }

    #[test]
    fn normal_form_is_a_fixed_point() {
        let w = Wallet::parse("0xABCDEF0123456789ABCDEF0123456789ABCDEF01").unwrap();
        assert_eq!(Wallet::parse(w.as_str()).unwrap(), w);
    }

    #[test]
    fn conversions() {
        let w: Wallet = LOWER.parse().unwrap();
        assert_eq!(Wallet::try_from(LOWER).unwrap(), w);
        assert_eq!(w.to_string(), LOWER);
        assert_eq!(&*w, LOWER);
        assert_eq!(w.len(), WALLET_LEN);
        let a: Arc<str> = w.clone().into();
        assert_eq!(&*a, LOWER);
        assert_eq!(String::from(w.clone()), LOWER);
        assert_eq!(w.into_string(), LOWER);
        assert_eq!(
            "0x".parse::<Wallet>(),
            Err(WalletError::Length { digits: 0 })
        );
    }

    /// The test vectors of EIP-55 itself, and the address of a well-known test key.
    #[test]
    fn eip55_vectors() {
        for checksummed in [
            // All caps.
            "0x52908400098527886E0F7030069857D2E4169EE7",
            "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
            // All lower.
            "0xde709f2102306220921060314715629080e2fb77",
            "0x27b1fdb04752bbc536007a920d24acb045561c26",
            // Normal.
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
            // Address of the private key 0x4c0883a6...3f362318.
            "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
        ] {
            let w = Wallet::parse(checksummed).unwrap();
            assert_eq!(w.eip55(), checksummed);
            assert_eq!(w.as_str(), checksummed.to_ascii_lowercase());
        }
        // A wrong checksum is a different string.
        let w = Wallet::parse("0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed").unwrap();
        assert_ne!(w.eip55(), "0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed");
        // No letters: its own EIP-55 form.
        let digits_only = format!("0x{}", "1234567890".repeat(4));
        assert_eq!(Wallet::parse(&digits_only).unwrap().eip55(), digits_only);
    }

    #[test]
    fn from_bytes_is_normal_form() {
        let mut bytes = [0u8; WALLET_BYTES];
        bytes[0] = 0xab;
        bytes[19] = 0x01;
        let w = Wallet::from_bytes(&bytes);
        assert_eq!(w.as_str(), "0xab00000000000000000000000000000000000001");
        assert_eq!(Wallet::parse(w.as_str()).unwrap(), w);
    }

    #[test]
    fn empty() {
        assert_eq!(Wallet::parse(""), Err(WalletError::Empty));
    }

    #[test]
    fn prefix_only() {
        assert_eq!(Wallet::parse("0x"), Err(WalletError::Length { digits: 0 }));
    }

    #[test]
    fn upper_case_prefix_is_refused() {
        let upper = format!("0X{}", &LOWER[2..]);
        assert_eq!(
            Wallet::parse(&upper),
            Err(WalletError::Prefix { found: "0X".into() })
        );
        assert_eq!(
            Wallet::parse("0X"),
            Err(WalletError::Prefix { found: "0X".into() })
        );
    }

    #[test]
    fn missing_or_wrong_prefix() {
        for (input, found) in [
            (&LOWER[2..], "ab"),
            ("0", "0"),
            ("x", "x"),
            ("0y", "0y"),
            ("00abcdef0123456789abcdef0123456789abcdef01", "00"),
            ("x0abcdef0123456789abcdef0123456789abcdef01", "x0"),
            ("０x", "０x"),
            ("é", "é"),
        ] {
            assert_eq!(
                Wallet::parse(input),
                Err(WalletError::Prefix {
                    found: found.into()
                }),
                "{input:?}"
            );
        }
    }

    #[test]
    fn too_few_or_too_many_digits() {
        for n in [1, 20, 39, 41, 42, 64, 1000] {
            assert_eq!(
                Wallet::parse(&format!("0x{}", digits(n))),
                Err(WalletError::Length { digits: n }),
                "{n}"
            );
        }
        assert!(Wallet::parse(&format!("0x{}", digits(40))).is_ok());
    }

    #[test]
    fn non_hex_digit_with_its_position() {
        for (input, index, found) in [
            ("0xgbcdef0123456789abcdef0123456789abcdef01", 2, 'g'),
            ("0xabcdef0123456789abcdef0123456789abcdef0z", 41, 'z'),
            ("0xabcdef0123456789abcdef01234-6789abcdef01", 29, '-'),
            ("0x0x", 3, 'x'),
            ("0x0xabcdef0123456789abcdef0123456789abcdef", 3, 'x'),
            ("0xabcdef0123456789abcdef0123456789abcdef0\0", 41, '\0'),
        ] {
            assert_eq!(
                Wallet::parse(input),
                Err(WalletError::NonHex { index, found }),
                "{input:?}"
            );
        }
    }

    #[test]
    fn surrounding_whitespace_is_not_trimmed() {
        assert_eq!(
            Wallet::parse(&format!(" {LOWER}")),
            Err(WalletError::Prefix { found: " 0".into() })
        );
        assert_eq!(
            Wallet::parse(&format!("{LOWER} ")),
            Err(WalletError::NonHex {
                index: 42,
                found: ' '
            })
        );
        assert_eq!(
            Wallet::parse(&format!("{LOWER}\n")),
            Err(WalletError::NonHex {
                index: 42,
                found: '\n'
            })
        );
        assert_eq!(
            Wallet::parse(&format!("\t{LOWER}")),
            Err(WalletError::Prefix {
                found: "\t0".into()
            })
        );
        assert_eq!(
            Wallet::parse("0x abcdef0123456789abcdef0123456789abcdef0"),
            Err(WalletError::NonHex {
                index: 2,
                found: ' '
            })
        );
    }

    #[test]
    fn unicode_digits_are_not_hex() {
        // Arabic-Indic one, full-width one and full-width A, each where the 40th digit
        // goes: 40 characters after the prefix, but more than 40 bytes.
        for c in ['١', '１', 'Ａ', 'é'] {
            let input = format!("0x{}{c}", digits(39));
            assert_eq!(
                Wallet::parse(&input),
                Err(WalletError::NonHex {
                    index: 41,
                    found: c
                }),
                "{input:?}"
            );
        }
        // The position counts characters, not bytes.
        assert_eq!(
            Wallet::parse("0xéé"),
            Err(WalletError::NonHex {
                index: 2,
                found: 'é'
            })
        );
    }

    #[test]
    fn errors_are_bounded_whatever_the_input() {
        let long = format!("0x{}", digits(100_000));
        for input in [long.clone(), format!("{long}!"), "x".repeat(100_000)] {
            let e = Wallet::parse(&input).unwrap_err();
            assert!(e.to_string().len() < 120, "{e}");
        }
    }

    /// The table the parent, the enclave and the dev backend stand-in run through their
    /// own entry points: it must hold accepted and refused inputs, including the `0X`
    /// prefix the parent once accepted and the enclave refused.
    #[test]
    fn shared_table_has_both_outcomes() {
        let cases: &[&str] = include!("../tests/data/wallet_cases.rs");
        let accepted = cases.iter().filter(|c| Wallet::parse(c).is_ok()).count();
        assert!(accepted >= 3, "{accepted}");
        assert!(cases.len() - accepted >= 20, "{}", cases.len() - accepted);
        assert!(cases
            .iter()
            .any(|c| c.starts_with("0X") && c.len() == WALLET_LEN));
    }

    #[test]
    fn messages_name_the_problem() {
        assert!(Wallet::parse("0X1")
            .unwrap_err()
            .to_string()
            .contains("\"0X\""));
        assert!(Wallet::parse("0x12")
            .unwrap_err()
            .to_string()
            .contains("2 hex digits"));
        assert!(Wallet::parse("0x1g")
            .unwrap_err()
            .to_string()
            .contains("character 3 is 'g'"));
    }
}
