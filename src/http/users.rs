//! `/v1/users`: the subset of Stytch's users API that sessions need.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::auth::Caller;
use super::sessions::render;
use super::views::{self, EmailView, UserView};
use super::{Json, PathText, present};
use crate::app::AppState;
use crate::directory::Project;
use crate::domain::ids::{self, Kind};
use crate::domain::rbac::MAX_USER_ROLES;
use crate::domain::session::DEFAULT_ROLE;
use crate::error::{Error, Result};
use crate::store::users::{UserPatch, UserRow};
use crate::store::{self, is_unique_violation};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/users", post(create))
        .route("/v1/users/{user_id}", get(read).put(update).delete(remove))
}

/// Finds a user of `project` by `user-…` id or by external id.
pub async fn resolve(state: &AppState, project: &Project, user_id: &str) -> Result<UserRow> {
    let found = match ids::parse(Kind::User, user_id) {
        Some((env, id)) if env == project.id.env => {
            store::users::get(&state.db, project.id.uuid, id).await?
        }
        Some(_) => None,
        None => store::users::get_by_external_id(&state.db, project.id.uuid, user_id).await?,
    };
    found.ok_or(Error::UserNotFound)
}

#[derive(Deserialize, Default)]
struct NameRequest {
    first_name: Option<String>,
    middle_name: Option<String>,
    last_name: Option<String>,
}

#[derive(Deserialize)]
struct CreateRequest {
    email: Option<String>,
    #[serde(default, deserialize_with = "super::object")]
    name: Option<NameRequest>,
    trusted_metadata: Option<Map<String, Value>>,
    untrusted_metadata: Option<Map<String, Value>>,
    external_id: Option<String>,
    roles: Option<Vec<String>>,
    /// Not supported: a phone number would be dropped (refused, see `unsupported`).
    phone_number: Option<String>,
    /// Not supported: the user would be active at once (refused when true).
    create_user_as_pending: Option<bool>,
    /// Fraud-detection context (`ip_address`, `user_agent`): accepted and not used; it
    /// neither grants nor restricts anything.
    #[serde(default, rename = "attributes")]
    _attributes: Option<serde::de::IgnoredAny>,
}

/// A plausible address: one `@`, both sides non-empty, a dot in the domain, no spaces.
pub(crate) fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Validates assigned roles against the project's policy and returns them as stored (a JSON
/// array). `stytch_user` is implied and not stored.
fn assigned_roles(project: &Project, roles: &[String]) -> Result<String> {
    if roles.len() > MAX_USER_ROLES {
        return Err(Error::bad_request(format!(
            "roles: at most {MAX_USER_ROLES} roles"
        )));
    }
    let mut assigned: Vec<&String> = Vec::new();
    for (i, role) in roles.iter().enumerate() {
        if role == DEFAULT_ROLE {
            continue;
        }
        if !project.rbac.has_role(role) {
            return Err(Error::bad_request(format!(
                "roles[{i}]: role {role:?} is not defined in the project's RBAC policy"
            )));
        }
        if !assigned.contains(&role) {
            assigned.push(role);
        }
    }
    serde_json::to_string(&assigned).map_err(Error::internal)
}

fn metadata(m: Option<Map<String, Value>>) -> Result<String> {
    serde_json::to_string(&m.unwrap_or_default()).map_err(Error::internal)
}

pub(crate) fn external_id(value: Option<String>) -> Result<Option<String>> {
    match value.filter(|v| !v.is_empty()) {
        Some(v) if v.contains('\0') => Err(Error::bad_request(
            "external_id must not contain the NUL character",
        )),
        Some(v) if v.chars().count() > 128 => Err(Error::bad_request(
            "external_id must be at most 128 characters",
        )),
        // An external id that looks like a user id would make lookups ambiguous.
        Some(v) if ids::parse(Kind::User, &v).is_some() => Err(Error::bad_request(
            "external_id must not have the form of a user_id",
        )),
        other => Ok(other),
    }
}

#[derive(Serialize)]
struct CreateBody<'a> {
    user_id: String,
    email_id: String,
    phone_id: &'static str,
    status: &'static str,
    user: UserView<'a>,
}

async fn create(
    State(state): State<AppState>,
    Caller(project): Caller,
    Json(req): Json<CreateRequest>,
) -> Result<Response> {
    let email = present(&req.email).map(str::trim).map(str::to_string);
    if email.as_deref().is_some_and(|e| !valid_email(e)) {
        return Err(Error::InvalidEmail);
    }
    // Fields hallpass does not implement are refused, not dropped.
    if present(&req.phone_number).is_some() {
        return Err(Error::bad_request(
            "phone_number: phone numbers are not supported by hallpass",
        ));
    }
    if req.create_user_as_pending == Some(true) {
        return Err(Error::bad_request(
            "create_user_as_pending: pending users are not supported by hallpass; users are active",
        ));
    }
    let user_roles = assigned_roles(&project, req.roles.as_deref().unwrap_or_default())?;
    let name = req.name.unwrap_or_default();
    let row = UserRow {
        user_roles,
        user_id: Uuid::new_v4(),
        external_id: external_id(req.external_id)?,
        email_id: email.as_ref().map(|_| Uuid::new_v4()),
        email,
        email_verified: false,
        first_name: name.first_name.unwrap_or_default(),
        middle_name: name.middle_name.unwrap_or_default(),
        last_name: name.last_name.unwrap_or_default(),
        trusted_metadata: metadata(req.trusted_metadata)?,
        untrusted_metadata: metadata(req.untrusted_metadata)?,
        user_created_at: state.clock.now(),
    };
    if let Err(e) = store::users::insert(&state.db, project.id.uuid, &row).await {
        return Err(duplicate(&state, &project, &row, e).await);
    }
    Ok(render(CreateBody {
        user_id: project.id.id(Kind::User, row.user_id),
        email_id: row
            .email_id
            .map(|id| project.id.id(Kind::Email, id))
            .unwrap_or_default(),
        phone_id: "",
        status: "active",
        user: views::user(&project, &row),
    }))
}

/// Names which unique field a failed write collided on.
async fn duplicate(state: &AppState, project: &Project, row: &UserRow, e: sqlx::Error) -> Error {
    if !is_unique_violation(&e) {
        return e.into();
    }
    if let Some(email) = &row.email
        && let Ok(Some(other)) =
            store::users::find_by_email(&state.db, project.id.uuid, email).await
        && other.user_id != row.user_id
    {
        return Error::DuplicateEmail;
    }
    Error::bad_request("external_id is already used by another user of this project")
}

async fn read(
    State(state): State<AppState>,
    Caller(project): Caller,
    PathText(user_id): PathText,
) -> Result<Response> {
    let user = resolve(&state, &project, &user_id).await?;
    Ok(render(views::user(&project, &user)))
}

#[derive(Deserialize)]
struct UpdateRequest {
    #[serde(default, deserialize_with = "super::object")]
    name: Option<NameRequest>,
    trusted_metadata: Option<Map<String, Value>>,
    untrusted_metadata: Option<Map<String, Value>>,
    external_id: Option<String>,
    roles: Option<Vec<String>>,
    /// Fraud-detection context: accepted and not used (see `CreateRequest`).
    #[serde(default, rename = "attributes")]
    _attributes: Option<serde::de::IgnoredAny>,
}

#[derive(Serialize)]
struct UpdateBody<'a> {
    user_id: String,
    emails: Vec<EmailView>,
    phone_numbers: [(); 0],
    crypto_wallets: [(); 0],
    user: UserView<'a>,
}

async fn update(
    State(state): State<AppState>,
    Caller(project): Caller,
    PathText(user_id): PathText,
    Json(req): Json<UpdateRequest>,
) -> Result<Response> {
    let found = resolve(&state, &project, &user_id).await?;
    let name = req.name.unwrap_or_default();
    let roles = req
        .roles
        .as_deref()
        .map(|r| assigned_roles(&project, r))
        .transpose()?;
    let patch = UserPatch {
        roles,
        first_name: name.first_name,
        middle_name: name.middle_name,
        last_name: name.last_name,
        trusted_metadata: req
            .trusted_metadata
            .map(|m| metadata(Some(m)))
            .transpose()?,
        untrusted_metadata: req
            .untrusted_metadata
            .map(|m| metadata(Some(m)))
            .transpose()?,
        external_id: match req.external_id {
            Some(v) => Some(external_id(Some(v))?),
            None => None,
        },
    };
    let user = match store::users::update(&state.db, project.id.uuid, found.user_id, &patch).await {
        Ok(Some(user)) => user,
        Ok(None) => return Err(Error::UserNotFound),
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::bad_request(
                "external_id is already used by another user of this project",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(render(UpdateBody {
        user_id: project.id.id(Kind::User, user.user_id),
        emails: views::emails(&project.id, &user),
        phone_numbers: [],
        crypto_wallets: [],
        user: views::user(&project, &user),
    }))
}

#[derive(Serialize)]
struct DeleteBody {
    user_id: String,
}

async fn remove(
    State(state): State<AppState>,
    Caller(project): Caller,
    PathText(user_id): PathText,
) -> Result<Response> {
    let user = resolve(&state, &project, &user_id).await?;
    let now = state.clock.now();
    let cursor =
        crate::store::revocations::delete_user(&state.db, project.id.uuid, user.user_id, now)
            .await?
            .ok_or(Error::UserNotFound)?;
    state.feed.published(project.id.uuid, cursor);
    Ok(render(DeleteBody {
        user_id: project.id.id(Kind::User, user.user_id),
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn email_shapes() {
        for ok in ["a@b.co", "first.last+tag@sub.example.org"] {
            assert!(super::valid_email(ok), "{ok}");
        }
        for bad in [
            "", "a", "a@b", "@b.co", "a@.co", "a@b.co.", "a b@c.de", "a@b@c.de",
        ] {
            assert!(!super::valid_email(bad), "{bad}");
        }
    }
}
