-- The chat gateway: threads and their messages, and usage counters.
CREATE TABLE threads (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id TEXT REFERENCES users(id) ON DELETE CASCADE,
    key_id TEXT,
    title TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX threads_by_org ON threads (org_id, updated_at);
CREATE INDEX threads_by_user ON threads (user_id, updated_at);

-- Ids are time-ordered (UUIDv7), so (created_at, id) is the order of a conversation.
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
    org_id TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX messages_by_thread ON messages (thread_id, created_at, id);
CREATE INDEX messages_by_org ON messages (org_id, created_at, id);

-- Requests and tokens per organization, key ('' for none) and hour (unix ms of its start).
CREATE TABLE usage_hours (
    org_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    key_id TEXT NOT NULL,
    hour BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    PRIMARY KEY (org_id, key_id, hour)
);
