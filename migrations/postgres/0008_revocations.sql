-- The revocation feed: one event for every session that stops being valid while JWTs of it
-- may still be unexpired. `cursor` orders events in commit order (writers take an advisory
-- lock, so a reader that saw cursor N can never later meet a smaller one). Deleted from the
-- oldest; `feed_horizon` remembers the newest deleted cursor (older cursors answer 410).
CREATE TABLE revocations (
    cursor         bigserial PRIMARY KEY,
    project_id     uuid NOT NULL,
    session_id     uuid NOT NULL,
    revoked_at     bigint NOT NULL,
    reason         text NOT NULL,
    jwt_expires_by bigint NOT NULL
);
CREATE INDEX revocations_project ON revocations (project_id, cursor);
CREATE TABLE feed_horizon (
    id     integer PRIMARY KEY,
    cursor bigint NOT NULL
);
INSERT INTO feed_horizon (id, cursor) VALUES (1, 0);
ALTER TABLE projects ADD COLUMN revocations_private boolean NOT NULL DEFAULT false;
