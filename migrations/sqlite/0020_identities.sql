-- Issue 23 (helper A): sign-in with external providers (OpenID Connect, plain OAuth 2).

-- A person's identity at an external provider, linked to one user. (provider, provider_id)
-- is unique: one provider account belongs to at most one user. The `email` identity of a
-- password user is not a row: it is derived from the user (app_metadata.providers).
CREATE TABLE identities (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    -- The provider's stable id of the person (the ID token's `sub`).
    provider_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- What the provider said of the person at the last sign-in (JSON object).
    identity_data TEXT NOT NULL DEFAULT '{}',
    email TEXT,
    last_sign_in_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (provider, provider_id)
);
CREATE INDEX identities_user ON identities(user_id);

-- A sign-in started at /authorize, waiting for the provider's callback: found by the SHA-256
-- of its `state` and deleted by the callback that uses it (single use), refused after
-- expires_at. `secrets_sealed` holds the nonce and the PKCE verifier sent to the provider,
-- sealed under a key derived from the state itself, which only the browser holds.
CREATE TABLE external_flows (
    state_hash TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    redirect_to TEXT NOT NULL,
    secrets_sealed TEXT NOT NULL,
    -- The client's own PKCE challenge (S256 form), for flowType 'pkce'; NULL: implicit flow.
    code_challenge TEXT,
    -- linkIdentity: the signed-in user the identity is to be linked to.
    link_user_id TEXT REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX external_flows_expires ON external_flows(expires_at);
