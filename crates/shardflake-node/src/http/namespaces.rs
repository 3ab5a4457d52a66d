//! `GET /ns/{name}/id` and `GET /ns/{name}/ids`: values of a namespace, in the same forms as
//! `/id` and `/ids`. The rules are in `crate::namespaces`.

use axum::extract::{RawQuery, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use shardflake_proto::node::{
    self as wire, IdResponse, CONTENT_TYPE_BINARY, CONTENT_TYPE_JSON, CONTENT_TYPE_TEXT,
};
use shardflake_proto::{ApiError, ErrorCode, NamePath};

use super::{bytes_response, id_response, negotiate, parse_ids_query, Repr};
use crate::namespaces::Route;
use crate::openapi::{BinaryIds, NsIdErrors, NsIdsErrors, NsIdsQuery, NsName, NsQuery, TextIds};
use crate::state::AppState;

/// The query marker of a request one node redirected to another: it is served where it
/// arrives, so two nodes whose routing tables disagree never bounce it back and forth.
const HOP: &str = "hop=1";

/// The query without the redirect marker, and whether it had one.
fn split_hop(query: Option<&str>) -> (Option<String>, bool) {
    let Some(q) = query else {
        return (None, false);
    };
    let mut hopped = false;
    let rest: Vec<&str> = q
        .split('&')
        .filter(|p| {
            let hop = *p == HOP;
            hopped |= hop;
            !hop
        })
        .collect();
    (Some(rest.join("&")), hopped)
}

/// `count` values of namespace `name`, or the refusal; a redirect when another node serves
/// the namespace.
async fn take(
    state: &AppState,
    name: &str,
    count: usize,
    hopped: bool,
    redirect_query: &str,
    path_tail: &str,
) -> Result<Result<Vec<u64>, Response>, ApiError> {
    let shared = state.shared.clone();
    let Some(cluster) = shared.cluster() else {
        return Err(ApiError::new(
            ErrorCode::UnknownNamespace,
            format!(
                "namespace `{name}`: namespaces are served in cluster mode (--coordinator); this node is standalone"
            ),
        ));
    };
    let ns = cluster.namespaces.clone();
    ns.start_routing();
    let lease = {
        let shared = shared.clone();
        move || shared.source.load().as_ref().and_then(|s| s.lease_ref())
    };
    let me = lease().map(|l| l.host_id);
    if let Route::There(url) = ns.route(name, me, hopped) {
        let location = format!("{url}/ns/{name}/{path_tail}?{redirect_query}");
        let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
        if let Ok(v) = HeaderValue::from_str(&location) {
            r.headers_mut().insert(LOCATION, v);
            return Ok(Err(r));
        }
    }
    let ids = ns.take(name, count, lease).await?;
    shared.metrics.ids_ns.inc_by(ids.len() as u64);
    Ok(Ok(ids))
}

/// One value of a namespace: unique across the cluster, increasing on this node.
#[utoipa::path(
    get,
    path = "/ns/{name}/id",
    tag = "namespaces",
    params(NsName, NsQuery),
    responses(
        (status = 200, description = "A value, as a number and as a decimal string.", body = IdResponse),
        (status = 307, description = "Another node serves the namespace: `Location` is the same request there."),
        NsIdErrors,
    )
)]
pub(super) async fn get_ns_id(
    State(state): State<AppState>,
    NamePath(name): NamePath,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (rest, hopped) = split_hop(query.as_deref());
    if let Some(p) = rest.as_deref().filter(|r| !r.is_empty()) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("unknown query `{p}`; /ns/{{name}}/id takes none"),
        ));
    }
    Ok(match take(&state, &name, 1, hopped, HOP, "id").await? {
        Ok(ids) => id_response(ids[0]),
        Err(redirect) => redirect,
    })
}

/// A batch of values of a namespace, increasing; the same representations as `/ids`.
#[utoipa::path(
    get,
    path = "/ns/{name}/ids",
    tag = "namespaces",
    params(NsName, NsIdsQuery),
    responses(
        (status = 200, description = "`count` values, increasing.", content(
            (wire::IdsResponse = "application/json"),
            (BinaryIds = "application/octet-stream"),
            (TextIds = "text/plain"),
        )),
        (status = 307, description = "Another node serves the namespace: `Location` is the same request there."),
        NsIdsErrors,
    )
)]
pub(super) async fn get_ns_ids(
    State(state): State<AppState>,
    NamePath(name): NamePath,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (rest, hopped) = split_hop(query.as_deref());
    let count = parse_ids_query(rest.as_deref())?;
    let repr = negotiate(&headers)?;
    let redirect_query = format!("count={count}&{HOP}");
    let ids = match take(&state, &name, count, hopped, &redirect_query, "ids").await? {
        Ok(ids) => ids,
        Err(redirect) => return Ok(redirect),
    };
    Ok(match repr {
        Repr::Binary => {
            let mut b = BytesMut::with_capacity(ids.len() * 8);
            for id in &ids {
                b.put_u64(*id);
            }
            bytes_response(CONTENT_TYPE_BINARY, b.freeze())
        }
        Repr::Text => {
            let mut out = Vec::with_capacity(ids.len() * 21);
            wire::write_ids_text(&mut out, &ids);
            bytes_response(CONTENT_TYPE_TEXT, Bytes::from(out))
        }
        Repr::Json => {
            let mut out = Vec::with_capacity(wire::ids_json_len_max(ids.len()));
            wire::write_ids_json(&mut out, &ids);
            bytes_response(CONTENT_TYPE_JSON, Bytes::from(out))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redirect_marker_is_taken_out_of_the_query() {
        assert_eq!(split_hop(None), (None, false));
        assert_eq!(split_hop(Some("count=5")), (Some("count=5".into()), false));
        assert_eq!(
            split_hop(Some("count=5&hop=1")),
            (Some("count=5".into()), true)
        );
        assert_eq!(split_hop(Some("hop=1")), (Some(String::new()), true));
        assert_eq!(split_hop(Some("hop=2")), (Some("hop=2".into()), false));
    }
}
