//! Health and readiness, without credentials and without secrets.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::sessions::render;
use crate::app::AppState;
use crate::domain::keys::{KeyState, next_change};
use crate::error::{Error, Result};
use metrics::Label;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

/// Prometheus text: the counters and histograms, and gauges read now.
async fn metrics(State(state): State<AppState>) -> Response {
    let now = state.clock.now();
    let text = state.metrics.render(|m| {
        let projects = state.directory.projects();
        m.gauge("hallpass_projects", vec![])
            .set(projects.len() as f64);
        m.gauge("hallpass_touches_pending", vec![])
            .set(state.touches.len() as f64);
        m.gauge("hallpass_keys_unusable", vec![])
            .set(state.directory.key_problems().len() as f64);
        if let Some((reads, statements)) = state.db.session_read_stats() {
            m.counter("hallpass_session_reads_total", vec![])
                .absolute(reads);
            m.counter("hallpass_session_read_statements_total", vec![])
                .absolute(statements);
        }
        for (kind, in_use, idle) in state.db.connection_stats() {
            for (which, n) in [("in_use", in_use), ("idle", idle)] {
                m.gauge(
                    "hallpass_database_connections",
                    vec![Label::new("kind", kind), Label::new("state", which)],
                )
                .set(n as f64);
            }
        }
        for p in projects {
            let project = p.id.to_string();
            for state_name in [KeyState::Next, KeyState::Current, KeyState::Retired] {
                let n = p.ring.info.iter().filter(|k| k.state == state_name).count();
                m.gauge(
                    "hallpass_signing_keys",
                    vec![
                        Label::new("project", project.clone()),
                        Label::new("state", state_name.as_str()),
                    ],
                )
                .set(n as f64);
            }
            if let Some(at) = next_change(&p.ring.info, &state.settings.schedule) {
                m.gauge(
                    "hallpass_key_ring_next_change_seconds",
                    vec![Label::new("project", project)],
                )
                .set((at - now).max(0) as f64);
            }
        }
    });
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// The OpenAPI 3.1 document of every endpoint (a test holds it and the router together).
pub const OPENAPI: &str = include_str!("../../openapi/openapi.json");

async fn openapi() -> Response {
    let mut r = OPENAPI.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
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
