//! Session-backend stand-in: issues, validates and revokes session bearers.
//!
//! | route | request | answer |
//! |---|---|---|
//! | `POST /session/create` | `{"wallet":"0x…40 hex"}` (checked with `agentkeys_wire::Wallet::parse`, the broker's and the enclave's rule) | 200 `{"token": 32 random bytes base64url, "wallet": lower case}`; 400 `{"error":"bad_request","message":…}` |
//! | `GET /session/validate` | `Authorization: Bearer T` | 200 `{"wallet":…}`; 401 `{"error":"unauthorized"}` |
//! | `POST /session/revoke` | `Authorization: Bearer T` | 200 `{"revoked":true}`; 401 `{"error":"unauthorized"}` |
//! | `GET /healthz` | | `ok` |
//!
//! Tokens are kept only as SHA-256 digests in a hash map, so a lookup never compares a
//! secret byte by byte.
//!
//! Slow, failing or garbage backend answers for the broker's fault tests come from the
//! end-to-end suite's programmable server (`tests/src/faults.rs`), not from here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agentkeys_wire::Wallet;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

/// Size of a session token in random bytes (256 bits).
const TOKEN_BYTES: usize = 32;

/// Largest request body accepted (a wallet JSON is ~60 bytes).
const MAX_BODY_BYTES: usize = 4096;

#[derive(Default)]
struct Sessions {
    /// SHA-256(token) → wallet.
    by_hash: HashMap<[u8; 32], String>,
}

#[derive(Clone)]
struct AppState {
    sessions: Arc<Mutex<Sessions>>,
}

/// Serves the stand-in on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router()).await
}

/// The stand-in's routes, for embedding.
pub fn router() -> Router {
    let state = AppState {
        sessions: Arc::new(Mutex::new(Sessions::default())),
    };
    Router::new()
        .route("/session/create", post(create))
        .route("/session/validate", get(validate))
        .route("/session/revoke", post(revoke))
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "bad_request", "message": message.into()})),
    )
        .into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "unauthorized"})),
    )
        .into_response()
}

/// The bearer of an `Authorization: Bearer T` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Deserialize)]
struct CreateRequest {
    wallet: String,
}

async fn create(State(state): State<AppState>, body: Bytes) -> Response {
    let req: CreateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("expected {{\"wallet\":\"0x…\"}}: {e}")),
    };
    let wallet = match Wallet::parse(&req.wallet) {
        Ok(w) => w.into_string(),
        Err(e) => return bad_request(format!("invalid wallet: {e}")),
    };
    let mut raw = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    match state.sessions.lock() {
        Ok(mut s) => {
            s.by_hash.insert(token_hash(&token), wallet.clone());
        }
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
    Json(json!({"token": token, "wallet": wallet})).into_response()
}

async fn validate(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(token) = bearer(&headers) else {
        return unauthorized();
    };
    let wallet = state
        .sessions
        .lock()
        .ok()
        .and_then(|s| s.by_hash.get(&token_hash(token)).cloned());
    match wallet {
        Some(wallet) => Json(json!({"wallet": wallet})).into_response(),
        None => unauthorized(),
    }
}

async fn revoke(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(token) = bearer(&headers) else {
        return unauthorized();
    };
    let removed = state
        .sessions
        .lock()
        .ok()
        .and_then(|mut s| s.by_hash.remove(&token_hash(token)));
    match removed {
        Some(_) => Json(json!({"revoked": true})).into_response(),
        None => unauthorized(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `POST /session/create` accepts exactly the wallets the broker and the enclave
    /// accept, and answers the normal form.
    #[tokio::test]
    async fn create_applies_the_shared_wallet_rule() {
        let cases: &[&str] = include!("../../../enclave/wire/tests/data/wallet_cases.rs");
        let state = AppState {
            sessions: Arc::new(Mutex::new(Sessions::default())),
        };
        for &input in cases {
            let body = serde_json::to_vec(&json!({ "wallet": input })).unwrap();
            let response = create(State(state.clone()), Bytes::from(body)).await;
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), MAX_BODY_BYTES)
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            match Wallet::parse(input) {
                Ok(w) => {
                    assert_eq!(status, StatusCode::OK, "{input:?}");
                    assert_eq!(v["wallet"], w.as_str(), "{input:?}");
                }
                Err(e) => {
                    assert_eq!(status, StatusCode::BAD_REQUEST, "{input:?}");
                    assert_eq!(v["message"], format!("invalid wallet: {e}"), "{input:?}");
                }
            }
        }
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
