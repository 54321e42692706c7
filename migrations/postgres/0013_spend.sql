-- Money budgets (issue 21): budgets on keys and organizations, per-organization prices,
-- the spend ledger that enforcement, reports and exports read, and threshold-alert dedupe.
ALTER TABLE api_keys ADD COLUMN budgets TEXT;

CREATE TABLE org_budgets (
    org_id TEXT PRIMARY KEY REFERENCES organizations(id) ON DELETE CASCADE,
    budgets TEXT,
    end_user_budgets TEXT,
    updated_at BIGINT NOT NULL
);

CREATE TABLE model_prices (
    org_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    input_per_mtok BIGINT NOT NULL,
    output_per_mtok BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, model)
);

-- One row per settled chat; `id` is the reservation's id, so a replayed settle is a no-op.
CREATE TABLE spend_ledger (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    key_id TEXT,
    end_user TEXT,
    model TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX spend_ledger_org ON spend_ledger (org_id, created_at);
CREATE INDEX spend_ledger_key ON spend_ledger (key_id, created_at);
CREATE INDEX spend_ledger_end_user ON spend_ledger (org_id, end_user, created_at);

-- `budget.threshold` is sent once per budget, period and threshold.
CREATE TABLE budget_alerts (
    budget TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    threshold INTEGER NOT NULL,
    org_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (budget, period_start, threshold)
);
