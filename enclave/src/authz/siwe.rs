//! Sign-In with Ethereum: the agent proves control of a wallet by signing an EIP-4361
//! message with `personal_sign` (EIP-191, secp256k1), and the enclave checks that proof
//! itself before it signs a token for the wallet.
//!
//! [`parse`] reads a message, [`recover_signer`] recovers the address that signed it and
//! [`verify`] does both and checks the message against what the enclave requires
//! ([`SiweExpectations`]). The nonce's validity and replay are the caller's to check:
//! [`VerifiedSiwe`] hands the nonce and the expiry on for that.
//!
//! # The message
//!
//! The parser follows the ABNF of EIP-4361 strictly, line by line (lines end with LF):
//!
//! ```text
//! example.com wants you to sign in with your Ethereum account:
//! 0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2
//!
//! I accept the ExampleOrg Terms of Service: https://example.com/tos
//!
//! URI: https://example.com/login
//! Version: 1
//! Chain ID: 1
//! Nonce: 32891756
//! Issued At: 2021-09-30T16:25:24Z
//! Expiration Time: 2021-09-30T16:30:24Z
//! Not Before: 2021-09-30T16:25:24Z
//! Request ID: some-request
//! Resources:
//! - ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/
//! - https://example.com/my-web2-claim.json
//! ```
//!
//! * **Domain**: an RFC 3986 authority (`[userinfo@]host[:port]`, host not empty).
//!   Newer revisions of EIP-4361 allow a `scheme://` before it; this parser does not (the
//!   enclave compares the domain with its issuer's host, and the scheme would be one more
//!   thing to compare), and says so with [`SiweError::DomainScheme`]. IPv6 literals are
//!   checked for their characters only.
//! * **Address**: `0x` and 40 hex digits in EIP-55 checksum case, checked with
//!   Keccak-256 ([`Wallet::eip55`]): an all-lower-case address is refused unless it has no
//!   letters, because EIP-4361 requires EIP-55 for externally owned accounts.
//! * **Statement** (optional): one line of RFC 3986 reserved and unreserved characters
//!   and spaces, between two empty lines. Without a statement the address is followed by
//!   two empty lines, as the ABNF has it (`address LF LF [ statement LF ] LF`).
//! * **Fields**, in exactly this order, each once: `URI`, `Version` (`1`), `Chain ID`
//!   (decimal, fits in 64 bits), `Nonce` (at least 8 ASCII letters and digits),
//!   `Issued At`, then the optional `Expiration Time`, `Not Before`, `Request ID`
//!   (RFC 3986 `pchar`s) and `Resources:` followed by `- URI` lines. The times are RFC
//!   3339 date-times, kept as UNIX seconds (a fraction of a second is dropped); times
//!   before 1970 are refused.
//! * **Nothing else**: no CR anywhere, no unknown, repeated or reordered field, nothing
//!   after the last field (not even a final LF), and at most [`MAX_MESSAGE_BYTES`] bytes.
//!
//! # The signature
//!
//! 65 bytes `r ‖ s ‖ v` over Keccak-256(`"\x19Ethereum Signed Message:\n"` ‖ the
//! message's length in bytes, in decimal ‖ the message). `v` is 27 or 28 (or 0 or 1, as
//! some signers write it); `s` must be in the lower half of the group order (EIP-2), so
//! that one message has one valid signature per key.
//!
//! Smart-contract wallets (EIP-1271) are out of scope: checking their signatures means
//! calling the wallet contract through a chain RPC, which only the parent could reach, so
//! the parent would decide again. Only externally owned accounts sign in.
//!
//! # Errors
//!
//! Every failure is one [`SiweError`] variant carrying the values that explain it. Parts
//! of the input in an error are cut to a few dozen characters, so that errors are safe to
//! log and return whatever the caller sends.

use std::fmt;

use agentkeys_wire::wallet::{Wallet, WalletError, WALLET_BYTES};
use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use sha3::{Digest, Keccak256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The largest message [`parse`] reads, in bytes. A SIWE message for the enclave is a few
/// hundred bytes; the bound keeps the work done for a caller small.
pub const MAX_MESSAGE_BYTES: usize = 8192;

/// Length of a `personal_sign` signature: `r` (32) ‖ `s` (32) ‖ `v` (1).
pub const SIGNATURE_BYTES: usize = 65;

/// The fewest characters a nonce may have (EIP-4361: `nonce = 8*( ALPHA / DIGIT )`).
pub const MIN_NONCE_CHARS: usize = 8;

/// What follows the domain on the first line.
pub const TITLE_SUFFIX: &str = " wants you to sign in with your Ethereum account:";

/// The EIP-191 prefix of a `personal_sign` message, before its decimal length.
pub const PERSONAL_SIGN_PREFIX: &str = "\x19Ethereum Signed Message:\n";

/// At most this many characters of the input are repeated in an error.
const SNIPPET_CHARS: usize = 40;

/// A parsed EIP-4361 message: the fields the specification defines, each checked against
/// its ABNF (module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiweMessage {
    /// The RFC 3986 authority that asks for the signature, without a scheme.
    pub domain: String,
    /// The address that signs, in normal (lower-case) form; the message held it in EIP-55
    /// checksum case.
    pub address: Wallet,
    /// The human-readable statement, if any (no LF; may be empty only if the message had
    /// an empty statement line).
    pub statement: Option<String>,
    /// The RFC 3986 URI that is the subject of the signing.
    pub uri: String,
    /// The message version: always `"1"`.
    pub version: String,
    /// The EIP-155 chain ID.
    pub chain_id: u64,
    /// The nonce: at least [`MIN_NONCE_CHARS`] ASCII letters and digits.
    pub nonce: String,
    /// When the message was made, in UNIX seconds.
    pub issued_at: u64,
    /// When the message stops being valid, in UNIX seconds.
    pub expiration_time: Option<u64>,
    /// When the message starts being valid, in UNIX seconds.
    pub not_before: Option<u64>,
    /// The request ID (RFC 3986 `pchar`s, possibly none).
    pub request_id: Option<String>,
    /// The resources, each an RFC 3986 URI, in the message's order.
    pub resources: Vec<String>,
}

/// What the enclave requires of a message, beyond its syntax and its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiweExpectations<'a> {
    /// The domain the message must name, compared byte for byte (the issuer's host, with a
    /// port if it has one).
    pub domain: &'a str,
    /// The current time, in UNIX seconds.
    pub now: u64,
    /// The longest time from Issued At to Expiration Time that is accepted, in seconds.
    pub max_lifetime_seconds: u64,
    /// How far the signer's clock may be from `now`, in seconds, for each time check.
    pub clock_skew_seconds: u64,
}

/// A message that passed [`verify`]: who signed it, and what the caller still checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSiwe {
    /// The wallet that signed: the message's address, which the signature recovers to.
    pub wallet: Wallet,
    /// The message's nonce, for the caller's validity and replay checks.
    pub nonce: String,
    /// The message's Expiration Time, in UNIX seconds (a replay cache may forget the
    /// nonce after it, plus the clock skew).
    pub expires_at: u64,
}

/// A field after the statement, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// `URI: `
    Uri,
    /// `Version: `
    Version,
    /// `Chain ID: `
    ChainId,
    /// `Nonce: `
    Nonce,
    /// `Issued At: `
    IssuedAt,
    /// `Expiration Time: `
    ExpirationTime,
    /// `Not Before: `
    NotBefore,
    /// `Request ID: `
    RequestId,
    /// `Resources:` and its `- ` lines.
    Resources,
}

impl Field {
    /// Every field, in the order a message must have them.
    pub const ALL: [Field; 9] = [
        Field::Uri,
        Field::Version,
        Field::ChainId,
        Field::Nonce,
        Field::IssuedAt,
        Field::ExpirationTime,
        Field::NotBefore,
        Field::RequestId,
        Field::Resources,
    ];

    /// The field's name, as the message writes it before the colon.
    pub fn name(self) -> &'static str {
        match self {
            Field::Uri => "URI",
            Field::Version => "Version",
            Field::ChainId => "Chain ID",
            Field::Nonce => "Nonce",
            Field::IssuedAt => "Issued At",
            Field::ExpirationTime => "Expiration Time",
            Field::NotBefore => "Not Before",
            Field::RequestId => "Request ID",
            Field::Resources => "Resources",
        }
    }

    /// What the field's line starts with: the name, a colon and (except `Resources:`,
    /// which is the whole line) a space.
    pub fn label(self) -> &'static str {
        match self {
            Field::Uri => "URI: ",
            Field::Version => "Version: ",
            Field::ChainId => "Chain ID: ",
            Field::Nonce => "Nonce: ",
            Field::IssuedAt => "Issued At: ",
            Field::ExpirationTime => "Expiration Time: ",
            Field::NotBefore => "Not Before: ",
            Field::RequestId => "Request ID: ",
            Field::Resources => "Resources:",
        }
    }

    /// The field a line belongs to, judged by the name before its first colon.
    fn of_line(line: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| {
            line.strip_prefix(f.name())
                .is_some_and(|rest| rest.starts_with(':'))
        })
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a message or signature is refused. Lines are counted from 1; parts of the input
/// are cut to a few dozen characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiweError {
    /// The message is longer than [`MAX_MESSAGE_BYTES`].
    #[error("SIWE message is {len} bytes, more than the {max} accepted")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// [`MAX_MESSAGE_BYTES`].
        max: usize,
    },
    /// The message contains a carriage return (CR, as in a CRLF line end).
    #[error(
        "SIWE message line {line} contains a carriage return: EIP-4361 lines end with LF alone"
    )]
    CarriageReturn {
        /// The line that holds the first CR.
        line: usize,
    },
    /// The message ends before a line it must have.
    #[error("SIWE message ends after line {line}, before {expected}")]
    Truncated {
        /// The last line of the message.
        line: usize,
        /// What was expected next.
        expected: &'static str,
    },
    /// The first line is not `<domain> wants you to sign in with your Ethereum account:`.
    #[error(
        "SIWE message line 1 is {found:?}, expected \"<domain> wants you to sign in with your \
         Ethereum account:\""
    )]
    Title {
        /// The start of the first line.
        found: String,
    },
    /// The domain has a `scheme://` prefix, which this parser does not accept.
    #[error(
        "SIWE message domain {found:?} starts with a scheme; write the host alone, without \
         scheme://"
    )]
    DomainScheme {
        /// The start of the domain.
        found: String,
    },
    /// The domain is not an RFC 3986 authority.
    #[error("SIWE message domain {found:?} is not an RFC 3986 authority: {reason}")]
    Domain {
        /// The start of the domain.
        found: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The second line is not `0x` and 40 hex digits.
    #[error("SIWE message line 2 is not an Ethereum address: {error}")]
    Address {
        /// Why the wallet rule refused it.
        error: WalletError,
    },
    /// The address is not in EIP-55 checksum case.
    #[error(
        "SIWE message address {found} is not EIP-55 checksummed, expected {expected}: sign \
         the address as your wallet writes it"
    )]
    AddressChecksum {
        /// The address as the message has it.
        found: String,
        /// The same address in EIP-55 case.
        expected: String,
    },
    /// A line that must be empty is not.
    #[error(
        "SIWE message line {line} must be empty, found {found:?} (the address is followed by \
         an empty line, the optional statement and another empty line)"
    )]
    BlankLine {
        /// The line.
        line: usize,
        /// The start of what it holds.
        found: String,
    },
    /// The statement has a character EIP-4361 does not allow in it.
    #[error(
        "SIWE message statement has {found:?} at character {index}: a statement holds only \
         RFC 3986 reserved and unreserved characters and spaces"
    )]
    Statement {
        /// Position of the character in the statement, counted in characters from 0.
        index: usize,
        /// The character.
        found: char,
    },
    /// The line where a field belongs holds something else.
    #[error(
        "SIWE message line {line} should be the {field} field, written \"{label}...\"; found \
         {found:?}",
        label = .field.label()
    )]
    MissingField {
        /// The line.
        line: usize,
        /// The field that belongs there.
        field: Field,
        /// The start of what the line holds.
        found: String,
    },
    /// A field appears a second time.
    #[error("SIWE message line {line} repeats the {field} field")]
    DuplicateField {
        /// The line of the second occurrence.
        line: usize,
        /// The field.
        field: Field,
    },
    /// A field appears after a field that must follow it.
    #[error(
        "SIWE message line {line} has the {field} field out of order: the fields are URI, \
         Version, Chain ID, Nonce, Issued At, Expiration Time, Not Before, Request ID, \
         Resources"
    )]
    OutOfOrder {
        /// The line.
        line: usize,
        /// The field.
        field: Field,
    },
    /// Something follows the last field (an unknown line, or a final LF).
    #[error(
        "SIWE message line {line} is {found:?}, after the last field: nothing may follow it, \
         not even a final newline"
    )]
    TrailingData {
        /// The first such line.
        line: usize,
        /// The start of what it holds.
        found: String,
    },
    /// The URI or a resource is not an RFC 3986 URI.
    #[error("SIWE message {field} {found:?} is not an RFC 3986 URI: {reason}")]
    Uri {
        /// [`Field::Uri`] or [`Field::Resources`].
        field: Field,
        /// The start of the value.
        found: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The version is not `1`.
    #[error("SIWE message version is {found:?}: only version 1 exists")]
    Version {
        /// The start of the value.
        found: String,
    },
    /// The chain ID is not a decimal number that fits in 64 bits.
    #[error("SIWE message chain ID {found:?} is not a decimal number below 2^64")]
    ChainId {
        /// The start of the value.
        found: String,
    },
    /// The nonce is too short.
    #[error(
        "SIWE message nonce has {len} characters: at least {MIN_NONCE_CHARS} ASCII letters \
         and digits are required"
    )]
    NonceTooShort {
        /// Its length in characters.
        len: usize,
    },
    /// The nonce has a character other than an ASCII letter or digit.
    #[error(
        "SIWE message nonce has {found:?} at character {index}: a nonce holds only ASCII \
         letters and digits"
    )]
    NonceCharacter {
        /// Position of the character in the nonce, counted in characters from 0.
        index: usize,
        /// The character.
        found: char,
    },
    /// A time is not an RFC 3339 date-time at or after 1970-01-01T00:00:00Z.
    #[error(
        "SIWE message {field} {found:?} is not an RFC 3339 date-time from 1970 on (such as \
         2021-09-30T16:25:24Z): {reason}"
    )]
    Time {
        /// [`Field::IssuedAt`], [`Field::ExpirationTime`] or [`Field::NotBefore`].
        field: Field,
        /// The start of the value.
        found: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request ID has a character that is not an RFC 3986 `pchar`.
    #[error(
        "SIWE message request ID has {found:?} at character {index}: a request ID holds only \
         RFC 3986 path characters (pchar)"
    )]
    RequestId {
        /// Position of the character in the request ID, counted in characters from 0.
        index: usize,
        /// The character.
        found: char,
    },
    /// The signature is not [`SIGNATURE_BYTES`] long.
    #[error("signature is {len} bytes: a personal_sign signature is 65 bytes, r || s || v")]
    SignatureLength {
        /// Its length.
        len: usize,
    },
    /// The signature's last byte is not 27, 28, 0 or 1.
    #[error("signature recovery byte v is {v}: expected 27 or 28 (or 0 or 1)")]
    RecoveryByte {
        /// The byte.
        v: u8,
    },
    /// `r` or `s` is zero or not below the secp256k1 group order.
    #[error("signature r or s is zero or not below the secp256k1 group order")]
    SignatureScalars,
    /// `s` is in the upper half of the group order.
    #[error(
        "signature s is in the upper half of the secp256k1 group order (EIP-2 forbids it): \
         sign with a wallet that writes low-s signatures"
    )]
    HighS,
    /// No public key recovers from the signature over the message.
    #[error("no public key can be recovered from this signature over this message")]
    Recovery,
    /// The signature recovers to an address other than the message's.
    #[error(
        "SIWE message is signed by {signer}, not by its address {address}: sign the message \
         with the key of the address it names"
    )]
    SignerMismatch {
        /// The address the signature recovers to.
        signer: Wallet,
        /// The message's address.
        address: Wallet,
    },
    /// The message names another domain.
    #[error("SIWE message is for the domain {found:?}; this issuer is {expected:?}")]
    DomainMismatch {
        /// The start of the message's domain.
        found: String,
        /// The domain the enclave requires.
        expected: String,
    },
    /// The message has no Expiration Time.
    #[error(
        "SIWE message has no Expiration Time: add one at most {max_lifetime_seconds} s after \
         Issued At"
    )]
    MissingExpiration {
        /// The longest lifetime accepted.
        max_lifetime_seconds: u64,
    },
    /// Expiration Time is before Issued At.
    #[error(
        "SIWE message Expiration Time ({expiration_time}) is before its Issued At \
         ({issued_at}), in UNIX seconds"
    )]
    ExpiresBeforeIssued {
        /// Issued At, UNIX seconds.
        issued_at: u64,
        /// Expiration Time, UNIX seconds.
        expiration_time: u64,
    },
    /// Expiration Time is too long after Issued At.
    #[error(
        "SIWE message is valid for {lifetime} s (Issued At {issued_at} to Expiration Time \
         {expiration_time}), more than the {max_lifetime_seconds} s accepted"
    )]
    LifetimeTooLong {
        /// Issued At, UNIX seconds.
        issued_at: u64,
        /// Expiration Time, UNIX seconds.
        expiration_time: u64,
        /// Their difference, in seconds.
        lifetime: u64,
        /// The longest lifetime accepted.
        max_lifetime_seconds: u64,
    },
    /// Expiration Time has passed.
    #[error(
        "SIWE message expired at {expiration_time} (UNIX seconds); now is {now}, with {skew} s \
         of clock skew allowed: sign a new message"
    )]
    Expired {
        /// Expiration Time, UNIX seconds.
        expiration_time: u64,
        /// The enclave's time.
        now: u64,
        /// The clock skew allowed.
        skew: u64,
    },
    /// Issued At is in the future.
    #[error(
        "SIWE message Issued At ({issued_at}) is after now ({now}, UNIX seconds) by more than \
         the {skew} s of clock skew allowed: check the signer's clock"
    )]
    IssuedInFuture {
        /// Issued At, UNIX seconds.
        issued_at: u64,
        /// The enclave's time.
        now: u64,
        /// The clock skew allowed.
        skew: u64,
    },
    /// Not Before is in the future.
    #[error(
        "SIWE message is not valid before {not_before} (UNIX seconds); now is {now}, with \
         {skew} s of clock skew allowed"
    )]
    NotYetValid {
        /// Not Before, UNIX seconds.
        not_before: u64,
        /// The enclave's time.
        now: u64,
        /// The clock skew allowed.
        skew: u64,
    },
}

/// The start of `s`, at most [`SNIPPET_CHARS`] characters, with `...` if cut.
fn snippet(s: &str) -> String {
    match s.char_indices().nth(SNIPPET_CHARS) {
        Some((end, _)) => format!("{}...", &s[..end]),
        None => s.to_owned(),
    }
}

/// Reads `message` as an EIP-4361 message (module documentation) and returns its fields.
/// Checks the syntax only, including the address's EIP-55 checksum; [`verify`] checks the
/// signature and the values.
pub fn parse(message: &str) -> Result<SiweMessage, SiweError> {
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(SiweError::TooLong {
            len: message.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    if let Some(at) = message.find('\r') {
        return Err(SiweError::CarriageReturn {
            line: message[..at].matches('\n').count() + 1,
        });
    }
    let mut lines = Lines {
        lines: message.split('\n').collect(),
        next: 0,
    };

    // Line 1: the title and the domain.
    let title = lines.take("the first line")?;
    let domain = title
        .strip_suffix(TITLE_SUFFIX)
        .ok_or_else(|| SiweError::Title {
            found: snippet(title),
        })?;
    check_domain(domain)?;

    // Line 2: the address, in EIP-55 case.
    let address_text = lines.take("the address")?;
    let address = Wallet::parse(address_text).map_err(|error| SiweError::Address { error })?;
    let checksummed = address.eip55();
    if address_text != checksummed {
        return Err(SiweError::AddressChecksum {
            found: address_text.to_owned(),
            expected: checksummed,
        });
    }

    // Line 3 is empty; then either an empty line (no statement), or the statement and an
    // empty line. An empty statement makes two empty lines in a row after line 3.
    lines.blank()?;
    let statement = match lines.peek() {
        Some("") if lines.peek_at(1) == Some("") => {
            lines.next += 1;
            Some(String::new())
        }
        Some("") => None,
        Some(s) => {
            check_statement(s)?;
            lines.next += 1;
            Some(s.to_owned())
        }
        None => return Err(lines.truncated("an empty line")),
    };
    lines.blank()?;

    // The required fields, in order.
    let uri = lines.field(Field::Uri)?;
    check_uri(uri).map_err(|reason| SiweError::Uri {
        field: Field::Uri,
        found: snippet(uri),
        reason,
    })?;
    let version = lines.field(Field::Version)?;
    if version != "1" {
        return Err(SiweError::Version {
            found: snippet(version),
        });
    }
    let chain_id_text = lines.field(Field::ChainId)?;
    let chain_id = parse_chain_id(chain_id_text)?;
    let nonce = lines.field(Field::Nonce)?;
    check_nonce(nonce)?;
    let issued_at = parse_time(Field::IssuedAt, lines.field(Field::IssuedAt)?)?;

    // The optional fields, in order.
    let mut expiration_time = None;
    let mut not_before = None;
    let mut request_id = None;
    let mut resources = None;
    for field in [
        Field::ExpirationTime,
        Field::NotBefore,
        Field::RequestId,
        Field::Resources,
    ] {
        match lines.peek() {
            Some(line) if Field::of_line(line) == Some(field) => {}
            _ => continue,
        }
        let value = lines.field(field)?;
        match field {
            Field::ExpirationTime => expiration_time = Some(parse_time(field, value)?),
            Field::NotBefore => not_before = Some(parse_time(field, value)?),
            Field::RequestId => {
                check_request_id(value)?;
                request_id = Some(value.to_owned());
            }
            _ => {
                if !value.is_empty() {
                    return Err(SiweError::MissingField {
                        line: lines.next,
                        field,
                        found: snippet(lines.lines[lines.next - 1]),
                    });
                }
                let mut list = Vec::new();
                while let Some(resource) = lines.peek().and_then(|l| l.strip_prefix("- ")) {
                    check_uri(resource).map_err(|reason| SiweError::Uri {
                        field: Field::Resources,
                        found: snippet(resource),
                        reason,
                    })?;
                    list.push(resource.to_owned());
                    lines.next += 1;
                }
                resources = Some(list);
            }
        }
    }

    // Nothing may follow.
    if let Some(line) = lines.peek() {
        let number = lines.next + 1;
        let seen = |f: Field| match f {
            Field::ExpirationTime => expiration_time.is_some(),
            Field::NotBefore => not_before.is_some(),
            Field::RequestId => request_id.is_some(),
            Field::Resources => resources.is_some(),
            _ => true,
        };
        return Err(match Field::of_line(line) {
            Some(field) if seen(field) => SiweError::DuplicateField {
                line: number,
                field,
            },
            Some(field) => SiweError::OutOfOrder {
                line: number,
                field,
            },
            None => SiweError::TrailingData {
                line: number,
                found: snippet(line),
            },
        });
    }

    Ok(SiweMessage {
        domain: domain.to_owned(),
        address,
        statement,
        uri: uri.to_owned(),
        version: version.to_owned(),
        chain_id,
        nonce: nonce.to_owned(),
        issued_at,
        expiration_time,
        not_before,
        request_id,
        resources: resources.unwrap_or_default(),
    })
}

/// The message's lines and the index of the next one to read.
struct Lines<'a> {
    lines: Vec<&'a str>,
    next: usize,
}

impl<'a> Lines<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.lines.get(self.next).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<&'a str> {
        self.lines.get(self.next + ahead).copied()
    }

    fn truncated(&self, expected: &'static str) -> SiweError {
        SiweError::Truncated {
            line: self.next,
            expected,
        }
    }

    fn take(&mut self, expected: &'static str) -> Result<&'a str, SiweError> {
        let line = self.peek().ok_or_else(|| self.truncated(expected))?;
        self.next += 1;
        Ok(line)
    }

    fn blank(&mut self) -> Result<(), SiweError> {
        let line = self.take("an empty line")?;
        if line.is_empty() {
            Ok(())
        } else {
            Err(SiweError::BlankLine {
                line: self.next,
                found: snippet(line),
            })
        }
    }

    /// The value of `field`, which must be the next line. Every field before `field` has
    /// been read (the caller reads them in order), so a line of an earlier field repeats
    /// it and a line of a later one is out of order.
    fn field(&mut self, field: Field) -> Result<&'a str, SiweError> {
        let line = self.take(field.label())?;
        if let Some(value) = line.strip_prefix(field.label()) {
            return Ok(value);
        }
        let number = self.next;
        Err(match Field::of_line(line) {
            Some(other) if other < field => SiweError::DuplicateField {
                line: number,
                field: other,
            },
            Some(other) if other > field => SiweError::OutOfOrder {
                line: number,
                field: other,
            },
            _ => SiweError::MissingField {
                line: number,
                field,
                found: snippet(line),
            },
        })
    }
}

/// RFC 3986 `unreserved`: ALPHA / DIGIT / "-" / "." / "_" / "~".
fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

/// RFC 3986 `sub-delims`.
fn is_sub_delim(c: char) -> bool {
    matches!(
        c,
        '!' | '$' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | ';' | '='
    )
}

/// RFC 3986 `gen-delims`.
fn is_gen_delim(c: char) -> bool {
    matches!(c, ':' | '/' | '?' | '#' | '[' | ']' | '@')
}

/// The first character of `s` (its position in characters, and the character) that
/// `allowed` refuses and that does not start a percent-encoding (`%` and two hex digits).
fn first_bad_char(s: &str, allowed: impl Fn(char) -> bool) -> Option<(usize, char)> {
    let bytes = s.as_bytes();
    let mut skip_until = 0;
    for (index, (at, c)) in s.char_indices().enumerate() {
        if at < skip_until {
            continue; // the hex digits of a percent-encoding
        }
        if c == '%'
            && bytes
                .get(at + 1..at + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
        {
            skip_until = at + 3;
        } else if !allowed(c) {
            return Some((index, c));
        }
    }
    None
}

/// [`first_bad_char`] as a check: `Err(reason)` when there is such a character.
fn check_pct_chars(
    s: &str,
    allowed: impl Fn(char) -> bool,
    reason: &'static str,
) -> Result<(), &'static str> {
    match first_bad_char(s, allowed) {
        Some(_) => Err(reason),
        None => Ok(()),
    }
}

/// RFC 3986 `pchar` = unreserved / pct-encoded / sub-delims / ":" / "@" (less the
/// percent-encoding, which [`check_pct_chars`] handles).
fn is_pchar(c: char) -> bool {
    is_unreserved(c) || is_sub_delim(c) || matches!(c, ':' | '@')
}

/// RFC 3986 `authority` = [ userinfo "@" ] host [ ":" port ]; an empty host is refused
/// when `need_host`.
fn check_authority(s: &str, need_host: bool) -> Result<(), &'static str> {
    let host_port = match s.split_once('@') {
        Some((userinfo, rest)) => {
            check_pct_chars(
                userinfo,
                |c| is_unreserved(c) || is_sub_delim(c) || c == ':',
                "the user information has a character RFC 3986 does not allow",
            )?;
            rest
        }
        None => s,
    };
    let port = if let Some(literal) = host_port.strip_prefix('[') {
        let (inside, after) = literal
            .split_once(']')
            .ok_or("an IP literal has no closing ]")?;
        check_ip_literal(inside)?;
        match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or("an IP literal is followed by something other than :port")?,
            ),
        }
    } else {
        let (host, port) = match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        };
        check_pct_chars(
            host,
            |c| is_unreserved(c) || is_sub_delim(c),
            "the host has a character RFC 3986 does not allow",
        )?;
        if need_host && host.is_empty() {
            return Err("the host is empty");
        }
        port
    };
    if let Some(port) = port {
        if !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err("the port is not decimal digits");
        }
    }
    Ok(())
}

/// The inside of an RFC 3986 `IP-literal`: an IPv6 address (its characters only) or
/// `IPvFuture` = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ).
fn check_ip_literal(inside: &str) -> Result<(), &'static str> {
    if let Some(future) = inside.strip_prefix(['v', 'V']) {
        let (version, rest) = future
            .split_once('.')
            .ok_or("an IPvFuture literal has no version")?;
        if version.is_empty()
            || !version.bytes().all(|b| b.is_ascii_hexdigit())
            || rest.is_empty()
            || !rest
                .chars()
                .all(|c| is_unreserved(c) || is_sub_delim(c) || c == ':')
        {
            return Err("an IPvFuture literal is malformed");
        }
        return Ok(());
    }
    if !inside.contains(':')
        || !inside
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    {
        return Err("an IPv6 literal has a character other than hex digits, : and .");
    }
    Ok(())
}

/// The SIWE domain: an authority with a host, and no scheme.
fn check_domain(domain: &str) -> Result<(), SiweError> {
    if domain.contains("://") {
        return Err(SiweError::DomainScheme {
            found: snippet(domain),
        });
    }
    check_authority(domain, true).map_err(|reason| SiweError::Domain {
        found: snippet(domain),
        reason,
    })
}

/// RFC 3986 `URI` = scheme ":" hier-part [ "?" query ] [ "#" fragment ].
fn check_uri(uri: &str) -> Result<(), &'static str> {
    let (scheme, rest) = uri.split_once(':').ok_or("it has no scheme")?;
    let mut scheme_chars = scheme.chars();
    if !scheme_chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        || !scheme_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return Err("the scheme is not a letter followed by letters, digits, +, - or .");
    }
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (rest, None),
    };
    let (hier_part, query) = match rest.split_once('?') {
        Some((hier_part, query)) => (hier_part, Some(query)),
        None => (rest, None),
    };
    let path = match hier_part.strip_prefix("//") {
        Some(after) => {
            let (authority, path) = after.split_at(after.find('/').unwrap_or(after.len()));
            check_authority(authority, false)?;
            path
        }
        None => hier_part,
    };
    check_pct_chars(
        path,
        |c| is_pchar(c) || c == '/',
        "the path has a character RFC 3986 does not allow",
    )?;
    for part in [query, fragment].into_iter().flatten() {
        check_pct_chars(
            part,
            |c| is_pchar(c) || c == '/' || c == '?',
            "the query or fragment has a character RFC 3986 does not allow",
        )?;
    }
    Ok(())
}

/// EIP-4361 `statement` = *( reserved / unreserved / " " ).
fn check_statement(statement: &str) -> Result<(), SiweError> {
    match statement
        .chars()
        .enumerate()
        .find(|&(_, c)| !(is_unreserved(c) || is_gen_delim(c) || is_sub_delim(c) || c == ' '))
    {
        Some((index, found)) => Err(SiweError::Statement { index, found }),
        None => Ok(()),
    }
}

/// EIP-4361 `chain-id` = 1*DIGIT, here also below 2^64.
fn parse_chain_id(text: &str) -> Result<u64, SiweError> {
    let err = || SiweError::ChainId {
        found: snippet(text),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    text.parse().map_err(|_| err())
}

/// EIP-4361 `nonce` = 8*( ALPHA / DIGIT ).
fn check_nonce(nonce: &str) -> Result<(), SiweError> {
    if let Some((index, found)) = nonce
        .chars()
        .enumerate()
        .find(|&(_, c)| !c.is_ascii_alphanumeric())
    {
        return Err(SiweError::NonceCharacter { index, found });
    }
    if nonce.len() < MIN_NONCE_CHARS {
        return Err(SiweError::NonceTooShort { len: nonce.len() });
    }
    Ok(())
}

/// EIP-4361 `request-id` = *pchar.
fn check_request_id(id: &str) -> Result<(), SiweError> {
    match first_bad_char(id, is_pchar) {
        Some((index, found)) => Err(SiweError::RequestId { index, found }),
        None => Ok(()),
    }
}

/// An RFC 3339 date-time as UNIX seconds (fractions dropped), from 1970 on.
fn parse_time(field: Field, text: &str) -> Result<u64, SiweError> {
    let err = |reason: String| SiweError::Time {
        field,
        found: snippet(text),
        reason,
    };
    // RFC 3339's ABNF separates the date and the time with "T" (or "t"); the `time` crate
    // also takes a space, which RFC 3339 only mentions as a reading aid.
    if text.len() > 10 && !matches!(text.as_bytes()[10], b'T' | b't') {
        return Err(err(
            "the date and the time are not separated by T".to_owned()
        ));
    }
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| err(e.to_string()))?;
    u64::try_from(t.unix_timestamp()).map_err(|_| err("it is before 1970".to_owned()))
}

/// The EIP-191 `personal_sign` hash of `message`: Keccak-256 of
/// [`PERSONAL_SIGN_PREFIX`] ‖ the message's length in bytes, in decimal ‖ the message.
pub fn personal_sign_hash(message: &str) -> [u8; 32] {
    let mut hasher = Keccak256::new();
    hasher.update(PERSONAL_SIGN_PREFIX.as_bytes());
    hasher.update(message.len().to_string().as_bytes());
    hasher.update(message.as_bytes());
    hasher.finalize().into()
}

/// The address of a secp256k1 public key: the last 20 bytes of the Keccak-256 hash of its
/// uncompressed point without the `0x04` tag.
pub fn address_of(key: &VerifyingKey) -> Wallet {
    let point = key.to_encoded_point(false);
    let hash = Keccak256::digest(&point.as_bytes()[1..]);
    let mut address = [0u8; WALLET_BYTES];
    address.copy_from_slice(&hash[32 - WALLET_BYTES..]);
    Wallet::from_bytes(&address)
}

/// EIP-191 `personal_sign`: keccak256("\x19Ethereum Signed Message:\n" ‖ decimal len ‖
/// message); 65-byte r‖s‖v with v in {27, 28} or {0, 1}; s must be in the lower half of
/// the order (EIP-2): a high-s signature is refused. Returns the recovered address.
///
/// The message is any text here; [`verify`] requires a SIWE message.
pub fn recover_signer(message: &str, signature: &[u8]) -> Result<Wallet, SiweError> {
    if signature.len() != SIGNATURE_BYTES {
        return Err(SiweError::SignatureLength {
            len: signature.len(),
        });
    }
    let (rs, v) = signature.split_at(SIGNATURE_BYTES - 1);
    let is_y_odd = match v[0] {
        27 | 0 => false,
        28 | 1 => true,
        v => return Err(SiweError::RecoveryByte { v }),
    };
    let signature = Signature::from_slice(rs).map_err(|_| SiweError::SignatureScalars)?;
    if signature.normalize_s().is_some() {
        return Err(SiweError::HighS);
    }
    let key = VerifyingKey::recover_from_prehash(
        &personal_sign_hash(message),
        &signature,
        RecoveryId::new(is_y_odd, false),
    )
    .map_err(|_| SiweError::Recovery)?;
    Ok(address_of(&key))
}

/// parse + recover + checks: the recovered signer equals the message's address; domain
/// equals expect.domain exactly; Expiration Time present, after now - skew, and at most
/// max_lifetime_seconds after Issued At; Issued At not after now + skew; Not Before (if
/// any) not after now + skew; version "1" (which [`parse`] already requires).
///
/// The cheap checks come first: the syntax, the domain, the times, and only then the
/// signature (an elliptic-curve recovery), so a stale or misdirected message costs no
/// curve arithmetic. The nonce is returned for the caller to check.
pub fn verify(
    message: &str,
    signature: &[u8],
    expect: &SiweExpectations<'_>,
) -> Result<VerifiedSiwe, SiweError> {
    let parsed = parse(message)?;
    if parsed.domain != expect.domain {
        return Err(SiweError::DomainMismatch {
            found: snippet(&parsed.domain),
            expected: expect.domain.to_owned(),
        });
    }
    let now = expect.now;
    let skew = expect.clock_skew_seconds;
    let issued_at = parsed.issued_at;
    let expiration_time = parsed.expiration_time.ok_or(SiweError::MissingExpiration {
        max_lifetime_seconds: expect.max_lifetime_seconds,
    })?;
    if expiration_time < issued_at {
        return Err(SiweError::ExpiresBeforeIssued {
            issued_at,
            expiration_time,
        });
    }
    let lifetime = expiration_time - issued_at;
    if lifetime > expect.max_lifetime_seconds {
        return Err(SiweError::LifetimeTooLong {
            issued_at,
            expiration_time,
            lifetime,
            max_lifetime_seconds: expect.max_lifetime_seconds,
        });
    }
    if expiration_time <= now.saturating_sub(skew) {
        return Err(SiweError::Expired {
            expiration_time,
            now,
            skew,
        });
    }
    if issued_at > now.saturating_add(skew) {
        return Err(SiweError::IssuedInFuture {
            issued_at,
            now,
            skew,
        });
    }
    if let Some(not_before) = parsed.not_before {
        if not_before > now.saturating_add(skew) {
            return Err(SiweError::NotYetValid {
                not_before,
                now,
                skew,
            });
        }
    }
    let signer = recover_signer(message, signature)?;
    if signer != parsed.address {
        return Err(SiweError::SignerMismatch {
            signer,
            address: parsed.address,
        });
    }
    Ok(VerifiedSiwe {
        wallet: parsed.address,
        nonce: parsed.nonce,
        expires_at: expiration_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::ecdsa::SigningKey;

    /// A well-known test key and its address (EIP-55).
    const KEY: &str = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
    const ADDRESS: &str = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23";
    /// 2026-01-01T00:00:00Z.
    const T0: u64 = 1_767_225_600;

    /// A message the enclave accepts (signed by [`KEY`], at [`T0`] + 60 s).
    const GOOD: &str = "agentkeys.example wants you to sign in with your Ethereum account:
0x2c7536E3605D9C16a7a3D7b1898e529396a65c23

Sign in to AgentKeys.

URI: https://agentkeys.example/login
Version: 1
Chain ID: 1
Nonce: abcDEF0123456789
Issued At: 2026-01-01T00:00:00Z
Expiration Time: 2026-01-01T00:05:00Z";

    /// The example of EIP-4361 itself.
    const SPEC_EXAMPLE: &str = "example.com wants you to sign in with your Ethereum account:
0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2

I accept the ExampleOrg Terms of Service: https://example.com/tos

URI: https://example.com/login
Version: 1
Chain ID: 1
Nonce: 32891756
Issued At: 2021-09-30T16:25:24Z
Resources:
- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/
- https://example.com/my-web2-claim.json";

    fn key() -> SigningKey {
        SigningKey::from_slice(&hex::decode(KEY).unwrap()).unwrap()
    }

    fn sign_with(key: &SigningKey, message: &str) -> [u8; 65] {
        let (sig, recid) = key
            .sign_prehash_recoverable(&personal_sign_hash(message))
            .unwrap();
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&sig.to_bytes());
        out[64] = 27 + recid.to_byte();
        out
    }

    fn sign(message: &str) -> [u8; 65] {
        sign_with(&key(), message)
    }

    fn expect() -> SiweExpectations<'static> {
        SiweExpectations {
            domain: "agentkeys.example",
            now: T0 + 60,
            max_lifetime_seconds: 600,
            clock_skew_seconds: 30,
        }
    }

    fn parse_err(message: &str) -> SiweError {
        parse(message).unwrap_err()
    }

    /// `GOOD` with `from` replaced by `to` (which must be there).
    fn good_with(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "{from:?}");
        GOOD.replacen(from, to, 1)
    }

    fn verify_err(message: &str) -> SiweError {
        verify(message, &sign(message), &expect()).unwrap_err()
    }

    // ---- parsing: accepted ----

    #[test]
    fn spec_example_parses() {
        let m = parse(SPEC_EXAMPLE).unwrap();
        assert_eq!(m.domain, "example.com");
        assert_eq!(m.address, "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2");
        assert_eq!(
            m.statement.as_deref(),
            Some("I accept the ExampleOrg Terms of Service: https://example.com/tos")
        );
        assert_eq!(m.uri, "https://example.com/login");
        assert_eq!(m.version, "1");
        assert_eq!(m.chain_id, 1);
        assert_eq!(m.nonce, "32891756");
        assert_eq!(m.issued_at, 1_633_019_124);
        assert_eq!(m.expiration_time, None);
        assert_eq!(m.not_before, None);
        assert_eq!(m.request_id, None);
        assert_eq!(
            m.resources,
            [
                "ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/",
                "https://example.com/my-web2-claim.json"
            ]
        );
        // With a port, as in the specification's second example.
        let m = parse(&SPEC_EXAMPLE.replacen("example.com", "example.com:3388", 1)).unwrap();
        assert_eq!(m.domain, "example.com:3388");
    }

    #[test]
    fn every_field() {
        let message = "user@[::1]:8443 wants you to sign in with your Ethereum account:
0x2c7536E3605D9C16a7a3D7b1898e529396a65c23

Statement: with ;/?:@&=+$,-_.!~*'()#[] and spaces.

URI: urn:agentkeys:mint?x=1#frag
Version: 1
Chain ID: 18446744073709551615
Nonce: 0123456789abcdefXYZ
Issued At: 2026-01-01T01:00:00.999+01:00
Expiration Time: 2026-01-01T00:05:00Z
Not Before: 2026-01-01T00:00:30Z
Request ID: req-1%20:@!$&'()*+,;=
Resources:
- https://agentkeys.example/a
- did:key:z6Mk#frag";
        let m = parse(message).unwrap();
        assert_eq!(m.domain, "user@[::1]:8443");
        assert_eq!(m.address.as_str(), ADDRESS.to_ascii_lowercase());
        assert_eq!(
            m.statement.as_deref(),
            Some("Statement: with ;/?:@&=+$,-_.!~*'()#[] and spaces.")
        );
        assert_eq!(m.uri, "urn:agentkeys:mint?x=1#frag");
        assert_eq!(m.version, "1");
        assert_eq!(m.chain_id, u64::MAX);
        assert_eq!(m.nonce, "0123456789abcdefXYZ");
        // 01:00:00.999+01:00 is T0 and a fraction, dropped.
        assert_eq!(m.issued_at, T0);
        assert_eq!(m.expiration_time, Some(T0 + 300));
        assert_eq!(m.not_before, Some(T0 + 30));
        assert_eq!(m.request_id.as_deref(), Some("req-1%20:@!$&'()*+,;="));
        assert_eq!(
            m.resources,
            ["https://agentkeys.example/a", "did:key:z6Mk#frag"]
        );
    }

    #[test]
    fn optional_parts_may_be_absent_or_empty() {
        // No statement: two empty lines after the address.
        let none = good_with("\n\nSign in to AgentKeys.\n\n", "\n\n\n");
        assert_eq!(parse(&none).unwrap().statement, None);
        // An empty statement: three.
        let empty = good_with("\n\nSign in to AgentKeys.\n\n", "\n\n\n\n");
        assert_eq!(parse(&empty).unwrap().statement.as_deref(), Some(""));
        // Resources with no entries, an empty request ID, Not Before alone.
        let m = parse(&format!("{GOOD}\nRequest ID: \nResources:")).unwrap();
        assert_eq!(m.request_id.as_deref(), Some(""));
        assert!(m.resources.is_empty());
        let m = parse(&good_with(
            "\nExpiration Time: 2026-01-01T00:05:00Z",
            "\nNot Before: 2026-01-01T00:05:00Z",
        ))
        .unwrap();
        assert_eq!((m.expiration_time, m.not_before), (None, Some(T0 + 300)));
        // An address without letters is its own EIP-55 form.
        let digits = "0x1234567890123456789012345678901234567890";
        assert_eq!(parse(&good_with(ADDRESS, digits)).unwrap().address, digits);
    }

    // ---- parsing: refused, one variant each ----

    #[test]
    fn wrong_first_line() {
        for title in [
            "agentkeys.example wants you to sign in with your Ethereum account",
            "agentkeys.example wants you to sign in with your ethereum account:",
            "agentkeys.example wants you to sign in with your Ethereum account: ",
            "agentkeys.example wants you to sign in with your Ethereum account:.",
            "",
        ] {
            let message = GOOD.replacen(
                "agentkeys.example wants you to sign in with your Ethereum account:",
                title,
                1,
            );
            assert!(
                matches!(parse_err(&message), SiweError::Title { .. }),
                "{title:?}"
            );
        }
    }

    #[test]
    fn domain_with_scheme_is_refused() {
        let message = good_with("agentkeys.example", "https://agentkeys.example");
        assert_eq!(
            parse_err(&message),
            SiweError::DomainScheme {
                found: "https://agentkeys.example".into()
            }
        );
    }

    #[test]
    fn domain_must_be_an_authority() {
        for domain in [
            "",
            " agentkeys.example",
            "agentkeys.example ",
            "agentkeys.example/path",
            "agentkeys.example:80a",
            "a@b@agentkeys.example",
            "[::1",
            "[zz::1]",
            "agent keys.example",
            "agentkeys.example%2",
            ":443",
            "agentkeys.éxample",
        ] {
            let message = good_with("agentkeys.example wants", &format!("{domain} wants"));
            assert!(
                matches!(parse_err(&message), SiweError::Domain { .. }),
                "{domain:?}: {:?}",
                parse(&message)
            );
        }
    }

    #[test]
    fn address_must_be_an_address() {
        for (address, error) in [
            (
                "0x2c7536E3605D9C16a7a3D7b1898e529396a65c2",
                WalletError::Length { digits: 39 },
            ),
            (
                "0X2c7536E3605D9C16a7a3D7b1898e529396a65c23",
                WalletError::Prefix { found: "0X".into() },
            ),
            ("", WalletError::Empty),
        ] {
            let message = good_with(ADDRESS, address);
            assert_eq!(
                parse_err(&message),
                SiweError::Address { error },
                "{address}"
            );
        }
    }

    #[test]
    fn bad_checksum_is_refused() {
        for address in [
            // One letter's case flipped.
            "0x2C7536E3605D9C16a7a3D7b1898e529396a65c23",
            // All lower case, all upper case.
            "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23",
            "0x2C7536E3605D9C16A7A3D7B1898E529396A65C23",
        ] {
            assert_eq!(
                parse_err(&good_with(ADDRESS, address)),
                SiweError::AddressChecksum {
                    found: address.into(),
                    expected: ADDRESS.into()
                }
            );
        }
    }

    #[test]
    fn blank_lines_are_required() {
        // One empty line only, without a statement (an old, non-conforming form).
        let message = good_with("\n\nSign in to AgentKeys.\n\n", "\n\n");
        assert_eq!(
            parse_err(&message),
            SiweError::BlankLine {
                line: 5,
                found: "Version: 1".into()
            }
        );
        // No empty line between the address and the statement.
        let message = good_with("\n\nSign in", "\nSign in");
        assert!(matches!(
            parse_err(&message),
            SiweError::BlankLine { line: 3, .. }
        ));
    }

    #[test]
    fn statement_characters() {
        for (statement, index, found) in [
            ("Say \"hi\"", 4, '"'),
            ("tab\there", 3, '\t'),
            ("100%", 3, '%'),
            ("naïve", 2, 'ï'),
            ("a<b>", 1, '<'),
        ] {
            let message = good_with("Sign in to AgentKeys.", statement);
            assert_eq!(
                parse_err(&message),
                SiweError::Statement { index, found },
                "{statement:?}"
            );
        }
    }

    #[test]
    fn crlf_is_refused() {
        assert_eq!(
            parse_err(&GOOD.replace('\n', "\r\n")),
            SiweError::CarriageReturn { line: 1 }
        );
        assert_eq!(
            parse_err(&good_with("Version: 1", "Version: 1\r")),
            SiweError::CarriageReturn { line: 7 }
        );
    }

    #[test]
    fn trailing_data_is_refused() {
        assert_eq!(
            parse_err(&format!("{GOOD}\n")),
            SiweError::TrailingData {
                line: 12,
                found: String::new()
            }
        );
        assert_eq!(
            parse_err(&format!("{GOOD}\ngarbage")),
            SiweError::TrailingData {
                line: 12,
                found: "garbage".into()
            }
        );
        assert_eq!(
            parse_err(&format!("{GOOD}\nResources:\n- https://a.example\nmore")),
            SiweError::TrailingData {
                line: 14,
                found: "more".into()
            }
        );
        // Garbage at the end of a value is the value's error.
        assert!(matches!(
            parse_err(&format!("{GOOD}garbage")),
            SiweError::Time {
                field: Field::ExpirationTime,
                ..
            }
        ));
    }

    #[test]
    fn duplicate_field_is_refused() {
        assert_eq!(
            parse_err(&good_with(
                "Nonce: abcDEF0123456789",
                "Nonce: abcDEF0123456789\nNonce: abcDEF0123456789"
            )),
            SiweError::DuplicateField {
                line: 10,
                field: Field::Nonce
            }
        );
        assert_eq!(
            parse_err(&format!("{GOOD}\nExpiration Time: 2026-01-01T00:05:00Z")),
            SiweError::DuplicateField {
                line: 12,
                field: Field::ExpirationTime
            }
        );
        assert_eq!(
            parse_err(&format!("{GOOD}\nResources:\nResources:")),
            SiweError::DuplicateField {
                line: 13,
                field: Field::Resources
            }
        );
    }

    #[test]
    fn fields_out_of_order_are_refused() {
        let swapped = good_with(
            "Chain ID: 1\nNonce: abcDEF0123456789",
            "Nonce: abcDEF0123456789\nChain ID: 1",
        );
        assert_eq!(
            parse_err(&swapped),
            SiweError::OutOfOrder {
                line: 8,
                field: Field::Nonce
            }
        );
        let message = format!("{GOOD}\nRequest ID: r\nNot Before: 2026-01-01T00:00:00Z");
        assert_eq!(
            parse_err(&message),
            SiweError::OutOfOrder {
                line: 13,
                field: Field::NotBefore
            }
        );
    }

    #[test]
    fn unknown_or_malformed_field_line_is_refused() {
        for (from, to, line, field) in [
            ("URI: ", "Url: ", 6, Field::Uri),
            ("Version: 1", "Version:1", 7, Field::Version),
            ("Chain ID: 1", "Chain Id: 1", 8, Field::ChainId),
            ("Issued At: ", "Issued at: ", 10, Field::IssuedAt),
        ] {
            assert!(
                matches!(
                    parse_err(&good_with(from, to)),
                    SiweError::MissingField { line: l, field: f, .. } if l == line && f == field
                ),
                "{to:?}: {:?}",
                parse(&good_with(from, to))
            );
        }
        // An optional field's label without its space.
        assert!(matches!(
            parse_err(&format!("{GOOD}\nRequest ID:r")),
            SiweError::MissingField {
                line: 12,
                field: Field::RequestId,
                ..
            }
        ));
        assert!(matches!(
            parse_err(&format!("{GOOD}\nResources: x")),
            SiweError::MissingField {
                line: 12,
                field: Field::Resources,
                ..
            }
        ));
    }

    #[test]
    fn truncated_message_is_refused() {
        assert_eq!(
            parse_err(&GOOD[..GOOD.find("\nVersion").unwrap()]),
            SiweError::Truncated {
                line: 6,
                expected: "Version: "
            }
        );
        assert!(matches!(
            parse_err("agentkeys.example wants you to sign in with your Ethereum account:"),
            SiweError::Truncated { line: 1, .. }
        ));
    }

    #[test]
    fn version_2_is_refused() {
        for version in ["2", "1.0", "01", ""] {
            assert_eq!(
                parse_err(&good_with("Version: 1", &format!("Version: {version}"))),
                SiweError::Version {
                    found: version.into()
                }
            );
        }
    }

    #[test]
    fn chain_id_must_be_a_u64() {
        for chain_id in ["", "-1", "+1", "0x1", "1 ", "18446744073709551616"] {
            assert_eq!(
                parse_err(&good_with("Chain ID: 1", &format!("Chain ID: {chain_id}"))),
                SiweError::ChainId {
                    found: chain_id.into()
                }
            );
        }
    }

    #[test]
    fn short_nonce_is_refused() {
        for nonce in ["", "abc", "abcdefg"] {
            assert_eq!(
                parse_err(&good_with("abcDEF0123456789", nonce)),
                SiweError::NonceTooShort { len: nonce.len() }
            );
        }
        assert!(parse(&good_with("abcDEF0123456789", "abcdefgh")).is_ok());
    }

    #[test]
    fn non_alphanumeric_nonce_is_refused() {
        for (nonce, index, found) in [
            ("abcd-efgh", 4, '-'),
            ("abcdefgh ", 8, ' '),
            ("abcdéfgh", 4, 'é'),
            ("abc_defgh", 3, '_'),
        ] {
            assert_eq!(
                parse_err(&good_with("abcDEF0123456789", nonce)),
                SiweError::NonceCharacter { index, found }
            );
        }
    }

    #[test]
    fn times_must_be_rfc3339_from_1970() {
        for (from, field) in [
            ("Issued At: 2026-01-01T00:00:00Z", Field::IssuedAt),
            (
                "Expiration Time: 2026-01-01T00:05:00Z",
                Field::ExpirationTime,
            ),
        ] {
            let label = field.label();
            for bad in [
                "2026-01-01",
                "2026-01-01 00:00:00Z",
                "2026-01-01T00:00:00",
                "2026-13-01T00:00:00Z",
                "1767225600",
                "1969-12-31T23:59:59Z",
                "",
            ] {
                let message = good_with(from, &format!("{label}{bad}"));
                assert!(
                    matches!(parse_err(&message), SiweError::Time { field: f, .. } if f == field),
                    "{bad:?}: {:?}",
                    parse(&message)
                );
            }
        }
        let message = format!("{GOOD}\nNot Before: yesterday");
        assert!(matches!(
            parse_err(&message),
            SiweError::Time {
                field: Field::NotBefore,
                ..
            }
        ));
        // The epoch itself is fine.
        let epoch = good_with("2026-01-01T00:00:00Z", "1970-01-01T00:00:00Z");
        assert_eq!(parse(&epoch).unwrap().issued_at, 0);
    }

    #[test]
    fn uri_and_resources_must_be_uris() {
        for uri in [
            "",
            "agentkeys.example/login",
            "1http://x",
            "https://a b",
            "https://x/%zz",
            "https://x/<y>",
            "https://[::1/",
            "https://x:80a/",
            "https://x/é",
        ] {
            let message = good_with(
                "URI: https://agentkeys.example/login",
                &format!("URI: {uri}"),
            );
            assert!(
                matches!(
                    parse_err(&message),
                    SiweError::Uri {
                        field: Field::Uri,
                        ..
                    }
                ),
                "{uri:?}: {:?}",
                parse(&message)
            );
            let message = format!("{GOOD}\nResources:\n- https://ok.example\n- {uri}");
            assert!(
                matches!(
                    parse_err(&message),
                    SiweError::Uri {
                        field: Field::Resources,
                        ..
                    }
                ),
                "{uri:?}: {:?}",
                parse(&message)
            );
        }
        for uri in [
            "https://agentkeys.example",
            "https://u:p@agentkeys.example:443/a/b?c=d&e#f",
            "http://[2001:db8::1]:8080/",
            "http://[v1.x:y]/",
            "mailto:a@example.com",
            "file:///etc/hosts",
            "urn:isbn:0451450523",
            "https://x/%41%62",
        ] {
            let message = good_with(
                "URI: https://agentkeys.example/login",
                &format!("URI: {uri}"),
            );
            assert_eq!(parse(&message).unwrap().uri, uri);
        }
    }

    #[test]
    fn request_id_must_be_pchars() {
        for (id, index, found) in [
            ("a b", 1, ' '),
            ("a/b", 1, '/'),
            ("a?", 1, '?'),
            ("%4", 0, '%'),
        ] {
            assert_eq!(
                parse_err(&format!("{GOOD}\nRequest ID: {id}")),
                SiweError::RequestId { index, found },
                "{id:?}"
            );
        }
    }

    #[test]
    fn too_long_is_refused() {
        let message = format!("{GOOD}\nRequest ID: {}", "a".repeat(MAX_MESSAGE_BYTES));
        assert_eq!(
            parse_err(&message),
            SiweError::TooLong {
                len: message.len(),
                max: MAX_MESSAGE_BYTES
            }
        );
    }

    #[test]
    fn errors_repeat_little_of_the_input() {
        let long = "x".repeat(5000);
        for message in [
            format!("{long} wants you to sign in with your Ethereum account:"),
            good_with("agentkeys.example", &format!("https://{long}")),
            good_with("Sign in to AgentKeys.", &format!("{long}\"")),
            good_with("Version: 1", &format!("Version: {long}")),
            format!("{GOOD}\n{long}"),
            good_with(
                "URI: https://agentkeys.example/login",
                &format!("URI: {long}"),
            ),
            long.clone(),
        ] {
            let e = parse_err(&message).to_string();
            assert!(!e.contains(&"x".repeat(SNIPPET_CHARS + 1)), "{e}");
            assert!(e.len() < 400, "{e}");
        }
    }

    // ---- signatures ----

    #[test]
    fn fixed_key_vector() {
        let key = key();
        assert_eq!(address_of(key.verifying_key()).eip55(), ADDRESS);
        let signature = sign(GOOD);
        assert_eq!(recover_signer(GOOD, &signature).unwrap().eip55(), ADDRESS);
        // v as 0/1 is the same signature.
        let mut zero_one = signature;
        zero_one[64] -= 27;
        assert_eq!(recover_signer(GOOD, &zero_one).unwrap().eip55(), ADDRESS);
        // Any text, not only SIWE messages.
        let any = sign("hello");
        assert_eq!(recover_signer("hello", &any).unwrap().eip55(), ADDRESS);
    }

    /// A signature made by another implementation (the SIWE reference library's test
    /// suite): the recovery must agree with it.
    #[test]
    fn signature_from_another_implementation() {
        let message = "localhost:4361 wants you to sign in with your Ethereum account:
0x6Da01670d8fc844e736095918bbE11fE8D564163

SIWE Notepad Example

URI: http://localhost:4361
Version: 1
Chain ID: 1
Nonce: kEWepMt9knR6lWJ6A
Issued At: 2021-12-07T18:28:18.807Z";
        let signature = hex::decode(
            "6228b3ecd7bf2df018183aeab6b6f1db1e9f4e3cbe24560404112e25363540eb\
             679934908143224d746bbb5e1aa65ab435684081f4dbb74a0fec57f98f40f505\
             1c",
        )
        .unwrap();
        let m = parse(message).unwrap();
        assert_eq!(m.issued_at, 1_638_901_698);
        assert_eq!(recover_signer(message, &signature).unwrap(), m.address);
    }

    #[test]
    fn signature_length() {
        let signature = sign(GOOD);
        for len in [0, 1, 64, 66, 130] {
            let mut s = signature.to_vec();
            s.resize(len, 0);
            assert_eq!(
                recover_signer(GOOD, &s),
                Err(SiweError::SignatureLength { len })
            );
        }
    }

    #[test]
    fn recovery_byte() {
        let mut signature = sign(GOOD);
        for v in [2, 3, 26, 29, 30, 35, 36, 255] {
            signature[64] = v;
            assert_eq!(
                recover_signer(GOOD, &signature),
                Err(SiweError::RecoveryByte { v })
            );
        }
    }

    #[test]
    fn high_s_is_refused() {
        let signature = sign(GOOD);
        let sig = Signature::from_slice(&signature[..64]).unwrap();
        // The same signature with s replaced by n - s and the parity flipped: valid for
        // the plain ECDSA equation, refused by EIP-2.
        let high = Signature::from_scalars(sig.r(), -*sig.s()).unwrap();
        assert!(high.normalize_s().is_some());
        let mut malleated = [0u8; 65];
        malleated[..64].copy_from_slice(&high.to_bytes());
        malleated[64] = if signature[64] == 27 { 28 } else { 27 };
        assert_eq!(recover_signer(GOOD, &malleated), Err(SiweError::HighS));
        assert_eq!(verify(GOOD, &malleated, &expect()), Err(SiweError::HighS));
    }

    #[test]
    fn zero_or_out_of_range_scalars_are_refused() {
        let signature = sign(GOOD);
        let mut zero_r = signature;
        zero_r[..32].fill(0);
        assert_eq!(
            recover_signer(GOOD, &zero_r),
            Err(SiweError::SignatureScalars)
        );
        let mut zero_s = signature;
        zero_s[32..64].fill(0);
        assert_eq!(
            recover_signer(GOOD, &zero_s),
            Err(SiweError::SignatureScalars)
        );
        let mut big_r = signature;
        big_r[..32].fill(0xff);
        assert_eq!(
            recover_signer(GOOD, &big_r),
            Err(SiweError::SignatureScalars)
        );
    }

    #[test]
    fn no_point_for_r_is_refused() {
        // Some small r are not the x coordinate of a curve point: recovery fails.
        let signature = sign(GOOD);
        let mut refused = 0;
        for r in 1u8..40 {
            let mut s = signature;
            s[..32].fill(0);
            s[31] = r;
            match recover_signer(GOOD, &s) {
                Err(SiweError::Recovery) => refused += 1,
                Ok(w) => assert_ne!(w.eip55(), ADDRESS),
                Err(e) => panic!("{e}"),
            }
        }
        assert!(refused > 0);
    }

    #[test]
    fn signature_of_another_message_is_refused() {
        let other = good_with("abcDEF0123456789", "abcDEF0123456780");
        let e = verify(GOOD, &sign(&other), &expect()).unwrap_err();
        assert!(
            matches!(&e, SiweError::SignerMismatch { address, .. } if address.eip55() == ADDRESS),
            "{e}"
        );
    }

    #[test]
    fn another_address_signature_is_refused() {
        let other = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let e = verify(GOOD, &sign_with(&other, GOOD), &expect()).unwrap_err();
        assert_eq!(
            e,
            SiweError::SignerMismatch {
                signer: address_of(other.verifying_key()),
                address: Wallet::parse(ADDRESS).unwrap(),
            }
        );
        assert!(e.to_string().contains("not by its address"));
    }

    // ---- verification ----

    #[test]
    fn verify_accepts_a_good_message() {
        let v = verify(GOOD, &sign(GOOD), &expect()).unwrap();
        assert_eq!(
            v,
            VerifiedSiwe {
                wallet: Wallet::parse(ADDRESS).unwrap(),
                nonce: "abcDEF0123456789".into(),
                expires_at: T0 + 300,
            }
        );
    }

    #[test]
    fn wrong_domain_is_refused() {
        for domain in ["evil.example", "agentkeys.example:443", "AGENTKEYS.EXAMPLE"] {
            let message = good_with("agentkeys.example wants", &format!("{domain} wants"));
            assert_eq!(
                verify_err(&message),
                SiweError::DomainMismatch {
                    found: domain.into(),
                    expected: "agentkeys.example".into()
                }
            );
        }
    }

    #[test]
    fn missing_expiration_is_refused() {
        let message = good_with("\nExpiration Time: 2026-01-01T00:05:00Z", "");
        assert_eq!(
            verify_err(&message),
            SiweError::MissingExpiration {
                max_lifetime_seconds: 600
            }
        );
    }

    #[test]
    fn lifetime_too_long_is_refused() {
        let message = good_with("00:05:00Z", "00:10:01Z");
        assert_eq!(
            verify_err(&message),
            SiweError::LifetimeTooLong {
                issued_at: T0,
                expiration_time: T0 + 601,
                lifetime: 601,
                max_lifetime_seconds: 600
            }
        );
        // Exactly the maximum is fine.
        let message = good_with("00:05:00Z", "00:10:00Z");
        assert!(verify(&message, &sign(&message), &expect()).is_ok());
    }

    #[test]
    fn expiring_before_issued_is_refused() {
        let message = good_with(
            "Expiration Time: 2026-01-01T00:05:00Z",
            "Expiration Time: 2025-12-31T23:59:59Z",
        );
        assert_eq!(
            verify_err(&message),
            SiweError::ExpiresBeforeIssued {
                issued_at: T0,
                expiration_time: T0 - 1
            }
        );
    }

    #[test]
    fn expired_is_refused() {
        let at = |now| SiweExpectations { now, ..expect() };
        let signature = sign(GOOD);
        // Expiration T0 + 300, skew 30: valid while now < T0 + 330.
        assert!(verify(GOOD, &signature, &at(T0 + 329)).is_ok());
        assert_eq!(
            verify(GOOD, &signature, &at(T0 + 330)),
            Err(SiweError::Expired {
                expiration_time: T0 + 300,
                now: T0 + 330,
                skew: 30
            })
        );
        assert!(matches!(
            verify(GOOD, &signature, &at(u64::MAX)),
            Err(SiweError::Expired { .. })
        ));
    }

    #[test]
    fn issued_in_the_future_is_refused() {
        let at = |now| SiweExpectations { now, ..expect() };
        let signature = sign(GOOD);
        // Issued At T0, skew 30: accepted from T0 - 30 on.
        assert!(verify(GOOD, &signature, &at(T0 - 30)).is_ok());
        assert_eq!(
            verify(GOOD, &signature, &at(T0 - 31)),
            Err(SiweError::IssuedInFuture {
                issued_at: T0,
                now: T0 - 31,
                skew: 30
            })
        );
        assert!(matches!(
            verify(GOOD, &signature, &at(0)),
            Err(SiweError::IssuedInFuture { .. })
        ));
    }

    #[test]
    fn not_yet_valid_is_refused() {
        let message = format!("{GOOD}\nNot Before: 2026-01-01T00:02:00Z");
        let signature = sign(&message);
        let at = |now| SiweExpectations { now, ..expect() };
        assert!(verify(&message, &signature, &at(T0 + 90)).is_ok());
        assert_eq!(
            verify(&message, &signature, &at(T0 + 89)),
            Err(SiweError::NotYetValid {
                not_before: T0 + 120,
                now: T0 + 89,
                skew: 30
            })
        );
    }

    #[test]
    fn verify_reports_parse_errors() {
        assert!(matches!(
            verify_err(&good_with("Version: 1", "Version: 2")),
            SiweError::Version { .. }
        ));
        assert!(matches!(
            verify(GOOD, &[0u8; 64], &expect()),
            Err(SiweError::SignatureLength { len: 64 })
        ));
        let mut v29 = sign(GOOD);
        v29[64] = 29;
        assert_eq!(
            verify(GOOD, &v29, &expect()),
            Err(SiweError::RecoveryByte { v: 29 })
        );
    }

    #[test]
    fn personal_sign_hash_vector() {
        // keccak256("\x19Ethereum Signed Message:\n5hello"), as every Ethereum library
        // computes it for personal_sign("hello").
        assert_eq!(
            hex::encode(personal_sign_hash("hello")),
            "50b2c43fd39106bafbba0da34fc430e1f91e3c96ea2acee2bc34119f92b37750"
        );
    }
}
