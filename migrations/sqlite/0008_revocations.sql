-- The revocation feed: one event for every session that stops being valid while JWTs of it
-- may still be unexpired. AUTOINCREMENT: a cursor is never reused, even after the newest
-- events were deleted. `feed_horizon` remembers the newest deleted cursor (older cursors
-- answer 410).
CREATE TABLE revocations (
    cursor         integer PRIMARY KEY AUTOINCREMENT,
    project_id     blob NOT NULL,
    session_id     blob NOT NULL,
    revoked_at     integer NOT NULL,
    reason         text NOT NULL,
    jwt_expires_by integer NOT NULL
);
CREATE INDEX revocations_project ON revocations (project_id, cursor);
CREATE TABLE feed_horizon (
    id     integer PRIMARY KEY,
    cursor integer NOT NULL
);
INSERT INTO feed_horizon (id, cursor) VALUES (1, 0);
ALTER TABLE projects ADD COLUMN revocations_private boolean NOT NULL DEFAULT false;
