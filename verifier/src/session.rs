//! The verified [`Session`] and the claim checks that produce it, as the official Stytch SDKs
//! apply them after the signature: `iss`, `aud`, `exp`/`nbf`/`iat` with a leeway, the maximum
//! token age, and the `https://stytch.com/session` claim.

use std::time::SystemTime;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Error;
use crate::clock::from_unix_seconds;

/// The claim that carries the session.
pub const SESSION_CLAIM: &str = "https://stytch.com/session";

/// Registered claims, which are never custom claims (the same list as the SDKs').
const REGISTERED: [&str; 7] = ["aud", "exp", "iat", "iss", "jti", "nbf", "sub"];

/// A session, as a verified JWT describes it. Serializes with its times in RFC 3339.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Session {
    /// `session-{env}-{uuid}`.
    pub session_id: String,
    /// The session's user (the JWT's `sub`).
    pub user_id: String,
    /// When the session started.
    #[serde(serialize_with = "rfc3339_out")]
    pub started_at: SystemTime,
    /// The session's last authentication when the JWT was minted.
    #[serde(serialize_with = "rfc3339_out")]
    pub last_accessed_at: SystemTime,
    /// When the session ends unless extended.
    #[serde(serialize_with = "rfc3339_out")]
    pub expires_at: SystemTime,
    /// How the user authenticated, as hallpass reports it (Stytch's factor objects).
    pub authentication_factors: Vec<Value>,
    /// The user's roles when the JWT was minted (`stytch_user` first).
    pub roles: Vec<String>,
    /// Every top-level claim other than the registered ones and the session claim.
    pub custom_claims: Map<String, Value>,
    /// The session's attributes.
    pub attributes: Attributes,
    /// The JWT's `iat`.
    #[serde(serialize_with = "rfc3339_out")]
    pub jwt_issued_at: SystemTime,
    /// The JWT's `exp`.
    #[serde(serialize_with = "rfc3339_out")]
    pub jwt_expires_at: SystemTime,
}

/// A session's attributes; empty strings when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Attributes {
    /// The client address the session was started from.
    #[serde(default)]
    pub ip_address: String,
    /// The client's user agent.
    #[serde(default)]
    pub user_agent: String,
}

#[derive(Deserialize)]
struct SessionClaim {
    id: String,
    started_at: String,
    last_accessed_at: String,
    expires_at: String,
    #[serde(default)]
    attributes: Option<Attributes>,
    #[serde(default)]
    authentication_factors: Option<Vec<Value>>,
    #[serde(default)]
    roles: Option<Vec<String>>,
}

/// What the claims are checked against.
pub(crate) struct Expected<'a> {
    pub issuer: &'a str,
    pub project_id: &'a str,
    /// Seconds of clock tolerance for `exp`, `nbf` and `iat`.
    pub leeway: i64,
    /// Seconds: a JWT whose `now - iat` reaches this is too old.
    pub max_age: Option<i64>,
}

fn numeric(claims: &Map<String, Value>, name: &'static str) -> Result<i64, Error> {
    match claims.get(name) {
        None | Some(Value::Null) => Err(Error::MissingClaim(name)),
        Some(v) => v
            .as_i64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.floor() as i64)
            })
            .ok_or_else(|| Error::Malformed(format!("{name} is not a number"))),
    }
}

fn rfc3339_out<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let text = OffsetDateTime::from(*t)
        .format(&Rfc3339)
        .map_err(serde::ser::Error::custom)?;
    s.serialize_str(&text)
}

pub(crate) fn rfc3339(text: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

fn timestamp(text: &str, name: &str) -> Result<SystemTime, Error> {
    rfc3339(text).ok_or_else(|| Error::Malformed(format!("session claim {name} is not RFC 3339")))
}

/// Checks the verified claims at `now` (Unix seconds) and builds the session.
pub(crate) fn check(
    mut claims: Map<String, Value>,
    expected: &Expected<'_>,
    now: i64,
) -> Result<Session, Error> {
    match claims.get("iss") {
        Some(Value::String(iss)) if iss == expected.issuer => {}
        None => return Err(Error::MissingClaim("iss")),
        _ => return Err(Error::WrongIssuer),
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == expected.project_id,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(expected.project_id)),
        None => return Err(Error::MissingClaim("aud")),
        _ => false,
    };
    if !audience_ok {
        return Err(Error::WrongAudience);
    }
    let exp = numeric(&claims, "exp")?;
    let nbf = numeric(&claims, "nbf")?;
    let iat = numeric(&claims, "iat")?;
    let leeway = expected.leeway;
    // As jose (the Node SDK's verifier) decides: expired once `exp <= now - leeway`.
    if exp <= now.saturating_sub(leeway) {
        return Err(Error::Expired);
    }
    if nbf > now.saturating_add(leeway) {
        return Err(Error::NotYetValid);
    }
    if iat > now.saturating_add(leeway) {
        return Err(Error::IssuedInFuture);
    }
    // As the Node SDK decides: too old once `now - iat >= max_token_age` (0: always).
    if let Some(max) = expected.max_age
        && now.saturating_sub(iat) >= max
    {
        return Err(Error::TooOld);
    }
    let user_id = match claims.remove("sub") {
        Some(Value::String(sub)) => sub,
        None => return Err(Error::MissingClaim("sub")),
        Some(_) => return Err(Error::Malformed("sub is not a string".into())),
    };
    let session = claims
        .remove(SESSION_CLAIM)
        .ok_or(Error::MissingClaim(SESSION_CLAIM))?;
    let session: SessionClaim = serde_json::from_value(session)
        .map_err(|e| Error::Malformed(format!("session claim: {e}")))?;
    for name in REGISTERED {
        claims.remove(name);
    }
    Ok(Session {
        started_at: timestamp(&session.started_at, "started_at")?,
        last_accessed_at: timestamp(&session.last_accessed_at, "last_accessed_at")?,
        expires_at: timestamp(&session.expires_at, "expires_at")?,
        session_id: session.id,
        user_id,
        authentication_factors: session.authentication_factors.unwrap_or_default(),
        roles: session.roles.unwrap_or_default(),
        attributes: session.attributes.unwrap_or_default(),
        custom_claims: claims,
        jwt_issued_at: from_unix_seconds(iat),
        jwt_expires_at: from_unix_seconds(exp),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::clock::unix_seconds;

    const PROJECT: &str = "project-test-11111111-1111-4111-8111-111111111111";
    const NOW: i64 = 1_800_000_000;

    fn expected() -> Expected<'static> {
        Expected {
            issuer: "stytch.com/project-test-11111111-1111-4111-8111-111111111111",
            project_id: PROJECT,
            leeway: 5,
            max_age: None,
        }
    }

    fn claims() -> Map<String, Value> {
        let v = json!({
            "iss": format!("stytch.com/{PROJECT}"), "aud": [PROJECT], "sub": "user-test-1",
            "iat": NOW, "nbf": NOW, "exp": NOW + 300, "jti": "ignored",
            "tier": "gold", "nested": {"a": 1},
            SESSION_CLAIM: {
                "id": "session-test-1",
                "started_at": "2027-01-15T08:00:00Z",
                "last_accessed_at": "2027-01-15T08:00:01Z",
                "expires_at": "2027-01-15T09:00:00Z",
                "attributes": {"ip_address": "10.0.0.1", "user_agent": "curl"},
                "authentication_factors": [{"type": "password", "delivery_method": "knowledge"}],
                "roles": ["stytch_user", "editor"],
            },
        });
        v.as_object().cloned().unwrap_or_default()
    }

    fn with(key: &str, value: Value) -> Map<String, Value> {
        let mut c = claims();
        c.insert(key.into(), value);
        c
    }

    fn without(key: &str) -> Map<String, Value> {
        let mut c = claims();
        c.remove(key);
        c
    }

    #[test]
    fn a_valid_claim_set_becomes_a_session() {
        let s = check(claims(), &expected(), NOW).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.session_id, "session-test-1");
        assert_eq!(s.user_id, "user-test-1");
        assert_eq!(s.roles, ["stytch_user", "editor"]);
        assert_eq!(s.attributes.ip_address, "10.0.0.1");
        assert_eq!(s.authentication_factors.len(), 1);
        assert_eq!(unix_seconds(s.jwt_expires_at), NOW + 300);
        assert_eq!(unix_seconds(s.started_at), 1_800_000_000);
        let custom: Vec<&str> = s.custom_claims.keys().map(String::as_str).collect();
        assert_eq!(custom, ["nested", "tier"]);
        let json = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(json["started_at"], "2027-01-15T08:00:00Z");
        assert_eq!(json["custom_claims"]["tier"], "gold");
    }

    #[test]
    fn each_claim_check_has_its_own_error() {
        let e = expected();
        let cases: Vec<(&str, Map<String, Value>, Error)> = vec![
            (
                "iss",
                with("iss", json!("stytch.com/other")),
                Error::WrongIssuer,
            ),
            ("no iss", without("iss"), Error::MissingClaim("iss")),
            ("aud", with("aud", json!(["other"])), Error::WrongAudience),
            ("no aud", without("aud"), Error::MissingClaim("aud")),
            ("no exp", without("exp"), Error::MissingClaim("exp")),
            ("no nbf", without("nbf"), Error::MissingClaim("nbf")),
            ("no iat", without("iat"), Error::MissingClaim("iat")),
            ("no sub", without("sub"), Error::MissingClaim("sub")),
            (
                "no session",
                without(SESSION_CLAIM),
                Error::MissingClaim(SESSION_CLAIM),
            ),
            (
                "exp text",
                with("exp", json!("soon")),
                Error::Malformed("exp is not a number".into()),
            ),
            ("expired", with("exp", json!(NOW - 5)), Error::Expired),
            ("nbf", with("nbf", json!(NOW + 6)), Error::NotYetValid),
            ("iat", with("iat", json!(NOW + 6)), Error::IssuedInFuture),
        ];
        for (what, c, want) in cases {
            assert_eq!(check(c, &e, NOW).err(), Some(want), "{what}");
        }
        // Within the leeway.
        assert!(check(with("exp", json!(NOW - 4)), &e, NOW).is_ok());
        assert!(check(with("nbf", json!(NOW + 5)), &e, NOW).is_ok());
        // A string audience is accepted, as jose accepts it.
        assert!(check(with("aud", json!(PROJECT)), &e, NOW).is_ok());
    }

    #[test]
    fn max_token_age_counts_from_iat_and_zero_refuses_everything() {
        let mut e = expected();
        e.max_age = Some(60);
        assert!(check(claims(), &e, NOW + 59).is_ok());
        assert_eq!(check(claims(), &e, NOW + 60).err(), Some(Error::TooOld));
        e.max_age = Some(0);
        assert_eq!(check(claims(), &e, NOW).err(), Some(Error::TooOld));
    }

    #[test]
    fn a_session_claim_without_its_times_is_malformed() {
        let mut c = claims();
        if let Some(Value::Object(s)) = c.get_mut(SESSION_CLAIM) {
            s.remove("expires_at");
        }
        assert!(matches!(
            check(c, &expected(), NOW),
            Err(Error::Malformed(_))
        ));
        let mut c = claims();
        if let Some(Value::Object(s)) = c.get_mut(SESSION_CLAIM) {
            s.insert("started_at".into(), json!("yesterday"));
        }
        assert!(matches!(
            check(c, &expected(), NOW),
            Err(Error::Malformed(_))
        ));
    }
}
