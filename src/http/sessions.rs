//! `/v1/sessions`: authenticate, get, revoke, create (extension), and the session flows the
//! magic-link and migrate endpoints share.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::auth::Caller;
use super::views::{self, UserView, session_from_row, session_to_row};
use super::{Json, Query, Reply, present};
use crate::app::AppState;
use crate::directory::Project;
use crate::domain::crypto::{OpaqueToken, hash_token};
use crate::domain::ids::{self, Kind};
use crate::domain::jwt;
use crate::domain::session::{
    Factor, MAX_FACTORS, MAX_IP_ADDRESS_CHARS, MAX_USER_AGENT_CHARS, Session, SessionDuration,
    SessionView, add_factor, merge_custom_claims,
};
use crate::error::{Error, Result};
use crate::store::revocations::{self, Reason};
use crate::store::sessions::{SessionKey, SessionWithUser};
use crate::store::users::UserRow;
use crate::store::{self};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions", get(list).post(create))
        .route("/v1/sessions/authenticate", post(authenticate))
        .route("/v1/sessions/revoke", post(revoke))
        .route("/v1/sessions/migrate", post(super::migrate::migrate))
        .route("/v1/sessions/attest", post(super::attest::attest))
        .route(
            "/v1/sessions/exchange_access_token",
            post(exchange_access_token),
        )
}

/// What a successful authentication produced.
pub struct Authenticated {
    pub session: Session,
    pub session_token: String,
    pub session_jwt: String,
    pub user: UserRow,
}

/// The authenticate response body; magic links and migrate add their own fields.
#[derive(Serialize)]
pub struct AuthBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method_id: Option<String>,
    pub session: Option<SessionView<'a>>,
    pub session_token: &'a str,
    #[serde(serialize_with = "views::jwt_text")]
    pub session_jwt: &'a str,
    pub user: UserView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_sessions: Option<bool>,
    /// The answer to an `authorization_check` (present only when one was asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
}

#[derive(Serialize)]
pub struct Verdict {
    pub authorized: bool,
    pub granting_roles: Vec<String>,
}

impl<'a> AuthBody<'a> {
    /// The reply when no session was started (no duration asked for): the user alone.
    pub fn without_session(project: &Project, user: &'a UserRow) -> Self {
        AuthBody {
            user_id: None,
            method_id: None,
            session: None,
            session_token: "",
            session_jwt: "",
            user: views::user(project, user),
            reset_sessions: None,
            verdict: None,
        }
    }
}

impl Authenticated {
    pub fn body<'a>(&'a self, project: &Project) -> AuthBody<'a> {
        AuthBody {
            user_id: None,
            method_id: None,
            session: Some(self.session.view(&project.id)),
            session_token: &self.session_token,
            session_jwt: &self.session_jwt,
            user: views::user(project, &self.user),
            reset_sessions: None,
            verdict: None,
        }
    }
}

fn mint(state: &AppState, project: &Project, session: &Session, now: i64) -> Result<String> {
    // A ring without a signing key is being repaired (its key was just revoked).
    let key = project
        .ring
        .signer
        .as_ref()
        .ok_or(Error::ServiceUnavailable)?;
    let started = std::time::Instant::now();
    let minted = jwt::mint(key, &project.id, session, now);
    state
        .metrics
        .signing_seconds
        .record(started.elapsed().as_secs_f64());
    crate::metrics::Metrics::inc(&state.metrics.jwts_minted);
    minted
}

/// The outcome of what follows the spending of a single-use token (a magic link, an
/// attested token). A refusal (4xx) was decided before the session was written (the session
/// ended meanwhile, or a concurrent claim merge filled it), so `give_back` makes the token
/// usable again for a corrected request; after a database failure it stays spent, since the
/// session may have been written. An attested token's roles may already have been granted
/// when the refusal comes: the grant is idempotent (the same token adds the same roles), so
/// giving the token back is still safe.
pub async fn after_spending<T>(
    done: Result<T>,
    give_back: impl std::future::Future<Output = sqlx::Result<()>>,
) -> Result<T> {
    if let Err(e) = &done
        && e.status_and_type().0.is_client_error()
        && let Err(e) = give_back.await
    {
        tracing::warn!(error = %e, "a refused sign-in could not give its single-use token back");
    }
    done
}

/// What a sign-in with a new factor checks before its single-use token (a magic link, an
/// attested token) is spent, so that a request refused for them leaves the token usable: the
/// session presented (`existing`) is the user's own, and `claims` fit the session they are to
/// be merged into (`existing`, or a new one). The merge under the session's lock checks the
/// size again (a concurrent merge can still fill the session in between).
pub fn before_spending(
    existing: Option<&(Session, UserRow)>,
    user_id: Uuid,
    claims: Option<&Map<String, Value>>,
) -> Result<()> {
    owned_by(existing, user_id)?;
    if let Some(patch) = claims {
        let empty = Map::new();
        let base = existing.map_or(&empty, |(s, _)| &s.custom_claims);
        merge_custom_claims(base, patch)?;
    }
    Ok(())
}

/// A factor of one user is never added to another user's session.
fn owned_by(existing: Option<&(Session, UserRow)>, user_id: Uuid) -> Result<()> {
    match existing {
        Some((_, owner)) if owner.user_id != user_id => Err(Error::SessionNotFound),
        _ => Ok(()),
    }
}

/// What a sign-in with a new factor (a magic link, an attested token) produced: a session,
/// or, with no session presented and no duration asked for, the user alone.
pub enum SignedIn {
    Session(Box<Authenticated>),
    UserOnly(Box<UserRow>),
}

impl SignedIn {
    pub fn body<'a>(&'a self, project: &Project) -> AuthBody<'a> {
        match self {
            SignedIn::Session(a) => a.body(project),
            SignedIn::UserOnly(user) => AuthBody::without_session(project, user),
        }
    }
}

/// Signs `user` in with `factor`: into the session presented (`existing`, found by
/// [`find`] from `presented_token` or a JWT), which must be the user's own; else into a new
/// session when a duration is asked for; else nowhere. Callers check [`before_spending`]
/// before they spend the factor's token.
#[allow(clippy::too_many_arguments)]
pub async fn sign_in(
    state: &AppState,
    project: &Project,
    user: UserRow,
    existing: Option<(Session, UserRow)>,
    presented_token: Option<&str>,
    duration: Option<SessionDuration>,
    claims: Option<&Map<String, Value>>,
    factor: Factor,
) -> Result<SignedIn> {
    owned_by(existing.as_ref(), user.user_id)?;
    Ok(match (existing, duration) {
        (Some(found), _) => {
            let presented = presented_token.unwrap_or_default().to_string();
            let resumed = resume(
                state,
                project,
                found,
                presented,
                duration,
                claims,
                Some(factor),
            )
            .await?;
            SignedIn::Session(Box::new(resumed))
        }
        (None, Some(d)) => SignedIn::Session(Box::new(
            start(
                state,
                project,
                user,
                d,
                vec![factor],
                claims,
                Default::default(),
            )
            .await?,
        )),
        (None, None) => SignedIn::UserOnly(Box::new(user)),
    })
}

/// Starts a session for `user` and mints its token and JWT.
pub async fn start(
    state: &AppState,
    project: &Project,
    user: UserRow,
    duration: SessionDuration,
    factors: Vec<Factor>,
    claims: Option<&Map<String, Value>>,
    attributes: (String, String),
) -> Result<Authenticated> {
    let now = state.clock.now();
    let custom_claims = match claims {
        Some(patch) => merge_custom_claims(&Map::new(), patch)?,
        None => Map::new(),
    };
    let session = Session {
        // Time-ordered (UUIDv7): among sessions started in the same second, the order of
        // their ids is the order they were started in, which `server.max_sessions_per_user`
        // relies on to end the oldest, never the one being started.
        id: Uuid::now_v7(),
        user_id: user.user_id,
        started_at: now,
        last_accessed_at: now,
        expires_at: project.policy.expiry(now, now, duration),
        revoked: false,
        ip_address: attributes.0,
        user_agent: attributes.1,
        factors,
        roles: views::roles(project, &user),
        custom_claims,
    };
    let token = OpaqueToken::generate();
    let session_jwt = mint(state, project, &session, now)?;
    let limit = state.settings.max_sessions_per_user;
    let over = store::sessions::insert(
        &state.db,
        project.id.uuid,
        user.user_id,
        &token.hash(),
        &session_to_row(&session)?,
        limit,
    )
    .await
    .map_err(store::user_gone)?;
    if over {
        // The new session is stored and is answered either way: when ending the oldest fails,
        // the user is over the limit until their next start trims it.
        match revocations::end_beyond_newest(&state.db, project.id.uuid, user.user_id, limit, now)
            .await
        {
            Ok(cursor) => state.feed.published(project.id.uuid, cursor),
            Err(e) => {
                tracing::warn!(error = %e, limit, "ending a user's oldest sessions past the limit failed; the next start retries")
            }
        }
    }
    Ok(Authenticated {
        session,
        session_token: token.expose().to_string(),
        session_jwt,
        user,
    })
}

/// The session a request names by exactly one of a token or a JWT (the JWT's signature,
/// issuer and audience are checked here; no database is involved).
fn session_key(
    project: &Project,
    token: Option<&str>,
    session_jwt: Option<&str>,
    now: i64,
) -> Result<SessionKey> {
    match (token, session_jwt) {
        (None, None) => Err(Error::NoSessionArguments),
        (Some(_), Some(_)) => Err(Error::TooManySessionArguments),
        (Some(t), None) => Ok(SessionKey::TokenHash(hash_token(t))),
        (None, Some(j)) => {
            let verified = jwt::verify(j, &project.id, now, |kid| project.ring.find(kid))?;
            Ok(SessionKey::Id(verified.session_id))
        }
    }
}

/// Finds the active session named by exactly one of a token or a JWT.
pub async fn find(
    state: &AppState,
    project: &Project,
    token: Option<&str>,
    session_jwt: Option<&str>,
) -> Result<(Session, UserRow)> {
    let key = session_key(project, token, session_jwt, state.clock.now())?;
    lookup(state, project, &key).await
}

async fn lookup(
    state: &AppState,
    project: &Project,
    key: &SessionKey,
) -> Result<(Session, UserRow)> {
    let found = store::sessions::get(&state.db, project.id.uuid, key).await?;
    let SessionWithUser { session, user } = found.ok_or(Error::SessionNotFound)?;
    let mut session = session_from_row(session, user.user_id)?;
    session.roles = views::roles(project, &user);
    if let Some(at) = state.touches.pending(session.id) {
        session.last_accessed_at = session.last_accessed_at.max(at);
    }
    let now = state.clock.now();
    if !project.policy.is_active(&session.times(), now) {
        // Rare, and a transaction: boxed so that every lookup's future stays small.
        Box::pin(notice_policy_end(state, project, &session, now)).await;
        return Err(Error::SessionNotFound);
    }
    Ok((session, user))
}

/// How long past its idle timeout a session must look before it is ended for good. Touches
/// are written behind (within about a second, `app::TOUCH_MAX_DELAY`): another instance may
/// have just answered an authenticate of it whose touch is not stored yet. Inside this
/// margin the session is not found here, but it is not ended, so that instance's touch,
/// once stored, keeps it alive everywhere.
const IDLE_END_MARGIN_SECONDS: i64 = 5;

/// A session found ended by the project's idle timeout or absolute lifetime (not by its own
/// expiry or a revocation) is ended for good here, once, and published on the revocation
/// feed, so verifiers stop accepting its JWTs. Failing to record it only delays that.
async fn notice_policy_end(state: &AppState, project: &Project, session: &Session, now: i64) {
    if session.revoked || session.expires_at <= now {
        return;
    }
    let bounds = project.policy.bounds(now);
    let idle_by = bounds
        .last_accessed_after
        .saturating_sub(IDLE_END_MARGIN_SECONDS);
    let reason = if session.started_at <= bounds.started_after {
        Reason::AbsoluteLifetime
    } else if session.last_accessed_at <= idle_by {
        Reason::IdleTimeout
    } else {
        return;
    };
    let by = (bounds.started_after, idle_by);
    let ended = revocations::end_by_policy(&state.db, project.id.uuid, session.id, now, reason, by);
    match ended.await {
        Ok(cursor) => state.feed.published(project.id.uuid, cursor),
        Err(e) => tracing::warn!(error = %e, "could not record a session ended by policy"),
    }
}

/// The common extension, `session_duration_minutes` alone, in one durable statement: the
/// database checks the policy's bounds and writes the new expiry (see
/// `store::sessions::extend`). `None` when it matched nothing: the caller falls back to a
/// read, which also tells a missing session from one whose touch is still pending here.
async fn extend(
    state: &AppState,
    project: &Project,
    key: &SessionKey,
    session_token: String,
    duration: SessionDuration,
) -> Result<Option<Authenticated>> {
    let now = state.clock.now();
    let Some(SessionWithUser { session, user }) = store::sessions::extend(
        &state.db,
        project.id.uuid,
        key,
        &project.policy.bounds(now),
        &project.policy.extension(now, duration),
    )
    .await?
    else {
        return Ok(None);
    };
    let mut session = session_from_row(session, user.user_id)?;
    session.roles = views::roles(project, &user);
    state.touches.forget(session.id);
    let session_jwt = mint(state, project, &session, now)?;
    Ok(Some(Authenticated {
        session,
        session_token,
        session_jwt,
        user,
    }))
}

/// Authenticates an existing session: touches it, applies a new duration, merges claims,
/// records a factor, and mints a fresh JWT. Changes other than the touch are durable before
/// this returns; a bare touch is written behind (at most a second later).
///
/// A change is computed from the stored row while it is locked and written before the lock
/// is released (`store::sessions::lock`), never from the copy `found` read earlier: two
/// requests merging different claims into one session must both be kept, and a shortened
/// expiry must not be undone by a claim update that read the session before it.
pub async fn resume(
    state: &AppState,
    project: &Project,
    (session, user): (Session, UserRow),
    session_token: String,
    duration: Option<SessionDuration>,
    claims: Option<&Map<String, Value>>,
    factor: Option<Factor>,
) -> Result<Authenticated> {
    let now = state.clock.now();
    let session = if duration.is_none() && claims.is_none() && factor.is_none() {
        touched(state, session, now)
    } else {
        // A transaction, and the rarer path: boxed so that every authenticate's future
        // (built, boxed and moved for each request) does not carry its size.
        Box::pin(change(
            state, project, session, &user, now, duration, claims, factor,
        ))
        .await?
    };
    let session_jwt = mint(state, project, &session, now)?;
    Ok(Authenticated {
        session,
        session_token,
        session_jwt,
        user,
    })
}

/// `resume`'s durable path: under the session's row lock, apply the extension, the claims
/// and the factor; written only when one of them changed anything.
#[allow(clippy::too_many_arguments)]
async fn change(
    state: &AppState,
    project: &Project,
    session: Session,
    user: &UserRow,
    now: i64,
    duration: Option<SessionDuration>,
    claims: Option<&Map<String, Value>>,
    factor: Option<Factor>,
) -> Result<Session> {
    let locked = store::sessions::lock(&state.db, project.id.uuid, session.id)
        .await?
        .ok_or(Error::SessionNotFound)?;
    let mut current = session_from_row(locked.row.clone(), user.user_id)?;
    current.roles = session.roles;
    if let Some(at) = state.touches.pending(current.id) {
        current.last_accessed_at = current.last_accessed_at.max(at);
    }
    if !project.policy.is_active(&current.times(), now) {
        return Err(Error::SessionNotFound);
    }
    let before = (
        current.expires_at,
        current.custom_claims.clone(),
        current.factors.clone(),
    );
    current.last_accessed_at = now;
    if let Some(d) = duration {
        current.expires_at = project.policy.expiry(current.started_at, now, d);
    }
    if let Some(patch) = claims {
        current.custom_claims = merge_custom_claims(&current.custom_claims, patch)?;
    }
    if let Some(f) = factor {
        add_factor(&mut current.factors, f)?;
    }
    if before
        == (
            current.expires_at,
            current.custom_claims.clone(),
            current.factors.clone(),
        )
    {
        // Nothing durable changed: release the lock and write the touch behind.
        drop(locked);
        Ok(touched(state, current, now))
    } else {
        locked.save(&session_to_row(&current)?).await?;
        state.touches.forget(current.id);
        Ok(current)
    }
}

/// A session authenticated at `now` with nothing else changed: the touch is written behind.
fn touched(state: &AppState, mut session: Session, now: i64) -> Session {
    session.last_accessed_at = now;
    state.touches.record(session.id, now);
    session
}

#[derive(Deserialize)]
pub struct AuthenticateRequest {
    session_token: Option<String>,
    session_jwt: Option<String>,
    session_duration_minutes: Option<i64>,
    session_custom_claims: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "super::object")]
    authorization_check: Option<AuthorizationCheck>,
}

/// `authorization_check`: may the session's roles perform `action` on `resource_id`?
#[derive(Deserialize)]
pub struct AuthorizationCheck {
    resource_id: String,
    action: String,
}

impl AuthorizationCheck {
    fn validated(self) -> Result<Self> {
        for (name, value) in [("resource_id", &self.resource_id), ("action", &self.action)] {
            if value.is_empty() {
                return Err(Error::bad_request(format!(
                    "authorization_check.{name} must not be empty"
                )));
            }
        }
        Ok(self)
    }

    /// The roles of `session` that grant this check; an error when none does.
    fn decide(&self, project: &Project, session: &Session) -> Result<Verdict> {
        let granting = project
            .rbac
            .granting_roles(&session.roles, &self.resource_id, &self.action);
        if granting.is_empty() {
            return Err(Error::AuthorizationDenied);
        }
        Ok(Verdict {
            authorized: true,
            granting_roles: granting,
        })
    }
}

async fn authenticate(
    State(state): State<AppState>,
    Caller(project): Caller,
    Json(req): Json<AuthenticateRequest>,
) -> Result<Response> {
    let token = present(&req.session_token);
    let duration = SessionDuration::parse_optional(req.session_duration_minutes)?;
    let check = req
        .authorization_check
        .map(AuthorizationCheck::validated)
        .transpose()?;
    let key = session_key(
        &project,
        token,
        present(&req.session_jwt),
        state.clock.now(),
    )?;
    // Authenticated by JWT, the response carries no token (the server never stores it).
    let presented = token.unwrap_or_default().to_string();
    let claims = req.session_custom_claims.as_ref();
    let Some(check) = check else {
        if let (Some(d), None) = (duration, claims)
            && let Some(done) =
                Box::pin(extend(&state, &project, &key, presented.clone(), d)).await?
        {
            return Ok(render(done.body(&project)));
        }
        let found = lookup(&state, &project, &key).await?;
        let done = resume(&state, &project, found, presented, duration, claims, None).await?;
        return Ok(render(done.body(&project)));
    };
    // With a check, the session is read and the check decided before anything is written: a
    // denial changes nothing (no extension, no claim merge, no touch).
    let found = lookup(&state, &project, &key).await?;
    let verdict = check.decide(&project, &found.0)?;
    let done = resume(&state, &project, found, presented, duration, claims, None).await?;
    let mut body = done.body(&project);
    body.verdict = Some(verdict);
    Ok(render(body))
}

/// Stytch's Connected Apps exchange needs an OAuth authorization server, which hallpass is
/// not: a clear 400 instead of a 404 that looks like a wrong base URL.
async fn exchange_access_token(Caller(_): Caller) -> Error {
    Error::bad_request(
        "exchange_access_token is not supported: hallpass is not an OAuth authorization server. \
         To turn a token from your own identity provider into a session, use POST /v1/sessions/attest \
         with a trusted auth token profile.",
    )
}

#[derive(Deserialize)]
pub struct CreateRequest {
    user_id: String,
    session_duration_minutes: Option<i64>,
    authentication_factors: Option<Vec<Map<String, Value>>>,
    session_custom_claims: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "super::object")]
    attributes: Option<AttributesRequest>,
}

#[derive(Deserialize, Default)]
pub struct AttributesRequest {
    ip_address: Option<String>,
    user_agent: Option<String>,
}

/// Extension: a trusted backend starts a session directly.
async fn create(
    State(state): State<AppState>,
    Caller(project): Caller,
    Json(req): Json<CreateRequest>,
) -> Result<Response> {
    let minutes = req
        .session_duration_minutes
        .ok_or_else(|| Error::bad_request("session_duration_minutes is required"))?;
    let duration = SessionDuration::parse(minutes)?;
    let raw = req
        .authentication_factors
        .filter(|f| !f.is_empty())
        .ok_or_else(|| {
            Error::bad_request("authentication_factors is required and must not be empty")
        })?;
    if raw.len() > MAX_FACTORS {
        return Err(Error::bad_request(format!(
            "authentication_factors: at most {MAX_FACTORS} factors"
        )));
    }
    let now = state.clock.now();
    let factors = raw
        .iter()
        .enumerate()
        .map(|(i, f)| Factor::from_request(i, f, now))
        .collect::<Result<Vec<_>>>()?;
    let user = super::users::resolve(&state, &project, &req.user_id).await?;
    let attrs = req.attributes.unwrap_or_default();
    let (ip_address, user_agent) = (
        attrs.ip_address.unwrap_or_default(),
        attrs.user_agent.unwrap_or_default(),
    );
    if ip_address.chars().count() > MAX_IP_ADDRESS_CHARS {
        return Err(Error::bad_request(format!(
            "attributes.ip_address: at most {MAX_IP_ADDRESS_CHARS} characters"
        )));
    }
    if user_agent.chars().count() > MAX_USER_AGENT_CHARS {
        return Err(Error::bad_request(format!(
            "attributes.user_agent: at most {MAX_USER_AGENT_CHARS} characters"
        )));
    }
    let done = start(
        &state,
        &project,
        user,
        duration,
        factors,
        req.session_custom_claims.as_ref(),
        (ip_address, user_agent),
    )
    .await?;
    Ok(render(done.body(&project)))
}

/// Renders a body that borrows from the handler's locals.
/// Renders a reply whose body borrows from the handler's locals.
pub fn render<T: Serialize>(body: T) -> Response {
    Reply(body).into_response()
}

#[derive(Deserialize)]
pub struct ListQuery {
    user_id: Option<String>,
}

#[derive(Serialize)]
struct ListBody<'a> {
    sessions: Vec<SessionView<'a>>,
}

async fn list(
    State(state): State<AppState>,
    Caller(project): Caller,
    Query(q): Query<ListQuery>,
) -> Result<Response> {
    let user_id = present(&q.user_id).ok_or_else(|| Error::bad_request("user_id is required"))?;
    let user = super::users::resolve(&state, &project, user_id).await?;
    let now = state.clock.now();
    let rows =
        store::sessions::live_for_user(&state.db, project.id.uuid, user.user_id, now).await?;
    let mut sessions = Vec::with_capacity(rows.len());
    for row in rows {
        let mut s = session_from_row(row, user.user_id)?;
        s.roles = views::roles(&project, &user);
        if let Some(at) = state.touches.pending(s.id) {
            s.last_accessed_at = s.last_accessed_at.max(at);
        }
        if project.policy.is_active(&s.times(), now) {
            sessions.push(s);
        }
    }
    Ok(render(ListBody {
        sessions: sessions.iter().map(|s| s.view(&project.id)).collect(),
    }))
}

#[derive(Deserialize)]
pub struct RevokeRequest {
    session_id: Option<String>,
    session_token: Option<String>,
    session_jwt: Option<String>,
    user_id: Option<String>,
}

#[derive(Serialize)]
struct RevokedAll {
    revoked_session_ids: Vec<String>,
}

async fn revoke(
    State(state): State<AppState>,
    Caller(project): Caller,
    Json(req): Json<RevokeRequest>,
) -> Result<Response> {
    let selectors = [
        present(&req.session_id),
        present(&req.session_token),
        present(&req.session_jwt),
        present(&req.user_id),
    ];
    match selectors.iter().flatten().count() {
        0 => return Err(Error::NoSessionRevokeArguments),
        1 => {}
        _ => return Err(Error::TooManySessionRevokeArguments),
    }
    let now = state.clock.now();
    if let Some(user_id) = present(&req.user_id) {
        let user = super::users::resolve(&state, &project, user_id).await?;
        let (ids, cursor) =
            revocations::end_user_sessions(&state.db, project.id.uuid, user.user_id, now).await?;
        state.feed.published(project.id.uuid, cursor);
        return Ok(render(RevokedAll {
            revoked_session_ids: ids
                .into_iter()
                .map(|id| project.id.id(Kind::Session, id))
                .collect(),
        }));
    }
    let session_id = if let Some(text) = present(&req.session_id) {
        match ids::parse(Kind::Session, text) {
            Some((env, id)) if env == project.id.env => id,
            Some(_) => return Err(Error::SessionNotFound),
            None => return Err(Error::InvalidSessionId),
        }
    } else if let Some(token) = present(&req.session_token) {
        let key = SessionKey::TokenHash(hash_token(token));
        store::sessions::get(&state.db, project.id.uuid, &key)
            .await?
            .ok_or(Error::SessionNotFound)?
            .session
            .session_id
    } else {
        // An expired JWT with a valid signature still names its session.
        let j = present(&req.session_jwt).unwrap_or_default();
        jwt::verify(j, &project.id, now, |kid| project.ring.find(kid))?.session_id
    };
    let cursor =
        revocations::end_session(&state.db, project.id.uuid, session_id, now, Reason::Revoked)
            .await?
            .ok_or(Error::SessionNotFound)?;
    state.feed.published(project.id.uuid, Some(cursor));
    state.touches.forget(session_id);
    Ok(render(Map::new()))
}
