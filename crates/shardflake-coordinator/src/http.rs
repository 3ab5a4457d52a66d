//! The coordinator's HTTP API (axum); the wire types are in [`shardflake_proto::coord`].

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use shardflake_proto::audit::AuditReport;
use shardflake_proto::auth::Scope;
use shardflake_proto::coord::{
    AcquireRequest, BlockGrant, BlockRequest, ClusterInfo, HostsResponse, LeaseGrant,
    ReleaseRequest, RenewRequest, RenewResponse, RepairReport, RepairRequest, ReservationRequest,
    ReservationResponse, StandbyWaitRequest, StandbyWaitResponse, STORE_ID_HEADER,
};
use shardflake_proto::generation::{GenerationStamp, GENERATION_HEADER};
use shardflake_proto::node::{CONTENT_TYPE_JSON, CONTENT_TYPE_METRICS};
use shardflake_proto::{ApiError, ErrorCode};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod auth;
mod namespaces;

use crate::audit;
use crate::coordinator::Coordinator;
use crate::error::CoordError;
use crate::leases::Granted;
use crate::metrics::Scrape;
pub use crate::openapi::openapi;
use crate::openapi::{
    openapi_json, AcquireErrors, BlockErrors, HealthText, HostId, LeaseErrors, MetricsText,
    OpenErrors, ReadErrors, ReadyText, ReleaseErrors, RenewErrors, RepairErrors, StandbyErrors,
};
use crate::store::StoreHealth;
pub(crate) use auth::Caller;
use auth::Limiters;
pub use auth::{
    Auth, RateLimits, ADMIN_PER_S_DEFAULT, AUTH_FAILURES_PER_S_DEFAULT, NODE_PER_S_DEFAULT,
    READ_PER_S_DEFAULT,
};

/// Largest request body accepted, in bytes (the protocol's limit, which holds a renewal
/// reporting on every namespace a node may serve).
pub const BODY_BYTES_MAX: usize = shardflake_proto::coord::REQUEST_BODY_BYTES_MAX;
/// Requests served at once (standby long polls included); beyond it, `503` at once.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 4_096;

/// What the handlers share. One `Arc`: every middleware layer and handler takes a clone per
/// request, so a clone is one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The fields of [`AppState`].
pub struct Shared {
    coordinator: Arc<Coordinator>,
    store_id: header::HeaderValue,
    auth: Auth,
    limiters: Arc<Limiters>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// Handlers over `coordinator`, authenticating by `auth` with the default rate limits.
    pub fn new(coordinator: Arc<Coordinator>, auth: Auth) -> Self {
        Self::with_limits(coordinator, auth, RateLimits::default())
    }

    /// Handlers over `coordinator`, authenticating by `auth`, each credential held to
    /// `limits`.
    pub fn with_limits(coordinator: Arc<Coordinator>, auth: Auth, limits: RateLimits) -> Self {
        let store_id = header::HeaderValue::from_str(coordinator.store_id())
            .expect("a store id is a UUID, a valid header value");
        Self(Arc::new(Shared {
            coordinator,
            store_id,
            auth,
            limiters: Arc::new(Limiters::new(limits)),
            in_flight: Arc::new(tokio::sync::Semaphore::new(REQUESTS_IN_FLIGHT_MAX)),
        }))
    }

    /// The coordinator behind the handlers.
    pub fn coordinator(&self) -> &Arc<Coordinator> {
        &self.coordinator
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// A JSON body whose rejections are [`ApiError`]s.
struct ApiJson<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .is_some_and(|m| m == "application/json" || m.ends_with("+json"));
        if !json_type {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "Expected request with `Content-Type: application/json`",
            ));
        }
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::new(ErrorCode::PayloadTooLarge, r.body_text()))
            }
            Err(r) => return Err(ApiError::new(ErrorCode::BadRequest, r.body_text())),
        };
        // Every body is a JSON object: serde would also take a struct from an array of its
        // fields (`[null, null]`), which the API does not describe.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "the request body must be a JSON object",
            ));
        }
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    let code = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ErrorCode::PayloadTooLarge
    } else {
        ErrorCode::BadRequest
    };
    ApiError::new(code, r.body_text())
}

/// The `{host_id}` path segment, parsed; every refusal, axum's own path rejections included
/// (a segment that is not UTF-8), is an [`ApiError`].
struct HostPath(u32);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for HostPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(raw)) => parse_host(&raw).map(HostPath),
            Err(r) => Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("host id: {}", r.body_text()),
            )),
        }
    }
}

fn parse_host(raw: &str) -> Result<u32, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("host id `{raw}` is not a number in 0..=4294967295"),
        )
    })
}

/// Stamps every response with the store's identity, so that a client can tell two stores
/// apart and never fail over from one to the other.
async fn store_id(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .insert(STORE_ID_HEADER, state.store_id.clone());
    resp
}

/// Checks the caller's generation stamp, if it sent one: a stamp this store did not mint is
/// `400`, one above the store's generation means the store went back (`503
/// store_restored`). Runs after authentication: only callers with a credential make the
/// coordinator look.
async fn check_generation(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(v) = req.headers().get(GENERATION_HEADER) {
        let claim = match v
            .to_str()
            .map_err(|e| e.to_string())
            .and_then(GenerationStamp::parse)
        {
            Ok(c) => c,
            Err(e) => return ApiError::new(ErrorCode::BadRequest, e).into_response(),
        };
        match state.coordinator.check_generation(&claim).await {
            Ok(()) => {}
            // The handler keeps what the caller presents (the bound it holds, the newest
            // namespace block it holds) as floors for the repair, then refuses the same way:
            // every grant is refused while the store is restored.
            Err(CoordError::StoreRestored { .. }) if presents_floors(&req) => {}
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    next.run(req).await
}

/// Whether `req` presents what its caller holds, for the repair of a restored store: a
/// renewal, a reservation extension, a namespace block request or return.
fn presents_floors(req: &Request) -> bool {
    if req.method() != axum::http::Method::POST {
        return false;
    }
    let parts: Vec<&str> = req.uri().path().split('/').collect();
    matches!(
        parts.as_slice(),
        ["", "v1", "leases", _, "renew" | "reservation"]
            | ["", "v1", "namespaces", _, "blocks" | "return"]
    )
}

/// Stamps every response with the store's generation, as it stands after the request.
async fn stamp_generation(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let stamp = state.coordinator.generation_stamp().to_string();
    if let Ok(v) = header::HeaderValue::from_str(&stamp) {
        resp.headers_mut().insert(GENERATION_HEADER, v);
    }
    resp
}

async fn count_errors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let resp = match state.in_flight.clone().try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => ApiError::new(
            ErrorCode::StoreUnavailable,
            format!("{REQUESTS_IN_FLIGHT_MAX} requests in flight; retry"),
        )
        .into_response(),
    };
    // Every error response is an `ApiError`, which leaves its code in the extensions.
    if let Some(code) = resp.extensions().get::<ErrorCode>() {
        state.coordinator.metrics().count_error(*code);
    }
    resp
}

/// Leases a host id: the one asked for, the preferred one if free, else the lowest free
/// one, with a fencing token larger than every earlier one.
#[utoipa::path(
    post,
    path = "/v1/leases",
    tag = "leases",
    security(("bearer" = ["node"])),
    request_body = AcquireRequest,
    responses(
        (status = 200, description = "The lease, persisted before this answer.", body = LeaseGrant,
            links(
                ("renew" = (operation_id = "renew",
                    parameters(("host_id" = "$response.body#/host_id")),
                    request_body = json!({"token": "$response.body#/token", "secret": "$request.body#/secret"}),
                    description = "Renew the lease under its host id, token and the secret the acquire sent.")),
                ("reservation" = (operation_id = "reservation",
                    parameters(("host_id" = "$response.body#/host_id")),
                    request_body = json!({"token": "$response.body#/token", "secret": "$request.body#/secret", "until_ms": "$response.body#/reserved_until_ms"}),
                    description = "Extend the lease's reservation.")),
                ("release" = (operation_id = "release",
                    parameters(("host_id" = "$response.body#/host_id")),
                    request_body = json!({"token": "$response.body#/token", "secret": "$request.body#/secret"}),
                    description = "Give the host id back.")),
                ("blocks" = (operation_id = "blocks",
                    request_body = json!({"host_id": "$response.body#/host_id", "token": "$response.body#/token", "secret": "$request.body#/secret", "shard": 0, "after_counter": 0}),
                    description = "A counter block under the lease (temporal layouts).")),
            )),
        AcquireErrors,
    )
)]
async fn acquire(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<AcquireRequest>,
) -> Result<Response, ApiError> {
    let (grant, granted) = s.coordinator.acquire_granting(&req).await?;
    if let Granted::New { previous_token } = granted {
        audit::lease_granted(&caller, &grant, &req.name, previous_token);
    }
    Ok((StatusCode::OK, Json(grant)).into_response())
}

/// Renews a lease; may extend its reservation and (temporal) report usage in the same commit.
#[utoipa::path(
    post,
    path = "/v1/leases/{host_id}/renew",
    tag = "leases",
    security(("bearer" = ["node"])),
    params(HostId),
    request_body = RenewRequest,
    responses(
        (status = 200, description = "The lease runs one more TTL from the request's send time.", body = RenewResponse),
        RenewErrors,
    )
)]
async fn renew(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    HostPath(host_id): HostPath,
    ApiJson(req): ApiJson<RenewRequest>,
) -> Result<Response, ApiError> {
    let (answer, granted) = s.coordinator.renew_granting(host_id, &req).await?;
    if let Some(b) = answer.next_block.filter(|_| granted) {
        audit::counter_block(&caller, host_id, req.token, &b);
    }
    Ok(Json(answer).into_response())
}

/// Raises the reserved timestamp bound of a lease (clamped to the look-ahead limit; never
/// lowered).
#[utoipa::path(
    post,
    path = "/v1/leases/{host_id}/reservation",
    tag = "leases",
    security(("bearer" = ["node"])),
    params(HostId),
    request_body = ReservationRequest,
    responses(
        (status = 200, description = "The persisted bound.", body = ReservationResponse),
        LeaseErrors,
    )
)]
async fn reservation(
    State(s): State<AppState>,
    HostPath(host_id): HostPath,
    ApiJson(req): ApiJson<ReservationRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(s.coordinator.extend_reservation(host_id, &req).await?).into_response())
}

/// Gives a host id back before its lease runs out.
#[utoipa::path(
    post,
    path = "/v1/leases/{host_id}/release",
    tag = "leases",
    security(("bearer" = ["node"])),
    params(HostId),
    request_body = ReleaseRequest,
    responses(
        (status = 204, description = "Released (or already released under this token)."),
        ReleaseErrors,
    )
)]
async fn release(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    HostPath(host_id): HostPath,
    ApiJson(req): ApiJson<ReleaseRequest>,
) -> Result<Response, ApiError> {
    s.coordinator.release(host_id, &req).await?;
    audit::lease_released(&caller, host_id, req.token);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A counter block for a (shard, host) pair, above every earlier one (temporal layout).
#[utoipa::path(
    post,
    path = "/v1/blocks",
    tag = "blocks",
    security(("bearer" = ["node"])),
    request_body = BlockRequest,
    responses(
        (status = 200, description = "Counter values `start..end` of the shard, persisted before this answer.", body = BlockGrant),
        BlockErrors,
    )
)]
async fn blocks(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<BlockRequest>,
) -> Result<Response, ApiError> {
    let (grant, new) = s.coordinator.grant_block_granting(&req).await?;
    if new {
        audit::counter_block(&caller, req.host_id, req.token, &grant);
    }
    Ok(Json(grant).into_response())
}

/// Registers a standby and long-polls for a host id whose lease expired without being
/// released; `timeout_ms` is capped at 60 000.
#[utoipa::path(
    post,
    path = "/v1/standby/wait",
    tag = "standby",
    security(("bearer" = ["node"])),
    request_body = StandbyWaitRequest,
    responses(
        (status = 200, description = "A host id to take over, or `null` when the wait timed out.", body = StandbyWaitResponse),
        StandbyErrors,
    )
)]
async fn standby_wait(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<StandbyWaitRequest>,
) -> Result<Response, ApiError> {
    let host_id = s
        .coordinator
        .standby_wait(&req.name, req.timeout_ms)
        .await?;
    Ok(Json(StandbyWaitResponse { host_id }).into_response())
}

/// Every host id ever leased, and the standbys seen recently.
#[utoipa::path(
    get,
    path = "/v1/hosts",
    tag = "status",
    security(("bearer" = ["read"])),
    responses(
        (status = 200, description = "The hosts and standbys.", body = HostsResponse),
        ReadErrors,
    )
)]
async fn hosts(State(s): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(s.coordinator.hosts().await?).into_response())
}

/// The store's identity, the cluster's layout and the limits this coordinator enforces.
#[utoipa::path(
    get,
    path = "/v1/cluster",
    tag = "status",
    security(("bearer" = ["read"])),
    responses(
        (status = 200, description = "Who this coordinator is.", body = ClusterInfo),
        ReadErrors,
    )
)]
async fn cluster(State(s): State<AppState>) -> Response {
    Json(s.coordinator.cluster_info()).into_response()
}

/// The live grants and the bounded grant logs (the last `window` grants of each host id,
/// (host, shard) pair and namespace): what `shardflake audit` checks for overlaps.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "status",
    security(("bearer" = ["read"])),
    responses(
        (status = 200, description = "The grants in the window.", body = AuditReport),
        ReadErrors,
    )
)]
async fn audit_report(State(s): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(s.coordinator.audit_report().await?).into_response())
}

/// Repairs a store restored from a backup: raises every namespace's `next` and every host
/// id's bounds above the floors given (and what nodes presented while the store was
/// refused), the fencing token and the generation above everything seen, and lets the store
/// grant again. Refused without a time floor and a floor for every namespace; never lowers
/// anything.
#[utoipa::path(
    post,
    path = "/v1/repair",
    tag = "operations",
    security(("bearer" = ["admin"])),
    request_body = RepairRequest,
    responses(
        (status = 200, description = "What the repair raised.", body = RepairReport),
        RepairErrors,
    )
)]
async fn repair(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<RepairRequest>,
) -> Result<Response, ApiError> {
    let report = s.coordinator.repair(&req).await?;
    audit::store_repaired(&caller, &report);
    Ok(Json(report).into_response())
}

/// Liveness; needs no token. Fails (`503`) only when the process cannot recover by itself
/// (a store file that cannot be reopened): a supervisor should restart it. A store that is
/// down for a while (a full disk, an unreachable etcd) is `/readyz`'s business.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "`ok` and a newline.", body = HealthText,
            content_type = "text/plain"),
        OpenErrors,
    )
)]
async fn healthz(State(s): State<AppState>) -> Response {
    match s.coordinator.store().health().await {
        StoreHealth::Failed(why) => ApiError::new(ErrorCode::StoreUnavailable, why).into_response(),
        _ => "ok\n".into_response(),
    }
}

/// Readiness; needs no token. `503` with the reasons while the coordinator cannot serve
/// grants: its store is wedged or unreachable, etcd's space quota alarm is raised, or the
/// store went back to an earlier state and awaits its repair.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "`ready` and a newline.", body = ReadyText,
            content_type = "text/plain"),
        OpenErrors,
    )
)]
async fn readyz(State(s): State<AppState>) -> Response {
    let problems = s.coordinator.readiness().await;
    if problems.is_empty() {
        return "ready\n".into_response();
    }
    ApiError::new(
        ErrorCode::StoreUnavailable,
        format!("not ready: {}", problems.join("; ")),
    )
    .into_response()
}

/// Metrics for Prometheus.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security(("bearer" = ["read"])),
    responses(
        (status = 200, description = "Every series, prefixed `shardflake_`.", body = MetricsText,
            content_type = CONTENT_TYPE_METRICS),
        ReadErrors,
    )
)]
async fn metrics(State(s): State<AppState>) -> Result<Response, ApiError> {
    let c = &s.coordinator;
    let stats = c.store().stats();
    let text = c.metrics().render(Scrape {
        store_commits: stats.commits,
        store_txns: stats.txns,
        store_reads: stats.reads,
        live_hosts: c.live_hosts().await? as u64,
        pool_size: u64::from(c.config().pool_size),
        store_gauges: c.store().gauges(),
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE_METRICS),
    );
    Ok((headers, text).into_response())
}

/// This description: OpenAPI 3.1, generated from the router; needs no token.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "The coordinator's OpenAPI 3.1 description.",
            body = serde_json::Value, content_type = CONTENT_TYPE_JSON),
        OpenErrors,
    )
)]
async fn get_openapi() -> Response {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE_JSON)],
        axum::body::Bytes::from_static(openapi_json()),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}

/// The routes a credential of `scope` or stronger may call, each registered with its
/// description (utoipa-axum's `routes!` reads the path and the method from the handler's
/// `#[utoipa::path]`, whose `security(("bearer" = ["<scope>"]))` must name the same scope:
/// a test checks it). Add routes here or in [`open_routes`], and only with `routes!`.
pub(crate) fn scoped_routes(scope: Scope) -> OpenApiRouter<AppState> {
    match scope {
        Scope::Read => OpenApiRouter::new()
            .routes(routes!(hosts))
            .routes(routes!(cluster))
            .routes(routes!(audit_report))
            .routes(routes!(metrics))
            .routes(routes!(namespaces::list_namespaces))
            .routes(routes!(namespaces::routing)),
        Scope::Node => OpenApiRouter::new()
            .routes(routes!(acquire))
            .routes(routes!(renew))
            .routes(routes!(reservation))
            .routes(routes!(release))
            .routes(routes!(blocks))
            .routes(routes!(standby_wait))
            .routes(routes!(namespaces::ns_blocks))
            .routes(routes!(namespaces::ns_return)),
        Scope::Admin => OpenApiRouter::new()
            .routes(routes!(
                namespaces::put_namespace,
                namespaces::delete_namespace
            ))
            .routes(routes!(namespaces::raise_namespace))
            .routes(routes!(repair)),
        // A node's client credential: no coordinator route.
        Scope::Client => OpenApiRouter::new(),
    }
}

/// Every route behind authentication, for the description.
pub(crate) fn protected_routes() -> OpenApiRouter<AppState> {
    Scope::COORDINATOR
        .into_iter()
        .fold(OpenApiRouter::new(), |r, s| r.merge(scoped_routes(s)))
}

/// The routes that need no token.
pub(crate) fn open_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(get_openapi))
}

/// The router: every route but `/healthz`, `/readyz` and `/openapi.json` behind authentication, each
/// group behind the scope it needs. The routes and the OpenAPI description (`GET
/// /openapi.json`) come from the same lists (`scoped_routes`, `open_routes`), so neither
/// names a route the other lacks.
pub fn app(state: AppState) -> Router {
    let protected = Scope::COORDINATOR
        .into_iter()
        .fold(Router::new(), |router, scope| {
            let (routes, _) = scoped_routes(scope).split_for_parts();
            router.merge(routes.route_layer(middleware::from_fn_with_state(
                (state.clone(), scope),
                auth::require,
            )))
        })
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            check_generation,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    let (open, _) = open_routes().split_for_parts();
    open.merge(protected)
        .layer(middleware::from_fn_with_state(state.clone(), count_errors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            stamp_generation,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), store_id))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state)
}
