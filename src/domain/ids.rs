//! Stytch-style identifiers: `{kind}-{env}-{uuid}`, parsed at the edge into typed values.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;
use uuid::fmt::Hyphenated;

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
    // Into a buffer of the right size rather than with `format!`: ids are written several
    // times for every authenticate (the JWT's claims, the response).
    let mut out =
        String::with_capacity(kind.prefix().len() + env.as_str().len() + 2 + Hyphenated::LENGTH);
    let _ = write(&mut out, kind, env, id);
    out
}

/// Writes `{kind}-{env}-{uuid}`: the one spelling of an id, for `format` and `Display`.
fn write(out: &mut impl fmt::Write, kind: Kind, env: Env, id: Uuid) -> fmt::Result {
    out.write_str(kind.prefix())?;
    out.write_char('-')?;
    out.write_str(env.as_str())?;
    out.write_char('-')?;
    out.write_str(id.hyphenated().encode_lower(&mut [0; Hyphenated::LENGTH]))
}

/// A new id for a request: random, but without a system call per request (`Uuid::new_v4`
/// asks the kernel every time). A request id only needs to be unique, not secret: a
/// per-process random seed from the kernel, then a counter through a bijective mixer
/// (SplitMix64 on each half), with the version-4 bits set.
pub fn request_uuid() -> Uuid {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: OnceLock<(u64, u64)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (hi, lo) = *SEED.get_or_init(|| {
        let seed = Uuid::new_v4().as_u64_pair();
        (seed.0, seed.1)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let bits = (u128::from(mix(hi ^ n)) << 64) | u128::from(mix(lo.wrapping_add(n)));
    uuid::Builder::from_random_bytes(bits.to_be_bytes()).into_uuid()
}

/// SplitMix64's finaliser: a bijection on u64, so distinct counters give distinct halves.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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
        write(f, Kind::Project, self.env, self.uuid)
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

    #[test]
    fn ids_are_spelled_kind_env_uuid() {
        let u = Uuid::parse_str("0D5B6B53-6A9E-4B8E-9D8A-1E1C1C1C1C1C").unwrap();
        assert_eq!(
            format(Kind::TokenProfile, Env::Live, u),
            "trusted-auth-token-profile-live-0d5b6b53-6a9e-4b8e-9d8a-1e1c1c1c1c1c"
        );
        let p = ProjectId {
            env: Env::Test,
            uuid: u,
        };
        assert_eq!(
            p.to_string(),
            "project-test-0d5b6b53-6a9e-4b8e-9d8a-1e1c1c1c1c1c"
        );
        assert_eq!(format!("{p:>60}").len(), 49, "Display writes the id as is");
    }

    #[test]
    fn request_ids_are_distinct_version_4_uuids() {
        let ids: std::collections::HashSet<Uuid> = (0..10_000).map(|_| request_uuid()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(
            ids.iter()
                .all(|u| u.get_version_num() == 4 && u.get_variant() == uuid::Variant::RFC4122)
        );
    }
}
