-- Trusted auth token profiles (attest): how to verify a token from the app's own identity
-- provider and which of its claims to read. pem_keys is a JSON array of PEM public keys.
CREATE TABLE token_profiles (
    id                     blob PRIMARY KEY,
    project_id             blob NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    issuer                 text NOT NULL,
    audience               text NOT NULL,
    jwks_url               text,
    pem_keys               text NOT NULL DEFAULT '[]',
    email_claim            text NOT NULL,
    token_id_claim         text NOT NULL,
    external_user_id_claim text,
    role_ids_claim         text,
    jit_provisioning       boolean NOT NULL,
    created_at             integer NOT NULL
);
CREATE INDEX token_profiles_project ON token_profiles (project_id);
-- Replay protection: a token id is accepted once per profile until its token expires.
CREATE TABLE attested_tokens (
    profile_id    blob NOT NULL,
    token_id_hash blob NOT NULL,
    expires_at    integer NOT NULL,
    PRIMARY KEY (profile_id, token_id_hash)
);
CREATE INDEX attested_tokens_expires ON attested_tokens (expires_at);
