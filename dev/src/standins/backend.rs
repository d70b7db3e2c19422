//! Session-backend stand-in: issues, validates and revokes session bearers.
//!
//! | route | request | answer |
//! |---|---|---|
//! | `POST /session/create` | `{"wallet":"0x…40 hex"}` (checked with `agentkeys_wire::Wallet::parse`, the broker's and the enclave's rule) | 200 `{"token": …, "wallet": lower case}`; 400 `{"error":"bad_request","message":…}` |
//! | `GET /session/validate` | `Authorization: Bearer T` | 200 `{"wallet":…}`; 401 `{"error":"unauthorized"}` |
//! | `POST /session/revoke` | `Authorization: Bearer T` | 200 `{"revoked":true}`; 401 `{"error":"unauthorized"}` |
//! | `GET /healthz` | | `ok` |
//!
//! With a [`SessionSigner`] (the dev stack's), a token is a signed session: a compact JWS,
//! ES256, whose header carries the signing key as a `jwk` and whose claims are `sub` (the
//! wallet), `aud` (the issuer), `iat`, `exp` ([`SESSION_LIFETIME_SECONDS`] later) and a
//! random `jti`: what an enclave in `signed-session` mode verifies. Without one, a token is
//! 32 random bytes, base64url (for `parent-vouched` deployments). Either way, tokens are
//! kept only as SHA-256 digests in a hash map, so a lookup never compares a secret byte
//! by byte, and revoking one makes `validate` refuse it.
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

/// How long a signed session lives: one hour, a working session's length.
pub const SESSION_LIFETIME_SECONDS: u64 = 3600;

/// Signs session tokens with the backend's ES256 key.
#[derive(Clone)]
pub struct SessionSigner {
    key: p256::ecdsa::SigningKey,
    issuer: String,
}

impl std::fmt::Debug for SessionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSigner")
            .field("thumbprint", &self.thumbprint())
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl SessionSigner {
    /// The key kept at `path` (32 bytes of hex, the P-256 scalar; created with mode 0600
    /// when missing), signing sessions for `issuer`.
    pub fn load_or_create(path: &std::path::Path, issuer: &str) -> anyhow::Result<SessionSigner> {
        use anyhow::Context;
        let key = if path.exists() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read session key {}", path.display()))?;
            let bytes = hex::decode(text.trim())
                .ok()
                .filter(|b| b.len() == 32)
                .with_context(|| format!("{} is not 32 bytes of hex", path.display()))?;
            p256::ecdsa::SigningKey::from_slice(&bytes)
                .with_context(|| format!("{} is not a P-256 private key", path.display()))?
        } else {
            let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
            let hex_key = zeroize::Zeroizing::new(hex::encode(key.to_bytes()));
            write_private(path, hex_key.as_bytes())
                .with_context(|| format!("cannot write session key {}", path.display()))?;
            key
        };
        Ok(SessionSigner {
            key,
            issuer: issuer.to_string(),
        })
    }

    fn jwk_xy(&self) -> (String, String) {
        let point = self.key.verifying_key().to_encoded_point(false);
        let b64 = |c: Option<&p256::FieldBytes>| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c.map_or(&[][..], |c| &c[..]))
        };
        (b64(point.x()), b64(point.y()))
    }

    /// The RFC 7638 thumbprint an enclave is started with (`--session-key-thumbprint`).
    pub fn thumbprint(&self) -> String {
        let (x, y) = self.jwk_xy();
        agentkeys_enclave::authz::session::thumbprint(&x, &y)
    }

    /// A session token for `wallet`, issued now.
    pub fn sign(&self, wallet: &str) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use p256::ecdsa::signature::Signer;
        let (x, y) = self.jwk_xy();
        let header = json!({"alg": "ES256", "typ": "JWT",
            "jwk": {"kty": "EC", "crv": "P-256", "x": x, "y": y}});
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut jti = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut jti);
        let claims = json!({"sub": wallet, "aud": self.issuer, "iat": now,
            "exp": now + SESSION_LIFETIME_SECONDS, "jti": hex::encode(jti)});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature: p256::ecdsa::Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

/// Writes `bytes` to a new file only its owner can read.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

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
    signer: Option<SessionSigner>,
}

/// Serves the stand-in on `listener` until the task is dropped; with `signer`, it issues
/// signed sessions.
pub async fn serve(
    listener: tokio::net::TcpListener,
    signer: Option<SessionSigner>,
) -> std::io::Result<()> {
    axum::serve(listener, router(signer)).await
}

/// The stand-in's routes, for embedding.
pub fn router(signer: Option<SessionSigner>) -> Router {
    let state = AppState {
        sessions: Arc::new(Mutex::new(Sessions::default())),
        signer,
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
    let token = match &state.signer {
        Some(signer) => signer.sign(&wallet),
        None => {
            let mut raw = [0u8; TOKEN_BYTES];
            rand::rngs::OsRng.fill_bytes(&mut raw);
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        }
    };
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
            signer: None,
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

    /// A signed session verifies in the enclave's own check, for the wallet and issuer it
    /// names; the key survives a restart (same file, same thumbprint).
    #[test]
    fn signed_sessions_verify_with_the_enclaves_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session-key.hex");
        let signer = SessionSigner::load_or_create(&path, "http://127.0.0.1:8090").unwrap();
        let wallet = "0x00000000000000000000000000000000000000aa";
        let token = signer.sign(wallet);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let verified = agentkeys_enclave::authz::session::verify(
            &token,
            &[signer.thumbprint()],
            "http://127.0.0.1:8090",
            now,
        )
        .unwrap();
        assert_eq!(verified.wallet.as_str(), wallet);
        assert!(agentkeys_enclave::authz::session::verify(
            &token,
            &[signer.thumbprint()],
            "http://other",
            now
        )
        .is_err());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = SessionSigner::load_or_create(&path, "http://127.0.0.1:8090").unwrap();
        assert_eq!(again.thumbprint(), signer.thumbprint());
        std::fs::write(&path, "zz").unwrap();
        let e = SessionSigner::load_or_create(&path, "i").unwrap_err();
        assert!(e.to_string().contains("32 bytes of hex"), "{e}");
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
