//! Caller authentication: HTTP Basic `project_id:secret`, checked with argon2id once per
//! secret per process and remembered by a fast hash of the presented value.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::app::AppState;
use crate::directory::Project;
use crate::domain::crypto::{sha256, verify_secret};
use crate::domain::ids::ProjectId;
use crate::error::Error;
use crate::metrics::Metrics;

/// Remembered verifications are forgotten wholesale past this many (a bound on memory that
/// a stream of distinct valid secrets could otherwise grow).
const MAX_REMEMBERED: usize = 10_000;
/// How long a caller waits for an argon2 slot before being told to retry.
const ARGON2_WAIT: Duration = Duration::from_secs(2);

pub struct CallerCache {
    /// sha256(project_id ":" secret) → (project, secret row) it was verified against.
    verified: Mutex<HashMap<[u8; 32], (Uuid, Uuid)>>,
    /// Bounds how many argon2 verifications run at once, so wrong secrets cannot make the
    /// server hash without limit.
    argon2: Arc<Semaphore>,
}

impl CallerCache {
    pub fn new(concurrency: usize) -> Self {
        Self {
            verified: Mutex::new(HashMap::new()),
            argon2: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    fn remembered(&self, key: &[u8; 32]) -> Option<(Uuid, Uuid)> {
        self.verified.lock().ok()?.get(key).copied()
    }

    fn remember(&self, key: [u8; 32], project: Uuid, secret: Uuid) {
        if let Ok(mut m) = self.verified.lock() {
            if m.len() >= MAX_REMEMBERED {
                m.clear();
            }
            m.insert(key, (project, secret));
        }
    }
}

/// The authenticated caller's project.
pub struct Caller(pub Arc<Project>);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let (project_id, secret) = basic_credentials(parts).ok_or(Error::Unauthorized)?;
        let id: ProjectId = project_id.parse().map_err(|_| Error::Unauthorized)?;
        let project = state
            .directory
            .get(id.uuid)
            .filter(|p| p.id == id)
            .ok_or(Error::Unauthorized)?;
        let mut input = Vec::with_capacity(project_id.len() + secret.len() + 1);
        input.extend_from_slice(project_id.as_bytes());
        input.push(b':');
        input.extend_from_slice(secret.as_bytes());
        let key = sha256(&input);

        if let Some((p, secret_id)) = state.callers.remembered(&key) {
            // Still valid only while that secret is active (revocation reaches us on refresh).
            if p == id.uuid && project.secrets.iter().any(|(s, _)| *s == secret_id) {
                return Ok(Caller(project));
            }
        }

        let permit =
            tokio::time::timeout(ARGON2_WAIT, state.callers.argon2.clone().acquire_owned())
                .await
                .map_err(|_| {
                    Metrics::inc(&state.metrics.argon2_rejections);
                    Error::TooManyRequests(1)
                })?
                .map_err(|_| Error::ServiceUnavailable)?;
        Metrics::inc(&state.metrics.argon2_verifications);
        let candidates = project.secrets.clone();
        let matched = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            candidates
                .into_iter()
                .find(|(_, phc)| verify_secret(&secret, phc))
                .map(|(id, _)| id)
        })
        .await
        .map_err(Error::internal)?;
        match matched {
            Some(secret_id) => {
                state.callers.remember(key, id.uuid, secret_id);
                Ok(Caller(project))
            }
            None => Err(Error::Unauthorized),
        }
    }
}

fn basic_credentials(parts: &Parts) -> Option<(String, String)> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}
