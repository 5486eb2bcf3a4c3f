-- The secret HALLPASS_BOOTSTRAP_SECRET manages: starting with a new one replaces it (secrets
-- made with the CLI are never touched by the bootstrap).
ALTER TABLE project_secrets ADD COLUMN bootstrap boolean NOT NULL DEFAULT false;
