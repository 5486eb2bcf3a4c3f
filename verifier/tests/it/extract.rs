//! The axum integration: the `Authenticated` extractor (Bearer and cookie, optional form), the
//! `AuthLayer`, revoked sessions refused, and errors as HTTP answers.

use axum::Router;
use axum::body::Body;
use axum::extract::Extension;
use axum::http::{Request, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hallpass_verifier::{Authenticated, Authenticator, FeedTransport, Session, Verifier};
use serde_json::Value;
use tower::ServiceExt;

use crate::common::*;

async fn me(Authenticated(session): Authenticated) -> String {
    session.session_id
}

async fn maybe(session: Option<Authenticated>) -> String {
    session.map_or_else(|| "anonymous".to_string(), |s| s.session_id.clone())
}

async fn edit(
    axum::extract::State(auth): axum::extract::State<Authenticator>,
    session: Authenticated,
) -> axum::response::Response {
    match auth
        .verifier()
        .authorize(&session, "documents", "delete")
        .await
    {
        Ok(_) => "deleted".into_response(),
        Err(e) => e.into_response(),
    }
}

async fn layered(Extension(session): Extension<Session>) -> String {
    format!("layer:{}", session.session_id)
}

fn app(auth: Authenticator) -> Router {
    let protected = Router::new()
        .route("/layered", get(layered))
        .layer(auth.layer());
    Router::new()
        .route("/me", get(me))
        .route("/maybe", get(maybe))
        .route("/documents", get(edit))
        .merge(protected)
        .with_state(auth)
}

async fn call(app: &Router, request: Request<Body>) -> (StatusCode, Option<String>, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let www = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_string());
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, www, String::from_utf8(body.to_vec()).unwrap())
}

fn get_with(path: &str, header: Option<(header::HeaderName, String)>) -> Request<Body> {
    let mut r = Request::get(path);
    if let Some((name, value)) = header {
        r = r.header(name, value);
    }
    r.body(Body::empty()).unwrap()
}

fn bearer(jwt: &str) -> Option<(header::HeaderName, String)> {
    Some((header::AUTHORIZATION, format!("Bearer {jwt}")))
}

fn error_type(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap();
    v["error_type"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_extractor_reads_bearer_or_cookie_and_refuses_the_rest() {
    let fake = Fake::start().await;
    let clock = clock();
    let v: Verifier = builder(&fake, &clock)
        .project_secret(SECRET)
        .feed_transport(FeedTransport::Stream)
        .build()
        .unwrap();
    ready(&v).await;
    let app = app(Authenticator::new(v.clone()));
    let jwt = keys()[0].mint(&session_id(1), T0);

    let (status, _, body) = call(&app, get_with("/me", bearer(&jwt))).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, session_id(1).as_str())
    );
    let cookie = Some((
        header::COOKIE,
        format!("theme=dark; stytch_session_jwt={jwt}"),
    ));
    let (status, _, body) = call(&app, get_with("/me", cookie.clone())).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, session_id(1).as_str())
    );

    let (status, www, body) = call(&app, get_with("/me", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(www.as_deref(), Some("Bearer"));
    assert_eq!(error_type(&body), "unauthenticated");

    let (status, www, body) = call(&app, get_with("/me", bearer("not.a.jwt"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(www.as_deref(), Some("Bearer error=\"invalid_token\""));
    assert_eq!(error_type(&body), "jwt_malformed");

    // Optional: no JWT is anonymous, a bad one is still refused.
    assert_eq!(call(&app, get_with("/maybe", None)).await.2, "anonymous");
    assert_eq!(
        call(&app, get_with("/maybe", bearer(&jwt))).await.2,
        session_id(1)
    );
    assert_eq!(
        call(&app, get_with("/maybe", bearer("x.y.z"))).await.0,
        StatusCode::UNAUTHORIZED
    );

    // RBAC: editor may not delete documents.
    let (status, _, body) = call(&app, get_with("/documents", bearer(&jwt))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_type(&body), "permission_denied");

    // Revoked: refused through the cookie too.
    fake.revoke(&session_id(1), T0 + 300);
    eventually(std::time::Duration::from_secs(1), "revoked", async || {
        call(&app, get_with("/me", bearer(&jwt))).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    let (status, _, body) = call(&app, get_with("/me", cookie)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_type(&body), "session_revoked");
}

#[tokio::test]
async fn the_layer_protects_its_routes_and_hands_over_the_session() {
    let fake = Fake::start().await;
    let clock = clock();
    let v = builder(&fake, &clock)
        .revocation_feed(false)
        .build()
        .unwrap();
    let app = app(Authenticator::new(v).cookie_name("sid"));
    let jwt = keys()[0].mint(&session_id(7), T0);

    let (status, _, body) = call(&app, get_with("/layered", bearer(&jwt))).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, format!("layer:{}", session_id(7)))
    );
    let cookie = Some((header::COOKIE, format!("sid={jwt}")));
    assert_eq!(
        call(&app, get_with("/layered", cookie)).await.0,
        StatusCode::OK
    );
    let stytch_cookie = Some((header::COOKIE, format!("stytch_session_jwt={jwt}")));
    assert_eq!(
        call(&app, get_with("/layered", stytch_cookie)).await.0,
        StatusCode::UNAUTHORIZED,
        "only the configured cookie is read"
    );
    let expired = keys()[0].mint(&session_id(7), T0 - 400);
    let (status, _, body) = call(&app, get_with("/layered", bearer(&expired))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_type(&body), "jwt_expired");
}
