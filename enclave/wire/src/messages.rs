//! Request and response messages, their envelopes and the error type.
//!
//! # What can never cross
//!
//! No type in this module has a field for the issuer seed, the P-256 signing scalar, the
//! issuer's TLS private key, the ACME account private key or the enclave's per-boot RSA
//! private key, so no encoding of any message can carry them. The only key-related bytes
//! that cross are public: the sealed seed (a KMS `CiphertextBlob`, useless without KMS and
//! the attested image), public JWKS bytes, attestation documents, the issuer's public
//! certificate chain and hashes of public keys. Adding such a field is a protocol change
//! that must be refused.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Request id `0` is reserved: the server uses it for a reply to a frame whose id it
/// could not read. Clients number their requests from 1.
pub const UNKNOWN_REQUEST_ID: u64 = 0;

/// A request from the parent to the enclave, with its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// Caller-chosen id, echoed in the reply; never [`UNKNOWN_REQUEST_ID`].
    pub id: u64,
    /// The request.
    pub request: Request,
}

/// A reply from the enclave, tagged with the id of the request it answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    /// The id of the request answered, or [`UNKNOWN_REQUEST_ID`] for a frame whose id
    /// could not be read.
    pub id: u64,
    /// The answer or the error.
    pub result: Result<Response, WireError>,
}

/// What the parent can ask of the enclave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// State of the enclave (unsealed, kids, audit chain position). Answered by
    /// [`Response::Status`].
    Status,
    /// Unseal (genesis or re-open) the issuer seed through KMS. Answered by
    /// [`Response::Unsealed`].
    Unseal(UnsealRequest),
    /// Mint a JWT for a wallet the parent vouches for. Answered by [`Response::Jwt`].
    MintJwt(MintJwtRequest),
    /// A fresh attestation document over the JWKS bytes. Answered by
    /// [`Response::Attestation`].
    Attest {
        /// Auditor nonce to embed in the document, if any.
        #[serde(default, with = "serde_bytes")]
        nonce: Option<Vec<u8>>,
    },
    /// An attested audit chain checkpoint. Answered by [`Response::Checkpoint`].
    AuditCheckpoint {
        /// Nonce to embed in the document, if any.
        #[serde(default, with = "serde_bytes")]
        nonce: Option<Vec<u8>>,
    },
    /// A nonce for a Sign-In with Ethereum message. Answered by [`Response::SiweNonce`].
    SiweNonce,
    /// The state of the issuer's TLS (its certificate, ACME account and last error),
    /// offering a chain cached by the parent. Answered by [`Response::IssuerTls`].
    IssuerTls(IssuerTlsRequest),
}

impl Request {
    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "Status",
            Request::Unseal(_) => "Unseal",
            Request::MintJwt(_) => "MintJwt",
            Request::Attest { .. } => "Attest",
            Request::AuditCheckpoint { .. } => "AuditCheckpoint",
            Request::SiweNonce => "SiweNonce",
            Request::IssuerTls(_) => "IssuerTls",
        }
    }
}

/// Parameters of [`Request::Unseal`].
///
/// The enclave calls KMS itself (TLS terminates inside the enclave); the parent only
/// lends credentials and stores the sealed seed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsealRequest {
    /// AWS region of the KMS key, e.g. `eu-west-1`.
    pub region: String,
    /// KMS key id, ARN or alias.
    pub kms_key_id: String,
    /// KMS endpoint override. Outside mock mode only
    /// `https://kms[-fips].<region>.amazonaws.com` is accepted by the enclave.
    #[serde(default)]
    pub kms_endpoint: Option<String>,
    /// Credentials the enclave uses for its KMS call.
    pub credentials: AwsCredentials,
    /// The stored KMS `CiphertextBlob` from a previous genesis; `None` = genesis.
    #[serde(default, with = "serde_bytes")]
    pub sealed_seed: Option<Vec<u8>>,
}

impl fmt::Debug for UnsealRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnsealRequest")
            .field("region", &self.region)
            .field("kms_key_id", &self.kms_key_id)
            .field("kms_endpoint", &self.kms_endpoint)
            .field("credentials", &self.credentials)
            .field(
                "sealed_seed",
                &self
                    .sealed_seed
                    .as_ref()
                    .map(|s| format!("<{} bytes>", s.len())),
            )
            .finish()
    }
}

/// Temporary AWS credentials lent to the enclave for its KMS call.
///
/// The secret access key and session token are zeroized on drop and never printed by
/// `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct AwsCredentials {
    /// Access key id (not secret).
    pub access_key_id: String,
    /// Secret access key (secret).
    pub secret_access_key: String,
    /// Session token for temporary credentials (secret).
    #[serde(default)]
    pub session_token: Option<String>,
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Parameters of [`Request::MintJwt`]. The enclave builds the claims with its own clock,
/// issuer and TTL bounds; it never signs caller-supplied bytes. Whose token it signs
/// depends on its authorization modes: with a `proof`, the wallet is the one the proof
/// shows (the enclave verifies it); without one, in `parent-vouched` mode only, the
/// parent's `wallet`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MintJwtRequest {
    /// The wallet the parent vouches for, or expects the proof to show (empty when it
    /// does not know it).
    pub wallet: String,
    /// Requested lifetime; the enclave applies its own bounds.
    #[serde(default)]
    pub ttl_seconds: Option<u32>,
    /// Audience choice; `None` = the enclave's default audience.
    #[serde(default)]
    pub audience: Option<String>,
    /// The caller's proof that it controls the wallet, forwarded unchanged.
    #[serde(default)]
    pub proof: Option<WalletProof>,
}

/// A caller's proof that it controls a wallet, as the caller sent it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalletProof {
    /// The caller's session token, a compact JWS the session backend signed (the bearer
    /// bytes as received).
    Session(String),
    /// An EIP-4361 (Sign-In with Ethereum) message and its EIP-191 `personal_sign`
    /// signature (65 bytes `r ‖ s ‖ v`).
    WalletSignature {
        /// The message text.
        message: String,
        /// The signature.
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
}

impl fmt::Debug for WalletProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A session token is a credential: never printed.
            WalletProof::Session(token) => write!(f, "Session(<{} bytes>)", token.len()),
            WalletProof::WalletSignature { message, .. } => {
                write!(f, "WalletSignature(<{} byte message>)", message.len())
            }
        }
    }
}

/// What the enclave can answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status(EnclaveStatus),
    /// Answer to [`Request::Unseal`].
    Unsealed(UnsealResult),
    /// Answer to [`Request::MintJwt`].
    Jwt(MintedJwt),
    /// Answer to [`Request::Attest`].
    Attestation(Attestation),
    /// Answer to [`Request::AuditCheckpoint`].
    Checkpoint(AuditCheckpoint),
    /// Answer to [`Request::SiweNonce`].
    SiweNonce {
        /// The nonce (alphanumeric, as EIP-4361 requires).
        nonce: String,
        /// Last second (UNIX) a message with it is accepted.
        expires_at: u64,
    },
    /// Answer to [`Request::IssuerTls`].
    IssuerTls(IssuerTlsStatus),
}

impl Response {
    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Status(_) => "Status",
            Response::Unsealed(_) => "Unsealed",
            Response::Jwt(_) => "Jwt",
            Response::Attestation(_) => "Attestation",
            Response::Checkpoint(_) => "Checkpoint",
            Response::SiweNonce { .. } => "SiweNonce",
            Response::IssuerTls(_) => "IssuerTls",
        }
    }
}

/// Enclave state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnclaveStatus {
    /// Whether the seed has been unsealed (signing is possible).
    pub unsealed: bool,
    /// Whether the enclave runs with the mock NSM (never trust its documents).
    pub mock: bool,
    /// The configured issuer URL (`iss`).
    pub issuer: String,
    /// Every kid in the JWKS.
    pub kids: Vec<String>,
    /// The kid that signs now, once unsealed.
    pub active_kid: Option<String>,
    /// Audit chain epoch (random per boot).
    pub epoch: u64,
    /// Number of JWTs minted in this epoch (the last `seq`).
    pub seq: u64,
    /// The NSM module id of this enclave boot (AWS CloudTrail names it in the records of
    /// the enclave's attested KMS calls).
    pub module_id: String,
    /// The authorization modes the enclave runs (`signed-session`, `wallet-signature`,
    /// `parent-vouched`): which proofs a mint needs.
    #[serde(default)]
    pub auth_modes: Vec<String>,
}

/// Result of a successful unseal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsealResult {
    /// The KMS `CiphertextBlob` sealing the seed: the parent stores it and sends it back
    /// on the next boot. Useless without KMS and the attested image.
    #[serde(with = "serde_bytes")]
    pub sealed_seed: Vec<u8>,
    /// Whether this unseal created the seed (`GenerateDataKey`).
    pub genesis: bool,
    /// The kid that signs now.
    pub active_kid: String,
    /// Every kid in the JWKS.
    pub kids: Vec<String>,
}

/// A minted JWT and its audit chain position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MintedJwt {
    /// The compact JWS.
    pub jwt: String,
    /// Key id of the signing key.
    pub kid: String,
    /// The `jti` claim.
    pub jti: String,
    /// The `sub` claim (the wallet).
    pub wallet: String,
    /// The `iat` claim (UNIX seconds, enclave clock).
    pub iat: u64,
    /// The `exp` claim (UNIX seconds).
    pub exp: u64,
    /// Audit chain epoch.
    pub epoch: u64,
    /// Position of this JWT in the audit chain (1-based).
    pub seq: u64,
    /// SHA-256 of the JWT's ASCII bytes.
    #[serde(with = "serde_bytes")]
    pub jwt_sha256: [u8; 32],
    /// SHA-256 of the JWT's signing input (its header and claims, without the
    /// signature): what the audit chain hashes at `seq`.
    #[serde(with = "serde_bytes")]
    pub signing_input_sha256: [u8; 32],
    /// Chain head after this JWT: `chain_next(prev, seq, signing_input_sha256)`.
    #[serde(with = "serde_bytes")]
    pub head: [u8; 32],
}

/// An attestation document beside the exact JWKS bytes it attests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// NSM attestation document (COSE_Sign1) whose `user_data` is `statement`.
    #[serde(with = "serde_bytes")]
    pub document: Vec<u8>,
    /// The exact JWKS bytes to serve.
    #[serde(with = "serde_bytes")]
    pub jwks: Vec<u8>,
    /// SHA-256 of `jwks`.
    #[serde(with = "serde_bytes")]
    pub jwks_sha256: [u8; 32],
    /// Kids in the JWKS.
    pub kids: Vec<String>,
    /// The [`JwksStatement`](crate::JwksStatement) attested, as encoded in the document.
    #[serde(with = "serde_bytes")]
    pub statement: Vec<u8>,
}

/// An attested audit chain checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    /// Audit chain epoch.
    pub epoch: u64,
    /// Last sequence number included.
    pub seq: u64,
    /// Chain head after `seq`.
    #[serde(with = "serde_bytes")]
    pub head: [u8; 32],
    /// The enclave's NSM module id.
    pub module_id: String,
    /// Attestation document whose `user_data` is the
    /// [`CheckpointStatement`](crate::CheckpointStatement) of these fields.
    #[serde(with = "serde_bytes")]
    pub document: Vec<u8>,
}

/// Parameters of [`Request::IssuerTls`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerTlsRequest {
    /// A chain the parent cached earlier (PEM, leaf first), offered after a restart. The
    /// enclave serves it only if the leaf's key is its own TLS key, the name is the issuer
    /// host and it is within its validity; otherwise it says why in
    /// [`IssuerTlsStatus::cached_chain_refused`] and orders a new one.
    #[serde(default)]
    pub cached_chain_pem: Option<String>,
}

/// [`IssuerTlsStatus::state`] while the enclave serves a self-signed certificate for its
/// TLS key (no CA-issued chain yet).
pub const ISSUER_TLS_SELF_SIGNED: &str = "self-signed";
/// [`IssuerTlsStatus::state`] while the enclave serves a CA-issued chain.
pub const ISSUER_TLS_ISSUED: &str = "issued";

/// The issuer's TLS as the enclave runs it. Every field is public.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerTlsStatus {
    /// Whether the enclave terminates the issuer's TLS (it was started with an ACME
    /// directory).
    pub enabled: bool,
    /// The issuer host the certificate names.
    pub hostname: String,
    /// SHA-256 of the DER SubjectPublicKeyInfo of the TLS key, lower-case hex.
    pub tls_spki_sha256: String,
    /// [`ISSUER_TLS_SELF_SIGNED`] or [`ISSUER_TLS_ISSUED`].
    pub state: String,
    /// The public chain served now (PEM, leaf first); `None` while self-signed.
    #[serde(default)]
    pub chain_pem: Option<String>,
    /// The leaf's `notAfter`, UNIX seconds.
    #[serde(default)]
    pub not_after: Option<u64>,
    /// The ACME account URL, once the CA returned it.
    #[serde(default)]
    pub acme_account_uri: Option<String>,
    /// The last ACME failure, human readable; `None` after a success.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Why the offered cached chain was not served, if it was not.
    #[serde(default)]
    pub cached_chain_refused: Option<String>,
}

/// An error answered by the enclave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct WireError {
    /// Machine-readable class.
    pub kind: WireErrorKind,
    /// Human-readable detail; never contains secrets.
    pub message: String,
}

impl WireError {
    /// Builds an error.
    pub fn new(kind: WireErrorKind, message: impl Into<String>) -> Self {
        WireError {
            kind,
            message: message.into(),
        }
    }
}

/// Classes of [`WireError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WireErrorKind {
    /// Signing or attesting needs an unsealed seed.
    NotUnsealed,
    /// Unseal was already done this boot.
    AlreadyUnsealed,
    /// The wallet in a mint request is not valid.
    InvalidWallet,
    /// A request field is out of range or inconsistent.
    InvalidRequest,
    /// The proof of the wallet was missing or refused: no token was signed.
    Unauthorized,
    /// The KMS call failed.
    Kms,
    /// KMS (or a policy) refused access.
    AccessDenied,
    /// The NSM device failed.
    Nsm,
    /// A frame exceeded [`MAX_FRAME_BYTES`](crate::MAX_FRAME_BYTES).
    FrameTooLarge,
    /// A frame could not be decoded.
    Malformed,
    /// Any other failure inside the enclave.
    Internal,
}

impl fmt::Display for WireErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            WireErrorKind::NotUnsealed => "not unsealed",
            WireErrorKind::AlreadyUnsealed => "already unsealed",
            WireErrorKind::InvalidWallet => "invalid wallet",
            WireErrorKind::InvalidRequest => "invalid request",
            WireErrorKind::Unauthorized => "unauthorized",
            WireErrorKind::Kms => "KMS error",
            WireErrorKind::AccessDenied => "access denied",
            WireErrorKind::Nsm => "NSM error",
            WireErrorKind::FrameTooLarge => "frame too large",
            WireErrorKind::Malformed => "malformed frame",
            WireErrorKind::Internal => "internal error",
        };
        f.write_str(name)
    }
}
