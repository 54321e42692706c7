-- Multi-factor authentication (issue 23). One row per enrolled factor. `factor_type` is
-- `totp` today; WebAuthn factors (a later step) use the same row: `credential` (JSON: the
-- credential id, public key, sign count) instead of `secret_sealed`. A TOTP secret is only
-- stored sealed (auth::sealed, under `mfa_encryption_key`, bound to the factor id).
CREATE TABLE mfa_factors (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    factor_type TEXT NOT NULL,
    friendly_name TEXT,
    status TEXT NOT NULL,
    secret_sealed TEXT,
    credential TEXT,
    -- TOTP: the last time step whose code was accepted; a code of that step or an earlier
    -- one is refused (replay).
    last_step BIGINT,
    last_challenged_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX mfa_factors_user ON mfa_factors(user_id);
CREATE UNIQUE INDEX mfa_factors_user_name ON mfa_factors(user_id, friendly_name);

-- A challenge opened on a factor: verified against once, within its expiry, with a bounded
-- number of wrong codes.
CREATE TABLE mfa_challenges (
    id TEXT PRIMARY KEY,
    factor_id TEXT NOT NULL REFERENCES mfa_factors(id) ON DELETE CASCADE,
    ip TEXT NOT NULL,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    verified_at BIGINT
);
CREATE INDEX mfa_challenges_factor ON mfa_challenges(factor_id);

-- A session's assurance level: when a factor was verified in it (NULL: aal1), which factor
-- and its method (the `amr` entry).
ALTER TABLE sessions ADD COLUMN mfa_verified_at BIGINT;
ALTER TABLE sessions ADD COLUMN mfa_factor_id TEXT;
ALTER TABLE sessions ADD COLUMN mfa_method TEXT;
-- A dashboard session opened from an aal2 access token is aal2 too.
ALTER TABLE web_sessions ADD COLUMN aal TEXT NOT NULL DEFAULT 'aal1';
-- An organization may require members to have verified a second factor (aal2).
ALTER TABLE organizations ADD COLUMN require_mfa BIGINT NOT NULL DEFAULT 0;
