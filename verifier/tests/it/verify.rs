//! Verification: a JWT as hallpass mints it becomes a typed `Session`; every deviation the
//! SDKs refuse is refused, each with its own error; time moves by the injected clock.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hallpass_verifier::{Error, ManualClock, Verifier};
use serde_json::{Value, json};

use crate::common::*;

fn verifier(fake: &Fake, clock: &ManualClock) -> Verifier {
    builder(fake, clock).revocation_feed(false).build().unwrap()
}

#[tokio::test]
async fn a_jwt_as_hallpass_mints_it_becomes_a_session() {
    let fake = Fake::start().await;
    let clock = clock();
    let v = verifier(&fake, &clock);
    let s = v.verify(&keys()[0].mint(&session_id(1), T0)).await.unwrap();
    assert_eq!(s.session_id, session_id(1));
    assert_eq!(s.user_id, "user-test-3c1d2e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f");
    assert_eq!(s.roles, ["stytch_user", "editor"]);
    assert_eq!(s.attributes.ip_address, "203.0.113.7");
    assert_eq!(s.attributes.user_agent, "curl/8");
    assert_eq!(s.authentication_factors.len(), 1);
    assert_eq!(s.authentication_factors[0]["type"], "password");
    assert_eq!(
        Value::Object(s.custom_claims.clone()),
        json!({"tier": "gold"})
    );
    let secs =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs(s.started_at), T0 - 60);
    assert_eq!(secs(s.last_accessed_at), T0);
    assert_eq!(secs(s.expires_at), T0 + 3600);
    assert_eq!(secs(s.jwt_issued_at), T0);
    assert_eq!(secs(s.jwt_expires_at), T0 + 300);
    let h = v.health();
    assert!(h.accepting && h.keys.loaded && h.is_healthy());
    assert_eq!(h.keys.key_count, 1);
}

#[tokio::test]
async fn every_deviation_is_refused_with_its_own_error() {
    let fake = Fake::start().await;
    let clock = clock();
    let v = verifier(&fake, &clock);
    let [k, other] = keys();
    let good = claims(&session_id(1), T0);
    let with = |name: &str, value: Value| {
        let mut c = good.clone();
        c[name] = value;
        k.sign(&header(&k.kid), &c)
    };
    let without = |name: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(name);
        k.sign(&header(&k.kid), &c)
    };
    let header_with = |name: &str, value: Value| {
        let mut h = header(&k.kid);
        h[name] = value;
        k.sign(&h, &good)
    };
    let header_without = |name: &str| {
        let mut h = header(&k.kid);
        h.as_object_mut().unwrap().remove(name);
        k.sign(&h, &good)
    };
    let valid = k.mint(&session_id(1), T0);
    let parts: Vec<&str> = valid.split('.').collect();
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": k.kid}).to_string()),
        parts[1]
    );
    let mut tampered_claims = good.clone();
    tampered_claims["https://stytch.com/session"]["roles"] = json!(["stytch_user", "admin"]);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(tampered_claims.to_string()),
        parts[2]
    );
    let cases: Vec<(&str, String, Error)> = vec![
        (
            "iss",
            with("iss", json!("stytch.com/project-test-other")),
            Error::WrongIssuer,
        ),
        (
            "aud",
            with("aud", json!(["project-test-other"])),
            Error::WrongAudience,
        ),
        (
            "alg HS256",
            header_with("alg", json!("HS256")),
            Error::UnsupportedAlgorithm("HS256".into()),
        ),
        (
            "alg RS512",
            header_with("alg", json!("RS512")),
            Error::UnsupportedAlgorithm("RS512".into()),
        ),
        (
            "alg none",
            unsigned,
            Error::UnsupportedAlgorithm("none".into()),
        ),
        ("no typ", header_without("typ"), Error::WrongType),
        (
            "typ at+jwt",
            header_with("typ", json!("at+jwt")),
            Error::WrongType,
        ),
        ("no kid", header_without("kid"), Error::MissingKeyId),
        (
            "unknown kid",
            other.mint(&session_id(1), T0),
            Error::UnknownKey(other.kid.clone()),
        ),
        (
            "other key's signature",
            other.sign(&header(&k.kid), &good),
            Error::BadSignature,
        ),
        ("tampered claims", tampered, Error::BadSignature),
        ("expired", with("exp", json!(T0 - 5)), Error::Expired),
        (
            "nbf in the future",
            with("nbf", json!(T0 + 6)),
            Error::NotYetValid,
        ),
        (
            "iat in the future",
            with("iat", json!(T0 + 6)),
            Error::IssuedInFuture,
        ),
        ("no exp", without("exp"), Error::MissingClaim("exp")),
        ("no nbf", without("nbf"), Error::MissingClaim("nbf")),
        ("no iat", without("iat"), Error::MissingClaim("iat")),
        (
            "no session claim",
            without("https://stytch.com/session"),
            Error::MissingClaim("https://stytch.com/session"),
        ),
    ];
    for (what, jwt, want) in cases {
        assert_eq!(v.verify(&jwt).await.err(), Some(want), "{what}");
    }
    for (what, jwt) in [
        ("two parts", "a.b".to_string()),
        ("not base64", "%%%.b.c".to_string()),
        ("crit header", header_with("crit", json!(["exp"]))),
        ("exp not a number", with("exp", json!("tomorrow"))),
    ] {
        assert!(
            matches!(v.verify(&jwt).await, Err(Error::Malformed(_))),
            "{what}"
        );
    }
    // The leeway (5 s by default) applies on both sides.
    assert!(v.verify(&with("exp", json!(T0 - 4))).await.is_ok());
    assert!(v.verify(&with("nbf", json!(T0 + 5))).await.is_ok());
    assert!(
        v.verify(&with("aud", json!(PROJECT))).await.is_ok(),
        "string aud"
    );
}

#[tokio::test]
async fn a_jwt_expires_when_the_clock_passes_exp_plus_leeway() {
    let fake = Fake::start().await;
    let clock = clock();
    let v = builder(&fake, &clock)
        .revocation_feed(false)
        .leeway(Duration::from_secs(2))
        .build()
        .unwrap();
    let jwt = keys()[0].mint(&session_id(1), T0);
    assert!(v.verify(&jwt).await.is_ok());
    clock.advance(Duration::from_secs(301));
    assert!(
        v.verify(&jwt).await.is_ok(),
        "exp + 1 s is within 2 s of leeway"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(v.verify(&jwt).await.err(), Some(Error::Expired));
}

#[tokio::test]
async fn zero_leeway_refuses_a_jwt_from_one_second_ahead() {
    let fake = Fake::start().await;
    let clock = clock();
    let v = builder(&fake, &clock)
        .revocation_feed(false)
        .leeway(Duration::ZERO)
        .build()
        .unwrap();
    let ahead = keys()[0].mint(&session_id(1), T0 + 1);
    assert_eq!(v.verify(&ahead).await.err(), Some(Error::NotYetValid));
    clock.advance(Duration::from_secs(1));
    assert!(v.verify(&ahead).await.is_ok());
}

#[tokio::test]
async fn max_token_age_refuses_old_jwts() {
    let fake = Fake::start().await;
    let clock = clock();
    let v = builder(&fake, &clock)
        .revocation_feed(false)
        .max_token_age(Some(Duration::from_secs(60)))
        .build()
        .unwrap();
    let jwt = keys()[0].mint(&session_id(1), T0);
    clock.advance(Duration::from_secs(59));
    assert!(v.verify(&jwt).await.is_ok());
    clock.advance(Duration::from_secs(1));
    assert_eq!(v.verify(&jwt).await.err(), Some(Error::TooOld));
}
