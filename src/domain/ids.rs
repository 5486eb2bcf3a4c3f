//! Stytch-style identifiers: `{kind}-{env}-{uuid}`, parsed at the edge into typed values.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Env {
    Test,
    Live,
}

impl Env {
    pub fn as_str(self) -> &'static str {
        match self {
            Env::Test => "test",
            Env::Live => "live",
        }
    }

    pub fn is_live(self) -> bool {
        self == Env::Live
    }

    pub fn from_live(live: bool) -> Self {
        if live { Env::Live } else { Env::Test }
    }
}

impl FromStr for Env {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "test" => Ok(Env::Test),
            "live" => Ok(Env::Live),
            other => Err(format!("env must be test or live, not {other:?}")),
        }
    }
}

/// The kinds of identifier the API hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Project,
    User,
    Session,
    Email,
    Jwk,
    Request,
    MagicLink,
    TokenProfile,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Project => "project",
            Kind::User => "user",
            Kind::Session => "session",
            Kind::Email => "email",
            Kind::Jwk => "jwk",
            Kind::Request => "request-id",
            Kind::MagicLink => "embedded",
            Kind::TokenProfile => "trusted-auth-token-profile",
        }
    }
}

pub fn format(kind: Kind, env: Env, id: Uuid) -> String {
    format!("{}-{}-{}", kind.prefix(), env.as_str(), id.hyphenated())
}

/// Parses `{kind}-{env}-{uuid}`; `None` when the text is not of that form.
pub fn parse(kind: Kind, text: &str) -> Option<(Env, Uuid)> {
    let rest = text.strip_prefix(kind.prefix())?.strip_prefix('-')?;
    let (env, uuid) = rest.split_at_checked(4)?;
    let env = env.parse().ok()?;
    let uuid = uuid.strip_prefix('-')?;
    // Only the canonical hyphenated form, so one id has one spelling.
    if uuid.len() != 36 {
        return None;
    }
    Some((env, Uuid::parse_str(uuid).ok()?))
}

/// A project: its environment and its uuid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProjectId {
    pub env: Env,
    pub uuid: Uuid,
}

impl ProjectId {
    pub fn new(env: Env) -> Self {
        Self {
            env,
            uuid: Uuid::new_v4(),
        }
    }

    /// Formats an id of another kind in this project's environment.
    pub fn id(&self, kind: Kind, id: Uuid) -> String {
        format(kind, self.env, id)
    }

    /// Parses an id of another kind; an id of the other environment is `None`.
    pub fn parse(&self, kind: Kind, text: &str) -> Option<Uuid> {
        match parse(kind, text) {
            Some((env, id)) if env == self.env => Some(id),
            _ => None,
        }
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(Kind::Project, self.env, self.uuid))
    }
}

impl FromStr for ProjectId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(Kind::Project, s)
            .map(|(env, uuid)| Self { env, uuid })
            .ok_or_else(|| {
                format!("{s:?} is not a project id (project-test-<uuid> or project-live-<uuid>)")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_near_misses() {
        let p = ProjectId::new(Env::Live);
        let text = p.to_string();
        assert!(text.starts_with("project-live-"));
        assert_eq!(text.parse::<ProjectId>().unwrap(), p);
        let u = Uuid::new_v4();
        let s = p.id(Kind::Session, u);
        assert_eq!(p.parse(Kind::Session, &s), Some(u));
        assert_eq!(p.parse(Kind::User, &s), None);
        let test_project = ProjectId::new(Env::Test);
        assert_eq!(test_project.parse(Kind::Session, &s), None);
        for bad in [
            "session-live-",
            "session-prod-0d5b6b53-6a9e-4b8e-9d8a-1e1c1c1c1c1c",
            "session-live-0d5b6b536a9e4b8e9d8a1e1c1c1c1c1c",
            "session-live-0d5b6b53-6a9e-4b8e-9d8a-1e1c1c1c1c1cX",
            "",
        ] {
            assert_eq!(parse(Kind::Session, bad), None, "{bad}");
        }
    }
}
