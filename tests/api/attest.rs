//! Attest: tokens from the app's own identity provider (keys and JWKS made here, served on
//! 127.0.0.1) become sessions, checked against a trusted auth token profile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hallpass::store::token_profiles::{self, ProfileRow};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::harness::{TestApp, decode_jwt};

/// An identity provider: an EC P-256 signing key, and its JWKS served on loopback.
struct Provider {
    key: rcgen::KeyPair,
    kid: String,
    jwks_url: String,
    fetches: Arc<AtomicUsize>,
    /// While set, the JWKS URL answers 500.
    failing: Arc<AtomicBool>,
}

impl Provider {
    async fn start() -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let kid = format!("kid-{}", uuid::Uuid::new_v4().simple());
        let raw = key.public_key_raw();
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
        }]});
        let fetches = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(AtomicBool::new(false));
        let (counter, fail) = (fetches.clone(), failing.clone());
        let app = Router::new().route(
            "/jwks.json",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let status = match fail.load(Ordering::SeqCst) {
                    true => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    false => axum::http::StatusCode::OK,
                };
                let body = jwks.to_string();
                async move { (status, [("cache-control", "public, max-age=600")], body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Provider {
            key,
            kid,
            jwks_url: format!("http://{addr}/jwks.json"),
            fetches,
            failing,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let key = ec_signer(&self.key);
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

/// PEM text of DER bytes.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn ec_signer(key: &rcgen::KeyPair) -> EncodingKey {
    EncodingKey::from_ec_der(&key.serialize_der())
}

const ISSUER: &str = "https://idp.example.com/";
const AUDIENCE: &str = "hallpass-tests";

async fn profile(
    app: &TestApp,
    provider: &Provider,
    tweak: impl FnOnce(&mut ProfileRow),
) -> String {
    let project: hallpass::domain::ids::ProjectId = app.creds.project_id.parse().unwrap();
    let mut row = ProfileRow {
        id: uuid::Uuid::new_v4(),
        project_id: project.uuid,
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks_url: Some(provider.jwks_url.clone()),
        pem_keys: "[]".into(),
        email_claim: "email".into(),
        token_id_claim: "jti".into(),
        external_user_id_claim: None,
        role_ids_claim: None,
        jit_provisioning: false,
        created_at: app.now(),
    };
    tweak(&mut row);
    token_profiles::insert(&app.db, &row).await.unwrap();
    project.id(hallpass::domain::ids::Kind::TokenProfile, row.id)
}

fn claims(app: &TestApp, email: &str) -> Value {
    json!({
        "iss": ISSUER, "aud": [AUDIENCE], "sub": "idp-user-1", "email": email,
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": app.now(), "nbf": app.now(), "exp": app.now() + 300,
    })
}

#[tokio::test]
async fn a_provider_token_becomes_a_session_once() {
    let app = TestApp::new().await;
    let idp = Provider::start().await;
    let profile_id = profile(&app, &idp, |_| {}).await;
    let user = app.user("ada@example.com").await;
    let token = idp.sign(&claims(&app, "Ada@Example.com"));
    let r = app
        .post(
            "/v1/sessions/attest",
            json!({"profile_id": profile_id, "token": token, "session_duration_minutes": 60,
                   "session_custom_claims": {"via": "idp"}, "telemetry_id": "ignored"}),
        )
        .await;
    let body = r.ok();
    assert_eq!(body["user_id"], user);
    let factor = &body["session"]["authentication_factors"][0];
    assert_eq!(factor["type"], "trusted_auth_token");
    assert_eq!(factor["delivery_method"], "trusted_token_exchange");
    assert!(factor["trusted_auth_token_factor"]["token_id"].is_string());
    assert_eq!(body["session"]["custom_claims"], json!({"via": "idp"}));
    let (_, jwt) = decode_jwt(body["session_jwt"].as_str().unwrap());
    assert_eq!(jwt["sub"], user);
    app.authenticate(json!({"session_token": body["session_token"]}))
        .await
        .ok();
    // Claims that would not fit are refused before the token is spent: it still works.
    let fresh = idp.sign(&claims(&app, "ada@example.com"));
    app.post(
        "/v1/sessions/attest",
        json!({"profile_id": profile_id, "token": fresh, "session_duration_minutes": 60,
               "session_custom_claims": {"big": "x".repeat(5000)}}),
    )
    .await
    .error(400, "custom_claims_too_large");
    app.post(
        "/v1/sessions/attest",
        json!({"profile_id": profile_id, "token": fresh, "session_duration_minutes": 60}),
    )
    .await
    .ok();
    // The same token again: refused.
    app.post(
        "/v1/sessions/attest",
        json!({"profile_id": profile_id, "token": token, "session_duration_minutes": 60}),
    )
    .await
    .error(400, "trusted_auth_token_already_used");
    // Without a duration, no session: the user alone (strings, not nulls, for the SDKs).
    let r = app
        .post(
            "/v1/sessions/attest",
            json!({"profile_id": profile_id, "token": idp.sign(&claims(&app, "ada@example.com"))}),
        )
        .await;
    let body = r.ok();
    assert_eq!(body["session"], Value::Null);
    assert_eq!(body["session_token"], "");
    assert_eq!(body["session_jwt"], "");
    assert_eq!(body["user"]["user_id"], user);
    assert_eq!(
        idp.fetches.load(Ordering::SeqCst),
        1,
        "the JWKS is cached for its max-age"
    );
}

#[tokio::test]
async fn every_bad_token_is_refused_with_its_own_error() {
    let app = TestApp::new().await;
    let idp = Provider::start().await;
    let impostor = Provider::start().await;
    let profile_id = profile(&app, &idp, |_| {}).await;
    app.user("ada@example.com").await;
    let good = claims(&app, "ada@example.com");
    let with = |key: &str, value: Value| {
        let mut c = good.clone();
        c[key] = value;
        c
    };
    let without = |key: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(key);
        c
    };
    // Signed by another key under our kid.
    let mut forged_header = Header::new(Algorithm::ES256);
    forged_header.kid = Some(idp.kid.clone());
    let forged = jsonwebtoken::encode(&forged_header, &good, &ec_signer(&impostor.key)).unwrap();
    let hmac = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    let cases = [
        (forged, 401, "invalid_trusted_auth_token_signature"),
        (hmac, 401, "invalid_trusted_auth_token_signature"),
        (unsigned, 401, "invalid_trusted_auth_token_signature"),
        (
            impostor.sign(&good),
            401,
            "invalid_trusted_auth_token_signature",
        ),
        (
            idp.sign(&with("iss", json!("https://evil.example/"))),
            401,
            "invalid_trusted_auth_token_issuer",
        ),
        (
            idp.sign(&with("aud", json!("someone-else"))),
            401,
            "invalid_trusted_auth_token_audience",
        ),
        (
            idp.sign(&with("exp", json!(app.now() - 120))),
            401,
            "trusted_auth_token_expired",
        ),
        (
            idp.sign(&without("exp")),
            400,
            "trusted_auth_token_missing_claim",
        ),
        (
            idp.sign(&with("nbf", json!(app.now() + 600))),
            401,
            "trusted_auth_token_not_yet_valid",
        ),
        (
            idp.sign(&with("iat", json!(app.now() + 600))),
            401,
            "trusted_auth_token_not_yet_valid",
        ),
        (
            idp.sign(&without("email")),
            400,
            "trusted_auth_token_missing_claim",
        ),
        (
            idp.sign(&without("jti")),
            400,
            "trusted_auth_token_missing_claim",
        ),
        (
            idp.sign(&with("email", json!("nobody@example.com"))),
            404,
            "user_not_found",
        ),
        (
            "not-a-jwt".to_string(),
            401,
            "invalid_trusted_auth_token_signature",
        ),
    ];
    for (token, status, error_type) in cases {
        app.post(
            "/v1/sessions/attest",
            json!({"profile_id": profile_id, "token": token, "session_duration_minutes": 60}),
        )
        .await
        .error(status, error_type);
    }
    app.post(
        "/v1/sessions/attest",
        json!({"profile_id": "trusted-auth-token-profile-test-00000000-0000-4000-8000-000000000000",
               "token": idp.sign(&good)}),
    )
    .await
    .error(404, "trusted_auth_token_profile_not_found");
    app.post("/v1/sessions/attest", json!({"token": idp.sign(&good)}))
        .await
        .names_field("profile_id");
    // Not an OAuth server: a clear 400 pointing at attest.
    app.post(
        "/v1/sessions/exchange_access_token",
        json!({"access_token": "x"}),
    )
    .await
    .names_field("attest");
}

#[tokio::test]
async fn pem_keys_jit_provisioning_external_ids_and_roles() {
    let app = TestApp::new().await;
    app.set_policy(
        r#"{"resources": [{"resource_id": "docs", "actions": ["read"]}],
            "roles": [{"role_id": "reader", "permissions": [{"resource_id": "docs", "actions": ["read"]}]}]}"#,
    )
    .await;
    let idp = Provider::start().await;
    let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let profile_id = profile(&app, &idp, |p| {
        p.jwks_url = None;
        p.pem_keys = serde_json::to_string(&[pem(
            "PUBLIC KEY",
            &rcgen::PublicKeyData::subject_public_key_info(&rsa),
        )])
        .unwrap();
        p.external_user_id_claim = Some("sub".into());
        p.role_ids_claim = Some("roles".into());
        p.jit_provisioning = true;
    })
    .await;
    let mut c = claims(&app, "new@example.com");
    c["roles"] = json!(["reader", "unknown-role"]);
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &c,
        &EncodingKey::from_rsa_pem(pem("PRIVATE KEY", &rsa.serialize_der()).as_bytes()).unwrap(),
    )
    .unwrap();
    let r = app
        .post(
            "/v1/sessions/attest",
            json!({"profile_id": profile_id, "token": token, "session_duration_minutes": 60}),
        )
        .await;
    let body = r.ok();
    assert_eq!(body["user"]["external_id"], "idp-user-1");
    assert_eq!(body["user"]["emails"][0]["email"], "new@example.com");
    assert_eq!(body["user"]["roles"], json!(["stytch_user", "reader"]));
    assert_eq!(body["session"]["roles"], json!(["stytch_user", "reader"]));
    assert_eq!(
        idp.fetches.load(Ordering::SeqCst),
        0,
        "a PEM profile fetches nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_attests_of_one_token_let_exactly_one_through() {
    let app = Arc::new(TestApp::new().await);
    let idp = Provider::start().await;
    let profile_id = profile(&app, &idp, |_| {}).await;
    app.user("ada@example.com").await;
    for _ in 0..5 {
        let token = idp.sign(&claims(&app, "ada@example.com"));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let (app, token, profile_id) = (app.clone(), token.clone(), profile_id.clone());
            set.spawn(async move {
                app.post("/v1/sessions/attest", json!({"profile_id": profile_id, "token": token, "session_duration_minutes": 60}))
                    .await
                    .status
                    .as_u16()
            });
        }
        let statuses = set.join_all().await;
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "{statuses:?}"
        );
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 400),
            "{statuses:?}"
        );
    }
}

#[tokio::test]
async fn the_factor_joins_an_existing_session_of_the_same_user_only() {
    let app = TestApp::new().await;
    let idp = Provider::start().await;
    let profile_id = profile(&app, &idp, |_| {}).await;
    let ada = app.user("ada@example.com").await;
    let other = app.user("bob@example.com").await;
    let mine = app.session_for(&ada, 60).await;
    let theirs = app.session_for(&other, 60).await;
    app.post(
        "/v1/sessions/attest",
        json!({"profile_id": profile_id, "token": idp.sign(&claims(&app, "ada@example.com")),
               "session_token": theirs["session_token"]}),
    )
    .await
    .error(404, "session_not_found");
    let r = app
        .post(
            "/v1/sessions/attest",
            json!({"profile_id": profile_id, "token": idp.sign(&claims(&app, "ada@example.com")),
                   "session_jwt": mine["session_jwt"]}),
        )
        .await;
    let factors = r.ok()["session"]["authentication_factors"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(factors.len(), 2);
    assert_eq!(factors[1]["type"], "trusted_auth_token");
    assert_eq!(
        r.body["session"]["session_id"],
        mine["session"]["session_id"]
    );
}

#[tokio::test]
async fn an_unreachable_jwks_is_a_clear_503_and_an_unknown_kid_refetches_once() {
    let app = TestApp::new().await;
    let idp = Provider::start().await;
    let dead = profile(&app, &idp, |p| {
        p.jwks_url = Some("http://127.0.0.1:9/jwks.json".into());
    })
    .await;
    app.user("ada@example.com").await;
    let r = app
        .post(
            "/v1/sessions/attest",
            json!({"profile_id": dead, "token": idp.sign(&claims(&app, "ada@example.com"))}),
        )
        .await;
    let message = r.error(503, "trusted_auth_token_jwks_unavailable")["error_message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains(&dead), "{message}");
    let live = profile(&app, &idp, |_| {}).await;
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("unknown-kid".into());
    let token = jsonwebtoken::encode(
        &header,
        &claims(&app, "ada@example.com"),
        &ec_signer(&idp.key),
    )
    .unwrap();
    for _ in 0..3 {
        app.post(
            "/v1/sessions/attest",
            json!({"profile_id": live, "token": token}),
        )
        .await
        .error(401, "invalid_trusted_auth_token_signature");
    }
    // First use fetched it; the unknown kid forced one more fetch, then the cooldown holds.
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 2);
}

/// `n` attests at once, each with a token of its own; their statuses.
async fn attest_at_once(
    app: &Arc<TestApp>,
    idp: &Provider,
    profile_id: &str,
    n: usize,
) -> Vec<u16> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let token = idp.sign(&claims(app, "ada@example.com"));
        let (app, profile_id) = (app.clone(), profile_id.to_string());
        set.spawn(async move {
            app.post(
                "/v1/sessions/attest",
                json!({"profile_id": profile_id, "token": token}),
            )
            .await
            .status
            .as_u16()
        });
    }
    set.join_all().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_request_fetches_a_jwks_and_a_failing_provider_is_retried_after_a_pause() {
    let app = Arc::new(TestApp::new().await);
    app.user("ada@example.com").await;
    let fetches = |idp: &Provider| idp.fetches.load(Ordering::SeqCst);

    // First use by many requests at once: one fetch, all verified.
    let idp = Provider::start().await;
    let profile_id = profile(&app, &idp, |_| {}).await;
    let statuses = attest_at_once(&app, &idp, &profile_id, 16).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(fetches(&idp), 1);

    // A provider that fails from the start: one fetch for a burst and for the requests after
    // it, each answered 503 at once; nothing more until the pause is over.
    let down = Provider::start().await;
    down.failing.store(true, Ordering::SeqCst);
    let profile_id = profile(&app, &down, |_| {}).await;
    let statuses = attest_at_once(&app, &down, &profile_id, 16).await;
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    for _ in 0..3 {
        let token = down.sign(&claims(&app, "ada@example.com"));
        let r = app
            .post(
                "/v1/sessions/attest",
                json!({"profile_id": profile_id, "token": token}),
            )
            .await;
        let message = r.error(503, "trusted_auth_token_jwks_unavailable")["error_message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains("500"), "{message}");
    }
    assert_eq!(fetches(&down), 1);
    // The pause doubles with each failure in a row: 2 s, then 4 s.
    app.advance(2);
    attest_at_once(&app, &down, &profile_id, 4).await;
    assert_eq!(fetches(&down), 2);
    app.advance(3);
    attest_at_once(&app, &down, &profile_id, 4).await;
    assert_eq!(fetches(&down), 2, "4 s after the second failure, not 3");
    // Back up: the first attest after the pause fetches and verifies.
    down.failing.store(false, Ordering::SeqCst);
    app.advance(1);
    let statuses = attest_at_once(&app, &down, &profile_id, 4).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(fetches(&down), 3);

    // A stale copy and a provider gone: the copy serves, refetched once per pause.
    down.failing.store(true, Ordering::SeqCst);
    app.advance(600);
    let statuses = attest_at_once(&app, &down, &profile_id, 8).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(fetches(&down), 4);
    app.advance(1);
    let statuses = attest_at_once(&app, &down, &profile_id, 4).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(fetches(&down), 4);
}

/// An attest that adds claims to a session races an authenticate that fills it: whichever
/// merges second is refused with `custom_claims_too_large`. A refused attest never keeps its
/// token: the same token then goes through (here without claims). Before the token was given
/// back, a refusal at the merge (after the token was spent) made that retry
/// `trusted_auth_token_already_used`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_attest_refused_at_the_claim_merge_gives_its_token_back() {
    let app = Arc::new(TestApp::new().await);
    let idp = Provider::start().await;
    let profile_id = profile(&app, &idp, |_| {}).await;
    let ada = app.user("ada@example.com").await;
    let (mut attest_refused, mut attest_won) = (0, 0);
    for _ in 0..40 {
        let session = app.session_for(&ada, 60).await;
        let token = idp.sign(&claims(&app, "ada@example.com"));
        let attest = {
            let (app, profile_id) = (app.clone(), profile_id.clone());
            let (token, session_token) = (token.clone(), session["session_token"].clone());
            tokio::spawn(async move {
                app.post(
                    "/v1/sessions/attest",
                    json!({"profile_id": profile_id, "token": token, "session_token": session_token,
                           "session_custom_claims": {"from_idp": "x".repeat(2500)}}),
                )
                .await
            })
        };
        let fill = {
            let (app, session_token) = (app.clone(), session["session_token"].clone());
            tokio::spawn(async move {
                app.authenticate(json!({"session_token": session_token,
                                        "session_custom_claims": {"filler": "y".repeat(2500)}}))
                    .await
            })
        };
        let (attest, fill) = (attest.await.unwrap(), fill.await.unwrap());
        match attest.status.as_u16() {
            200 => {
                attest_won += 1;
                fill.error(400, "custom_claims_too_large");
            }
            _ => {
                attest.error(400, "custom_claims_too_large");
                fill.ok();
                attest_refused += 1;
                app.post(
                    "/v1/sessions/attest",
                    json!({"profile_id": profile_id, "token": token,
                           "session_token": session["session_token"]}),
                )
                .await
                .ok();
            }
        }
    }
    assert_eq!(attest_refused + attest_won, 40);
}

/// An attest that grants a role races an operator's `PUT /v1/users/{id}` that removes the
/// user's roles: the result is one of the two orders (no roles, or only the granted one),
/// never the removed role written back from the attest's earlier read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_role_granted_by_attest_never_brings_back_one_removed_meanwhile() {
    let app = Arc::new(TestApp::new().await);
    app.set_policy(
        r#"{"resources": [{"resource_id": "docs", "actions": ["read", "write"]}],
            "roles": [{"role_id": "admin", "permissions": [{"resource_id": "docs", "actions": ["*"]}]},
                      {"role_id": "editor", "permissions": [{"resource_id": "docs", "actions": ["write"]}]}]}"#,
    )
    .await;
    let idp = Provider::start().await;
    let profile_id = profile(&app, &idp, |p| p.role_ids_claim = Some("roles".into())).await;
    let ada = app.user("ada@example.com").await;
    let roles = |body: &Value| body["roles"].clone();
    for trial in 0..30 {
        app.put(&format!("/v1/users/{ada}"), json!({"roles": ["admin"]}))
            .await
            .ok();
        let mut c = claims(&app, "ada@example.com");
        c["roles"] = json!(["editor"]);
        let token = idp.sign(&c);
        let attest = {
            let (app, profile_id) = (app.clone(), profile_id.clone());
            tokio::spawn(async move {
                app.post(
                    "/v1/sessions/attest",
                    json!({"profile_id": profile_id, "token": token}),
                )
                .await
            })
        };
        let remove = {
            let (app, ada) = (app.clone(), ada.clone());
            tokio::spawn(async move {
                app.put(&format!("/v1/users/{ada}"), json!({"roles": []}))
                    .await
            })
        };
        let (attest, remove) = (attest.await.unwrap(), remove.await.unwrap());
        attest.ok();
        remove.ok();
        let stored = roles(app.get(&format!("/v1/users/{ada}")).await.ok());
        assert!(
            stored == json!(["stytch_user"]) || stored == json!(["stytch_user", "editor"]),
            "trial {trial}: {stored}"
        );
    }
}
