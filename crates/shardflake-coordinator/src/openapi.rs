//! The coordinator's OpenAPI 3.1 description, served at `GET /openapi.json`.
//!
//! It is generated from the router: every route is registered through utoipa-axum's
//! `routes!` (`http::protected_routes`, `http::open_routes`), which takes the path, the
//! method and the description from the handler's `#[utoipa::path]`, so a route cannot be
//! served without being described. The error responses list the stable codes each endpoint
//! may answer with (`shardflake_proto::api_errors!`); every response carries the store's
//! identity header, as the `store_id` middleware does.

use std::sync::OnceLock;

use serde_json::{json, Value};
use shardflake_proto::coord::STORE_ID_HEADER;
use shardflake_proto::generation::GENERATION_HEADER;
use shardflake_proto::openapi::finish;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, SchemaFormat};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, RefOr, Required, Schema, Type};
use utoipa::{IntoParams, Modify, OpenApi, PartialSchema, ToSchema};

/// The name of the bearer-token security scheme in the description; the handlers'
/// `security(("bearer" = []))` name it (utoipa takes only a literal there).
const BEARER: &str = "bearer";

/// The description's frame; the paths come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "shardflake coordinator",
        description = "Leases host ids to generator nodes with fencing tokens, persists their \
            reservations before they may use them, hands out counter blocks for temporal \
            shards and promotes standbys (`shardflake coordinator`). Every route but \
            `/healthz` and `/openapi.json` needs `Authorization: Bearer <credential>`, whose \
            scope (`read`, `node` or `admin`, named in each operation's security \
            requirement) must allow it: every credential reads, only node credentials lease \
            and take blocks, only admin credentials change namespaces. Every call under a \
            lease presents the lease's secret. \
            Every response carries the store's identity in `shardflake-store-id`; every \
            error is `{\"error\": {\"code\", \"message\"}}` with a stable code (schema \
            `ErrorCode`).",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "leases", description = "Host ids, fencing tokens and reservations."),
        (name = "blocks", description = "Counter blocks of temporal layouts."),
        (name = "standby", description = "Standbys waiting to take over a failed host."),
        (name = "status", description = "The cluster and its hosts."),
        (name = "namespaces", description = "Dense per-name counters served from blocks, and the routing table."),
        (name = "operations", description = "Probes, metrics and this description."),
    ),
    components(schemas(shardflake_proto::ErrorBody))
)]
struct CoordinatorApi;

/// Adds the bearer-token scheme the protected routes name.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some(
            "A scoped credential: read (`SHARDFLAKE_READ_TOKEN`: SDK clients, dashboards), \
             node (`SHARDFLAKE_NODE_TOKEN`: generator nodes) or admin \
             (`SHARDFLAKE_ADMIN_TOKEN`: operators). The security requirement of each \
             operation names the scope it needs; read operations accept every scope."
                .into(),
        );
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, SecurityScheme::Http(http));
    }
}

/// The description as served (JSON).
///
/// ```
/// let doc = shardflake_coordinator::http::openapi();
/// assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
/// assert_eq!(doc["paths"]["/v1/leases"]["post"]["security"][0]["bearer"], serde_json::json!(["node"]));
/// assert_eq!(
///     doc["paths"]["/healthz"]["get"]["responses"]["200"]["headers"]["shardflake-store-id"]["required"],
///     true
/// );
/// ```
pub fn openapi() -> Value {
    serde_json::from_slice(openapi_json()).expect("the description is JSON")
}

/// The serialized description, built once.
pub(crate) fn openapi_json() -> &'static [u8] {
    static JSON: OnceLock<Vec<u8>> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut doc = CoordinatorApi::openapi();
        doc.merge(crate::http::protected_routes().into_openapi());
        doc.merge(crate::http::open_routes().into_openapi());
        let store_id = (
            STORE_ID_HEADER,
            "The identity of the store behind this coordinator (a UUID), on every response: \
             a client pins the first it sees and never fails over to a coordinator of another \
             store.",
            json!({"type": "string", "minLength": 1}),
        );
        let generation = (
            GENERATION_HEADER,
            "The store's generation and its proof (`<generation>.<hex proof>`), on every \
             response: every write to the store raises it. Nodes and SDK clients send the \
             highest they have seen back in the same header; a coordinator whose store is \
             behind it was restored from a backup and refuses to grant (`store_restored`) \
             until repaired.",
            json!({"type": "string", "pattern": "^[0-9]+\\.[0-9a-f]{64}$"}),
        );
        serde_json::to_vec(&finish(doc, &[store_id, generation]))
            .expect("the description serializes")
    })
}

/// The `{host_id}` path segment of the lease routes.
pub(crate) struct HostId;

impl IntoParams for HostId {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let host_id = ParameterBuilder::new()
            .name("host_id")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some(
                "The host id, `0..pool_size` (`GET /v1/cluster`); anything else is \
                 `400 bad_request`.",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::UInt32)))
                    .minimum(Some(0))
                    .maximum(Some(u32::MAX)),
            ))
            .build();
        vec![host_id]
    }
}

pub(crate) use shardflake_proto::openapi::NsName;

/// `GET /healthz`: `ok` and a newline.
pub(crate) struct HealthText;

impl PartialSchema for HealthText {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["ok\n"]))
            .into()
    }
}

impl ToSchema for HealthText {}

/// The body of `GET /readyz` when the coordinator serves.
pub(crate) struct ReadyText;

impl PartialSchema for ReadyText {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["ready\n"]))
            .into()
    }
}

impl ToSchema for ReadyText {}

pub(crate) use shardflake_proto::openapi::MetricsText;

shardflake_proto::api_errors!(
    /// `POST /v1/leases`: a request id already granted under another secret is
    /// `lease_secret_mismatch`.
    pub(crate) struct AcquireErrors: BadRequest, Unauthorized, Forbidden, LeaseSecretMismatch,
        PoolExhausted, HostBusy, PayloadTooLarge, RateLimited, StoreUnavailable, StoreRestored,
        ForeignGeneration
);

shardflake_proto::api_errors!(
    /// `POST /v1/leases/{host_id}/renew`: a lease's errors, and (temporal) those of the next
    /// shard's block.
    pub(crate) struct RenewErrors: BadRequest, NotTemporal, Unauthorized, Forbidden,
        LeaseSecretMismatch, NotFound, StaleToken, LeaseExpired, CounterSpaceExhausted,
        PayloadTooLarge, RateLimited, StoreUnavailable, StoreRestored,
        ForeignGeneration
);

shardflake_proto::api_errors!(
    /// `POST /v1/leases/{host_id}/reservation`.
    pub(crate) struct LeaseErrors: BadRequest, Unauthorized, Forbidden, LeaseSecretMismatch,
        NotFound, StaleToken, LeaseExpired, PayloadTooLarge, RateLimited, StoreUnavailable, StoreRestored,
        ForeignGeneration
);

shardflake_proto::api_errors!(
    /// `POST /v1/leases/{host_id}/release`: the token and the secret are checked, not the
    /// lease's expiry.
    pub(crate) struct ReleaseErrors: BadRequest, Unauthorized, Forbidden, LeaseSecretMismatch,
        NotFound, StaleToken, PayloadTooLarge, RateLimited, StoreUnavailable, StoreRestored,
        ForeignGeneration
);

shardflake_proto::api_errors!(
    /// `POST /v1/blocks`.
    pub(crate) struct BlockErrors: BadRequest, NotTemporal, Unauthorized, Forbidden,
        LeaseSecretMismatch, NotFound, StaleToken, LeaseExpired, ShardTooFarAhead,
        ShardRetired, CounterSpaceExhausted, PayloadTooLarge, RateLimited, StoreUnavailable, StoreRestored,
        ForeignGeneration
);

shardflake_proto::api_errors!(
    /// `POST /v1/standby/wait`.
    pub(crate) struct StandbyErrors: BadRequest, Unauthorized, Forbidden, PayloadTooLarge,
        RateLimited, StoreUnavailable, StoreRestored,
        ForeignGeneration
);

shardflake_proto::api_errors!(
    /// `PUT /v1/namespaces/{name}`.
    pub(crate) struct NsPutErrors: BadRequest, Unauthorized, Forbidden, NamespaceConflict,
        PayloadTooLarge, RateLimited, StoreUnavailable, StoreRestored,
        ForeignGeneration
);

shardflake_proto::api_errors!(
    /// `POST /v1/repair`.
    pub(crate) struct RepairErrors: BadRequest, Unauthorized, Forbidden, UnknownNamespace,
        PayloadTooLarge, RateLimited, StoreUnavailable, ForeignGeneration
);

shardflake_proto::api_errors!(
    /// `DELETE /v1/namespaces/{name}`.
    pub(crate) struct NsDeleteErrors: BadRequest, Unauthorized, Forbidden, UnknownNamespace,
        NamespaceBusy, RateLimited, StoreUnavailable, StoreRestored,
        ForeignGeneration
);

shardflake_proto::api_errors!(
    /// `POST /v1/namespaces/{name}/raise`.
    pub(crate) struct NsRaiseErrors: BadRequest, Unauthorized, Forbidden, UnknownNamespace,
        WouldLower, PayloadTooLarge, RateLimited, StoreUnavailable, StoreRestored,
        ForeignGeneration
);

shardflake_proto::api_errors!(
    /// `POST /v1/namespaces/{name}/blocks`.
    pub(crate) struct NsBlockErrors: BadRequest, Unauthorized, Forbidden, LeaseSecretMismatch,
        NotFound, UnknownNamespace, StaleToken, LeaseExpired, NamespaceExhausted,
        NamespaceReturned, PayloadTooLarge, RateLimited, StoreUnavailable, StoreRestored,
        ForeignGeneration
);

shardflake_proto::api_errors!(
    /// `POST /v1/namespaces/{name}/return`: the token and the secret are checked, not the
    /// lease's expiry; a return outside the caller's newest block is `return_refused`.
    pub(crate) struct NsReturnErrors: BadRequest, Unauthorized, Forbidden, LeaseSecretMismatch,
        NotFound, UnknownNamespace, StaleToken, ReturnRefused, PayloadTooLarge, RateLimited,
        StoreUnavailable, StoreRestored,
        ForeignGeneration
);

shardflake_proto::api_errors!(
    /// The protected `GET` routes: every credential reads.
    pub(crate) struct ReadErrors: Unauthorized, RateLimited, StoreUnavailable, StoreRestored,
        ForeignGeneration
);

shardflake_proto::api_errors!(
    /// The routes that need no token: only the limit on requests in flight refuses them.
    pub(crate) struct OpenErrors: StoreUnavailable
);

#[cfg(test)]
mod tests;
