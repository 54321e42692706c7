-- Chat admission (issue 21): model allow-lists (a JSON array of patterns), token windows
-- (a JSON object) and concurrency bounds per key and organization; a widget's model and
-- token budgets. NULL everywhere: unrestricted (widgets: the configured defaults).
ALTER TABLE api_keys ADD COLUMN allowed_models TEXT;
ALTER TABLE api_keys ADD COLUMN token_limits TEXT;
ALTER TABLE api_keys ADD COLUMN max_parallel BIGINT;
ALTER TABLE organizations ADD COLUMN allowed_models TEXT;
ALTER TABLE organizations ADD COLUMN token_limits TEXT;
ALTER TABLE organizations ADD COLUMN max_parallel BIGINT;
ALTER TABLE widgets ADD COLUMN model TEXT;
ALTER TABLE widgets ADD COLUMN token_limits TEXT;
