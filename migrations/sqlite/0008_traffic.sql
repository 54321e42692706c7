-- Every API-key request and every 429 per key and hour, next to the chat counts.
ALTER TABLE usage_hours ADD COLUMN api_requests BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_hours ADD COLUMN rate_limited BIGINT NOT NULL DEFAULT 0;
