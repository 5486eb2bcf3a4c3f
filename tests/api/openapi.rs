//! The OpenAPI document and the router agree: every documented operation is routed, and
//! every route is documented.

use std::collections::BTreeSet;

use axum::http::Method;
use serde_json::Value;

use crate::harness::TestApp;

fn document() -> Value {
    serde_json::from_str(hallpass::http::ops::OPENAPI).expect("openapi.json is JSON")
}

/// Every `.route("…", …)` path in the HTTP modules.
fn routed_paths() -> BTreeSet<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http");
    let mut paths = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let literal = rest.trim_start();
            if let Some(quoted) = literal.strip_prefix('"') {
                paths.insert(quoted[..quoted.find('"').unwrap()].to_string());
            }
        }
    }
    paths
}

#[tokio::test]
async fn the_document_is_served_and_matches_the_router() {
    let app = TestApp::new().await;
    let served = app.get_anonymous("/openapi.json", &[]).await;
    assert_eq!(served.status, 200);
    let doc = document();
    assert_eq!(served.body, doc);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        documented,
        routed_paths(),
        "documented paths vs routed paths"
    );

    // Every documented operation reaches a handler (not the 404 / wrong-method fallbacks).
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{project_id}", &app.creds.project_id).replace(
            "{user_id}",
            "user-test-00000000-0000-4000-8000-000000000000",
        );
        for method in item.as_object().unwrap().keys() {
            let m: Method = match method.to_ascii_uppercase().parse() {
                Ok(m) if method != "parameters" => m,
                _ => continue,
            };
            if path.ends_with("/stream") || path == "/metrics" {
                continue; // a stream never ends, metrics are text; their routes are checked above
            }
            // returnImmediately: the SSF poll would otherwise long-poll an empty feed.
            let body = serde_json::json!({"returnImmediately": true});
            let r = app
                .request(m.clone(), &concrete, Some(&body), Some(&app.creds), &[])
                .await;
            let message = r.body["error_message"].as_str().unwrap_or_default();
            assert!(
                message != "No such endpoint."
                    && !message.contains("does not accept that HTTP method"),
                "{m} {path} is documented but not routed: {}",
                r.body
            );
        }
    }
}
