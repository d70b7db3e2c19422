//! The KMS key the enclave is pinned to: a full key ARN, part of the enclave's measured
//! configuration (its command line inside the EIF, covered by PCR0). The parent's
//! configuration is checked with the same rule, so a mistake shows at its start rather
//! than as a refused unseal.
//!
//! Why pinned: the parent lends the credentials and could otherwise name a key in an
//! account it owns, `Encrypt` a seed it knows there under the same encryption context,
//! and have the enclave unseal it through genuine KMS. With the key fixed by the image,
//! an `Unseal` naming anything else is refused before any KMS call, and KMS's own answer
//! must name the same key.
//!
//! Accepted form (AWS General Reference, "Amazon Resource Names", and the KMS developer
//! guide, "Key identifiers"): `arn:PARTITION:kms:REGION:ACCOUNT:key/KEY-ID` with the
//! partition `aws`, `aws-cn` or `aws-us-gov`, a 12-digit account and a key id of letters,
//! digits and hyphens (a UUID, or `mrk-` and 32 hex digits for multi-Region keys).
//! Aliases and alias ARNs are refused: an alias can be re-pointed by whoever administers
//! the account, so it does not name one key.

use std::fmt;

/// Partitions whose KMS the enclave may use (AWS General Reference, "ARN format").
const PARTITIONS: [&str; 3] = ["aws", "aws-cn", "aws-us-gov"];
/// Digits in an AWS account id (AWS General Reference, "Your AWS account identifiers").
const ACCOUNT_DIGITS: usize = 12;
/// Longest key id part: a multi-Region key id (`mrk-` + 32 hex) is 36 characters, as is
/// a UUID.
const MAX_KEY_ID_CHARS: usize = 36;
/// Longest region name accepted (real ones are ≤ 16, e.g. `ap-southeast-4`).
const MAX_REGION_BYTES: usize = 32;

/// Whether `region` looks like an AWS region: lower-case letters in hyphen-separated
/// parts, at least three parts, the first of two letters and the last numeric
/// (`us-east-1`, `us-gov-west-1`, `ap-southeast-4`).
pub fn is_aws_region(region: &str) -> bool {
    if region.is_empty() || region.len() > MAX_REGION_BYTES {
        return false;
    }
    let parts: Vec<&str> = region.split('-').collect();
    let Some((last, rest)) = parts.split_last() else {
        return false;
    };
    let letters_ok = rest
        .iter()
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()));
    let digits_ok = !last.is_empty() && last.len() <= 2 && last.bytes().all(|b| b.is_ascii_digit());
    parts.len() >= 3 && letters_ok && digits_ok && rest[0].len() == 2
}

/// A validated KMS key ARN.
#[derive(Clone, PartialEq, Eq)]
pub struct KmsKeyArn {
    arn: String,
    region: String,
    account: String,
}

/// Why a string is not a pinnable KMS key ARN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyArnError {
    /// An alias or alias ARN.
    #[error("{value:?} is an alias; pin the key ARN (arn:aws:kms:REGION:ACCOUNT:key/KEY-ID) the alias points to, since an alias can be re-pointed")]
    Alias {
        /// The rejected value.
        value: String,
    },
    /// Not `arn:…` with six `:`-separated parts.
    #[error("{value:?} is not a KMS key ARN: expected arn:aws:kms:REGION:ACCOUNT:key/KEY-ID")]
    NotAnArn {
        /// The rejected value.
        value: String,
    },
    /// One part of the ARN is wrong.
    #[error("{value:?} is not a KMS key ARN: {part} {found:?} {reason}")]
    Part {
        /// The rejected value.
        value: String,
        /// Which part (`partition`, `service`, `region`, `account`, `resource`, `key id`).
        part: &'static str,
        /// What it holds.
        found: String,
        /// What was expected.
        reason: &'static str,
    },
}

impl KmsKeyArn {
    /// Parses and validates `value`.
    pub fn parse(value: &str) -> Result<KmsKeyArn, KeyArnError> {
        if value.starts_with("alias/") || value.contains(":alias/") {
            return Err(KeyArnError::Alias {
                value: value.to_string(),
            });
        }
        let parts: Vec<&str> = value.split(':').collect();
        let [arn, partition, service, region, account, resource] = parts.as_slice() else {
            return Err(KeyArnError::NotAnArn {
                value: value.to_string(),
            });
        };
        let part = |part, found: &str, reason| KeyArnError::Part {
            value: value.to_string(),
            part,
            found: found.to_string(),
            reason,
        };
        if *arn != "arn" {
            return Err(KeyArnError::NotAnArn {
                value: value.to_string(),
            });
        }
        if !PARTITIONS.contains(partition) {
            return Err(part(
                "partition",
                partition,
                "is not aws, aws-cn or aws-us-gov",
            ));
        }
        if *service != "kms" {
            return Err(part("service", service, "is not kms"));
        }
        if !is_aws_region(region) {
            return Err(part(
                "region",
                region,
                "is not an AWS region such as eu-west-1",
            ));
        }
        if account.len() != ACCOUNT_DIGITS || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(part("account", account, "is not a 12-digit account id"));
        }
        let Some(key_id) = resource.strip_prefix("key/") else {
            return Err(part("resource", resource, "does not start with key/"));
        };
        if key_id.is_empty()
            || key_id.len() > MAX_KEY_ID_CHARS
            || !key_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(part(
                "key id",
                key_id,
                "is not a key id (a UUID, or mrk- and 32 hex digits)",
            ));
        }
        Ok(KmsKeyArn {
            arn: value.to_string(),
            region: region.to_string(),
            account: account.to_string(),
        })
    }

    /// The ARN as given.
    pub fn as_str(&self) -> &str {
        &self.arn
    }

    /// The key's region, where every KMS call goes.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The account that owns the key.
    pub fn account(&self) -> &str {
        &self.account
    }
}

impl fmt::Display for KmsKeyArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

impl fmt::Debug for KmsKeyArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KmsKeyArn({})", self.arn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn a_key_arn_is_accepted_with_its_region_and_account() {
        let arn = KmsKeyArn::parse(GOOD).unwrap();
        assert_eq!(arn.as_str(), GOOD);
        assert_eq!(arn.region(), "eu-west-1");
        assert_eq!(arn.account(), "111122223333");
        let mrk = "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab";
        assert_eq!(KmsKeyArn::parse(mrk).unwrap().region(), "us-gov-west-1");
    }

    #[test]
    fn aliases_are_refused() {
        for v in [
            "alias/agentkeys",
            "arn:aws:kms:eu-west-1:111122223333:alias/agentkeys",
        ] {
            assert!(
                matches!(KmsKeyArn::parse(v), Err(KeyArnError::Alias { .. })),
                "{v}"
            );
        }
    }

    #[test]
    fn bare_key_ids_and_malformed_arns_are_refused() {
        for v in [
            "",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:eu-west-1:111122223333",
            "arn:aws:kms:eu-west-1:111122223333:key/a:b",
            "urn:aws:kms:eu-west-1:111122223333:key/k",
        ] {
            assert!(
                matches!(KmsKeyArn::parse(v), Err(KeyArnError::NotAnArn { .. })),
                "{v}"
            );
        }
    }

    #[test]
    fn each_wrong_part_is_named() {
        let cases = [
            ("arn:aws-xx:kms:eu-west-1:111122223333:key/k", "partition"),
            ("arn:aws:s3:eu-west-1:111122223333:key/k", "service"),
            ("arn:aws:kms:Europe:111122223333:key/k", "region"),
            ("arn:aws:kms::111122223333:key/k", "region"),
            ("arn:aws:kms:eu-west-1:11112222333:key/k", "account"),
            ("arn:aws:kms:eu-west-1:11112222333x:key/k", "account"),
            ("arn:aws:kms:eu-west-1:111122223333:keys/k", "resource"),
            ("arn:aws:kms:eu-west-1:111122223333:key/", "key id"),
            ("arn:aws:kms:eu-west-1:111122223333:key/k k", "key id"),
            (
                "arn:aws:kms:eu-west-1:111122223333:key/0123456789012345678901234567890123456",
                "key id",
            ),
        ];
        for (v, want) in cases {
            match KmsKeyArn::parse(v) {
                Err(KeyArnError::Part { part, .. }) => assert_eq!(part, want, "{v}"),
                other => panic!("{v}: expected a {want} error, got {other:?}"),
            }
        }
    }
}
