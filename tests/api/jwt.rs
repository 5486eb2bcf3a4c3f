use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use crate::harness::{START, TestApp, decode_jwt, rfc3339};

/// Verifies a JWT the way a relying service would, with an independent library and the
/// keys served at the JWKS endpoint.
pub fn verify_with_jwks(jwt: &str, jwks: &Value, project_id: &str, now: i64) -> Value {
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    let kid = header.kid.unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("kid is published");
    let key =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[project_id]);
    v.set_issuer(&[format!("stytch.com/{project_id}")]);
    // The test clock is not the wall clock: check exp/nbf against the test's `now` below.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(jwt, &key, &v).unwrap().claims;
    assert!(claims["nbf"].as_i64().unwrap() <= now && now < claims["exp"].as_i64().unwrap());
    claims
}

#[tokio::test]
async fn header_and_claims_follow_the_contract_and_verify_against_the_jwks() {
    let app = TestApp::new().await;
    let s = app.session(60).await;
    let jwt = s["session_jwt"].as_str().unwrap();
    let (header, claims) = decode_jwt(jwt);
    let header_text = String::from_utf8(
        URL_SAFE_NO_PAD
            .decode(jwt.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    let kid = header["kid"].as_str().unwrap();
    assert!(kid.starts_with("jwk-test-"));
    assert_eq!(
        header_text,
        format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{kid}"}}"#)
    );

    let p = &app.creds.project_id;
    let session = &s["session"];
    let keys: Vec<&str> = claims
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![
            "aud",
            "exp",
            "https://stytch.com/session",
            "iat",
            "iss",
            "nbf",
            "sub"
        ]
    );
    assert_eq!(claims["iss"], format!("stytch.com/{p}"));
    assert_eq!(claims["aud"], json!([p]));
    assert_eq!(claims["sub"], session["user_id"]);
    assert_eq!(claims["iat"], START);
    assert_eq!(claims["nbf"], START);
    assert_eq!(claims["exp"], START + 300);
    let sc = &claims["https://stytch.com/session"];
    assert_eq!(sc["id"], session["session_id"]);
    assert_eq!(sc["started_at"], session["started_at"]);
    assert_eq!(sc["last_accessed_at"], session["last_accessed_at"]);
    assert_eq!(sc["expires_at"], session["expires_at"]);
    assert_eq!(sc["attributes"], session["attributes"]);
    assert_eq!(
        sc["authentication_factors"],
        session["authentication_factors"]
    );
    assert_eq!(sc["roles"], json!(["stytch_user"]));
    assert_eq!(sc.as_object().unwrap().len(), 7);

    let jwks = app
        .get_anonymous(&format!("/v1/sessions/jwks/{p}"), &[])
        .await;
    let verified = verify_with_jwks(jwt, jwks.ok(), p, START);
    assert_eq!(verified, claims);

    // A session shorter than five minutes caps the JWT.
    let short = app.session(5).await;
    app.advance(200);
    let r = app
        .authenticate(json!({"session_token": short["session_token"]}))
        .await;
    let (_, c) = decode_jwt(r.ok()["session_jwt"].as_str().unwrap());
    assert_eq!(c["exp"], START + 300, "min(iat + 300, session expiry)");
}

#[tokio::test]
async fn certificate_and_thumbprint_match_the_key() {
    let app = TestApp::new().await;
    let jwks = app
        .get_anonymous(&format!("/jwks/{}", app.creds.project_id), &[])
        .await;
    for k in jwks.ok()["keys"].as_array().unwrap() {
        for field in [
            "kty", "use", "key_ops", "alg", "kid", "n", "e", "x5c", "x5tS256", "x5t_s256",
        ] {
            assert!(!k[field].is_null(), "{field}");
        }
        assert_eq!(k["kty"], "RSA");
        assert_eq!(k["use"], "sig");
        assert_eq!(k["key_ops"], json!(["verify"]));
        assert_eq!(k["alg"], "RS256");
        assert_eq!(k["e"], "AQAB");
        let der = STANDARD.decode(k["x5c"][0].as_str().unwrap()).unwrap();
        let thumb = URL_SAFE_NO_PAD.encode(hallpass::domain::crypto::sha256(&der));
        assert_eq!(k["x5tS256"], thumb.as_str());
        assert_eq!(k["x5t_s256"], thumb.as_str());
        // The certificate carries this very modulus.
        let n = URL_SAFE_NO_PAD.decode(k["n"].as_str().unwrap()).unwrap();
        assert_eq!(n.len(), 256, "RSA-2048");
        assert!(
            der.windows(n.len()).any(|w| w == n.as_slice()),
            "certificate holds the key's modulus"
        );
    }
}

#[tokio::test]
async fn authenticate_by_jwt_and_refresh_an_expired_one() {
    let app = TestApp::new().await;
    let s = app.session(60).await;
    let jwt = s["session_jwt"].as_str().unwrap();
    app.advance(30);
    let r = app.authenticate(json!({"session_jwt": jwt})).await;
    let b = r.ok();
    assert_eq!(
        b["session_token"], "",
        "authenticated by JWT: no token in the response"
    );
    assert_eq!(b["session"]["session_id"], s["session"]["session_id"]);
    assert_eq!(b["session"]["last_accessed_at"], rfc3339(START + 30));

    // Ten minutes on, the JWT has expired; its session has not: a new JWT comes back.
    app.advance(600);
    let r = app
        .authenticate(json!({"session_jwt": jwt, "session_duration_minutes": 30}))
        .await;
    let fresh = r.ok()["session_jwt"].as_str().unwrap();
    let (_, c) = decode_jwt(fresh);
    assert_eq!(c["iat"], START + 630);
    assert_eq!(c["exp"], START + 930);
    assert_eq!(r.body["session"]["expires_at"], rfc3339(START + 630 + 1800));
    let jwks = app.get_anonymous("/jwks", &[]).await;
    verify_with_jwks(fresh, jwks.ok(), &app.creds.project_id, START + 630);

    // Tampering breaks the signature.
    let mut parts: Vec<String> = fresh.split('.').map(str::to_string).collect();
    let (_, mut claims) = decode_jwt(fresh);
    claims["https://stytch.com/session"]["id"] =
        json!("session-test-00000000-0000-0000-0000-000000000000");
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    app.authenticate(json!({"session_jwt": parts.join(".")}))
        .await
        .error(401, "unable_to_parse_session_jwt");
}

#[tokio::test]
async fn the_same_session_in_the_same_second_gets_the_same_jwt_bytes() {
    let app = TestApp::new().await;
    let s = app.session(60).await;
    let token = s["session_token"].as_str().unwrap();
    let first = app.authenticate(json!({"session_token": token})).await;
    let second = app.authenticate(json!({"session_token": token})).await;
    assert_eq!(first.ok()["session_jwt"], second.ok()["session_jwt"]);
    // Anything else changes the bytes: a claim, the second.
    let claimed = app
        .authenticate(json!({"session_token": token, "session_custom_claims": {"k": 1}}))
        .await;
    assert_ne!(claimed.ok()["session_jwt"], first.body["session_jwt"]);
    app.advance(1);
    let later = app.authenticate(json!({"session_token": token})).await;
    assert_ne!(later.ok()["session_jwt"], claimed.body["session_jwt"]);
    let (_, c) = decode_jwt(later.body["session_jwt"].as_str().unwrap());
    assert_eq!(c["k"], 1);
}
