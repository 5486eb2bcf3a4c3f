//! Users (one email each: the subset the sessions API needs).

use uuid::Uuid;

use super::Db;
use crate::with_db;

/// The user columns, aliased so they can sit beside a session's in one row.
#[macro_export]
macro_rules! user_columns {
    () => {
        "u.id AS user_id, u.external_id, u.email_id, u.email, u.email_verified, u.first_name, \
         u.middle_name, u.last_name, u.trusted_metadata, u.untrusted_metadata, u.created_at AS user_created_at, \
         u.roles AS user_roles"
    };
}

/// The same columns as `user_columns!`, unqualified, for an `UPDATE … RETURNING`.
macro_rules! user_returning {
    () => {
        "id AS user_id, external_id, email_id, email, email_verified, first_name, middle_name, \
         last_name, trusted_metadata, untrusted_metadata, created_at AS user_created_at, \
         roles AS user_roles"
    };
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub user_id: Uuid,
    pub external_id: Option<String>,
    pub email_id: Option<Uuid>,
    pub email: Option<String>,
    pub email_verified: bool,
    pub first_name: String,
    pub middle_name: String,
    pub last_name: String,
    /// JSON object text.
    pub trusted_metadata: String,
    /// JSON object text.
    pub untrusted_metadata: String,
    pub user_created_at: i64,
    /// JSON array of the role ids assigned to the user (`stytch_user` is implied).
    pub user_roles: String,
}

pub async fn insert(db: &Db, project: Uuid, u: &UserRow) -> sqlx::Result<()> {
    with_db!(db, pool => sqlx::query(
        "INSERT INTO users (id, project_id, external_id, email_id, email, email_lower, email_verified,
                            first_name, middle_name, last_name, trusted_metadata, untrusted_metadata, created_at, roles)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(u.user_id)
    .bind(project)
    .bind(&u.external_id)
    .bind(u.email_id)
    .bind(&u.email)
    .bind(u.email.as_ref().map(|e| e.to_lowercase()))
    .bind(u.email_verified)
    .bind(&u.first_name)
    .bind(&u.middle_name)
    .bind(&u.last_name)
    .bind(&u.trusted_metadata)
    .bind(&u.untrusted_metadata)
    .bind(u.user_created_at)
    .bind(&u.user_roles)
    .execute(pool)
    .await
    .map(|_| ()))
}

pub async fn get(db: &Db, project: Uuid, id: Uuid) -> sqlx::Result<Option<UserRow>> {
    with_db!(db, pool => sqlx::query_as(concat!(
        "SELECT ", user_columns!(), " FROM users u WHERE u.project_id = $1 AND u.id = $2"
    ))
    .bind(project)
    .bind(id)
    .fetch_optional(pool)
    .await)
}

pub async fn get_by_external_id(
    db: &Db,
    project: Uuid,
    external_id: &str,
) -> sqlx::Result<Option<UserRow>> {
    with_db!(db, pool => sqlx::query_as(concat!(
        "SELECT ", user_columns!(), " FROM users u WHERE u.project_id = $1 AND u.external_id = $2"
    ))
    .bind(project)
    .bind(external_id)
    .fetch_optional(pool)
    .await)
}

/// Case-insensitive: emails are matched on their lower-cased form.
pub async fn find_by_email(db: &Db, project: Uuid, email: &str) -> sqlx::Result<Option<UserRow>> {
    with_db!(db, pool => sqlx::query_as(concat!(
        "SELECT ", user_columns!(), " FROM users u WHERE u.project_id = $1 AND u.email_lower = $2"
    ))
    .bind(project)
    .bind(email.to_lowercase())
    .fetch_optional(pool)
    .await)
}

/// What `PUT /v1/users/{id}` changes: each `Some` field is written, the others keep their
/// stored value (`external_id: Some(None)` clears it).
#[derive(Debug, Default)]
pub struct UserPatch {
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub trusted_metadata: Option<String>,
    pub untrusted_metadata: Option<String>,
    pub external_id: Option<Option<String>>,
    /// JSON array of role ids, replacing the assigned roles.
    pub roles: Option<String>,
}

/// Applies `patch` in one statement and returns the user as updated (`None`: no such user).
/// Each field is written only when given, so concurrent updates of different fields are
/// all kept.
pub async fn update(
    db: &Db,
    project: Uuid,
    id: Uuid,
    patch: &UserPatch,
) -> sqlx::Result<Option<UserRow>> {
    with_db!(db, pool => sqlx::query_as(concat!(
        "UPDATE users SET first_name = COALESCE($3, first_name),
                          middle_name = COALESCE($4, middle_name),
                          last_name = COALESCE($5, last_name),
                          trusted_metadata = COALESCE($6, trusted_metadata),
                          untrusted_metadata = COALESCE($7, untrusted_metadata),
                          external_id = CASE WHEN $8 THEN $9 ELSE external_id END,
                          roles = COALESCE($10, roles)
         WHERE project_id = $1 AND id = $2
         RETURNING ",
        user_returning!()
    ))
    .bind(project)
    .bind(id)
    .bind(&patch.first_name)
    .bind(&patch.middle_name)
    .bind(&patch.last_name)
    .bind(&patch.trusted_metadata)
    .bind(&patch.untrusted_metadata)
    .bind(patch.external_id.is_some())
    .bind(patch.external_id.clone().flatten())
    .bind(&patch.roles)
    .fetch_optional(pool)
    .await)
}

/// Replaces the user's roles with `roles` only if they are still `expected` (the JSON text
/// read before): a read-modify-write of the roles that loses no concurrent change. `None`:
/// they changed meanwhile, or there is no such user; read again and retry.
pub async fn replace_roles(
    db: &Db,
    project: Uuid,
    id: Uuid,
    expected: &str,
    roles: &str,
) -> sqlx::Result<Option<UserRow>> {
    with_db!(db, pool => sqlx::query_as(concat!(
        "UPDATE users SET roles = $4
         WHERE project_id = $1 AND id = $2 AND roles = $3
         RETURNING ",
        user_returning!()
    ))
    .bind(project)
    .bind(id)
    .bind(expected)
    .bind(roles)
    .fetch_optional(pool)
    .await)
}
