-- How many exchanges a thread holds: each stored exchange adds one. An instance that cached a
-- thread's recent history knows it is still whole when the revision is the one it stored.
ALTER TABLE threads ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;

-- Thread lists are ordered by (updated_at, id): with the id in the index the order comes from
-- it, where before every list (and each widget message, which looks up the visitor's latest
-- thread) sorted its rows in a temporary b-tree.
DROP INDEX threads_by_org;
DROP INDEX threads_by_user;
DROP INDEX threads_by_visitor;
CREATE INDEX threads_by_org ON threads (org_id, updated_at, id);
CREATE INDEX threads_by_user ON threads (user_id, updated_at, id);
CREATE INDEX threads_by_visitor ON threads (org_id, visitor, updated_at, id);
