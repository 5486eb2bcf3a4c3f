//! Session rules: lifetimes, the project's session policy, custom-claim merges and
//! authentication factors.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::ids::{Kind, ProjectId};
use super::rfc3339;
use crate::error::{Error, Result};

pub const MIN_DURATION_MINUTES: i64 = 5;
pub const MAX_DURATION_MINUTES: i64 = 527_040;
pub const MAX_CUSTOM_CLAIMS_BYTES: usize = 4096;
pub const DEFAULT_ROLE: &str = "stytch_user";
/// Bounds on what a session stores, so the JWT minted from it always fits in a request that
/// carries it back (the body limit is 64 KiB): 4096 bytes of claims, at most 16 factors of at
/// most 1024 bytes of detail each (under a name of at most 64 bytes), the two attributes
/// below, and at most 32 roles of at most 128 bytes (see `rbac`) make a JWT of at most about
/// 40 KiB.
pub const MAX_FACTORS: usize = 16;
pub const MAX_FACTOR_DETAIL_BYTES: usize = 1024;
pub const MAX_IP_ADDRESS_CHARS: usize = 64;
pub const MAX_USER_AGENT_CHARS: usize = 1024;

/// `session_duration_minutes`, valid by construction (5..=527040).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionDuration(i64);

impl SessionDuration {
    pub fn parse(minutes: i64) -> Result<Self> {
        if (MIN_DURATION_MINUTES..=MAX_DURATION_MINUTES).contains(&minutes) {
            Ok(Self(minutes))
        } else {
            Err(Error::InvalidSessionDuration)
        }
    }

    pub fn parse_optional(minutes: Option<i64>) -> Result<Option<Self>> {
        minutes.map(Self::parse).transpose()
    }

    pub fn seconds(self) -> i64 {
        self.0 * 60
    }
}

/// Per-project limits beyond Stytch's own (both off by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionPolicy {
    pub idle_timeout_minutes: Option<i64>,
    pub absolute_lifetime_minutes: Option<i64>,
}

impl SessionPolicy {
    /// The expiry a session gets when (re)started for `duration` at `now`: never added to the
    /// old expiry, never past the absolute lifetime.
    pub fn expiry(&self, started_at: i64, now: i64, duration: SessionDuration) -> i64 {
        self.extension(now, duration).expires_at(started_at)
    }

    /// The same rule with the session's start left open, so a database can apply it to the
    /// row it updates.
    pub fn extension(&self, now: i64, duration: SessionDuration) -> Extension {
        Extension {
            wanted: now + duration.seconds(),
            lifetime: self.absolute_lifetime_minutes.map(|m| m * 60),
        }
    }

    /// Whether a session with these instants is usable at `now`.
    pub fn is_active(&self, s: &SessionTimes, now: i64) -> bool {
        self.bounds(now).admit(s)
    }

    /// What `is_active` checks, as bounds on stored instants, so a database can apply it in
    /// a WHERE clause.
    pub fn bounds(&self, now: i64) -> ActiveBounds {
        ActiveBounds {
            now,
            last_accessed_after: self.idle_timeout_minutes.map_or(i64::MIN, |m| now - m * 60),
            started_after: self
                .absolute_lifetime_minutes
                .map_or(i64::MIN, |m| now - m * 60),
        }
    }
}

/// A session is active at `now` when it is not revoked, `expires_at > now`,
/// `last_accessed_at > last_accessed_after` (idle timeout) and `started_at > started_after`
/// (absolute lifetime); `i64::MIN` where the project sets no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveBounds {
    pub now: i64,
    pub last_accessed_after: i64,
    pub started_after: i64,
}

impl ActiveBounds {
    pub fn admit(&self, s: &SessionTimes) -> bool {
        !s.revoked
            && s.expires_at > self.now
            && s.last_accessed_at > self.last_accessed_after
            && s.started_at > self.started_after
    }
}

/// A new expiry: `wanted`, but no later than `started_at + lifetime` when there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension {
    pub wanted: i64,
    pub lifetime: Option<i64>,
}

impl Extension {
    pub fn expires_at(&self, started_at: i64) -> i64 {
        match self.lifetime {
            Some(l) => self.wanted.min(started_at + l),
            None => self.wanted,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SessionTimes {
    pub started_at: i64,
    pub last_accessed_at: i64,
    pub expires_at: i64,
    pub revoked: bool,
}

/// Claim names a caller may not set: the JWT's registered claims and Stytch's namespace.
pub fn is_reserved_claim(name: &str) -> bool {
    matches!(name, "iss" | "sub" | "aud" | "exp" | "nbf" | "iat" | "jti")
        || name.starts_with("https://stytch.com/")
}

/// Merges `patch` into `claims`: a value sets its key, `null` deletes it, objects merge the
/// same way; reserved top-level names are ignored. Fails, leaving `claims` untouched, when the
/// result would exceed 4096 bytes as compact JSON.
pub fn merge_custom_claims(
    claims: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Map<String, Value>> {
    let mut merged = claims.clone();
    for (key, value) in patch {
        if !is_reserved_claim(key) {
            merge_value(&mut merged, key, value);
        }
    }
    let size = serde_json::to_vec(&merged).map_err(Error::internal)?.len();
    if size > MAX_CUSTOM_CLAIMS_BYTES {
        return Err(Error::CustomClaimsTooLarge);
    }
    Ok(merged)
}

fn merge_value(target: &mut Map<String, Value>, key: &str, value: &Value) {
    match value {
        Value::Null => {
            target.remove(key);
        }
        Value::Object(patch) => {
            let slot = target
                .entry(key.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(inner) = slot {
                for (k, v) in patch {
                    merge_value(inner, k, v);
                }
            }
        }
        other => {
            target.insert(key.to_string(), other.clone());
        }
    }
}

const FACTOR_TYPES: &[&str] = &[
    "magic_link",
    "otp",
    "oauth",
    "webauthn",
    "totp",
    "crypto",
    "password",
    "signature_challenge",
    "sso",
    "imported",
    "recovery_codes",
    "email_otp",
    "impersonated",
    "trusted_auth_token",
];

const DELIVERY_METHODS: &[&str] = &[
    "email",
    "sms",
    "whatsapp",
    "embedded",
    "oauth_google",
    "oauth_microsoft",
    "oauth_apple",
    "webauthn_registration",
    "authenticator_app",
    "oauth_github",
    "recovery_code",
    "oauth_facebook",
    "crypto_wallet",
    "oauth_amazon",
    "oauth_bitbucket",
    "oauth_coinbase",
    "oauth_discord",
    "oauth_figma",
    "oauth_gitlab",
    "oauth_instagram",
    "oauth_linkedin",
    "oauth_shopify",
    "oauth_slack",
    "oauth_snapchat",
    "oauth_spotify",
    "oauth_steam",
    "oauth_tiktok",
    "oauth_twitch",
    "oauth_twitter",
    "knowledge",
    "biometric",
    "sso_saml",
    "sso_oidc",
    "oauth_salesforce",
    "oauth_yahoo",
    "oauth_hubspot",
    "imported_auth0",
    "oauth_exchange_slack",
    "oauth_exchange_hubspot",
    "oauth_exchange_github",
    "oauth_exchange_google",
    "impersonation",
    "oauth_access_token_exchange",
    "trusted_token_exchange",
];

/// An authentication factor as stored and rendered: the SDK enums, three instants, and at
/// most one detail object (`email_factor`, `embeddable_magic_link_factor`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Factor {
    #[serde(rename = "type")]
    pub kind: String,
    pub delivery_method: String,
    pub last_authenticated_at: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(flatten)]
    pub detail: Map<String, Value>,
}

impl Factor {
    pub fn new(kind: &str, delivery_method: &str, now: i64, detail: Map<String, Value>) -> Self {
        let at = rfc3339(now);
        Self {
            kind: kind.to_string(),
            delivery_method: delivery_method.to_string(),
            last_authenticated_at: at.clone(),
            created_at: at.clone(),
            updated_at: at,
            detail,
        }
    }

    /// Validates a caller-supplied factor (`POST /v1/sessions`); `index` names it in errors.
    pub fn from_request(index: usize, raw: &Map<String, Value>, now: i64) -> Result<Self> {
        let field = |name: &str| format!("authentication_factors[{index}].{name}");
        let text = |name: &str| -> Result<&str> {
            raw.get(name).and_then(Value::as_str).ok_or_else(|| {
                Error::bad_request(format!("{} is required and must be a string", field(name)))
            })
        };
        let kind = text("type")?;
        if !FACTOR_TYPES.contains(&kind) {
            return Err(Error::bad_request(format!(
                "{} has unknown value {kind:?}",
                field("type")
            )));
        }
        let delivery = text("delivery_method")?;
        if !DELIVERY_METHODS.contains(&delivery) {
            return Err(Error::bad_request(format!(
                "{} has unknown value {delivery:?}",
                field("delivery_method")
            )));
        }
        let mut detail = Map::new();
        for (key, value) in raw {
            match key.as_str() {
                "type"
                | "delivery_method"
                | "last_authenticated_at"
                | "created_at"
                | "updated_at" => {}
                k if k.ends_with("_factor") && value.is_object() && k.len() <= 64 => {
                    if !detail.is_empty() {
                        return Err(Error::bad_request(format!(
                            "{} may carry at most one detail object",
                            field("*_factor")
                        )));
                    }
                    let size = serde_json::to_vec(value).map_err(Error::internal)?.len();
                    if size > MAX_FACTOR_DETAIL_BYTES {
                        return Err(Error::bad_request(format!(
                            "{} exceeds {MAX_FACTOR_DETAIL_BYTES} bytes",
                            field(k)
                        )));
                    }
                    detail.insert(key.clone(), value.clone());
                }
                k => {
                    return Err(Error::bad_request(format!(
                        "{} is not a known field",
                        field(k)
                    )));
                }
            }
        }
        Ok(Self::new(kind, delivery, now, detail))
    }
}

/// Adds `factor` to a session's list, replacing the entry of the same kind and detail name.
/// A session holds at most [`MAX_FACTORS`] distinct factors.
pub fn add_factor(factors: &mut Vec<Factor>, factor: Factor) -> Result<()> {
    let same = |f: &Factor| {
        f.kind == factor.kind
            && f.delivery_method == factor.delivery_method
            && f.detail.keys().eq(factor.detail.keys())
    };
    let count = factors.len();
    match factors.iter_mut().find(|f| same(f)) {
        Some(existing) => {
            existing.last_authenticated_at = factor.last_authenticated_at.clone();
            existing.updated_at = factor.updated_at.clone();
            existing.detail = factor.detail;
        }
        None if count >= MAX_FACTORS => {
            return Err(Error::bad_request(format!(
                "the session already has {MAX_FACTORS} authentication factors, the most it may hold"
            )));
        }
        None => factors.push(factor),
    }
    Ok(())
}

/// A session as the domain sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    pub started_at: i64,
    pub last_accessed_at: i64,
    pub expires_at: i64,
    pub revoked: bool,
    pub ip_address: String,
    pub user_agent: String,
    pub factors: Vec<Factor>,
    pub roles: Vec<String>,
    pub custom_claims: Map<String, Value>,
}

impl Session {
    pub fn times(&self) -> SessionTimes {
        SessionTimes {
            started_at: self.started_at,
            last_accessed_at: self.last_accessed_at,
            expires_at: self.expires_at,
            revoked: self.revoked,
        }
    }

    pub fn view<'a>(&'a self, project: &ProjectId) -> SessionView<'a> {
        SessionView {
            session_id: project.id(Kind::Session, self.id),
            user_id: project.id(Kind::User, self.user_id),
            authentication_factors: &self.factors,
            roles: &self.roles,
            started_at: rfc3339(self.started_at),
            last_accessed_at: rfc3339(self.last_accessed_at),
            expires_at: rfc3339(self.expires_at),
            attributes: Attributes {
                ip_address: &self.ip_address,
                user_agent: &self.user_agent,
            },
            custom_claims: &self.custom_claims,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Attributes<'a> {
    pub ip_address: &'a str,
    pub user_agent: &'a str,
}

/// The Session object of the API.
#[derive(Debug, Serialize)]
pub struct SessionView<'a> {
    pub session_id: String,
    pub user_id: String,
    pub authentication_factors: &'a [Factor],
    pub roles: &'a [String],
    pub started_at: String,
    pub last_accessed_at: String,
    pub expires_at: String,
    pub attributes: Attributes<'a>,
    pub custom_claims: &'a Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn duration_bounds() {
        assert!(SessionDuration::parse(4).is_err());
        assert!(SessionDuration::parse(5).is_ok());
        assert!(SessionDuration::parse(527_040).is_ok());
        assert!(SessionDuration::parse(527_041).is_err());
        assert!(SessionDuration::parse(-5).is_err());
        assert_eq!(SessionDuration::parse(60).unwrap().seconds(), 3600);
    }

    #[test]
    fn claims_merge_sets_updates_nests_deletes_and_ignores_reserved() {
        let start = obj(json!({"a": 1, "nested": {"x": 1, "y": 2}, "gone": true}));
        let patch = obj(json!({
            "a": 2, "b": "new", "nested": {"y": null, "z": 3}, "gone": null,
            "iss": "evil", "sub": "evil", "https://stytch.com/session": {}, "jti": "x"
        }));
        let merged = merge_custom_claims(&start, &patch).unwrap();
        assert_eq!(
            Value::Object(merged),
            json!({"a": 2, "b": "new", "nested": {"x": 1, "z": 3}})
        );
    }

    #[test]
    fn claims_over_4096_bytes_are_refused() {
        let big = obj(json!({ "k": "x".repeat(4096) }));
        assert!(matches!(
            merge_custom_claims(&Map::new(), &big),
            Err(Error::CustomClaimsTooLarge)
        ));
        // Exactly 4096 bytes is allowed: {"k":"…"} is 8 bytes of framing.
        let exact = obj(json!({ "k": "x".repeat(4096 - 8) }));
        assert_eq!(serde_json::to_vec(&exact).unwrap().len(), 4096);
        assert!(merge_custom_claims(&Map::new(), &exact).is_ok());
    }

    #[test]
    fn policy_caps_expiry_and_expires_idle_sessions() {
        let d = SessionDuration::parse(60).unwrap();
        let none = SessionPolicy::default();
        assert_eq!(none.expiry(0, 1000, d), 4600);
        let capped = SessionPolicy {
            absolute_lifetime_minutes: Some(30),
            idle_timeout_minutes: Some(10),
        };
        assert_eq!(capped.expiry(0, 1000, d), 1800);
        let t = SessionTimes {
            started_at: 0,
            last_accessed_at: 0,
            expires_at: 1800,
            revoked: false,
        };
        assert!(capped.is_active(&t, 599));
        assert!(!capped.is_active(&t, 600), "idle for 10 minutes");
        let touched = SessionTimes {
            last_accessed_at: 1500,
            ..t
        };
        assert!(capped.is_active(&touched, 1799));
        assert!(!capped.is_active(&touched, 1800));
        assert!(!none.is_active(&SessionTimes { revoked: true, ..t }, 1));
    }

    #[test]
    fn factors_are_validated_against_the_sdk_enums() {
        let ok = Factor::from_request(
            0,
            &obj(json!({"type": "password", "delivery_method": "knowledge"})),
            0,
        )
        .unwrap();
        assert_eq!(ok.created_at, "1970-01-01T00:00:00Z");
        let with_detail = Factor::from_request(
            0,
            &obj(json!({"type": "otp", "delivery_method": "email", "email_factor": {"email_id": "e", "email_address": "a@b.c"}})),
            0,
        )
        .unwrap();
        assert!(with_detail.detail.contains_key("email_factor"));
        for bad in [
            json!({"type": "carrier_pigeon", "delivery_method": "email"}),
            json!({"type": "otp", "delivery_method": "fax"}),
            json!({"delivery_method": "email"}),
            json!({"type": "otp", "delivery_method": "email", "color": "red"}),
            json!({"type": "otp", "delivery_method": "email", "a_factor": {}, "b_factor": {}}),
        ] {
            let err = Factor::from_request(3, &obj(bad.clone()), 0).unwrap_err();
            assert!(
                err.to_string().contains("authentication_factors[3]"),
                "{bad} → {err}"
            );
        }
    }
}
