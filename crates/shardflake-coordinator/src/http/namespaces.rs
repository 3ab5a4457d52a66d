//! The namespace routes: `PUT`/`GET /v1/namespaces`, a node's blocks and returns, and the
//! routing table (`GET /v1/routing`). The rules are in `crate::namespaces`.

use axum::extract::Query;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde::Deserialize;
use shardflake_proto::ns::{
    NamespaceDeleted, NamespaceList, NamespaceSpec, NamespaceStatus, NsBlockGrant, NsBlockRequest,
    NsRaiseRequest, NsReturnRequest, NsReturnResponse, RoutingTable,
};
use shardflake_proto::{ApiError, NamePath};

use super::{ApiJson, AppState, Caller};
use crate::audit;
use crate::openapi::{
    NsBlockErrors, NsDeleteErrors, NsName, NsPutErrors, NsRaiseErrors, NsReturnErrors, ReadErrors,
};

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

/// The query of `DELETE /v1/namespaces/{name}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteQuery {
    /// Delete even while live nodes hold unreturned blocks of it: they issue what they hold
    /// and get no further block.
    #[serde(default)]
    force: bool,
}

/// Deletes a namespace and every node's record of it. Refused (`409 namespace_busy`) while
/// live nodes hold unreturned blocks of it, unless `force=true`. The answer carries the
/// namespace's `next`: a namespace created again under this name must start at or above it
/// to keep its values unique across both.
#[utoipa::path(
    delete,
    path = "/v1/namespaces/{name}",
    operation_id = "delete_namespace",
    tag = "namespaces",
    security(("bearer" = ["admin"])),
    params(NsName, DeleteQuery),
    responses(
        (status = 200, description = "What was deleted.", body = NamespaceDeleted),
        NsDeleteErrors,
    )
)]
pub(super) async fn delete_namespace(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    NamePath(name): NamePath,
    query: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) =
        query.map_err(|r| ApiError::new(shardflake_proto::ErrorCode::BadRequest, r.body_text()))?;
    let deleted = s.coordinator.delete_namespace(&name, q.force).await?;
    audit::namespace_deleted(&caller, &deleted, q.force);
    Ok(Json(deleted).into_response())
}

/// Raises a namespace's `next`: every value granted from now on lies at or above
/// `next_at_least`. `next` never goes down: a lower value is `409 would_lower`.
#[utoipa::path(
    post,
    path = "/v1/namespaces/{name}/raise",
    operation_id = "raise_namespace",
    tag = "namespaces",
    security(("bearer" = ["admin"])),
    params(NsName),
    request_body = NsRaiseRequest,
    responses(
        (status = 200, description = "The namespace as stored.", body = NamespaceStatus),
        NsRaiseErrors,
    )
)]
pub(super) async fn raise_namespace(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    NamePath(name): NamePath,
    ApiJson(req): ApiJson<NsRaiseRequest>,
) -> Result<Response, ApiError> {
    let status = s
        .coordinator
        .raise_namespace(&name, req.next_at_least)
        .await?;
    audit::namespace_raised(&caller, &name, req.next_at_least, status.next);
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
/// clients route by (rendezvous order over the serving nodes). Served from memory with an
/// entity tag; a caller that sends it back in `If-None-Match` gets `304` while the table is
/// unchanged.
#[utoipa::path(
    get,
    path = "/v1/routing",
    operation_id = "routing",
    tag = "namespaces",
    security(("bearer" = ["read"])),
    params(
        ("If-None-Match" = Option<String>, Header,
            description = "The `ETag` of a table the caller holds: `304` while it is current."),
    ),
    responses(
        (status = 200, description = "The routing table.", body = RoutingTable,
            headers(("ETag" = String, description = "The table's entity tag: the routing epoch and a digest of the body, the same on every coordinator that serves the same table."))),
        (status = 304, description = "The table the caller holds (`If-None-Match`) is current.",
            headers(("ETag" = String, description = "The table's entity tag."))),
        ReadErrors,
    )
)]
pub(super) async fn routing(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    use axum::http::{header, HeaderValue, StatusCode};
    let routed = s.coordinator.routed().await?;
    let etag = HeaderValue::from_str(&routed.etag).expect("an entity tag is ASCII");
    let held = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.strip_prefix("W/").unwrap_or(t) == routed.etag
        });
    if held {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        [
            (header::ETAG, etag),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        routed.body.clone(),
    )
        .into_response())
}
