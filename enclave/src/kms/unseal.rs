//! The unseal itself: checks the parent's request against the pinned key ARN (before any
//! KMS call), asks NSM for a recipient attestation document bound to the per-boot RSA
//! key, calls KMS `GenerateDataKey` (genesis) or `Decrypt` on the pinned key in its own
//! region, refuses an answer that names another key or carries a plaintext outside mock
//! mode, opens `CiphertextForRecipient` and returns the seed. KMS failures are sorted into
//! [`KmsError`] variants so the parent sees access denials apart from other errors.

use std::time::Duration;

use agentkeys_wire::{AwsCredentials, UnsealRequest};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyEncryptionMechanism, RecipientInfo};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::error::display::DisplayErrorContext;

use super::transport::{loopback_http_client, resolve_endpoint, vsock_https_client, KmsEndpoint};
use super::KmsError;
use crate::cms::{unwrap_ciphertext_for_recipient, RecipientKey};
use crate::keys::{Seed, SEED_BYTES};
use crate::nsm::{self, NsmDevice};
use agentkeys_wire::KmsKeyArn;

/// Encryption context key and value naming the purpose. Source: `docs/architecture.md`,
/// "Key life cycle", step 2.
pub const CONTEXT_PURPOSE: (&str, &str) = ("agentkeys:purpose", "oidc-issuer-seed");
/// Encryption context key carrying the issuer URL, so a seed sealed for one issuer does
/// not unseal for another. Source: `docs/architecture.md`, "Key life cycle", step 2.
pub const CONTEXT_ISSUER_KEY: &str = "agentkeys:issuer";
/// Upper bound on a whole KMS call (connect, TLS, request, answer) including retries.
pub const KMS_OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest KMS `CiphertextBlob`. Source: KMS API reference, `Decrypt` (CiphertextBlob
/// length constraints 1–6144).
pub const MAX_SEALED_SEED_BYTES: usize = 6144;
/// Longest key id / ARN / alias. Source: KMS API reference (`KeyId` length ≤ 2048).
pub const MAX_KEY_ID_BYTES: usize = 2048;

/// How this enclave reaches KMS.
#[derive(Debug, Clone)]
pub struct KmsSettings {
    /// Mock mode: loopback endpoints, plain HTTP.
    pub mock: bool,
    /// vsock CID of the proxy (production).
    pub proxy_cid: u32,
    /// vsock port of the proxy (production).
    pub proxy_port: u32,
    /// The issuer, bound into the encryption context.
    pub issuer: String,
    /// The only KMS key this enclave unseals with (measured configuration).
    pub key: KmsKeyArn,
    /// Whole-operation timeout.
    pub timeout: Duration,
}

/// A successful unseal.
#[derive(Debug)]
pub struct Unsealed {
    /// The seed (zeroized on drop).
    pub seed: Seed,
    /// The KMS `CiphertextBlob` to hand back to the parent.
    pub sealed_seed: Vec<u8>,
    /// Whether this was a genesis (`GenerateDataKey`).
    pub genesis: bool,
}

/// Checks the parent's request; the key and region must be the pinned ones, so a
/// refusal here comes before any NSM or KMS call.
fn validate_request(req: &UnsealRequest, key: &KmsKeyArn) -> Result<(), KmsError> {
    let id = &req.kms_key_id;
    if id.is_empty() || id.len() > MAX_KEY_ID_BYTES || id.chars().any(|c| c.is_control()) {
        return Err(KmsError::InvalidRequest(format!(
            "kms_key_id must be 1..={MAX_KEY_ID_BYTES} printable characters"
        )));
    }
    if id != key.as_str() {
        return Err(KmsError::KeyNotPinned {
            requested: id.clone(),
            pinned: key.to_string(),
        });
    }
    if req.region != key.region() {
        return Err(KmsError::RegionNotPinned {
            requested: req.region.clone(),
            pinned: key.to_string(),
            pinned_region: key.region().to_string(),
        });
    }
    if let Some(s) = &req.sealed_seed {
        if s.is_empty() || s.len() > MAX_SEALED_SEED_BYTES {
            return Err(KmsError::InvalidRequest(format!(
                "sealed_seed is {} bytes, expected 1..={MAX_SEALED_SEED_BYTES}",
                s.len()
            )));
        }
    }
    let c = &req.credentials;
    if c.access_key_id.is_empty() || c.secret_access_key.is_empty() {
        return Err(KmsError::InvalidRequest(
            "credentials need an access key id and a secret access key".into(),
        ));
    }
    Ok(())
}

fn classify<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> KmsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let SdkError::ServiceError(service) = &err {
        let e = service.err();
        let code = e.code().unwrap_or("Unknown").to_string();
        let message = e.message().unwrap_or("").to_string();
        if code == "AccessDeniedException" {
            return KmsError::AccessDenied { operation, message };
        }
        return KmsError::Service {
            operation,
            code,
            message,
        };
    }
    KmsError::Transport {
        operation,
        detail: DisplayErrorContext(&err).to_string(),
    }
}

fn kms_client(
    settings: &KmsSettings,
    endpoint: &KmsEndpoint,
    region: &str,
    credentials: &AwsCredentials,
) -> Result<aws_sdk_kms::Client, KmsError> {
    let http = match endpoint {
        KmsEndpoint::Aws { .. } => vsock_https_client(settings.proxy_cid, settings.proxy_port)?,
        KmsEndpoint::Loopback { .. } => loopback_http_client(),
    };
    let creds = aws_credential_types::Credentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.clone(),
        credentials.session_token.clone(),
        None,
        "agentkeys-unseal",
    );
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new(region.to_string()))
        .credentials_provider(creds)
        .http_client(http)
        .endpoint_url(endpoint.url())
        .timeout_config(
            aws_sdk_kms::config::timeout::TimeoutConfig::builder()
                .operation_timeout(settings.timeout)
                .build(),
        )
        .build();
    Ok(aws_sdk_kms::Client::from_conf(config))
}

/// Unseals (or, without a sealed seed, creates) the issuer seed through KMS with a fresh
/// recipient attestation document for `recipient`.
pub async fn unseal(
    settings: &KmsSettings,
    nsm: &dyn NsmDevice,
    recipient: &RecipientKey,
    req: &UnsealRequest,
) -> Result<Unsealed, KmsError> {
    let key = &settings.key;
    validate_request(req, key)?;
    let endpoint = resolve_endpoint(key.region(), req.kms_endpoint.as_deref(), settings.mock)?;
    let spki = recipient.public_key_spki_der();
    let document = nsm::attest(nsm, None, None, Some(spki.as_ref()))?;
    let recipient_info = RecipientInfo::builder()
        .attestation_document(Blob::new(document))
        .key_encryption_algorithm(KeyEncryptionMechanism::RsaesOaepSha256)
        .build();
    let client = kms_client(settings, &endpoint, key.region(), &req.credentials)?;
    let (purpose_key, purpose_value) = CONTEXT_PURPOSE;

    let (operation, answered_key, for_recipient, plaintext_present, sealed_seed, genesis) =
        match &req.sealed_seed {
            None => {
                let op = "GenerateDataKey";
                let out = client
                    .generate_data_key()
                    .key_id(key.as_str())
                    .key_spec(DataKeySpec::Aes256)
                    .encryption_context(purpose_key, purpose_value)
                    .encryption_context(CONTEXT_ISSUER_KEY, &settings.issuer)
                    .recipient(recipient_info)
                    .send()
                    .await
                    .map_err(|e| classify(op, e))?;
                let blob = out
                    .ciphertext_blob()
                    .ok_or(KmsError::MissingField {
                        operation: op,
                        field: "CiphertextBlob",
                    })?
                    .as_ref()
                    .to_vec();
                (
                    op,
                    out.key_id().map(str::to_string),
                    out.ciphertext_for_recipient().map(|b| b.as_ref().to_vec()),
                    out.plaintext().is_some(),
                    blob,
                    true,
                )
            }
            Some(sealed) => {
                let op = "Decrypt";
                let out = client
                    .decrypt()
                    .key_id(key.as_str())
                    .ciphertext_blob(Blob::new(sealed.clone()))
                    .encryption_context(purpose_key, purpose_value)
                    .encryption_context(CONTEXT_ISSUER_KEY, &settings.issuer)
                    .recipient(recipient_info)
                    .send()
                    .await
                    .map_err(|e| classify(op, e))?;
                (
                    op,
                    out.key_id().map(str::to_string),
                    out.ciphertext_for_recipient().map(|b| b.as_ref().to_vec()),
                    out.plaintext().is_some(),
                    sealed.clone(),
                    false,
                )
            }
        };
    // KMS names the key it used by its ARN; anything else is not the pinned key's answer.
    if answered_key.as_deref() != Some(key.as_str()) {
        return Err(KmsError::AnswerKeyMismatch {
            operation,
            answered: answered_key,
            pinned: key.to_string(),
        });
    }
    if plaintext_present && !settings.mock {
        return Err(KmsError::PlaintextReturned { operation });
    }
    let ber = for_recipient.ok_or(KmsError::MissingField {
        operation,
        field: "CiphertextForRecipient",
    })?;
    let seed_bytes = unwrap_ciphertext_for_recipient(&ber, recipient)
        .map_err(|e| KmsError::Cms(e.to_string()))?;
    if seed_bytes.len() != SEED_BYTES {
        return Err(KmsError::SeedLength {
            expected: SEED_BYTES,
            actual: seed_bytes.len(),
        });
    }
    let seed = Seed::from_slice(&seed_bytes).map_err(|e| KmsError::Cms(e.to_string()))?;
    Ok(Unsealed {
        seed,
        sealed_seed,
        genesis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED: &str =
        "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn pinned() -> KmsKeyArn {
        KmsKeyArn::parse(PINNED).unwrap()
    }

    fn request(sealed: Option<Vec<u8>>) -> UnsealRequest {
        UnsealRequest {
            region: "us-east-1".into(),
            kms_key_id: PINNED.into(),
            kms_endpoint: None,
            credentials: AwsCredentials {
                access_key_id: "AKID".into(),
                secret_access_key: "s".into(),
                session_token: None,
            },
            sealed_seed: sealed,
        }
    }

    #[test]
    fn request_validation() {
        let key = pinned();
        validate_request(&request(None), &key).unwrap();
        assert!(validate_request(&request(Some(vec![])), &key).is_err());
        assert!(
            validate_request(&request(Some(vec![0; MAX_SEALED_SEED_BYTES + 1])), &key).is_err()
        );
        let mut r = request(None);
        r.kms_key_id = String::new();
        assert!(validate_request(&r, &key).is_err());
        let mut r = request(None);
        r.credentials.secret_access_key = String::new();
        assert!(validate_request(&r, &key).is_err());
    }

    #[test]
    fn a_key_other_than_the_pinned_one_is_refused() {
        let key = pinned();
        for other in [
            "arn:aws:kms:us-east-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:us-east-1:111122223333:key/ffffffff-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:us-east-1:111122223333:alias/agentkeys",
            "alias/agentkeys",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
        ] {
            let mut r = request(None);
            r.kms_key_id = other.into();
            match validate_request(&r, &key) {
                Err(e @ KmsError::KeyNotPinned { .. }) => {
                    assert_eq!(e.wire_kind(), agentkeys_wire::WireErrorKind::InvalidRequest);
                    assert!(e.to_string().contains(PINNED), "{e}");
                }
                other_result => panic!("{other}: {other_result:?}"),
            }
        }
    }

    #[test]
    fn a_region_other_than_the_keys_is_refused() {
        let mut r = request(None);
        r.region = "eu-west-1".into();
        assert!(matches!(
            validate_request(&r, &pinned()),
            Err(KmsError::RegionNotPinned { .. })
        ));
    }
}
