//! The layer in front of every route: refuses a body whose declared length is over the
//! limit (413 before any of it is read) and records each request in the metrics.
//!
//! One hand-written layer with an unboxed future: `axum::middleware::from_fn` clones the
//! inner service and boxes a future per request, which showed in the mint path's profile.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::http::error::ApiError;
use crate::metrics::{Metrics, Route};

/// Builds [`Front`] around each route.
#[derive(Clone)]
pub struct FrontLayer {
    body_limit: usize,
    metrics: Arc<Metrics>,
}

impl FrontLayer {
    /// Bodies declared longer than `body_limit` bytes are refused; every answer is
    /// recorded in `metrics`.
    pub fn new(body_limit: usize, metrics: Arc<Metrics>) -> FrontLayer {
        FrontLayer {
            body_limit,
            metrics,
        }
    }
}

impl<S> Layer<S> for FrontLayer {
    type Service = Front<S>;

    fn layer(&self, inner: S) -> Front<S> {
        Front {
            inner,
            body_limit: self.body_limit,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`FrontLayer`] builds.
#[derive(Clone)]
pub struct Front<S> {
    inner: S,
    body_limit: usize,
    metrics: Arc<Metrics>,
}

/// True when `Content-Length` declares more than `limit` bytes. An absent or unreadable
/// length is left to the body limit, which counts the bytes as they come.
fn declares_oversize(request: &Request, limit: usize) -> bool {
    request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|declared| declared > limit as u64)
}

impl<S> Service<Request> for Front<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = FrontFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> FrontFuture<S::Future> {
        let route = Route::of_path(request.uri().path());
        let started = Instant::now();
        let answer = if declares_oversize(&request, self.body_limit) {
            let limit = self.body_limit;
            Answer::Refused {
                response: Some(ApiError::PayloadTooLarge { limit }.into_response()),
            }
        } else {
            Answer::Route {
                future: self.inner.call(request),
            }
        };
        FrontFuture {
            answer,
            route,
            started,
            metrics: self.metrics.clone(),
        }
    }
}

pin_project! {
    /// Where the answer comes from.
    #[project = AnswerProjection]
    enum Answer<F> {
        /// The route's own answer.
        Route { #[pin] future: F },
        /// The 413, until it is returned.
        Refused { response: Option<Response> },
    }
}

pin_project! {
    /// The answer of the route (or the 413), recorded in the metrics when it is ready.
    pub struct FrontFuture<F> {
        #[pin]
        answer: Answer<F>,
        route: Route,
        started: Instant,
        metrics: Arc<Metrics>,
    }
}

impl<F> Future for FrontFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.answer.project() {
            AnswerProjection::Route { future } => match future.poll(cx) {
                Poll::Ready(Ok(response)) => response,
                Poll::Pending => return Poll::Pending,
            },
            AnswerProjection::Refused { response } => match response.take() {
                Some(response) => response,
                // Polled again after the 413 was returned: nothing left to answer with.
                None => ApiError::Internal("request answered twice".to_owned()).into_response(),
            },
        };
        this.metrics.record(
            *this.route,
            response.status().as_u16(),
            this.started.elapsed(),
        );
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::{Body, Bytes};
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    const LIMIT: usize = 16;

    fn app(metrics: Arc<Metrics>) -> Router {
        Router::new()
            .route(
                "/v1/mint-oidc-jwt",
                post(|b: Bytes| async move { b.len().to_string() }),
            )
            .layer(FrontLayer::new(LIMIT, metrics))
    }

    fn post_with_length(length: &str, body: Body) -> Request {
        axum::http::Request::post("/v1/mint-oidc-jwt")
            .header(header::CONTENT_LENGTH, length)
            .body(body)
            .unwrap()
    }

    #[tokio::test]
    async fn declared_oversize_body_is_413_before_reading() {
        let metrics = Arc::new(Metrics::default());
        // The body would never end: only the declared length is looked at.
        let (_tx, body) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let stream = futures::stream::unfold(body, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let request = post_with_length("1000000000000", Body::from_stream(stream));
        let response = tokio::time::timeout(
            Duration::from_secs(5),
            app(metrics.clone()).oneshot(request),
        )
        .await
        .expect("answered without reading the body")
        .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(metrics.count(Route::MintJwt, 413), 1);
    }

    #[tokio::test]
    async fn a_length_at_the_limit_reaches_the_route_and_is_counted() {
        let metrics = Arc::new(Metrics::default());
        let request = post_with_length("16", Body::from("0123456789abcdef"));
        let response = app(metrics.clone()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(metrics.count(Route::MintJwt, 200), 1);
        assert_eq!(metrics.count(Route::MintJwt, 413), 0);
    }

    #[tokio::test]
    async fn an_unreadable_length_is_left_to_the_route() {
        let metrics = Arc::new(Metrics::default());
        let request = post_with_length("sixteen", Body::from("abcd"));
        let response = app(metrics.clone()).oneshot(request).await.unwrap();
        assert_ne!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(metrics.count(Route::MintJwt, 413), 0);
    }

    #[tokio::test]
    async fn unknown_paths_are_counted_as_other() {
        let metrics = Arc::new(Metrics::default());
        let request = axum::http::Request::get("/nope")
            .body(Body::empty())
            .unwrap();
        let response = app(metrics.clone()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(metrics.count(Route::Other, 404), 1);
    }
}
