//! The STS answer the broker parses after `AssumeRoleWithWebIdentity` (and `AssumeRole`
//! in the older mode): the same `aws-sdk-sts` client and retry settings as the broker,
//! with an HTTP connector that answers with the fuzzer's bytes. The first input byte
//! picks the HTTP status; the rest is the body. Must never panic or hang.
#![no_main]

use std::sync::OnceLock;

use aws_sdk_sts::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::body::SdkBody;
use libfuzzer_sys::fuzz_target;

/// HTTP statuses STS answers with (success, client errors, throttling, server errors).
const STATUSES: [u16; 6] = [200, 400, 403, 429, 500, 503];

/// A connector that answers every request with a fixed status and body.
#[derive(Debug, Clone)]
struct Canned {
    status: u16,
    body: Vec<u8>,
}

impl HttpConnector for Canned {
    fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
        let response = Response::new(
            self.status.try_into().expect("valid status"),
            SdkBody::from(self.body.clone()),
        );
        HttpConnectorFuture::ready(Ok(response))
    }
}

impl HttpClient for Canned {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        // The SDK needs a timer (operation timeouts, retry back-off).
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let status = STATUSES[usize::from(pick) % STATUSES.len()];
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:9")
        .credentials_provider(Credentials::new("AKIDFUZZ", "fuzz", None, None, "fuzz"))
        .http_client(SharedHttpClient::new(Canned {
            status,
            body: body.to_vec(),
        }))
        // One attempt: retries would only replay the same bytes.
        .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled())
        .build();
    let client = aws_sdk_sts::Client::from_conf(config);
    runtime().block_on(async {
        let web = client
            .assume_role_with_web_identity()
            .role_arn("arn:aws:iam::000000000000:role/agentkeys-data-role")
            .role_session_name("agentkeys-fuzz")
            .web_identity_token("header.payload.signature")
            .duration_seconds(3600)
            .send()
            .await;
        if let Ok(out) = web {
            if let Some(c) = out.credentials() {
                let _ = (c.access_key_id(), c.secret_access_key(), c.session_token());
                let _ = c.expiration().fmt(aws_sdk_sts::primitives::DateTimeFormat::DateTime);
            }
        }
        if pick & 0x80 != 0 {
            let _ = client
                .assume_role()
                .role_arn("arn:aws:iam::000000000000:role/agentkeys-data-role")
                .role_session_name("agentkeys-fuzz")
                .send()
                .await;
        }
    });
});
