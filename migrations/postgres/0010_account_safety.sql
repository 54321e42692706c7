-- Each sign-up keeps its own password on its confirmation token: confirming one sign-up's
-- link sets that sign-up's password, never one chosen by somebody else who signed up the
-- same address first. So a user may hold several live sign-up tokens at once; every other
-- kind keeps one live token per user.
ALTER TABLE one_time_tokens ADD COLUMN password_hash TEXT;
DROP INDEX one_time_tokens_user_kind;
CREATE UNIQUE INDEX one_time_tokens_user_kind ON one_time_tokens(user_id, kind) WHERE kind <> 'signup';
CREATE INDEX one_time_tokens_user ON one_time_tokens(user_id);

-- A pending email change: the new address, and which sides confirmed it so far
-- (1 = the new address, 2 = the current one). It applies once both have.
ALTER TABLE users ADD COLUMN email_change TEXT;
ALTER TABLE users ADD COLUMN email_change_confirmed INTEGER NOT NULL DEFAULT 0;

-- Requests for mail that depend on whether an address has an account (sign-in links,
-- recovery, sign-up confirmations, email changes). The route writes one for every request,
-- known address or not, and answers; the mail worker looks the address up and sends (or not).
-- So a known address costs the route exactly what an unknown one does, and what the route
-- acknowledged survives a crash (the row stays until a worker has handled it).
CREATE TABLE mail_requests (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    email TEXT NOT NULL,
    user_id TEXT,
    redirect_to TEXT,
    data TEXT NOT NULL DEFAULT '{}',
    password_hash TEXT,
    lease_owner TEXT,
    lease_until BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX mail_requests_created ON mail_requests(created_at);
