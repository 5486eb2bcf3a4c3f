-- Secrets are ordered by insertion, not by a whole-second timestamp: `rotate-secret
-- --revoke-old` keeps exactly the newest, even of two made in the same second.
ALTER TABLE project_secrets ADD COLUMN seq bigserial;
