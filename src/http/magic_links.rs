//! `/v1/magic_links`: embeddable magic links, how a trusted backend starts a session the
//! Stytch-native way.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::auth::Caller;
use super::sessions::{self, AuthBody, render};
use super::{Json, present};
use crate::app::AppState;
use crate::domain::crypto::{OpaqueToken, hash_token};
use crate::domain::ids::Kind;
use crate::domain::session::{Factor, SessionDuration};
use crate::error::{Error, Result};
use crate::store;

const DEFAULT_EXPIRATION_MINUTES: i64 = 5;
const MAX_EXPIRATION_MINUTES: i64 = 60;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/magic_links", post(create))
        .route("/v1/magic_links/authenticate", post(authenticate))
}

#[derive(Deserialize)]
struct CreateRequest {
    user_id: Option<String>,
    expiration_minutes: Option<i64>,
}

#[derive(Serialize)]
struct CreateBody<'a> {
    user_id: String,
    token: &'a str,
}

async fn create(
    State(state): State<AppState>,
    Caller(project): Caller,
    Json(req): Json<CreateRequest>,
) -> Result<Response> {
    let user_id = present(&req.user_id).ok_or_else(|| Error::bad_request("user_id is required"))?;
    let minutes = req.expiration_minutes.unwrap_or(DEFAULT_EXPIRATION_MINUTES);
    if !(1..=MAX_EXPIRATION_MINUTES).contains(&minutes) {
        return Err(Error::bad_request(format!(
            "expiration_minutes must be between 1 and {MAX_EXPIRATION_MINUTES}"
        )));
    }
    let user = super::users::resolve(&state, &project, user_id).await?;
    let token = OpaqueToken::generate();
    let now = state.clock.now();
    store::magic_links::insert(
        &state.db,
        &token.hash(),
        Uuid::new_v4(),
        project.id.uuid,
        user.user_id,
        now,
        now + minutes * 60,
    )
    .await
    .map_err(store::user_gone)?;
    Ok(render(CreateBody {
        user_id: project.id.id(Kind::User, user.user_id),
        token: token.expose(),
    }))
}

#[derive(Deserialize)]
struct AuthenticateRequest {
    token: Option<String>,
    session_duration_minutes: Option<i64>,
    session_custom_claims: Option<Map<String, Value>>,
    session_token: Option<String>,
    session_jwt: Option<String>,
    /// Restricting (IP / user-agent must match the link's creation): not implemented, so a
    /// request that turns either on is refused rather than let through.
    #[serde(default, deserialize_with = "super::object")]
    options: Option<MatchOptions>,
    /// Restricting (PKCE): hallpass's embeddable links carry no code challenge, so a
    /// verifier cannot be checked and is refused.
    code_verifier: Option<String>,
    /// Context for `options` and for fraud products: accepted, not used.
    #[serde(default, rename = "attributes")]
    _attributes: Option<serde::de::IgnoredAny>,
    /// A fraud-product (device fingerprint) hook: accepted, not used.
    #[serde(default, rename = "telemetry_id")]
    _telemetry_id: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize, Default)]
struct MatchOptions {
    ip_match_required: Option<bool>,
    user_agent_match_required: Option<bool>,
}

async fn authenticate(
    State(state): State<AppState>,
    Caller(project): Caller,
    Json(req): Json<AuthenticateRequest>,
) -> Result<Response> {
    let token = present(&req.token).ok_or_else(|| Error::bad_request("token is required"))?;
    let options = req.options.unwrap_or_default();
    for (on, name) in [
        (options.ip_match_required, "ip_match_required"),
        (
            options.user_agent_match_required,
            "user_agent_match_required",
        ),
    ] {
        if on == Some(true) {
            return Err(Error::bad_request(format!(
                "options.{name} is not supported by hallpass; refused rather than ignored"
            )));
        }
    }
    if present(&req.code_verifier).is_some() {
        return Err(Error::bad_request(
            "code_verifier: PKCE is not supported for embeddable magic links; refused rather than ignored",
        ));
    }
    let duration = SessionDuration::parse_optional(req.session_duration_minutes)?;
    let session_token = present(&req.session_token);
    let session_jwt = present(&req.session_jwt);
    // Check the session to extend before spending the single-use token on it.
    let existing = if session_token.is_some() || session_jwt.is_some() {
        Some(sessions::find(&state, &project, session_token, session_jwt).await?)
    } else {
        None
    };
    let now = state.clock.now();
    let hash = hash_token(token);
    // The link's user is looked up first, so that a request refused for the session or the
    // claims leaves the link usable (a link's user never changes: the consume agrees).
    let link_user = store::magic_links::usable_for(&state.db, project.id.uuid, &hash, now)
        .await?
        .ok_or(Error::MagicLinkNotFound)?;
    sessions::before_spending(
        existing.as_ref(),
        link_user,
        req.session_custom_claims.as_ref(),
    )?;
    let (link_id, user_id) = store::magic_links::consume(&state.db, project.id.uuid, &hash, now)
        .await?
        .ok_or(Error::MagicLinkNotFound)?;
    // Past this point the link is spent.
    let done = async {
        let method_id = project.id.id(Kind::MagicLink, link_id);
        let mut detail = Map::new();
        detail.insert(
            "embeddable_magic_link_factor".into(),
            serde_json::json!({ "embedded_id": method_id }),
        );
        let factor = Factor::new("magic_link", "embedded", now, detail);
        let claims = req.session_custom_claims.as_ref();
        let user = store::users::get(&state.db, project.id.uuid, user_id)
            .await?
            .ok_or(Error::UserNotFound)?;
        let done = sessions::sign_in(
            &state,
            &project,
            user,
            existing,
            session_token,
            duration,
            claims,
            factor,
        )
        .await?;
        Ok::<_, Error>((method_id, done))
    }
    .await;
    let give_back = store::magic_links::release(&state.db, project.id.uuid, link_id, now);
    let (method_id, done) = sessions::after_spending(done, give_back).await?;
    let body = done.body(&project);
    Ok(render(AuthBody {
        user_id: Some(project.id.id(Kind::User, user_id)),
        method_id: Some(method_id),
        reset_sessions: Some(false),
        ..body
    }))
}
