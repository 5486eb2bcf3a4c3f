//! The JWKS, with no caller authentication: `/v1/sessions/jwks/{project_id}` for the SDKs,
//! and `/jwks/{project_id}`, `/jwks`, `/.well-known/jwks.json` for relying services.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{PathText, json_response, request_id};
use crate::app::AppState;
use crate::directory::Project;
use crate::domain::ids::ProjectId;
use crate::domain::keys::cache_max_age;
use crate::error::{Error, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions/jwks/{project_id}", get(by_project))
        .route("/jwks/{project_id}", get(by_project))
        .route("/jwks", get(default_project))
        .route("/.well-known/jwks.json", get(default_project))
}

async fn by_project(
    State(state): State<AppState>,
    PathText(project_id): PathText,
    headers: HeaderMap,
) -> Result<Response> {
    let project = project_id
        .parse::<ProjectId>()
        .ok()
        .and_then(|id| state.directory.get(id.uuid).filter(|p| p.id == id))
        .ok_or_else(|| Error::NotFound(format!("No project {project_id}.")))?;
    Ok(document(&state, &project, &headers))
}

async fn default_project(State(state): State<AppState>, headers: HeaderMap) -> Result<Response> {
    let project = state.directory.default_project().ok_or_else(|| {
        Error::NotFound(
            "Several projects exist and none is the default: fetch /jwks/{project_id}, or set HALLPASS_DEFAULT_PROJECT_ID."
                .into(),
        )
    })?;
    Ok(document(&state, &project, &headers))
}

fn document(state: &AppState, project: &Arc<Project>, headers: &HeaderMap) -> Response {
    let ring = &project.ring;
    let max_age = cache_max_age(&ring.info, state.clock.now(), &state.settings.schedule);
    let cache = HeaderValue::from_str(&format!("public, max-age={max_age}"))
        .unwrap_or_else(|_| HeaderValue::from_static("no-cache"));
    let etag =
        HeaderValue::from_str(&ring.etag).unwrap_or_else(|_| HeaderValue::from_static("\"\""));
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            // If-None-Match compares weakly: W/"x" matches "x".
            v.split(',').map(str::trim).any(|t| {
                t == "*" || t.strip_prefix("W/").unwrap_or(t) == ring.etag.trim_start_matches("W/")
            })
        });
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        // The keys array is rendered once per ring; only the request id is new.
        let body = format!(
            r#"{{"keys":{},"request_id":"{}","status_code":200}}"#,
            ring.jwks_keys,
            request_id::current()
        );
        json_response(StatusCode::OK, body.into_bytes())
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, cache);
    h.insert(header::ETAG, etag);
    response
}
