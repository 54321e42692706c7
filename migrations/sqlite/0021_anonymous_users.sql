-- Anonymous sign-in (issue 23, item 4): a user may have no address (email NULL) until they
-- add and confirm one, and `is_anonymous` says the account was made by an anonymous sign-in
-- and has not been converted yet (1) or is a permanent account (0).
-- sqlite only:
-- SQLite cannot drop a NOT NULL constraint, so the table is rebuilt with every column,
-- constraint and index it had (the UNIQUE on email is its only index). Dropping a parent
-- table while foreign keys are enforced would cascade-delete every session, membership and
-- token of every user, and the pragma that turns them off does nothing inside a transaction.
-- sqlx runs each migration inside one (and ignores `-- no-transaction` on SQLite), so this
-- file ends sqlx's transaction (empty so far), rebuilds the table in a transaction of its own
-- with foreign keys off, turns them back on and opens the transaction in which sqlx then
-- records the migration. The tables that reference users(id) name the table, so they point
-- at the rebuilt one. Were the process to stop between the two commits, the next start would
-- run this file again: it rebuilds the table once more, from the rebuilt one.
COMMIT;
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE users_0021 (
    id TEXT PRIMARY KEY,
    email TEXT UNIQUE,
    password_hash TEXT,
    email_confirmed_at BIGINT,
    confirmation_sent_at BIGINT,
    last_sign_in_at BIGINT,
    user_metadata TEXT NOT NULL DEFAULT '{}',
    app_metadata TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    email_change TEXT,
    email_change_confirmed INTEGER NOT NULL DEFAULT 0,
    banned_until BIGINT,
    is_anonymous INTEGER NOT NULL DEFAULT 0
);
INSERT INTO users_0021 (id, email, password_hash, email_confirmed_at, confirmation_sent_at,
    last_sign_in_at, user_metadata, app_metadata, created_at, updated_at, email_change,
    email_change_confirmed, banned_until)
SELECT id, email, password_hash, email_confirmed_at, confirmation_sent_at,
    last_sign_in_at, user_metadata, app_metadata, created_at, updated_at, email_change,
    email_change_confirmed, banned_until FROM users;
DROP TABLE users;
ALTER TABLE users_0021 RENAME TO users;
COMMIT;
PRAGMA foreign_keys = ON;
BEGIN;
-- end sqlite only
