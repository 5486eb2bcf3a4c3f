-- One seeding batch for the hallpass benchmark (Postgres). run.sh calls it once per batch:
--   psql -v project=UUID -v lo=L -v hi=H -v now=UNIX -v factors=JSON -f seed_postgres.sql
-- Sessions [lo, hi) and their users (10 sessions per user; lo is a multiple of 10):
--   session i: token "bench-token-<i>", token_hash = sha256 of its UTF-8 bytes,
--              id = md5('bench-session-<i>')::uuid, user i / 10
--   user j:    id = beec0000-0000-4000-8000-<j as 12 hex digits> (user-test-<that uuid>)
-- Same data as bench/seed_sqlite.py.
\set ON_ERROR_STOP on
SET session_replication_role = replica;  -- no FK triggers during the bulk load
SET synchronous_commit = off;
BEGIN;
INSERT INTO users (id, project_id, created_at, trusted_metadata, untrusted_metadata)
SELECT ('beec0000-0000-4000-8000-' || lpad(to_hex(j), 12, '0'))::uuid,
       :'project'::uuid, :now, '{}', '{}'
FROM generate_series(:lo / 10, (:hi + 9) / 10 - 1) AS j;
INSERT INTO sessions (id, project_id, user_id, token_hash, started_at, last_accessed_at,
                      expires_at, authentication_factors, roles, custom_claims)
SELECT md5('bench-session-' || i)::uuid,
       :'project'::uuid,
       ('beec0000-0000-4000-8000-' || lpad(to_hex(i / 10), 12, '0'))::uuid,
       sha256(convert_to('bench-token-' || i, 'UTF8')),
       :now - i % 1000,
       :now - i % 1000,
       :now + 315360000,
       :'factors',
       '["stytch_user"]',
       '{}'
FROM generate_series(:lo, :hi - 1) AS i;
COMMIT;
