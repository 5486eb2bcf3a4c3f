//! `/v1/rbac/policy`: the project's RBAC policy, as the SDKs' policy caches read it.

use axum::Router;
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;

use super::auth::Caller;
use super::sessions::render;
use crate::app::AppState;
use crate::domain::rbac::Policy;
use crate::error::Result;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/rbac/policy", get(policy))
}

#[derive(Serialize)]
struct PolicyBody<'a> {
    policy: &'a Policy,
}

async fn policy(Caller(project): Caller) -> Result<Response> {
    Ok(render(PolicyBody {
        policy: &project.rbac,
    }))
}
