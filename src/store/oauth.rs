//! OAuth 2.1 authorization server records: clients, pending requests, grants (consent),
//! authorization codes and refresh tokens. Secrets are stored only as SHA-256 (hex).

use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::audit::{record, Audit};
use super::{Store, StoreError, StoreResult};

/// A live or revoked grant with its client's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthGrantRow {
    /// `oag_…`.
    pub id: String,
    /// The person who consented.
    pub user_id: String,
    /// The client.
    pub client_id: String,
    /// The client's name.
    pub client_name: String,
    /// The organization the grant applies to.
    pub org_id: String,
    /// Scopes, space-separated, sorted.
    pub scopes: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms of the last token issued under it.
    pub last_used_at: Option<i64>,
    /// Unix ms; `None` while live.
    pub revoked_at: Option<i64>,
    /// The assurance level of the session that last consented: `aal1` or `aal2`.
    pub aal: String,
}

const GRANT_COLUMNS: &str = "g.id, g.user_id, g.client_id, c.name AS client_name, g.org_id, \
     g.scopes, g.created_at, g.last_used_at, g.revoked_at, g.aal";

fn grant_from_row(r: &AnyRow) -> StoreResult<OAuthGrantRow> {
    Ok(OAuthGrantRow {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        client_id: r.try_get("client_id")?,
        client_name: r.try_get("client_name")?,
        org_id: r.try_get("org_id")?,
        scopes: r.try_get("scopes")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
        aal: r.try_get("aal")?,
    })
}

impl Store {
    /// One grant, live or revoked.
    #[tracing::instrument(name = "Store::oauth_grant", level = "debug", skip_all)]
    pub async fn oauth_grant(&self, id: &str) -> StoreResult<Option<OAuthGrantRow>> {
        let row = sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS} FROM oauth_grants g \
             JOIN oauth_clients c ON c.client_id = g.client_id WHERE g.id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db())
        .await?;
        row.as_ref().map(grant_from_row).transpose()
    }
}

/// A client as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthClientRow {
    /// `oac_…`, or the metadata document's URL.
    pub client_id: String,
    /// SHA-256 (hex) of the secret; `None` for a public client.
    pub secret_hash: Option<String>,
    /// Shown on the consent page.
    pub name: String,
    /// JSON array of the registered redirect URIs.
    pub redirect_uris: String,
    /// `dynamic`, `metadata_document` or `admin`.
    pub kind: String,
    /// The organization of an admin-registered client.
    pub org_id: Option<String>,
    /// The registration metadata echoed to the client (JSON object).
    pub metadata: String,
    /// `user:{id}` for admin-registered clients.
    pub created_by: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms after which a metadata document is fetched again.
    pub refresh_at: Option<i64>,
}

const CLIENT_COLUMNS: &str = "client_id, secret_hash, name, redirect_uris, kind, org_id, \
     metadata, created_by, created_at, refresh_at";

fn client_from_row(r: &AnyRow) -> StoreResult<OAuthClientRow> {
    Ok(OAuthClientRow {
        client_id: r.try_get("client_id")?,
        secret_hash: r.try_get("secret_hash")?,
        name: r.try_get("name")?,
        redirect_uris: r.try_get("redirect_uris")?,
        kind: r.try_get("kind")?,
        org_id: r.try_get("org_id")?,
        metadata: r.try_get("metadata")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        refresh_at: r.try_get("refresh_at")?,
    })
}

/// A pending authorization request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthRequestRow {
    /// `oar_…`.
    pub id: String,
    /// The client.
    pub client_id: String,
    /// The redirect URI the code goes to (already checked).
    pub redirect_uri: String,
    /// Scopes, space-separated, sorted.
    pub scopes: String,
    /// The resource (RFC 8707).
    pub resource: String,
    /// The client's `state`, returned as is.
    pub state: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    /// OpenID Connect `nonce`, put in the ID token.
    pub nonce: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub expires_at: i64,
}

fn request_from_row(r: &AnyRow) -> StoreResult<OAuthRequestRow> {
    Ok(OAuthRequestRow {
        id: r.try_get("id")?,
        client_id: r.try_get("client_id")?,
        redirect_uri: r.try_get("redirect_uri")?,
        scopes: r.try_get("scopes")?,
        resource: r.try_get("resource")?,
        state: r.try_get("state")?,
        code_challenge: r.try_get("code_challenge")?,
        nonce: r.try_get("nonce")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

/// An authorization code as stored (found by its hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthCodeRow {
    /// The grant it was issued under.
    pub grant_id: String,
    /// The client it was issued to.
    pub client_id: String,
    /// Where it was sent.
    pub redirect_uri: String,
    /// The resource the tokens are for.
    pub resource: String,
    /// Scopes, space-separated.
    pub scopes: String,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    /// OpenID Connect `nonce`.
    pub nonce: Option<String>,
    /// Unix ms.
    pub expires_at: i64,
    /// Unix ms of its exchange; a second exchange is a replay.
    pub used_at: Option<i64>,
    /// The assurance level of the consent it was issued on.
    pub aal: String,
}

/// A refresh token as stored (found by its hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthRefreshRow {
    /// The grant it belongs to.
    pub grant_id: String,
    /// The resource its access tokens are for by default.
    pub resource: String,
    /// Scopes, space-separated.
    pub scopes: String,
    /// Unix ms.
    pub expires_at: i64,
    /// Unix ms of its rotation; presenting it again is a replay.
    pub rotated_at: Option<i64>,
    /// The assurance level of the consent its first code was issued on (kept at rotation).
    pub aal: String,
}

/// What approving a request stores: the grant (found or created) and the code.
pub struct NewCode<'a> {
    /// SHA-256 of the code.
    pub code_hash: &'a str,
    /// The request being approved (deleted).
    pub request: &'a OAuthRequestRow,
    /// The person approving.
    pub user_id: &'a str,
    /// The organization chosen.
    pub org_id: &'a str,
    /// A fresh id for the grant, used when no live grant matches.
    pub new_grant_id: &'a str,
    /// The assurance level of the consenting session (`aal1` or `aal2`), recorded on the grant.
    pub aal: &'a str,
    /// Unix ms.
    pub expires_at: i64,
}

impl Store {
    /// Stores a new client (dynamic or admin-registered), with an audit entry for an
    /// organization's client.
    #[tracing::instrument(name = "Store::insert_oauth_client", level = "debug", skip_all)]
    pub async fn insert_oauth_client(
        &self,
        c: &OAuthClientRow,
        audit: Option<&Audit>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        if c.org_id.is_none() {
            drop_ungranted_clients(&mut tx, c.created_at).await?;
        }
        sqlx::query(&format!(
            "INSERT INTO oauth_clients ({CLIENT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(&c.client_id)
        .bind(&c.secret_hash)
        .bind(&c.name)
        .bind(&c.redirect_uris)
        .bind(&c.kind)
        .bind(&c.org_id)
        .bind(&c.metadata)
        .bind(&c.created_by)
        .bind(c.created_at)
        .bind(c.refresh_at)
        .execute(&mut *tx)
        .await?;
        if let (Some(audit), Some(org)) = (audit, &c.org_id) {
            let details = json!({ "name": c.name, "confidential": c.secret_hash.is_some() });
            record(
                &mut tx,
                org,
                audit,
                "oauth_client.created",
                Some(&c.client_id),
                details,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stores or refreshes a client known by its metadata document.
    #[tracing::instrument(name = "Store::upsert_metadata_client", level = "debug", skip_all)]
    pub async fn upsert_metadata_client(&self, c: &OAuthClientRow) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        drop_ungranted_clients(&mut tx, c.created_at).await?;
        sqlx::query(&format!(
            "INSERT INTO oauth_clients ({CLIENT_COLUMNS}) \
             VALUES ($1, NULL, $2, $3, 'metadata_document', NULL, $4, NULL, $5, $6) \
             ON CONFLICT (client_id) DO UPDATE SET name = $2, redirect_uris = $3, metadata = $4, \
             refresh_at = $6"
        ))
        .bind(&c.client_id)
        .bind(&c.name)
        .bind(&c.redirect_uris)
        .bind(&c.metadata)
        .bind(c.created_at)
        .bind(c.refresh_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One client.
    #[tracing::instrument(name = "Store::oauth_client", level = "debug", skip_all)]
    pub async fn oauth_client(&self, client_id: &str) -> StoreResult<Option<OAuthClientRow>> {
        let row = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE client_id = $1"
        ))
        .bind(client_id)
        .fetch_optional(self.db())
        .await?;
        row.as_ref().map(client_from_row).transpose()
    }

    /// Whether anyone has a live grant to the client: only then may `/oauth/authorize` send
    /// errors to a client's redirect URI (an admin-registered client's always may).
    #[tracing::instrument(name = "Store::oauth_client_has_live_grant", level = "debug", skip_all)]
    pub async fn oauth_client_has_live_grant(&self, client_id: &str) -> StoreResult<bool> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT id FROM oauth_grants WHERE client_id = $1 AND revoked_at IS NULL LIMIT 1",
        )
        .bind(client_id)
        .fetch_optional(self.db())
        .await?;
        Ok(row.is_some())
    }

    /// An organization's clients, newest first.
    #[tracing::instrument(name = "Store::oauth_clients_of_org", level = "debug", skip_all)]
    pub async fn oauth_clients_of_org(&self, org_id: &str) -> StoreResult<Vec<OAuthClientRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE org_id = $1 \
             ORDER BY created_at DESC, client_id"
        ))
        .bind(org_id)
        .fetch_all(self.db())
        .await?;
        rows.iter().map(client_from_row).collect()
    }

    /// Deletes an organization's client with everything issued to it; the ids of its grants
    /// that were live (their cached copies must be forgotten). `NotFound` when the client is
    /// not that organization's.
    #[tracing::instrument(name = "Store::delete_oauth_client", level = "debug", skip_all)]
    pub async fn delete_oauth_client(
        &self,
        org_id: &str,
        client_id: &str,
        audit: &Audit,
    ) -> StoreResult<Vec<String>> {
        let mut tx = self.begin_write().await?;
        let live: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM oauth_grants WHERE client_id = $1 AND revoked_at IS NULL",
        )
        .bind(client_id)
        .fetch_all(&mut *tx)
        .await?;
        let gone = sqlx::query("DELETE FROM oauth_clients WHERE client_id = $1 AND org_id = $2")
            .bind(client_id)
            .bind(org_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            return Err(StoreError::NotFound);
        }
        record(
            &mut tx,
            org_id,
            audit,
            "oauth_client.deleted",
            Some(client_id),
            json!({ "grants_ended": live.len() }),
        )
        .await?;
        tx.commit().await?;
        Ok(live.into_iter().map(|(id,)| id).collect())
    }

    /// Stores a pending authorization request (and drops expired ones).
    #[tracing::instrument(name = "Store::insert_oauth_request", level = "debug", skip_all)]
    pub async fn insert_oauth_request(&self, r: &OAuthRequestRow) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM oauth_requests WHERE expires_at <= $1")
            .bind(r.created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM oauth_codes WHERE expires_at <= $1")
            .bind(r.created_at - 86_400_000)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO oauth_requests (id, client_id, redirect_uri, scopes, resource, state, \
             code_challenge, nonce, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&r.id)
        .bind(&r.client_id)
        .bind(&r.redirect_uri)
        .bind(&r.scopes)
        .bind(&r.resource)
        .bind(&r.state)
        .bind(&r.code_challenge)
        .bind(&r.nonce)
        .bind(r.created_at)
        .bind(r.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A pending request that has not expired.
    #[tracing::instrument(name = "Store::oauth_request", level = "debug", skip_all)]
    pub async fn oauth_request(&self, id: &str, now: i64) -> StoreResult<Option<OAuthRequestRow>> {
        let row = sqlx::query(
            "SELECT id, client_id, redirect_uri, scopes, resource, state, code_challenge, nonce, \
             created_at, expires_at FROM oauth_requests WHERE id = $1 AND expires_at > $2",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(self.db())
        .await?;
        row.as_ref().map(request_from_row).transpose()
    }

    /// Removes a request (denied). `NotFound` when it was already decided.
    #[tracing::instrument(name = "Store::delete_oauth_request", level = "debug", skip_all)]
    pub async fn delete_oauth_request(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM oauth_requests WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// The live grant of a person to a client for a scope set in an organization.
    #[tracing::instrument(name = "Store::live_oauth_grant", level = "debug", skip_all)]
    pub async fn live_oauth_grants_for(
        &self,
        user_id: &str,
        client_id: &str,
        scopes: &str,
    ) -> StoreResult<Vec<OAuthGrantRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS} FROM oauth_grants g \
             JOIN oauth_clients c ON c.client_id = g.client_id \
             WHERE g.user_id = $1 AND g.client_id = $2 AND g.scopes = $3 AND g.revoked_at IS NULL \
             ORDER BY g.created_at, g.id"
        ))
        .bind(user_id)
        .bind(client_id)
        .bind(scopes)
        .fetch_all(self.db())
        .await?;
        rows.iter().map(grant_from_row).collect()
    }

    /// A person's live grants, newest first.
    #[tracing::instrument(name = "Store::oauth_grants_of_user", level = "debug", skip_all)]
    pub async fn oauth_grants_of_user(&self, user_id: &str) -> StoreResult<Vec<OAuthGrantRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS} FROM oauth_grants g \
             JOIN oauth_clients c ON c.client_id = g.client_id \
             WHERE g.user_id = $1 AND g.revoked_at IS NULL ORDER BY g.created_at DESC, g.id"
        ))
        .bind(user_id)
        .fetch_all(self.db())
        .await?;
        rows.iter().map(grant_from_row).collect()
    }

    /// Approves a request: removes it, finds the live grant for the same person, client,
    /// organization and scopes or creates one (with its audit entry), and stores the code.
    /// Answers the grant id and whether it was created. `NotFound` when the request was
    /// already decided.
    #[tracing::instrument(name = "Store::approve_oauth_request", level = "debug", skip_all)]
    pub async fn approve_oauth_request(
        &self,
        code: &NewCode<'_>,
        audit: &Audit,
    ) -> StoreResult<(String, bool)> {
        let r = code.request;
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM oauth_requests WHERE id = $1 AND expires_at > $2")
            .bind(&r.id)
            .bind(audit.now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        let existing: Option<(String,)> = sqlx::query_as(
            "SELECT id FROM oauth_grants WHERE user_id = $1 AND client_id = $2 AND org_id = $3 \
             AND scopes = $4 AND revoked_at IS NULL",
        )
        .bind(code.user_id)
        .bind(&r.client_id)
        .bind(code.org_id)
        .bind(&r.scopes)
        .fetch_optional(&mut *tx)
        .await?;
        let (grant_id, created) = match existing {
            Some((id,)) => {
                // The grant holds the level of its latest consent: an aal1 approval of a grant
                // given at aal2 lowers it, so a password alone never reuses an aal2 grant.
                sqlx::query("UPDATE oauth_grants SET aal = $1 WHERE id = $2")
                    .bind(code.aal)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                (id, false)
            }
            None => {
                sqlx::query(
                    "INSERT INTO oauth_grants (id, user_id, client_id, org_id, scopes, created_at, \
                     aal) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(code.new_grant_id)
                .bind(code.user_id)
                .bind(&r.client_id)
                .bind(code.org_id)
                .bind(&r.scopes)
                .bind(audit.now)
                .bind(code.aal)
                .execute(&mut *tx)
                .await?;
                let name: Option<(String,)> =
                    sqlx::query_as("SELECT name FROM oauth_clients WHERE client_id = $1")
                        .bind(&r.client_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let details = json!({ "client_id": r.client_id,
                    "client_name": name.map(|n| n.0), "scopes": r.scopes, "aal": code.aal });
                record(
                    &mut tx,
                    code.org_id,
                    audit,
                    "oauth_grant.created",
                    Some(code.new_grant_id),
                    details,
                )
                .await?;
                (code.new_grant_id.to_string(), true)
            }
        };
        insert_code(&mut tx, code, &grant_id, audit.now).await?;
        tx.commit().await?;
        Ok((grant_id, created))
    }

    /// Issues a code under an existing live grant (remembered consent), removing the request.
    #[tracing::instrument(name = "Store::code_for_grant", level = "debug", skip_all)]
    pub async fn code_for_grant(
        &self,
        code: &NewCode<'_>,
        grant_id: &str,
        now: i64,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM oauth_requests WHERE id = $1")
            .bind(&code.request.id)
            .execute(&mut *tx)
            .await?;
        insert_code(&mut tx, code, grant_id, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A code by its hash.
    #[tracing::instrument(name = "Store::oauth_code", level = "debug", skip_all)]
    pub async fn oauth_code(&self, code_hash: &str) -> StoreResult<Option<OAuthCodeRow>> {
        let row = sqlx::query(
            "SELECT grant_id, client_id, redirect_uri, resource, scopes, code_challenge, nonce, \
             expires_at, used_at, aal FROM oauth_codes WHERE code_hash = $1",
        )
        .bind(code_hash)
        .fetch_optional(self.db())
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(OAuthCodeRow {
            grant_id: r.try_get("grant_id")?,
            client_id: r.try_get("client_id")?,
            redirect_uri: r.try_get("redirect_uri")?,
            resource: r.try_get("resource")?,
            scopes: r.try_get("scopes")?,
            code_challenge: r.try_get("code_challenge")?,
            nonce: r.try_get("nonce")?,
            expires_at: r.try_get("expires_at")?,
            used_at: r.try_get("used_at")?,
            aal: r.try_get("aal")?,
        }))
    }

    /// Marks a code used; false when it already was (a replay).
    #[tracing::instrument(name = "Store::use_oauth_code", level = "debug", skip_all)]
    pub async fn use_oauth_code(&self, code_hash: &str, now: i64) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE oauth_codes SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL",
        )
        .bind(now)
        .bind(code_hash)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Stores a refresh token (hash, resource, scopes, expiry, aal) and notes the grant's use.
    #[tracing::instrument(name = "Store::insert_oauth_refresh", level = "debug", skip_all)]
    pub async fn touch_oauth_grant(
        &self,
        grant_id: &str,
        refresh: Option<NewRefresh<'_>>,
        now: i64,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE oauth_grants SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(grant_id)
            .execute(&mut *tx)
            .await?;
        if let Some(r) = refresh {
            insert_refresh(&mut tx, grant_id, &r, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A refresh token by its hash.
    #[tracing::instrument(name = "Store::oauth_refresh", level = "debug", skip_all)]
    pub async fn oauth_refresh(&self, token_hash: &str) -> StoreResult<Option<OAuthRefreshRow>> {
        let row = sqlx::query(
            "SELECT grant_id, resource, scopes, expires_at, rotated_at, aal \
             FROM oauth_refresh_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.db())
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(OAuthRefreshRow {
            grant_id: r.try_get("grant_id")?,
            resource: r.try_get("resource")?,
            scopes: r.try_get("scopes")?,
            expires_at: r.try_get("expires_at")?,
            rotated_at: r.try_get("rotated_at")?,
            aal: r.try_get("aal")?,
        }))
    }

    /// Rotates a refresh token: marks it rotated and stores its successor, in one
    /// transaction. False when it was already rotated (a replay; nothing is stored).
    #[tracing::instrument(name = "Store::rotate_oauth_refresh", level = "debug", skip_all)]
    pub async fn rotate_oauth_refresh(
        &self,
        old_hash: &str,
        grant_id: &str,
        successor: NewRefresh<'_>,
        now: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE oauth_refresh_tokens SET rotated_at = $1 \
             WHERE token_hash = $2 AND rotated_at IS NULL",
        )
        .bind(now)
        .bind(old_hash)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        insert_refresh(&mut tx, grant_id, &successor, now).await?;
        sqlx::query("UPDATE oauth_grants SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(grant_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Revokes a grant and deletes its refresh tokens and codes, with an audit entry in the
    /// grant's organization. False when it was already revoked or does not exist.
    #[tracing::instrument(name = "Store::revoke_oauth_grant", level = "debug", skip_all)]
    pub async fn revoke_oauth_grant(
        &self,
        grant_id: &str,
        why: &str,
        audit: &Audit,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT org_id, client_id FROM oauth_grants WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(grant_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((org_id, client_id)) = row else {
            return Ok(false);
        };
        sqlx::query(
            "UPDATE oauth_grants SET revoked_at = $1, revoked_why = $2 \
             WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(audit.now)
        .bind(why)
        .bind(grant_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM oauth_refresh_tokens WHERE grant_id = $1")
            .bind(grant_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE oauth_codes SET used_at = $1 WHERE grant_id = $2 AND used_at IS NULL")
            .bind(audit.now)
            .bind(grant_id)
            .execute(&mut *tx)
            .await?;
        record(
            &mut tx,
            &org_id,
            audit,
            "oauth_grant.revoked",
            Some(grant_id),
            json!({ "client_id": client_id, "why": why }),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Deletes, at most [`UNGRANTED_BATCH`] at a time, the clients nobody registered for an
/// organization (dynamic and metadata-document ones) that are older than
/// [`UNGRANTED_CLIENT_DAYS`] and were never granted (no grant, live or revoked);
/// their pending requests go with them. Run on each registration, so a registration flood
/// cannot pile up clients for ever.
async fn drop_ungranted_clients(conn: &mut super::exec::Conn, now: i64) -> StoreResult<()> {
    let before = now - UNGRANTED_CLIENT_DAYS * 86_400_000;
    sqlx::query(
        "DELETE FROM oauth_clients WHERE client_id IN (SELECT c.client_id FROM oauth_clients c \
         WHERE c.org_id IS NULL AND c.created_at < $1 AND NOT EXISTS \
         (SELECT 1 FROM oauth_grants g WHERE g.client_id = c.client_id) \
         ORDER BY c.created_at LIMIT $2)",
    )
    .bind(before)
    .bind(UNGRANTED_BATCH)
    .execute(conn)
    .await?;
    Ok(())
}

/// A client nobody registered for an organization (dynamic or metadata-document) that no one
/// has granted this many days after it appeared is deleted at a later registration.
pub const UNGRANTED_CLIENT_DAYS: i64 = 7;

/// How many never-granted clients one registration removes at most.
const UNGRANTED_BATCH: i64 = 100;

/// A refresh token to store.
#[derive(Clone, Copy, Debug)]
pub struct NewRefresh<'a> {
    /// SHA-256 (hex) of the token.
    pub hash: &'a str,
    /// The resource its access tokens are for.
    pub resource: &'a str,
    /// Scopes, space-separated.
    pub scopes: &'a str,
    /// Unix ms.
    pub expires_at: i64,
    /// The assurance level of the consent it descends from.
    pub aal: &'a str,
}

async fn insert_refresh(
    conn: &mut super::exec::Conn,
    grant_id: &str,
    r: &NewRefresh<'_>,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO oauth_refresh_tokens (token_hash, grant_id, resource, scopes, \
         created_at, expires_at, aal) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(r.hash)
    .bind(grant_id)
    .bind(r.resource)
    .bind(r.scopes)
    .bind(now)
    .bind(r.expires_at)
    .bind(r.aal)
    .execute(conn)
    .await?;
    Ok(())
}

async fn insert_code(
    conn: &mut super::exec::Conn,
    code: &NewCode<'_>,
    grant_id: &str,
    now: i64,
) -> StoreResult<()> {
    let r = code.request;
    sqlx::query(
        "INSERT INTO oauth_codes (code_hash, grant_id, client_id, redirect_uri, resource, scopes, \
         code_challenge, nonce, created_at, expires_at, aal) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(code.code_hash)
    .bind(grant_id)
    .bind(&r.client_id)
    .bind(&r.redirect_uri)
    .bind(&r.resource)
    .bind(&r.scopes)
    .bind(&r.code_challenge)
    .bind(&r.nonce)
    .bind(now)
    .bind(code.expires_at)
    .bind(code.aal)
    .execute(conn)
    .await?;
    Ok(())
}
