//! AWS STS stand-in: the STS query/XML protocol on loopback, verifying web identity
//! tokens the way AWS does, so that the real `aws-sdk-sts` and the `aws` CLI talk to
//! it through an endpoint override.
//!
//! Actions (`POST /` form-encoded, or `GET /?…`; `Version=2011-06-15`):
//!
//! * `AssumeRoleWithWebIdentity` (no AWS credentials needed). The token is checked as
//!   AWS checks it: the header's `alg` must be `ES256`; the issuer (`iss`) must be
//!   one this stand-in trusts ([`StsConfig::allowed_issuer_prefixes`], the equivalent of
//!   an IAM OIDC provider); `{iss}/.well-known/openid-configuration` is fetched over
//!   HTTP, its `issuer` must equal `iss`, then its `jwks_uri` is fetched; the key is
//!   selected by `kid`; the raw `r‖s` ES256 signature is verified (with the RustCrypto
//!   `p256` crate, independent of the enclave's signer); `aud` must be one of
//!   [`StsConfig::allowed_audiences`]; `exp`, `nbf` and `iat` are checked with
//!   [`StsConfig::clock_skew`] (300 s, as AWS allows); the session-tags claim
//!   `https://aws.amazon.com/tags` must be well formed (`principal_tags`: tag key →
//!   array of one string; `transitive_tag_keys` ⊆ those keys). The role's trust policy
//!   is modelled by [`StsConfig::required_principal_tags`]: a token without those tags
//!   is refused with `AccessDenied`, as a trust policy conditioned on
//!   `aws:RequestTag/…` would.
//! * `AssumeRole` (the older mode): requires a SigV4 `Authorization` header (the
//!   signature itself is not checked: the stand-in knows no secret keys).
//!
//! Parameters are validated like AWS: `RoleArn` syntax, `RoleSessionName`
//! `[\w+=,.@-]{2,64}`, `DurationSeconds` in [900, 43200], `WebIdentityToken` length
//! [4, 20000], `Policy` must be JSON.
//!
//! Errors use AWS's shape and codes (HTTP 400 unless noted):
//! `ValidationError`, `MalformedPolicyDocument`, `InvalidIdentityToken` (bad token,
//! unknown issuer, unknown `kid`, bad signature, wrong `aud`, `nbf`/`iat` in the future,
//! malformed tags, and a JWKS AWS would refuse: a key with `key_ops` or private members,
//! more than 100 keys — AWS answers these with "Couldn't retrieve verification key from
//! your identity provider"), `ExpiredTokenException`, `IDPCommunicationError`
//! (discovery or JWKS unreachable, not 2xx, or not JSON), `AccessDenied` (403),
//! `MissingAuthenticationToken` (403, `AssumeRole` without `Authorization`),
//! `InvalidAction`.
//!
//! It models AWS and nothing else: slow, broken or garbage STS answers for the
//! broker's fault tests come from the end-to-end suite's programmable server
//! (`tests/src/faults.rs`).
//!
//! Credentials are random: `AccessKeyId` = `ASIA` + 16 upper-case letters/digits, a
//! 40-character secret and a session token; they are not remembered.

use crate::jwk::{b64url, p256_verifying_key};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use rand::Rng;
use serde_json::Value;

/// The STS XML namespace (API version 2011-06-15).
const STS_NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// The only STS API version.
const STS_VERSION: &str = "2011-06-15";

/// The session-tags claim AWS reads from web identity tokens.
pub const TAGS_CLAIM: &str = "https://aws.amazon.com/tags";

/// AWS's bounds on `DurationSeconds` (15 minutes to 12 hours).
const MIN_DURATION: i64 = 900;
/// See [`MIN_DURATION`].
const MAX_DURATION: i64 = 43_200;
/// Default `DurationSeconds` when absent (AWS: one hour).
const DEFAULT_DURATION: i64 = 3600;

/// AWS's bounds on the `WebIdentityToken` parameter length.
const MIN_TOKEN_LEN: usize = 4;
/// See [`MIN_TOKEN_LEN`].
const MAX_TOKEN_LEN: usize = 20_000;

/// AWS accepts at most 100 keys in an OIDC provider's JWKS.
const MAX_JWKS_KEYS: usize = 100;

/// AWS limits on session tags: 50 tags, keys ≤ 128 characters, values ≤ 256.
const MAX_TAGS: usize = 50;
/// See [`MAX_TAGS`].
const MAX_TAG_KEY_LEN: usize = 128;
/// See [`MAX_TAGS`].
const MAX_TAG_VALUE_LEN: usize = 256;

/// Largest discovery or JWKS document fetched (far above any real one).
const MAX_FETCH_BYTES: usize = 256 * 1024;

/// Largest request body accepted (a token is at most 20000 characters, plus a policy).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// AWS's message when the key cannot be found or the JWKS is unusable.
const NO_VERIFICATION_KEY: &str = "Couldn't retrieve verification key from your identity provider,  please reference AssumeRoleWithWebIdentity documentation for requirements";

/// AWS's message for `IDPCommunicationError`.
const IDP_UNREACHABLE: &str = "The request could not be fulfilled because the identity provider (IDP) that was asked to verify the incoming identity token could not be reached.";

/// Configuration of the stand-in.
#[derive(Debug, Clone)]
pub struct StsConfig {
    /// Accepted `aud` values (AWS: the OIDC provider's client ids).
    pub allowed_audiences: Vec<String>,
    /// Accepted issuers, by prefix (AWS: the account's OIDC providers).
    pub allowed_issuer_prefixes: Vec<String>,
    /// Principal tags the role's trust policy requires.
    pub required_principal_tags: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf`, `iat`.
    pub clock_skew: Duration,
    /// Timeout for discovery and JWKS fetches.
    pub fetch_timeout: Duration,
    /// How long a fetched JWKS is reused (refetched at once on an unknown `kid`).
    pub jwks_cache: Duration,
}

impl Default for StsConfig {
    fn default() -> Self {
        StsConfig {
            // AWS's audience for STS federation.
            allowed_audiences: vec!["sts.amazonaws.com".into()],
            // Loopback issuers only: the stand-in never fetches from anywhere else.
            allowed_issuer_prefixes: vec![
                "http://127.0.0.1:".into(),
                "http://localhost:".into(),
                "http://[::1]:".into(),
            ],
            // The tag the broker's data-role policies key on.
            required_principal_tags: vec!["agentkeys_user_wallet".into()],
            // AWS STS allows 5 minutes of clock skew.
            clock_skew: Duration::from_secs(300),
            fetch_timeout: Duration::from_secs(5),
            jwks_cache: Duration::from_secs(60),
        }
    }
}

/// An STS error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsError {
    /// HTTP status.
    pub status: u16,
    /// AWS error code.
    pub code: &'static str,
    /// Message.
    pub message: String,
}

impl StsError {
    fn new(code: &'static str, message: impl Into<String>) -> StsError {
        StsError {
            status: 400,
            code,
            message: message.into(),
        }
    }
    fn validation(message: impl Into<String>) -> StsError {
        StsError::new("ValidationError", message)
    }
    fn token(message: impl Into<String>) -> StsError {
        StsError::new("InvalidIdentityToken", message)
    }
    fn idp(detail: impl std::fmt::Display) -> StsError {
        StsError::new(
            "IDPCommunicationError",
            format!("{IDP_UNREACHABLE} ({detail})"),
        )
    }
    fn denied(message: impl Into<String>) -> StsError {
        StsError {
            status: 403,
            code: "AccessDenied",
            message: message.into(),
        }
    }
}

struct CachedJwks {
    fetched: Instant,
    keys: Vec<Value>,
}

struct Inner {
    config: StsConfig,
    http: reqwest::Client,
    jwks: Mutex<HashMap<String, CachedJwks>>,
}

/// Serves the stand-in on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, config: StsConfig) -> std::io::Result<()> {
    axum::serve(listener, router(config)?).await
}

/// The stand-in's routes, for embedding.
pub fn router(config: StsConfig) -> std::io::Result<Router> {
    let http = reqwest::Client::builder()
        .timeout(config.fetch_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(std::io::Error::other)?;
    let inner = Arc::new(Inner {
        config,
        http,
        jwks: Mutex::new(HashMap::new()),
    });
    Ok(Router::new()
        .route("/", axum::routing::any(handle))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(inner))
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Escapes text for XML element content.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn xml_response(status: StatusCode, rid: &str, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/xml".to_string()),
            (
                header::HeaderName::from_static("x-amzn-requestid"),
                rid.to_string(),
            ),
        ],
        body,
    )
        .into_response()
}

fn error_response(e: &StsError, rid: &str) -> Response {
    let kind = if e.status >= 500 {
        "Receiver"
    } else {
        "Sender"
    };
    let body = format!(
        "<ErrorResponse xmlns=\"{STS_NS}\">\n  <Error>\n    <Type>{kind}</Type>\n    <Code>{}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{rid}</RequestId>\n</ErrorResponse>\n",
        xml_escape(e.code),
        xml_escape(&e.message)
    );
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    xml_response(status, rid, body)
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rid = request_id();
    let mut params: HashMap<String, String> = HashMap::new();
    if let Some(q) = &query {
        params.extend(url::form_urlencoded::parse(q.as_bytes()).into_owned());
    }
    if method == Method::POST {
        params.extend(url::form_urlencoded::parse(&body).into_owned());
    } else if method != Method::GET {
        return error_response(
            &StsError::new("InvalidAction", format!("Method {method} is not supported")),
            &rid,
        );
    }
    let result = match params.get("Action").map(String::as_str) {
        Some("AssumeRoleWithWebIdentity") => assume_role_with_web_identity(&inner, &params).await,
        Some("AssumeRole") => assume_role(&inner, &params, &headers),
        Some(other) => Err(StsError::new(
            "InvalidAction",
            format!("Could not find operation {other} for version {STS_VERSION}"),
        )),
        None => Err(StsError::new("MissingAction", "Missing Action parameter")),
    };
    match result {
        Ok(xml) => xml_response(StatusCode::OK, &rid, xml.replace("{REQUEST_ID}", &rid)),
        Err(e) => error_response(&e, &rid),
    }
}

/// Checks `Version` when present.
fn check_version(params: &HashMap<String, String>) -> Result<(), StsError> {
    match params.get("Version") {
        Some(v) if v != STS_VERSION => Err(StsError::new(
            "InvalidAction",
            format!("Could not find operation for version {v}"),
        )),
        _ => Ok(()),
    }
}

fn is_session_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

/// `[\w+=,.@-]{2,64}` (AWS's `RoleSessionName` constraint).
pub fn valid_session_name(s: &str) -> bool {
    (2..=64).contains(&s.len()) && s.chars().all(is_session_name_char)
}

/// Splits a role ARN into (account id, role name). Accepts the `aws`, `aws-cn` and
/// `aws-us-gov` partitions and role paths.
pub fn parse_role_arn(arn: &str) -> Option<(String, String)> {
    let rest = arn.strip_prefix("arn:")?;
    let (partition, rest) = rest.split_once(':')?;
    if !matches!(partition, "aws" | "aws-cn" | "aws-us-gov") {
        return None;
    }
    let rest = rest.strip_prefix("iam::")?;
    let (account, resource) = rest.split_once(':')?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let path_and_name = resource.strip_prefix("role/")?;
    let name = path_and_name.rsplit('/').next()?;
    let path_ok = path_and_name
        .chars()
        .all(|c| c == '/' || is_session_name_char(c));
    if name.is_empty() || name.len() > 64 || !path_ok || path_and_name.starts_with('/') {
        return None;
    }
    Some((account.to_string(), name.to_string()))
}

fn required<'a>(params: &'a HashMap<String, String>, name: &str) -> Result<&'a str, StsError> {
    params.get(name).map(String::as_str).ok_or_else(|| {
        StsError::validation(format!(
            "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
            lower_first(name)
        ))
    })
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_ascii_lowercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// Validated common parameters.
struct RoleRequest {
    account: String,
    role_name: String,
    session_name: String,
    duration: i64,
}

fn common_params(params: &HashMap<String, String>) -> Result<RoleRequest, StsError> {
    check_version(params)?;
    let arn = required(params, "RoleArn")?;
    if arn.len() < 20 || arn.len() > 2048 {
        return Err(StsError::validation(format!(
            "1 validation error detected: Value '{arn}' at 'roleArn' failed to satisfy constraint: Member must have length greater than or equal to 20"
        )));
    }
    let (account, role_name) =
        parse_role_arn(arn).ok_or_else(|| StsError::validation("Request ARN is invalid"))?;
    let session_name = required(params, "RoleSessionName")?;
    if !valid_session_name(session_name) {
        return Err(StsError::validation(format!(
            "1 validation error detected: Value '{session_name}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]{{2,64}}"
        )));
    }
    let duration = match params.get("DurationSeconds") {
        None => DEFAULT_DURATION,
        Some(d) => d.parse::<i64>().map_err(|_| {
            StsError::validation(format!(
                "1 validation error detected: Value '{d}' at 'durationSeconds' failed to satisfy constraint: Member must be an integer"
            ))
        })?,
    };
    if duration < MIN_DURATION {
        return Err(StsError::validation(format!(
            "1 validation error detected: Value '{duration}' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to {MIN_DURATION}"
        )));
    }
    if duration > MAX_DURATION {
        return Err(StsError::validation(format!(
            "1 validation error detected: Value '{duration}' at 'durationSeconds' failed to satisfy constraint: Member must have value less than or equal to {MAX_DURATION}"
        )));
    }
    if let Some(policy) = params.get("Policy") {
        match serde_json::from_str::<Value>(policy) {
            Ok(Value::Object(_)) => {}
            _ => {
                return Err(StsError::new(
                    "MalformedPolicyDocument",
                    "The policy is not in the valid JSON format.",
                ))
            }
        }
    }
    Ok(RoleRequest {
        account,
        role_name,
        session_name: session_name.to_string(),
        duration,
    })
}

fn random_upper_alnum(n: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rngs::OsRng;
    (0..n)
        .map(|_| char::from(CHARS[rng.gen_range(0..CHARS.len())]))
        .collect()
}

fn random_b64(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
    base64::engine::general_purpose::STANDARD.encode(raw)
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn iso8601(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// `<Credentials>` and `<AssumedRoleUser>` for a validated request.
fn credentials_xml(req: &RoleRequest) -> String {
    // 40 characters, like AWS secret keys.
    let secret: String = random_b64(30);
    format!(
        "    <AssumedRoleUser>\n      <AssumedRoleId>AROA{}:{}</AssumedRoleId>\n      <Arn>arn:aws:sts::{}:assumed-role/{}/{}</Arn>\n    </AssumedRoleUser>\n    <Credentials>\n      <AccessKeyId>ASIA{}</AccessKeyId>\n      <SecretAccessKey>{}</SecretAccessKey>\n      <SessionToken>{}</SessionToken>\n      <Expiration>{}</Expiration>\n    </Credentials>\n",
        random_upper_alnum(17),
        xml_escape(&req.session_name),
        req.account,
        xml_escape(&req.role_name),
        xml_escape(&req.session_name),
        random_upper_alnum(16),
        xml_escape(&secret),
        xml_escape(&random_b64(180)),
        iso8601(now_unix() + req.duration),
    )
}

fn assume_role(
    _inner: &Inner,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<String, StsError> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !auth.starts_with("AWS4-HMAC-SHA256 Credential=") {
        return Err(StsError {
            status: 403,
            code: "MissingAuthenticationToken",
            message: "Request is missing Authentication Token".into(),
        });
    }
    let req = common_params(params)?;
    Ok(format!(
        "<AssumeRoleResponse xmlns=\"{STS_NS}\">\n  <AssumeRoleResult>\n{}  </AssumeRoleResult>\n  <ResponseMetadata>\n    <RequestId>{{REQUEST_ID}}</RequestId>\n  </ResponseMetadata>\n</AssumeRoleResponse>\n",
        credentials_xml(&req)
    ))
}

async fn assume_role_with_web_identity(
    inner: &Inner,
    params: &HashMap<String, String>,
) -> Result<String, StsError> {
    let req = common_params(params)?;
    let token = required(params, "WebIdentityToken")?;
    if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len()) {
        return Err(StsError::validation(format!(
            "1 validation error detected: Value at 'webIdentityToken' failed to satisfy constraint: Member must have length between {MIN_TOKEN_LEN} and {MAX_TOKEN_LEN}"
        )));
    }
    let verified = verify_token(inner, token).await?;
    let mut packed = String::new();
    if let Some(tags) = &verified.principal_tags {
        // A rough share of AWS's packed session-policy/tag budget, in percent.
        let size = tags.len() * 100 / MAX_TAGS;
        packed = format!("    <PackedPolicySize>{}</PackedPolicySize>\n", size.max(1));
    }
    Ok(format!(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"{STS_NS}\">\n  <AssumeRoleWithWebIdentityResult>\n    <SubjectFromWebIdentityToken>{}</SubjectFromWebIdentityToken>\n    <Audience>{}</Audience>\n{}    <Provider>{}</Provider>\n{}  </AssumeRoleWithWebIdentityResult>\n  <ResponseMetadata>\n    <RequestId>{{REQUEST_ID}}</RequestId>\n  </ResponseMetadata>\n</AssumeRoleWithWebIdentityResponse>\n",
        xml_escape(&verified.sub),
        xml_escape(&verified.aud),
        credentials_xml(&req),
        xml_escape(&verified.iss),
        packed,
    ))
}

/// What a verified token established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// `iss`.
    pub iss: String,
    /// `sub`.
    pub sub: String,
    /// The accepted audience.
    pub aud: String,
    /// Principal tags, when the tags claim is present.
    pub principal_tags: Option<HashMap<String, String>>,
}

fn num_claim(claims: &serde_json::Map<String, Value>, name: &str) -> Result<Option<i64>, StsError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| StsError::token(format!("The {name} claim is not a number"))),
    }
}

/// Verifies `token` as AWS does (see the module documentation).
async fn verify_token(inner: &Inner, token: &str) -> Result<VerifiedToken, StsError> {
    let config = &inner.config;
    let parts: Vec<&str> = token.split('.').collect();
    let [h64, p64, s64] = parts.as_slice() else {
        return Err(StsError::token(
            "The token is not a JWS compact serialization",
        ));
    };
    let header: Value = b64url(h64)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| StsError::token("The token header is not base64url JSON"))?;
    let claims: Value = b64url(p64)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| StsError::token("The token payload is not base64url JSON"))?;
    let Some(claims) = claims.as_object() else {
        return Err(StsError::token("The token payload is not a JSON object"));
    };
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if alg != "ES256" {
        return Err(StsError::token(format!(
            "Unsupported token signing algorithm {alg:?}; expected ES256"
        )));
    }
    let kid = header.get("kid").and_then(Value::as_str);
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| StsError::token("The token has no iss claim"))?;
    if !config
        .allowed_issuer_prefixes
        .iter()
        .any(|p| iss.starts_with(p.as_str()))
        || iss.ends_with('/')
    {
        return Err(StsError::token(format!(
            "No OpenIDConnect provider found in your account for {iss}"
        )));
    }

    let keys = jwks_for(inner, iss, kid).await?;
    let key = select_key(&keys, kid)?;
    let signature =
        b64url(s64).ok_or_else(|| StsError::token("The token signature is not base64url"))?;
    let signature = p256::ecdsa::Signature::from_slice(&signature).map_err(|_| {
        StsError::token("The token signature is not a 64-byte ES256 r||s signature")
    })?;
    let signing_input = format!("{h64}.{p64}");
    key.verify(signing_input.as_bytes(), &signature)
        .map_err(|_| StsError::token("The token signature is invalid"))?;

    // Audience.
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let aud = auds
        .iter()
        .find(|a| config.allowed_audiences.iter().any(|x| x == *a))
        .ok_or_else(|| StsError::token("Incorrect token audience"))?
        .to_string();

    // Times.
    let now = now_unix();
    let skew = i64::try_from(config.clock_skew.as_secs()).unwrap_or(i64::MAX);
    let exp =
        num_claim(claims, "exp")?.ok_or_else(|| StsError::token("The token has no exp claim"))?;
    if now > exp.saturating_add(skew) {
        return Err(StsError::new(
            "ExpiredTokenException",
            format!(
                "Token expired: current date/time {now} must be before the expiration date/time {exp}"
            ),
        ));
    }
    if let Some(nbf) = num_claim(claims, "nbf")? {
        if nbf > now.saturating_add(skew) {
            return Err(StsError::token(format!(
                "Token is not yet valid: nbf {nbf} is after the current date/time {now}"
            )));
        }
    }
    let iat =
        num_claim(claims, "iat")?.ok_or_else(|| StsError::token("The token has no iat claim"))?;
    if iat > now.saturating_add(skew) {
        return Err(StsError::token(format!(
            "Token used before issued: iat {iat} is after the current date/time {now}"
        )));
    }
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .ok_or_else(|| StsError::token("The token has no valid sub claim"))?
        .to_string();

    // Session tags.
    let principal_tags = match claims.get(TAGS_CLAIM) {
        None => None,
        Some(t) => Some(parse_tags(t)?),
    };
    for required in &config.required_principal_tags {
        if !principal_tags
            .as_ref()
            .is_some_and(|t| t.contains_key(required))
        {
            return Err(StsError::denied(format!(
                "Not authorized to perform sts:AssumeRoleWithWebIdentity (the role's trust policy requires the session tag {required})"
            )));
        }
    }
    Ok(VerifiedToken {
        iss: iss.to_string(),
        sub,
        aud,
        principal_tags,
    })
}

/// Parses the `https://aws.amazon.com/tags` claim.
pub fn parse_tags(t: &Value) -> Result<HashMap<String, String>, StsError> {
    let bad =
        |why: &str| StsError::token(format!("The session tags in the token are invalid: {why}"));
    let obj = t
        .as_object()
        .ok_or_else(|| bad("the claim is not an object"))?;
    for k in obj.keys() {
        if k != "principal_tags" && k != "transitive_tag_keys" {
            return Err(bad(&format!("unknown member {k}")));
        }
    }
    let principal = obj
        .get("principal_tags")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("principal_tags must be an object"))?;
    if principal.len() > MAX_TAGS {
        return Err(bad("more than 50 tags"));
    }
    let mut tags = HashMap::new();
    for (key, value) in principal {
        if key.is_empty()
            || key.len() > MAX_TAG_KEY_LEN
            || key.to_ascii_lowercase().starts_with("aws:")
        {
            return Err(bad(&format!("tag key {key:?}")));
        }
        let values = value
            .as_array()
            .ok_or_else(|| bad(&format!("tag {key} must be an array of one string")))?;
        let [Value::String(v)] = values.as_slice() else {
            return Err(bad(&format!("tag {key} must be an array of one string")));
        };
        if v.len() > MAX_TAG_VALUE_LEN {
            return Err(bad(&format!("tag {key} value is too long")));
        }
        tags.insert(key.clone(), v.clone());
    }
    if let Some(transitive) = obj.get("transitive_tag_keys") {
        let keys = transitive
            .as_array()
            .ok_or_else(|| bad("transitive_tag_keys must be an array"))?;
        for k in keys {
            let k = k
                .as_str()
                .ok_or_else(|| bad("transitive_tag_keys must hold strings"))?;
            if !tags.contains_key(k) {
                return Err(bad(&format!(
                    "transitive tag key {k} is not a principal tag"
                )));
            }
        }
    }
    Ok(tags)
}

/// The issuer's keys, from the cache or freshly fetched.
async fn jwks_for(inner: &Inner, iss: &str, kid: Option<&str>) -> Result<Vec<Value>, StsError> {
    let cached = inner.jwks.lock().ok().and_then(|c| {
        c.get(iss).and_then(|e| {
            let fresh = e.fetched.elapsed() < inner.config.jwks_cache;
            let has_kid = kid.is_none_or(|k| {
                e.keys
                    .iter()
                    .any(|key| key.get("kid").and_then(Value::as_str) == Some(k))
            });
            (fresh && has_kid).then(|| e.keys.clone())
        })
    });
    if let Some(keys) = cached {
        return Ok(keys);
    }
    let keys = fetch_jwks(inner, iss).await?;
    if let Ok(mut c) = inner.jwks.lock() {
        c.insert(
            iss.to_string(),
            CachedJwks {
                fetched: Instant::now(),
                keys: keys.clone(),
            },
        );
    }
    Ok(keys)
}

async fn fetch_json(inner: &Inner, url: &str) -> Result<Value, StsError> {
    let resp = inner
        .http
        .get(url)
        .send()
        .await
        .map_err(|e| StsError::idp(format!("GET {url}: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(StsError::idp(format!("GET {url}: HTTP {status}")));
    }
    if resp
        .content_length()
        .is_some_and(|l| l > MAX_FETCH_BYTES as u64)
    {
        return Err(StsError::idp(format!("GET {url}: body too large")));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| StsError::idp(format!("GET {url}: {e}")))?;
    if body.len() > MAX_FETCH_BYTES {
        return Err(StsError::idp(format!("GET {url}: body too large")));
    }
    serde_json::from_slice(&body).map_err(|e| StsError::idp(format!("GET {url}: not JSON: {e}")))
}

async fn fetch_jwks(inner: &Inner, iss: &str) -> Result<Vec<Value>, StsError> {
    let discovery = fetch_json(inner, &format!("{iss}/.well-known/openid-configuration")).await?;
    if discovery.get("issuer").and_then(Value::as_str) != Some(iss) {
        return Err(StsError::token(format!(
            "The issuer in the OpenID configuration does not match the token's iss {iss}"
        )));
    }
    let jwks_uri = discovery
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or_else(|| StsError::idp("the OpenID configuration has no jwks_uri"))?;
    if !inner
        .config
        .allowed_issuer_prefixes
        .iter()
        .any(|p| jwks_uri.starts_with(p.as_str()))
    {
        return Err(StsError::token(format!(
            "The jwks_uri {jwks_uri} is not served by a trusted provider"
        )));
    }
    let jwks = fetch_json(inner, jwks_uri).await?;
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| StsError::idp(format!("{jwks_uri} has no keys array")))?;
    if keys.len() > MAX_JWKS_KEYS {
        return Err(StsError::token(NO_VERIFICATION_KEY));
    }
    for k in keys {
        // AWS refuses a JWKS holding a key with key_ops (whatever its value) or any
        // private member.
        let Some(obj) = k.as_object() else {
            return Err(StsError::token(NO_VERIFICATION_KEY));
        };
        if ["key_ops", "d", "p", "q", "dp", "dq", "qi", "oth"]
            .iter()
            .any(|m| obj.contains_key(*m))
        {
            return Err(StsError::token(NO_VERIFICATION_KEY));
        }
    }
    Ok(keys.clone())
}

/// Finds the key for `kid` (or the only EC key when the token has no `kid`).
fn select_key(keys: &[Value], kid: Option<&str>) -> Result<p256::ecdsa::VerifyingKey, StsError> {
    let candidates: Vec<&Value> = match kid {
        Some(kid) => keys
            .iter()
            .filter(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
            .collect(),
        None => keys
            .iter()
            .filter(|k| k.get("kty").and_then(Value::as_str) == Some("EC"))
            .collect(),
    };
    let [key] = candidates.as_slice() else {
        return Err(StsError::token(NO_VERIFICATION_KEY));
    };
    let field = |n: &str| key.get(n).and_then(Value::as_str);
    if field("kty") != Some("EC") || field("crv") != Some("P-256") {
        return Err(StsError::token(NO_VERIFICATION_KEY));
    }
    if field("alg").is_some_and(|a| a != "ES256") || field("use").is_some_and(|u| u != "sig") {
        return Err(StsError::token(NO_VERIFICATION_KEY));
    }
    p256_verifying_key(key).ok_or_else(|| StsError::token(NO_VERIFICATION_KEY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn session_names() {
        assert!(valid_session_name("agentkeys-0xabc"));
        assert!(valid_session_name("a_b+c=d,e.f@g-h"));
        assert!(valid_session_name(&"a".repeat(64)));
        assert!(!valid_session_name("a"));
        assert!(!valid_session_name(&"a".repeat(65)));
        assert!(!valid_session_name("has space"));
        assert!(!valid_session_name("slash/"));
        assert!(!valid_session_name("é1"));
    }

    #[test]
    fn role_arns() {
        assert_eq!(
            parse_role_arn("arn:aws:iam::123456789012:role/agentkeys-data-role"),
            Some(("123456789012".into(), "agentkeys-data-role".into()))
        );
        assert_eq!(
            parse_role_arn("arn:aws-cn:iam::123456789012:role/path/to/r"),
            Some(("123456789012".into(), "r".into()))
        );
        for bad in [
            "arn:aws:iam::12345678901:role/r",
            "arn:aws:iam::123456789012:user/r",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::123456789012:role/",
            "arn:evil:iam::123456789012:role/r",
            "arn:aws:iam::123456789012:role/bad name",
            "",
        ] {
            assert_eq!(parse_role_arn(bad), None, "{bad}");
        }
    }

    #[test]
    fn tags_claim_shapes() {
        let ok = json!({"principal_tags": {"agentkeys_user_wallet": ["0xabc"]},
                        "transitive_tag_keys": ["agentkeys_user_wallet"]});
        assert_eq!(parse_tags(&ok).unwrap()["agentkeys_user_wallet"], "0xabc");
        for bad in [
            json!("x"),
            json!({}),
            json!({"principal_tags": {"k": "v"}}),
            json!({"principal_tags": {"k": []}}),
            json!({"principal_tags": {"k": ["a", "b"]}}),
            json!({"principal_tags": {"k": [1]}}),
            json!({"principal_tags": {"k": ["v"]}, "transitive_tag_keys": ["other"]}),
            json!({"principal_tags": {"k": ["v"]}, "transitive_tag_keys": "k"}),
            json!({"principal_tags": {"aws:k": ["v"]}}),
            json!({"principal_tags": {"k": ["v"]}, "extra": 1}),
        ] {
            assert!(parse_tags(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn xml_is_escaped() {
        assert_eq!(xml_escape("<a&'\">"), "&lt;a&amp;&apos;&quot;&gt;");
    }

    #[test]
    fn error_xml_shape() {
        let r = error_response(&StsError::token("bad <token>"), "rid-1");
        assert_eq!(r.status(), 400);
    }

    #[test]
    fn key_selection() {
        let sk = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let point = sk.verifying_key().to_encoded_point(false);
        let b = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let (x, y) = (b(point.x().unwrap()), b(point.y().unwrap()));
        let k = json!({"kty":"EC","crv":"P-256","x":x,"y":y,"kid":"k1","alg":"ES256","use":"sig"});
        assert!(select_key(std::slice::from_ref(&k), Some("k1")).is_ok());
        assert!(select_key(std::slice::from_ref(&k), None).is_ok());
        assert!(select_key(std::slice::from_ref(&k), Some("k2")).is_err());
        let mut rs = k.clone();
        rs["alg"] = json!("RS256");
        assert!(select_key(&[rs], Some("k1")).is_err());
        let mut short = k.clone();
        short["x"] = json!("AAAA");
        assert!(select_key(&[short], Some("k1")).is_err());
        assert!(
            select_key(&[k.clone(), k], Some("k1")).is_err(),
            "ambiguous kid"
        );
    }
}
