-- Secrets are ordered by insertion, not by a whole-second timestamp: `rotate-secret
-- --revoke-old` keeps exactly the newest, even of two made in the same second. SQLite's
-- rowid grows with every insert; a trigger copies it, so the INSERT text is the one
-- Postgres runs (where seq is a bigserial).
ALTER TABLE project_secrets ADD COLUMN seq integer;
UPDATE project_secrets SET seq = rowid;
CREATE TRIGGER project_secrets_seq AFTER INSERT ON project_secrets WHEN NEW.seq IS NULL
BEGIN
    UPDATE project_secrets SET seq = NEW.rowid WHERE rowid = NEW.rowid;
END;
