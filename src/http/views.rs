//! Wire objects (User) and the conversions between stored rows and domain sessions.

use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::directory::Project;
use crate::domain::ids::{Kind, ProjectId};
use crate::domain::rfc3339;
use crate::domain::session::Session;
use crate::error::{Error, Result};
use crate::store::sessions::SessionRow;
use crate::store::users::UserRow;

#[derive(Debug, Serialize)]
pub struct EmailView {
    pub email_id: String,
    pub email: String,
    pub verified: bool,
}

#[derive(Debug, Serialize)]
pub struct NameView<'a> {
    pub first_name: &'a str,
    pub middle_name: &'a str,
    pub last_name: &'a str,
}

/// The User object; every list present (the Python SDK requires them).
#[derive(Debug, Serialize)]
pub struct UserView<'a> {
    pub user_id: String,
    pub emails: Vec<EmailView>,
    pub status: &'static str,
    pub name: NameView<'a>,
    pub created_at: String,
    pub trusted_metadata: &'a RawValue,
    pub untrusted_metadata: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<&'a str>,
    pub phone_numbers: [(); 0],
    pub webauthn_registrations: [(); 0],
    pub providers: [(); 0],
    pub totps: [(); 0],
    pub crypto_wallets: [(); 0],
    pub biometric_registrations: [(); 0],
    pub is_locked: bool,
    pub roles: Vec<String>,
    pub password: Option<()>,
}

pub fn emails(project: &ProjectId, u: &UserRow) -> Vec<EmailView> {
    match (&u.email, u.email_id) {
        (Some(email), Some(id)) => vec![EmailView {
            email_id: project.id(Kind::Email, id),
            email: email.clone(),
            verified: u.email_verified,
        }],
        _ => Vec::new(),
    }
}

/// Stored metadata goes out as it was stored (an object written by this server), without
/// being parsed into a tree and written again; an unreadable value reads as `{}`.
fn metadata(text: &str) -> &RawValue {
    serde_json::from_str(text)
        .ok()
        .filter(|v: &&RawValue| v.get().starts_with('{'))
        .unwrap_or_else(|| {
            serde_json::from_str("{}").unwrap_or_else(|e| panic!("`{{}}` is JSON: {e}"))
        })
}

/// A JWT as a JSON string, written as is rather than scanned for characters to escape: a
/// compact JWS is base64url and dots, more than half of an authenticate's response, and the
/// scan cost more than building the rest of the body. Anything that is not plainly a JSON
/// string once quoted (a backslash, a quote, a control character) goes the usual way.
pub fn jwt_text<S: serde::Serializer>(jwt: &&str, serializer: S) -> Result<S::Ok, S::Error> {
    if !jwt.contains('\\') {
        let mut quoted = String::with_capacity(jwt.len() + 2);
        quoted.push('"');
        quoted.push_str(jwt);
        quoted.push('"');
        if let Ok(raw) = RawValue::from_string(quoted) {
            return raw.serialize(serializer);
        }
    }
    serializer.serialize_str(jwt)
}

/// The roles a user holds under the project's policy: `stytch_user` and the assigned roles
/// the policy defines.
pub fn roles(project: &Project, u: &UserRow) -> Vec<String> {
    let assigned: Vec<String> = serde_json::from_str(&u.user_roles).unwrap_or_default();
    project.rbac.roles_of(&assigned)
}

pub fn user<'a>(directory_project: &Project, u: &'a UserRow) -> UserView<'a> {
    let project = &directory_project.id;
    UserView {
        user_id: project.id(Kind::User, u.user_id),
        emails: emails(project, u),
        status: "active",
        name: NameView {
            first_name: &u.first_name,
            middle_name: &u.middle_name,
            last_name: &u.last_name,
        },
        created_at: rfc3339(u.user_created_at),
        trusted_metadata: metadata(&u.trusted_metadata),
        untrusted_metadata: metadata(&u.untrusted_metadata),
        external_id: u.external_id.as_deref(),
        phone_numbers: [],
        webauthn_registrations: [],
        providers: [],
        totps: [],
        crypto_wallets: [],
        biometric_registrations: [],
        is_locked: false,
        roles: roles(directory_project, u),
        password: None,
    }
}

/// A stored session row as a domain session.
pub fn session_from_row(row: SessionRow, user_id: Uuid) -> Result<Session> {
    let bad = |what: &str, e: serde_json::Error| {
        Error::internal(format!("session {}: stored {what}: {e}", row.session_id))
    };
    Ok(Session {
        id: row.session_id,
        user_id,
        started_at: row.started_at,
        last_accessed_at: row.last_accessed_at,
        expires_at: row.expires_at,
        revoked: row.revoked_at.is_some(),
        ip_address: row.ip_address,
        user_agent: row.user_agent,
        factors: serde_json::from_str(&row.authentication_factors)
            .map_err(|e| bad("factors", e))?,
        roles: serde_json::from_str(&row.roles).map_err(|e| bad("roles", e))?,
        custom_claims: serde_json::from_str(&row.custom_claims).map_err(|e| bad("claims", e))?,
    })
}

pub fn session_to_row(s: &Session) -> Result<SessionRow> {
    Ok(SessionRow {
        session_id: s.id,
        started_at: s.started_at,
        last_accessed_at: s.last_accessed_at,
        expires_at: s.expires_at,
        revoked_at: None,
        ip_address: s.ip_address.clone(),
        user_agent: s.user_agent.clone(),
        authentication_factors: serde_json::to_string(&s.factors).map_err(Error::internal)?,
        roles: serde_json::to_string(&s.roles).map_err(Error::internal)?,
        custom_claims: serde_json::to_string(&s.custom_claims).map_err(Error::internal)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(serialize_with = "jwt_text")]
        jwt: &'a str,
    }

    #[test]
    fn a_jwt_written_as_is_reads_back_the_same_as_an_escaped_one() {
        for text in [
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJlLV8",
            "",
            "quote\"inside",
            "back\\slash",
            "new\nline",
            "tab\tand\u{7f}del",
            "é and 😀",
        ] {
            let ours = serde_json::to_string(&Body { jwt: text }).unwrap();
            let usual = serde_json::to_string(&serde_json::json!({ "jwt": text })).unwrap();
            assert_eq!(ours, usual, "{text:?}");
        }
    }
}
