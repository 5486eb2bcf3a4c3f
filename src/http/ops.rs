//! Health and readiness, without credentials and without secrets.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::sessions::render;
use crate::app::AppState;
use crate::error::{Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

/// Prometheus text: counters and a few gauges read now.
async fn metrics(State(state): State<AppState>) -> Response {
    let gauges = [
        (
            "hallpass_projects",
            "Projects loaded in this instance.",
            state.directory.project_count() as u64,
        ),
        (
            "hallpass_touches_pending",
            "last_accessed_at writes waiting for the next batch.",
            state.touches.len() as u64,
        ),
        (
            "hallpass_keys_unusable",
            "Stored signing keys this instance cannot open.",
            state.directory.key_problems().len() as u64,
        ),
    ];
    let mut r = state.metrics.render(&gauges).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// The process is up.
async fn healthz() -> Response {
    render(Health { status: "ok" })
}

/// The database answers and every project has a signing key loaded.
async fn readyz(State(state): State<AppState>) -> Result<Response> {
    state
        .db
        .ping()
        .await
        .map_err(|_| Error::ServiceUnavailable)?;
    if !state.directory.is_ready() {
        return Err(Error::ServiceUnavailable);
    }
    Ok(render(Health { status: "ready" }))
}
