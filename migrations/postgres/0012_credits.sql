-- Credits per API key: the balance (NULL: unlimited), the amount it was last set or refilled
-- to (credits.low fires at 10 % of it), the instant of that set or refill (the period the
-- balance belongs to), a generation bumped by every change of the settings (so spends decided
-- under older settings are not applied to newer ones), and the refill rule.
ALTER TABLE api_keys ADD COLUMN credits_remaining BIGINT;
ALTER TABLE api_keys ADD COLUMN credits_base BIGINT;
ALTER TABLE api_keys ADD COLUMN credits_period BIGINT;
ALTER TABLE api_keys ADD COLUMN credits_gen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN credits_refill_interval TEXT;
ALTER TABLE api_keys ADD COLUMN credits_refill_amount BIGINT;
ALTER TABLE api_keys ADD COLUMN credits_refill_day INTEGER;

-- The ledger of spent credits: one row per key, generation and period for each committed
-- batch of uses (or per use, where storage decides).
CREATE TABLE credit_spends (
    seq BIGSERIAL PRIMARY KEY,
    key_id TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    org_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    gen BIGINT NOT NULL,
    period BIGINT NOT NULL,
    amount BIGINT NOT NULL,
    uses BIGINT NOT NULL,
    remaining BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX credit_spends_key ON credit_spends(key_id, seq);
CREATE INDEX credit_spends_org ON credit_spends(org_id, created_at);
