//! Session check against the backend (`GET {backend}/session/validate`), with a short
//! positive cache keyed by SHA-256 of the bearer (`docs/operations.md`,
//! `--session-cache-seconds`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use agentkeys_wire::{Wallet, WalletError};
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Longest bearer accepted, in bytes (well above any session token; bounds hashing and
/// header forwarding work).
pub const MAX_BEARER_BYTES: usize = 4096;
/// Cache entries kept at most; on overflow the cache is emptied (a bound, not an LRU).
pub const MAX_CACHE_ENTRIES: usize = 100_000;
/// Largest backend answer read, in bytes (a `{wallet}` object is tiny).
pub const MAX_BACKEND_BODY_BYTES: usize = 16 * 1024;

/// A bearer taken from `Authorization`, with its SHA-256 (the only form ever stored).
/// The token is zeroized when the bearer is dropped; `Debug` shows only the hash.
/// Equality compares the hashes in constant time.
pub struct Bearer {
    token: Zeroizing<String>,
    /// SHA-256 of the token bytes.
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bearer")
            .field("sha256", &hex::encode(self.sha256))
            .finish()
    }
}

/// The bytes a bearer token may hold: RFC 6750 b64token characters (letters, digits,
/// `-._~+/` and trailing `=`) plus `:` of common opaque tokens; no spaces or control
/// characters. A table, so that checking a token costs one load a byte.
const BEARER_BYTES: [bool; 256] = {
    let mut allowed = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        allowed[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=' | b':');
        b += 1;
    }
    allowed
};

impl Bearer {
    /// Builds a bearer from its token (validated as in [`bearer_from_headers`]).
    pub fn new(token: &str) -> Result<Bearer, &'static str> {
        if token.is_empty() {
            return Err("empty bearer token");
        }
        if token.len() > MAX_BEARER_BYTES {
            return Err("bearer token too long");
        }
        if !token.bytes().all(|b| BEARER_BYTES[usize::from(b)]) {
            return Err("bearer token has characters outside RFC 6750 b64token");
        }
        Ok(Bearer {
            token: Zeroizing::new(token.to_string()),
            sha256: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// The token (only for forwarding to the backend).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether this bearer's SHA-256 is `sha256`, compared in constant time.
    pub fn matches_sha256(&self, sha256: &[u8; 32]) -> bool {
        bool::from(self.sha256.ct_eq(sha256))
    }
}

impl PartialEq for Bearer {
    /// Constant-time comparison of the SHA-256 of both tokens (equal hashes mean equal
    /// tokens; no byte of either token is compared directly).
    fn eq(&self, other: &Bearer) -> bool {
        self.matches_sha256(&other.sha256)
    }
}

impl Eq for Bearer {}

/// Extracts the bearer from `Authorization: Bearer <token>`.
pub fn bearer_from_headers(headers: &HeaderMap) -> Result<Bearer, &'static str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or("missing Authorization: Bearer header")?;
    let value = value
        .to_str()
        .map_err(|_| "Authorization header is not ASCII")?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or("Authorization header is not 'Bearer <token>'")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("Authorization scheme is not Bearer");
    }
    Bearer::new(token.trim())
}

/// Outcome of a failed session check.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    /// The backend answered 401.
    #[error("the backend rejected the bearer (401)")]
    Rejected,
    /// The backend could not be reached or timed out.
    #[error("backend unreachable: {0}")]
    Unreachable(String),
    /// The backend answered an unexpected status.
    #[error("backend answered HTTP {status}")]
    Status {
        /// The status.
        status: u16,
    },
    /// The backend's 200 answer is not a JSON object `{"wallet": "…"}`.
    #[error("backend answer is malformed: {0}")]
    Malformed(String),
    /// The backend's 200 answer names a wallet that breaks the rule shared with the
    /// enclave ([`agentkeys_wire::wallet`]).
    #[error("backend answer has an invalid wallet: {0}")]
    InvalidWallet(#[from] WalletError),
}

/// Parses the backend's 200 body, checking the wallet with [`Wallet::parse`] (the rule the
/// enclave applies again before it signs).
pub fn parse_validate_body(body: &[u8]) -> Result<Wallet, SessionError> {
    #[derive(serde::Deserialize)]
    struct Validate {
        wallet: String,
    }
    let v: Validate =
        serde_json::from_slice(body).map_err(|e| SessionError::Malformed(e.to_string()))?;
    Ok(Wallet::parse(&v.wallet)?)
}

/// A cached wallet and when it stops being trusted.
type CacheEntry = (Arc<str>, Instant);

/// The session checker: shared HTTP client and cache.
#[derive(Clone)]
pub struct SessionChecker {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    validate_url: String,
    cache_ttl: Duration,
    cache: RwLock<HashMap<[u8; 32], CacheEntry>>,
}

impl SessionChecker {
    /// A checker for `backend_url` (no trailing slash).
    pub fn new(http: reqwest::Client, backend_url: &str, cache_ttl: Duration) -> SessionChecker {
        SessionChecker {
            inner: Arc::new(Inner {
                http,
                validate_url: format!("{backend_url}/session/validate"),
                cache_ttl,
                cache: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// The validation URL.
    pub fn validate_url(&self) -> &str {
        &self.inner.validate_url
    }

    /// Returns the wallet for `bearer` (from the cache or the backend).
    pub async fn check(&self, bearer: &Bearer) -> Result<Arc<str>, SessionError> {
        if let Some(w) = self.cached_wallet(bearer) {
            return Ok(w);
        }
        self.check_backend(bearer).await
    }

    /// The cached wallet for `bearer`, if any and still fresh.
    pub fn cached_wallet(&self, bearer: &Bearer) -> Option<Arc<str>> {
        self.cached(&bearer.sha256)
    }

    /// Asks the backend (bypassing the cache) and caches a positive answer.
    pub async fn check_backend(&self, bearer: &Bearer) -> Result<Arc<str>, SessionError> {
        let response = self
            .inner
            .http
            .get(&self.inner.validate_url)
            .bearer_auth(bearer.token())
            .send()
            .await
            .map_err(|e| SessionError::Unreachable(describe_reqwest(&e)))?;
        let status = response.status().as_u16();
        if status == 401 {
            self.forget(&bearer.sha256);
            return Err(SessionError::Rejected);
        }
        if status != 200 {
            return Err(SessionError::Status { status });
        }
        let body = read_limited(response, MAX_BACKEND_BODY_BYTES).await?;
        let wallet: Arc<str> = parse_validate_body(&body)?.into();
        self.remember(bearer.sha256, wallet.clone());
        Ok(wallet)
    }

    /// Checks that the backend answers at all (for `/readyz`): any HTTP answer counts.
    pub async fn reachable(&self) -> Result<(), SessionError> {
        self.inner
            .http
            .get(&self.inner.validate_url)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| SessionError::Unreachable(describe_reqwest(&e)))
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Arc<str>> {
        if self.inner.cache_ttl.is_zero() {
            return None;
        }
        let cache = self.inner.cache.read().ok()?;
        let (wallet, until) = cache.get(key)?;
        (Instant::now() < *until).then(|| wallet.clone())
    }

    fn remember(&self, key: [u8; 32], wallet: Arc<str>) {
        if self.inner.cache_ttl.is_zero() {
            return;
        }
        if let Ok(mut cache) = self.inner.cache.write() {
            if cache.len() >= MAX_CACHE_ENTRIES {
                let now = Instant::now();
                cache.retain(|_, (_, until)| *until > now);
                if cache.len() >= MAX_CACHE_ENTRIES {
                    cache.clear();
                }
            }
            cache.insert(key, (wallet, Instant::now() + self.inner.cache_ttl));
        }
    }

    fn forget(&self, key: &[u8; 32]) {
        if let Ok(mut cache) = self.inner.cache.write() {
            cache.remove(key);
        }
    }
}

async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, SessionError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| SessionError::Unreachable(describe_reqwest(&e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(SessionError::Malformed(format!(
                "answer larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A short description of a reqwest error (timeout vs connect vs other), without URLs
/// that might carry secrets.
pub fn describe_reqwest(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        let mut s = e.to_string();
        if let Some(url) = e.url() {
            s = s.replace(url.as_str(), "<url>");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn bearer_parsing() {
        assert!(bearer_from_headers(&HeaderMap::new()).is_err());
        assert!(bearer_from_headers(&headers("Basic abc")).is_err());
        assert!(bearer_from_headers(&headers("Bearer")).is_err());
        assert!(bearer_from_headers(&headers("Bearer ")).is_err());
        assert!(bearer_from_headers(&headers("Bearer a b")).is_err());
        let b = bearer_from_headers(&headers("bearer tok-123.x")).unwrap();
        assert_eq!(b.token(), "tok-123.x");
        assert_eq!(b.sha256, <[u8; 32]>::from(Sha256::digest(b"tok-123.x")));
    }

    #[test]
    fn a_bearer_holds_b64token_bytes_and_colons_only() {
        let allowed = |c: u8| c.is_ascii_alphanumeric() || b"-._~+/=:".contains(&c);
        for c in 0..=u8::MAX {
            let token = [b'a', c, b'z'];
            let token = String::from_utf8_lossy(&token);
            assert_eq!(
                Bearer::new(&token).is_ok(),
                allowed(c),
                "byte {c:#04x} in a bearer"
            );
        }
        for refused in ["a b", "a\tb", "a\"b", "a,b", "a;b", "tok\u{e9}n", "a\0b"] {
            assert!(Bearer::new(refused).is_err(), "{refused:?} is refused");
        }
    }

    #[test]
    fn bearer_debug_redacts_and_compares_by_hash() {
        let b = Bearer::new("secret-bearer-value").unwrap();
        let dbg = format!("{b:?}");
        assert!(!dbg.contains("secret-bearer-value"), "{dbg}");
        assert!(dbg.contains(&hex::encode(b.sha256)), "{dbg}");
        assert_eq!(b, Bearer::new("secret-bearer-value").unwrap());
        assert_ne!(b, Bearer::new("secret-bearer-valuf").unwrap());
        assert!(b.matches_sha256(&Sha256::digest(b"secret-bearer-value").into()));
        assert!(!b.matches_sha256(&[0u8; 32]));
    }

    #[test]
    fn bearer_too_long() {
        let long = "a".repeat(MAX_BEARER_BYTES + 1);
        assert!(Bearer::new(&long).is_err());
        assert!(Bearer::new(&"a".repeat(MAX_BEARER_BYTES)).is_ok());
    }

    #[test]
    fn bearer_debug_hides_token() {
        let b = Bearer::new("supersecrettoken").unwrap();
        assert!(!format!("{b:?}").contains("supersecrettoken"));
    }

    /// The session check accepts exactly the wallets the shared rule accepts, in its
    /// normal form, and refuses the others with the rule's own reason (the enclave's mint
    /// runs the same table: `enclave/src/jwt.rs`).
    #[test]
    fn session_check_applies_the_shared_wallet_rule() {
        let cases: &[&str] = include!("../../enclave/wire/tests/data/wallet_cases.rs");
        for &input in cases {
            let body = serde_json::to_vec(&serde_json::json!({ "wallet": input })).unwrap();
            let expected = Wallet::parse(input).map_err(SessionError::InvalidWallet);
            assert_eq!(parse_validate_body(&body), expected, "{input:?}");
        }
    }

    #[test]
    fn upper_case_prefix_is_refused() {
        assert_eq!(
            parse_validate_body(br#"{"wallet":"0XABCDEFabcdef0123456789abcdef0123456789AB"}"#),
            Err(SessionError::InvalidWallet(WalletError::Prefix {
                found: "0X".into()
            }))
        );
    }

    #[test]
    fn validate_body() {
        assert_eq!(
            parse_validate_body(br#"{"wallet":"0x00000000000000000000000000000000000000AA"}"#)
                .unwrap(),
            "0x00000000000000000000000000000000000000aa"
        );
        assert!(matches!(
            parse_validate_body(b"{}"),
            Err(SessionError::Malformed(_))
        ));
        assert!(matches!(
            parse_validate_body(b"not json"),
            Err(SessionError::Malformed(_))
        ));
        assert!(matches!(
            parse_validate_body(br#"{"wallet":"bob"}"#),
            Err(SessionError::InvalidWallet(WalletError::Prefix { .. }))
        ));
    }

    #[tokio::test]
    async fn cache_remembers_and_expires() {
        let c = SessionChecker::new(
            reqwest::Client::new(),
            "http://127.0.0.1:9",
            Duration::from_millis(50),
        );
        let key = [7u8; 32];
        c.remember(key, "0xw".into());
        assert_eq!(c.cached(&key).as_deref(), Some("0xw"));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(c.cached(&key).is_none());
    }

    #[tokio::test]
    async fn cache_disabled_with_zero() {
        let c = SessionChecker::new(reqwest::Client::new(), "http://127.0.0.1:9", Duration::ZERO);
        c.remember([1; 32], "0xw".into());
        assert!(c.cached(&[1; 32]).is_none());
    }

    #[tokio::test]
    async fn unreachable_backend_is_unreachable() {
        // Port 9 (discard) on loopback is closed in test environments.
        let c = SessionChecker::new(
            reqwest::Client::builder()
                .timeout(Duration::from_millis(500))
                .build()
                .unwrap(),
            "http://127.0.0.1:9",
            Duration::ZERO,
        );
        let b = Bearer::new("t").unwrap();
        assert!(matches!(
            c.check(&b).await,
            Err(SessionError::Unreachable(_))
        ));
    }
}
