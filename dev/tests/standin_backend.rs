//! The session-backend stand-in over HTTP.

use agentkeys_dev::standins::backend;
use serde_json::{json, Value};

const WALLET: &str = "0xABCDEF0000000000000000000000000000000001";

async fn start() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(backend::serve(listener, None));
    url
}

async fn create(client: &reqwest::Client, url: &str) -> String {
    let r = client
        .post(format!("{url}/session/create"))
        .json(&json!({"wallet": WALLET}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["wallet"], WALLET.to_ascii_lowercase());
    v["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn create_validate_revoke() {
    let url = start().await;
    let c = reqwest::Client::new();
    let token = create(&c, &url).await;
    // 32 random bytes, base64url without padding.
    assert_eq!(token.len(), 43);
    assert!(token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_ne!(token, create(&c, &url).await, "tokens are random");

    let r = c
        .get(format!("{url}/session/validate"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"wallet": WALLET.to_ascii_lowercase()}));

    let r = c
        .post(format!("{url}/session/revoke"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = c
        .get(format!("{url}/session/validate"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"error": "unauthorized"}));
    // Revoking twice: the bearer is no longer known.
    let r = c
        .post(format!("{url}/session/revoke"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn validate_rejects_missing_malformed_and_unknown_bearers() {
    let url = start().await;
    let c = reqwest::Client::new();
    let token = create(&c, &url).await;
    let cases: Vec<Option<String>> = vec![
        None,
        Some("Basic dXNlcjpwYXNz".into()),
        Some("Bearer".into()),
        Some("Bearer unknown-token".into()),
        Some(format!("Bearer {token}x")),
    ];
    for auth in cases {
        let mut req = c.get(format!("{url}/session/validate"));
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "unauthorized");
    }
    let r = c
        .post(format!("{url}/session/revoke"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn create_rejects_bad_wallets_and_bodies() {
    let url = start().await;
    let c = reqwest::Client::new();
    for body in [
        r#"{"wallet":"0x123"}"#,
        r#"{"wallet":"0xZZZDEF0000000000000000000000000000000001"}"#,
        r#"{"wallet":12}"#,
        r#"{}"#,
        "not json",
        "",
    ] {
        let r = c
            .post(format!("{url}/session/create"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "bad_request", "{body}");
    }
    let r = c
        .post(format!("{url}/session/create"))
        .body(vec![b'x'; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}
