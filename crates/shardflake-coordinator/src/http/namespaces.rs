//! The namespace routes: `PUT`/`GET /v1/namespaces`, a node's blocks and returns, and the
//! routing table (`GET /v1/routing`). The rules are in `crate::namespaces`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use shardflake_proto::ns::{
    NamespaceList, NamespaceSpec, NamespaceStatus, NsBlockGrant, NsBlockRequest, NsReturnRequest,
    NsReturnResponse, RoutingTable,
};
use shardflake_proto::{ApiError, NamePath};

use super::{ApiJson, AppState, Caller};
use crate::audit;
use crate::openapi::{NsBlockErrors, NsName, NsPutErrors, NsReturnErrors, ReadErrors};

/// Creates a namespace, or updates its block bounds (`start`, `step` and `offset` are fixed
/// at creation).
#[utoipa::path(
    put,
    path = "/v1/namespaces/{name}",
    operation_id = "put_namespace",
    tag = "namespaces",
    security(("bearer" = ["admin"])),
    params(NsName),
    request_body = NamespaceSpec,
    responses(
        (status = 200, description = "The namespace as stored.", body = NamespaceStatus),
        NsPutErrors,
    )
)]
pub(super) async fn put_namespace(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    NamePath(name): NamePath,
    ApiJson(spec): ApiJson<NamespaceSpec>,
) -> Result<Response, ApiError> {
    let status = s.coordinator.put_namespace(&name, &spec).await?;
    audit::namespace_written(&caller, &name, status.block_min, status.block_max);
    Ok(Json(status).into_response())
}

/// Every namespace with its state: the next value to grant, the serving nodes, and per node
/// the forecast against the actual consumption.
#[utoipa::path(
    get,
    path = "/v1/namespaces",
    operation_id = "list_namespaces",
    tag = "namespaces",
    security(("bearer" = ["read"])),
    responses(
        (status = 200, description = "The namespaces, by name.", body = NamespaceList),
        ReadErrors,
    )
)]
pub(super) async fn list_namespaces(State(s): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(s.coordinator.namespaces().await?).into_response())
}

/// A node's next block of a namespace, above every earlier block of it; the request reports
/// the node's consumption since its previous one.
#[utoipa::path(
    post,
    path = "/v1/namespaces/{name}/blocks",
    operation_id = "ns_blocks",
    tag = "namespaces",
    security(("bearer" = ["node"])),
    params(NsName),
    request_body = NsBlockRequest,
    responses(
        (status = 200, description = "The block, persisted before this answer.", body = NsBlockGrant),
        NsBlockErrors,
    )
)]
pub(super) async fn ns_blocks(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    NamePath(name): NamePath,
    ApiJson(req): ApiJson<NsBlockRequest>,
) -> Result<Response, ApiError> {
    let (grant, new) = s.coordinator.grant_ns_block_granting(&name, &req).await?;
    if new {
        audit::namespace_block(&caller, &name, req.host_id, req.token, &grant);
    }
    Ok(Json(grant).into_response())
}

/// A node that stops gives back the values of its newest block it never issued, under its
/// current token and lease secret; they are taken back only if no later block of the
/// namespace was granted. A return outside that block is `409 return_refused`.
#[utoipa::path(
    post,
    path = "/v1/namespaces/{name}/return",
    operation_id = "ns_return",
    tag = "namespaces",
    security(("bearer" = ["node"])),
    params(NsName),
    request_body = NsReturnRequest,
    responses(
        (status = 200, description = "How many values were taken back.", body = NsReturnResponse),
        NsReturnErrors,
    )
)]
pub(super) async fn ns_return(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    NamePath(name): NamePath,
    ApiJson(req): ApiJson<NsReturnRequest>,
) -> Result<Response, ApiError> {
    let answer = s.coordinator.return_ns_block(&name, &req).await?;
    let range = (req.unused_from, req.block_end);
    audit::namespace_return(
        &caller,
        &name,
        req.host_id,
        req.token,
        range,
        answer.returned,
    );
    Ok(Json(answer).into_response())
}

/// The live nodes (with their advertised URLs) and each namespace's serving nodes: what
/// clients route by (rendezvous order over the serving nodes).
#[utoipa::path(
    get,
    path = "/v1/routing",
    operation_id = "routing",
    tag = "namespaces",
    security(("bearer" = ["read"])),
    responses(
        (status = 200, description = "The routing table.", body = RoutingTable),
        ReadErrors,
    )
)]
pub(super) async fn routing(State(s): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(s.coordinator.routing().await?).into_response())
}
