//! The HTTP surface: routes, content negotiation, the error mapping and the request
//! middleware (latency histogram, request timeout).

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::observe::ObserveLayer;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::{Bytes, BytesMut};
use shardflake_proto::error::retry_after_secs;
use shardflake_proto::node::{
    self as wire, HealthResponse, IdResponse, IdsResponse, ReadyResponse, BINARY_ID_BYTES,
    CONTENT_TYPE_BINARY, CONTENT_TYPE_JSON, CONTENT_TYPE_METRICS, CONTENT_TYPE_TEXT, IDS_COUNT_MAX,
};
use shardflake_proto::openapi::InspectResponse;
use shardflake_proto::{ApiError, ErrorCode};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod namespaces;

use crate::issue::{issue, Sink};
use crate::openapi::{
    openapi_json, BinaryIds, BodyErrors, IdErrors, IdsErrors, IdsQuery, InspectErrors, MetricsText,
    NodeApi, TextIds,
};
use crate::state::AppState;

/// A request that takes longer than this answers 503 `request_timeout`.
pub const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// The largest request body the node accepts: every endpoint is a `GET` and reads none, so
/// a request declaring a larger (or a chunked) body answers `413 payload_too_large`.
pub const REQUEST_BODY_BYTES_MAX: usize = 1_024;

/// The node's router: every endpoint, the JSON 404 and 405 answers, and the middleware that
/// times every request, refuses request bodies over [`REQUEST_BODY_BYTES_MAX`] and bounds
/// every request by [`REQUEST_TIMEOUT_MS`].
pub fn app(state: AppState) -> Router {
    let (router, _) = routes().split_for_parts();
    let router = if state.shared.gate.is_some() {
        // Only the id endpoints are gated (`gate` lets the others through).
        router.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::gate::gate,
        ))
    } else {
        // No client credential and no limit: requests pay nothing for the gate.
        router
    };
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(ObserveLayer {
            shared: state.shared.clone(),
            timeout: Duration::from_millis(REQUEST_TIMEOUT_MS),
        })
        .with_state(state)
}

/// Every route, each registered with its description (utoipa-axum's `routes!` reads the
/// path and the method from the handler's `#[utoipa::path]`): the router and the OpenAPI
/// description (`GET /openapi.json`) are one list, so neither can name a route the other
/// lacks. Add routes here, and only with `routes!`.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(<NodeApi as utoipa::OpenApi>::openapi())
        .routes(routes!(get_id))
        .routes(routes!(get_ids))
        .routes(routes!(get_inspect))
        .routes(routes!(get_healthz))
        .routes(routes!(get_readyz))
        .routes(routes!(get_metrics))
        .routes(routes!(get_openapi))
        .routes(routes!(namespaces::get_ns_id))
        .routes(routes!(namespaces::get_ns_ids))
}

fn bytes_response(content_type: &'static str, body: Bytes) -> Response {
    let mut r = Response::new(Body::from(body));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn id_response(id: u64) -> Response {
    let mut buf = Vec::with_capacity(64);
    wire::write_id_json(&mut buf, id);
    bytes_response(CONTENT_TYPE_JSON, Bytes::from(buf))
}

/// The answer to a request that ran longer than `timeout`.
pub(crate) fn timeout_response(timeout: Duration) -> Response {
    ApiError::new(
        ErrorCode::RequestTimeout,
        format!("the request took longer than {} ms", timeout.as_millis()),
    )
    .retry_after_ms(Some(1_000))
    .into_response()
}

/// The answer to a request whose body is over [`REQUEST_BODY_BYTES_MAX`].
pub(crate) fn payload_too_large_response() -> Response {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "request bodies are limited to {REQUEST_BODY_BYTES_MAX} bytes (no endpoint reads one)"
        ),
    )
    .into_response()
}

/// One id.
#[utoipa::path(
    get,
    path = wire::PATH_ID,
    tag = "ids",
    responses(
        (status = 200, description = "An id, as a number and as a decimal string.", body = IdResponse),
        IdErrors,
    )
)]
async fn get_id(State(state): State<AppState>) -> Response {
    let shared = &state.shared;
    if shared.inline_count_max.load(Ordering::Relaxed) >= 1 {
        // The hot path: one load of the generator handle, one compare-and-swap.
        if let Some(Ok(id)) = shared.source.load().as_ref().map(|s| s.next_id()) {
            shared.metrics.ids_id.inc();
            return id_response(id);
        }
    }
    match issue(shared, Sink::Ids(Vec::with_capacity(1)), 1).await {
        Ok(Sink::Ids(ids)) => {
            shared.metrics.ids_id.inc();
            id_response(ids[0])
        }
        Ok(Sink::Binary(_)) => unreachable!("asked for a Vec sink"),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// A representation of a batch of ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repr {
    Json,
    Binary,
    Text,
}

/// Picks the representation from `Accept`: the highest `q` wins, the earlier range on a tie;
/// no header means JSON; nothing acceptable is a 406.
fn negotiate(headers: &HeaderMap) -> Result<Repr, ApiError> {
    let Some(accept) = headers.get(ACCEPT) else {
        return Ok(Repr::Json);
    };
    let accept = accept
        .to_str()
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, "the Accept header is not ASCII"))?;
    let mut best: Option<(f32, Repr)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut q = 1.0f32;
        for p in parts {
            if let Some(v) = p.trim().strip_prefix("q=") {
                q = v.trim().parse().unwrap_or(0.0);
            }
        }
        let repr = match media.as_str() {
            "application/json" | "application/*" | "*/*" => Repr::Json,
            "application/octet-stream" => Repr::Binary,
            "text/plain" | "text/*" => Repr::Text,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, repr));
        }
    }
    best.map(|(_, r)| r).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotAcceptable,
            format!(
                "none of `{accept}` is available; /ids serves {CONTENT_TYPE_JSON}, \
                 {CONTENT_TYPE_BINARY} and text/plain"
            ),
        )
    })
}

/// Parses the query string of `GET /ids` (as sent, not percent-decoded; `None` when the URI
/// has no `?`) into the number of ids asked for: exactly one `count=N` with
/// `1 <= N <= IDS_COUNT_MAX`, or the error the request is answered with (`bad_request` for a
/// missing, repeated, unknown or non-numeric parameter, `count_out_of_range` for a whole
/// number out of range). Public so that the fuzz target `node_query` runs exactly this.
///
/// ```
/// use shardflake_node::parse_ids_query;
/// use shardflake_proto::ErrorCode;
///
/// assert_eq!(parse_ids_query(Some("count=5")).unwrap(), 5);
/// assert_eq!(parse_ids_query(Some("count=0")).unwrap_err().code, ErrorCode::CountOutOfRange);
/// assert_eq!(parse_ids_query(Some("n=5")).unwrap_err().code, ErrorCode::BadRequest);
/// assert_eq!(parse_ids_query(None).unwrap_err().code, ErrorCode::BadRequest);
/// ```
pub fn parse_ids_query(query: Option<&str>) -> Result<usize, ApiError> {
    let mut count = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "count" {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("unknown query parameter `{key}`; /ids takes only `count`"),
            ));
        }
        if count.is_some() {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "`count` is given more than once",
            ));
        }
        count = Some(value);
    }
    let Some(text) = count else {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("the query parameter `count` (1..={IDS_COUNT_MAX}) is required"),
        ));
    };
    // Digits only: Rust's integer parser also takes a leading `+`, which the description's
    // unsigned integer does not allow.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "count=`{}` is not a whole number",
                text.chars().take(32).collect::<String>()
            ),
        ));
    }
    // Only a number too large for a u64 fails here.
    let n: u64 = text.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::CountOutOfRange,
            format!("count={text} is out of range 1..={IDS_COUNT_MAX}"),
        )
    })?;
    if !(1..=IDS_COUNT_MAX).contains(&n) {
        return Err(ApiError::new(
            ErrorCode::CountOutOfRange,
            format!("count={n} is out of range 1..={IDS_COUNT_MAX}"),
        ));
    }
    Ok(n as usize)
}

/// A batch of ids, increasing, from one generator.
///
/// The representation follows `Accept`: JSON (the default, and for `*/*`), packed 8-byte
/// big-endian ids (`application/octet-stream`) or one decimal id per line (`text/plain`);
/// the highest `q` wins, the earlier range on a tie.
#[utoipa::path(
    get,
    path = wire::PATH_IDS,
    tag = "ids",
    params(IdsQuery),
    responses(
        (status = 200, description = "`count` ids, increasing.", content(
            (IdsResponse = "application/json"),
            (BinaryIds = "application/octet-stream"),
            (TextIds = "text/plain"),
        )),
        IdsErrors,
    )
)]
async fn get_ids(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let count = parse_ids_query(query.as_deref())?;
    let repr = negotiate(&headers)?;
    let shared = &state.shared;
    let sink = match repr {
        Repr::Binary => Sink::Binary(BytesMut::with_capacity(count * BINARY_ID_BYTES)),
        Repr::Json | Repr::Text => Sink::Ids(Vec::with_capacity(count)),
    };
    let sink = issue(shared, sink, count).await.map_err(ApiError::from)?;
    shared.metrics.ids_ids.inc_by(count as u64);
    Ok(match sink {
        Sink::Binary(b) => bytes_response(CONTENT_TYPE_BINARY, b.freeze()),
        Sink::Ids(ids) if repr == Repr::Text => {
            let mut out = Vec::with_capacity(ids.len() * 21);
            wire::write_ids_text(&mut out, &ids);
            bytes_response(CONTENT_TYPE_TEXT, Bytes::from(out))
        }
        Sink::Ids(ids) => {
            let mut out = Vec::with_capacity(wire::ids_json_len_max(ids.len()));
            wire::write_ids_json(&mut out, &ids);
            bytes_response(CONTENT_TYPE_JSON, Bytes::from(out))
        }
    })
}

/// An id decoded by the node's layout: its time and every field.
#[utoipa::path(
    get,
    path = "/inspect/{id}",
    tag = "ids",
    params(("id" = u64, Path, description = "A decimal 64-bit id.")),
    responses(
        (status = 200, description = "The id's fields; byte for byte `shardflake inspect --json`.", body = InspectResponse),
        InspectErrors,
    )
)]
async fn get_inspect(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let shown: String = id.chars().take(32).collect();
    let n: u64 = id.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidId,
            format!("`{shown}` is not a decimal 64-bit id"),
        )
    })?;
    let Some(layout) = state.shared.layout() else {
        return Err(ApiError::new(
            ErrorCode::LeaseLost,
            "the cluster's layout is not known yet: no coordinator has answered",
        )
        .retry_after_ms(Some(1_000)));
    };
    let decoded = layout
        .decode(n)
        .map_err(|e| ApiError::new(ErrorCode::InvalidId, e.to_string()))?;
    let body = wire::inspect_json(layout, &decoded);
    Ok(bytes_response(CONTENT_TYPE_JSON, Bytes::from(body)))
}

/// Liveness: any answer means the process runs.
#[utoipa::path(
    get,
    path = wire::PATH_HEALTHZ,
    tag = "operations",
    responses(
        (status = 200, description = "Always `{\"status\": \"ok\"}`.", body = HealthResponse),
        BodyErrors,
    )
)]
async fn get_healthz() -> Response {
    let body = serde_json::to_vec(&HealthResponse {
        status: "ok".into(),
    })
    .expect("health serializes");
    bytes_response(CONTENT_TYPE_JSON, Bytes::from(body))
}

/// Readiness: would a request for ids be served now, and if not, why.
#[utoipa::path(
    get,
    path = wire::PATH_READYZ,
    tag = "operations",
    responses(
        (status = 200, description = "The node may issue ids now.", body = ReadyResponse),
        BodyErrors,
        (status = 503, description = "The node issues nothing now; `error` says why, with the \
            code a request for ids would get.", body = ReadyResponse,
            headers(("Retry-After" = u64, description = "Seconds to wait, when waiting helps (at least 1)."))),
    )
)]
async fn get_readyz(State(state): State<AppState>) -> Response {
    let shared = &state.shared;
    let ready = shared.readiness();
    let body = serde_json::to_vec(&ready).expect("readiness serializes");
    let mut r = bytes_response(CONTENT_TYPE_JSON, Bytes::from(body));
    if !ready.ready {
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        if let Err(nr) = shared.check_ready() {
            if let Some(ms) = nr.retry_after_ms {
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(ms)));
            }
        }
    }
    r
}

/// Metrics for Prometheus.
#[utoipa::path(
    get,
    path = wire::PATH_METRICS,
    tag = "operations",
    responses(
        (status = 200, description = "Every series, prefixed `shardflake_`.", body = MetricsText,
            content_type = CONTENT_TYPE_METRICS),
        BodyErrors,
    )
)]
async fn get_metrics(State(state): State<AppState>) -> Response {
    let shared = &state.shared;
    let text = shared.metrics.render(&shared.snapshot());
    bytes_response(CONTENT_TYPE_METRICS, Bytes::from(text))
}

/// This description: OpenAPI 3.1, generated from the router.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "The node's OpenAPI 3.1 description.", body = serde_json::Value,
            content_type = CONTENT_TYPE_JSON),
        BodyErrors,
    )
)]
async fn get_openapi() -> Response {
    bytes_response(CONTENT_TYPE_JSON, Bytes::from_static(openapi_json()))
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!(
            "no endpoint at {}; endpoints: /id, /ids?count=N, /inspect/{{id}}, /healthz, \
             /readyz, /metrics, /openapi.json",
            req.uri().path()
        ),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> Result<Repr, ApiError> {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_str(v).unwrap());
        negotiate(&h)
    }

    #[test]
    fn content_negotiation() {
        assert_eq!(negotiate(&HeaderMap::new()).unwrap(), Repr::Json);
        assert_eq!(accept("application/octet-stream").unwrap(), Repr::Binary);
        assert_eq!(accept("text/plain").unwrap(), Repr::Text);
        assert_eq!(accept("*/*").unwrap(), Repr::Json);
        assert_eq!(
            accept("text/plain;q=0.5, application/octet-stream").unwrap(),
            Repr::Binary
        );
        assert_eq!(
            accept("application/octet-stream;q=0, text/*").unwrap(),
            Repr::Text
        );
        assert_eq!(
            accept("image/png").unwrap_err().code,
            ErrorCode::NotAcceptable
        );
    }

    #[test]
    fn count_parsing() {
        assert_eq!(parse_ids_query(Some("count=5")).unwrap(), 5);
        assert_eq!(parse_ids_query(Some("count=100000")).unwrap(), 100_000);
        for (q, code) in [
            (None, ErrorCode::BadRequest),
            (Some("count=0"), ErrorCode::CountOutOfRange),
            (Some("count=100001"), ErrorCode::CountOutOfRange),
            (
                Some("count=99999999999999999999999"),
                ErrorCode::CountOutOfRange,
            ),
            (Some("count=-1"), ErrorCode::BadRequest),
            // Regression: `+5` was taken as 5, though the description says an unsigned
            // integer; a sign is refused like any other malformed number.
            (Some("count=+5"), ErrorCode::BadRequest),
            (Some("count=%2B5"), ErrorCode::BadRequest),
            (Some("count="), ErrorCode::BadRequest),
            (Some("count=abc"), ErrorCode::BadRequest),
            (Some("count=1&count=2"), ErrorCode::BadRequest),
            (Some("count=1&x=2"), ErrorCode::BadRequest),
        ] {
            assert_eq!(parse_ids_query(q).unwrap_err().code, code, "{q:?}");
        }
    }

    /// Regression (a batch that waited for the reservation could continue with the next
    /// lease's generator, mixing two host ids in one response): a response comes from one
    /// generator.
    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_never_mixes_two_generators() {
        use std::sync::Arc;

        use shardflake::{Layout, ManualClock, Reservation, SnowflakeGenerator};

        use crate::config::{NodeConfig, NodeOptions};
        use crate::source::{Generator, IdSource};
        use crate::standalone::RESERVE_WINDOW_MS;
        use crate::state::AppState;

        const NOW_MS: u64 = 1_790_000_000_000;
        let dir = tempfile::tempdir().unwrap();
        let args = NodeOptions {
            machine_id: Some(1),
            state_dir: dir.path().into(),
            ..NodeOptions::default()
        };
        let clock = ManualClock::new(NOW_MS);
        let state = AppState::open_with_clock(
            NodeConfig::from_options(&args, NOW_MS).unwrap(),
            Arc::new(clock.clone()),
        )
        .unwrap();
        // The reservation ends RESERVE_WINDOW_MS from now and no keeper runs: a batch that
        // starts just before the end takes what is left, then waits for an extension.
        clock.set_ms(NOW_MS + RESERVE_WINDOW_MS - 1);
        let shared = state.shared.clone();
        let request =
            tokio::spawn(async move { issue(&shared, Sink::Ids(Vec::new()), 10_000).await });
        tokio::task::yield_now().await;
        assert!(
            !request.is_finished(),
            "the batch waits for the reservation"
        );
        // Meanwhile the generator is replaced (in a cluster: a new lease, another host id).
        let reservation = Arc::new(Reservation::new(Arc::new(shardflake::NoReserver), 0));
        reservation.extend_to(u64::MAX / 2);
        let other = SnowflakeGenerator::builder(Layout::preset("twitter").unwrap())
            .node("datacenter", 0)
            .node("worker", 9)
            .clock(Arc::new(clock.clone()) as crate::source::DynClock)
            .policy(shardflake::ClockPolicy::Fail)
            .reservation(reservation)
            .build()
            .unwrap();
        state
            .shared
            .source
            .store(Some(Arc::new(IdSource::standalone(Generator::Snowflake(
                other,
            )))));
        state.shared.extended.notify_waiters();
        let Ok(Sink::Ids(ids)) = request.await.unwrap() else {
            panic!("the batch failed");
        };
        let layout = Layout::preset("twitter").unwrap();
        let workers: std::collections::BTreeSet<u64> = ids
            .iter()
            .map(|id| layout.decode(*id).unwrap().field("worker").unwrap())
            .collect();
        assert_eq!(
            workers.len(),
            1,
            "one response, one generator: workers {workers:?}"
        );
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids increase within a response"
        );
        assert_eq!(ids.len(), 10_000);
    }
}
