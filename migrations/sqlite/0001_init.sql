-- hallpass schema, SQLite dialect. Keep in lock-step with migrations/postgres/0001_init.sql.
-- Instants are unix seconds (integer), bound from Rust; SQL never calls now().

CREATE TABLE projects (
    id                        blob PRIMARY KEY,
    live                      integer NOT NULL,
    name                      text NOT NULL,
    userinfo_url              text,
    idle_timeout_minutes      integer,
    absolute_lifetime_minutes integer,
    created_at                integer NOT NULL
);

-- Caller secrets, argon2id PHC strings only.
CREATE TABLE project_secrets (
    id          blob PRIMARY KEY,
    project_id  blob NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    secret_hash text NOT NULL,
    created_at  integer NOT NULL,
    revoked_at  integer
);
CREATE INDEX project_secrets_project ON project_secrets (project_id);

-- One email per user (the subset the sessions API needs); email_lower enforces uniqueness.
CREATE TABLE users (
    id                 blob PRIMARY KEY,
    project_id         blob NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    external_id        text,
    email_id           blob,
    email              text,
    email_lower        text,
    email_verified     integer NOT NULL DEFAULT 0,
    first_name         text NOT NULL DEFAULT '',
    middle_name        text NOT NULL DEFAULT '',
    last_name          text NOT NULL DEFAULT '',
    trusted_metadata   text NOT NULL DEFAULT '{}',
    untrusted_metadata text NOT NULL DEFAULT '{}',
    created_at         integer NOT NULL
);
CREATE UNIQUE INDEX users_project_email ON users (project_id, email_lower);
CREATE UNIQUE INDEX users_project_external_id ON users (project_id, external_id);

-- token_hash is SHA-256 of the session token; the token itself is never stored.
CREATE TABLE sessions (
    id                     blob PRIMARY KEY,
    project_id             blob NOT NULL,
    user_id                blob NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash             blob NOT NULL UNIQUE,
    started_at             integer NOT NULL,
    last_accessed_at       integer NOT NULL,
    expires_at             integer NOT NULL,
    revoked_at             integer,
    ip_address             text NOT NULL DEFAULT '',
    user_agent             text NOT NULL DEFAULT '',
    authentication_factors text NOT NULL,
    roles                  text NOT NULL,
    custom_claims          text NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id, started_at);

CREATE TABLE magic_links (
    token_hash blob PRIMARY KEY,
    id         blob NOT NULL,
    project_id blob NOT NULL,
    user_id    blob NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at integer NOT NULL,
    expires_at integer NOT NULL,
    used_at    integer
);

-- private_key: AES-256-GCM (nonce || ciphertext || tag) of the PKCS#8 key under the master
-- key named by master_key_id, with the key id as associated data. certificate is public.
CREATE TABLE signing_keys (
    id            blob PRIMARY KEY,
    project_id    blob NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    state         text NOT NULL CHECK (state IN ('next', 'current', 'retired', 'revoked')),
    private_key   blob NOT NULL,
    master_key_id text NOT NULL,
    certificate   blob NOT NULL,
    created_at    integer NOT NULL,
    published_at  integer NOT NULL,
    signing_since integer,
    retired_at    integer,
    revoked_at    integer
);
CREATE INDEX signing_keys_project ON signing_keys (project_id);
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (project_id) WHERE state = 'current';
CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (project_id) WHERE state = 'next';
