//! The node's OpenAPI 3.1 description, served at `GET /openapi.json`.
//!
//! It is generated from the router: every route is registered through utoipa-axum's
//! `routes!` (`http::routes`), which takes the path, the method and the description from the
//! handler's `#[utoipa::path]`, so a route cannot be served without being described. The
//! error responses list the stable codes each endpoint may answer with
//! (`shardflake_proto::api_errors!`), and the ranges are the limits' constants.

use std::sync::OnceLock;

use serde_json::Value;
use shardflake_proto::node::IDS_COUNT_MAX;
use shardflake_proto::openapi::finish;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, SchemaFormat};
use utoipa::openapi::{ObjectBuilder, RefOr, Required, Schema, Type};
use utoipa::{IntoParams, OpenApi, PartialSchema, ToSchema};

/// The description's frame; the paths come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "shardflake node",
        description = "A restart-safe HTTP service that hands out unique, time-sortable 64-bit \
            ids (`shardflake serve`). Every error is `{\"error\": {\"code\", \"message\"}}` with \
            a stable code (schema `ErrorCode`); every retryable 503 carries `Retry-After`.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    tags(
        (name = "ids", description = "Issuing and decoding ids."),
        (name = "namespaces", description = "Dense per-name counters (cluster mode), served from blocks the coordinator grants."),
        (name = "operations", description = "Probes, metrics and this description."),
    ),
    components(schemas(shardflake_proto::ErrorBody))
)]
pub(crate) struct NodeApi;

/// The description as served (JSON).
///
/// ```
/// let doc = shardflake_node::openapi();
/// assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
/// assert_eq!(
///     doc["paths"]["/ids"]["get"]["parameters"][0]["schema"]["maximum"],
///     shardflake_proto::node::IDS_COUNT_MAX
/// );
/// ```
pub fn openapi() -> Value {
    serde_json::from_slice(openapi_json()).expect("the description is JSON")
}

/// The serialized description, built once.
pub(crate) fn openapi_json() -> &'static [u8] {
    static JSON: OnceLock<Vec<u8>> = OnceLock::new();
    JSON.get_or_init(|| {
        let doc = crate::http::routes().into_openapi();
        serde_json::to_vec(&finish(doc, &[])).expect("the description serializes")
    })
}

/// The query of `GET /ids`: `count`, required, `1..=IDS_COUNT_MAX`, and nothing else.
pub(crate) struct IdsQuery;

impl IntoParams for IdsQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let count = ParameterBuilder::new()
            .name("count")
            .parameter_in(ParameterIn::Query)
            .required(Required::True)
            .description(Some(format!(
                "How many ids, 1..={IDS_COUNT_MAX}. The only query parameter: any other, or \
                 `count` twice, is `400 bad_request`."
            )))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::UInt64)))
                    .minimum(Some(1))
                    .maximum(Some(IDS_COUNT_MAX)),
            ))
            .build();
        vec![count]
    }
}

pub(crate) use shardflake_proto::openapi::NsName;

/// The redirect marker `hop=1` a node adds when it sends a request to another.
fn hop_param() -> Parameter {
    ParameterBuilder::new()
        .name("hop")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(
            "`1` on a request one node redirected to another: it is served where it arrives.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .enum_values(Some([1])),
        ))
        .build()
}

/// The query of `GET /ns/{name}/id`: only the redirect marker.
pub(crate) struct NsQuery;

impl IntoParams for NsQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![hop_param()]
    }
}

/// The query of `GET /ns/{name}/ids`: `count` as for `/ids`, and the redirect marker.
pub(crate) struct NsIdsQuery;

impl IntoParams for NsIdsQuery {
    fn into_params(f: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let mut p = IdsQuery::into_params(f);
        p.push(hop_param());
        p
    }
}

/// `GET /ids` with `Accept: application/octet-stream`: packed 8-byte big-endian ids.
pub(crate) struct BinaryIds;

impl PartialSchema for BinaryIds {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/octet-stream")
            .description(Some(
                "The ids as packed 8-byte big-endian unsigned integers, no header.",
            ))
            .into()
    }
}

impl ToSchema for BinaryIds {}

/// `GET /ids` with `Accept: text/plain`: one decimal id per line.
pub(crate) struct TextIds;

impl PartialSchema for TextIds {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^([0-9]+\n)+$"))
            .description(Some("One decimal id per line, each line ending in `\\n`."))
            .into()
    }
}

impl ToSchema for TextIds {}

pub(crate) use shardflake_proto::openapi::MetricsText;

shardflake_proto::api_errors!(
    /// `GET /id`: why no id was issued, and the middleware's refusals (the client gate's
    /// `unauthorized` and `rate_limited` only on a node that has one).
    pub(crate) struct IdErrors: Unauthorized, RateLimited, ClockBehind, EpochInFuture, ReservationExhausted, LeaseLost,
        CounterExhausted, NoCounterBlock, ClusterMisconfigured, LayoutExpired, ShuttingDown,
        RequestTimeout, PayloadTooLarge, Internal
);

shardflake_proto::api_errors!(
    /// `GET /ids`: the query, the representation, and everything `GET /id` may answer.
    pub(crate) struct IdsErrors: BadRequest, Unauthorized, RateLimited, CountOutOfRange,
        NotAcceptable, ClockBehind,
        EpochInFuture, ReservationExhausted, LeaseLost, CounterExhausted, NoCounterBlock,
        ClusterMisconfigured, LayoutExpired, ShuttingDown, RequestTimeout, PayloadTooLarge,
        Internal
);

shardflake_proto::api_errors!(
    /// `GET /ns/{name}/id`: the name, the namespace, its blocks, and the middleware's refusals.
    pub(crate) struct NsIdErrors: BadRequest, Unauthorized, RateLimited, UnknownNamespace,
        NoNamespaceBlock, LeaseLost,
        ShuttingDown, RequestTimeout, PayloadTooLarge, Internal
);

shardflake_proto::api_errors!(
    /// `GET /ns/{name}/ids`: the query and the representation, and what `/ns/{name}/id` may answer.
    pub(crate) struct NsIdsErrors: BadRequest, Unauthorized, RateLimited, CountOutOfRange,
        NotAcceptable, UnknownNamespace,
        NoNamespaceBlock, LeaseLost, ShuttingDown, RequestTimeout, PayloadTooLarge, Internal
);

shardflake_proto::api_errors!(
    /// `GET /inspect/{id}`: not an id of the layout, or (cluster) no layout known yet.
    pub(crate) struct InspectErrors: InvalidId, LeaseLost, PayloadTooLarge
);

shardflake_proto::api_errors!(
    /// Endpoints that only the middleware refuses (a request body).
    pub(crate) struct BodyErrors: PayloadTooLarge
);

#[cfg(test)]
mod tests;
