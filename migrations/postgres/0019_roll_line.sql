-- A rolled key keeps its money (issue 21): every key of a roll line names the line's first
-- key, whose row holds the line's one credit balance and under whose id the line's key
-- budgets are counted. NULL: the key is the first of its line (or was never rolled).
ALTER TABLE api_keys ADD COLUMN root_key TEXT;
CREATE INDEX api_keys_root_key ON api_keys (root_key);
