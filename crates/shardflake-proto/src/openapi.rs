//! The OpenAPI 3.1 parts both services' descriptions share (feature `openapi`): the
//! [`ErrorCode`] schema, the error responses of an endpoint grouped by status
//! ([`error_responses`], [`api_errors!`](crate::api_errors)), the schemas of the wire
//! fields whose ranges are limits defined in this crate, and [`finish`], which turns a
//! description into the JSON a service serves.
//!
//! The node and the coordinator build their descriptions from their routers
//! (`utoipa-axum`), so a route cannot be served without being described; every type they
//! describe derives `utoipa::ToSchema` here, beside its serde attributes.
//!
//! ```
//! use shardflake_proto::openapi::error_responses;
//! use shardflake_proto::ErrorCode;
//!
//! let r = error_responses(&[ErrorCode::BadRequest, ErrorCode::StaleToken, ErrorCode::HostBusy]);
//! assert_eq!(r.keys().collect::<Vec<_>>(), ["400", "409"]);
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{json, Value};
#[doc(hidden)]
pub use utoipa;
use utoipa::openapi::header::Header;
use utoipa::openapi::schema::{KnownFormat, SchemaFormat, SchemaType};
use utoipa::openapi::{
    ContentBuilder, Object, ObjectBuilder, OpenApi, RefOr, Response, ResponseBuilder, Schema, Type,
};
use utoipa::{PartialSchema, ToSchema};

use crate::coord::{LEASE_TTL_MS_MAX, LEASE_TTL_MS_MIN, REQUEST_ID_BYTES_MAX};
use crate::node::CONTENT_TYPE_JSON;
use crate::ErrorCode;

/// The `{name}` path segment of the namespace routes (node and coordinator).
pub struct NsName;

impl utoipa::IntoParams for NsName {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::Required;
        let name = ParameterBuilder::new()
            .name("name")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some(
                "The namespace: 1 to 64 lowercase letters, digits, `.`, `_` and `-`, starting \
                 with a letter or a digit; anything else is `400 bad_request`.",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(crate::ns::NAME_LEN_MAX))
                    .pattern(Some("^[a-z0-9][a-z0-9._-]*$")),
            ))
            .build();
        vec![name]
    }
}

/// The name of the `Retry-After` response header.
pub const RETRY_AFTER: &str = "Retry-After";

impl PartialSchema for ErrorCode {
    /// Every code a server may send (never `unknown`, which only a client produces when it
    /// parses a code it does not know), with the table of meanings.
    fn schema() -> RefOr<Schema> {
        let mut table = String::from(
            "A stable error code. Codes are never renamed or reused; new ones may be added, \
             so a client treats a code it does not know by its HTTP status.\n\n\
             | code | status | meaning |\n|---|---|---|\n",
        );
        for code in ErrorCode::ALL {
            table.push_str(&format!(
                "| `{code}` | {} | {} |\n",
                code.http_status(),
                code.meaning()
            ));
        }
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .description(Some(table))
            .into()
    }
}

impl ToSchema for ErrorCode {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorCode")
    }
}

/// The error body `{"error": {"code", "message"}}` with the codes narrowed to `codes`.
fn error_body_schema(codes: &[ErrorCode]) -> Object {
    let code = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(codes.iter().map(|c| c.as_str())))
        .description(Some("The stable code, for programs."));
    let detail = ObjectBuilder::new()
        .property("code", code)
        .required("code")
        .property(
            "message",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("What happened, for people; may change.")),
        )
        .required("message");
    ObjectBuilder::new()
        .property("error", detail)
        .required("error")
        .build()
}

/// The responses of an endpoint that may fail with `codes`: one response per HTTP status,
/// whose body is the error body with the codes of that status, described one per line, and
/// for `503`s with a retryable code the `Retry-After` header (whole seconds, at least 1).
pub fn error_responses(codes: &[ErrorCode]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for &code in codes {
        let group = by_status.entry(code.http_status()).or_default();
        if !group.contains(&code) {
            group.push(code);
        }
    }
    by_status
        .into_iter()
        .map(|(status, group)| {
            let description = group
                .iter()
                .map(|c| format!("`{c}`: {}", c.meaning()))
                .collect::<Vec<_>>()
                .join("\n\n");
            let mut response = ResponseBuilder::new().description(description).content(
                CONTENT_TYPE_JSON,
                ContentBuilder::new()
                    .schema(Some(error_body_schema(&group)))
                    .build(),
            );
            if group.iter().any(|c| c.is_retryable()) {
                response = response.header(RETRY_AFTER, retry_after_header());
            }
            (status.to_string(), response.build().into())
        })
        .collect()
}

/// `Retry-After`: whole seconds, at least 1.
pub fn retry_after_header() -> Header {
    let mut h = Header::new(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1)),
    );
    h.description = Some("Seconds to wait before retrying (at least 1).".into());
    h
}

/// Defines a unit type whose `utoipa::IntoResponses` are the [`error_responses`] of the
/// listed [`ErrorCode`] variants: `responses(...)` of a `#[utoipa::path]` takes it beside
/// the success responses, so every status an endpoint answers is described with its codes.
///
/// ```
/// use shardflake_proto::openapi::utoipa::IntoResponses;
///
/// shardflake_proto::api_errors!(
///     /// What `GET /thing` may answer besides 200.
///     pub struct ThingErrors: BadRequest, StoreUnavailable
/// );
/// assert_eq!(ThingErrors::responses().keys().collect::<Vec<_>>(), ["400", "503"]);
/// ```
#[macro_export]
macro_rules! api_errors {
    ($(#[$meta:meta])* $vis:vis struct $name:ident: $($code:ident),+ $(,)?) => {
        $(#[$meta])*
        $vis struct $name;

        impl $crate::openapi::utoipa::IntoResponses for $name {
            fn responses() -> ::std::collections::BTreeMap<
                ::std::string::String,
                $crate::openapi::utoipa::openapi::RefOr<
                    $crate::openapi::utoipa::openapi::response::Response,
                >,
            > {
                $crate::openapi::error_responses(&[$($crate::ErrorCode::$code),+])
            }
        }
    };
}

/// An optional integer field (`null` or absent when not given) in `min..=max`.
fn optional_integer(min: u64, max: u64, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::UInt64)))
        .minimum(Some(min))
        .maximum(Some(max))
        .description(Some(description))
        .build()
}

/// [`AcquireRequest::ttl_ms`](crate::coord::AcquireRequest::ttl_ms): within
/// [`LEASE_TTL_MS_MIN`]`..=`[`LEASE_TTL_MS_MAX`] (a coordinator may narrow the range; it
/// states its own in `GET /v1/cluster`).
pub fn lease_ttl_ms_schema() -> Object {
    optional_integer(
        LEASE_TTL_MS_MIN,
        LEASE_TTL_MS_MAX,
        "The lease's time to live, ms; the coordinator's default when absent. A coordinator \
         may narrow the range (its own is in `GET /v1/cluster`).",
    )
}

/// [`AcquireRequest::request_id`](crate::coord::AcquireRequest::request_id): 1 to
/// [`REQUEST_ID_BYTES_MAX`] bytes.
pub fn request_id_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .min_length(Some(1))
        .max_length(Some(REQUEST_ID_BYTES_MAX))
        .description(Some(format!(
            "Makes the request idempotent: a retry with the same id gets the same grant. \
             1 to {REQUEST_ID_BYTES_MAX} bytes (UTF-8)."
        )))
        .build()
}

/// The body of `GET /metrics` on the node and the coordinator: OpenMetrics text.
pub struct MetricsText;

impl PartialSchema for MetricsText {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "OpenMetrics text format 1.0.0, every series prefixed `shardflake_`.",
            ))
            .into()
    }
}

impl ToSchema for MetricsText {}

/// The body of `GET /inspect/{id}` ([`inspect_json`](crate::node::inspect_json)): fixed
/// keys first, then every field of the layout under its name.
pub struct InspectResponse;

impl PartialSchema for InspectResponse {
    fn schema() -> RefOr<Schema> {
        let u64_schema = || {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::UInt64)))
                .minimum(Some(0))
        };
        ObjectBuilder::new()
            .description(Some(
                "The id decoded by the node's layout: the fixed keys, then every field of \
                 the layout under its name (most significant first) with its value.",
            ))
            .property("id", u64_schema())
            .required("id")
            .property(
                "id_str",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[0-9]+$")),
            )
            .required("id_str")
            .property("layout", ObjectBuilder::new().schema_type(Type::String))
            .required("layout")
            .property(
                "timestamp_ms",
                u64_schema().description(Some("The id's time, Unix ms.")),
            )
            .required("timestamp_ms")
            .property(
                "time",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("The id's time, RFC 3339 UTC with milliseconds.")),
            )
            .required("time")
            .additional_properties(Some(u64_schema()))
            .into()
    }
}

impl ToSchema for InspectResponse {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("InspectResponse")
    }
}

/// The largest value of an integer `format` (utoipa names Rust's widths: `uint64` for
/// `u64`); JSON Schema validators know none of the unsigned ones, so the range is stated.
fn format_maximum(format: &str) -> Option<Value> {
    Some(match format {
        "uint8" => json!(u8::MAX),
        "uint16" => json!(u16::MAX),
        "uint32" => json!(u32::MAX),
        "uint64" => json!(u64::MAX),
        "int8" => json!(i8::MAX),
        "int16" => json!(i16::MAX),
        "int32" => json!(i32::MAX),
        "int64" => json!(i64::MAX),
        _ => return None,
    })
}

/// Drops the code blocks from every description: a schema's description is its type's
/// documentation, whose examples are Rust doc-tests, not API documentation.
fn drop_code_blocks(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(d)) = m.get_mut("description") {
                if let Some(at) = d.find("```") {
                    d.truncate(at);
                    d.truncate(d.trim_end().len());
                }
            }
            m.values_mut().for_each(drop_code_blocks);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_code_blocks),
        _ => {}
    }
}

/// Adds `maximum` to every integer schema whose format names a width and that states none,
/// after spelling the unsigned formats as the OpenAPI format registry does (`uint64`):
/// utoipa 5 writes `u-int64`.
fn bound_integers(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(f)) = m.get_mut("format") {
                if let Some(width) = f.strip_prefix("u-int") {
                    *f = format!("uint{width}");
                }
            }
            if let Some(max) = m
                .get("format")
                .and_then(Value::as_str)
                .and_then(format_maximum)
            {
                m.entry("maximum").or_insert(max);
            }
            m.values_mut().for_each(bound_integers);
        }
        Value::Array(a) => a.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

/// The description as served: JSON, with `required: true` on every header a response always
/// carries (utoipa's header objects have no `required`): `Retry-After` on an error response
/// whose codes are all retryable, and each of `always` (a header a service's middleware
/// puts on every response: name, description, schema) added to every response. Response
/// links get the field names of the specification (`operationId`, `requestBody`): utoipa 5
/// writes them in snake case (utoipa 6, which fixes it, needs a newer Rust than this
/// workspace's). Every integer whose format names a width gets that width's `maximum`, so
/// that a `u64` field does not read as accepting only `int64` values, or any number; the
/// unsigned formats are spelled `uint64` (utoipa 5 writes `u-int64`). Descriptions, taken
/// from the types' documentation, lose its doc-test code blocks.
pub fn finish(doc: OpenApi, always: &[(&str, &str, Value)]) -> Value {
    let mut doc = serde_json::to_value(doc).expect("an OpenAPI document serializes");
    bound_integers(&mut doc);
    drop_code_blocks(&mut doc);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return doc;
    };
    let operations = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for op in operations {
        let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
            continue;
        };
        for response in responses.values_mut() {
            if let Some(links) = response.get_mut("links").and_then(Value::as_object_mut) {
                links
                    .values_mut()
                    .filter_map(Value::as_object_mut)
                    .for_each(spell_link_fields);
            }
            let always_retryable = response
                .pointer("/content/application~1json/schema/properties/error/properties/code/enum")
                .and_then(Value::as_array)
                .is_some_and(|codes| {
                    codes.iter().all(|c| {
                        serde_json::from_value::<ErrorCode>(c.clone())
                            .is_ok_and(ErrorCode::is_retryable)
                    })
                });
            let headers = response
                .as_object_mut()
                .expect("a response is an object")
                .entry("headers")
                .or_insert_with(|| json!({}));
            if always_retryable {
                if let Some(h) = headers.get_mut(RETRY_AFTER) {
                    h["required"] = Value::Bool(true);
                }
            }
            for (name, description, schema) in always {
                headers[*name] = json!({
                    "description": description,
                    "required": true,
                    "schema": schema,
                });
            }
            if headers.as_object().is_some_and(|h| h.is_empty()) {
                response
                    .as_object_mut()
                    .expect("a response is an object")
                    .remove("headers");
            }
        }
    }
    doc
}

/// A link object's fields as the specification spells them.
fn spell_link_fields(link: &mut serde_json::Map<String, Value>) {
    for (snake, camel) in [
        ("operation_id", "operationId"),
        ("operation_ref", "operationRef"),
        ("request_body", "requestBody"),
    ] {
        if let Some(v) = link.remove(snake) {
            link.insert(camel.into(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_responses_group_codes_by_status_and_retryable_503s_name_retry_after() {
        let r = error_responses(&[
            ErrorCode::BadRequest,
            ErrorCode::CountOutOfRange,
            ErrorCode::ClockBehind,
            ErrorCode::LayoutExpired,
        ]);
        let v = serde_json::to_value(&r).unwrap();
        let codes = |status: &str| {
            v[status]["content"]["application/json"]["schema"]["properties"]["error"]["properties"]
                ["code"]["enum"]
                .clone()
        };
        assert_eq!(codes("400"), json!(["bad_request", "count_out_of_range"]));
        assert_eq!(codes("503"), json!(["clock_behind", "layout_expired"]));
        assert!(v["400"].get("headers").is_none());
        assert!(v["503"]["headers"][RETRY_AFTER].is_object());
    }

    #[test]
    fn finish_requires_headers_always_sent_and_spells_links_as_specified() {
        use utoipa::openapi::path::{OperationBuilder, PathItem};
        use utoipa::openapi::{HttpMethod, PathsBuilder, ResponsesBuilder};

        let op = |codes: &[ErrorCode]| {
            OperationBuilder::new()
                .responses(
                    ResponsesBuilder::new()
                        .responses_from_iter(error_responses(codes))
                        .build(),
                )
                .build()
        };
        let mut a = op(&[ErrorCode::StoreUnavailable]);
        let link = utoipa::openapi::link::LinkBuilder::new()
            .operation_id("b")
            .request_body(Some(json!({"x": "$response.body#/x"})))
            .build();
        if let Some(RefOr::T(r)) = a.responses.responses.get_mut("503") {
            r.links.insert("to_b".into(), RefOr::T(link));
        }
        let doc = utoipa::openapi::OpenApiBuilder::new()
            .paths(
                PathsBuilder::new()
                    .path("/a", PathItem::new(HttpMethod::Get, a))
                    .path(
                        "/b",
                        PathItem::new(
                            HttpMethod::Get,
                            op(&[ErrorCode::ClockBehind, ErrorCode::LayoutExpired]),
                        ),
                    ),
            )
            .build();
        let v = finish(doc, &[("x-id", "an id", json!({"type": "string"}))]);
        let header = |path: &str, name: &str| {
            v["paths"][path]["get"]["responses"]["503"]["headers"][name].clone()
        };
        assert_eq!(header("/a", RETRY_AFTER)["required"], json!(true));
        assert_eq!(header("/b", RETRY_AFTER)["required"], Value::Null);
        assert_eq!(header("/b", "x-id")["required"], json!(true));
        let link = &v["paths"]["/a"]["get"]["responses"]["503"]["links"]["to_b"];
        assert_eq!(link["operationId"], "b");
        assert_eq!(link["requestBody"], json!({"x": "$response.body#/x"}));
        assert!(link.get("operation_id").is_none());
    }

    #[test]
    fn integer_widths_are_stated_as_ranges() {
        let mut v = json!({
            "a": {"type": "integer", "format": "u-int64", "minimum": 0},
            "b": {"type": ["integer", "null"], "format": "uint32", "maximum": 9},
            "c": [{"type": "integer", "format": "int64"}],
            "d": {"type": "string", "format": "date-time"},
        });
        bound_integers(&mut v);
        assert_eq!(v["a"]["format"], "uint64");
        assert_eq!(v["a"]["maximum"], json!(u64::MAX));
        assert_eq!(v["b"]["maximum"], 9, "a stated maximum stays");
        assert_eq!(v["c"][0]["maximum"], json!(i64::MAX));
        assert!(v["d"].get("maximum").is_none());
    }

    #[test]
    fn descriptions_lose_their_doc_test_code() {
        let mut v = json!({"description": "`GET /id`.\n\n```\nlet r = 1;\n```", "p": [
            {"description": "No code."}
        ]});
        drop_code_blocks(&mut v);
        assert_eq!(v["description"], "`GET /id`.");
        assert_eq!(v["p"][0]["description"], "No code.");
    }

    #[test]
    fn the_error_code_schema_lists_every_code_a_server_sends() {
        let v = serde_json::to_value(ErrorCode::schema()).unwrap();
        let listed: Vec<&str> = v["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let all: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(listed, all);
        assert!(!listed.contains(&"unknown"));
    }
}
