-- The admin API (/auth/v1/admin): a ban (unix ms; a user banned until then cannot sign in
-- or refresh), and the deployment-wide log of every admin call (the organizations' audit
-- logs are per organization; these calls are not).
ALTER TABLE users ADD COLUMN banned_until BIGINT;

CREATE TABLE admin_audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    ip TEXT,
    details TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
