//! The STS stand-in driven by the real `aws-sdk-sts` (and the `aws` CLI when present),
//! against a small in-test OIDC issuer with its own P-256 key.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use agentkeys_dev::standins::sts::{self, StsConfig};
use aws_sdk_sts::error::ProvideErrorMetadata;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{json, Value};

const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/agentkeys-data-role";
const WALLET: &str = "0x00000000000000000000000000000000000000aa";
const KID: &str = "test-kid-1";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A tiny OIDC issuer: discovery + JWKS on loopback.
struct Issuer {
    url: String,
    key: SigningKey,
    jwks: Arc<Mutex<Value>>,
}

impl Issuer {
    async fn start() -> Issuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let point = key.verifying_key().to_encoded_point(false);
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": KID,
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        });
        let jwks = Arc::new(Mutex::new(json!({ "keys": [jwk] })));
        let discovery = json!({
            "issuer": url,
            "jwks_uri": format!("{url}/.well-known/jwks.json"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        });
        let app =
            Router::new()
                .route(
                    "/.well-known/openid-configuration",
                    get(move || {
                        let d = discovery.clone();
                        async move { Json(d) }
                    }),
                )
                .route(
                    "/.well-known/jwks.json",
                    get(|State(j): State<Arc<Mutex<Value>>>| async move {
                        Json(j.lock().unwrap().clone())
                    }),
                )
                .with_state(Arc::clone(&jwks));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Issuer { url, key, jwks }
    }

    fn claims(&self) -> Value {
        let t = now();
        json!({
            "iss": self.url,
            "sub": format!("agentkeys:agent:{WALLET}"),
            "aud": "sts.amazonaws.com",
            "iat": t, "nbf": t, "exp": t + 300,
            "jti": "jti-1",
            "agentkeys_user_wallet": WALLET,
            "https://aws.amazon.com/tags": {
                "principal_tags": { "agentkeys_user_wallet": [WALLET] },
                "transitive_tag_keys": ["agentkeys_user_wallet"],
            },
        })
    }

    fn sign_with(&self, header: &Value, claims: &Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap());
        let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
        let input = format!("{h}.{p}");
        let sig: Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with(&json!({"alg": "ES256", "kid": KID, "typ": "JWT"}), claims)
    }

    fn token(&self) -> String {
        self.sign(&self.claims())
    }
}

async fn start_sts(config: StsConfig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(sts::serve(listener, config));
    url
}

fn sdk(url: &str) -> aws_sdk_sts::Client {
    let conf = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .endpoint_url(url)
        .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_sts::Client::from_conf(conf)
}

type Exchange = Result<
    aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityOutput,
    String,
>;

async fn exchange_with(url: &str, token: &str, session: &str, duration: i32) -> Exchange {
    sdk(url)
        .assume_role_with_web_identity()
        .role_arn(ROLE_ARN)
        .role_session_name(session)
        .web_identity_token(token)
        .duration_seconds(duration)
        .send()
        .await
        .map_err(|e| {
            e.as_service_error()
                .and_then(|s| s.code())
                .map(str::to_string)
                .unwrap_or_else(|| format!("no service error: {e:?}"))
        })
}

async fn exchange(url: &str, token: &str) -> Exchange {
    exchange_with(url, token, "agentkeys-test", 900).await
}

async fn setup() -> (Issuer, String) {
    let issuer = Issuer::start().await;
    let sts = start_sts(StsConfig::default()).await;
    (issuer, sts)
}

#[tokio::test]
async fn valid_token_gets_credentials() {
    let (issuer, sts) = setup().await;
    let out = exchange(&sts, &issuer.token()).await.unwrap();
    let creds = out.credentials().unwrap();
    let akid = creds.access_key_id();
    assert!(akid.starts_with("ASIA"), "{akid}");
    assert_eq!(akid.len(), 20);
    assert!(akid[4..]
        .chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
    assert_eq!(creds.secret_access_key().len(), 40);
    assert!(!creds.session_token().is_empty());
    let exp = creds.expiration().secs();
    assert!((exp - (now() + 900)).abs() < 10, "{exp}");
    assert_eq!(
        out.subject_from_web_identity_token(),
        Some(format!("agentkeys:agent:{WALLET}").as_str())
    );
    assert_eq!(out.audience(), Some("sts.amazonaws.com"));
    assert_eq!(out.provider(), Some(issuer.url.as_str()));
    let user = out.assumed_role_user().unwrap();
    assert_eq!(
        user.arn(),
        "arn:aws:sts::123456789012:assumed-role/agentkeys-data-role/agentkeys-test"
    );
    assert!(user.assumed_role_id().ends_with(":agentkeys-test"));
    // A second exchange gets different credentials.
    let again = exchange(&sts, &issuer.token()).await.unwrap();
    assert_ne!(again.credentials().unwrap().access_key_id(), akid);
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let (issuer, sts) = setup().await;
    let mut c = issuer.claims();
    c["aud"] = json!("someone-else");
    assert_eq!(
        exchange(&sts, &issuer.sign(&c)).await.unwrap_err(),
        "InvalidIdentityToken"
    );
    c["aud"] = json!(["a", "sts.amazonaws.com"]);
    assert!(exchange(&sts, &issuer.sign(&c)).await.is_ok());
}

#[tokio::test]
async fn expired_token_is_refused_beyond_the_skew() {
    let (issuer, sts) = setup().await;
    let mut c = issuer.claims();
    c["iat"] = json!(now() - 1000);
    c["nbf"] = json!(now() - 1000);
    c["exp"] = json!(now() - 400);
    assert_eq!(
        exchange(&sts, &issuer.sign(&c)).await.unwrap_err(),
        "ExpiredTokenException"
    );
    c["exp"] = json!(now() - 100);
    assert!(
        exchange(&sts, &issuer.sign(&c)).await.is_ok(),
        "within skew"
    );
}

#[tokio::test]
async fn future_nbf_and_iat_are_refused_beyond_the_skew() {
    let (issuer, sts) = setup().await;
    let mut c = issuer.claims();
    c["nbf"] = json!(now() + 600);
    c["exp"] = json!(now() + 900);
    assert_eq!(
        exchange(&sts, &issuer.sign(&c)).await.unwrap_err(),
        "InvalidIdentityToken"
    );
    let mut c = issuer.claims();
    c["iat"] = json!(now() + 600);
    c["exp"] = json!(now() + 900);
    assert_eq!(
        exchange(&sts, &issuer.sign(&c)).await.unwrap_err(),
        "InvalidIdentityToken"
    );
    let mut c = issuer.claims();
    c["nbf"] = json!(now() + 100);
    c["iat"] = json!(now() + 100);
    assert!(
        exchange(&sts, &issuer.sign(&c)).await.is_ok(),
        "within skew"
    );
}

#[tokio::test]
async fn unknown_kid_is_refused() {
    let (issuer, sts) = setup().await;
    let t = issuer.sign_with(
        &json!({"alg": "ES256", "kid": "other-kid", "typ": "JWT"}),
        &issuer.claims(),
    );
    assert_eq!(
        exchange(&sts, &t).await.unwrap_err(),
        "InvalidIdentityToken"
    );
}

#[tokio::test]
async fn tampered_signature_or_payload_is_refused() {
    let (issuer, sts) = setup().await;
    let t = issuer.token();
    let (input, sig) = t.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig[10] ^= 1;
    let bad_sig = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig));
    assert_eq!(
        exchange(&sts, &bad_sig).await.unwrap_err(),
        "InvalidIdentityToken"
    );
    // Same signature over other claims.
    let mut c = issuer.claims();
    c["sub"] = json!("agentkeys:agent:0x00000000000000000000000000000000000000bb");
    let other = issuer.sign(&c);
    let (h, rest) = other.split_once('.').unwrap();
    let (p, _) = rest.split_once('.').unwrap();
    let (_, orig_sig) = t.rsplit_once('.').unwrap();
    let swapped = format!("{h}.{p}.{orig_sig}");
    assert_eq!(
        exchange(&sts, &swapped).await.unwrap_err(),
        "InvalidIdentityToken"
    );
    // A DER signature instead of raw r||s.
    let raw: Signature = issuer.key.sign(input.as_bytes());
    let der = raw.to_der().as_bytes().to_vec();
    let der_token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(der));
    assert_eq!(
        exchange(&sts, &der_token).await.unwrap_err(),
        "InvalidIdentityToken"
    );
    assert_eq!(
        exchange(&sts, "not-a-jwt").await.unwrap_err(),
        "InvalidIdentityToken"
    );
}

#[tokio::test]
async fn rs256_and_none_algorithms_are_refused() {
    let (issuer, sts) = setup().await;
    for alg in ["RS256", "none", "HS256"] {
        let t = issuer.sign_with(&json!({"alg": alg, "kid": KID}), &issuer.claims());
        assert_eq!(
            exchange(&sts, &t).await.unwrap_err(),
            "InvalidIdentityToken",
            "{alg}"
        );
    }
}

#[tokio::test]
async fn missing_or_malformed_tags_are_refused() {
    let (issuer, sts) = setup().await;
    let mut c = issuer.claims();
    c.as_object_mut()
        .unwrap()
        .remove("https://aws.amazon.com/tags");
    assert_eq!(
        exchange(&sts, &issuer.sign(&c)).await.unwrap_err(),
        "AccessDenied",
        "the role's trust policy requires the wallet tag"
    );
    let mut c = issuer.claims();
    c["https://aws.amazon.com/tags"]["transitive_tag_keys"] = json!(["not_a_principal_tag"]);
    assert_eq!(
        exchange(&sts, &issuer.sign(&c)).await.unwrap_err(),
        "InvalidIdentityToken"
    );
    let mut c = issuer.claims();
    c["https://aws.amazon.com/tags"]["principal_tags"]["agentkeys_user_wallet"] = json!(WALLET);
    assert_eq!(
        exchange(&sts, &issuer.sign(&c)).await.unwrap_err(),
        "InvalidIdentityToken"
    );
}

#[tokio::test]
async fn bad_session_name_is_a_validation_error() {
    let (issuer, sts) = setup().await;
    for name in ["a", "has space", "slash/no", &"x".repeat(65)] {
        assert_eq!(
            exchange_with(&sts, &issuer.token(), name, 900)
                .await
                .unwrap_err(),
            "ValidationError",
            "{name}"
        );
    }
}

#[tokio::test]
async fn duration_out_of_range_is_a_validation_error() {
    let (issuer, sts) = setup().await;
    for d in [0, 899, 43_201] {
        assert_eq!(
            exchange_with(&sts, &issuer.token(), "agentkeys-test", d)
                .await
                .unwrap_err(),
            "ValidationError",
            "{d}"
        );
    }
    assert!(
        exchange_with(&sts, &issuer.token(), "agentkeys-test", 43_200)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn bad_role_arn_and_policy_are_refused() {
    let (issuer, sts) = setup().await;
    let e = sdk(&sts)
        .assume_role_with_web_identity()
        .role_arn("arn:aws:iam::123:role/x-role-name")
        .role_session_name("agentkeys-test")
        .web_identity_token(issuer.token())
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.as_service_error().unwrap().code(),
        Some("ValidationError")
    );
    let e = sdk(&sts)
        .assume_role_with_web_identity()
        .role_arn(ROLE_ARN)
        .role_session_name("agentkeys-test")
        .web_identity_token(issuer.token())
        .policy("{not json")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.as_service_error().unwrap().code(),
        Some("MalformedPolicyDocument")
    );
}

#[tokio::test]
async fn unreachable_issuer_is_an_idp_communication_error() {
    let issuer = Issuer::start().await;
    let sts = start_sts(StsConfig::default()).await;
    // A loopback port with nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut c = issuer.claims();
    c["iss"] = json!(format!("http://127.0.0.1:{port}"));
    assert_eq!(
        exchange(&sts, &issuer.sign(&c)).await.unwrap_err(),
        "IDPCommunicationError"
    );
}

#[tokio::test]
async fn untrusted_issuer_is_refused_without_fetching() {
    let (issuer, sts) = setup().await;
    let mut c = issuer.claims();
    c["iss"] = json!("https://issuer.invalid");
    assert_eq!(
        exchange(&sts, &issuer.sign(&c)).await.unwrap_err(),
        "InvalidIdentityToken"
    );
    c["iss"] = json!(format!("{}/", issuer.url));
    assert_eq!(
        exchange(&sts, &issuer.sign(&c)).await.unwrap_err(),
        "InvalidIdentityToken",
        "trailing slash"
    );
}

#[tokio::test]
async fn jwks_with_key_ops_is_refused() {
    let (issuer, sts) = setup().await;
    issuer.jwks.lock().unwrap()["keys"][0]["key_ops"] = json!(["verify"]);
    assert_eq!(
        exchange(&sts, &issuer.token()).await.unwrap_err(),
        "InvalidIdentityToken"
    );
}

#[tokio::test]
async fn assume_role_needs_a_signed_request() {
    let sts = start_sts(StsConfig::default()).await;
    let conf = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .endpoint_url(&sts)
        .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled())
        .credentials_provider(aws_sdk_sts::config::Credentials::new(
            "AKIAEXAMPLEEXAMPLE00",
            "example-secret",
            None,
            None,
            "test",
        ))
        .build();
    let out = aws_sdk_sts::Client::from_conf(conf)
        .assume_role()
        .role_arn(ROLE_ARN)
        .role_session_name("agentkeys-daemon")
        .duration_seconds(3600)
        .send()
        .await
        .unwrap();
    assert!(out
        .credentials()
        .unwrap()
        .access_key_id()
        .starts_with("ASIA"));
    // Unsigned: refused.
    let r = reqwest::Client::new()
        .post(&sts)
        .form(&[
            ("Action", "AssumeRole"),
            ("Version", "2011-06-15"),
            ("RoleArn", ROLE_ARN),
            ("RoleSessionName", "agentkeys-daemon"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("<Code>MissingAuthenticationToken</Code>"));
}

#[tokio::test]
async fn get_query_form_and_error_xml_shape() {
    let (issuer, sts) = setup().await;
    let token = issuer.token();
    let r = reqwest::Client::new()
        .get(&sts)
        .query(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", ROLE_ARN),
            ("RoleSessionName", "agentkeys-test"),
            ("WebIdentityToken", token.as_str()),
            ("DurationSeconds", "900"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.starts_with(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
    ));
    for tag in [
        "<AssumeRoleWithWebIdentityResult>",
        "<Credentials>",
        "<AccessKeyId>ASIA",
        "<SecretAccessKey>",
        "<SessionToken>",
        "<Expiration>",
        "<SubjectFromWebIdentityToken>",
        "<AssumedRoleUser>",
        "<Arn>",
        "<AssumedRoleId>",
        "<Provider>",
        "<Audience>",
        "<ResponseMetadata>",
        "<RequestId>",
    ] {
        assert!(body.contains(tag), "{tag} missing in {body}");
    }
    let r = reqwest::Client::new()
        .post(&sts)
        .form(&[("Action", "GetFederationToken"), ("Version", "2011-06-15")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(body.contains("<ErrorResponse"), "{body}");
    assert!(body.contains("<Type>Sender</Type>"), "{body}");
    assert!(body.contains("<Code>InvalidAction</Code>"), "{body}");
    assert!(body.contains("<RequestId>"), "{body}");
}

#[tokio::test]
async fn aws_cli_exchange_when_available() {
    let Ok(aws) = which_aws() else {
        eprintln!("aws CLI not on PATH; skipped");
        return;
    };
    let (issuer, sts) = setup().await;
    let token = issuer.token();
    let out = tokio::process::Command::new(aws)
        .args([
            "sts",
            "assume-role-with-web-identity",
            "--endpoint-url",
            &sts,
            "--region",
            "us-east-1",
            "--role-arn",
            ROLE_ARN,
            "--role-session-name",
            "agentkeys-cli",
            "--duration-seconds",
            "900",
            "--web-identity-token",
            &token,
            "--output",
            "json",
        ])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_PROFILE")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["Credentials"]["AccessKeyId"]
        .as_str()
        .unwrap()
        .starts_with("ASIA"));
    // And an error is surfaced with its code.
    let out = tokio::process::Command::new(which_aws().unwrap())
        .args([
            "sts",
            "assume-role-with-web-identity",
            "--endpoint-url",
            &sts,
            "--region",
            "us-east-1",
            "--role-arn",
            ROLE_ARN,
            "--role-session-name",
            "agentkeys-cli",
            "--web-identity-token",
            "garbage-token",
        ])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("InvalidIdentityToken"));
}

fn which_aws() -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    for dir in std::env::split_paths(&path) {
        let p = dir.join("aws");
        if p.is_file() {
            // pyenv shims exist even when the command is not installed: probe it.
            let ok = std::process::Command::new(&p)
                .arg("--version")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            return if ok { Ok(p) } else { Err(()) };
        }
    }
    Err(())
}
