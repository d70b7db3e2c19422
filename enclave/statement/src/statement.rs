//! What the enclave attests. Every attestation document the enclave asks the NSM for
//! carries a *statement*: a tag that names its kind and version, then its fields, one
//! `name=value` line each, in a fixed order.
//!
//! ```text
//! agentkeys/jwks/v2                     agentkeys/audit-checkpoint/v1
//! jwks_sha256=<64 hex>                  epoch=<decimal>
//! kms_key_arn=<key ARN>                 seq=<decimal>
//! sealed_seed_sha256=<64 hex>           head=<64 hex>
//! key_version=<decimal>                 module_id=<NSM module id>
//! audit_epoch=<decimal>
//! module_id=<NSM module id>             agentkeys/acme-account/v1
//! auth_modes=<mode>[,<mode>…]           directory=<URL>
//! session_keys=[<thumbprint>[,…]]       account_uri=<URL>
//! tls_spki_sha256=<64 hex>              account_key_thumbprint=<RFC 7638 base64url>
//!                                       hostname=<issuer host>
//!                                       tls_spki_sha256=<64 hex>
//!                                       module_id=<NSM module id>
//! ```
//!
//! Every line ends with `\n`; hex is lower case; decimals have no sign and no leading
//! zero. The tag keeps one kind of document from passing for another (a JWKS attestation
//! is never an audit checkpoint, whatever its length), and its version lets the format
//! change without ambiguity. Plain text keeps the statement readable in any decoded
//! document and easy to rebuild in any language.
//!
//! # Where a statement sits
//!
//! The NSM signs at most [`MAX_USER_DATA_BYTES`] of `user_data`. The audit checkpoint
//! always fits, so it is the document's `user_data` itself. A JWKS or ACME account
//! statement can be longer (four session keys, a long hostname), so the document's
//! `user_data` holds its *binding* instead, and the statement travels beside the
//! document (the wire's `Attestation.statement`, the JSON's `statement_text`):
//!
//! ```text
//! <the statement's tag>
//! statement_sha256=<64 hex: SHA-256 of the statement's bytes>
//! ```
//!
//! A verifier reads the binding from the signed document, checks the served statement's
//! hash against it, and only then reads the statement
//! ([`JwksStatement::decode_attested`], [`AcmeAccountStatement::decode_attested`]).

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::kms_key_arn::KmsKeyArn;

/// Tag of the statement attested beside the JWKS. Version 2 adds `tls_spki_sha256`, the
/// key the issuer's TLS handshake presents; version 1 is no longer accepted.
pub const JWKS_TAG: &str = "agentkeys/jwks/v2";
/// Tag of the statement attested beside the enclave's ACME account.
pub const ACME_ACCOUNT_TAG: &str = "agentkeys/acme-account/v1";
/// Longest URL (`directory`, `account_uri`) accepted in a statement: room for any CA's
/// account URL (Let's Encrypt's are about 60 characters) while the largest acme-account
/// statement stays below [`MAX_STATEMENT_BYTES`].
pub const MAX_URL_CHARS: usize = 200;
/// Longest hostname: RFC 1035 section 2.3.4 limits a domain name to 255 octets, 253
/// characters in its dotted text form.
pub const MAX_HOSTNAME_CHARS: usize = 253;
/// Tag of an audit chain checkpoint.
pub const CHECKPOINT_TAG: &str = "agentkeys/audit-checkpoint/v1";
/// Longest module id accepted: a Nitro module id (`i-<17 hex>-enc<16 hex>`) has 41
/// characters; 64 leaves room without letting a field grow unbounded.
pub const MAX_MODULE_ID_CHARS: usize = 64;
/// Largest `user_data` the NSM signs (AWS Nitro Enclaves attestation document:
/// `user_data` is 0 to 512 bytes).
pub const MAX_USER_DATA_BYTES: usize = 512;
/// Largest statement accepted: the largest ACME account statement (two URLs of
/// [`MAX_URL_CHARS`], a hostname of [`MAX_HOSTNAME_CHARS`], a thumbprint, a hash and a
/// module id) is under 1 KiB; 4 KiB bounds what a verifier reads.
pub const MAX_STATEMENT_BYTES: usize = 4096;
/// The binding's field: SHA-256 of the statement it binds.
const BINDING_FIELD: &str = "statement_sha256";

/// Why bytes are not the statement expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    /// Larger than any statement can be.
    #[error("statement is {actual} bytes, more than {max}")]
    TooLong {
        /// Size found.
        actual: usize,
        /// [`MAX_STATEMENT_BYTES`].
        max: usize,
    },
    /// Not UTF-8 text ending in a newline.
    #[error("statement is not newline-terminated UTF-8 text")]
    NotText,
    /// Another kind of statement, or none.
    #[error("statement tag is {found:?}, expected {expected:?}")]
    Tag {
        /// The tag wanted.
        expected: &'static str,
        /// The first line found (at most 64 characters).
        found: String,
    },
    /// A field is missing, out of order, or its line is malformed.
    #[error("statement field {expected}: found line {found:?}")]
    FieldLine {
        /// The field wanted at this place.
        expected: &'static str,
        /// The line found (at most 64 characters), or empty at the end.
        found: String,
    },
    /// A field's value is malformed.
    #[error("statement field {field}: {reason}")]
    Value {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Lines after the last field.
    #[error("statement has lines after its last field: {found:?}")]
    Trailing {
        /// The first extra line (at most 64 characters).
        found: String,
    },
    /// The statement served beside a document is not the one its binding names.
    #[error(
        "the served statement is not the attested one: the document binds SHA-256 {attested}, \
         the statement served beside it hashes to {served}"
    )]
    NotAttested {
        /// Hash in the document's binding (hex).
        attested: String,
        /// Hash of the served statement (hex).
        served: String,
    },
}

/// The statement attested beside the JWKS: which key material the enclave serves, where
/// it came from, and which enclave says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksStatement {
    /// SHA-256 of the exact JWKS bytes served.
    pub jwks_sha256: [u8; 32],
    /// The KMS key the enclave is pinned to.
    pub kms_key_arn: KmsKeyArn,
    /// SHA-256 of the sealed seed (KMS `CiphertextBlob`) the keys were derived from.
    pub sealed_seed_sha256: [u8; 32],
    /// The signing key version.
    pub key_version: u32,
    /// The audit chain epoch of this boot.
    pub audit_epoch: u64,
    /// The NSM module id of this enclave.
    pub module_id: String,
    /// The authorization modes the enclave runs (`signed-session`, `wallet-signature`,
    /// `parent-vouched`), comma-separated in the statement.
    pub auth_modes: Vec<String>,
    /// RFC 7638 thumbprints of the session backend keys it trusts (empty unless
    /// `signed-session`), comma-separated.
    pub session_keys: Vec<String>,
    /// SHA-256 of the DER SubjectPublicKeyInfo of the issuer's TLS key (derived from the
    /// same seed): the key a client must see in the issuer's TLS handshake.
    pub tls_spki_sha256: [u8; 32],
}

/// The statement attested beside the enclave's ACME account: which account at which CA
/// may obtain certificates for the issuer host (the CAA `accounturi`), and the TLS key
/// those certificates certify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeAccountStatement {
    /// The CA's ACME directory URL (measured configuration of the image).
    pub directory: String,
    /// The account URL the CA returned for the enclave's account key.
    pub account_uri: String,
    /// RFC 7638 thumbprint of the account key, base64url without padding.
    pub account_key_thumbprint: String,
    /// The issuer host the certificates name.
    pub hostname: String,
    /// SHA-256 of the DER SubjectPublicKeyInfo of the issuer's TLS key.
    pub tls_spki_sha256: [u8; 32],
    /// The NSM module id of this enclave.
    pub module_id: String,
}

/// The plain fields `/.well-known/acme-account` serves beside an
/// [`AcmeAccountStatement`] (`docs/api.md`), in the order they are checked.
pub const ACME_ACCOUNT_SERVED_FIELDS: [&str; 6] = [
    "directory",
    "account_uri",
    "account_key_thumbprint",
    "hostname",
    "tls_spki_sha256",
    "caa_issue_value",
];

/// The CAA `validationmethods` parameter that binds the issuer host to TLS-ALPN-01 (RFC
/// 8657 §4; the method of RFC 8737, the only one the enclave answers).
pub const CAA_VALIDATION_METHODS: &str = "validationmethods=tls-alpn-01";

/// The CAA `issue` parameters that let only `account_uri` obtain certificates, and only
/// by TLS-ALPN-01 (RFC 8657 §3 and §4): `accounturi=<uri>; validationmethods=tls-alpn-01`.
/// One home for the value the enclave publishes, `agentkeys-broker caa-record` prints and
/// `agentkeys-attest` checks.
pub fn caa_issue_parameters(account_uri: &str) -> String {
    format!("accounturi={account_uri}; {CAA_VALIDATION_METHODS}")
}

/// Most session key thumbprints a statement carries.
pub const MAX_SESSION_KEYS: usize = 4;

/// An audit chain checkpoint: the chain position `(epoch, seq, head)` of one enclave.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CheckpointStatement {
    /// Audit chain epoch.
    pub epoch: u64,
    /// Last sequence number included (0 = no JWT yet, `head` = genesis).
    pub seq: u64,
    /// Chain head after `seq`.
    pub head: [u8; 32],
    /// The NSM module id of the enclave that keeps this chain.
    pub module_id: String,
}

impl JwksStatement {
    /// The statement's bytes, served beside the document that binds them ([`user_data`](Self::user_data)).
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("{JWKS_TAG}\n");
        line(&mut s, "jwks_sha256", &hex::encode(self.jwks_sha256));
        line(&mut s, "kms_key_arn", self.kms_key_arn.as_str());
        line(
            &mut s,
            "sealed_seed_sha256",
            &hex::encode(self.sealed_seed_sha256),
        );
        line(&mut s, "key_version", &self.key_version.to_string());
        line(&mut s, "audit_epoch", &self.audit_epoch.to_string());
        line(&mut s, "module_id", &self.module_id);
        line(&mut s, "auth_modes", &self.auth_modes.join(","));
        line(&mut s, "session_keys", &self.session_keys.join(","));
        line(
            &mut s,
            "tls_spki_sha256",
            &hex::encode(self.tls_spki_sha256),
        );
        s.into_bytes()
    }

    /// Parses a statement; every deviation from [`encode`](Self::encode)'s form is an
    /// error naming the field.
    pub fn decode(bytes: &[u8]) -> Result<JwksStatement, StatementError> {
        let mut fields = Fields::new(bytes, JWKS_TAG)?;
        let jwks_sha256 = hash32("jwks_sha256", fields.next("jwks_sha256")?)?;
        let arn = fields.next("kms_key_arn")?;
        let kms_key_arn = KmsKeyArn::parse(arn).map_err(|e| StatementError::Value {
            field: "kms_key_arn",
            reason: e.to_string(),
        })?;
        let sealed_seed_sha256 = hash32("sealed_seed_sha256", fields.next("sealed_seed_sha256")?)?;
        let key_version = decimal("key_version", fields.next("key_version")?)?;
        let key_version = u32::try_from(key_version).map_err(|_| StatementError::Value {
            field: "key_version",
            reason: format!("{key_version} is larger than a 32-bit key version"),
        })?;
        let audit_epoch = decimal("audit_epoch", fields.next("audit_epoch")?)?;
        let module_id = module_id(fields.next("module_id")?)?;
        let auth_modes = auth_modes(fields.next("auth_modes")?)?;
        let session_keys = session_keys(fields.next("session_keys")?)?;
        let tls_spki_sha256 = hash32("tls_spki_sha256", fields.next("tls_spki_sha256")?)?;
        fields.end()?;
        Ok(JwksStatement {
            jwks_sha256,
            kms_key_arn,
            sealed_seed_sha256,
            key_version,
            audit_epoch,
            module_id,
            auth_modes,
            session_keys,
            tls_spki_sha256,
        })
    }
}

impl AcmeAccountStatement {
    /// The statement's bytes, served beside the document that binds them ([`user_data`](Self::user_data)).
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("{ACME_ACCOUNT_TAG}\n");
        line(&mut s, "directory", &self.directory);
        line(&mut s, "account_uri", &self.account_uri);
        line(
            &mut s,
            "account_key_thumbprint",
            &self.account_key_thumbprint,
        );
        line(&mut s, "hostname", &self.hostname);
        line(
            &mut s,
            "tls_spki_sha256",
            &hex::encode(self.tls_spki_sha256),
        );
        line(&mut s, "module_id", &self.module_id);
        s.into_bytes()
    }

    /// Parses a statement; every deviation from [`encode`](Self::encode)'s form is an
    /// error naming the field.
    pub fn decode(bytes: &[u8]) -> Result<AcmeAccountStatement, StatementError> {
        let mut fields = Fields::new(bytes, ACME_ACCOUNT_TAG)?;
        let directory = https_url("directory", fields.next("directory")?)?;
        let account_uri = https_url("account_uri", fields.next("account_uri")?)?;
        let account_key_thumbprint = thumbprint(
            "account_key_thumbprint",
            fields.next("account_key_thumbprint")?,
        )?;
        let hostname = hostname(fields.next("hostname")?)?;
        let tls_spki_sha256 = hash32("tls_spki_sha256", fields.next("tls_spki_sha256")?)?;
        let module_id = module_id(fields.next("module_id")?)?;
        fields.end()?;
        Ok(AcmeAccountStatement {
            directory,
            account_uri,
            account_key_thumbprint,
            hostname,
            tls_spki_sha256,
            module_id,
        })
    }
}

impl JwksStatement {
    /// The document's `user_data` for this statement: its binding (see the module docs).
    pub fn user_data(&self) -> Vec<u8> {
        binding(JWKS_TAG, &self.encode())
    }

    /// Reads `statement`, served beside a document whose signed `user_data` is
    /// `user_data`: the binding must name this kind of statement and the statement's hash.
    pub fn decode_attested(
        user_data: &[u8],
        statement: &[u8],
    ) -> Result<JwksStatement, StatementError> {
        check_binding(JWKS_TAG, user_data, statement)?;
        JwksStatement::decode(statement)
    }
}

impl AcmeAccountStatement {
    /// The document's `user_data` for this statement: its binding (see the module docs).
    pub fn user_data(&self) -> Vec<u8> {
        binding(ACME_ACCOUNT_TAG, &self.encode())
    }

    /// Reads `statement`, served beside a document whose signed `user_data` is
    /// `user_data`: the binding must name this kind of statement and the statement's hash.
    pub fn decode_attested(
        user_data: &[u8],
        statement: &[u8],
    ) -> Result<AcmeAccountStatement, StatementError> {
        check_binding(ACME_ACCOUNT_TAG, user_data, statement)?;
        AcmeAccountStatement::decode(statement)
    }

    /// The plain fields `/.well-known/acme-account` serves beside the statement, named as
    /// in [`ACME_ACCOUNT_SERVED_FIELDS`] and in that order, each with the value this
    /// statement gives it. The enclave serves exactly these; a verifier holds what it was
    /// served against them ([`first_disagreement`](Self::first_disagreement)).
    pub fn served_fields(&self) -> [(&'static str, String); 6] {
        let [directory, account_uri, thumbprint, hostname, spki, caa] = ACME_ACCOUNT_SERVED_FIELDS;
        [
            (directory, self.directory.clone()),
            (account_uri, self.account_uri.clone()),
            (thumbprint, self.account_key_thumbprint.clone()),
            (hostname, self.hostname.clone()),
            (spki, hex::encode(self.tls_spki_sha256)),
            (caa, caa_issue_parameters(&self.account_uri)),
        ]
    }

    /// The first served field that is not what this statement says, as `(name, served,
    /// attested)`; `served` looks a field up by name (a missing one reads as empty).
    pub fn first_disagreement<'a>(
        &self,
        served: impl Fn(&str) -> Option<&'a str>,
    ) -> Option<(&'static str, String, String)> {
        self.served_fields()
            .into_iter()
            .find_map(|(name, attested)| {
                let value = served(name).unwrap_or_default();
                (value != attested).then(|| (name, value.to_owned(), attested))
            })
    }
}

/// The binding of `statement` under `tag`.
fn binding(tag: &str, statement: &[u8]) -> Vec<u8> {
    let mut s = format!("{tag}\n");
    line(
        &mut s,
        BINDING_FIELD,
        &hex::encode(Sha256::digest(statement)),
    );
    s.into_bytes()
}

/// Checks that `user_data` is the binding of `statement` under `tag`.
fn check_binding(
    tag: &'static str,
    user_data: &[u8],
    statement: &[u8],
) -> Result<(), StatementError> {
    let mut fields = Fields::new(user_data, tag)?;
    let attested = hash32(BINDING_FIELD, fields.next(BINDING_FIELD)?)?;
    fields.end()?;
    let served: [u8; 32] = Sha256::digest(statement).into();
    if attested != served {
        return Err(StatementError::NotAttested {
            attested: hex::encode(attested),
            served: hex::encode(served),
        });
    }
    Ok(())
}

impl CheckpointStatement {
    /// The statement's bytes (the document's `user_data`).
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("{CHECKPOINT_TAG}\n");
        line(&mut s, "epoch", &self.epoch.to_string());
        line(&mut s, "seq", &self.seq.to_string());
        line(&mut s, "head", &hex::encode(self.head));
        line(&mut s, "module_id", &self.module_id);
        s.into_bytes()
    }

    /// Parses a statement; every deviation from [`encode`](Self::encode)'s form is an
    /// error naming the field.
    pub fn decode(bytes: &[u8]) -> Result<CheckpointStatement, StatementError> {
        let mut fields = Fields::new(bytes, CHECKPOINT_TAG)?;
        let epoch = decimal("epoch", fields.next("epoch")?)?;
        let seq = decimal("seq", fields.next("seq")?)?;
        let head = hash32("head", fields.next("head")?)?;
        let module_id = module_id(fields.next("module_id")?)?;
        fields.end()?;
        Ok(CheckpointStatement {
            epoch,
            seq,
            head,
            module_id,
        })
    }
}

fn line(out: &mut String, name: &str, value: &str) {
    let _ = writeln!(out, "{name}={value}");
}

fn excerpt(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The lines of a statement after its tag.
struct Fields<'a> {
    lines: std::str::Split<'a, char>,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8], tag: &'static str) -> Result<Fields<'a>, StatementError> {
        if bytes.len() > MAX_STATEMENT_BYTES {
            return Err(StatementError::TooLong {
                actual: bytes.len(),
                max: MAX_STATEMENT_BYTES,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| StatementError::NotText)?;
        let body = text.strip_suffix('\n').ok_or(StatementError::NotText)?;
        let mut lines = body.split('\n');
        let first = lines.next().unwrap_or_default();
        if first != tag {
            return Err(StatementError::Tag {
                expected: tag,
                found: excerpt(first),
            });
        }
        Ok(Fields { lines })
    }

    fn next(&mut self, name: &'static str) -> Result<&'a str, StatementError> {
        let found = self.lines.next().unwrap_or_default();
        found
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
            .ok_or_else(|| StatementError::FieldLine {
                expected: name,
                found: excerpt(found),
            })
    }

    fn end(mut self) -> Result<(), StatementError> {
        match self.lines.next() {
            None => Ok(()),
            Some(extra) => Err(StatementError::Trailing {
                found: excerpt(extra),
            }),
        }
    }
}

fn hash32(field: &'static str, value: &str) -> Result<[u8; 32], StatementError> {
    let err = |reason: &str| StatementError::Value {
        field,
        reason: reason.to_string(),
    };
    if value.len() != 64
        || !value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(err("expected 64 lower-case hex digits"));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(value, &mut out).map_err(|e| err(&e.to_string()))?;
    Ok(out)
}

fn decimal(field: &'static str, value: &str) -> Result<u64, StatementError> {
    let canonical = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_digit())
        && (value == "0" || !value.starts_with('0'));
    if !canonical {
        return Err(StatementError::Value {
            field,
            reason: format!(
                "{:?} is not a decimal without leading zeros",
                excerpt(value)
            ),
        });
    }
    value.parse().map_err(|_| StatementError::Value {
        field,
        reason: format!("{value} does not fit in 64 bits"),
    })
}

/// A non-empty comma-separated list of mode names (lower-case letters and hyphens).
fn auth_modes(value: &str) -> Result<Vec<String>, StatementError> {
    let modes: Vec<String> = value.split(',').map(str::to_string).collect();
    let ok = modes.len() <= 3
        && modes.iter().all(|m| {
            !m.is_empty() && m.len() <= 32 && m.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
        });
    if !ok {
        return Err(StatementError::Value {
            field: "auth_modes",
            reason: format!(
                "{:?} is not 1 to 3 comma-separated mode names",
                excerpt(value)
            ),
        });
    }
    Ok(modes)
}

/// A comma-separated list (possibly empty) of 43-character base64url thumbprints.
fn session_keys(value: &str) -> Result<Vec<String>, StatementError> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = value.split(',').map(str::to_string).collect();
    let ok = keys.len() <= MAX_SESSION_KEYS
        && keys.iter().all(|k| {
            k.len() == 43
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !ok {
        return Err(StatementError::Value {
            field: "session_keys",
            reason: format!(
                "{:?} is not up to {MAX_SESSION_KEYS} comma-separated RFC 7638 thumbprints",
                excerpt(value)
            ),
        });
    }
    Ok(keys)
}

/// An `https://` URL of printable ASCII without spaces, at most [`MAX_URL_CHARS`].
fn https_url(field: &'static str, value: &str) -> Result<String, StatementError> {
    let ok = value.len() <= MAX_URL_CHARS
        && value.len() > "https://".len()
        && value.starts_with("https://")
        && value.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(StatementError::Value {
            field,
            reason: format!(
                "{:?} is not an https:// URL of at most {MAX_URL_CHARS} printable characters",
                excerpt(value)
            ),
        });
    }
    Ok(value.to_string())
}

/// One 43-character base64url RFC 7638 thumbprint.
fn thumbprint(field: &'static str, value: &str) -> Result<String, StatementError> {
    let ok = value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(StatementError::Value {
            field,
            reason: format!("{:?} is not an RFC 7638 thumbprint", excerpt(value)),
        });
    }
    Ok(value.to_string())
}

/// A DNS name in lower case: labels of letters, digits and hyphens, dot-separated.
fn hostname(value: &str) -> Result<String, StatementError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_HOSTNAME_CHARS
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if !ok {
        return Err(StatementError::Value {
            field: "hostname",
            reason: format!(
                "{:?} is not a lower-case DNS name of at most {MAX_HOSTNAME_CHARS} characters",
                excerpt(value)
            ),
        });
    }
    Ok(value.to_string())
}

fn module_id(value: &str) -> Result<String, StatementError> {
    let ok = !value.is_empty()
        && value.chars().count() <= MAX_MODULE_ID_CHARS
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !ok {
        return Err(StatementError::Value {
            field: "module_id",
            reason: format!(
                "{:?} is not 1 to {MAX_MODULE_ID_CHARS} letters, digits and hyphens",
                excerpt(value)
            ),
        });
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    const MODULE: &str = "i-0123456789abcdef0-enc0123456789abcdef";

    fn jwks() -> JwksStatement {
        JwksStatement {
            jwks_sha256: [0xab; 32],
            kms_key_arn: KmsKeyArn::parse(ARN).unwrap(),
            sealed_seed_sha256: [0x01; 32],
            key_version: 2,
            audit_epoch: 17,
            module_id: MODULE.into(),
            auth_modes: vec!["signed-session".into(), "wallet-signature".into()],
            session_keys: vec!["NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs".into()],
            tls_spki_sha256: [0x7e; 32],
        }
    }

    fn account() -> AcmeAccountStatement {
        AcmeAccountStatement {
            directory: "https://acme-v02.api.letsencrypt.org/directory".into(),
            account_uri: "https://acme-v02.api.letsencrypt.org/acme/acct/123456789".into(),
            account_key_thumbprint: "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs".into(),
            hostname: "issuer.example.com".into(),
            tls_spki_sha256: [0x7e; 32],
            module_id: MODULE.into(),
        }
    }

    fn checkpoint() -> CheckpointStatement {
        CheckpointStatement {
            epoch: 17,
            seq: 0,
            head: [0x5a; 32],
            module_id: MODULE.into(),
        }
    }

    #[test]
    fn the_encoding_is_the_documented_text() {
        let text = String::from_utf8(jwks().encode()).unwrap();
        assert_eq!(
            text,
            format!(
                "agentkeys/jwks/v2\njwks_sha256={}\nkms_key_arn={ARN}\nsealed_seed_sha256={}\nkey_version=2\naudit_epoch=17\nmodule_id={MODULE}\nauth_modes=signed-session,wallet-signature\nsession_keys=NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs\ntls_spki_sha256={}\n",
                "ab".repeat(32),
                "01".repeat(32),
                "7e".repeat(32)
            )
        );
        let text = String::from_utf8(account().encode()).unwrap();
        assert_eq!(
            text,
            format!(
                "agentkeys/acme-account/v1\ndirectory=https://acme-v02.api.letsencrypt.org/directory\naccount_uri=https://acme-v02.api.letsencrypt.org/acme/acct/123456789\naccount_key_thumbprint=NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs\nhostname=issuer.example.com\ntls_spki_sha256={}\nmodule_id={MODULE}\n",
                "7e".repeat(32)
            )
        );
        let text = String::from_utf8(checkpoint().encode()).unwrap();
        assert_eq!(
            text,
            format!(
                "agentkeys/audit-checkpoint/v1\nepoch=17\nseq=0\nhead={}\nmodule_id={MODULE}\n",
                "5a".repeat(32)
            )
        );
    }

    #[test]
    fn statements_round_trip() {
        assert_eq!(JwksStatement::decode(&jwks().encode()).unwrap(), jwks());
        assert_eq!(
            AcmeAccountStatement::decode(&account().encode()).unwrap(),
            account()
        );
        assert_eq!(
            CheckpointStatement::decode(&checkpoint().encode()).unwrap(),
            checkpoint()
        );
        let max = CheckpointStatement {
            epoch: u64::MAX,
            seq: u64::MAX,
            ..checkpoint()
        };
        assert_eq!(CheckpointStatement::decode(&max.encode()).unwrap(), max);
    }

    #[test]
    fn one_kind_never_passes_for_the_other() {
        assert!(matches!(
            CheckpointStatement::decode(&jwks().encode()),
            Err(StatementError::Tag {
                expected: CHECKPOINT_TAG,
                ..
            })
        ));
        assert!(matches!(
            JwksStatement::decode(&checkpoint().encode()),
            Err(StatementError::Tag {
                expected: JWKS_TAG,
                ..
            })
        ));
        assert!(matches!(
            AcmeAccountStatement::decode(&jwks().encode()),
            Err(StatementError::Tag {
                expected: ACME_ACCOUNT_TAG,
                ..
            })
        ));
        assert!(matches!(
            JwksStatement::decode(&account().encode()),
            Err(StatementError::Tag { .. })
        ));
        // The untagged 48-byte checkpoint of the first format, and a bare JWKS hash.
        for legacy in [vec![0u8; 48], vec![0xab; 32]] {
            assert!(CheckpointStatement::decode(&legacy).is_err());
            assert!(JwksStatement::decode(&legacy).is_err());
        }
    }

    fn edited(good: &[u8], from: &str, to: &str) -> Vec<u8> {
        String::from_utf8(good.to_vec())
            .unwrap()
            .replacen(from, to, 1)
            .into_bytes()
    }

    #[test]
    fn each_malformed_field_is_named() {
        let good = checkpoint().encode();
        let cases: [(&str, &str, &str); 10] = [
            (
                "agentkeys/audit-checkpoint/v1",
                "agentkeys/audit-checkpoint/v2",
                "tag",
            ),
            ("epoch=17", "epoch=017", "epoch"),
            ("epoch=17", "epoch=-1", "epoch"),
            ("epoch=17", "epoch=18446744073709551616", "epoch"),
            ("seq=0\n", "", "seq"),
            ("seq=0", "sequence=0", "seq"),
            ("head=5a", "head=5A", "head"),
            ("head=5a", "head=", "head"),
            ("module_id=i-", "module_id=i_", "module_id"),
            ("module_id=", "module_id=\n", "module_id"),
        ];
        for (from, to, field) in cases {
            let bad = edited(&good, from, to);
            let e = CheckpointStatement::decode(&bad).unwrap_err();
            assert!(e.to_string().contains(field), "{from} -> {to}: {e}");
        }
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"extra=1\n");
        assert!(matches!(
            CheckpointStatement::decode(&trailing),
            Err(StatementError::Trailing { .. })
        ));
        assert_eq!(
            CheckpointStatement::decode(&good[..good.len() - 1]),
            Err(StatementError::NotText)
        );
        assert_eq!(
            CheckpointStatement::decode(&[0xff, b'\n']),
            Err(StatementError::NotText)
        );
        assert!(matches!(
            CheckpointStatement::decode(&vec![b'a'; MAX_STATEMENT_BYTES + 1]),
            Err(StatementError::TooLong { .. })
        ));
    }

    #[test]
    fn a_jwks_statement_refuses_an_alias_and_an_oversized_key_version() {
        let good = jwks().encode();
        let alias = edited(
            &good,
            ARN,
            "arn:aws:kms:eu-west-1:111122223333:alias/agentkeys",
        );
        let e = JwksStatement::decode(&alias).unwrap_err();
        assert!(e.to_string().contains("kms_key_arn"), "{e}");
        let big = edited(&good, "key_version=2", "key_version=4294967296");
        let e = JwksStatement::decode(&big).unwrap_err();
        assert!(e.to_string().contains("key_version"), "{e}");
    }

    #[test]
    fn auth_modes_and_session_keys_are_checked() {
        let good = jwks().encode();
        let decoded = JwksStatement::decode(&good).unwrap();
        assert_eq!(decoded, jwks());
        let none = JwksStatement {
            auth_modes: vec!["parent-vouched".into()],
            session_keys: vec![],
            ..jwks()
        };
        assert_eq!(JwksStatement::decode(&none.encode()).unwrap(), none);
        for (from, to, field) in [
            (
                "auth_modes=signed-session,wallet-signature",
                "auth_modes=",
                "auth_modes",
            ),
            (
                "auth_modes=signed-session,wallet-signature",
                "auth_modes=Signed",
                "auth_modes",
            ),
            (
                "auth_modes=signed-session,wallet-signature",
                "auth_modes=a,b,c,d",
                "auth_modes",
            ),
            (
                "session_keys=NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
                "session_keys=short",
                "session_keys",
            ),
            (
                "session_keys=NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
                "session_keys=NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9X+",
                "session_keys",
            ),
        ] {
            let e = JwksStatement::decode(&edited(&good, from, to)).unwrap_err();
            assert!(e.to_string().contains(field), "{to}: {e}");
        }
    }

    #[test]
    fn a_version_1_jwks_statement_is_refused() {
        let v2 = String::from_utf8(jwks().encode()).unwrap();
        let v1 = v2
            .replacen("agentkeys/jwks/v2", "agentkeys/jwks/v1", 1)
            .replacen(&format!("tls_spki_sha256={}\n", "7e".repeat(32)), "", 1);
        assert!(matches!(
            JwksStatement::decode(v1.as_bytes()),
            Err(StatementError::Tag { .. })
        ));
        // The v2 tag without the TLS key hash is refused too, naming the field.
        let missing = v2.replacen(&format!("tls_spki_sha256={}\n", "7e".repeat(32)), "", 1);
        let e = JwksStatement::decode(missing.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("tls_spki_sha256"), "{e}");
        let upper = v2.replacen("tls_spki_sha256=7e", "tls_spki_sha256=7E", 1);
        let e = JwksStatement::decode(upper.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("tls_spki_sha256"), "{e}");
    }

    #[test]
    fn each_malformed_acme_account_field_is_named() {
        let good = account().encode();
        let cases: [(&str, &str, &str); 9] = [
            ("directory=https://", "directory=http://", "directory"),
            (
                "directory=https://acme-v02",
                "directory=https://acme v02",
                "directory",
            ),
            ("account_uri=https://", "account_uri=", "account_uri"),
            (
                "account_key_thumbprint=NzbL",
                "account_key_thumbprint=+zbL",
                "account_key_thumbprint",
            ),
            ("hostname=issuer", "hostname=Issuer", "hostname"),
            ("hostname=issuer.", "hostname=-issuer.", "hostname"),
            (
                "hostname=issuer.example.com",
                "hostname=issuer..com",
                "hostname",
            ),
            ("tls_spki_sha256=7e", "tls_spki_sha256=7", "tls_spki_sha256"),
            ("module_id=i-", "module_id=i_", "module_id"),
        ];
        for (from, to, field) in cases {
            let bad = edited(&good, from, to);
            let e = AcmeAccountStatement::decode(&bad).unwrap_err();
            assert!(e.to_string().contains(field), "{from} -> {to}: {e}");
        }
        let long = edited(
            &good,
            "account_uri=https://",
            &format!("account_uri=https://{}", "a".repeat(MAX_URL_CHARS)),
        );
        let e = AcmeAccountStatement::decode(&long).unwrap_err();
        assert!(e.to_string().contains("account_uri"), "{e}");
    }

    #[test]
    fn the_largest_acme_account_statement_is_read_and_its_binding_fits_the_nsm() {
        let s = AcmeAccountStatement {
            directory: format!("https://{}", "d".repeat(MAX_URL_CHARS - 8)),
            account_uri: format!("https://{}", "a".repeat(MAX_URL_CHARS - 8)),
            hostname: "h".repeat(63)
                + "."
                + &"h".repeat(63)
                + "."
                + &"h".repeat(63)
                + "."
                + &"h".repeat(61),
            module_id: "m".repeat(MAX_MODULE_ID_CHARS),
            ..account()
        };
        assert_eq!(s.hostname.len(), MAX_HOSTNAME_CHARS);
        assert!(s.encode().len() <= MAX_STATEMENT_BYTES);
        assert_eq!(AcmeAccountStatement::decode(&s.encode()).unwrap(), s);
        assert!(s.user_data().len() <= MAX_USER_DATA_BYTES);
    }

    #[test]
    fn the_largest_jwks_statement_is_read_and_its_binding_fits_the_nsm() {
        let s = JwksStatement {
            module_id: "m".repeat(MAX_MODULE_ID_CHARS),
            key_version: u32::MAX,
            audit_epoch: u64::MAX,
            auth_modes: vec!["signed-session".into(), "wallet-signature".into()],
            session_keys: vec!["k".repeat(43); MAX_SESSION_KEYS],
            ..jwks()
        };
        assert!(
            s.encode().len() > MAX_USER_DATA_BYTES,
            "too long for user_data"
        );
        assert!(s.encode().len() <= MAX_STATEMENT_BYTES);
        assert_eq!(JwksStatement::decode(&s.encode()).unwrap(), s);
        assert!(s.user_data().len() <= MAX_USER_DATA_BYTES);
    }

    #[test]
    fn a_bound_statement_is_read_only_with_its_own_binding() {
        let statement = jwks().encode();
        let user_data = jwks().user_data();
        assert!(user_data.len() <= MAX_USER_DATA_BYTES);
        assert_eq!(
            JwksStatement::decode_attested(&user_data, &statement).unwrap(),
            jwks()
        );
        let account = account();
        assert_eq!(
            AcmeAccountStatement::decode_attested(&account.user_data(), &account.encode()).unwrap(),
            account
        );
    }

    #[test]
    fn a_served_statement_other_than_the_bound_one_is_refused() {
        let mut other = jwks();
        other.key_version += 1;
        let e = JwksStatement::decode_attested(&jwks().user_data(), &other.encode()).unwrap_err();
        assert!(matches!(e, StatementError::NotAttested { .. }), "{e}");
        assert!(e.to_string().contains("not the attested one"), "{e}");
    }

    #[test]
    fn a_binding_of_another_kind_or_a_whole_statement_is_no_binding() {
        let account = account();
        // An ACME account binding never binds a JWKS statement, even one with its hash.
        let forged = binding(ACME_ACCOUNT_TAG, &jwks().encode());
        assert!(matches!(
            JwksStatement::decode_attested(&forged, &jwks().encode()),
            Err(StatementError::Tag { .. })
        ));
        // The statement itself in user_data is not a binding.
        assert!(matches!(
            JwksStatement::decode_attested(&jwks().encode(), &jwks().encode()),
            Err(StatementError::FieldLine { .. })
        ));
        assert!(matches!(
            AcmeAccountStatement::decode_attested(&jwks().user_data(), &account.encode()),
            Err(StatementError::Tag { .. })
        ));
        let mut trailing = jwks().user_data();
        trailing.extend_from_slice(b"extra=1\n");
        assert!(matches!(
            JwksStatement::decode_attested(&trailing, &jwks().encode()),
            Err(StatementError::Trailing { .. })
        ));
    }

    #[test]
    fn what_sits_in_user_data_always_fits_the_nsm() {
        let widest_module = "m".repeat(MAX_MODULE_ID_CHARS);
        let checkpoint = CheckpointStatement {
            epoch: u64::MAX,
            seq: u64::MAX,
            head: [0xff; 32],
            module_id: widest_module.clone(),
        };
        assert!(checkpoint.encode().len() <= MAX_USER_DATA_BYTES);
        let jwks = JwksStatement {
            module_id: widest_module.clone(),
            audit_epoch: u64::MAX,
            key_version: u32::MAX,
            ..jwks()
        };
        assert!(jwks.user_data().len() <= MAX_USER_DATA_BYTES);
        let account = AcmeAccountStatement {
            directory: format!("https://{}", "d".repeat(MAX_URL_CHARS - 8)),
            account_uri: format!("https://{}", "a".repeat(MAX_URL_CHARS - 8)),
            hostname: "h".repeat(MAX_HOSTNAME_CHARS),
            module_id: widest_module,
            ..account()
        };
        let encoded = account.encode();
        assert!(
            encoded.len() > MAX_USER_DATA_BYTES,
            "the case that needs a binding"
        );
        assert!(encoded.len() <= MAX_STATEMENT_BYTES);
        assert!(account.user_data().len() <= MAX_USER_DATA_BYTES);
    }
}
