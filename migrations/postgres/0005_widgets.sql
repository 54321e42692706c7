-- Embeddable chat widgets, and visitors' threads.
CREATE TABLE widgets (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    allowed_origins TEXT NOT NULL,
    settings TEXT NOT NULL,
    require_token BIGINT NOT NULL,
    secret TEXT NOT NULL,
    secret_rotated_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX widgets_org ON widgets(org_id, created_at);

-- A widget visitor's thread: `v:vis_…` (anonymous) or `u:{user_id}` (identified).
ALTER TABLE threads ADD COLUMN visitor TEXT;
ALTER TABLE threads ADD COLUMN widget_id TEXT;
CREATE INDEX threads_by_visitor ON threads (org_id, visitor, updated_at);
