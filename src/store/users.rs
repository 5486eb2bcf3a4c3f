//! Users (one email each: the subset the sessions API needs).

use uuid::Uuid;

use super::Db;
use crate::with_db;

/// The user columns, aliased so they can sit beside a session's in one row.
#[macro_export]
macro_rules! user_columns {
    () => {
        "u.id AS user_id, u.external_id, u.email_id, u.email, u.email_verified, u.first_name, \
         u.middle_name, u.last_name, u.trusted_metadata, u.untrusted_metadata, u.created_at AS user_created_at"
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
}

pub async fn insert(db: &Db, project: Uuid, u: &UserRow) -> sqlx::Result<()> {
    with_db!(db, pool => sqlx::query(
        "INSERT INTO users (id, project_id, external_id, email_id, email, email_lower, email_verified,
                            first_name, middle_name, last_name, trusted_metadata, untrusted_metadata, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
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

/// Writes the updatable fields (name, metadata, external id).
pub async fn update(db: &Db, project: Uuid, u: &UserRow) -> sqlx::Result<bool> {
    let n = with_db!(db, pool => sqlx::query(
        "UPDATE users SET external_id = $3, first_name = $4, middle_name = $5, last_name = $6,
                          trusted_metadata = $7, untrusted_metadata = $8
         WHERE project_id = $1 AND id = $2",
    )
    .bind(project)
    .bind(u.user_id)
    .bind(&u.external_id)
    .bind(&u.first_name)
    .bind(&u.middle_name)
    .bind(&u.last_name)
    .bind(&u.trusted_metadata)
    .bind(&u.untrusted_metadata)
    .execute(pool)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// Deletes the user; its sessions and magic links go with it (ON DELETE CASCADE).
pub async fn delete(db: &Db, project: Uuid, id: Uuid) -> sqlx::Result<bool> {
    let n = with_db!(db, pool => sqlx::query("DELETE FROM users WHERE project_id = $1 AND id = $2")
        .bind(project)
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected());
    Ok(n == 1)
}
