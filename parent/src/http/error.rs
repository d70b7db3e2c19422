//! The API error type and its one mapping to HTTP status codes and the
//! `{"error": kind, "message": ...}` body (`docs/api.md`, "Errors").

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Every way an API request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request body or a parameter is not acceptable.
    #[error("{0}")]
    BadRequest(String),
    /// The body exceeds the configured limit.
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The request body did not arrive within the body read timeout.
    #[error("request body not received within {} ms of the headers; send the whole body without pauses", .after.as_millis())]
    RequestTimeout {
        /// The configured body read timeout.
        after: std::time::Duration,
    },
    /// No `Authorization: Bearer` header, or an unusable one.
    #[error("{0}")]
    MissingBearer(&'static str),
    /// The session backend refused the bearer.
    #[error("the session backend rejected the bearer")]
    BearerRejected,
    /// The session backend failed or answered something unexpected.
    #[error("session backend: {0}")]
    Backend(String),
    /// STS refused or failed; `code` is the STS error code.
    #[error("STS {code}: {message}")]
    Sts {
        /// STS error code (e.g. `InvalidIdentityToken`), or a transport class.
        code: String,
        /// STS message.
        message: String,
    },
    /// The enclave is not unsealed or not reachable.
    #[error("enclave not ready: {0}")]
    EnclaveUnavailable(String),
    /// The enclave refused the request (e.g. an invalid wallet from the backend).
    #[error("enclave refused the request: {0}")]
    EnclaveRefused(String),
    /// The enclave refused the caller's proof of its wallet (session token or sign-in
    /// message): no token was signed.
    #[error("the enclave refused the proof of the wallet: {0}")]
    ProofRefused(String),
    /// The sign-in fields of the body are malformed.
    #[error("{0}")]
    BadSignIn(String),
    /// Too many mints whose clients left are still finishing: new mints wait until they
    /// have drained, so that such clients cannot pile up unbounded work.
    #[error("{running} mints whose clients disconnected are still finishing (limit {limit}); retry in a moment")]
    Overloaded {
        /// Mints still finishing without a client.
        running: usize,
        /// The most allowed before new mints are refused.
        limit: usize,
    },
    /// The audit row could not be made durable: nothing is returned.
    #[error("audit log write failed; nothing was issued: {0}")]
    Audit(String),
    /// The audit database cannot be reached (it is down or restarting): nothing is
    /// returned, and the broker reconnects by itself.
    #[error("audit database unreachable; nothing was issued: {0}")]
    AuditUnreachable(String),
    /// Unknown route.
    #[error("no such route")]
    NotFound,
    /// Any other internal failure.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The error a request body yields when it is not complete within the body read timeout
/// (see [`crate::http::listener::DeadlineBody`]); handlers turn it into [`ApiError::RequestTimeout`].
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
#[error("request body not received within {} ms", .after.as_millis())]
pub struct BodyReadTimeout {
    /// The configured body read timeout.
    pub after: std::time::Duration,
}

impl BodyReadTimeout {
    /// Finds a [`BodyReadTimeout`] in `err` or its chain of sources (body errors reach
    /// handlers wrapped in axum's rejections).
    pub fn find(err: &(dyn std::error::Error + 'static)) -> Option<BodyReadTimeout> {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(t) = e.downcast_ref::<BodyReadTimeout>() {
                return Some(*t);
            }
            cur = e.source();
        }
        None
    }
}

impl ApiError {
    /// The answer to a mint whose audit row could not be made durable: 503 while the
    /// audit database is unreachable, 500 otherwise.
    pub fn from_audit(e: &crate::audit::AuditError) -> ApiError {
        match e {
            crate::audit::AuditError::Unreachable { .. } => {
                ApiError::AuditUnreachable(e.to_string())
            }
            other => ApiError::Audit(other.to_string()),
        }
    }

    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::MissingBearer(_) | ApiError::BearerRejected | ApiError::ProofRefused(_) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::BadSignIn(_) => StatusCode::BAD_REQUEST,
            ApiError::Backend(_) | ApiError::Sts { .. } | ApiError::EnclaveRefused(_) => {
                StatusCode::BAD_GATEWAY
            }
            ApiError::EnclaveUnavailable(_)
            | ApiError::Overloaded { .. }
            | ApiError::AuditUnreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Audit(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::NotFound => StatusCode::NOT_FOUND,
        }
    }

    /// Machine-readable error kind (the `error` member).
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::RequestTimeout { .. } => "request_timeout",
            ApiError::MissingBearer(_) | ApiError::BearerRejected => "unauthorized",
            ApiError::ProofRefused(_) => "proof_refused",
            ApiError::BadSignIn(_) => "bad_request",
            ApiError::Backend(_) => "backend_error",
            ApiError::Sts { .. } => "sts_error",
            ApiError::EnclaveUnavailable(_) => "enclave_unavailable",
            ApiError::EnclaveRefused(_) => "enclave_error",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::Audit(_) => "audit_failure",
            ApiError::AuditUnreachable(_) => "audit_unavailable",
            ApiError::NotFound => "not_found",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Both pass by themselves: the caller may retry in a moment.
        let overloaded = matches!(
            self,
            ApiError::Overloaded { .. } | ApiError::AuditUnreachable(_)
        );
        let body = serde_json::json!({"error": self.kind(), "message": self.to_string()});
        let mut response = (status, body.to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body may still be arriving: do not reuse the connection.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if overloaded {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::BadRequest("x".into()), 400, "bad_request"),
            (
                ApiError::PayloadTooLarge { limit: 1 },
                413,
                "payload_too_large",
            ),
            (
                ApiError::RequestTimeout {
                    after: std::time::Duration::from_secs(10),
                },
                408,
                "request_timeout",
            ),
            (ApiError::MissingBearer("m"), 401, "unauthorized"),
            (ApiError::BearerRejected, 401, "unauthorized"),
            (
                ApiError::ProofRefused("expired".into()),
                401,
                "proof_refused",
            ),
            (ApiError::BadSignIn("x".into()), 400, "bad_request"),
            (ApiError::Backend("x".into()), 502, "backend_error"),
            (
                ApiError::Sts {
                    code: "InvalidIdentityToken".into(),
                    message: "m".into(),
                },
                502,
                "sts_error",
            ),
            (
                ApiError::EnclaveUnavailable("x".into()),
                503,
                "enclave_unavailable",
            ),
            (
                ApiError::Overloaded {
                    running: 4096,
                    limit: 4096,
                },
                503,
                "overloaded",
            ),
            (ApiError::Audit("x".into()), 500, "audit_failure"),
            (
                ApiError::AuditUnreachable("x".into()),
                503,
                "audit_unavailable",
            ),
            (ApiError::NotFound, 404, "not_found"),
        ];
        for (e, status, kind) in cases {
            assert_eq!(e.status().as_u16(), status);
            assert_eq!(e.kind(), kind);
        }
    }

    #[test]
    fn overloaded_says_when_to_retry() {
        let e = ApiError::Overloaded {
            running: 4100,
            limit: 4096,
        };
        assert!(e.to_string().contains("4100"), "{e}");
        assert!(e.to_string().contains("retry"), "{e}");
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn other_errors_carry_no_retry_after() {
        let r = ApiError::EnclaveUnavailable("sealed".into()).into_response();
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn request_timeout_says_what_to_do_and_closes() {
        let e = ApiError::RequestTimeout {
            after: std::time::Duration::from_millis(10_000),
        };
        assert!(e.to_string().contains("10000 ms"), "{e}");
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(r.headers()[header::CONNECTION], "close");
    }

    #[test]
    fn sts_message_names_code() {
        let e = ApiError::Sts {
            code: "ExpiredTokenException".into(),
            message: "expired".into(),
        };
        assert!(e.to_string().contains("ExpiredTokenException"));
    }
}
