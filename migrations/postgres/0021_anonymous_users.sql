-- Anonymous sign-in (issue 23, item 4): a user may have no address (email NULL) until they
-- add and confirm one, and `is_anonymous` says the account was made by an anonymous sign-in
-- and has not been converted yet (1) or is a permanent account (0).
-- postgres only:
ALTER TABLE users ALTER COLUMN email DROP NOT NULL;
ALTER TABLE users ADD COLUMN is_anonymous INTEGER NOT NULL DEFAULT 0;
-- end postgres only
