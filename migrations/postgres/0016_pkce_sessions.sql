-- Issue 23 (helper a): PKCE codes and what each session records of its device.

-- PKCE: a mail asked for with a code_challenge carries it (in its S256 form, base64url of
-- SHA-256 of the verifier) to its one-time token; following that token's link mints an auth
-- code bound to it, which POST /auth/v1/token?grant_type=pkce exchanges once for a session.
ALTER TABLE mail_requests ADD COLUMN code_challenge TEXT;
ALTER TABLE one_time_tokens ADD COLUMN code_challenge TEXT;
CREATE TABLE pkce_codes (
    -- SHA-256 of the auth code; the code itself is never stored.
    code_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_challenge TEXT NOT NULL,
    -- What the link proved (signup, magiclink, recovery, email_change): the session's method.
    method TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX pkce_codes_expires ON pkce_codes(expires_at);

-- Sessions per device: the user agent and address that signed in (the address as the
-- trusted-proxy rules resolve it). The sign-in method is amr_method and the last refresh
-- updated_at, both already there.
ALTER TABLE sessions ADD COLUMN user_agent TEXT;
ALTER TABLE sessions ADD COLUMN ip TEXT;
