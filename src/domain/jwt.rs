//! Session JWTs: the claims of spec §4, minted with the ring's current key and checked
//! against any published key of the caller's project.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::ids::{Kind, ProjectId};
use super::keys::{JWT_LIFETIME_SECONDS, PublicKey, SigningKey};
use super::rfc3339;
use super::session::{Attributes, Factor, Session};
use crate::error::{Error, Result};

#[derive(Serialize)]
struct Claims<'a> {
    #[serde(flatten)]
    custom: &'a Map<String, Value>,
    aud: [String; 1],
    exp: i64,
    iat: i64,
    iss: String,
    nbf: i64,
    #[serde(rename = "https://stytch.com/session")]
    session: SessionClaim<'a>,
    sub: String,
}

#[derive(Serialize)]
struct SessionClaim<'a> {
    id: String,
    started_at: String,
    last_accessed_at: String,
    expires_at: String,
    attributes: Attributes<'a>,
    authentication_factors: &'a [Factor],
    roles: &'a [String],
}

/// Mints a JWT for `session` at `now`: valid five minutes, never past the session's expiry.
pub fn mint(key: &SigningKey, project: &ProjectId, session: &Session, now: i64) -> Result<String> {
    let project_id = project.to_string();
    let claims = Claims {
        custom: &session.custom_claims,
        iss: format!("stytch.com/{project_id}"),
        aud: [project_id],
        sub: project.id(Kind::User, session.user_id),
        iat: now,
        nbf: now,
        exp: (now + JWT_LIFETIME_SECONDS).min(session.expires_at),
        session: SessionClaim {
            id: project.id(Kind::Session, session.id),
            started_at: rfc3339(session.started_at),
            last_accessed_at: rfc3339(session.last_accessed_at),
            expires_at: rfc3339(session.expires_at),
            attributes: Attributes {
                ip_address: &session.ip_address,
                user_agent: &session.user_agent,
            },
            authentication_factors: &session.factors,
            roles: &session.roles,
        },
    };
    let mut body = Vec::with_capacity(1024);
    serde_json::to_writer(&mut body, &claims).map_err(Error::internal)?;
    key.sign_jwt(&body).map_err(Error::internal)
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: String,
}

#[derive(Deserialize)]
struct VerifiedClaims {
    iss: String,
    aud: Vec<String>,
    exp: i64,
    iat: i64,
    nbf: i64,
    #[serde(rename = "https://stytch.com/session")]
    session: SessionRef,
}

#[derive(Deserialize)]
struct SessionRef {
    id: String,
}

/// What a verified JWT says: its session and its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub session_id: Uuid,
    pub expires_at: i64,
    pub key_id: Uuid,
}

fn bad<E>(_: E) -> Error {
    Error::UnparsableJwt
}

/// How far in the future a JWT's `nbf` and `iat` may be: clock skew between replicas (JWTs
/// carry whole seconds, so a replica a fraction of a second behind sees "now + 1").
pub const CLOCK_SKEW_SECONDS: i64 = 1;

/// Checks a JWT's signature (RS256 only) against the project's published keys, its issuer,
/// its audience (the array hallpass issues, naming the project), and that it is already valid
/// (`nbf` and `iat` present and not in the future). Expiry is the caller's decision: the API
/// accepts an expired JWT whose session is still active, but `exp` must be present. Every
/// failure is `unable_to_parse_session_jwt`.
pub fn verify<'k>(
    token: &str,
    project: &ProjectId,
    now: i64,
    find_key: impl Fn(Uuid) -> Option<&'k PublicKey>,
) -> Result<Verified> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::UnparsableJwt);
    };
    let header: Header =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).map_err(bad)?).map_err(bad)?;
    if header.alg != "RS256" {
        return Err(Error::UnparsableJwt);
    }
    let kid = project
        .parse(Kind::Jwk, &header.kid)
        .ok_or(Error::UnparsableJwt)?;
    let key = find_key(kid).ok_or(Error::UnparsableJwt)?;
    let signature = URL_SAFE_NO_PAD.decode(s).map_err(bad)?;
    if !key.verify(&token.as_bytes()[..h.len() + 1 + c.len()], &signature) {
        return Err(Error::UnparsableJwt);
    }
    let claims: VerifiedClaims =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).map_err(bad)?).map_err(bad)?;
    let project_id = project.to_string();
    if claims.iss != format!("stytch.com/{project_id}")
        || !claims.aud.contains(&project_id)
        || claims.nbf > now + CLOCK_SKEW_SECONDS
        || claims.iat > now + CLOCK_SKEW_SECONDS
    {
        return Err(Error::UnparsableJwt);
    }
    let session_id = project
        .parse(Kind::Session, &claims.session.id)
        .ok_or(Error::UnparsableJwt)?;
    Ok(Verified {
        session_id,
        expires_at: claims.exp,
        key_id: kid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::Env;
    use crate::domain::keys::generate;

    fn key(project: &ProjectId) -> (SigningKey, PublicKey) {
        let id = Uuid::new_v4();
        let g = generate(&project.id(Kind::Jwk, id), 0).unwrap();
        let k = SigningKey::from_pkcs8(id, project.env, &g.pkcs8).unwrap();
        let p = k.public(project.env, &g.certificate).unwrap();
        (k, p)
    }

    fn session() -> Session {
        Session {
            id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            started_at: 1000,
            last_accessed_at: 1000,
            expires_at: 1100,
            revoked: false,
            ip_address: String::new(),
            user_agent: String::new(),
            factors: vec![],
            roles: vec!["stytch_user".into()],
            custom_claims: serde_json::json!({"tier": "gold"})
                .as_object()
                .cloned()
                .unwrap(),
        }
    }

    fn claims_of(jwt: &str) -> Value {
        let c = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).unwrap()).unwrap()
    }

    #[test]
    fn minted_claims_follow_the_contract() {
        let project = ProjectId::new(Env::Test);
        let (k, p) = key(&project);
        let s = session();
        let jwt = mint(&k, &project, &s, 1000).unwrap();
        let c = claims_of(&jwt);
        assert_eq!(c["iss"], format!("stytch.com/{project}"));
        assert_eq!(c["aud"], serde_json::json!([project.to_string()]));
        assert_eq!(c["exp"], 1100, "capped by the session's expiry");
        assert_eq!(c["iat"], 1000);
        assert_eq!(c["nbf"], 1000);
        assert_eq!(c["tier"], "gold");
        assert!(c.get("jti").is_none());
        let sc = c["https://stytch.com/session"].as_object().unwrap();
        for k in [
            "id",
            "started_at",
            "last_accessed_at",
            "expires_at",
            "attributes",
            "authentication_factors",
            "roles",
        ] {
            assert!(sc.contains_key(k), "{k}");
        }
        let v = verify(&jwt, &project, 1000, |id| (id == p.id).then_some(&p)).unwrap();
        assert_eq!(v.session_id, s.id);
        assert_eq!(v.expires_at, 1100);
    }

    #[test]
    fn foreign_tampered_or_unknown_jwts_are_refused() {
        let project = ProjectId::new(Env::Test);
        let other = ProjectId::new(Env::Test);
        let (k, p) = key(&project);
        let jwt = mint(&k, &project, &session(), 1000).unwrap();
        let find = |id: Uuid| (id == p.id).then_some(&p);
        assert!(
            verify(&jwt, &other, 1000, find).is_err(),
            "kid of another project"
        );
        assert!(
            verify(&jwt, &project, 1000, |_| None).is_err(),
            "unknown kid"
        );
        let mut parts: Vec<&str> = jwt.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#);
        parts[1] = &forged;
        assert!(
            verify(&parts.join("."), &project, 1000, find).is_err(),
            "tampered claims"
        );
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"x"}"#),
            jwt.split('.').nth(1).unwrap()
        );
        assert!(verify(&none_alg, &project, 1000, find).is_err());
        assert!(verify("garbage", &project, 1000, find).is_err());
        assert!(verify("a.b.c.d", &project, 1000, find).is_err());
    }

    #[test]
    fn verify_requires_iat_nbf_exp_array_aud_and_no_future_nbf() {
        let project = ProjectId::new(Env::Test);
        let (k, p) = key(&project);
        let find = |id: Uuid| (id == p.id).then_some(&p);
        let pid = project.to_string();
        let sid = project.id(Kind::Session, Uuid::new_v4());
        let signed = |claims: Value| k.sign_jwt(&serde_json::to_vec(&claims).unwrap()).unwrap();
        let base = serde_json::json!({
            "iss": format!("stytch.com/{pid}"), "aud": [pid], "sub": "u",
            "iat": 1000, "nbf": 1000, "exp": 1300,
            "https://stytch.com/session": {"id": sid},
        });
        assert!(verify(&signed(base.clone()), &project, 1000, find).is_ok());
        let with = |key: &str, value: Value| {
            let mut c = base.clone();
            c[key] = value;
            signed(c)
        };
        let without = |key: &str| {
            let mut c = base.clone();
            c.as_object_mut().unwrap().remove(key);
            signed(c)
        };
        for (what, jwt) in [
            ("nbf in the future", with("nbf", 1060.into())),
            ("iat in the future", with("iat", 1060.into())),
            ("string aud", with("aud", pid.clone().into())),
            ("no iat", without("iat")),
            ("no nbf", without("nbf")),
            ("no exp", without("exp")),
        ] {
            assert!(verify(&jwt, &project, 1000, find).is_err(), "{what}");
        }
        // Replicas' clocks differ by a fraction of a second: one second of skew is allowed.
        assert!(verify(&with("nbf", 1001.into()), &project, 1000, find).is_ok());
    }
}
