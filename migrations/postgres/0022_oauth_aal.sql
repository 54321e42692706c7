-- The assurance level of the dashboard session that gave an OAuth consent (docs/oauth.md):
-- an organization that requires MFA accepts a client's tokens only when the grant, and the
-- code or refresh token they came from, are aal2. A grant holds the level of its latest
-- consent; a code and the refresh tokens descending from it keep the level of theirs, so a
-- later consent at aal2 does not raise what an aal1 consent obtained.
-- Rows from before these columns existed count as aal1.
ALTER TABLE oauth_grants ADD COLUMN aal TEXT NOT NULL DEFAULT 'aal1';
ALTER TABLE oauth_codes ADD COLUMN aal TEXT NOT NULL DEFAULT 'aal1';
ALTER TABLE oauth_refresh_tokens ADD COLUMN aal TEXT NOT NULL DEFAULT 'aal1';
