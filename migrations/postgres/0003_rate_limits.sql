-- Per-organization and per-key rate limits ("60/60s,1000/3600s"); NULL: the configured default.
ALTER TABLE organizations ADD COLUMN rate_limits TEXT;
ALTER TABLE api_keys ADD COLUMN rate_limits TEXT;
