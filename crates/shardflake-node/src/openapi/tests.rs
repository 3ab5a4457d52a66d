//! The description against the router that serves it.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::config::{NodeConfig, NodeOptions};
use crate::http::routes;
use crate::state::AppState;

const NOW_MS: u64 = 1_790_000_000_000;

fn app(dir: &tempfile::TempDir) -> axum::Router {
    let options = NodeOptions {
        machine_id: Some(3),
        state_dir: dir.path().into(),
        ..NodeOptions::default()
    };
    let state = AppState::open(NodeConfig::from_options(&options, NOW_MS).unwrap()).unwrap();
    crate::http::app(state)
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, Option<String>, Vec<u8>) {
    let req = Request::get(uri).body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, content_type, body)
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

#[tokio::test(flavor = "current_thread")]
async fn the_description_is_openapi_3_1_json_and_covers_every_route_served() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir);
    let (status, content_type, body) = get(&app, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let served: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        served["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        served["openapi"]
    );

    // The routes utoipa-axum registered on the router are the operations served.
    let registered = serde_json::to_value(routes().into_openapi()).unwrap();
    assert_eq!(operations(&served), operations(&registered));
    let expected: BTreeSet<(String, String)> = [
        "/id",
        "/ids",
        "/inspect/{id}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/ns/{name}/id",
        "/ns/{name}/ids",
    ]
    .into_iter()
    .map(|p| ("GET".to_string(), p.to_string()))
    .collect();
    assert_eq!(operations(&served), expected);

    // Every described operation reaches its handler, not the 404 or 405 fallback, and
    // answers with a status the description lists.
    for (method, path) in operations(&served) {
        let uri = match path.as_str() {
            "/ids" => "/ids?count=3".to_string(),
            "/ns/{name}/ids" => "/ns/orders/ids?count=3".to_string(),
            p => p
                .replace("{id}", "1050118621198921728")
                .replace("{name}", "orders"),
        };
        assert_eq!(method, "GET");
        let (status, _, body) = get(&app, &uri).await;
        let responses = &served["paths"][&path]["get"]["responses"];
        assert!(
            responses.get(status.as_str()).is_some(),
            "GET {uri} answered {status}, which the description does not list: {}",
            String::from_utf8_lossy(&body)
        );
        // The handler's own 404 (a standalone node serves no namespace) names its code; the
        // fallback's is `not_found`.
        let fallback = String::from_utf8_lossy(&body).contains("\"not_found\"");
        assert!(
            !(status.as_u16() == 405 || status.as_u16() == 404 && fallback),
            "GET {uri}: {status}"
        );
    }
}

#[test]
fn every_route_is_registered_with_its_description() {
    // A route added with plain axum (`.route`, `.nest`, ...) would be served but not
    // described: the router is built only from `routes!`.
    let source = include_str!("../http.rs");
    let code = source.split("#[cfg(test)]").next().unwrap();
    for plain in [
        ".route(",
        ".route_service(",
        ".nest(",
        ".nest_service(",
        ".merge(",
    ] {
        assert!(
            !code.contains(plain),
            "http.rs registers a route with `{plain}`; use `.routes(routes!(handler))` so \
             that it is described in /openapi.json"
        );
    }
}

#[test]
fn ranges_are_the_limits_and_errors_name_their_codes() {
    let doc = crate::openapi();
    let count = &doc["paths"]["/ids"]["get"]["parameters"][0];
    assert_eq!(count["name"], "count");
    assert_eq!(count["required"], true);
    assert_eq!(count["schema"]["minimum"], 1);
    assert_eq!(
        count["schema"]["maximum"],
        shardflake_proto::node::IDS_COUNT_MAX
    );
    let responses = &doc["paths"]["/ids"]["get"]["responses"];
    let codes_400 = &responses["400"]["content"]["application/json"]["schema"]["properties"]
        ["error"]["properties"]["code"]["enum"];
    assert_eq!(
        codes_400,
        &serde_json::json!(["bad_request", "count_out_of_range"])
    );
    assert!(responses["503"]["headers"]["Retry-After"].is_object());
    let content = responses["200"]["content"].as_object().unwrap();
    assert_eq!(
        content.keys().collect::<Vec<_>>(),
        ["application/json", "application/octet-stream", "text/plain"]
    );
    assert!(doc["components"]["schemas"]["ErrorCode"]["enum"].is_array());
}
