//! KMS stand-in: the KMS JSON 1.1 protocol on loopback, honouring `Recipient`.
//!
//! * `POST /` with `X-Amz-Target: TrentService.<Operation>` and
//!   `Content-Type: application/x-amz-json-1.1`; blobs are base64 in JSON. Works with the
//!   real `aws-sdk-kms` (endpoint override, any credentials) and the `aws` CLI
//!   (`--endpoint-url`). SigV4 is not verified, but an `Authorization` header is required.
//! * Operations: `GenerateDataKey` (KeySpec `AES_256`/`AES_128` or `NumberOfBytes`),
//!   `Decrypt`, `GenerateRandom`, each with or without
//!   `Recipient {AttestationDocument, KeyEncryptionAlgorithm: RSAES_OAEP_SHA_256}`.
//! * Any key id, key ARN, alias or alias ARN is accepted; its master key is created on
//!   first use. Ciphertext blobs are bound to the key id and the encryption context
//!   (see [`blob`]); `Decrypt` finds the key from the blob.
//! * Answers name the key by its ARN in `KeyId`, as KMS does. A key named by a key ARN
//!   keeps that ARN's account and region (a key "in another account" whose policy lets
//!   the caller use it); keys named otherwise belong to the stand-in's own account
//!   ([`DEFAULT_ACCOUNT`]) in the region of the request's SigV4 scope.
//! * With `Recipient`, the attestation document is verified with
//!   `agentkeys_attestation::verify` against the mock root (explicitly trusted), an
//!   optional PCR0 allow-list (mirroring `kms:RecipientAttestation:ImageSha384`) is
//!   enforced, and the answer carries `CiphertextForRecipient` (BER CMS EnvelopedData to
//!   the document's RSA `public_key`, see [`cms`]) and no `Plaintext`.
//! * Errors have KMS's shape: HTTP 400 (500 for internal faults) with
//!   `{"__type": "...", "message": "..."}` and an `x-amzn-ErrorType` header.
//!
//! * Every attested `GenerateDataKey` and `Decrypt` it serves is recorded as AWS
//!   CloudTrail records it (AWS KMS developer guide, "Monitoring requests for Nitro
//!   enclaves"): `eventSource` `kms.amazonaws.com`, `eventName`,
//!   `requestParameters.keyId`, the key's ARN in `resources`, and
//!   `additionalEventData.recipient` with `attestationDocumentModuleId` and
//!   `attestationDocumentEnclaveImageDigest` (PCR0). With
//!   [`KmsConfig::cloudtrail_file`] they are written, as a CloudTrail log file
//!   (`{"Records": [...]}`), after each call.
//!
//! This is a development tool. It listens on loopback and its keys protect nothing of value.

pub mod blob;
pub mod cms;
pub mod store;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentkeys_attestation::{verify, Policy, TrustAnchor, VerifyError};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use crate::clock::{Clock, SystemClock};
use crate::pki::mock_root_pem;
use store::{KeyStore, StoreError};

/// The JSON 1.1 content type of KMS requests and responses.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// Prefix of the `X-Amz-Target` header (KMS's service name in its JSON protocol).
pub const TARGET_PREFIX: &str = "TrentService.";
/// Largest request body accepted (KMS requests are a few KiB; a document is ~5 KiB).
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;
/// `NumberOfBytes` bounds of GenerateDataKey and GenerateRandom (KMS API reference: 1..1024).
pub const MAX_NUMBER_OF_BYTES: i64 = 1024;
/// The only `KeyEncryptionAlgorithm` KMS supports for `Recipient`.
pub const RSAES_OAEP_SHA_256: &str = "RSAES_OAEP_SHA_256";
/// Default age limit of a recipient attestation document (freshness, our choice).
pub const DEFAULT_MAX_DOCUMENT_AGE: Duration = Duration::from_secs(5 * 60);
/// Account id in the key ARNs the stand-in returns.
pub const DEFAULT_ACCOUNT: &str = "000000000000";
/// Region used in ARNs when the request's SigV4 scope names none.
pub const DEFAULT_REGION: &str = "us-east-1";
/// Largest ciphertext blob accepted by Decrypt (KMS API reference: 1..6144 bytes).
const MAX_CIPHERTEXT_BLOB: usize = 6144;

/// Configuration of the KMS stand-in.
#[derive(Clone)]
pub struct KmsConfig {
    state_file: Option<PathBuf>,
    require_pcr0: Vec<Vec<u8>>,
    allow_debug: bool,
    max_document_age: Option<Duration>,
    clock: Arc<dyn Clock>,
    account: String,
    cloudtrail_file: Option<PathBuf>,
}

impl std::fmt::Debug for KmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsConfig")
            .field("state_file", &self.state_file)
            .field(
                "require_pcr0",
                &self
                    .require_pcr0
                    .iter()
                    .map(hex::encode)
                    .collect::<Vec<_>>(),
            )
            .field("allow_debug", &self.allow_debug)
            .field("max_document_age", &self.max_document_age)
            .field("account", &self.account)
            .finish()
    }
}

impl Default for KmsConfig {
    fn default() -> Self {
        KmsConfig {
            state_file: None,
            require_pcr0: Vec::new(),
            allow_debug: false,
            max_document_age: Some(DEFAULT_MAX_DOCUMENT_AGE),
            clock: Arc::new(SystemClock),
            account: DEFAULT_ACCOUNT.to_string(),
            cloudtrail_file: None,
        }
    }
}

impl KmsConfig {
    /// Defaults: in-memory keys, no PCR0 policy, debug documents refused, 5-minute age limit.
    pub fn new() -> KmsConfig {
        KmsConfig::default()
    }

    /// Persist master keys in this file (0600) so they survive restarts.
    pub fn state_file(mut self, path: Option<PathBuf>) -> Self {
        self.state_file = path;
        self
    }

    /// Recipient documents must have one of these PCR0 values (empty: no PCR0 policy).
    /// Mirrors the key policy condition `kms:RecipientAttestation:ImageSha384`.
    pub fn require_pcr0(mut self, allowed: Vec<Vec<u8>>) -> Self {
        self.require_pcr0 = allowed;
        self
    }

    /// Accept recipient documents from debug-mode enclaves (refused by default).
    pub fn allow_debug(mut self, allow: bool) -> Self {
        self.allow_debug = allow;
        self
    }

    /// Maximum age of a recipient document (`None`: no limit).
    pub fn max_document_age(mut self, age: Option<Duration>) -> Self {
        self.max_document_age = age;
        self
    }

    /// Time source for document verification.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Write the CloudTrail records of attested calls to this file (rewritten whole after
    /// each call, in CloudTrail's log-file shape `{"Records": [...]}`).
    pub fn cloudtrail_file(mut self, path: Option<PathBuf>) -> Self {
        self.cloudtrail_file = path;
        self
    }
}

/// What a verified recipient attestation document gives the stand-in.
struct Attested {
    /// The RSA public key (SPKI DER) to encrypt to.
    spki: Vec<u8>,
    /// The document's module id.
    module_id: String,
    /// The document's PCR0 (the image digest KMS logs), hex.
    image_digest: String,
}

/// A KMS error in the shape KMS returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmsError {
    /// The request is missing or has an invalid parameter.
    #[error("ValidationException: {0}")]
    Validation(String),
    /// The request body is not the expected JSON.
    #[error("SerializationException: {0}")]
    Serialization(String),
    /// Denied by policy (including the recipient attestation policy).
    #[error("AccessDeniedException: {0}")]
    AccessDenied(String),
    /// The ciphertext blob is invalid, or does not authenticate under its key and context.
    #[error("InvalidCiphertextException: {0}")]
    InvalidCiphertext(String),
    /// The key named in the request is not the key that encrypted the blob.
    #[error("IncorrectKeyException: {0}")]
    IncorrectKey(String),
    /// The key does not exist.
    #[error("NotFoundException: {0}")]
    NotFound(String),
    /// DryRun was set.
    #[error("DryRunOperationException: {0}")]
    DryRun(String),
    /// `X-Amz-Target` names no supported operation.
    #[error("UnknownOperationException: {0}")]
    UnknownOperation(String),
    /// No `Authorization` header.
    #[error("MissingAuthenticationTokenException: {0}")]
    MissingAuthentication(String),
    /// An internal fault.
    #[error("KMSInternalException: {0}")]
    Internal(String),
}

impl KmsError {
    /// The `__type` / `x-amzn-ErrorType` value.
    pub fn type_name(&self) -> &'static str {
        match self {
            KmsError::Validation(_) => "ValidationException",
            KmsError::Serialization(_) => "SerializationException",
            KmsError::AccessDenied(_) => "AccessDeniedException",
            KmsError::InvalidCiphertext(_) => "InvalidCiphertextException",
            KmsError::IncorrectKey(_) => "IncorrectKeyException",
            KmsError::NotFound(_) => "NotFoundException",
            KmsError::DryRun(_) => "DryRunOperationException",
            KmsError::UnknownOperation(_) => "UnknownOperationException",
            KmsError::MissingAuthentication(_) => "MissingAuthenticationTokenException",
            KmsError::Internal(_) => "KMSInternalException",
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            KmsError::Validation(m)
            | KmsError::Serialization(m)
            | KmsError::AccessDenied(m)
            | KmsError::InvalidCiphertext(m)
            | KmsError::IncorrectKey(m)
            | KmsError::NotFound(m)
            | KmsError::DryRun(m)
            | KmsError::UnknownOperation(m)
            | KmsError::MissingAuthentication(m)
            | KmsError::Internal(m) => m,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            KmsError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl From<StoreError> for KmsError {
    fn from(e: StoreError) -> Self {
        KmsError::Internal(e.to_string())
    }
}

/// The KMS stand-in: key store, trust anchor and policy.
pub struct KmsStandIn {
    keys: KeyStore,
    anchor: TrustAnchor,
    config: KmsConfig,
    /// CloudTrail records of the attested calls served so far.
    trail: std::sync::Mutex<Vec<Value>>,
}

impl std::fmt::Debug for KmsStandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsStandIn")
            .field("keys", &self.keys)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RecipientRequest {
    attestation_document: Option<String>,
    key_encryption_algorithm: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateDataKeyRequest {
    key_id: Option<String>,
    key_spec: Option<String>,
    number_of_bytes: Option<i64>,
    encryption_context: Option<BTreeMap<String, String>>,
    recipient: Option<RecipientRequest>,
    dry_run: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptRequest {
    ciphertext_blob: Option<String>,
    encryption_context: Option<BTreeMap<String, String>>,
    key_id: Option<String>,
    encryption_algorithm: Option<String>,
    recipient: Option<RecipientRequest>,
    dry_run: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateRandomRequest {
    number_of_bytes: Option<i64>,
    recipient: Option<RecipientRequest>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, KmsError> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| KmsError::Serialization(format!("cannot parse the request body: {e}")))
}

fn decode_b64(field: &str, value: &str) -> Result<Vec<u8>, KmsError> {
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|e| KmsError::Serialization(format!("{field} is not valid base64: {e}")))
}

/// `key/ID`, `alias/NAME`, their ARNs, or a bare id → the store reference.
fn canonical_reference(key_id: &str) -> Result<String, KmsError> {
    if key_id.is_empty() || key_id.len() > 2048 {
        return Err(KmsError::Validation(
            "1 validation error detected: Value at 'keyId' failed to satisfy constraint: Member must have length between 1 and 2048".into(),
        ));
    }
    let reference = if key_id.starts_with("arn:") {
        let parts: Vec<&str> = key_id.splitn(6, ':').collect();
        if parts.len() != 6 || parts[2] != "kms" {
            return Err(KmsError::NotFound(format!("Invalid arn {key_id}")));
        }
        let resource = parts[5];
        if let Some(id) = resource.strip_prefix("key/") {
            id.to_string()
        } else if resource.starts_with("alias/") {
            resource.to_string()
        } else {
            return Err(KmsError::NotFound(format!("Invalid arn {key_id}")));
        }
    } else {
        key_id.to_string()
    };
    if reference.is_empty()
        || reference == "alias/"
        || reference.len() > blob::MAX_KEY_ID_LEN
        || reference.chars().any(char::is_control)
    {
        return Err(KmsError::NotFound(format!("Invalid keyId {key_id}")));
    }
    Ok(reference)
}

/// The region of the SigV4 credential scope (`Credential=AKID/DATE/REGION/kms/aws4_request`).
fn region_of(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(2))
        .filter(|r| {
            !r.is_empty()
                && r.len() < 32
                && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        .unwrap_or(DEFAULT_REGION)
        .to_string()
}

impl KmsStandIn {
    /// A stand-in with `config`, loading the state file when one is configured.
    pub fn new(config: KmsConfig) -> Result<KmsStandIn, StoreError> {
        let keys = KeyStore::open(config.state_file.clone())?;
        let anchor = match TrustAnchor::mock_root_explicitly_trusted(&mock_root_pem()) {
            Ok(a) => a,
            Err(e) => {
                return Err(StoreError::Format {
                    path: PathBuf::from("<mock root>"),
                    reason: e.to_string(),
                })
            }
        };
        Ok(KmsStandIn {
            keys,
            anchor,
            config,
            trail: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The axum router (`POST /`).
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/", post(handle))
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
            .with_state(self)
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> io::Result<()> {
        axum::serve(listener, Arc::new(self).router()).await
    }

    fn key_arn(&self, region: &str, id: &str) -> String {
        format!("arn:aws:kms:{region}:{}:key/{id}", self.config.account)
    }

    /// The `KeyId` of an answer about key `id`: the key ARN the request named, when it
    /// named this key by ARN, else the ARN in the stand-in's own account.
    fn answer_key_arn(&self, requested: Option<&str>, region: &str, id: &str) -> String {
        match requested {
            Some(arn) if arn.starts_with("arn:") && arn.ends_with(&format!(":key/{id}")) => {
                arn.to_string()
            }
            _ => self.key_arn(region, id),
        }
    }

    /// Handles one request: `target` is the operation name (without `TrentService.`).
    pub fn dispatch(&self, headers: &HeaderMap, body: &[u8]) -> Result<Value, KmsError> {
        if headers.get(header::AUTHORIZATION).is_none() {
            return Err(KmsError::MissingAuthentication(
                "Request is missing Authentication Token".into(),
            ));
        }
        if let Some(ct) = headers.get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            if !ct.starts_with("application/x-amz-json-1.") {
                return Err(KmsError::Serialization(format!(
                    "unsupported content type {ct:?}, expected {CONTENT_TYPE}"
                )));
            }
        }
        let target = headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let operation = target.strip_prefix(TARGET_PREFIX).ok_or_else(|| {
            KmsError::UnknownOperation(format!("X-Amz-Target {target:?} is not a KMS operation"))
        })?;
        let region = region_of(headers);
        match operation {
            "GenerateDataKey" => self.generate_data_key(&region, parse(body)?),
            "Decrypt" => self.decrypt(&region, parse(body)?),
            "GenerateRandom" => self.generate_random(parse(body)?),
            other => Err(KmsError::UnknownOperation(format!(
                "operation {other} is not supported by the KMS stand-in (GenerateDataKey, Decrypt, GenerateRandom)"
            ))),
        }
    }

    /// Verifies a recipient document and returns the RSA SPKI DER to encrypt to.
    fn recipient_key(&self, recipient: &RecipientRequest) -> Result<Attested, KmsError> {
        match recipient.key_encryption_algorithm.as_deref() {
            None | Some(RSAES_OAEP_SHA_256) => {}
            Some(other) => {
                return Err(KmsError::Validation(format!(
                    "1 validation error detected: Value '{other}' at 'recipient.keyEncryptionAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: [{RSAES_OAEP_SHA_256}]"
                )))
            }
        }
        let document = recipient.attestation_document.as_deref().ok_or_else(|| {
            KmsError::Validation("Recipient.AttestationDocument is required".into())
        })?;
        let document = decode_b64("Recipient.AttestationDocument", document)?;
        let policy = Policy {
            allow_debug: self.config.allow_debug,
            max_age: self.config.max_document_age,
            ..Policy::default()
        };
        let now = self.config.clock.now_unix_ms();
        let verified = verify(&document, &self.anchor, now, &policy).map_err(|e| {
            let check = e.check();
            match e {
                VerifyError::Policy(_) => KmsError::AccessDenied(format!(
                    "recipient attestation document refused by policy: check {check} failed: {e}"
                )),
                _ => KmsError::Validation(format!(
                    "recipient attestation document failed verification: check {check} failed: {e}"
                )),
            }
        })?;
        if !self.config.require_pcr0.is_empty() {
            let pcr0 = verified.document.pcrs.get(&0).cloned().unwrap_or_default();
            if !self.config.require_pcr0.contains(&pcr0) {
                return Err(KmsError::AccessDenied(format!(
                    "recipient attestation document refused by policy: check pcr0 (kms:RecipientAttestation:ImageSha384) failed: document PCR0 is {}, the key policy allows {}",
                    hex::encode(&pcr0),
                    self.config
                        .require_pcr0
                        .iter()
                        .map(hex::encode)
                        .collect::<Vec<_>>()
                        .join(" or ")
                )));
            }
        }
        let spki = verified.document.public_key.ok_or_else(|| {
            KmsError::Validation(
                "recipient attestation document has no public_key to encrypt to".into(),
            )
        })?;
        cms::parse_recipient_key(&spki).map_err(|e| KmsError::Validation(e.to_string()))?;
        Ok(Attested {
            spki,
            module_id: verified.document.module_id.clone(),
            image_digest: hex::encode(verified.document.pcrs.get(&0).cloned().unwrap_or_default()),
        })
    }

    /// Records an attested call as CloudTrail does, and rewrites the trail file if any.
    fn record(
        &self,
        event_name: &str,
        region: &str,
        requested: Option<&str>,
        key_arn: &str,
        who: &Attested,
    ) {
        let now = self.config.clock.now_unix_ms();
        let event_time =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now) * 1_000_000)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
        let mut event_id = [0u8; 16];
        let _ = aws_lc_rs::rand::fill(&mut event_id);
        let record = json!({
            "eventVersion": "1.08",
            "eventTime": event_time,
            "eventSource": "kms.amazonaws.com",
            "eventName": event_name,
            "awsRegion": region,
            "sourceIPAddress": "127.0.0.1",
            "userAgent": "agentkeys-kms-stand-in",
            "requestParameters": { "keyId": requested.unwrap_or(key_arn) },
            "responseElements": null,
            "additionalEventData": {
                "recipient": {
                    "attestationDocumentModuleId": who.module_id,
                    "attestationDocumentEnclaveImageDigest": who.image_digest,
                }
            },
            "eventID": hex::encode(event_id),
            "readOnly": true,
            "resources": [{ "accountId": self.config.account, "type": "AWS::KMS::Key", "ARN": key_arn }],
            "eventType": "AwsApiCall",
            "managementEvent": true,
            "recipientAccountId": self.config.account,
        });
        let Ok(mut trail) = self.trail.lock() else {
            return;
        };
        trail.push(record);
        if let Some(path) = &self.config.cloudtrail_file {
            let text = json!({ "Records": *trail }).to_string();
            let tmp = path.with_extension("tmp");
            if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
                tracing::error!(error = %e, path = %path.display(), "cannot write the CloudTrail records");
            }
        }
    }

    fn generate_data_key(
        &self,
        region: &str,
        request: GenerateDataKeyRequest,
    ) -> Result<Value, KmsError> {
        let key_id = request.key_id.as_deref().ok_or_else(|| {
            KmsError::Validation("1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null".into())
        })?;
        let reference = canonical_reference(key_id)?;
        let length = match (request.key_spec.as_deref(), request.number_of_bytes) {
            (Some("AES_256"), None) => 32,
            (Some("AES_128"), None) => 16,
            (Some(other), None) => {
                return Err(KmsError::Validation(format!(
                    "1 validation error detected: Value '{other}' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [AES_256, AES_128]"
                )))
            }
            (None, Some(n)) if (1..=MAX_NUMBER_OF_BYTES).contains(&n) => n as usize,
            (None, Some(n)) => {
                return Err(KmsError::Validation(format!(
                    "1 validation error detected: Value '{n}' at 'numberOfBytes' failed to satisfy constraint: Member must have value between 1 and {MAX_NUMBER_OF_BYTES}"
                )))
            }
            (Some(_), Some(_)) => {
                return Err(KmsError::Validation(
                    "Please specify either number of bytes or key spec, not both".into(),
                ))
            }
            (None, None) => {
                return Err(KmsError::Validation(
                    "Please specify either number of bytes or key spec".into(),
                ))
            }
        };
        let recipient = request
            .recipient
            .as_ref()
            .map(|r| self.recipient_key(r))
            .transpose()?;
        if request.dry_run == Some(true) {
            return Err(KmsError::DryRun(
                "The request would have succeeded, but the DryRun option is set.".into(),
            ));
        }
        let (id, master) = self.keys.resolve_or_create(&reference)?;
        let context = request.encryption_context.unwrap_or_default();
        let mut data_key = Zeroizing::new(vec![0u8; length]);
        aws_lc_rs::rand::fill(data_key.as_mut_slice())
            .map_err(|_| KmsError::Internal("random generator failed".into()))?;
        let ciphertext = blob::seal(master.bytes(), &id, &context, &data_key)
            .map_err(|e| KmsError::Internal(e.to_string()))?;
        let mut out = Map::new();
        out.insert("CiphertextBlob".into(), json!(b64(&ciphertext)));
        out.insert(
            "KeyId".into(),
            json!(self.answer_key_arn(Some(key_id), region, &id)),
        );
        self.deliver(
            &mut out,
            recipient.as_ref().map(|a| a.spki.as_slice()),
            &data_key,
        )?;
        if let Some(who) = &recipient {
            let arn = self.answer_key_arn(Some(key_id), region, &id);
            self.record("GenerateDataKey", region, Some(key_id), &arn, who);
        }
        tracing::info!(operation = "GenerateDataKey", key_id = %id, recipient = recipient.is_some(), bytes = length, "served");
        Ok(Value::Object(out))
    }

    fn decrypt(&self, region: &str, request: DecryptRequest) -> Result<Value, KmsError> {
        let blob_b64 = request.ciphertext_blob.as_deref().ok_or_else(|| {
            KmsError::Validation("1 validation error detected: Value null at 'ciphertextBlob' failed to satisfy constraint: Member must not be null".into())
        })?;
        let ciphertext = decode_b64("CiphertextBlob", blob_b64)?;
        if ciphertext.is_empty() || ciphertext.len() > MAX_CIPHERTEXT_BLOB {
            return Err(KmsError::Validation(format!(
                "1 validation error detected: Value at 'ciphertextBlob' failed to satisfy constraint: Member must have length between 1 and {MAX_CIPHERTEXT_BLOB}"
            )));
        }
        match request.encryption_algorithm.as_deref() {
            None | Some("SYMMETRIC_DEFAULT") => {}
            Some(other) => {
                return Err(KmsError::Validation(format!(
                    "encryption algorithm {other} is not supported by this symmetric key; use SYMMETRIC_DEFAULT"
                )))
            }
        }
        let blob_key = blob::key_id_of(&ciphertext)
            .map_err(|e| KmsError::InvalidCiphertext(e.to_string()))?
            .to_string();
        if let Some(requested) = request.key_id.as_deref() {
            let reference = canonical_reference(requested)?;
            let requested_id = if reference.starts_with("alias/") {
                self.keys
                    .alias_target(&reference)
                    .ok_or_else(|| KmsError::NotFound(format!("Alias {requested} is not found.")))?
            } else {
                reference
            };
            if requested_id != blob_key {
                return Err(KmsError::IncorrectKey(format!(
                    "The key ID in the request ({requested}) does not identify the KMS key that encrypted the ciphertext ({})",
                    self.key_arn(region, &blob_key)
                )));
            }
        }
        let recipient = request
            .recipient
            .as_ref()
            .map(|r| self.recipient_key(r))
            .transpose()?;
        let master = self.keys.get(&blob_key).ok_or_else(|| {
            KmsError::InvalidCiphertext(format!(
                "the ciphertext refers to key {blob_key}, which does not exist in this KMS"
            ))
        })?;
        let context = request.encryption_context.unwrap_or_default();
        let plaintext = blob::open(master.bytes(), &ciphertext, &context)
            .map_err(|e| KmsError::InvalidCiphertext(e.to_string()))?;
        if request.dry_run == Some(true) {
            return Err(KmsError::DryRun(
                "The request would have succeeded, but the DryRun option is set.".into(),
            ));
        }
        let mut out = Map::new();
        out.insert(
            "KeyId".into(),
            json!(self.answer_key_arn(request.key_id.as_deref(), region, &blob_key)),
        );
        out.insert("EncryptionAlgorithm".into(), json!("SYMMETRIC_DEFAULT"));
        self.deliver(
            &mut out,
            recipient.as_ref().map(|a| a.spki.as_slice()),
            &plaintext,
        )?;
        if let Some(who) = &recipient {
            let arn = self.answer_key_arn(request.key_id.as_deref(), region, &blob_key);
            self.record("Decrypt", region, request.key_id.as_deref(), &arn, who);
        }
        tracing::info!(operation = "Decrypt", key_id = %blob_key, recipient = recipient.is_some(), "served");
        Ok(Value::Object(out))
    }

    fn generate_random(&self, request: GenerateRandomRequest) -> Result<Value, KmsError> {
        let n = request
            .number_of_bytes
            .ok_or_else(|| KmsError::Validation("NumberOfBytes is required".into()))?;
        if !(1..=MAX_NUMBER_OF_BYTES).contains(&n) {
            return Err(KmsError::Validation(format!(
                "1 validation error detected: Value '{n}' at 'numberOfBytes' failed to satisfy constraint: Member must have value between 1 and {MAX_NUMBER_OF_BYTES}"
            )));
        }
        let recipient = request
            .recipient
            .as_ref()
            .map(|r| self.recipient_key(r))
            .transpose()?;
        let mut random = Zeroizing::new(vec![0u8; n as usize]);
        aws_lc_rs::rand::fill(random.as_mut_slice())
            .map_err(|_| KmsError::Internal("random generator failed".into()))?;
        let mut out = Map::new();
        self.deliver(
            &mut out,
            recipient.as_ref().map(|a| a.spki.as_slice()),
            &random,
        )?;
        tracing::info!(
            operation = "GenerateRandom",
            recipient = recipient.is_some(),
            bytes = n,
            "served"
        );
        Ok(Value::Object(out))
    }

    /// `Plaintext`, or `CiphertextForRecipient` (and no `Plaintext`) with a recipient.
    fn deliver(
        &self,
        out: &mut Map<String, Value>,
        recipient: Option<&[u8]>,
        secret: &[u8],
    ) -> Result<(), KmsError> {
        match recipient {
            Some(spki) => {
                let envelope =
                    cms::envelope(spki, secret).map_err(|e| KmsError::Validation(e.to_string()))?;
                out.insert("CiphertextForRecipient".into(), json!(b64(&envelope)));
            }
            None => {
                let encoded = Zeroizing::new(b64(secret));
                out.insert("Plaintext".into(), json!(encoded.as_str()));
            }
        }
        Ok(())
    }
}

fn request_id() -> String {
    let mut b = [0u8; 16];
    // A request id is not a secret; an RNG failure leaves it zero.
    let _ = aws_lc_rs::rand::fill(&mut b);
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn response(status: StatusCode, body: Vec<u8>, error_type: Option<&'static str>) -> Response {
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))
        .header("x-amzn-requestid", request_id());
    if let Some(t) = error_type {
        builder = builder.header("x-amzn-errortype", t);
    }
    builder.body(Body::from(body)).unwrap_or_else(|_| {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

/// Turns an error into KMS's error response.
pub fn error_response(error: &KmsError) -> Response {
    let body = json!({"__type": error.type_name(), "message": error.message()});
    response(
        error.status(),
        body.to_string().into_bytes(),
        Some(error.type_name()),
    )
}

async fn handle(State(kms): State<Arc<KmsStandIn>>, headers: HeaderMap, body: Bytes) -> Response {
    let kms2 = kms.clone();
    // Document verification and RSA encryption are CPU work: keep them off the reactor.
    let result = tokio::task::spawn_blocking(move || kms2.dispatch(&headers, &body)).await;
    match result {
        Ok(Ok(value)) => {
            let body = Zeroizing::new(value.to_string().into_bytes());
            response(StatusCode::OK, body.to_vec(), None)
        }
        Ok(Err(error)) => {
            tracing::info!(
                error_type = error.type_name(),
                message = error.message(),
                "request refused"
            );
            error_response(&error)
        }
        Err(e) => {
            tracing::error!(error = %e, "KMS stand-in worker failed");
            error_response(&KmsError::Internal("internal error".into()))
        }
    }
}

/// Serves the KMS stand-in on `listener` with `config` (loads the state file first).
pub async fn serve(listener: tokio::net::TcpListener, config: KmsConfig) -> io::Result<()> {
    let stand_in = KmsStandIn::new(config).map_err(io::Error::other)?;
    stand_in.serve(listener).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_references() {
        assert_eq!(canonical_reference("alias/x").unwrap(), "alias/x");
        assert_eq!(
            canonical_reference("arn:aws:kms:us-east-1:111122223333:key/1234abcd").unwrap(),
            "1234abcd"
        );
        assert_eq!(
            canonical_reference("arn:aws:kms:us-east-1:111122223333:alias/dev").unwrap(),
            "alias/dev"
        );
        assert_eq!(canonical_reference("my-key").unwrap(), "my-key");
        assert!(canonical_reference("").is_err());
        assert!(canonical_reference("alias/").is_err());
        assert!(canonical_reference("arn:aws:s3:::bucket").is_err());
        assert!(canonical_reference("arn:aws:kms:r:a:other/x").is_err());
        assert!(canonical_reference(&"k".repeat(300)).is_err());
        assert!(canonical_reference("a\nb").is_err());
    }

    #[test]
    fn region_from_sigv4_scope() {
        let mut h = HeaderMap::new();
        assert_eq!(region_of(&h), "us-east-1");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=AKID/20260101/eu-west-3/kms/aws4_request, SignedHeaders=host, Signature=00"),
        );
        assert_eq!(region_of(&h), "eu-west-3");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Credential=a/b/<x>/c"),
        );
        assert_eq!(region_of(&h), "us-east-1");
    }

    fn headers(target: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=x"),
        );
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        h.insert("x-amz-target", HeaderValue::from_str(target).unwrap());
        h
    }

    #[test]
    fn request_validation() {
        let kms = KmsStandIn::new(KmsConfig::new()).unwrap();
        let call = |target: &str, body: &str| kms.dispatch(&headers(target), body.as_bytes());
        let kind = |r: Result<Value, KmsError>| r.unwrap_err().type_name();
        assert_eq!(
            kind(call("TrentService.Encrypt", "{}")),
            "UnknownOperationException"
        );
        assert_eq!(
            kind(call("Other.GenerateDataKey", "{}")),
            "UnknownOperationException"
        );
        assert_eq!(
            kind(call("TrentService.GenerateDataKey", "{")),
            "SerializationException"
        );
        assert_eq!(
            kind(call("TrentService.GenerateDataKey", "[]")),
            "SerializationException"
        );
        assert_eq!(
            kind(call("TrentService.GenerateDataKey", "{}")),
            "ValidationException"
        );
        assert_eq!(
            kind(call("TrentService.GenerateDataKey", r#"{"KeyId":"k"}"#)),
            "ValidationException"
        );
        assert_eq!(
            kind(call(
                "TrentService.GenerateDataKey",
                r#"{"KeyId":"k","KeySpec":"AES_512"}"#
            )),
            "ValidationException"
        );
        assert_eq!(
            kind(call(
                "TrentService.GenerateDataKey",
                r#"{"KeyId":"k","KeySpec":"AES_256","NumberOfBytes":32}"#
            )),
            "ValidationException"
        );
        for n in ["0", "1025", "-1"] {
            assert_eq!(
                kind(call(
                    "TrentService.GenerateDataKey",
                    &format!(r#"{{"KeyId":"k","NumberOfBytes":{n}}}"#)
                )),
                "ValidationException"
            );
            assert_eq!(
                kind(call(
                    "TrentService.GenerateRandom",
                    &format!(r#"{{"NumberOfBytes":{n}}}"#)
                )),
                "ValidationException"
            );
        }
        assert_eq!(
            kind(call(
                "TrentService.GenerateDataKey",
                r#"{"KeyId":"k","NumberOfBytes":"x"}"#
            )),
            "SerializationException"
        );
        assert_eq!(
            kind(call(
                "TrentService.GenerateDataKey",
                r#"{"KeyId":"k","KeySpec":"AES_256","EncryptionContext":{"a":1}}"#
            )),
            "SerializationException"
        );
        assert_eq!(
            kind(call(
                "TrentService.GenerateDataKey",
                r#"{"KeyId":"k","KeySpec":"AES_256","DryRun":true}"#
            )),
            "DryRunOperationException"
        );
        assert_eq!(
            kind(call("TrentService.Decrypt", "{}")),
            "ValidationException"
        );
        assert_eq!(
            kind(call("TrentService.Decrypt", r#"{"CiphertextBlob":"!!"}"#)),
            "SerializationException"
        );
        assert_eq!(
            kind(call("TrentService.Decrypt", r#"{"CiphertextBlob":"AAAA"}"#)),
            "InvalidCiphertextException"
        );
        assert_eq!(
            kind(call(
                "TrentService.GenerateDataKey",
                r#"{"KeyId":"k","KeySpec":"AES_256","Recipient":{"KeyEncryptionAlgorithm":"RSAES_OAEP_SHA_1"}}"#
            )),
            "ValidationException"
        );
        assert_eq!(
            kind(call(
                "TrentService.GenerateDataKey",
                r#"{"KeyId":"k","KeySpec":"AES_256","Recipient":{"AttestationDocument":"AAAA"}}"#
            )),
            "ValidationException"
        );
        let mut no_auth = headers("TrentService.GenerateRandom");
        no_auth.remove(header::AUTHORIZATION);
        assert_eq!(
            kms.dispatch(&no_auth, br#"{"NumberOfBytes":8}"#)
                .unwrap_err()
                .type_name(),
            "MissingAuthenticationTokenException"
        );
        let mut bad_ct = headers("TrentService.GenerateRandom");
        bad_ct.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(
            kms.dispatch(&bad_ct, br#"{"NumberOfBytes":8}"#)
                .unwrap_err()
                .type_name(),
            "SerializationException"
        );
        let ok = call("TrentService.GenerateRandom", r#"{"NumberOfBytes":8}"#).unwrap();
        assert_eq!(
            decode_b64("p", ok["Plaintext"].as_str().unwrap())
                .unwrap()
                .len(),
            8
        );
    }

    #[test]
    fn answers_name_the_key_by_the_arn_of_its_account() {
        let kms = KmsStandIn::new(KmsConfig::new()).unwrap();
        let key_id = |body: &str| {
            let out = kms
                .dispatch(&headers("TrentService.GenerateDataKey"), body.as_bytes())
                .unwrap();
            out["KeyId"].as_str().unwrap().to_string()
        };
        let other = "arn:aws:kms:eu-west-1:444455556666:key/k-other";
        assert_eq!(
            key_id(&format!(r#"{{"KeyId":"{other}","KeySpec":"AES_256"}}"#)),
            other,
            "a key ARN of another account keeps its account and region"
        );
        let own = key_id(r#"{"KeyId":"k-own","KeySpec":"AES_256"}"#);
        assert!(
            own.starts_with("arn:aws:kms:")
                && own.ends_with(&format!(":{DEFAULT_ACCOUNT}:key/k-own")),
            "{own}"
        );
        let alias = key_id(r#"{"KeyId":"alias/a","KeySpec":"AES_256"}"#);
        assert!(
            alias.contains(":key/") && !alias.contains("alias"),
            "{alias}"
        );
    }

    #[test]
    fn round_trip_and_context_binding_in_process() {
        let kms = KmsStandIn::new(KmsConfig::new()).unwrap();
        let gdk = kms
            .dispatch(
                &headers("TrentService.GenerateDataKey"),
                br#"{"KeyId":"alias/x","KeySpec":"AES_128","EncryptionContext":{"p":"1"}}"#,
            )
            .unwrap();
        let plaintext = decode_b64("p", gdk["Plaintext"].as_str().unwrap()).unwrap();
        assert_eq!(plaintext.len(), 16);
        let blob = gdk["CiphertextBlob"].as_str().unwrap();
        let dec = kms
            .dispatch(
                &headers("TrentService.Decrypt"),
                format!(r#"{{"CiphertextBlob":"{blob}","EncryptionContext":{{"p":"1"}},"KeyId":"alias/x"}}"#).as_bytes(),
            )
            .unwrap();
        assert_eq!(
            decode_b64("p", dec["Plaintext"].as_str().unwrap()).unwrap(),
            plaintext
        );
        assert_eq!(dec["KeyId"], gdk["KeyId"]);
        let err = kms
            .dispatch(
                &headers("TrentService.Decrypt"),
                format!(r#"{{"CiphertextBlob":"{blob}"}}"#).as_bytes(),
            )
            .unwrap_err();
        assert_eq!(err.type_name(), "InvalidCiphertextException");
        let err = kms
            .dispatch(
                &headers("TrentService.Decrypt"),
                format!(r#"{{"CiphertextBlob":"{blob}","EncryptionContext":{{"p":"1"}},"KeyId":"alias/other"}}"#).as_bytes(),
            )
            .unwrap_err();
        assert_eq!(err.type_name(), "NotFoundException");
        let err = kms
            .dispatch(
                &headers("TrentService.Decrypt"),
                format!(r#"{{"CiphertextBlob":"{blob}","EncryptionContext":{{"p":"1"}},"KeyId":"some-other-key"}}"#).as_bytes(),
            )
            .unwrap_err();
        assert_eq!(err.type_name(), "IncorrectKeyException");
        // A blob from another stand-in (other master keys) is refused.
        let other = KmsStandIn::new(KmsConfig::new()).unwrap();
        let err = other
            .dispatch(
                &headers("TrentService.Decrypt"),
                format!(r#"{{"CiphertextBlob":"{blob}","EncryptionContext":{{"p":"1"}}}}"#)
                    .as_bytes(),
            )
            .unwrap_err();
        assert_eq!(err.type_name(), "InvalidCiphertextException");
    }

    #[test]
    fn error_body_shape() {
        let r = error_response(&KmsError::AccessDenied("no".into()));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()["x-amzn-errortype"], "AccessDeniedException");
        assert_eq!(r.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        assert_eq!(
            error_response(&KmsError::Internal("x".into())).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
