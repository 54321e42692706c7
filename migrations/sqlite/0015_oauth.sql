-- Gatehouse as an OAuth 2.1 authorization server (docs/oauth.md). Every secret (client
-- secrets, authorization codes, refresh tokens) is stored only as its SHA-256 (hex).

-- Clients: registered dynamically (RFC 7591), known by their metadata document (an https
-- client_id, refreshed after refresh_at), or registered by an organization's admin.
CREATE TABLE oauth_clients (
    client_id TEXT PRIMARY KEY,
    secret_hash TEXT,
    name TEXT NOT NULL,
    redirect_uris TEXT NOT NULL,
    kind TEXT NOT NULL,
    org_id TEXT REFERENCES organizations(id) ON DELETE CASCADE,
    metadata TEXT NOT NULL,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    refresh_at BIGINT
);
CREATE INDEX oauth_clients_by_org ON oauth_clients (org_id, created_at);

-- Authorization requests waiting for the person's decision on the consent page.
CREATE TABLE oauth_requests (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL REFERENCES oauth_clients(client_id) ON DELETE CASCADE,
    redirect_uri TEXT NOT NULL,
    scopes TEXT NOT NULL,
    resource TEXT NOT NULL,
    state TEXT,
    code_challenge TEXT NOT NULL,
    nonce TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX oauth_requests_by_expiry ON oauth_requests (expires_at);

-- Consent: one person lets one client act with a set of scopes in one organization.
-- Revoking it ends every token issued under it.
CREATE TABLE oauth_grants (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id TEXT NOT NULL REFERENCES oauth_clients(client_id) ON DELETE CASCADE,
    org_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT,
    revoked_why TEXT
);
CREATE INDEX oauth_grants_by_user ON oauth_grants (user_id, created_at);
CREATE INDEX oauth_grants_by_client ON oauth_grants (client_id);
CREATE UNIQUE INDEX oauth_grants_one_live ON oauth_grants (user_id, client_id, org_id, scopes)
    WHERE revoked_at IS NULL;

-- Authorization codes: single use, short-lived, bound to the PKCE challenge.
CREATE TABLE oauth_codes (
    code_hash TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL REFERENCES oauth_grants(id) ON DELETE CASCADE,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    resource TEXT NOT NULL,
    scopes TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    nonce TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX oauth_codes_by_expiry ON oauth_codes (expires_at);

-- Refresh tokens: rotated at each use; a rotated one presented again revokes the grant.
CREATE TABLE oauth_refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL REFERENCES oauth_grants(id) ON DELETE CASCADE,
    resource TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    rotated_at BIGINT
);
CREATE INDEX oauth_refresh_by_grant ON oauth_refresh_tokens (grant_id);
