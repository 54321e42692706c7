-- Email flows: one-time tokens (hashed) and the durable mail queue.
-- A token and the mail that carries it are written in one transaction, so a mail the API
-- promised is in the queue even if the process dies before it reaches SMTP.
CREATE TABLE one_time_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    -- The address the mail went to (the new address for an email change).
    email TEXT NOT NULL,
    -- SHA-256 of the link token; SHA-256 of "{id}:{code}" for the six-digit code.
    token_hash TEXT NOT NULL UNIQUE,
    code_hash TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
-- One live token per user and kind: a new one replaces the previous.
CREATE UNIQUE INDEX one_time_tokens_user_kind ON one_time_tokens(user_id, kind);
CREATE INDEX one_time_tokens_email ON one_time_tokens(email);

CREATE TABLE mail_outbox (
    id TEXT PRIMARY KEY,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    text_body TEXT NOT NULL,
    html_body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    last_error TEXT,
    sent_at BIGINT,
    failed_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX mail_outbox_due ON mail_outbox(sent_at, failed_at, next_attempt_at);

-- When a mail last went to an address (keyed by the address's SHA-256, known or not).
CREATE TABLE mail_address_sends (
    address_hash TEXT PRIMARY KEY,
    last_sent_at BIGINT NOT NULL
);
