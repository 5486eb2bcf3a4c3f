//! `POST /v1/sessions/attest`: a token from the app's own identity provider, verified against
//! a trusted auth token profile, becomes a session (or a factor of an existing one).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::auth::Caller;
use super::sessions::{self, AuthBody, render};
use super::{Json, present};
use crate::app::AppState;
use crate::directory::Project;
use crate::domain::crypto::sha256;
use crate::domain::ids::Kind;
use crate::domain::session::{Factor, SessionDuration};
use crate::error::{Error, Result};
use crate::store;
use crate::store::users::UserRow;
use crate::trusted::{self, Attested};

#[derive(Deserialize)]
pub struct AttestRequest {
    profile_id: Option<String>,
    token: Option<String>,
    session_duration_minutes: Option<i64>,
    session_custom_claims: Option<Map<String, Value>>,
    session_token: Option<String>,
    session_jwt: Option<String>,
    /// A fraud-product (device fingerprint) hook: accepted, not used.
    #[serde(default, rename = "telemetry_id")]
    _telemetry_id: Option<serde::de::IgnoredAny>,
}

fn refuse(status: StatusCode, error_type: &'static str, message: String) -> Error {
    Error::Attest {
        status,
        error_type,
        message,
    }
}

pub async fn attest(
    State(state): State<AppState>,
    Caller(project): Caller,
    Json(req): Json<AttestRequest>,
) -> Result<Response> {
    let profile_text =
        present(&req.profile_id).ok_or_else(|| Error::bad_request("profile_id is required"))?;
    let token = present(&req.token).ok_or_else(|| Error::bad_request("token is required"))?;
    let duration = SessionDuration::parse_optional(req.session_duration_minutes)?;
    let unknown_profile = || {
        refuse(
            StatusCode::NOT_FOUND,
            "trusted_auth_token_profile_not_found",
            format!("No trusted auth token profile {profile_text:?} in this project."),
        )
    };
    let profile_id = project
        .id
        .parse(Kind::TokenProfile, profile_text)
        .ok_or_else(unknown_profile)?;
    let profile = store::token_profiles::get(&state.db, project.id.uuid, profile_id)
        .await?
        .ok_or_else(unknown_profile)?;
    let now = state.clock.now();
    let attested = trusted::verify(
        &state.provider_keys,
        &state.http,
        &profile,
        profile_text,
        token,
        now,
    )
    .await?;

    // The session to add the factor to is checked before the token is spent.
    let session_token = present(&req.session_token);
    let session_jwt = present(&req.session_jwt);
    let existing = if session_token.is_some() || session_jwt.is_some() {
        Some(sessions::find(&state, &project, session_token, session_jwt).await?)
    } else {
        None
    };
    let user = user_for(&state, &project, &profile, &attested).await?;
    sessions::before_spending(
        existing.as_ref(),
        user.user_id,
        req.session_custom_claims.as_ref(),
    )?;
    let token_id_hash = sha256(attested.token_id.as_bytes());
    if !store::token_profiles::consume_token_id(
        &state.db,
        profile.id,
        &token_id_hash,
        attested.expires_at + trusted::LEEWAY_SECONDS,
    )
    .await?
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "trusted_auth_token_already_used",
            format!(
                "A token with this {} was already attested; each token is accepted once.",
                profile.token_id_claim
            ),
        ));
    }
    // Past this point the token is spent.
    let done = async {
        let user = apply_roles(&state, &project, user, &attested.role_ids).await?;

        let mut detail = Map::new();
        detail.insert(
            "trusted_auth_token_factor".into(),
            json!({ "token_id": attested.token_id }),
        );
        let factor = Factor::new("trusted_auth_token", "trusted_token_exchange", now, detail);
        let claims = req.session_custom_claims.as_ref();
        let user_id = project.id.id(Kind::User, user.user_id);
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
        Ok::<_, Error>((user_id, done))
    }
    .await;
    let give_back = store::token_profiles::release_token_id(&state.db, profile.id, &token_id_hash);
    let (user_id, done) = sessions::after_spending(done, give_back).await?;
    let body = done.body(&project);
    Ok(render(AuthBody {
        user_id: Some(user_id),
        ..body
    }))
}

/// The token's user: by external id when the profile maps one, else by email; created when
/// the profile allows just-in-time provisioning.
async fn user_for(
    state: &AppState,
    project: &Project,
    profile: &store::token_profiles::ProfileRow,
    attested: &Attested,
) -> Result<UserRow> {
    let found = match &attested.external_user_id {
        Some(external) => {
            store::users::get_by_external_id(&state.db, project.id.uuid, external).await?
        }
        None => store::users::find_by_email(&state.db, project.id.uuid, &attested.email).await?,
    };
    if let Some(user) = found {
        return Ok(user);
    }
    if !profile.jit_provisioning {
        return Err(Error::UserNotFound);
    }
    // The token's values go through the rules every user's do.
    if !super::users::valid_email(&attested.email) {
        return Err(Error::InvalidEmail);
    }
    let external_id = super::users::external_id(attested.external_user_id.clone())?;
    let row = UserRow {
        user_id: Uuid::new_v4(),
        external_id,
        email_id: Some(Uuid::new_v4()),
        email: Some(attested.email.clone()),
        email_verified: true,
        first_name: String::new(),
        middle_name: String::new(),
        last_name: String::new(),
        trusted_metadata: "{}".into(),
        untrusted_metadata: "{}".into(),
        user_created_at: state.clock.now(),
        user_roles: "[]".into(),
    };
    match store::users::insert(&state.db, project.id.uuid, &row).await {
        Ok(()) => Ok(row),
        // Created meanwhile by a concurrent attest, or the email belongs to another user.
        Err(e) if store::is_unique_violation(&e) => {
            let again = match &attested.external_user_id {
                Some(external) => {
                    store::users::get_by_external_id(&state.db, project.id.uuid, external).await?
                }
                None => {
                    store::users::find_by_email(&state.db, project.id.uuid, &attested.email).await?
                }
            };
            again.ok_or(Error::DuplicateEmail)
        }
        Err(e) => Err(e.into()),
    }
}

/// Adds the token's `role_ids` that the project's policy defines to the user's roles, as a
/// compare-and-swap on the roles read: a concurrent change of the user's roles (an operator
/// removing one, another attest adding one) is never overwritten; the merge is redone on
/// what is stored now.
async fn apply_roles(
    state: &AppState,
    project: &Project,
    mut user: UserRow,
    role_ids: &[String],
) -> Result<UserRow> {
    /// Attempts before giving up (503) under a storm of changes to one user's roles.
    const ATTEMPTS: usize = 8;
    for _ in 0..ATTEMPTS {
        let mut assigned: Vec<String> = serde_json::from_str(&user.user_roles).unwrap_or_default();
        let before = assigned.len();
        for role in role_ids {
            if project.rbac.has_role(role)
                && role != crate::domain::session::DEFAULT_ROLE
                && !assigned.contains(role)
            {
                assigned.push(role.clone());
            }
        }
        if assigned.len() == before {
            return Ok(user);
        }
        assigned.truncate(crate::domain::rbac::MAX_USER_ROLES);
        let roles = serde_json::to_string(&assigned).map_err(Error::internal)?;
        let (project_id, user_id) = (project.id.uuid, user.user_id);
        match store::users::replace_roles(&state.db, project_id, user_id, &user.user_roles, &roles)
            .await?
        {
            Some(updated) => return Ok(updated),
            None => {
                user = store::users::get(&state.db, project_id, user_id)
                    .await?
                    .ok_or(Error::UserNotFound)?;
            }
        }
    }
    Err(Error::ServiceUnavailable)
}
