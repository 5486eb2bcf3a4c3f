-- RBAC: each project's policy (validated JSON, Stytch's shape) and each user's assigned roles
-- (a JSON array of role ids; every user also holds stytch_user, which is not stored).
ALTER TABLE projects ADD COLUMN rbac_policy text NOT NULL DEFAULT '{"roles":[],"resources":[],"scopes":[]}';
ALTER TABLE users ADD COLUMN roles text NOT NULL DEFAULT '[]';
