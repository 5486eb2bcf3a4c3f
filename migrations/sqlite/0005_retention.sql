-- Retention: a session or magic link that ended before a cutoff also began before it, so the
-- purge walks these (never-updated) columns; an index on expires_at would make every
-- extension a non-HOT update on Postgres.
CREATE INDEX sessions_started_at ON sessions (started_at);
CREATE INDEX magic_links_created_at ON magic_links (created_at);
