//! The HTTP API (DESIGN §6): routes, handlers, the mint request path, and serving with
//! or without TLS and with graceful shutdown.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio_util::task::TaskTracker;

use crate::audit::{AuditEvent, AuditFault, AuditFaults, AuditStore, NewAuditRow, Outcome};
use crate::completion::RunToCompletion;
use crate::config::{StsMode, DEFAULT_MAX_CONNECTIONS, JWT_TTL_MAX_SECONDS, JWT_TTL_MIN_SECONDS};
use crate::config::{STS_DURATION_MAX_SECONDS, STS_DURATION_MIN_SECONDS};
use crate::enclave::{attestation_json, EnclaveManager};
use crate::error::{ApiError, BodyReadTimeout};
use crate::front::FrontLayer;
use crate::metrics::{Gauges, Metrics};
use crate::session::{bearer_from_headers, Bearer, SessionChecker, SessionError};
use crate::sts::StsExchanger;

/// Longest nonce accepted, in bytes: the NSM accepts at most 512 bytes of nonce
/// (AWS Nitro Enclaves NSM API, `Attestation.nonce`).
pub const MAX_NONCE_BYTES: usize = 512;
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
    /// Fault switch of the audit store (dev stack only; enables `POST /dev/faults/audit`).
    pub dev_audit_faults: Option<AuditFaults>,
    /// Mints whose clients left before the answer, still finishing (and recording) on
    /// their own; the shutdown waits for them before closing the audit log.
    pub abandoned_requests: TaskTracker,
}

/// The discovery document (DESIGN §6) for `issuer`.
pub fn discovery_document(issuer: &str) -> serde_json::Value {
    serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": [
            "iss", "sub", "aud", "iat", "nbf", "exp", "jti",
            "agentkeys_user_wallet", "https://aws.amazon.com/tags"
        ],
        "nitro_attestation_uri": format!("{issuer}/.well-known/nitro-attestation"),
    })
}

/// The router with every route of DESIGN §6 (and the audit checkpoint).
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.body_limit;
    let metrics = state.metrics.clone();
    let mut r = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/nitro-attestation", get(nitro_attestation))
        .route("/v1/mint-oidc-jwt", post(mint_oidc_jwt))
        .route("/v1/mint-aws-creds", post(mint_aws_creds))
        .route("/v1/audit/checkpoint", get(audit_checkpoint))
        .route("/metrics", get(metrics_text));
    if state.dev_audit_faults.is_some() {
        r = r.route("/dev/faults/audit", post(dev_audit_fault));
    }
    r.fallback(|| async { ApiError::NotFound })
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

/// Room for a mint answer's fields besides the token or credentials (wallet, expiration,
/// kid, audit id, names and quotes are under 200 bytes together).
const MINT_BODY_FIELDS_CAPACITY: usize = 256;

/// A 200 JSON body serialized into a buffer of `capacity` bytes to start with.
fn json_ok_sized<T: Serialize>(value: &T, capacity: usize) -> Result<Response, ApiError> {
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
    let body = serde_json::json!({
        "ready": ready,
        "checks": {
            "enclave": Check::from(enclave),
            "audit": Check::from(audit),
            "backend": Check::from(backend),
        }
    });
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

/// Parses `nonce=<hex>` from a query string (other parameters are refused).
pub fn parse_nonce(query: Option<&str>) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return Ok(None);
    };
    let mut nonce = None;
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != "nonce" {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter {:?}; only nonce is accepted",
                k.chars().take(32).collect::<String>()
            )));
        }
        if nonce.is_some() {
            return Err(ApiError::BadRequest("nonce given twice".into()));
        }
        if v.len() > MAX_NONCE_BYTES * 2 {
            return Err(ApiError::BadRequest(format!(
                "nonce longer than {MAX_NONCE_BYTES} bytes"
            )));
        }
        if v.is_empty() {
            return Err(ApiError::BadRequest("nonce is empty".into()));
        }
        let bytes =
            hex::decode(v).map_err(|e| ApiError::BadRequest(format!("nonce is not hex: {e}")))?;
        nonce = Some(bytes);
    }
    Ok(nonce)
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
        document: base64::engine::general_purpose::STANDARD.encode(&cp.document),
    })?;
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

async fn metrics_text(State(s): State<Arc<AppState>>) -> Response {
    let text = s.metrics.render(&Gauges {
        enclave_ready: s.enclave.is_ready(),
        enclave_unseals: s.enclave.unseal_count(),
        audit_pending_withheld: s.audit.pending_withheld(),
        abandoned_mints: s.abandoned_requests.len(),
    });
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

async fn dev_audit_fault(
    State(s): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(f) = &s.dev_audit_faults else {
        return Err(ApiError::NotFound);
    };
    let fault = match body.trim_ascii() {
        b"refuse_writes" => AuditFault::RefuseWrites,
        b"none" => AuditFault::None,
        _ => {
            return Err(ApiError::BadRequest(
                "expected refuse_writes or none".into(),
            ))
        }
    };
    f.set(fault);
    tracing::warn!(?fault, "audit fault switched (dev stack)");
    json_ok(&serde_json::json!({"audit_fault": format!("{fault:?}")}))
}

/// Body of `POST /v1/mint-oidc-jwt` (optional).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MintJwtBody {
    ttl_seconds: Option<u32>,
}

/// Body of `POST /v1/mint-aws-creds` (optional).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MintCredsBody {
    duration_seconds: Option<u32>,
}

fn parse_body<T: for<'a> Deserialize<'a> + Default>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<T, ApiError> {
    let body = body.map_err(|rej| {
        if let Some(t) = BodyReadTimeout::find(&rej) {
            ApiError::RequestTimeout { after: t.after }
        } else if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::BadRequest(format!("cannot read body: {rej}"))
        }
    })?;
    if body.trim_ascii().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

fn rfc3339(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// Appends a failure row; a failure to write it is logged (the request fails anyway).
async fn audit_failure(s: &AppState, row: NewAuditRow) {
    let event = row.event;
    if let Err(e) = s.audit.append(row).await {
        tracing::error!(%event, error = %e, "could not write failure audit row");
    }
}

/// Bearer → wallet, auditing failures after a bearer was presented.
async fn authenticate(s: &AppState, headers: &HeaderMap) -> Result<(Bearer, Arc<str>), ApiError> {
    // No (usable) bearer: 401 and no row.
    let bearer = bearer_from_headers(headers).map_err(ApiError::MissingBearer)?;
    match s.session.check_counted(&bearer, &s.metrics).await {
        Ok(wallet) => Ok((bearer, wallet)),
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
            audit_failure(s, row).await;
            Err(api)
        }
    }
}

fn mint_failed_row(bearer: &Bearer, wallet: &str, e: &ApiError) -> NewAuditRow {
    let mut row = NewAuditRow::new(AuditEvent::MintFailed, Outcome::Failure)
        .wallet(wallet)
        .status(e.status().as_u16())
        .detail(e.to_string());
    row.bearer_sha256 = Some(bearer.sha256);
    row
}

#[derive(Serialize)]
struct MintJwtResponse<'a> {
    jwt: &'a str,
    wallet: &'a str,
    expiration: String,
    kid: &'a str,
    audit_id: i64,
}

/// Most mints whose clients left that may still be finishing before new mints are
/// refused with 503: the default cap on open client connections, so that mints in flight
/// stay within twice that cap even when clients disconnect as soon as they have sent a
/// request.
const MAX_ABANDONED_MINTS: usize = DEFAULT_MAX_CONNECTIONS;

/// Refuses a new mint while `abandoned` holds `limit` or more unfinished mints.
fn refuse_when_abandoned_mints_pile_up(
    abandoned: &TaskTracker,
    limit: usize,
) -> Result<(), ApiError> {
    let running = abandoned.len();
    if running >= limit {
        return Err(ApiError::Overloaded { running, limit });
    }
    Ok(())
}

async fn mint_oidc_jwt(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    refuse_when_abandoned_mints_pile_up(&s.abandoned_requests, MAX_ABANDONED_MINTS)?;
    let req: MintJwtBody = parse_body(body, s.body_limit)?;
    let ttl = match req.ttl_seconds {
        None => s.jwt_ttl_seconds,
        Some(t) if (JWT_TTL_MIN_SECONDS..=JWT_TTL_MAX_SECONDS).contains(&t) => t,
        Some(t) => {
            return Err(ApiError::BadRequest(format!(
                "ttl_seconds {t} outside [{JWT_TTL_MIN_SECONDS}, {JWT_TTL_MAX_SECONDS}]"
            )))
        }
    };
    let (bearer, wallet) = authenticate(&s, &headers).await?;
    // From here on the enclave may count a seq: finish and record it even if the client
    // leaves.
    let abandoned = s.abandoned_requests.clone();
    RunToCompletion::new(mint_oidc_jwt_recorded(s, bearer, wallet, ttl), abandoned).await
}

/// The part of `POST /v1/mint-oidc-jwt` that signs and records.
async fn mint_oidc_jwt_recorded(
    s: Arc<AppState>,
    bearer: Bearer,
    wallet: Arc<str>,
    ttl: u32,
) -> Result<Response, ApiError> {
    let minted = match s.enclave.mint(&wallet, ttl).await {
        Ok(m) => m,
        Err(e) => {
            audit_failure(&s, mint_failed_row(&bearer, &wallet, &e)).await;
            return Err(e);
        }
    };
    // Built again on the (rare) failure path rather than cloned for every request.
    let success_row = || {
        let mut row = NewAuditRow::new(AuditEvent::MintJwt, Outcome::Success)
            .wallet(&*minted.wallet)
            .token_ids(&*minted.kid, &*minted.jti)
            .enclave(minted.epoch, minted.seq, minted.jwt_sha256, minted.head)
            .status(200);
        row.bearer_sha256 = Some(bearer.sha256);
        row
    };
    let receipt = match s.audit.append(success_row()).await {
        Ok(r) => r,
        Err(e) => {
            // The token is withheld; the log still accounts for the enclave's seq.
            s.audit
                .queue_withheld(success_row().detail(format!("success row failed: {e}")));
            s.metrics.tokens_withheld.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, seq = minted.seq, "audit append failed; token withheld");
            return Err(ApiError::Audit(e.to_string()));
        }
    };
    s.metrics.tokens_issued.fetch_add(1, Ordering::Relaxed);
    json_ok_sized(
        &MintJwtResponse {
            jwt: &minted.jwt,
            wallet: &minted.wallet,
            expiration: rfc3339(minted.exp),
            kid: &minted.kid,
            audit_id: receipt.id,
        },
        minted.jwt.len() + MINT_BODY_FIELDS_CAPACITY,
    )
}

#[derive(Serialize)]
struct MintCredsResponse<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
    session_token: &'a str,
    expiration: &'a str,
    wallet: &'a str,
    audit_id: i64,
}

async fn mint_aws_creds(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    refuse_when_abandoned_mints_pile_up(&s.abandoned_requests, MAX_ABANDONED_MINTS)?;
    let req: MintCredsBody = parse_body(body, s.body_limit)?;
    if let Some(d) = req.duration_seconds {
        if !(STS_DURATION_MIN_SECONDS..=STS_DURATION_MAX_SECONDS).contains(&d) {
            return Err(ApiError::BadRequest(format!(
                "duration_seconds {d} outside [{STS_DURATION_MIN_SECONDS}, {STS_DURATION_MAX_SECONDS}]"
            )));
        }
    }
    let (bearer, wallet) = authenticate(&s, &headers).await?;
    // From here on the enclave may count a seq and STS may issue credentials: finish and
    // record them even if the client leaves.
    let abandoned = s.abandoned_requests.clone();
    RunToCompletion::new(
        mint_aws_creds_recorded(s, bearer, wallet, req.duration_seconds),
        abandoned,
    )
    .await
}

/// The part of `POST /v1/mint-aws-creds` that mints, exchanges and records.
async fn mint_aws_creds_recorded(
    s: Arc<AppState>,
    bearer: Bearer,
    wallet: Arc<str>,
    duration_seconds: Option<u32>,
) -> Result<Response, ApiError> {
    let minted = match s.sts.mode() {
        StsMode::WebIdentity => match s.enclave.mint(&wallet, s.jwt_ttl_seconds).await {
            Ok(m) => Some(m),
            Err(e) => {
                audit_failure(&s, mint_failed_row(&bearer, &wallet, &e)).await;
                return Err(e);
            }
        },
        StsMode::AssumeRole => None,
    };
    let base = |event, outcome| {
        let mut row = NewAuditRow::new(event, outcome).wallet(&*wallet);
        row.bearer_sha256 = Some(bearer.sha256);
        if let Some(m) = &minted {
            row = row
                .token_ids(&*m.kid, &*m.jti)
                .enclave(m.epoch, m.seq, m.jwt_sha256, m.head);
        }
        row
    };
    let creds = match s
        .sts
        .exchange(
            minted.as_ref().map(|m| m.jwt.as_str()),
            &wallet,
            duration_seconds,
        )
        .await
    {
        Ok(c) => c,
        Err(e) => {
            let api = ApiError::Sts {
                code: e.code.clone(),
                message: e.message.clone(),
            };
            let row = base(AuditEvent::StsFailed, Outcome::Failure)
                .status(502)
                .detail(format!("STS {}: {}", e.code, e.message));
            if let Err(ae) = s.audit.append(row.clone()).await {
                tracing::error!(error = %ae, "could not write sts_failed row");
                if minted.is_some() {
                    s.audit.queue_withheld(row);
                }
            }
            return Err(api);
        }
    };
    // Built again on the (rare) failure path rather than cloned for every request.
    let success_row = || {
        base(AuditEvent::MintAwsCreds, Outcome::Success)
            .status(200)
            .detail(format!("access_key_id={}", creds.access_key_id))
    };
    let receipt = match s.audit.append(success_row()).await {
        Ok(r) => r,
        Err(e) => {
            if minted.is_some() {
                s.audit
                    .queue_withheld(success_row().detail(format!("success row failed: {e}")));
            }
            s.metrics.tokens_withheld.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "audit append failed; credentials withheld");
            return Err(ApiError::Audit(e.to_string()));
        }
    };
    s.metrics.credentials_issued.fetch_add(1, Ordering::Relaxed);
    // Sized up front, the body is never reallocated, so no stale copy of the secret is
    // left behind by a doubling.
    let capacity = creds.access_key_id.len()
        + creds.secret_access_key.len()
        + creds.session_token.len()
        + MINT_BODY_FIELDS_CAPACITY;
    json_ok_sized(
        &MintCredsResponse {
            access_key_id: &creds.access_key_id,
            secret_access_key: &creds.secret_access_key,
            session_token: &creds.session_token,
            expiration: &creds.expiration,
            wallet: &wallet,
            audit_id: receipt.id,
        },
        capacity,
    )
}

impl SessionChecker {
    /// [`SessionChecker::check`], counting cache hits and backend calls.
    pub async fn check_counted(
        &self,
        bearer: &Bearer,
        metrics: &Metrics,
    ) -> Result<Arc<str>, SessionError> {
        if let Some(w) = self.cached_wallet(bearer) {
            metrics.session_cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(w);
        }
        metrics
            .session_backend_calls
            .fetch_add(1, Ordering::Relaxed);
        self.check_backend(bearer).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn mints_are_refused_while_abandoned_ones_pile_up() {
        let abandoned = TaskTracker::new();
        let (release, released) = tokio::sync::watch::channel(false);
        for _ in 0..3 {
            let mut released = released.clone();
            abandoned.spawn(async move {
                let _ = released.wait_for(|r| *r).await;
            });
        }
        assert!(refuse_when_abandoned_mints_pile_up(&abandoned, 4).is_ok());
        match refuse_when_abandoned_mints_pile_up(&abandoned, 3) {
            Err(ApiError::Overloaded { running, limit }) => {
                assert_eq!((running, limit), (3, 3));
            }
            other => panic!("expected Overloaded, got {other:?}"),
        }
        release.send(true).unwrap();
        abandoned.close();
        abandoned.wait().await;
        assert!(refuse_when_abandoned_mints_pile_up(&abandoned, 3).is_ok());
    }

    #[test]
    fn nonce_parsing() {
        assert!(parse_nonce(None).unwrap().is_none());
        assert!(parse_nonce(Some("")).unwrap().is_none());
        assert_eq!(
            parse_nonce(Some("nonce=0a0b")).unwrap().unwrap(),
            vec![10, 11]
        );
        assert!(parse_nonce(Some("nonce=zz")).is_err());
        assert!(parse_nonce(Some("nonce=abc")).is_err());
        assert!(parse_nonce(Some("nonce=")).is_err());
        assert!(parse_nonce(Some("x=1")).is_err());
        assert!(parse_nonce(Some("nonce=00&nonce=01")).is_err());
        let max = "00".repeat(MAX_NONCE_BYTES);
        assert!(parse_nonce(Some(&format!("nonce={max}"))).is_ok());
        assert!(parse_nonce(Some(&format!("nonce={max}00"))).is_err());
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

    #[test]
    fn body_parsing() {
        let b: MintJwtBody = parse_body(Ok(Bytes::new()), 10).unwrap();
        assert!(b.ttl_seconds.is_none());
        let b: MintJwtBody =
            parse_body(Ok(Bytes::from_static(b"{\"ttl_seconds\":120}")), 10).unwrap();
        assert_eq!(b.ttl_seconds, Some(120));
        assert!(matches!(
            parse_body::<MintJwtBody>(Ok(Bytes::from_static(b"{nope")), 10),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse_body::<MintJwtBody>(Ok(Bytes::from_static(b"{\"x\":1}")), 10),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn rfc3339_format() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
