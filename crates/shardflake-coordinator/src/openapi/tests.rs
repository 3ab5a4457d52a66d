//! The description against the router that serves it.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use shardflake::Layout;
use shardflake_proto::coord::STORE_ID_HEADER;
use shardflake_proto::ErrorBody;
use tower::ServiceExt;

use shardflake_proto::auth::Scope;

use crate::http::{app, open_routes, protected_routes, scoped_routes, AppState, Auth};
use crate::store::MemStore;
use crate::{Coordinator, CoordinatorConfig, ManualTime};

/// One credential per scope.
const TOKENS: [(Scope, &str); 3] = [
    (Scope::Read, "openapi-read-token"),
    (Scope::Node, "openapi-node-token"),
    (Scope::Admin, "openapi-admin-token"),
];

fn token_of(scope: Scope) -> &'static str {
    TOKENS.iter().find(|(s, _)| *s == scope).unwrap().1
}

async fn router() -> axum::Router {
    let time = ManualTime::new(1_800_000_000_000);
    let config = CoordinatorConfig::new(Layout::preset("twitter").unwrap());
    let c = Coordinator::open(Arc::new(MemStore::new()), Arc::new(time), config)
        .await
        .unwrap();
    app(AppState::new(Arc::new(c), Auth::tokens(&TOKENS).unwrap()))
}

/// The scope an operation's security requirement names.
fn scope_of(op: &Value) -> Option<Scope> {
    let name = op["security"][0]["bearer"][0].as_str()?;
    Scope::COORDINATOR.into_iter().find(|s| s.as_str() == name)
}

struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    store_id: bool,
    body: Vec<u8>,
}

async fn call(app: &axum::Router, method: &str, uri: &str, token: Option<&str>) -> Answer {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let req = if method == "POST" {
        b.header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap()
    } else {
        b.body(Body::empty()).unwrap()
    };
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let store_id = resp.headers().contains_key(STORE_ID_HEADER);
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Answer {
        status,
        content_type,
        store_id,
        body,
    }
}

/// `(method, path)` of every operation in a description.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item")
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

#[tokio::test]
async fn the_description_is_openapi_3_1_json_and_covers_every_route_served() {
    let app = router().await;
    let a = call(&app, "GET", "/openapi.json", None).await;
    assert_eq!(a.status, StatusCode::OK, "served without a token");
    assert_eq!(a.content_type.as_deref(), Some("application/json"));
    assert!(a.store_id);
    let served: Value = serde_json::from_slice(&a.body).unwrap();
    assert!(served["openapi"].as_str().unwrap().starts_with("3.1."));

    // The routes utoipa-axum registered on the router are the operations served.
    let mut registered = protected_routes().into_openapi();
    registered.merge(open_routes().into_openapi());
    let registered = serde_json::to_value(registered).unwrap();
    assert_eq!(operations(&served), operations(&registered));
    let expected: BTreeSet<(String, String)> = [
        ("POST", "/v1/leases"),
        ("POST", "/v1/leases/{host_id}/renew"),
        ("POST", "/v1/leases/{host_id}/reservation"),
        ("POST", "/v1/leases/{host_id}/release"),
        ("POST", "/v1/blocks"),
        ("POST", "/v1/standby/wait"),
        ("GET", "/v1/hosts"),
        ("GET", "/v1/cluster"),
        ("GET", "/v1/audit"),
        ("GET", "/metrics"),
        ("GET", "/healthz"),
        ("GET", "/openapi.json"),
        ("PUT", "/v1/namespaces/{name}"),
        ("GET", "/v1/namespaces"),
        ("POST", "/v1/namespaces/{name}/blocks"),
        ("POST", "/v1/namespaces/{name}/return"),
        ("DELETE", "/v1/namespaces/{name}"),
        ("POST", "/v1/namespaces/{name}/raise"),
        ("POST", "/v1/repair"),
        ("GET", "/readyz"),
        ("GET", "/v1/routing"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(operations(&served), expected);

    // Every described operation reaches its handler (not the fallback) with a credential of
    // the scope it names, answers with a status it lists, carries the store id, needs a
    // credential exactly when it says so, and refuses the other scopes when it writes.
    for (method, path) in operations(&served) {
        let uri = path.replace("{host_id}", "0");
        let op = &served["paths"][&path][method.to_lowercase()];
        let secured = op.get("security").is_some();
        let scope = scope_of(op);
        assert_eq!(secured, scope.is_some(), "{method} {path} names no scope");
        let a = call(&app, &method, &uri, scope.map(token_of)).await;
        assert!(a.store_id, "{method} {uri}");
        assert!(
            op["responses"].get(a.status.as_str()).is_some(),
            "{method} {uri} answered {}, which the description does not list: {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        );
        if !a.status.is_success() {
            let body: ErrorBody = serde_json::from_slice(&a.body).unwrap();
            assert_ne!(body.error.message, "no such route", "{method} {uri}");
            assert_ne!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        }
        for other in Scope::COORDINATOR {
            let Some(needed) = scope else { break };
            let b = call(&app, &method, &uri, Some(token_of(other))).await;
            assert_eq!(
                b.status == StatusCode::FORBIDDEN,
                !other.allows(needed),
                "{method} {uri} with the {other} credential answered {}",
                b.status
            );
            if !other.allows(needed) {
                assert!(op["responses"]["403"].is_object(), "{method} {uri}");
            }
        }
        let without = call(&app, &method, &uri, None).await;
        assert_eq!(
            without.status == StatusCode::UNAUTHORIZED,
            secured,
            "{method} {uri}: security {secured}, answered {} without a token",
            without.status
        );
        if secured {
            assert!(op["responses"]["401"].is_object(), "{method} {uri}");
        }
    }
    let schemes = &served["components"]["securitySchemes"]["bearer"];
    assert_eq!(schemes["type"], "http");
    assert_eq!(schemes["scheme"], "bearer");
}

/// Each route group's handlers name, in their security requirement, the scope the group is
/// guarded by: the description tells the truth about who may call what.
#[test]
fn every_route_names_the_scope_that_guards_it() {
    for scope in Scope::COORDINATOR {
        let doc = serde_json::to_value(scoped_routes(scope).into_openapi()).unwrap();
        for (method, path) in operations(&doc) {
            let op = &doc["paths"][&path][method.to_lowercase()];
            assert_eq!(scope_of(op), Some(scope), "{method} {path}");
        }
    }
}

#[test]
fn every_route_is_registered_with_its_description() {
    // A route added with plain axum (`.route`, `.nest`, ...) would be served but not
    // described: the router is built only from `routes!`.
    let source = include_str!("../http.rs");
    let code = source.split("#[cfg(test)]").next().unwrap();
    for plain in [".route(", ".route_service(", ".nest(", ".nest_service("] {
        assert!(
            !code.contains(plain),
            "http.rs registers a route with `{plain}`; use `.routes(routes!(handler))` so \
             that it is described in /openapi.json"
        );
    }
}

#[test]
fn bodies_name_their_limits_and_errors_their_codes() {
    let doc = crate::http::openapi();
    let acquire = &doc["components"]["schemas"]["AcquireRequest"]["properties"];
    assert_eq!(
        acquire["ttl_ms"]["minimum"],
        shardflake_proto::coord::LEASE_TTL_MS_MIN
    );
    assert_eq!(
        acquire["ttl_ms"]["maximum"],
        shardflake_proto::coord::LEASE_TTL_MS_MAX
    );
    assert_eq!(
        acquire["request_id"]["maxLength"],
        shardflake_proto::coord::REQUEST_ID_BYTES_MAX
    );
    let responses = &doc["paths"]["/v1/leases"]["post"]["responses"];
    let codes_409 = &responses["409"]["content"]["application/json"]["schema"]["properties"]
        ["error"]["properties"]["code"]["enum"];
    assert_eq!(
        codes_409,
        &serde_json::json!(["pool_exhausted", "host_busy"])
    );
    assert_eq!(
        responses["503"]["headers"]["Retry-After"]["required"], true,
        "store_unavailable always says when to retry"
    );
    assert_eq!(
        responses["200"]["headers"][STORE_ID_HEADER]["required"],
        true
    );
}

/// Regression (schemathesis, negative_data_rejection: `reserve_ahead_ms:
/// 9223372036854775808` was accepted although the description said `format: int64`): a
/// `u64` field is described with the `u64` range, so the values above `i64::MAX` that the
/// coordinator accepts are valid, and those above `u64::MAX` that it refuses are not.
#[test]
fn a_u64_field_is_described_with_the_u64_range() {
    let doc = crate::http::openapi();
    let schemas = &doc["components"]["schemas"];
    let ahead = &schemas["AcquireRequest"]["properties"]["reserve_ahead_ms"];
    assert_eq!(ahead["format"], "uint64");
    assert_eq!(ahead["maximum"], serde_json::json!(u64::MAX));
    let host_id = &schemas["BlockRequest"]["properties"]["host_id"];
    assert_eq!(host_id["maximum"], serde_json::json!(u32::MAX));
    let until = &schemas["ReservationRequest"]["properties"]["until_ms"];
    assert_eq!(until["maximum"], serde_json::json!(u64::MAX));
}
