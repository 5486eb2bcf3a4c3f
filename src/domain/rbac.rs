//! Role-based access control: a project's policy, its validation, and the authorization
//! check, decided the way the official SDKs decide it locally so that the remote answer and
//! the local one never differ.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::session::DEFAULT_ROLE;

/// Bounds on a policy, so that it stays cheap to serve and to check.
const MAX_ROLES: usize = 500;
const MAX_RESOURCES: usize = 500;
const MAX_SCOPES: usize = 500;
/// Ids are bounded in bytes: a user's roles travel in every JWT.
const MAX_ID_CHARS: usize = 128;
const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Most roles one user may be assigned.
pub const MAX_USER_ROLES: usize = 32;
const MAX_ACTIONS: usize = 100;

/// A project's RBAC policy, in Stytch's shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub resources: Vec<Resource>,
    #[serde(default)]
    pub scopes: Vec<Scope>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub role_id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub permissions: Vec<Permission>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    pub resource_id: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    pub resource_id: String,
    #[serde(default)]
    pub description: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    pub scope: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub permissions: Vec<Permission>,
}

/// Why a policy was refused, naming the offending element (`roles[2].permissions[0]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid RBAC policy: {0}")]
pub struct PolicyError(pub String);

fn refuse<T>(message: String) -> Result<T, PolicyError> {
    Err(PolicyError(message))
}

fn check_text(what: &str, value: &str, max: usize, required: bool) -> Result<(), PolicyError> {
    if required && value.trim().is_empty() {
        return refuse(format!("{what} must not be empty"));
    }
    if value.len() > max {
        return refuse(format!("{what} is longer than {max} bytes"));
    }
    if value.chars().any(char::is_control) {
        return refuse(format!("{what} contains a control character"));
    }
    Ok(())
}

fn objects_only(v: &serde_json::Value, at: &str) -> Result<(), PolicyError> {
    let Some(map) = v.as_object() else {
        return refuse(format!("{at} must be a JSON object"));
    };
    for key in ["roles", "resources", "scopes", "permissions"] {
        if let Some(serde_json::Value::Array(items)) = map.get(key) {
            for (i, item) in items.iter().enumerate() {
                objects_only(item, &format!("{at}.{key}[{i}]"))?;
            }
        }
    }
    Ok(())
}

impl Policy {
    /// Parses and validates a policy as the operator gives it; the result always holds the
    /// role `stytch_user` (added, without permissions, when the policy does not define it).
    pub fn parse(json: &str) -> Result<Self, PolicyError> {
        let tree: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| PolicyError(format!("not a policy document: {e}")))?;
        // serde's derived structs also accept arrays (fields by position): every element
        // that is an object in Stytch's shape must be one here.
        objects_only(&tree, "policy")?;
        let policy: Policy = serde_json::from_value(tree)
            .map_err(|e| PolicyError(format!("not a policy document: {e}")))?;
        policy.validated()
    }

    /// Validates the policy as a whole and adds `stytch_user` if it is missing.
    pub fn validated(mut self) -> Result<Self, PolicyError> {
        if self.roles.len() > MAX_ROLES
            || self.resources.len() > MAX_RESOURCES
            || self.scopes.len() > MAX_SCOPES
        {
            return refuse(format!(
                "at most {MAX_ROLES} roles, {MAX_RESOURCES} resources and {MAX_SCOPES} scopes"
            ));
        }
        let mut resources = std::collections::HashMap::new();
        for (i, r) in self.resources.iter().enumerate() {
            let at = format!("resources[{i}] ({:?})", r.resource_id);
            check_text(
                &format!("{at}.resource_id"),
                &r.resource_id,
                MAX_ID_CHARS,
                true,
            )?;
            check_text(
                &format!("{at}.description"),
                &r.description,
                MAX_DESCRIPTION_CHARS,
                false,
            )?;
            if r.resource_id.starts_with("stytch") {
                return refuse(format!(
                    "{at}: resource ids starting with \"stytch\" are reserved"
                ));
            }
            if r.actions.is_empty() || r.actions.len() > MAX_ACTIONS {
                return refuse(format!("{at}.actions must list 1 to {MAX_ACTIONS} actions"));
            }
            let mut actions = HashSet::new();
            for (j, a) in r.actions.iter().enumerate() {
                check_text(&format!("{at}.actions[{j}]"), a, MAX_ID_CHARS, true)?;
                if a == "*" {
                    return refuse(format!(
                        "{at}.actions[{j}]: \"*\" is for permissions, not a resource's action"
                    ));
                }
                if !actions.insert(a.as_str()) {
                    return refuse(format!("{at}.actions[{j}]: duplicate action {a:?}"));
                }
            }
            if resources.insert(r.resource_id.as_str(), actions).is_some() {
                return refuse(format!("{at}: duplicate resource_id"));
            }
        }
        let check_permissions = |at: &str, permissions: &[Permission]| {
            let mut seen = HashSet::new();
            for (j, p) in permissions.iter().enumerate() {
                let at = format!("{at}.permissions[{j}]");
                let Some(known) = resources.get(p.resource_id.as_str()) else {
                    return refuse(format!(
                        "{at}: resource_id {:?} is not one of the policy's resources",
                        p.resource_id
                    ));
                };
                if !seen.insert(p.resource_id.as_str()) {
                    return refuse(format!(
                        "{at}: resource_id {:?} appears twice; list its actions once",
                        p.resource_id
                    ));
                }
                if p.actions.is_empty() {
                    return refuse(format!("{at}.actions must not be empty"));
                }
                for (k, a) in p.actions.iter().enumerate() {
                    if a != "*" && !known.contains(a.as_str()) {
                        return refuse(format!(
                            "{at}.actions[{k}]: {a:?} is not an action of resource {:?} (nor \"*\")",
                            p.resource_id
                        ));
                    }
                }
            }
            Ok(())
        };
        let mut role_ids = HashSet::new();
        for (i, role) in self.roles.iter().enumerate() {
            let at = format!("roles[{i}] ({:?})", role.role_id);
            check_text(&format!("{at}.role_id"), &role.role_id, MAX_ID_CHARS, true)?;
            check_text(
                &format!("{at}.description"),
                &role.description,
                MAX_DESCRIPTION_CHARS,
                false,
            )?;
            if role.role_id.starts_with("stytch_") && role.role_id != DEFAULT_ROLE {
                return refuse(format!(
                    "{at}: role ids starting with \"stytch_\" are reserved (only {DEFAULT_ROLE} may be given permissions)"
                ));
            }
            if !role_ids.insert(role.role_id.as_str()) {
                return refuse(format!("{at}: duplicate role_id"));
            }
            check_permissions(&at, &role.permissions)?;
        }
        let mut scopes = HashSet::new();
        for (i, scope) in self.scopes.iter().enumerate() {
            let at = format!("scopes[{i}] ({:?})", scope.scope);
            check_text(&format!("{at}.scope"), &scope.scope, MAX_ID_CHARS, true)?;
            check_text(
                &format!("{at}.description"),
                &scope.description,
                MAX_DESCRIPTION_CHARS,
                false,
            )?;
            if !scopes.insert(scope.scope.as_str()) {
                return refuse(format!("{at}: duplicate scope"));
            }
            check_permissions(&at, &scope.permissions)?;
        }
        if !role_ids.contains(DEFAULT_ROLE) {
            self.roles.insert(
                0,
                Role {
                    role_id: DEFAULT_ROLE.to_string(),
                    description: "Every user holds this role.".to_string(),
                    permissions: Vec::new(),
                },
            );
        }
        Ok(self)
    }

    pub fn has_role(&self, role_id: &str) -> bool {
        self.roles.iter().any(|r| r.role_id == role_id)
    }

    /// The roles a user holds: `stytch_user`, then the assigned roles the policy still
    /// defines, in the order they were assigned.
    pub fn roles_of(&self, assigned: &[String]) -> Vec<String> {
        let mut roles = vec![DEFAULT_ROLE.to_string()];
        for r in assigned {
            if r != DEFAULT_ROLE && self.has_role(r) && !roles.contains(r) {
                roles.push(r.clone());
            }
        }
        roles
    }

    /// The roles among `held` that grant `action` on `resource_id` (a permission on that
    /// resource whose actions hold the action or `*`); empty means denied. A resource or an
    /// action the policy does not know is granted by no role.
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

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
        "roles": [
            {"role_id": "editor", "description": "edits", "permissions": [
                {"resource_id": "documents", "actions": ["read", "write"]}]},
            {"role_id": "billing_admin", "description": "", "permissions": [
                {"resource_id": "billing", "actions": ["*"]}]}
        ],
        "resources": [
            {"resource_id": "documents", "description": "", "actions": ["read", "write", "delete"]},
            {"resource_id": "billing", "description": "", "actions": ["read", "refund"]}
        ],
        "scopes": [{"scope": "read:docs", "description": "", "permissions": [
            {"resource_id": "documents", "actions": ["read"]}]}]
    }"#;

    fn roles(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn stytch_user_always_exists_and_every_user_holds_it() {
        let p = Policy::parse(SAMPLE).unwrap();
        assert_eq!(p.roles[0].role_id, "stytch_user");
        assert!(p.roles[0].permissions.is_empty());
        assert_eq!(Policy::parse("{}").unwrap().roles.len(), 1);
        assert_eq!(
            p.roles_of(&roles(&["editor", "gone", "editor", "stytch_user"])),
            roles(&["stytch_user", "editor"])
        );
    }

    #[test]
    fn checks_grant_by_action_or_wildcard_and_deny_everything_else() {
        let p = Policy::parse(SAMPLE).unwrap();
        let both = roles(&["stytch_user", "editor", "billing_admin"]);
        assert_eq!(
            p.granting_roles(&both, "documents", "write"),
            roles(&["editor"])
        );
        assert_eq!(
            p.granting_roles(&both, "billing", "refund"),
            roles(&["billing_admin"])
        );
        assert_eq!(
            p.granting_roles(&both, "billing", "anything"),
            roles(&["billing_admin"])
        );
        assert!(p.granting_roles(&both, "documents", "delete").is_empty());
        assert!(p.granting_roles(&both, "unknown", "read").is_empty());
        assert!(
            p.granting_roles(&roles(&["stytch_user"]), "documents", "read")
                .is_empty()
        );
        // A role the user does not hold grants nothing.
        assert!(
            p.granting_roles(&roles(&["stytch_user"]), "billing", "read")
                .is_empty()
        );
    }

    #[test]
    fn invalid_policies_are_refused_naming_the_element() {
        let cases = [
            (
                r#"{"roles": [{"role_id": "a"}, {"role_id": "a"}]}"#,
                "roles[1]",
            ),
            (
                r#"{"resources": [{"resource_id": "stytch.x", "actions": ["r"]}]}"#,
                "reserved",
            ),
            (
                r#"{"roles": [{"role_id": "a", "permissions": [{"resource_id": "nope", "actions": ["r"]}]}]}"#,
                "roles[0] (\"a\").permissions[0]",
            ),
            (
                r#"{"resources": [{"resource_id": "d", "actions": ["r"]}], "roles": [{"role_id": "a", "permissions": [{"resource_id": "d", "actions": ["w"]}]}]}"#,
                "actions[0]",
            ),
            (
                r#"{"resources": [{"resource_id": "d", "actions": ["r"]}, {"resource_id": "d", "actions": ["r"]}]}"#,
                "resources[1]",
            ),
            (r#"{"roles": [{"role_id": "stytch_admin"}]}"#, "reserved"),
            (
                r#"{"scopes": [{"scope": "s", "permissions": [{"resource_id": "x", "actions": ["r"]}]}]}"#,
                "scopes[0]",
            ),
            (r#"{"roles": [], "extra": 1}"#, "extra"),
            (
                r#"{"roles": [{"role_id": ""}]}"#,
                "role_id must not be empty",
            ),
            (r#"[]"#, "must be a JSON object"),
            (
                r#"{"roles": [["editor"]]}"#,
                "roles[0] must be a JSON object",
            ),
        ];
        for (json, needle) in cases {
            let e = Policy::parse(json).unwrap_err().to_string();
            assert!(
                e.contains(needle),
                "{json}: {e:?} should mention {needle:?}"
            );
        }
    }
}
