//! RSA signing keys: generation, the public JWK, and the key-ring state machine that decides
//! every rotation step from the ring's rows and an injected `now`.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    KeyPair as _, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;
use uuid::Uuid;

use super::crypto::sha256;
use super::ids::{Env, Kind, format};

/// A JWT lives five minutes at most.
pub const JWT_LIFETIME_SECONDS: i64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Next,
    Current,
    Retired,
    Revoked,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Current => "current",
            KeyState::Retired => "retired",
            KeyState::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "next" => KeyState::Next,
            "current" => KeyState::Current,
            "retired" => KeyState::Retired,
            "revoked" => KeyState::Revoked,
            _ => return None,
        })
    }
}

/// A freshly generated key: PKCS#8 private key and a self-signed certificate (DER).
pub struct GeneratedKey {
    pub pkcs8: Vec<u8>,
    pub certificate: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[error("signing key: {0}")]
pub struct KeyError(pub String);

/// Generates an RSA-2048 key and its certificate. Slow (tens to hundreds of milliseconds):
/// call it off the async workers.
pub fn generate(kid: &str, now: i64) -> Result<GeneratedKey, KeyError> {
    let pair = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048)
        .map_err(|_| KeyError("RSA key generation failed".into()))?;
    let pkcs8 = pair
        .as_der()
        .map_err(|_| KeyError("PKCS#8 encoding failed".into()))?
        .as_ref()
        .to_vec();
    let certificate = self_signed_certificate(kid, &pkcs8, now)?;
    Ok(GeneratedKey { pkcs8, certificate })
}

fn self_signed_certificate(kid: &str, pkcs8: &[u8], now: i64) -> Result<Vec<u8>, KeyError> {
    let err = |e: rcgen::Error| KeyError(format!("certificate: {e}"));
    // rcgen recognises an RSA PKCS#8 key and signs the certificate with RS256.
    let key = rcgen::KeyPair::try_from(pkcs8).map_err(err)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, kid);
    let at = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .map_err(|e| KeyError(format!("certificate validity: {e}")))
    };
    params.not_before = at(now - 60)?;
    params.not_after = at(now + 10 * 365 * 86_400)?;
    Ok(params.self_signed(&key).map_err(err)?.der().to_vec())
}

/// A private key parsed once and kept for signing.
pub struct SigningKey {
    pub id: Uuid,
    /// base64url of the fixed JWT header, computed once.
    header_b64: String,
    pair: RsaKeyPair,
    /// Recent signatures by the SHA-256 of their signing input (see `sign_jwt`).
    recent: std::sync::Mutex<std::collections::HashMap<[u8; 32], String>>,
}

/// Signatures remembered per key. They only help within one second (the claims carry `iat`),
/// so the map is emptied whenever it fills: a bound on memory (about 1.7 MiB: a 32-byte key
/// and a 342-character signature each, with the map's own overhead), not a cache policy
/// that needs tuning.
const RECENT_SIGNATURES: usize = 4096;

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, [redacted])", self.id)
    }
}

impl SigningKey {
    pub fn from_pkcs8(id: Uuid, env: Env, pkcs8: &[u8]) -> Result<Self, KeyError> {
        let pair = RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| KeyError(format!("parse: {e}")))?;
        let header = format!(
            r#"{{"alg":"RS256","typ":"JWT","kid":"{}"}}"#,
            format(Kind::Jwk, env, id)
        );
        Ok(Self {
            id,
            header_b64: URL_SAFE_NO_PAD.encode(header),
            pair,
            recent: Default::default(),
        })
    }

    /// Signs `claims` (JSON) into a compact JWS.
    ///
    /// RS256 (PKCS#1 v1.5) is deterministic: the same key over the same signing input gives
    /// the same signature. So when a session is authenticated again within the same second
    /// with nothing else changed, the JWT is byte for byte the one already minted, and its
    /// signature is reused instead of computed again (one RSA signature is most of an
    /// authenticate's CPU). The map is keyed by the SHA-256 of the whole signing input (header
    /// and claims), which is exactly what RS256 signs: the signature is a function of the key
    /// and that digest alone, so a remembered one is the signature a fresh computation would
    /// give, and any change of claim, key or second is a different digest. (Keying by the
    /// digest rather than the ~1 KB input saves hashing the input twice with SipHash and
    /// copying it into the map on every miss.)
    pub fn sign_jwt(&self, claims: &[u8]) -> Result<String, KeyError> {
        let mut out = String::with_capacity(self.header_b64.len() + claims.len() * 4 / 3 + 350);
        out.push_str(&self.header_b64);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut out);
        let digest = sha256(out.as_bytes());
        let known = self
            .recent
            .lock()
            .ok()
            .and_then(|m| m.get(&digest).cloned());
        let signature = match known {
            Some(signature) => signature,
            None => {
                let signature = self.signature_b64(out.as_bytes())?;
                if let Ok(mut m) = self.recent.lock() {
                    if m.len() >= RECENT_SIGNATURES {
                        m.clear();
                    }
                    m.insert(digest, signature.clone());
                }
                signature
            }
        };
        out.push('.');
        out.push_str(&signature);
        Ok(out)
    }

    /// Signs without the memo (tests compare the two).
    pub fn sign_jwt_fresh(&self, claims: &[u8]) -> Result<String, KeyError> {
        self.sign_with_header(&self.header_b64, claims)
    }

    fn signature_b64(&self, input: &[u8]) -> Result<String, KeyError> {
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                input,
                &mut sig,
            )
            .map_err(|_| KeyError("signing failed".into()))?;
        Ok(URL_SAFE_NO_PAD.encode(sig))
    }

    /// Signs with a header of another `typ` (e.g. `secevent+jwt` for Security Event Tokens).
    pub fn sign_with_typ(&self, typ: &str, env: Env, claims: &[u8]) -> Result<String, KeyError> {
        let header =
            serde_json::json!({"alg": "RS256", "typ": typ, "kid": format(Kind::Jwk, env, self.id)});
        self.sign_with_header(&URL_SAFE_NO_PAD.encode(header.to_string()), claims)
    }

    fn sign_with_header(&self, header_b64: &str, claims: &[u8]) -> Result<String, KeyError> {
        let mut out = String::with_capacity(header_b64.len() + claims.len() * 4 / 3 + 350);
        out.push_str(header_b64);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut out);
        let signature = self.signature_b64(out.as_bytes())?;
        out.push('.');
        out.push_str(&signature);
        Ok(out)
    }

    pub fn public(&self, env: Env, certificate: &[u8]) -> Result<PublicKey, KeyError> {
        let public = self.pair.public_key();
        let comps = PublicKeyComponents::<Vec<u8>>::from(public);
        PublicKey::new(self.id, env, comps.n, comps.e, certificate)
    }
}

/// The public half: a parsed verifier and its JWK.
pub struct PublicKey {
    pub id: Uuid,
    pub jwk: Jwk,
    verifier: ParsedPublicKey,
}

impl PublicKey {
    fn new(
        id: Uuid,
        env: Env,
        n: Vec<u8>,
        e: Vec<u8>,
        certificate: &[u8],
    ) -> Result<Self, KeyError> {
        let verifier = PublicKeyComponents {
            n: &n[..],
            e: &e[..],
        }
        .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
        .map_err(|e| KeyError(format!("public key: {e}")))?;
        let thumb = URL_SAFE_NO_PAD.encode(sha256(certificate));
        let strip = |b: &[u8]| -> Vec<u8> {
            let first = b
                .iter()
                .position(|&x| x != 0)
                .unwrap_or(b.len().saturating_sub(1));
            b[first..].to_vec()
        };
        Ok(Self {
            id,
            jwk: Jwk {
                kty: "RSA",
                r#use: "sig",
                key_ops: ["verify"],
                alg: "RS256",
                kid: format(Kind::Jwk, env, id),
                n: URL_SAFE_NO_PAD.encode(strip(&n)),
                e: URL_SAFE_NO_PAD.encode(strip(&e)),
                x5c: [STANDARD.encode(certificate)],
                x5t_s256_camel: thumb.clone(),
                x5t_s256: thumb,
            },
            verifier,
        })
    }

    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verifier.verify_sig(message, signature).is_ok()
    }
}

/// One entry of the JWKS, with every field the SDKs read.
#[derive(Debug, Clone, Serialize)]
pub struct Jwk {
    pub kty: &'static str,
    #[serde(rename = "use")]
    pub r#use: &'static str,
    pub key_ops: [&'static str; 1],
    pub alg: &'static str,
    pub kid: String,
    pub n: String,
    pub e: String,
    pub x5c: [String; 1],
    #[serde(rename = "x5tS256")]
    pub x5t_s256_camel: String,
    #[serde(rename = "x5t_s256")]
    pub x5t_s256: String,
}

/// The schedule every ring follows (seconds).
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub rotation_interval: i64,
    pub max_age: i64,
    pub retention: i64,
}

impl Schedule {
    /// How long a `next` key is published before it may sign.
    pub fn prepublish(&self) -> i64 {
        2 * self.max_age
    }

    /// How long a retired key stays published: never less than a JWT's life plus two
    /// cache periods, so every JWT it signed verifies until it expires.
    pub fn retention(&self) -> i64 {
        self.retention.max(JWT_LIFETIME_SECONDS + 2 * self.max_age)
    }
}

/// What the state machine needs to know about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: Uuid,
    pub state: KeyState,
    pub published_at: i64,
    pub signing_since: Option<i64>,
    pub retired_at: Option<i64>,
}

/// One rotation step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The ring has no key at all: make one that signs at once (a new project has no
    /// verifier that could have cached an older JWKS).
    CreateCurrent,
    /// No key is waiting: publish one that will sign later.
    CreateNext,
    /// `next` signs from now; the old current (if any) retires.
    Promote { next: Uuid, current: Option<Uuid> },
    /// A retired key's JWTs have all expired and every cache has seen it go.
    Delete { id: Uuid },
}

pub fn current(ring: &[KeyInfo]) -> Option<&KeyInfo> {
    ring.iter().find(|k| k.state == KeyState::Current)
}

pub fn next(ring: &[KeyInfo]) -> Option<&KeyInfo> {
    ring.iter()
        .filter(|k| k.state == KeyState::Next)
        .min_by_key(|k| k.published_at)
}

/// The next step due at `now`, if any. Applying steps until `None` converges the ring.
pub fn plan(ring: &[KeyInfo], now: i64, s: &Schedule) -> Option<Step> {
    let current = current(ring);
    let next = next(ring);
    match (current, next) {
        (None, None) => return Some(Step::CreateCurrent),
        // The signing key was revoked: the waiting key signs at once, however young.
        (None, Some(n)) => {
            return Some(Step::Promote {
                next: n.id,
                current: None,
            });
        }
        (Some(_), None) => return Some(Step::CreateNext),
        (Some(c), Some(n)) => {
            if promotion_due(c, n, s) <= now {
                return Some(Step::Promote {
                    next: n.id,
                    current: Some(c.id),
                });
            }
        }
    }
    ring.iter()
        .filter(|k| k.state == KeyState::Retired)
        .find(|k| deletion_due(k, s) <= now)
        .map(|k| Step::Delete { id: k.id })
}

fn promotion_due(current: &KeyInfo, next: &KeyInfo, s: &Schedule) -> i64 {
    let since = current.signing_since.unwrap_or(current.published_at);
    (since + s.rotation_interval).max(next.published_at + s.prepublish())
}

fn deletion_due(retired: &KeyInfo, s: &Schedule) -> i64 {
    retired.retired_at.unwrap_or(retired.published_at) + s.retention()
}

/// When the published ring will next change on its own (a promotion or a deletion), so the
/// JWKS is never cached past it.
pub fn next_change(ring: &[KeyInfo], s: &Schedule) -> Option<i64> {
    let promotion = match (current(ring), next(ring)) {
        (Some(c), Some(n)) => Some(promotion_due(c, n, s)),
        _ => None,
    };
    ring.iter()
        .filter(|k| k.state == KeyState::Retired)
        .map(|k| deletion_due(k, s))
        .chain(promotion)
        .min()
}

/// The JWKS `max-age` at `now`: the configured one, never past the ring's next change.
pub fn cache_max_age(ring: &[KeyInfo], now: i64, s: &Schedule) -> i64 {
    match next_change(ring, s) {
        Some(at) => (at - now).clamp(0, s.max_age),
        None => s.max_age,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn schedule() -> Schedule {
        Schedule {
            rotation_interval: 30 * DAY,
            max_age: 300,
            retention: DAY,
        }
    }

    /// Applies steps the way the store does, and returns what happened.
    fn apply(ring: &mut Vec<KeyInfo>, step: Step, now: i64) {
        match step {
            Step::CreateCurrent => ring.push(KeyInfo {
                id: Uuid::new_v4(),
                state: KeyState::Current,
                published_at: now,
                signing_since: Some(now),
                retired_at: None,
            }),
            Step::CreateNext => ring.push(KeyInfo {
                id: Uuid::new_v4(),
                state: KeyState::Next,
                published_at: now,
                signing_since: None,
                retired_at: None,
            }),
            Step::Promote { next, current } => {
                for k in ring.iter_mut() {
                    if Some(k.id) == current {
                        k.state = KeyState::Retired;
                        k.retired_at = Some(now);
                    } else if k.id == next {
                        k.state = KeyState::Current;
                        k.signing_since = Some(now);
                    }
                }
            }
            Step::Delete { id } => ring.retain(|k| k.id != id),
        }
    }

    fn converge(ring: &mut Vec<KeyInfo>, now: i64, s: &Schedule) -> Vec<Step> {
        let mut steps = Vec::new();
        while let Some(step) = plan(ring, now, s) {
            apply(ring, step, now);
            steps.push(step);
            assert!(steps.len() < 10, "ring does not converge: {steps:?}");
        }
        steps
    }

    #[test]
    fn a_new_ring_gets_a_current_and_a_waiting_key() {
        let mut ring = Vec::new();
        let steps = converge(&mut ring, 1000, &schedule());
        assert_eq!(steps[0], Step::CreateCurrent);
        assert_eq!(steps[1], Step::CreateNext);
        assert_eq!(ring.len(), 2);
    }

    #[test]
    fn many_months_of_rotation_keep_every_invariant() {
        let s = schedule();
        let mut ring = Vec::new();
        let start = 1_700_000_000;
        converge(&mut ring, start, &s);
        let mut promotions = 0;
        let mut signer_changes = Vec::new();
        let mut last_signer = current(&ring).unwrap().id;
        // Simulate a converging task that runs every minute for a year.
        let mut now = start;
        while now < start + 365 * DAY {
            now += 60;
            for step in converge(&mut ring, now, &s) {
                if let Step::Promote { next, .. } = step {
                    promotions += 1;
                    let promoted_published =
                        ring.iter().find(|k| k.id == next).unwrap().published_at;
                    assert!(
                        now - promoted_published >= s.prepublish(),
                        "signed too early"
                    );
                }
            }
            let signers: Vec<_> = ring
                .iter()
                .filter(|k| k.state == KeyState::Current)
                .collect();
            assert_eq!(signers.len(), 1, "exactly one key signs");
            assert_eq!(ring.iter().filter(|k| k.state == KeyState::Next).count(), 1);
            if signers[0].id != last_signer {
                signer_changes.push(now);
                last_signer = signers[0].id;
            }
            // Every JWT a retired key signed (≤ 300 s old) still finds its key published.
            for k in ring.iter().filter(|k| k.state == KeyState::Retired) {
                assert!(now - k.retired_at.unwrap() <= s.retention());
            }
            assert!(ring.len() <= 3, "retired keys are deleted: {ring:?}");
            assert!(cache_max_age(&ring, now, &s) <= s.max_age);
        }
        assert_eq!(promotions, 12, "one rotation per 30 days over 365 days");
        for pair in signer_changes.windows(2) {
            assert_eq!(pair[1] - pair[0], 30 * DAY);
        }
    }

    #[test]
    fn a_young_next_key_waits_for_two_cache_periods() {
        let s = Schedule {
            rotation_interval: 10,
            max_age: 300,
            retention: 0,
        };
        let mut ring = Vec::new();
        converge(&mut ring, 0, &s);
        assert_eq!(plan(&ring, 599, &s), None);
        assert!(matches!(plan(&ring, 600, &s), Some(Step::Promote { .. })));
        assert_eq!(cache_max_age(&ring, 500, &s), 100);
    }

    #[test]
    fn revoking_the_current_key_promotes_the_waiting_one_at_once() {
        let s = schedule();
        let mut ring = Vec::new();
        converge(&mut ring, 0, &s);
        let cur = current(&ring).unwrap().id;
        ring.iter_mut().find(|k| k.id == cur).unwrap().state = KeyState::Revoked;
        let n = next(&ring).unwrap().id;
        assert_eq!(
            plan(&ring, 1, &s),
            Some(Step::Promote {
                next: n,
                current: None
            })
        );
        let steps = converge(&mut ring, 1, &s);
        assert_eq!(
            steps.len(),
            2,
            "promote, then publish a new next: {steps:?}"
        );
    }

    #[test]
    fn retention_is_never_shorter_than_jwt_life_plus_two_cache_periods() {
        let s = Schedule {
            rotation_interval: 10,
            max_age: 5,
            retention: 1,
        };
        assert_eq!(s.retention(), 310);
    }

    #[test]
    fn generated_keys_sign_jwts_that_their_public_half_verifies() {
        let id = Uuid::new_v4();
        let kid = format(Kind::Jwk, Env::Test, id);
        let generated = generate(&kid, 1_700_000_000).unwrap();
        let key = SigningKey::from_pkcs8(id, Env::Test, &generated.pkcs8).unwrap();
        let jwt = key.sign_jwt(br#"{"sub":"x"}"#).unwrap();
        let (signed, sig) = jwt.rsplit_once('.').unwrap();
        let public = key.public(Env::Test, &generated.certificate).unwrap();
        assert!(public.verify(signed.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap()));
        assert!(!public.verify(b"other", &URL_SAFE_NO_PAD.decode(sig).unwrap()));
        assert_eq!(public.jwk.e, "AQAB");
        assert_eq!(URL_SAFE_NO_PAD.decode(&public.jwk.n).unwrap().len(), 256);
        let header = URL_SAFE_NO_PAD
            .decode(jwt.split('.').next().unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(header).unwrap(),
            format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{kid}"}}"#)
        );
    }

    #[test]
    fn a_remembered_signature_is_exactly_a_fresh_one_and_any_change_misses() {
        let env = Env::Test;
        let id = Uuid::new_v4();
        let g = generate(&format(Kind::Jwk, env, id), 0).unwrap();
        let key = SigningKey::from_pkcs8(id, env, &g.pkcs8).unwrap();
        let claims = br#"{"iat":1000,"sub":"user-test-x","custom":1}"#;
        let first = key.sign_jwt(claims).unwrap();
        assert_eq!(key.recent.lock().unwrap().len(), 1);
        let again = key.sign_jwt(claims).unwrap();
        assert_eq!(first, again, "reused");
        assert_eq!(
            first,
            key.sign_jwt_fresh(claims).unwrap(),
            "identical to a fresh signature"
        );
        // Another second, another claim value, or another key: a new signature.
        for other in [
            &br#"{"iat":1001,"sub":"user-test-x","custom":1}"#[..],
            &br#"{"iat":1000,"sub":"user-test-x","custom":2}"#[..],
        ] {
            let signed = key.sign_jwt(other).unwrap();
            assert_ne!(signed, first);
            assert_eq!(signed, key.sign_jwt_fresh(other).unwrap());
        }
        let id2 = Uuid::new_v4();
        let g2 = generate(&format(Kind::Jwk, env, id2), 0).unwrap();
        let key2 = SigningKey::from_pkcs8(id2, env, &g2.pkcs8).unwrap();
        assert_ne!(key2.sign_jwt(claims).unwrap(), first);
        // Bounded.
        for i in 0..(RECENT_SIGNATURES + 10) {
            key.sign_jwt(format!("{{\"iat\":{i}}}").as_bytes()).unwrap();
        }
        assert!(key.recent.lock().unwrap().len() <= RECENT_SIGNATURES);
    }
}
