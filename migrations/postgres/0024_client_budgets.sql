-- Money budgets per OAuth client (docs/spend.md, docs/oauth.md): an organization's
-- `client_budgets` apply to each client acting in it separately, and the spend ledger names
-- the client whose token a chat came with, so its spend is summed from the ledger.
ALTER TABLE org_budgets ADD COLUMN client_budgets TEXT;
ALTER TABLE spend_ledger ADD COLUMN client_id TEXT;
CREATE INDEX spend_ledger_client ON spend_ledger (org_id, client_id, created_at);
