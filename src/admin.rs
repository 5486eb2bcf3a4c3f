//! Operator actions shared by the CLI and `serve`: creating projects, bootstrapping the one
//! named by the environment, secrets and settings.

use uuid::Uuid;

use crate::domain::crypto::{self, MasterKeys, OpaqueToken};
use crate::domain::ids::{Env, ProjectId};
use crate::domain::keys::Schedule;
use crate::keyring::{self, RingError, Until};
use crate::store::projects::ProjectRow;
use crate::store::{self, Db};

pub const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error("{0}")]
    Invalid(String),
}

/// A project's credentials, shown once.
pub struct Credentials {
    pub project_id: ProjectId,
    pub secret: OpaqueToken,
}

async fn hash(secret: &str) -> Result<String, AdminError> {
    let secret = secret.to_string();
    tokio::task::spawn_blocking(move || crypto::hash_secret(&secret))
        .await
        .map_err(|e| AdminError::Invalid(format!("hashing: {e}")))
}

pub async fn create_project(
    db: &Db,
    master: &MasterKeys,
    schedule: &Schedule,
    name: &str,
    env: Env,
    now: i64,
) -> Result<Credentials, AdminError> {
    keyring::may_seal(db, master, now).await?;
    let id = ProjectId::new(env);
    store::projects::insert_if_missing(
        db,
        &ProjectRow {
            id: id.uuid,
            live: env.is_live(),
            name: name.to_string(),
            userinfo_url: None,
            idle_timeout_minutes: None,
            absolute_lifetime_minutes: None,
            created_at: now,
        },
    )
    .await?;
    let secret = OpaqueToken::generate();
    store::projects::insert_secret(
        db,
        Uuid::new_v4(),
        id.uuid,
        &hash(secret.expose()).await?,
        now,
    )
    .await?;
    keyring::converge(db, master, schedule, id.uuid, env, now, Until::Converged).await?;
    Ok(Credentials {
        project_id: id,
        secret,
    })
}

/// Makes sure the bootstrap project exists and accepts `secret`, and no earlier bootstrap
/// secret. Idempotent across restarts and across replicas starting together: the project and
/// the secret row have fixed ids.
pub async fn bootstrap(
    db: &Db,
    master: &MasterKeys,
    schedule: &Schedule,
    project: &str,
    secret: &str,
    userinfo_url: Option<&str>,
    now: i64,
) -> Result<ProjectId, AdminError> {
    let id = validate_bootstrap(project, secret, userinfo_url)?;
    keyring::may_seal(db, master, now).await?;
    store::projects::insert_if_missing(
        db,
        &ProjectRow {
            id: id.uuid,
            live: id.env.is_live(),
            name: "bootstrap".into(),
            userinfo_url: userinfo_url.map(str::to_string),
            idle_timeout_minutes: None,
            absolute_lifetime_minutes: None,
            created_at: now,
        },
    )
    .await?;
    if let Some(url) = userinfo_url
        && let Some(row) = store::projects::get(db, id.uuid).await?
        && row.userinfo_url.as_deref() != Some(url)
    {
        // The URL alone: settings an operator changes meanwhile stay as they set them.
        let change = store::projects::SettingsChange {
            userinfo_url: Some(Some(url.to_string())),
            ..Default::default()
        };
        store::projects::update_settings(db, row.id, &change).await?;
    }
    // The row id is derived from project and secret: the same pair always lands on one row.
    let digest =
        crypto::sha256(format!("hallpass bootstrap secret\0{project}\0{secret}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    let secret_id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let known = store::projects::active_secrets(db)
        .await?
        .iter()
        .any(|s| s.id == secret_id);
    // Hashing is skipped when the row is active; the replacement runs either way, so a secret
    // changed while this replica was down still retires the previous one, and going back to
    // an earlier bootstrap secret makes it the active one again (its row is un-revoked).
    let hashed = if known {
        String::new()
    } else {
        hash(secret).await?
    };
    store::projects::replace_bootstrap_secret(db, secret_id, id.uuid, &hashed, now).await?;
    keyring::converge(db, master, schedule, id.uuid, id.env, now, Until::Signing).await?;
    Ok(id)
}

/// Checks the bootstrap settings without touching the database.
pub fn validate_bootstrap(
    project: &str,
    secret: &str,
    userinfo_url: Option<&str>,
) -> Result<ProjectId, AdminError> {
    let id: ProjectId = project
        .parse()
        .map_err(|e| AdminError::Invalid(format!("HALLPASS_BOOTSTRAP_PROJECT_ID: {e}")))?;
    if secret.chars().count() < MIN_SECRET_LEN {
        return Err(AdminError::Invalid(format!(
            "HALLPASS_BOOTSTRAP_SECRET must be at least {MIN_SECRET_LEN} characters"
        )));
    }
    if let Some(url) = userinfo_url {
        validate_userinfo_url(url)?;
    }
    Ok(id)
}

pub fn validate_userinfo_url(url: &str) -> Result<(), AdminError> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err(AdminError::Invalid(format!(
            "userinfo URL must start with https:// or http://, got {url:?}"
        )))
    }
}

/// Issues a new secret; the old ones keep working until `revoke_old_secrets`.
pub async fn rotate_secret(
    db: &Db,
    project: Uuid,
    now: i64,
) -> Result<(Uuid, OpaqueToken), AdminError> {
    let secret = OpaqueToken::generate();
    let id = Uuid::new_v4();
    store::projects::insert_secret(db, id, project, &hash(secret.expose()).await?, now).await?;
    Ok((id, secret))
}

pub async fn get_project(db: &Db, id: &str) -> Result<ProjectRow, AdminError> {
    let parsed: ProjectId = id.parse().map_err(AdminError::Invalid)?;
    store::projects::get(db, parsed.uuid)
        .await?
        .filter(|p| p.live == parsed.env.is_live())
        .ok_or_else(|| AdminError::Invalid(format!("no project {id}")))
}
