//! The mint routes: `POST /v1/mint-oidc-jwt` and `POST /v1/mint-aws-creds`. A mint
//! authenticates the bearer, asks the enclave to sign, exchanges the JWT at STS (for
//! credentials), and answers only once its audit row is durable. From the enclave call
//! on, the work runs to completion even if the client leaves, so every seq the enclave
//! counts has its row.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tokio_util::task::TaskTracker;

use crate::audit::{AuditEvent, NewAuditRow, Outcome};
use crate::config::{StsMode, DEFAULT_MAX_CONNECTIONS, JWT_TTL_MAX_SECONDS, JWT_TTL_MIN_SECONDS};
use crate::config::{STS_DURATION_MAX_SECONDS, STS_DURATION_MIN_SECONDS};
use crate::http::caller::{identify, Caller, SignIn};
use crate::http::error::{ApiError, BodyReadTimeout};
use crate::http::routes::{json_ok_sized, AppState};
use crate::http::run_to_completion::RunToCompletion;
use crate::metrics::Metrics;
use crate::session::SessionChecker;

/// Room for a mint answer's fields besides the token or credentials (wallet, expiration,
/// kid, audit id, names and quotes are under 200 bytes together).
const MINT_BODY_FIELDS_CAPACITY: usize = 256;

/// Body of `POST /v1/mint-oidc-jwt` (optional).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MintJwtBody {
    ttl_seconds: Option<u32>,
    /// A Sign-In with Ethereum message and signature, instead of a bearer.
    sign_in: Option<SignIn>,
}

/// Body of `POST /v1/mint-aws-creds` (optional).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MintCredsBody {
    duration_seconds: Option<u32>,
    /// A Sign-In with Ethereum message and signature, instead of a bearer.
    sign_in: Option<SignIn>,
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

fn mint_failed_row(caller: &Caller, e: &ApiError) -> NewAuditRow {
    caller
        .row(AuditEvent::MintFailed, Outcome::Failure)
        .status(e.status().as_u16())
        .detail(e.to_string())
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

/// `POST /v1/mint-oidc-jwt`.
pub async fn mint_oidc_jwt(
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
    let caller = identify(&s, &headers, req.sign_in).await?;
    // From here on the enclave may count a seq: finish and record it even if the client
    // leaves.
    let abandoned = s.abandoned_requests.clone();
    RunToCompletion::new(mint_oidc_jwt_recorded(s, caller, ttl), abandoned).await
}

/// The part of `POST /v1/mint-oidc-jwt` that signs and records.
async fn mint_oidc_jwt_recorded(
    s: Arc<AppState>,
    mut caller: Caller,
    ttl: u32,
) -> Result<Response, ApiError> {
    let minted = match s
        .enclave
        .mint(&caller.wallet, ttl, caller.proof.take())
        .await
    {
        Ok(m) => m,
        Err(e) => {
            audit_failure(&s, mint_failed_row(&caller, &e)).await;
            return Err(e);
        }
    };
    // Built again on the (rare) failure path rather than cloned for every request.
    let success_row = || {
        let mut row = NewAuditRow::new(AuditEvent::MintJwt, Outcome::Success)
            .signed(&minted)
            .status(200);
        row.bearer_sha256 = caller.bearer_sha256;
        row
    };
    let receipt = match s.audit.append(success_row()).await {
        Ok(r) => r,
        Err(e) => {
            // The token is withheld; the log still accounts for the enclave's seq.
            s.audit
                .queue_withheld(success_row().detail(format!("success row failed: {e}")));
            s.metrics.tokens_withheld.inc();
            tracing::error!(error = %e, seq = minted.seq, "audit append failed; token withheld");
            return Err(ApiError::from_audit(&e));
        }
    };
    s.metrics.tokens_issued.inc();
    mint_jwt_answer(&MintJwtResponse {
        jwt: &minted.jwt,
        wallet: &minted.wallet,
        expiration: rfc3339(minted.exp),
        kid: &minted.kid,
        audit_id: receipt.id,
    })
}

/// Whether serde_json writes `s` inside a JSON string as it is: it escapes only `"`, `\`
/// and the control characters below U+0020 (RFC 8259, section 7), and writes every other
/// byte of UTF-8 unchanged.
fn json_verbatim(s: &str) -> bool {
    // A fold without an early exit: the compiler checks many bytes at once.
    s.bytes().fold(true, |verbatim, b| {
        verbatim & (b >= 0x20) & (b != b'"') & (b != b'\\')
    })
}

/// The body of a mint answer, byte for byte what serde_json writes for `answer`. The
/// token, wallet, kid and time never need escaping (base64url, hex, digits), so the body
/// is written around them directly instead of through serde_json's per-byte escaping;
/// any string that would need it takes serde_json's path.
fn mint_jwt_body(answer: &MintJwtResponse<'_>) -> Result<Vec<u8>, ApiError> {
    let strings = [answer.jwt, answer.wallet, &answer.expiration, answer.kid];
    let mut body = Vec::with_capacity(answer.jwt.len() + MINT_BODY_FIELDS_CAPACITY);
    if !strings.iter().all(|s| json_verbatim(s)) {
        serde_json::to_writer(&mut body, answer).map_err(|e| ApiError::Internal(e.to_string()))?;
        return Ok(body);
    }
    for (name, value) in ["jwt", "wallet", "expiration", "kid"].iter().zip(strings) {
        body.extend_from_slice(if *name == "jwt" { b"{\"" } else { b",\"" });
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(b"\":\"");
        body.extend_from_slice(value.as_bytes());
        body.push(b'"');
    }
    body.extend_from_slice(b",\"audit_id\":");
    body.extend_from_slice(answer.audit_id.to_string().as_bytes());
    body.push(b'}');
    Ok(body)
}

/// A `200 OK` mint answer with its JSON body.
fn mint_jwt_answer(answer: &MintJwtResponse<'_>) -> Result<Response, ApiError> {
    use axum::http::{header, HeaderValue};
    use axum::response::IntoResponse;
    let body = mint_jwt_body(answer)?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
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

/// `POST /v1/mint-aws-creds`.
pub async fn mint_aws_creds(
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
    if req.sign_in.is_some() && s.sts.mode() == StsMode::AssumeRole {
        return Err(ApiError::BadSignIn(
            "sign_in needs the web-identity STS mode: in assume-role mode the broker, not the enclave, names the wallet to STS".into(),
        ));
    }
    let caller = identify(&s, &headers, req.sign_in).await?;
    // From here on the enclave may count a seq and STS may issue credentials: finish and
    // record them even if the client leaves.
    let abandoned = s.abandoned_requests.clone();
    RunToCompletion::new(
        mint_aws_creds_recorded(s, caller, req.duration_seconds),
        abandoned,
    )
    .await
}

/// The part of `POST /v1/mint-aws-creds` that mints, exchanges and records.
async fn mint_aws_creds_recorded(
    s: Arc<AppState>,
    mut caller: Caller,
    duration_seconds: Option<u32>,
) -> Result<Response, ApiError> {
    let minted = match s.sts.mode() {
        StsMode::WebIdentity => {
            let proof = caller.proof.take();
            match s
                .enclave
                .mint(&caller.wallet, s.jwt_ttl_seconds, proof)
                .await
            {
                Ok(m) => Some(m),
                Err(e) => {
                    audit_failure(&s, mint_failed_row(&caller, &e)).await;
                    return Err(e);
                }
            }
        }
        StsMode::AssumeRole => None,
    };
    // The wallet STS tags the session with: the one the enclave signed for, or in
    // assume-role mode the one the session backend named.
    let wallet: &str = minted.as_ref().map_or(&caller.wallet, |m| &m.wallet);
    let base = |event, outcome| {
        let mut row = NewAuditRow::new(event, outcome);
        row = match &minted {
            Some(m) => row.signed(m),
            None => row.wallet(wallet),
        };
        row.bearer_sha256 = caller.bearer_sha256;
        row
    };
    let creds = match s
        .sts
        .exchange(
            minted.as_ref().map(|m| m.jwt.as_str()),
            wallet,
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
            s.metrics.tokens_withheld.inc();
            tracing::error!(error = %e, "audit append failed; credentials withheld");
            return Err(ApiError::from_audit(&e));
        }
    };
    s.metrics.credentials_issued.inc();
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
            wallet,
            audit_id: receipt.id,
        },
        capacity,
    )
}

use crate::session::{Bearer, SessionError};

impl SessionChecker {
    /// [`SessionChecker::check`], counting cache hits and backend calls.
    pub async fn check_counted(
        &self,
        bearer: &Bearer,
        metrics: &Metrics,
    ) -> Result<Arc<str>, SessionError> {
        if let Some(w) = self.cached_wallet(bearer) {
            metrics.session_cache_hits.inc();
            return Ok(w);
        }
        metrics.session_backend_calls.inc();
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
    fn a_mint_answer_is_what_serde_json_writes_whatever_its_strings_hold() {
        let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl-_";
        let expiration = rfc3339(1_900_000_000);
        let ordinary = MintJwtResponse {
            jwt,
            wallet: "0xabcdef0123456789abcdef0123456789abcdef01",
            expiration: expiration.clone(),
            kid: "kid-1_Az",
            audit_id: 9_007_199_254_740_993,
        };
        let serde = |a: &MintJwtResponse<'_>| serde_json::to_vec(a).unwrap();
        assert_eq!(mint_jwt_body(&ordinary).unwrap(), serde(&ordinary));
        for odd in ["a\"b", "a\\b", "a\nb", "\u{1}", "é\u{7f}", "", "a/b"] {
            for field in 0..4 {
                let mut answer = MintJwtResponse {
                    expiration: expiration.clone(),
                    ..ordinary
                };
                match field {
                    0 => answer.jwt = odd,
                    1 => answer.wallet = odd,
                    2 => answer.expiration = odd.to_string(),
                    _ => answer.kid = odd,
                }
                let body = mint_jwt_body(&answer).unwrap();
                assert_eq!(body, serde(&answer), "{odd:?} in field {field}");
                serde_json::from_slice::<serde_json::Value>(&body).unwrap();
            }
        }
    }

    #[test]
    fn rfc3339_format() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
