//! Randomness, hashes, opaque tokens, caller secrets (argon2id) and the master key
//! (AES-256-GCM) that seals private signing keys at rest.

use std::fmt;

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // The OS CSPRNG through AWS-LC; failure means the platform is unusable.
    aws_lc_rs::rand::fill(&mut out).unwrap_or_else(|_| panic!("OS random number generator failed"));
    out
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A bearer token handed to a client once (session token, magic-link token, secret).
/// Only its SHA-256 is stored; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct OpaqueToken(String);

impl OpaqueToken {
    /// 33 random bytes, base64url without padding: 44 characters, 264 bits.
    pub fn generate() -> Self {
        Self(URL_SAFE_NO_PAD.encode(random_bytes::<33>()))
    }

    pub fn from_presented(text: &str) -> Self {
        Self(text.to_string())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> [u8; 32] {
        hash_token(&self.0)
    }
}

impl fmt::Debug for OpaqueToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpaqueToken([redacted])")
    }
}

pub fn hash_token(token: &str) -> [u8; 32] {
    sha256(token.as_bytes())
}

/// argon2id memory cost for new secrets, in KiB, and passes: OWASP's 7 MiB / 5 passes, one
/// of its equivalent recommended settings, the one that costs a verifying process least
/// memory (the crate's default is 19 MiB / 2). Stored hashes carry their own parameters.
const ARGON2_MEMORY_KIB: u32 = 7 * 1024;
const ARGON2_PASSES: u32 = 5;

/// Hashes a caller secret with argon2id: run it off the async workers.
pub fn hash_secret(secret: &str) -> String {
    let salt = SaltString::encode_b64(&random_bytes::<16>())
        .unwrap_or_else(|e| panic!("16-byte salt is always encodable: {e}"));
    let params = argon2::Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, 1, None)
        .unwrap_or_else(|e| panic!("argon2 parameters are valid: {e}"));
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_else(|e| panic!("argon2 with fixed parameters cannot fail: {e}"))
}

/// Checks caller secrets against their argon2id hashes in a work area kept between calls.
/// argon2's own `verify_password` allocates the whole memory cost (7 MiB) on every call;
/// allocators keep such blocks around after they are freed, so a process that verifies on
/// several threads grew by that much per thread and stayed grown. Holding one area per
/// verifying thread makes the cost fixed and visible. `release` gives it back when idle.
#[derive(Default)]
pub struct SecretVerifier {
    blocks: Vec<argon2::Block>,
}

impl SecretVerifier {
    /// Whether `secret` matches the PHC string `phc` (false for an unreadable hash).
    pub fn verify(&mut self, secret: &str, phc: &str) -> bool {
        self.check(secret, phc).unwrap_or(false)
    }

    fn check(&mut self, secret: &str, phc: &str) -> Option<bool> {
        let hash = PasswordHash::new(phc).ok()?;
        let algorithm = argon2::Algorithm::try_from(hash.algorithm).ok()?;
        let version = match hash.version {
            Some(v) => argon2::Version::try_from(v).ok()?,
            None => argon2::Version::default(),
        };
        let params = argon2::Params::try_from(&hash).ok()?;
        let expected = hash.hash?;
        let mut salt = [0u8; 64];
        let salt = hash.salt?.decode_b64(&mut salt).ok()?;
        if self.blocks.len() < params.block_count() {
            self.blocks
                .resize(params.block_count(), argon2::Block::default());
        }
        let mut out = [0u8; 64];
        let out = out.get_mut(..expected.len())?;
        argon2::Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(secret.as_bytes(), salt, &mut *out, &mut self.blocks)
            .ok()?;
        // `Output`'s equality is constant-time.
        Some(Output::new(out).ok()? == expected)
    }

    /// Frees the work area (the next verification allocates it again).
    pub fn release(&mut self) {
        self.blocks = Vec::new();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error(
        "HALLPASS_MASTER_KEY must be base64 of exactly 32 bytes (make one with: openssl rand -base64 32)"
    )]
    Malformed,
    #[error("no configured master key opens this private key (fingerprint {0})")]
    NoMatchingKey(String),
    #[error("private key could not be decrypted: wrong master key or damaged row")]
    Decrypt,
}

/// The operator's AES-256 keys, newest first. The newest seals; any may open.
#[derive(Clone)]
pub struct MasterKeys(Vec<([u8; 32], String)>);

impl fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKeys({} keys, [redacted])", self.0.len())
    }
}

/// A sealed private key and the fingerprint of the master key that sealed it.
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub master_key_id: String,
}

impl MasterKeys {
    /// Parses comma-separated base64 keys, newest first.
    pub fn parse(text: &str) -> Result<Self, MasterKeyError> {
        let mut keys = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bytes = STANDARD
                .decode(part)
                .map_err(|_| MasterKeyError::Malformed)?;
            let key: [u8; 32] = bytes.try_into().map_err(|_| MasterKeyError::Malformed)?;
            keys.push((key, fingerprint(&key)));
        }
        if keys.is_empty() {
            return Err(MasterKeyError::Malformed);
        }
        Ok(Self(keys))
    }

    pub fn generate_encoded() -> String {
        STANDARD.encode(random_bytes::<32>())
    }

    pub fn newest_id(&self) -> &str {
        &self.0[0].1
    }

    /// Whether one of these keys has this fingerprint.
    pub fn holds(&self, fingerprint: &str) -> bool {
        self.0.iter().any(|(_, id)| id == fingerprint)
    }

    /// Seals `plaintext` under the newest key; `aad` binds it to its row (the key id).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Sealed {
        let (key, id) = &self.0[0];
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let mut buf = plaintext.to_vec();
        aead_key(key)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad),
                &mut buf,
            )
            .unwrap_or_else(|_| panic!("AES-GCM sealing of a small buffer cannot fail"));
        let mut ciphertext = nonce_bytes.to_vec();
        ciphertext.extend_from_slice(&buf);
        Sealed {
            ciphertext,
            master_key_id: id.clone(),
        }
    }

    /// Opens a sealed key with the master key whose fingerprint it names.
    pub fn open(
        &self,
        sealed: &[u8],
        master_key_id: &str,
        aad: &[u8],
    ) -> Result<Vec<u8>, MasterKeyError> {
        let (key, _) = self
            .0
            .iter()
            .find(|(_, id)| id == master_key_id)
            .ok_or_else(|| MasterKeyError::NoMatchingKey(master_key_id.to_string()))?;
        if sealed.len() < NONCE_LEN {
            return Err(MasterKeyError::Decrypt);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| MasterKeyError::Decrypt)?;
        let mut buf = body.to_vec();
        let plain = aead_key(key)
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| MasterKeyError::Decrypt)?;
        Ok(plain.to_vec())
    }
}

fn aead_key(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key)
            .unwrap_or_else(|_| panic!("a 32-byte key is a valid AES-256 key")),
    )
}

/// A short public name for a master key, stored beside what it sealed.
fn fingerprint(key: &[u8; 32]) -> String {
    let mut input = b"hallpass master key v1:".to_vec();
    input.extend_from_slice(key);
    sha256(&input)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_264_bit_base64url() {
        let t = OpaqueToken::generate();
        assert_eq!(t.expose().len(), 44);
        assert!(
            t.expose()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(t, OpaqueToken::generate());
        assert_eq!(format!("{t:?}"), "OpaqueToken([redacted])");
    }

    #[test]
    fn secrets_verify_only_themselves() {
        let secret = "correct horse battery staple, long enough";
        let phc = hash_secret(secret);
        assert!(phc.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{phc}");
        let mut v = SecretVerifier::default();
        assert!(v.verify(secret, &phc));
        assert!(!v.verify("wrong", &phc));
        assert!(!v.verify("x", "not a hash"));
        // The kept work area gives the same answers on later calls, and after a release.
        assert!(v.verify(secret, &phc));
        v.release();
        assert!(!v.verify("wrong", &phc));
        assert!(v.verify(secret, &phc));
    }

    #[test]
    fn master_keys_seal_open_and_rotate() {
        let old = MasterKeys::parse(&MasterKeys::generate_encoded()).unwrap();
        let sealed = old.seal(b"private", b"kid-1");
        assert_ne!(&sealed.ciphertext[NONCE_LEN..NONCE_LEN + 7], b"private");
        assert_eq!(
            old.open(&sealed.ciphertext, &sealed.master_key_id, b"kid-1")
                .unwrap(),
            b"private"
        );
        assert!(
            old.open(&sealed.ciphertext, &sealed.master_key_id, b"kid-2")
                .is_err()
        );
        let new_text = MasterKeys::generate_encoded();
        let old_text = STANDARD.encode(old.0[0].0);
        let both = MasterKeys::parse(&format!("{new_text}, {old_text}")).unwrap();
        assert_ne!(both.newest_id(), old.newest_id());
        assert_eq!(
            both.open(&sealed.ciphertext, &sealed.master_key_id, b"kid-1")
                .unwrap(),
            b"private"
        );
        let only_new = MasterKeys::parse(&new_text).unwrap();
        assert!(matches!(
            only_new.open(&sealed.ciphertext, &sealed.master_key_id, b"kid-1"),
            Err(MasterKeyError::NoMatchingKey(_))
        ));
        assert!(MasterKeys::parse("c2hvcnQ=").is_err());
        assert!(MasterKeys::parse("").is_err());
    }
}
