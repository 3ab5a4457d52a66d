//! The request middleware: a latency histogram per route, error counts by code, and the
//! request timeout.
//!
//! Hand-written rather than `axum::middleware::from_fn` because it runs on every request:
//! `from_fn` boxes two futures and clones a boxed service per call, and a `tokio::time`
//! timeout clones the runtime handle to arm its timer. Here the future is the inner one plus
//! two fields, and the timer is created only if the inner future does not finish on its
//! first poll — which `GET /id` always does.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use shardflake_proto::ErrorCode;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::http::REQUEST_BODY_BYTES_MAX;
use crate::metrics::Route;
use crate::state::Shared;

/// Adds [`Observe`] around a service.
#[derive(Clone)]
pub(crate) struct ObserveLayer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) timeout: Duration,
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            shared: self.shared.clone(),
            timeout: self.timeout,
        }
    }
}

/// Times every request, counts error codes, and answers `503 request_timeout` for requests
/// that run longer than the timeout.
#[derive(Clone)]
pub(crate) struct Observe<S> {
    inner: S,
    shared: Arc<Shared>,
    timeout: Duration,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route = Route::of(req.uri().path());
        let started = Instant::now();
        // Every endpoint is a GET that reads no body; a body is refused before routing
        // rather than left unread (axum's DefaultBodyLimit only limits extractors, and
        // costs a map insert per request).
        let too_large = body_too_large(&req);
        ObserveFuture {
            inner: if too_large.is_none() {
                Some(self.inner.call(req))
            } else {
                None
            },
            early: too_large,
            timer: None,
            started,
            route,
            timeout: self.timeout,
            shared: self.shared.clone(),
        }
    }
}

pin_project! {
    /// The future of [`Observe`].
    pub(crate) struct ObserveFuture<F> {
        #[pin]
        inner: Option<F>,
        early: Option<Response>,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        started: Instant,
        route: Route,
        timeout: Duration,
        shared: Arc<Shared>,
    }
}

impl<F, E> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            let response = this.early.take().expect("polled after completion");
            let code = response.extensions().get::<ErrorCode>().copied();
            this.shared
                .metrics
                .observe_request(*this.route, this.started.elapsed(), code);
            return Poll::Ready(Ok(response));
        };
        let response = match inner.poll(cx) {
            Poll::Ready(Ok(r)) => r,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {
                let deadline = *this.started + *this.timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                crate::http::timeout_response(*this.timeout)
            }
        };
        let code = response.extensions().get::<ErrorCode>().copied();
        this.shared
            .metrics
            .observe_request(*this.route, this.started.elapsed(), code);
        Poll::Ready(Ok(response.into_response()))
    }
}

/// A `413 payload_too_large` answer if the request declares a body larger than
/// [`REQUEST_BODY_BYTES_MAX`] or a chunked one (whose size is unknown up front).
fn body_too_large(req: &Request) -> Option<Response> {
    let headers = req.headers();
    let declared = headers
        .get(CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|s| s.parse::<u64>().ok()));
    let too_large = match declared {
        None => headers.contains_key(TRANSFER_ENCODING),
        Some(Some(n)) => n > REQUEST_BODY_BYTES_MAX as u64,
        Some(None) => true,
    };
    too_large.then(crate::http::payload_too_large_response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NodeConfig, NodeOptions};
    use crate::state::AppState;
    use axum::body::Body;
    use std::convert::Infallible;
    use tower::ServiceExt;

    #[tokio::test(start_paused = true)]
    async fn a_request_past_the_timeout_answers_503_request_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let args = NodeOptions {
            state_dir: dir.path().into(),
            ..NodeOptions::default()
        };
        let state =
            AppState::open(NodeConfig::from_options(&args, 1_790_000_000_000).unwrap()).unwrap();
        let layer = ObserveLayer {
            shared: state.shared.clone(),
            timeout: Duration::from_millis(5_000),
        };
        let never = tower::service_fn(|_req: Request| async {
            std::future::pending::<()>().await;
            Ok::<Response, Infallible>(Response::new(Body::empty()))
        });
        let req = Request::get("/id").body(Body::empty()).unwrap();
        // Paused time: the runtime jumps to the timer's deadline once everything is idle.
        let r = layer.layer(never).oneshot(req).await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(
            r.extensions().get::<ErrorCode>(),
            Some(&ErrorCode::RequestTimeout)
        );
        let snap = state.shared.snapshot();
        let text = state.shared.metrics.render(&snap);
        assert!(text.contains("shardflake_http_errors_total{code=\"request_timeout\"} 1"));
        assert!(text.contains(
            "shardflake_http_request_duration_seconds_bucket{le=\"5.0\",route=\"/id\"} 1"
        ));
    }
}
