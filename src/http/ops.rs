//! Health and readiness, without credentials and without secrets.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;

use super::sessions::render;
use crate::app::AppState;
use crate::error::{Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
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
