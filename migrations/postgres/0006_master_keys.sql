-- The master keys private signing keys have been sealed under, in the order they came into
-- use. A process may seal only under the newest (or start a rotation to a new key while it
-- holds the newest), so a shell with a stale HALLPASS_MASTER_KEY cannot seal backwards.
CREATE TABLE master_keys (
    seq           bigserial PRIMARY KEY,
    fingerprint   text NOT NULL UNIQUE,
    first_used_at bigint NOT NULL
);
INSERT INTO master_keys (fingerprint, first_used_at)
SELECT master_key_id, MIN(created_at) FROM signing_keys GROUP BY master_key_id ORDER BY MIN(created_at);
