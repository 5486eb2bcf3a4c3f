//! Projects and their caller secrets.

use uuid::Uuid;

use super::Db;
use crate::with_db;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProjectRow {
    pub id: Uuid,
    pub live: bool,
    pub name: String,
    pub userinfo_url: Option<String>,
    pub idle_timeout_minutes: Option<i64>,
    pub absolute_lifetime_minutes: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SecretRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub secret_hash: String,
    pub created_at: i64,
}

/// Inserts a project; `false` when one with this id already exists.
pub async fn insert_if_missing(db: &Db, p: &ProjectRow) -> sqlx::Result<bool> {
    let done = with_db!(db, pool => sqlx::query(
        "INSERT INTO projects (id, live, name, userinfo_url, idle_timeout_minutes, absolute_lifetime_minutes, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
    )
    .bind(p.id)
    .bind(p.live)
    .bind(&p.name)
    .bind(&p.userinfo_url)
    .bind(p.idle_timeout_minutes)
    .bind(p.absolute_lifetime_minutes)
    .bind(p.created_at)
    .execute(pool)
    .await?
    .rows_affected());
    Ok(done == 1)
}

pub async fn list(db: &Db) -> sqlx::Result<Vec<ProjectRow>> {
    with_db!(db, pool => sqlx::query_as(
        "SELECT id, live, name, userinfo_url, idle_timeout_minutes, absolute_lifetime_minutes, created_at
         FROM projects ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await)
}

pub async fn get(db: &Db, id: Uuid) -> sqlx::Result<Option<ProjectRow>> {
    with_db!(db, pool => sqlx::query_as(
        "SELECT id, live, name, userinfo_url, idle_timeout_minutes, absolute_lifetime_minutes, created_at
         FROM projects WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await)
}

/// A change to a project's operator-settable fields: `Some` sets a field (to `None`: off or
/// unset), `None` leaves it as stored.
#[derive(Debug, Clone, Default)]
pub struct SettingsChange {
    pub userinfo_url: Option<Option<String>>,
    pub idle_timeout_minutes: Option<Option<i64>>,
    pub absolute_lifetime_minutes: Option<Option<i64>>,
}

/// Applies `change` in one statement and returns the project as stored after it (`None`:
/// no such project). Only the fields the change names are written: two operators (or a
/// replica's bootstrap and an operator) changing different fields at once both keep theirs.
pub async fn update_settings(
    db: &Db,
    id: Uuid,
    change: &SettingsChange,
) -> sqlx::Result<Option<ProjectRow>> {
    with_db!(db, pool => sqlx::query_as(
        "UPDATE projects SET
           userinfo_url = CASE WHEN $2 THEN $3 ELSE userinfo_url END,
           idle_timeout_minutes = CASE WHEN $4 THEN $5 ELSE idle_timeout_minutes END,
           absolute_lifetime_minutes = CASE WHEN $6 THEN $7 ELSE absolute_lifetime_minutes END
         WHERE id = $1
         RETURNING id, live, name, userinfo_url, idle_timeout_minutes, absolute_lifetime_minutes, created_at",
    )
    .bind(id)
    .bind(change.userinfo_url.is_some())
    .bind(change.userinfo_url.clone().flatten())
    .bind(change.idle_timeout_minutes.is_some())
    .bind(change.idle_timeout_minutes.flatten())
    .bind(change.absolute_lifetime_minutes.is_some())
    .bind(change.absolute_lifetime_minutes.flatten())
    .fetch_optional(pool)
    .await)
}

/// Adds a secret hash; an existing row with this id is left alone (idempotent bootstrap).
pub async fn insert_secret(
    db: &Db,
    id: Uuid,
    project: Uuid,
    hash: &str,
    now: i64,
) -> sqlx::Result<()> {
    with_db!(db, pool => sqlx::query(
        "INSERT INTO project_secrets (id, project_id, secret_hash, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(project)
    .bind(hash)
    .bind(now)
    .execute(pool)
    .await
    .map(|_| ()))
}

/// Every secret not revoked, of every project.
pub async fn active_secrets(db: &Db) -> sqlx::Result<Vec<SecretRow>> {
    with_db!(db, pool => sqlx::query_as(
        "SELECT id, project_id, secret_hash, created_at FROM project_secrets WHERE revoked_at IS NULL ORDER BY seq DESC",
    )
    .fetch_all(pool)
    .await)
}

/// Revokes every active secret of `project` but the newest (by insertion order, not by
/// timestamp); returns how many. One statement, so the newest is decided where it is kept.
pub async fn revoke_all_but_newest_secret(db: &Db, project: Uuid, now: i64) -> sqlx::Result<u64> {
    with_db!(db, pool => sqlx::query(
        "UPDATE project_secrets SET revoked_at = $2
         WHERE project_id = $1 AND revoked_at IS NULL
           AND seq < (SELECT MAX(seq) FROM project_secrets WHERE project_id = $1 AND revoked_at IS NULL)",
    )
    .bind(project)
    .bind(now)
    .execute(pool)
    .await
    .map(|r| r.rows_affected()))
}

/// Every project's RBAC policy document (validated when it was set) and whether its
/// revocation feed needs the project's credentials.
pub async fn extras(db: &Db) -> sqlx::Result<Vec<(Uuid, String, bool)>> {
    with_db!(db, pool => sqlx::query_as("SELECT id, rbac_policy, revocations_private FROM projects")
        .fetch_all(pool)
        .await)
}

/// Makes a project's revocation feed private (Basic auth) or public.
pub async fn set_revocations_private(db: &Db, project: Uuid, private: bool) -> sqlx::Result<bool> {
    let n = with_db!(db, pool => sqlx::query("UPDATE projects SET revocations_private = $2 WHERE id = $1")
        .bind(project)
        .bind(private)
        .execute(pool)
        .await?
        .rows_affected());
    Ok(n == 1)
}

/// Replaces a project's RBAC policy (one statement: readers see the old one or the new one).
pub async fn set_rbac_policy(db: &Db, project: Uuid, policy: &str) -> sqlx::Result<bool> {
    let n = with_db!(db, pool => sqlx::query("UPDATE projects SET rbac_policy = $2 WHERE id = $1")
        .bind(project)
        .bind(policy)
        .execute(pool)
        .await?
        .rows_affected());
    Ok(n == 1)
}

pub async fn rbac_policy(db: &Db, project: Uuid) -> sqlx::Result<Option<String>> {
    with_db!(db, pool => sqlx::query_scalar("SELECT rbac_policy FROM projects WHERE id = $1")
        .bind(project)
        .fetch_optional(pool)
        .await)
}

/// Makes `id` the project's one active bootstrap secret: inserts it (marked as the
/// bootstrap's) unless present, and revokes every other bootstrap secret of the project, in
/// one transaction. Secrets made with the CLI are left alone.
pub async fn replace_bootstrap_secret(
    db: &Db,
    id: Uuid,
    project: Uuid,
    hash: &str,
    now: i64,
) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    crate::with_tx!(&mut tx, c => {
        sqlx::query(
            "INSERT INTO project_secrets (id, project_id, secret_hash, created_at, bootstrap)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET revoked_at = NULL, bootstrap = true",
        )
        .bind(id)
        .bind(project)
        .bind(hash)
        .bind(now)
        .bind(true)
        .execute(&mut *c)
        .await?;
        sqlx::query(
            "UPDATE project_secrets SET revoked_at = $3
             WHERE project_id = $1 AND bootstrap AND id <> $2 AND revoked_at IS NULL",
        )
        .bind(project)
        .bind(id)
        .bind(now)
        .execute(&mut *c)
        .await?;
    });
    tx.commit().await
}
