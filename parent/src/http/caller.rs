//! Who is asking for a token, and the proof the broker forwards to the enclave.
//!
//! A caller presents either a bearer (its session token) or, in the mint body, a Sign-In
//! with Ethereum message its wallet signed. The broker checks a bearer with the session
//! backend (which may revoke it) and refuses on its own; it never widens what the proof
//! allows: the enclave verifies the session token or the signed message itself and signs
//! only for the wallet the proof shows (`docs/architecture.md`, "Authorization"). Only an
//! enclave that runs `parent-vouched` takes the backend's wallet on the broker's word.

use std::sync::Arc;

use agentkeys_wire::WalletProof;
use axum::http::HeaderMap;
use serde::Deserialize;

use crate::audit::{AuditEvent, NewAuditRow, Outcome};
use crate::http::error::ApiError;
use crate::http::routes::AppState;
use crate::session::{bearer_from_headers, SessionError};

/// Length of an EIP-191 signature: `r ‖ s ‖ v` (32 + 32 + 1 bytes).
const SIGNATURE_BYTES: usize = 65;

/// The `sign_in` member of a mint body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// The EIP-4361 message, as signed.
    pub message: String,
    /// Its `personal_sign` signature: `0x` and 130 hex digits.
    pub signature: String,
}

impl SignIn {
    /// The proof for the enclave.
    fn into_proof(self) -> Result<WalletProof, ApiError> {
        let digits = self
            .signature
            .strip_prefix("0x")
            .ok_or_else(|| ApiError::BadSignIn("sign_in.signature must start with 0x".into()))?;
        let signature = hex::decode(digits)
            .ok()
            .filter(|s| s.len() == SIGNATURE_BYTES)
            .ok_or_else(|| {
                ApiError::BadSignIn(format!(
                    "sign_in.signature must be 0x and {} hex digits (r, s, v)",
                    SIGNATURE_BYTES * 2
                ))
            })?;
        Ok(WalletProof::WalletSignature {
            message: self.message,
            signature,
        })
    }
}

/// A caller the broker lets through to the enclave.
#[derive(Debug)]
pub struct Caller {
    /// SHA-256 of the bearer, when one was presented.
    pub bearer_sha256: Option<[u8; 32]>,
    /// The wallet the session backend named (empty for a sign-in: the enclave reads it
    /// from the signed message).
    pub wallet: Arc<str>,
    /// What the enclave verifies.
    pub proof: Option<WalletProof>,
}

impl Caller {
    /// A failure row about this caller.
    pub fn row(&self, event: AuditEvent, outcome: Outcome) -> NewAuditRow {
        let mut row = NewAuditRow::new(event, outcome);
        if !self.wallet.is_empty() {
            row = row.wallet(&*self.wallet);
        }
        row.bearer_sha256 = self.bearer_sha256;
        row
    }
}

/// Identifies the caller of a mint: the sign-in of the body, or the bearer checked with
/// the session backend (auditing a refused or unverifiable bearer).
pub async fn identify(
    s: &AppState,
    headers: &HeaderMap,
    sign_in: Option<SignIn>,
) -> Result<Caller, ApiError> {
    if let Some(sign_in) = sign_in {
        return Ok(Caller {
            bearer_sha256: None,
            wallet: Arc::from(""),
            proof: Some(sign_in.into_proof()?),
        });
    }
    // No (usable) bearer: 401 and no row.
    let bearer = bearer_from_headers(headers).map_err(ApiError::MissingBearer)?;
    match s.session.check_counted(&bearer, &s.metrics).await {
        Ok(wallet) => Ok(Caller {
            bearer_sha256: Some(bearer.sha256),
            wallet,
            proof: s
                .enclave
                .takes_session_proofs()
                .then(|| WalletProof::Session(bearer.token().to_string())),
        }),
        Err(e) => {
            let (event, status, api) = match &e {
                SessionError::Rejected => (AuditEvent::AuthFailed, 401, ApiError::BearerRejected),
                other => (
                    AuditEvent::BackendFailed,
                    502,
                    ApiError::Backend(other.to_string()),
                ),
            };
            let mut row = NewAuditRow::new(event, Outcome::Failure)
                .status(status)
                .detail(e.to_string());
            row.bearer_sha256 = Some(bearer.sha256);
            if let Err(e) = s.audit.append(row).await {
                tracing::error!(error = %e, "could not write failure audit row");
            }
            Err(api)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign_in(signature: &str) -> SignIn {
        SignIn {
            message: "m".into(),
            signature: signature.into(),
        }
    }

    #[test]
    fn a_sign_in_signature_is_0x_and_65_bytes() {
        let good = format!("0x{}", "ab".repeat(65));
        match sign_in(&good).into_proof().unwrap() {
            WalletProof::WalletSignature { message, signature } => {
                assert_eq!(message, "m");
                assert_eq!(signature, vec![0xab; 65]);
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "ab".repeat(65),
            format!("0x{}", "ab".repeat(64)),
            format!("0x{}", "ab".repeat(66)),
            format!("0x{}zz", "ab".repeat(64)),
            String::new(),
        ] {
            let e = sign_in(&bad).into_proof().unwrap_err();
            assert!(matches!(e, ApiError::BadSignIn(_)), "{bad}: {e:?}");
        }
    }
}
