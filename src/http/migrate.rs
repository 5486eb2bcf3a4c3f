//! `POST /v1/sessions/migrate`: trade an external IdP's access token for a session, by asking
//! the project's OIDC UserInfo endpoint (set by the operator, never by the request) who it is.

use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::auth::Caller;
use super::sessions::{self, AuthBody, render};
use super::{Json, present};
use crate::app::AppState;
use crate::domain::ids::Kind;
use crate::domain::session::{Factor, SessionDuration};
use crate::error::{Error, Result};
use crate::store;

/// The most of a UserInfo response we read.
const MAX_USERINFO_BYTES: usize = 64 * 1024;
/// The whole UserInfo exchange, connect to last byte.
const USERINFO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
pub struct MigrateRequest {
    session_token: Option<String>,
    session_duration_minutes: Option<i64>,
    session_custom_claims: Option<Map<String, Value>>,
    /// A fraud-product (device fingerprint) hook: accepted, not used.
    #[serde(default, rename = "telemetry_id")]
    _telemetry_id: Option<serde::de::IgnoredAny>,
}

pub async fn migrate(
    State(state): State<AppState>,
    Caller(project): Caller,
    Json(req): Json<MigrateRequest>,
) -> Result<Response> {
    let token = present(&req.session_token)
        .ok_or_else(|| Error::bad_request("session_token is required"))?;
    let duration = SessionDuration::parse_optional(req.session_duration_minutes)?;
    let url = project
        .userinfo_url
        .as_deref()
        .ok_or(Error::InvalidUserinfoUrl)?;
    let email =
        match tokio::time::timeout(USERINFO_TIMEOUT, userinfo_email(&state.http, url, token)).await
        {
            Ok(result) => result?,
            Err(_) => {
                return Err(Error::MigrateUnexpectedResponse(
                    "the userinfo endpoint timed out".into(),
                ));
            }
        };
    let user = store::users::find_by_email(&state.db, project.id.uuid, &email)
        .await?
        .ok_or(Error::MigrateEmailDoesNotExist)?;
    let user_id = project.id.id(Kind::User, user.user_id);
    match duration {
        Some(d) => {
            let factor = Factor::new("imported", "imported_auth0", state.clock.now(), Map::new());
            let done = sessions::start(
                &state,
                &project,
                user,
                d,
                vec![factor],
                req.session_custom_claims.as_ref(),
                Default::default(),
            )
            .await?;
            Ok(render(AuthBody {
                user_id: Some(user_id),
                ..done.body(&project)
            }))
        }
        None => Ok(render(AuthBody {
            user_id: Some(user_id),
            ..AuthBody::without_session(&project, &user)
        })),
    }
}

/// Calls UserInfo with the bearer token and returns its `email`. Every way it can go wrong is
/// `migrate_from_external_unexpected_response`, with the reason (never the token).
async fn userinfo_email(client: &reqwest::Client, url: &str, token: &str) -> Result<String> {
    let unexpected = |why: String| Error::MigrateUnexpectedResponse(why);
    let mut response = client
        .get(url)
        .bearer_auth(token)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| {
            unexpected(if e.is_timeout() {
                "the userinfo endpoint timed out".into()
            } else {
                "the userinfo endpoint could not be reached".into()
            })
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(unexpected(format!(
            "the userinfo endpoint answered HTTP {}",
            status.as_u16()
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|_| unexpected("the userinfo response was cut short or timed out".into()))?
    {
        if body.len() + chunk.len() > MAX_USERINFO_BYTES {
            return Err(unexpected("the userinfo response exceeds 64 KiB".into()));
        }
        body.extend_from_slice(&chunk);
    }
    let info: Value = serde_json::from_slice(&body)
        .map_err(|_| unexpected("the userinfo response is not JSON".into()))?;
    info.get("email")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .ok_or_else(|| unexpected("the userinfo response has no email".into()))
        .and_then(|e| {
            if e.contains('\0') || e.len() > 254 {
                Err(unexpected(
                    "the userinfo response's email is not an email address".into(),
                ))
            } else {
                Ok(e)
            }
        })
}
