//! `agentkeys-dev dev --demo`: the whole flow once, each step checked and printed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use sha2::{Digest, Sha256};

/// What the demo needs of the running stack.
pub struct DemoUrls {
    /// Broker.
    pub broker: String,
    /// Backend.
    pub backend: String,
    /// Mock root PEM path.
    pub mock_root_pem: PathBuf,
    /// Audit DB.
    pub audit_db: PathBuf,
}

/// The wallet the demo uses.
pub const DEMO_WALLET: &str = "0x00000000000000000000000000000000000000aa";

fn b64url(s: &str) -> anyhow::Result<Vec<u8>> {
    crate::jwk::b64url(s).ok_or_else(|| anyhow!("not base64url: {s:.20}"))
}

/// Verifies an ES256 compact JWT against a JWKS document; returns the claims.
pub fn verify_es256(jwt: &str, jwks: &[u8]) -> anyhow::Result<serde_json::Value> {
    let mut parts = jwt.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("JWT does not have three parts");
    };
    let header: serde_json::Value = serde_json::from_slice(&b64url(h)?)?;
    if header["alg"] != "ES256" {
        bail!("alg is {}, expected ES256", header["alg"]);
    }
    let kid = header["kid"].as_str().ok_or_else(|| anyhow!("no kid"))?;
    let set: serde_json::Value = serde_json::from_slice(jwks)?;
    let key = set["keys"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["kid"] == kid))
        .ok_or_else(|| anyhow!("kid {kid} not in the JWKS"))?;
    let verifying = crate::jwk::p256_verifying_key(key)
        .ok_or_else(|| anyhow!("JWK {kid} is not an EC P-256 key on the curve"))?;
    let signature = p256::ecdsa::Signature::from_slice(&b64url(s)?)
        .map_err(|e| anyhow!("signature is not raw r||s: {e}"))?;
    verifying
        .verify(format!("{h}.{p}").as_bytes(), &signature)
        .map_err(|_| anyhow!("signature does not verify"))?;
    Ok(serde_json::from_slice(&b64url(p)?)?)
}

async fn post_json(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    body: &str,
) -> anyhow::Result<serde_json::Value> {
    let mut rb = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(b) = bearer {
        rb = rb.bearer_auth(b);
    }
    let r = rb.send().await.with_context(|| format!("POST {url}"))?;
    let status = r.status();
    let text = r.text().await?;
    if !status.is_success() {
        bail!("POST {url}: HTTP {status}: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

async fn get_bytes(http: &reqwest::Client, url: &str) -> anyhow::Result<Vec<u8>> {
    let r = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = r.status();
    let bytes = r.bytes().await?.to_vec();
    if !status.is_success() {
        bail!(
            "GET {url}: HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(bytes)
}

struct Ctx<'a> {
    http: &'a reqwest::Client,
    u: &'a DemoUrls,
    token: String,
    jwt: String,
}

async fn step_session(c: &mut Ctx<'_>) -> anyhow::Result<String> {
    let v = post_json(
        c.http,
        &format!("{}/session/create", c.u.backend),
        None,
        &serde_json::json!({ "wallet": DEMO_WALLET }).to_string(),
    )
    .await?;
    c.token = v["token"]
        .as_str()
        .ok_or_else(|| anyhow!("no token in {v}"))?
        .to_string();
    Ok(format!("session for {DEMO_WALLET}"))
}

async fn step_mint(c: &mut Ctx<'_>) -> anyhow::Result<String> {
    let v = post_json(
        c.http,
        &format!("{}/v1/mint-oidc-jwt", c.u.broker),
        Some(&c.token),
        "",
    )
    .await?;
    c.jwt = v["jwt"]
        .as_str()
        .ok_or_else(|| anyhow!("no jwt"))?
        .to_string();
    Ok(format!(
        "kid {} audit_id {} expires {}",
        v["kid"], v["audit_id"], v["expiration"]
    ))
}

async fn step_verify_jwt(c: &mut Ctx<'_>) -> anyhow::Result<String> {
    let jwks = get_bytes(c.http, &format!("{}/.well-known/jwks.json", c.u.broker)).await?;
    let claims = verify_es256(&c.jwt, &jwks)?;
    if claims["iss"] != c.u.broker.as_str() {
        bail!("iss {} != {}", claims["iss"], c.u.broker);
    }
    if claims["aud"] != "sts.amazonaws.com" {
        bail!("aud is {}", claims["aud"]);
    }
    let sub = format!("agentkeys:agent:{DEMO_WALLET}");
    if claims["sub"] != sub.as_str() {
        bail!("sub is {}", claims["sub"]);
    }
    if claims["https://aws.amazon.com/tags"]["principal_tags"]["agentkeys_user_wallet"][0]
        != DEMO_WALLET
    {
        bail!("tags claim missing the wallet");
    }
    Ok("ES256 signature verifies against the served JWKS; iss/aud/sub/tags ok".into())
}

/// A mint the wallet itself authorizes: a throwaway secp256k1 wallet signs a Sign-In
/// with Ethereum message over a nonce from the broker, no bearer involved.
async fn step_sign_in(c: &mut Ctx<'_>) -> anyhow::Result<String> {
    use crate::siwe_wallet::{siwe_message, ThrowawayWallet};
    let nonce: serde_json::Value = serde_json::from_slice(
        &get_bytes(c.http, &format!("{}/v1/sign-in/nonce", c.u.broker)).await?,
    )?;
    let nonce = nonce["nonce"]
        .as_str()
        .ok_or_else(|| anyhow!("no nonce in {nonce}"))?;
    let domain =
        c.u.broker
            .split_once("://")
            .map_or(c.u.broker.as_str(), |(_, rest)| rest);
    let now = agentkeys_attestation::now_unix_ms() / 1000;
    let wallet = ThrowawayWallet::new();
    let message = siwe_message(
        domain,
        &wallet.address(),
        &c.u.broker,
        1,
        nonce,
        now,
        now + 120,
    );
    let signature = format!("0x{}", hex::encode(wallet.sign(&message)));
    let body = serde_json::json!({"sign_in": {"message": message, "signature": signature}});
    let v = post_json(
        c.http,
        &format!("{}/v1/mint-oidc-jwt", c.u.broker),
        None,
        &body.to_string(),
    )
    .await?;
    let jwt = v["jwt"].as_str().ok_or_else(|| anyhow!("no jwt"))?;
    let jwks = get_bytes(c.http, &format!("{}/.well-known/jwks.json", c.u.broker)).await?;
    let claims = verify_es256(jwt, &jwks)?;
    let expected = wallet.wallet().to_string();
    if claims["agentkeys_user_wallet"] != expected.as_str() {
        bail!(
            "token is for {}, the signer is {expected}",
            claims["agentkeys_user_wallet"]
        );
    }
    if claims["agentkeys_auth"] != "wallet-signature" {
        bail!("agentkeys_auth is {}", claims["agentkeys_auth"]);
    }
    Ok(format!("token for the signer {}", wallet.address()))
}

async fn step_creds(c: &mut Ctx<'_>) -> anyhow::Result<String> {
    let v = post_json(
        c.http,
        &format!("{}/v1/mint-aws-creds", c.u.broker),
        Some(&c.token),
        "",
    )
    .await?;
    for k in [
        "access_key_id",
        "secret_access_key",
        "session_token",
        "expiration",
    ] {
        if v[k].as_str().map(str::is_empty).unwrap_or(true) {
            bail!("{k} missing");
        }
    }
    Ok(format!(
        "access key {} expires {} (audit_id {})",
        v["access_key_id"], v["expiration"], v["audit_id"]
    ))
}

fn mock_anchor(u: &DemoUrls) -> anyhow::Result<agentkeys_attestation::TrustAnchor> {
    let pem = std::fs::read_to_string(&u.mock_root_pem)?;
    agentkeys_attestation::TrustAnchor::mock_root_explicitly_trusted(&pem)
        .map_err(|e| anyhow!("mock root: {e}"))
}

async fn step_attest(c: &mut Ctx<'_>) -> anyhow::Result<String> {
    let nonce: [u8; 16] = rand::random();
    let body = get_bytes(
        c.http,
        &format!(
            "{}/.well-known/nitro-attestation?nonce={}",
            c.u.broker,
            hex::encode(nonce)
        ),
    )
    .await?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let doc = base64::engine::general_purpose::STANDARD.decode(
        v["document"]
            .as_str()
            .ok_or_else(|| anyhow!("no document"))?,
    )?;
    let jwks = get_bytes(c.http, &format!("{}/.well-known/jwks.json", c.u.broker)).await?;
    let policy = agentkeys_attestation::Policy {
        nonce: Some(nonce.to_vec()),
        ..Default::default()
    };
    let anchor = mock_anchor(c.u)?;
    let verified =
        agentkeys_attestation::verify(&doc, &anchor, agentkeys_attestation::now_unix_ms(), &policy)
            .map_err(|e| anyhow!("attestation: {e}"))?;
    let statement_text = v["statement_text"]
        .as_str()
        .ok_or_else(|| anyhow!("no statement_text beside the document"))?;
    let statement = agentkeys_wire::JwksStatement::decode_attested(
        verified.document.user_data.as_deref().unwrap_or_default(),
        statement_text.as_bytes(),
    )
    .map_err(|e| anyhow!("attestation statement: {e}"))?;
    let jwks_sha256: [u8; 32] = Sha256::digest(&jwks).into();
    if statement.jwks_sha256 != jwks_sha256 {
        bail!("the attestation states another JWKS than the one served");
    }
    if statement.kms_key_arn.as_str() != crate::stack::DEV_KMS_KEY_ARN {
        bail!("the enclave is pinned to {}", statement.kms_key_arn);
    }
    Ok(format!(
        "document verifies (mock root), carries our nonce and states the JWKS served, KMS key {}, module {}",
        statement.kms_key_arn, statement.module_id
    ))
}

async fn step_audit(c: &mut Ctx<'_>) -> anyhow::Result<String> {
    let nonce: [u8; 16] = rand::random();
    let text = agentkeys_broker::cli::creds::fetch_checkpoint(&c.u.broker, &nonce).await?;
    let anchor = mock_anchor(c.u)?;
    let policy = agentkeys_attestation::Policy {
        nonce: Some(nonce.to_vec()),
        ..Default::default()
    };
    let trust = agentkeys_broker::audit::verify::CheckpointTrust {
        anchor: &anchor,
        policy: &policy,
        at_unix_ms: agentkeys_attestation::now_unix_ms(),
    };
    let cp = agentkeys_broker::audit::verify::checkpoint_from_json(&text, Some(&trust))?;
    let db = c.u.audit_db.clone();
    let (epoch, seq) = (cp.epoch, cp.seq);
    let report =
        tokio::task::spawn_blocking(move || agentkeys_broker::audit::verify_chain(&db, Some(&cp)))
            .await??;
    if !report.is_ok() {
        bail!("{}", report.render());
    }
    Ok(format!(
        "audit chain verifies against the enclave checkpoint (epoch {epoch}, seq {seq})"
    ))
}

/// Runs the demo; prints each step; true only if all passed.
pub async fn run_demo(http: &reqwest::Client, urls: &DemoUrls) -> bool {
    let mut c = Ctx {
        http,
        u: urls,
        token: String::new(),
        jwt: String::new(),
    };
    let mut all = true;
    macro_rules! step {
        ($name:expr, $f:ident) => {{
            let r = tokio::time::timeout(Duration::from_secs(20), $f(&mut c))
                .await
                .unwrap_or_else(|_| Err(anyhow!("timed out")));
            match r {
                Ok(msg) => println!("PASS  {:<34} {msg}", $name),
                Err(e) => {
                    all = false;
                    println!("FAIL  {:<34} {e:#}", $name);
                }
            }
        }};
    }
    step!("1. create a session", step_session);
    step!("2. mint an OIDC JWT", step_mint);
    step!("3. verify the JWT against the JWKS", step_verify_jwt);
    step!("4. AWS credentials via STS", step_creds);
    step!("5. mint with a wallet's own sign-in", step_sign_in);
    step!("6. verify the attestation", step_attest);
    step!("7. verify the audit log", step_audit);
    println!(
        "{}",
        if all {
            "demo: all steps passed"
        } else {
            "demo: FAILED"
        }
    );
    all
}
