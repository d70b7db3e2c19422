//! Generators for the AWS policies an operator installs: the KMS key policy that binds
//! the issuer seed to the attested enclave image, and the IAM OIDC provider plus role
//! trust policy that lets STS accept the enclave-signed tokens.
//!
//! Both print JSON only; nothing here talks to AWS.
//!
//! # KMS key policy
//!
//! KMS evaluates `kms:RecipientAttestation:ImageSha384` (= PCR0) and
//! `kms:RecipientAttestation:PCR<N>` against the signed attestation document in the
//! request's `Recipient` parameter (KMS Developer Guide, "Condition keys for AWS Nitro
//! Enclaves"). The keys are absent from a request without `Recipient`, so:
//!
//! * the only `Allow` for `kms:Decrypt`/`kms:GenerateDataKey` carries the condition;
//! * an explicit `Deny` with `Null: {ImageSha384: "true"}` refuses both actions without
//!   an attestation document, whatever other `Allow` (IAM policy, grant) exists;
//! * an explicit `Deny` with `StringNotEqualsIgnoreCase` on the approved PCR0 values
//!   refuses documents from any other image (also true when the key is absent);
//! * `kms:Encrypt`, `kms:ReEncrypt*` and `kms:CreateGrant` are denied to everyone: with
//!   any of them a parent could make a ciphertext of a seed it chose (or an ungated
//!   copy), hand it to the enclave as the sealed seed and know the signing key;
//! * key administration goes to the account root without any use action, so IAM
//!   policies in the account can delegate administration but never use.

use std::collections::BTreeMap;
use std::fmt;

use agentkeys_attestation::measurements::{extend_from_zero, PublishedMeasurements, PCR_LEN};
use serde_json::{json, Map, Value};

/// KMS condition key for PCR0 of the recipient's attestation document.
pub const IMAGE_SHA384_KEY: &str = "kms:RecipientAttestation:ImageSha384";
/// Prefix of the KMS condition keys for other PCRs (`kms:RecipientAttestation:PCR<N>`).
pub const PCR_KEY_PREFIX: &str = "kms:RecipientAttestation:PCR";
/// The KMS actions the enclave performs (genesis: GenerateDataKey; later boots: Decrypt).
pub const ENCLAVE_ACTIONS: [&str; 2] = ["kms:Decrypt", "kms:GenerateDataKey"];
/// Actions that would let a caller make or copy a ciphertext under this key without the
/// enclave: denied to every principal.
pub const FORBIDDEN_ACTIONS: [&str; 4] = [
    "kms:Encrypt",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:CreateGrant",
];
/// Key administration actions (the administrator set of the KMS console's default key
/// policy), none of which uses the key. `kms:Create*` also matches `kms:CreateGrant`,
/// which the deny statement removes again.
pub const ADMIN_ACTIONS: [&str; 14] = [
    "kms:Create*",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
];
/// Highest PCR index of a Nitro enclave (PCR0..PCR31).
pub const MAX_PCR_INDEX: u16 = 31;
/// The `sub` pattern of enclave-signed tokens (`agentkeys:agent:<wallet>`).
pub const SUB_PATTERN: &str = "agentkeys:agent:0x*";
/// The session tag every enclave-signed token carries; untagged tokens are refused.
pub const WALLET_TAG: &str = "agentkeys_user_wallet";
/// Default audience of the tokens (what STS expects).
pub const DEFAULT_AUDIENCE: &str = "sts.amazonaws.com";

/// Errors from the policy generators: each names the input at fault.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The AWS account id is not 12 digits.
    #[error("account id {value:?} must be exactly 12 digits")]
    AccountId {
        /// The value given.
        value: String,
    },
    /// The role ARN is not `arn:<partition>:iam::<account>:role/<path/>name`.
    #[error("role ARN {value:?} is invalid: {reason}")]
    RoleArn {
        /// The value given.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The role name is not 1–64 of `[A-Za-z0-9+=,.@_-]`.
    #[error("role name {value:?} must be 1-64 characters of A-Z a-z 0-9 + = , . @ _ -")]
    RoleName {
        /// The value given.
        value: String,
    },
    /// The partition is not one of aws, aws-cn, aws-us-gov.
    #[error("partition {value:?} must be aws, aws-cn or aws-us-gov")]
    Partition {
        /// The value given.
        value: String,
    },
    /// No measurements were given.
    #[error("at least one measurements file (approved image) is required")]
    NoImages,
    /// A PCR index is outside 1..=31 (PCR0 is always pinned through ImageSha384).
    #[error("PCR index {index} is not allowed: choose among 1..=31 (PCR0 is always pinned)")]
    PcrIndex {
        /// The index given.
        index: u16,
    },
    /// A chosen PCR has no value for one of the images.
    #[error("PCR{index} was chosen but image {image} has no value for it (give it explicitly)")]
    MissingPcr {
        /// The PCR index.
        index: u16,
        /// Which image (0-based, in the order given).
        image: usize,
    },
    /// A PCR value is not 96 hex digits.
    #[error("PCR{index} value must be 96 hex digits (SHA-384), got {len} characters")]
    PcrLength {
        /// The PCR index.
        index: u16,
        /// Characters found.
        len: usize,
    },
    /// A PCR value has non-hex characters.
    #[error("PCR{index} value is not hexadecimal")]
    PcrHex {
        /// The PCR index.
        index: u16,
    },
    /// A PCR value is all zeros: the value of a debug-mode enclave.
    #[error("PCR{index} is all zeros (a debug-mode enclave); refusing to approve it")]
    ZeroPcr {
        /// The PCR index.
        index: u16,
    },
    /// The issuer URL is unusable.
    #[error("issuer {value:?} is invalid: {reason}")]
    Issuer {
        /// The value given.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The audience is empty, too long or has spaces/control characters.
    #[error("audience {value:?} must be 1-255 printable characters without spaces")]
    Audience {
        /// The value given.
        value: String,
    },
    /// The thumbprint is not 40 hex digits.
    #[error("thumbprint {value:?} must be 40 hex digits (SHA-1 of the CA certificate)")]
    Thumbprint {
        /// The value given.
        value: String,
    },
    /// The EC2 instance id is not `i-` + 8 or 17 hex digits.
    #[error("instance id {value:?} must be i- followed by 8 or 17 lower-case hex digits")]
    InstanceId {
        /// The value given.
        value: String,
    },
}

/// An AWS partition (decides the ARN prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partition {
    /// `aws`
    Aws,
    /// `aws-cn`
    AwsCn,
    /// `aws-us-gov`
    AwsUsGov,
}

impl Partition {
    /// Parses `aws`, `aws-cn` or `aws-us-gov`.
    pub fn parse(value: &str) -> Result<Partition, PolicyError> {
        match value {
            "aws" => Ok(Partition::Aws),
            "aws-cn" => Ok(Partition::AwsCn),
            "aws-us-gov" => Ok(Partition::AwsUsGov),
            _ => Err(PolicyError::Partition {
                value: value.to_string(),
            }),
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Partition::Aws => "aws",
            Partition::AwsCn => "aws-cn",
            Partition::AwsUsGov => "aws-us-gov",
        })
    }
}

/// Checks a 12-digit AWS account id.
pub fn validate_account_id(value: &str) -> Result<(), PolicyError> {
    if value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(PolicyError::AccountId {
            value: value.to_string(),
        })
    }
}

fn is_role_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b)
}

/// Checks an IAM role name (1–64 of `[A-Za-z0-9+=,.@_-]`, IAM's limits).
pub fn validate_role_name(value: &str) -> Result<(), PolicyError> {
    if (1..=64).contains(&value.len()) && value.bytes().all(is_role_name_char) {
        Ok(())
    } else {
        Err(PolicyError::RoleName {
            value: value.to_string(),
        })
    }
}

/// A parsed IAM role ARN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleArn {
    /// Partition.
    pub partition: Partition,
    /// Account id (12 digits).
    pub account_id: String,
    /// Path and name after `role/` (e.g. `service/agentkeys-parent`).
    pub path_and_name: String,
}

impl RoleArn {
    /// Parses `arn:<partition>:iam::<12 digits>:role/<path/>name`.
    pub fn parse(value: &str) -> Result<RoleArn, PolicyError> {
        let err = |reason| PolicyError::RoleArn {
            value: value.to_string(),
            reason,
        };
        let parts: Vec<&str> = value.splitn(6, ':').collect();
        if parts.len() != 6 || parts[0] != "arn" {
            return Err(err("expected arn:<partition>:iam::<account>:role/<name>"));
        }
        let partition = Partition::parse(parts[1])
            .map_err(|_| err("unknown partition (aws, aws-cn, aws-us-gov)"))?;
        if parts[2] != "iam" {
            return Err(err("service must be iam"));
        }
        if !parts[3].is_empty() {
            return Err(err("IAM ARNs have an empty region field"));
        }
        validate_account_id(parts[4]).map_err(|_| err("account id must be 12 digits"))?;
        let Some(path_and_name) = parts[5].strip_prefix("role/") else {
            return Err(err("resource must start with role/"));
        };
        let segments: Vec<&str> = path_and_name.split('/').collect();
        let name = segments.last().copied().unwrap_or_default();
        if validate_role_name(name).is_err() {
            return Err(err(
                "role name must be 1-64 characters of A-Z a-z 0-9 + = , . @ _ -",
            ));
        }
        if segments[..segments.len() - 1]
            .iter()
            .any(|s| s.is_empty() || !s.bytes().all(is_role_name_char))
        {
            return Err(err(
                "role path segments must be non-empty and use IAM name characters",
            ));
        }
        if path_and_name.len() > 512 {
            return Err(err("role path is longer than 512 characters"));
        }
        Ok(RoleArn {
            partition,
            account_id: parts[4].to_string(),
            path_and_name: path_and_name.to_string(),
        })
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:iam::{}:role/{}",
            self.partition, self.account_id, self.path_and_name
        )
    }
}

/// Parses a 96-hex-digit PCR value into lower-case hex, refusing an all-zero value.
pub fn normalize_pcr_hex(index: u16, value: &str) -> Result<String, PolicyError> {
    let v = value.trim();
    if v.len() != 2 * PCR_LEN {
        return Err(PolicyError::PcrLength {
            index,
            len: v.len(),
        });
    }
    if !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PolicyError::PcrHex { index });
    }
    if v.bytes().all(|b| b == b'0') {
        return Err(PolicyError::ZeroPcr { index });
    }
    Ok(v.to_ascii_lowercase())
}

/// PCR3 of an enclave whose parent instance has the IAM role `role_arn`:
/// `SHA-384(0⁴⁸ ‖ role ARN)`, lower-case hex. Compare it once with the PCR3 of a real
/// attestation document (`agentkeys-attest inspect`) before pinning it.
pub fn pcr3_for_role_arn(role_arn: &str) -> Result<String, PolicyError> {
    let arn = RoleArn::parse(role_arn)?;
    Ok(hex::encode(extend_from_zero(arn.to_string().as_bytes())))
}

/// PCR4 of an enclave on the EC2 instance `instance_id`: `SHA-384(0⁴⁸ ‖ instance id)`.
pub fn pcr4_for_instance_id(instance_id: &str) -> Result<String, PolicyError> {
    let ok = instance_id.strip_prefix("i-").is_some_and(|h| {
        (h.len() == 8 || h.len() == 17)
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if !ok {
        return Err(PolicyError::InstanceId {
            value: instance_id.to_string(),
        });
    }
    Ok(hex::encode(extend_from_zero(instance_id.as_bytes())))
}

/// One approved enclave image: its PCR0 and any extra pinned PCRs (lower-case hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovedImage {
    /// PCR index → lower-case hex value; always contains 0.
    pub pcrs: BTreeMap<u16, String>,
}

/// Input of [`kms_key_policy`].
#[derive(Clone, Debug)]
pub struct KmsPolicyRequest {
    /// The account that owns the key (its root administers the key).
    pub account_id: String,
    /// The parent instance's IAM role (the credentials the enclave calls KMS with).
    pub parent_role_arn: String,
    /// Approved images: one normally, two while upgrading (old and new PCR0).
    pub images: Vec<PublishedMeasurements>,
    /// PCRs to pin besides PCR0 (e.g. 1, 2, 3, 4, 8).
    pub extra_pcrs: Vec<u16>,
    /// Values for chosen PCRs a measurements file does not list (PCR3, PCR4), applied to
    /// every image; a value in a measurements file takes precedence.
    pub extra_pcr_values: BTreeMap<u16, String>,
}

/// Resolves the approved images: PCR0 plus the chosen PCRs for each, validated.
pub fn approved_images(req: &KmsPolicyRequest) -> Result<Vec<ApprovedImage>, PolicyError> {
    if req.images.is_empty() {
        return Err(PolicyError::NoImages);
    }
    for &index in &req.extra_pcrs {
        if index == 0 || index > MAX_PCR_INDEX {
            return Err(PolicyError::PcrIndex { index });
        }
    }
    let mut extra = BTreeMap::new();
    for (&index, value) in &req.extra_pcr_values {
        if index == 0 || index > MAX_PCR_INDEX {
            return Err(PolicyError::PcrIndex { index });
        }
        extra.insert(index, normalize_pcr_hex(index, value)?);
    }
    let mut out = Vec::with_capacity(req.images.len());
    for (image, m) in req.images.iter().enumerate() {
        let mut pcrs = BTreeMap::new();
        let pcr0 = m
            .pcrs
            .get(&0)
            .ok_or(PolicyError::MissingPcr { index: 0, image })?;
        pcrs.insert(0, normalize_pcr_hex(0, &hex::encode(pcr0))?);
        for &index in &req.extra_pcrs {
            let value = match m.pcrs.get(&index) {
                Some(v) => normalize_pcr_hex(index, &hex::encode(v))?,
                None => extra
                    .get(&index)
                    .cloned()
                    .ok_or(PolicyError::MissingPcr { index, image })?,
            };
            pcrs.insert(index, value);
        }
        out.push(ApprovedImage { pcrs });
    }
    Ok(out)
}

/// Builds the KMS key policy (see the module documentation for the statements).
pub fn kms_key_policy(req: &KmsPolicyRequest) -> Result<Value, PolicyError> {
    validate_account_id(&req.account_id)?;
    let role = RoleArn::parse(&req.parent_role_arn)?;
    let images = approved_images(req)?;
    let partition = role.partition;
    let root = format!("arn:{partition}:iam::{}:root", req.account_id);

    let mut statements = vec![json!({
        "Sid": "KeyAdministrationWithoutUse",
        "Effect": "Allow",
        "Principal": { "AWS": root },
        "Action": ADMIN_ACTIONS,
        "Resource": "*"
    })];

    for (i, image) in images.iter().enumerate() {
        let mut cond = Map::new();
        for (&index, value) in &image.pcrs {
            let key = if index == 0 {
                IMAGE_SHA384_KEY.to_string()
            } else {
                format!("{PCR_KEY_PREFIX}{index}")
            };
            cond.insert(key, Value::from(value.clone()));
        }
        statements.push(json!({
            "Sid": format!("AllowAttestedEnclaveImage{}", i + 1),
            "Effect": "Allow",
            "Principal": { "AWS": role.to_string() },
            "Action": ENCLAVE_ACTIONS,
            "Resource": "*",
            "Condition": { "StringEqualsIgnoreCase": Value::Object(cond) }
        }));
    }

    let mut pcr0s: Vec<String> = images.iter().map(|i| i.pcrs[&0].clone()).collect();
    pcr0s.dedup();
    statements.push(json!({
        "Sid": "DenyUseWithoutAttestation",
        "Effect": "Deny",
        "Principal": { "AWS": "*" },
        "Action": ENCLAVE_ACTIONS,
        "Resource": "*",
        "Condition": { "Null": { IMAGE_SHA384_KEY: "true" } }
    }));
    statements.push(json!({
        "Sid": "DenyUseByUnapprovedImage",
        "Effect": "Deny",
        "Principal": { "AWS": "*" },
        "Action": ENCLAVE_ACTIONS,
        "Resource": "*",
        "Condition": { "StringNotEqualsIgnoreCase": { IMAGE_SHA384_KEY: pcr0s } }
    }));
    statements.push(json!({
        "Sid": "DenyCiphertextWithoutEnclave",
        "Effect": "Deny",
        "Principal": { "AWS": "*" },
        "Action": FORBIDDEN_ACTIONS,
        "Resource": "*"
    }));

    Ok(json!({
        "Version": "2012-10-17",
        "Id": "agentkeys-issuer-seed",
        "Statement": statements
    }))
}

/// Convenience form: one nitro-cli measurements JSON text.
pub fn kms_key_policy_from_json(
    measurements_json: &str,
    account_id: &str,
    parent_role_arn: &str,
    extra_pcrs: &[u16],
    extra_pcr_values: &BTreeMap<u16, String>,
) -> Result<Value, KmsPolicyFromJsonError> {
    let m = PublishedMeasurements::from_json(measurements_json)?;
    Ok(kms_key_policy(&KmsPolicyRequest {
        account_id: account_id.to_string(),
        parent_role_arn: parent_role_arn.to_string(),
        images: vec![m],
        extra_pcrs: extra_pcrs.to_vec(),
        extra_pcr_values: extra_pcr_values.clone(),
    })?)
}

/// Errors of [`kms_key_policy_from_json`].
#[derive(Debug, thiserror::Error)]
pub enum KmsPolicyFromJsonError {
    /// The measurements JSON is wrong.
    #[error(transparent)]
    Measurements(#[from] agentkeys_attestation::measurements::MeasurementsError),
    /// A policy input is wrong.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

// ---------------------------------------------------------------------------------------
// IAM OIDC provider and role trust policy
// ---------------------------------------------------------------------------------------

/// Checks an issuer URL for IAM: `https://host[/path]`, no trailing slash, no query,
/// fragment, user info or port, host of letters, digits, dots and dashes. Returns the
/// part after `https://` (IAM's provider name and condition-key prefix).
pub fn validate_issuer(issuer: &str) -> Result<&str, PolicyError> {
    let err = |reason| PolicyError::Issuer {
        value: issuer.to_string(),
        reason,
    };
    let Some(rest) = issuer.strip_prefix("https://") else {
        return Err(err("must start with https://"));
    };
    if rest.is_empty() {
        return Err(err("has no host"));
    }
    if rest.ends_with('/') {
        return Err(err(
            "must not end with a slash (the iss claim is compared exactly)",
        ));
    }
    if rest.contains('?') {
        return Err(err("must not contain a query"));
    }
    if rest.contains('#') {
        return Err(err("must not contain a fragment"));
    }
    if rest.contains('@') {
        return Err(err("must not contain user info"));
    }
    if rest
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || !b.is_ascii())
    {
        return Err(err("must be printable ASCII without spaces"));
    }
    let host = rest.split('/').next().unwrap_or_default();
    if host.contains(':') {
        return Err(err(
            "must not contain a port (IAM OIDC providers cannot have one)",
        ));
    }
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        || host.starts_with('.')
        || host.ends_with('.')
        || host.starts_with('-')
    {
        return Err(err(
            "host must be a DNS name (letters, digits, dots, dashes)",
        ));
    }
    if rest.contains("//") {
        return Err(err("path must not contain empty segments"));
    }
    Ok(rest)
}

/// Checks an audience (`aud` / IAM client id).
pub fn validate_audience(audience: &str) -> Result<(), PolicyError> {
    if (1..=255).contains(&audience.len()) && audience.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(PolicyError::Audience {
            value: audience.to_string(),
        })
    }
}

/// Input of [`iam_oidc`].
#[derive(Clone, Debug)]
pub struct IamOidcRequest {
    /// The issuer (exact `iss` of the tokens).
    pub issuer: String,
    /// The audience (`sts.amazonaws.com` by default).
    pub audience: String,
    /// The role agents assume with the tokens.
    pub role_name: String,
    /// The account the provider and role live in.
    pub account_id: String,
    /// The partition (`aws` unless in China or GovCloud).
    pub partition: Partition,
    /// Optional SHA-1 thumbprint of the issuer's TLS CA (IAM fetches it when omitted).
    pub thumbprint: Option<String>,
}

/// What [`iam_oidc`] produces.
#[derive(Clone, Debug, PartialEq)]
pub struct IamOidcSetup {
    /// The provider ARN (`arn:aws:iam::ACCOUNT:oidc-provider/<host+path>`).
    pub provider_arn: String,
    /// The role ARN.
    pub role_arn: String,
    /// `aws iam create-open-id-connect-provider …`
    pub create_provider_command: String,
    /// `aws iam create-role …` reading the trust policy from `trust-policy.json`.
    pub create_role_command: String,
    /// The role's trust policy.
    pub trust_policy: Value,
}

impl IamOidcSetup {
    /// Everything as one JSON object (what `agentkeys-broker iam-oidc` prints).
    pub fn to_json(&self) -> Value {
        json!({
            "provider_arn": self.provider_arn,
            "role_arn": self.role_arn,
            "create_provider_command": self.create_provider_command,
            "create_role_command": self.create_role_command,
            "trust_policy": self.trust_policy,
        })
    }
}

/// Builds the OIDC provider registration command and the role trust policy:
/// federated principal = the provider, actions `sts:AssumeRoleWithWebIdentity` and
/// `sts:TagSession` (the tokens carry session tags), conditions `<provider>:aud` =
/// audience, `<provider>:sub` like `agentkeys:agent:0x*`, and a `Null` condition on
/// `aws:RequestTag/agentkeys_user_wallet` so a token without the wallet tag is refused.
pub fn iam_oidc(req: &IamOidcRequest) -> Result<IamOidcSetup, PolicyError> {
    let provider = validate_issuer(&req.issuer)?;
    validate_audience(&req.audience)?;
    validate_role_name(&req.role_name)?;
    validate_account_id(&req.account_id)?;
    if let Some(tp) = &req.thumbprint {
        if tp.len() != 40 || !tp.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PolicyError::Thumbprint { value: tp.clone() });
        }
    }
    let partition = req.partition;
    let provider_arn = format!(
        "arn:{partition}:iam::{}:oidc-provider/{provider}",
        req.account_id
    );
    let role_arn = format!(
        "arn:{partition}:iam::{}:role/{}",
        req.account_id, req.role_name
    );
    let trust_policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "AgentKeysEnclaveIssuedTokens",
            "Effect": "Allow",
            "Principal": { "Federated": provider_arn },
            "Action": ["sts:AssumeRoleWithWebIdentity", "sts:TagSession"],
            "Condition": {
                "StringEquals": { format!("{provider}:aud"): req.audience },
                "StringLike": { format!("{provider}:sub"): SUB_PATTERN },
                "Null": { format!("aws:RequestTag/{WALLET_TAG}"): "false" }
            }
        }]
    });
    // Every value was validated to printable ASCII without spaces, quotes are added
    // anyway so that the command can be pasted as is.
    let mut create_provider_command = format!(
        "aws iam create-open-id-connect-provider --url {} --client-id-list {}",
        shell_quote(&req.issuer),
        shell_quote(&req.audience)
    );
    if let Some(tp) = &req.thumbprint {
        create_provider_command
            .push_str(&format!(" --thumbprint-list {}", tp.to_ascii_lowercase()));
    }
    let create_role_command = format!(
        "aws iam create-role --role-name {} --assume-role-policy-document file://trust-policy.json",
        shell_quote(&req.role_name)
    );
    Ok(IamOidcSetup {
        provider_arn,
        role_arn,
        create_provider_command,
        create_role_command,
        trust_policy,
    })
}

/// POSIX single-quote quoting (no quoting when only safe characters are present).
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

// ---------------------------------------------------------------------------------------
// Command-line front ends (wired as `agentkeys-broker kms-policy` and `iam-oidc`)
// ---------------------------------------------------------------------------------------

/// `agentkeys-broker kms-policy`: print the KMS key policy for the approved image(s).
#[derive(Clone, Debug, clap::Args)]
pub struct KmsPolicyArgs {
    /// nitro-cli measurements JSON (eif/measurements.json). Repeat while upgrading to
    /// approve the old and the new image.
    #[arg(long = "measurements", required = true)]
    pub measurements: Vec<std::path::PathBuf>,
    /// AWS account id that owns the key (12 digits).
    #[arg(long = "account")]
    pub account: String,
    /// IAM role of the parent instance (the credentials the enclave uses for KMS).
    #[arg(long = "parent-role-arn")]
    pub parent_role_arn: String,
    /// Extra PCRs to pin besides PCR0, comma-separated (e.g. 1,2,8 or 3,4).
    #[arg(long = "pcr", value_delimiter = ',')]
    pub pcr: Vec<u16>,
    /// Value for a PCR the measurements file lacks: N=HEX (repeatable).
    #[arg(long = "pcr-value")]
    pub pcr_value: Vec<String>,
    /// Compute PCR3 from the parent instance's role ARN (SHA-384(0^48 ‖ ARN)).
    #[arg(long = "pcr3-role-arn")]
    pub pcr3_role_arn: Option<String>,
    /// Compute PCR4 from the parent EC2 instance id.
    #[arg(long = "pcr4-instance-id")]
    pub pcr4_instance_id: Option<String>,
}

/// Errors of the command-line front ends.
#[derive(Debug, thiserror::Error)]
pub enum PolicyCliError {
    /// A measurements file could not be read or parsed.
    #[error(transparent)]
    Measurements(#[from] agentkeys_attestation::measurements::MeasurementsFileError),
    /// A `--pcr-value` is not `N=HEX`.
    #[error("--pcr-value {value:?} must be N=HEX (e.g. 3=ab12…)")]
    PcrValueSyntax {
        /// The value given.
        value: String,
    },
    /// A policy input is wrong.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Runs `kms-policy` and returns the pretty-printed policy JSON.
pub fn run_kms_policy(args: &KmsPolicyArgs) -> Result<String, PolicyCliError> {
    let mut images = Vec::with_capacity(args.measurements.len());
    for path in &args.measurements {
        images.push(PublishedMeasurements::from_file(path)?);
    }
    let mut values = BTreeMap::new();
    for item in &args.pcr_value {
        let (n, v) = item
            .split_once('=')
            .and_then(|(n, v)| n.trim().parse::<u16>().ok().map(|n| (n, v)))
            .ok_or_else(|| PolicyCliError::PcrValueSyntax {
                value: item.clone(),
            })?;
        values.insert(n, v.to_string());
    }
    if let Some(arn) = &args.pcr3_role_arn {
        values.insert(3, pcr3_for_role_arn(arn)?);
    }
    if let Some(id) = &args.pcr4_instance_id {
        values.insert(4, pcr4_for_instance_id(id)?);
    }
    let policy = kms_key_policy(&KmsPolicyRequest {
        account_id: args.account.clone(),
        parent_role_arn: args.parent_role_arn.clone(),
        images,
        extra_pcrs: args.pcr.clone(),
        extra_pcr_values: values,
    })?;
    Ok(pretty(&policy))
}

/// `agentkeys-broker iam-oidc`: print the OIDC provider command and the role trust policy.
#[derive(Clone, Debug, clap::Args)]
pub struct IamOidcArgs {
    /// The issuer URL (https://host[/path], no trailing slash).
    #[arg(long = "issuer", env = "BROKER_OIDC_ISSUER")]
    pub issuer: String,
    /// The token audience (IAM client id).
    #[arg(long = "audience", default_value = DEFAULT_AUDIENCE)]
    pub audience: String,
    /// The role agents assume with enclave-signed tokens.
    #[arg(long = "role-name", default_value = "agentkeys-data-role")]
    pub role_name: String,
    /// AWS account id (12 digits).
    #[arg(long = "account", env = "ACCOUNT_ID")]
    pub account: String,
    /// AWS partition.
    #[arg(long = "partition", default_value = "aws")]
    pub partition: String,
    /// SHA-1 thumbprint of the issuer's TLS CA (optional: IAM obtains it itself).
    #[arg(long = "thumbprint")]
    pub thumbprint: Option<String>,
    /// Print only the trust policy (for `file://trust-policy.json`).
    #[arg(long = "trust-policy-only")]
    pub trust_policy_only: bool,
}

/// Runs `iam-oidc` and returns the pretty-printed JSON.
pub fn run_iam_oidc(args: &IamOidcArgs) -> Result<String, PolicyCliError> {
    let setup = iam_oidc(&IamOidcRequest {
        issuer: args.issuer.clone(),
        audience: args.audience.clone(),
        role_name: args.role_name.clone(),
        account_id: args.account.clone(),
        partition: Partition::parse(&args.partition)?,
        thumbprint: args.thumbprint.clone(),
    })?;
    Ok(if args.trust_policy_only {
        pretty(&setup.trust_policy)
    } else {
        pretty(&setup.to_json())
    })
}

fn pretty(v: &Value) -> String {
    // Serializing a `Value` cannot fail; fall back to the compact form regardless.
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}
