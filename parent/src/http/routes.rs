//! The HTTP API's routes (`docs/api.md`): the issuer surface (discovery, JWKS,
//! attestation), health and readiness, metrics and the audit checkpoint. The mint routes' handlers
//! are in [`crate::http::mint`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio_util::task::TaskTracker;

use crate::audit::AuditStore;
use crate::enclave::{attestation_json, EnclaveManager};
use crate::http::error::ApiError;
use crate::http::front::FrontLayer;
use crate::http::mint::{mint_aws_creds, mint_oidc_jwt};
use crate::metrics::{self, Gauges, Metrics};
use crate::session::SessionChecker;
use crate::sts::StsExchanger;

/// Time budget of each `/readyz` check.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Shared state of the HTTP handlers.
pub struct AppState {
    /// Issuer (no trailing slash).
    pub issuer: String,
    /// JWT lifetime requested from the enclave by default.
    pub jwt_ttl_seconds: u32,
    /// Body limit (for the 413 message).
    pub body_limit: usize,
    /// `Cache-Control` of the JWKS.
    pub jwks_cache_control: HeaderValue,
    /// Discovery document bytes.
    pub discovery: Bytes,
    /// The enclave.
    pub enclave: Arc<EnclaveManager>,
    /// The session check.
    pub session: SessionChecker,
    /// STS.
    pub sts: StsExchanger,
    /// The audit store.
    pub audit: Arc<dyn AuditStore>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Mints whose clients left before the answer, still finishing (and recording) on
    /// their own; the shutdown waits for them before closing the audit log.
    pub abandoned_requests: TaskTracker,
}

/// The discovery document for `issuer` (`docs/api.md`, `GET /.well-known/openid-configuration`).
pub fn discovery_document(issuer: &str) -> serde_json::Value {
    agentkeys_wire::discovery_document(issuer)
}

/// The router with every route of the HTTP API (the table at the top of `docs/api.md`).
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.body_limit;
    let metrics = state.metrics.clone();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/nitro-attestation", get(nitro_attestation))
        .route("/v1/mint-oidc-jwt", post(mint_oidc_jwt))
        .route("/v1/mint-aws-creds", post(mint_aws_creds))
        .route("/v1/audit/checkpoint", get(audit_checkpoint))
        .route("/v1/sign-in/nonce", get(sign_in_nonce))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(limit))
        .layer(FrontLayer::new(limit, metrics))
        .with_state(state)
}

fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut r = (status, body.into()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn json_ok<T: Serialize>(value: &T) -> Result<Response, ApiError> {
    json_ok_sized(value, JSON_BODY_DEFAULT_CAPACITY)
}

/// `serde_json::to_vec`'s own starting capacity; bodies that are known to be larger say
/// so through [`json_ok_sized`], which saves the doublings on the way up.
const JSON_BODY_DEFAULT_CAPACITY: usize = 128;

/// A 200 JSON body serialized into a buffer of `capacity` bytes to start with.
pub(crate) fn json_ok_sized<T: Serialize>(
    value: &T,
    capacity: usize,
) -> Result<Response, ApiError> {
    let mut body = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut body, value).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json_response(StatusCode::OK, body))
}

async fn healthz() -> &'static str {
    "ok"
}

#[derive(Serialize)]
struct Check {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Check {
    fn from(r: Result<(), String>) -> Check {
        match r {
            Ok(()) => Check {
                ok: true,
                error: None,
            },
            Err(e) => Check {
                ok: false,
                error: Some(e),
            },
        }
    }
}

async fn with_timeout<F: Future<Output = Result<(), String>>>(f: F) -> Result<(), String> {
    tokio::time::timeout(READY_CHECK_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {READY_CHECK_TIMEOUT:?}")))
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    let enclave = async {
        if s.enclave.is_ready() {
            Ok(())
        } else {
            Err(s.enclave.last_error())
        }
    };
    let audit = with_timeout(async { s.audit.healthy().await.map_err(|e| e.to_string()) });
    let backend = with_timeout(async { s.session.reachable().await.map_err(|e| e.to_string()) });
    let (enclave, audit, backend) = tokio::join!(enclave, audit, backend);
    let ready = enclave.is_ok() && audit.is_ok() && backend.is_ok();
    let mut body = serde_json::json!({
        "ready": ready,
        "checks": {
            "enclave": Check::from(enclave),
            "audit": Check::from(audit),
            "backend": Check::from(backend),
        }
    });
    // The issuer's certificate, as information: the mint API serves without it.
    if let Some(keeper) = s.enclave.issuer_tls() {
        body["issuer_tls"] = keeper.view().to_json();
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, body.to_string())
}

async fn discovery(State(s): State<Arc<AppState>>) -> Response {
    let mut r = json_response(StatusCode::OK, s.discovery.clone());
    r.headers_mut()
        .insert(header::CACHE_CONTROL, s.jwks_cache_control.clone());
    r
}

async fn jwks(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let p = s
        .enclave
        .published()
        .ok_or_else(|| ApiError::EnclaveUnavailable(s.enclave.last_error()))?;
    let mut r = json_response(StatusCode::OK, p.jwks.clone());
    r.headers_mut()
        .insert(header::CACHE_CONTROL, s.jwks_cache_control.clone());
    Ok(r)
}

/// The nonce of the query ([`agentkeys_wire::parse_nonce_query`]); a bad one is a 400.
pub fn parse_nonce(query: Option<&str>) -> Result<Option<Vec<u8>>, ApiError> {
    agentkeys_wire::parse_nonce_query(query).map_err(ApiError::BadRequest)
}

async fn nitro_attestation(
    State(s): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    match parse_nonce(q.as_deref())? {
        None => {
            let p = s
                .enclave
                .published()
                .ok_or_else(|| ApiError::EnclaveUnavailable(s.enclave.last_error()))?;
            Ok(json_response(StatusCode::OK, p.attestation_body.clone()))
        }
        Some(nonce) => {
            let a = s.enclave.attest(Some(nonce.clone())).await?;
            let body = attestation_json(&a, Some(&nonce), s.enclave.is_mock());
            let mut r = json_response(StatusCode::OK, body.to_string());
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(r)
        }
    }
}

/// Body of `GET /v1/audit/checkpoint` (also a valid `audit verify --checkpoint` file).
#[derive(Serialize, Deserialize, Debug)]
pub struct CheckpointBody {
    /// Enclave epoch.
    pub epoch: u64,
    /// Last seq signed.
    pub seq: u64,
    /// Chain head, hex.
    pub head: String,
    /// NSM module id of the enclave that keeps the chain.
    pub module_id: String,
    /// Attestation document (base64 COSE_Sign1) whose `user_data` is the checkpoint.
    pub document: String,
}

async fn audit_checkpoint(
    State(s): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let nonce = parse_nonce(q.as_deref())?;
    let cp = s.enclave.checkpoint(nonce).await?;
    let mut r = json_ok(&CheckpointBody {
        epoch: cp.epoch,
        seq: cp.seq,
        head: hex::encode(cp.head),
        module_id: cp.module_id,
        document: base64::engine::general_purpose::STANDARD.encode(&cp.document),
    })?;
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// `GET /v1/sign-in/nonce`: a nonce for a Sign-In with Ethereum message, made by the
/// enclave (which alone can check it), and the last UNIX second it is accepted.
async fn sign_in_nonce(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let (nonce, expires_at) = s.enclave.siwe_nonce().await?;
    let mut r = json_ok(&serde_json::json!({"nonce": nonce, "expires_at": expires_at}))?;
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

async fn metrics_text(State(s): State<Arc<AppState>>) -> Response {
    let rendered = s.metrics.render(&Gauges {
        enclave_ready: s.enclave.is_ready(),
        enclave_unseals: s.enclave.unseal_count(),
        audit_pending_withheld: s.audit.pending_withheld(),
        abandoned_mints: s.abandoned_requests.len(),
    });
    let text = match rendered {
        Ok(text) => text,
        Err(_) => {
            return ApiError::Internal("metrics could not be encoded".to_owned()).into_response()
        }
    };
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_nonce_is_a_bad_request() {
        assert_eq!(parse_nonce(Some("nonce=0a0b")).unwrap(), Some(vec![10, 11]));
        assert!(matches!(
            parse_nonce(Some("x=1")),
            Err(ApiError::BadRequest(m)) if m.contains("only nonce is accepted")
        ));
    }

    #[test]
    fn discovery_has_required_members() {
        let d = discovery_document("https://i.example.com");
        assert_eq!(d["issuer"], "https://i.example.com");
        assert_eq!(d["jwks_uri"], "https://i.example.com/.well-known/jwks.json");
        assert_eq!(d["response_types_supported"][0], "id_token");
        assert_eq!(d["subject_types_supported"][0], "public");
        assert_eq!(d["id_token_signing_alg_values_supported"][0], "ES256");
        assert_eq!(
            d["nitro_attestation_uri"],
            "https://i.example.com/.well-known/nitro-attestation"
        );
    }
}
