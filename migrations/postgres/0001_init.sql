-- hallpass schema, Postgres dialect. Keep in lock-step with migrations/sqlite/0001_init.sql.
-- Instants are unix seconds (bigint), bound from Rust; SQL never calls now().

CREATE TABLE projects (
    id                        uuid PRIMARY KEY,
    live                      boolean NOT NULL,
    name                      text NOT NULL,
    userinfo_url              text,
    idle_timeout_minutes      bigint,
    absolute_lifetime_minutes bigint,
    created_at                bigint NOT NULL
);

-- Caller secrets, argon2id PHC strings only.
CREATE TABLE project_secrets (
    id          uuid PRIMARY KEY,
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    secret_hash text NOT NULL,
    created_at  bigint NOT NULL,
    revoked_at  bigint
);
CREATE INDEX project_secrets_project ON project_secrets (project_id);

-- One email per user (the subset the sessions API needs); email_lower enforces uniqueness.
CREATE TABLE users (
    id                 uuid PRIMARY KEY,
    project_id         uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    external_id        text,
    email_id           uuid,
    email              text,
    email_lower        text,
    email_verified     boolean NOT NULL DEFAULT false,
    first_name         text NOT NULL DEFAULT '',
    middle_name        text NOT NULL DEFAULT '',
    last_name          text NOT NULL DEFAULT '',
    trusted_metadata   text NOT NULL DEFAULT '{}',
    untrusted_metadata text NOT NULL DEFAULT '{}',
    created_at         bigint NOT NULL
);
CREATE UNIQUE INDEX users_project_email ON users (project_id, email_lower);
CREATE UNIQUE INDEX users_project_external_id ON users (project_id, external_id);

-- token_hash is SHA-256 of the session token; the token itself is never stored.
CREATE TABLE sessions (
    id                     uuid PRIMARY KEY,
    project_id             uuid NOT NULL,
    user_id                uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash             bytea NOT NULL UNIQUE,
    started_at             bigint NOT NULL,
    last_accessed_at       bigint NOT NULL,
    expires_at             bigint NOT NULL,
    revoked_at             bigint,
    ip_address             text NOT NULL DEFAULT '',
    user_agent             text NOT NULL DEFAULT '',
    authentication_factors text NOT NULL,
    roles                  text NOT NULL,
    custom_claims          text NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id, started_at);

CREATE TABLE magic_links (
    token_hash bytea PRIMARY KEY,
    id         uuid NOT NULL,
    project_id uuid NOT NULL,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    used_at    bigint
);

-- private_key: AES-256-GCM (nonce || ciphertext || tag) of the PKCS#8 key under the master
-- key named by master_key_id, with the key id as associated data. certificate is public.
CREATE TABLE signing_keys (
    id            uuid PRIMARY KEY,
    project_id    uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    state         text NOT NULL CHECK (state IN ('next', 'current', 'retired', 'revoked')),
    private_key   bytea NOT NULL,
    master_key_id text NOT NULL,
    certificate   bytea NOT NULL,
    created_at    bigint NOT NULL,
    published_at  bigint NOT NULL,
    signing_since bigint,
    retired_at    bigint,
    revoked_at    bigint
);
CREATE INDEX signing_keys_project ON signing_keys (project_id);
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (project_id) WHERE state = 'current';
CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (project_id) WHERE state = 'next';
