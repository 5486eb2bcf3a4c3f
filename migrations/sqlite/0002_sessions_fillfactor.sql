-- Postgres-only tuning (page fill factor for HOT updates); SQLite has no equivalent.
-- Kept so both directories hold the same migrations.
SELECT 1;
