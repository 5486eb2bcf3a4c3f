//! Role-based access control, decided as the Stytch SDKs and hallpass decide it: the project's
//! policy (`GET {base}/v1/rbac/policy`, Basic `project_id:secret`) is cached for five minutes,
//! and a check is granted when one of the session's roles has a permission on the resource
//! whose actions hold the action or `*`. Everything else is denied, and so is every check
//! while the policy cannot be fetched: it never fails open.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::clock::{Clock, elapsed};
use crate::http::{describe, describe_failure, read_body};

/// After a failed fetch, checks are denied without asking again for this long.
const FAILURE_COOLDOWN: Duration = Duration::from_secs(1);

/// A project's RBAC policy, in Stytch's shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Policy {
    /// The roles and their permissions.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// The resources and their actions.
    #[serde(default)]
    pub resources: Vec<Resource>,
    /// The scopes (served, not used by session checks).
    #[serde(default)]
    pub scopes: Vec<Scope>,
}

/// A role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Role {
    /// Its id (`stytch_user` is every user's).
    pub role_id: String,
    /// A description.
    #[serde(default)]
    pub description: String,
    /// What it grants.
    #[serde(default)]
    pub permissions: Vec<Permission>,
}

/// Actions granted on one resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Permission {
    /// The resource.
    pub resource_id: String,
    /// The actions, or `*` for all.
    #[serde(default)]
    pub actions: Vec<String>,
}

/// A resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Resource {
    /// Its id.
    pub resource_id: String,
    /// A description.
    #[serde(default)]
    pub description: String,
    /// The actions it knows.
    #[serde(default)]
    pub actions: Vec<String>,
}

/// A scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Scope {
    /// Its name.
    pub scope: String,
    /// A description.
    #[serde(default)]
    pub description: String,
    /// What it grants.
    #[serde(default)]
    pub permissions: Vec<Permission>,
}

impl Policy {
    /// The roles among `held` that grant `action` on `resource_id`, in `held`'s order; empty
    /// means denied. A resource or action no permission names is granted by no role; `*` in a
    /// permission's actions grants every action on its resource.
    pub fn granting_roles(&self, held: &[String], resource_id: &str, action: &str) -> Vec<String> {
        held.iter()
            .filter(|held| {
                self.roles.iter().any(|role| {
                    role.role_id == **held
                        && role.permissions.iter().any(|p| {
                            p.resource_id == resource_id
                                && p.actions.iter().any(|a| a == action || a == "*")
                        })
                })
            })
            .cloned()
            .collect()
    }
}

/// A granted check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Authorization {
    /// Every role of the session that grants it, in the session's role order.
    pub granting_roles: Vec<String>,
}

#[derive(Deserialize)]
struct PolicyResponse {
    policy: Policy,
}

pub(crate) struct PolicyCache {
    url: String,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    credentials: Option<HeaderValue>,
    ttl: Duration,
    timeout: Duration,
    state: Mutex<Cached>,
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Cached {
    policy: Option<(SystemTime, Arc<Policy>)>,
    failure: Option<(SystemTime, String)>,
}

impl PolicyCache {
    pub(crate) fn new(
        url: String,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
        credentials: Option<HeaderValue>,
        ttl: Duration,
        timeout: Duration,
    ) -> Self {
        Self {
            url,
            http,
            clock,
            credentials,
            ttl,
            timeout,
            state: Mutex::new(Cached::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// A cached copy younger than the TTL, or the recent failure that denies meanwhile.
    fn cached(&self) -> Option<Result<Arc<Policy>, Error>> {
        let now = self.clock.now();
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, policy)) = &s.policy
            && elapsed(now, *at) < self.ttl
        {
            return Some(Ok(policy.clone()));
        }
        if let Some((at, why)) = &s.failure
            && elapsed(now, *at) < FAILURE_COOLDOWN
        {
            return Some(Err(Error::PolicyUnavailable(why.clone())));
        }
        None
    }

    /// The policy, fetched when the cached copy is older than the TTL. A failed fetch is an
    /// error (never the expired copy).
    pub(crate) async fn get(&self) -> Result<Arc<Policy>, Error> {
        let Some(credentials) = &self.credentials else {
            return Err(Error::PolicyUnavailable(
                "no project secret is configured, so the policy cannot be fetched".into(),
            ));
        };
        if let Some(cached) = self.cached() {
            return cached;
        }
        let _single_flight = self.fetching.lock().await;
        if let Some(cached) = self.cached() {
            return cached;
        }
        let result = self.fetch(credentials.clone()).await;
        let now = self.clock.now();
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(policy) => {
                let policy = Arc::new(policy);
                s.policy = Some((now, policy.clone()));
                s.failure = None;
                Ok(policy)
            }
            Err(why) => {
                tracing::warn!(error = %why, "hallpass RBAC policy fetch failed; denying checks");
                s.policy = None;
                s.failure = Some((now, why.clone()));
                Err(Error::PolicyUnavailable(why))
            }
        }
    }

    async fn fetch(&self, credentials: HeaderValue) -> Result<Policy, String> {
        let response = self
            .http
            .get(&self.url)
            .timeout(self.timeout)
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, credentials)
            .send()
            .await
            .map_err(describe)?;
        if response.status() != StatusCode::OK {
            return Err(describe_failure(response).await);
        }
        let body = read_body(response).await?;
        serde_json::from_slice::<PolicyResponse>(&body)
            .map(|r| r.policy)
            .map_err(|e| format!("unreadable policy: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        serde_json::from_value(serde_json::json!({
            "roles": [
                {"role_id": "stytch_user", "description": "", "permissions": []},
                {"role_id": "editor", "description": "", "permissions": [
                    {"resource_id": "documents", "actions": ["read", "write"]}]},
                {"role_id": "billing_admin", "description": "", "permissions": [
                    {"resource_id": "billing", "actions": ["*"]}]},
                {"role_id": "reader", "permissions": [
                    {"resource_id": "documents", "actions": ["read"]}]},
            ],
            "resources": [
                {"resource_id": "documents", "description": "", "actions": ["read", "write", "delete"]},
                {"resource_id": "billing", "description": "", "actions": ["read", "refund"]},
            ],
            "scopes": [],
            "future_field": true,
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn roles(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn grants_by_action_or_wildcard_in_the_sessions_order() {
        let p = policy();
        let held = roles(&["stytch_user", "reader", "editor", "billing_admin"]);
        assert_eq!(
            p.granting_roles(&held, "documents", "read"),
            roles(&["reader", "editor"])
        );
        assert_eq!(
            p.granting_roles(&held, "billing", "refund"),
            roles(&["billing_admin"])
        );
        assert_eq!(
            p.granting_roles(&held, "billing", "anything"),
            roles(&["billing_admin"])
        );
    }

    #[test]
    fn denies_what_no_held_role_grants() {
        let p = policy();
        let held = roles(&["stytch_user", "editor"]);
        assert!(p.granting_roles(&held, "documents", "delete").is_empty());
        assert!(p.granting_roles(&held, "unknown", "read").is_empty());
        assert!(p.granting_roles(&held, "billing", "read").is_empty());
        assert!(
            p.granting_roles(&roles(&["ghost"]), "documents", "read")
                .is_empty()
        );
        assert!(p.granting_roles(&held, "documents", "*").is_empty());
    }
}
