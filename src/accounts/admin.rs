//! The admin API's use cases (`supabase.auth.admin`): users listed, read, created, changed
//! (bans included) and deleted with an operator's service key, each call in the admin log.

use serde_json::{json, Map, Value};

use super::{parse_email, AccountError, Accounts, Invalid};
use crate::store::{
    AdminAction, AdminAudit, AdminNewUser, Ended, Factor, StoreError, User, UserDeletion, UserPatch,
};

/// `createUser` and `updateUserById`'s attributes (GoTrue's `AdminUserParams`).
#[derive(Default)]
pub struct AdminUserInput {
    /// The address (required to create).
    pub email: Option<String>,
    /// A password, checked against the password policy.
    pub password: Option<String>,
    /// Confirm the address at once.
    pub email_confirm: bool,
    /// Metadata: set as given at creation, merged into the old on update (null removes a key).
    pub user_metadata: Option<Value>,
    /// Provider metadata, merged the same way.
    pub app_metadata: Option<Value>,
    /// A Go duration (`24h`, `1h30m`) from now, or `none` to lift a ban.
    pub ban_duration: Option<String>,
    /// A password's existing hash (bcrypt or argon2) instead of `password`, kept as it is:
    /// the first password sign-in replaces a bcrypt one by argon2id.
    pub password_hash: Option<String>,
}

/// Parses a Go duration (`time.ParseDuration`, which GoTrue's `ban_duration` uses): a
/// sequence of decimal numbers with units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`; `0` alone
/// is allowed. Returns milliseconds (rounded down); negative durations are refused.
pub fn parse_go_duration(raw: &str) -> Option<i64> {
    let s = raw.strip_prefix('+').unwrap_or(raw);
    if s == "0" {
        return Some(0);
    }
    if s.is_empty() {
        return None;
    }
    let mut total_ns: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total_ns += number * scale;
    }
    // Go's own limit: about 292 years.
    if !total_ns.is_finite() || total_ns > 9.2e18 {
        return None;
    }
    Some((total_ns / 1e6) as i64)
}

/// `patch` merged into `base` as GoTrue merges metadata: each key set, a null removing it.
fn merge(base: &Value, patch: Map<String, Value>) -> Value {
    let mut merged = base.as_object().cloned().unwrap_or_default();
    for (k, v) in patch {
        if v.is_null() {
            merged.remove(&k);
        } else {
            merged.insert(k, v);
        }
    }
    Value::Object(merged)
}

fn object(v: Option<Value>) -> Result<Option<Map<String, Value>>, AccountError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(AccountError::Validation(Invalid::MetadataNotObject)),
    }
}

fn admin_store_error(e: StoreError) -> AccountError {
    match e {
        StoreError::NotFound => AccountError::UserNotFound,
        StoreError::Conflict(_) => AccountError::EmailExists,
        other => other.into(),
    }
}

impl Accounts {
    /// `ban_duration` as `banned_until`: `Some(None)` lifts a ban (`none` or zero).
    fn ban(&self, raw: Option<&str>) -> Result<Option<Option<i64>>, AccountError> {
        let Some(raw) = raw.filter(|r| !r.is_empty()) else {
            return Ok(None);
        };
        if raw == "none" {
            return Ok(Some(None));
        }
        let ms = parse_go_duration(raw).ok_or(AccountError::Validation(Invalid::BanDuration))?;
        if ms == 0 {
            return Ok(Some(None));
        }
        Ok(Some(Some(self.clock.now_ms().saturating_add(ms))))
    }

    /// `listUsers`: page `page` (from 1) of `per_page` users, newest first, and how many
    /// users there are.
    pub async fn admin_list_users(
        &self,
        page: i64,
        per_page: i64,
        audit: &AdminAudit,
    ) -> Result<(Vec<User>, i64), AccountError> {
        let total = self.store.count_users().await?;
        let offset = (page - 1).saturating_mul(per_page);
        let users = self.store.users_newest_first(offset, per_page).await?;
        self.store
            .record_admin_call(
                audit,
                AdminAction::UsersListed,
                None,
                json!({ "page": page, "per_page": per_page }),
            )
            .await?;
        Ok((users, total))
    }

    /// `getUserById`.
    pub async fn admin_get_user(&self, id: &str, audit: &AdminAudit) -> Result<User, AccountError> {
        let user = self
            .store
            .user_by_id(id)
            .await?
            .ok_or(AccountError::UserNotFound)?;
        self.store
            .record_admin_call(audit, AdminAction::UserViewed, Some(id), json!({}))
            .await?;
        Ok(user)
    }

    /// `createUser`: an account with the given address, confirmed with `email_confirm`,
    /// with a password only when one is given (GoTrue makes up one nobody knows).
    pub async fn admin_create_user(
        &self,
        input: AdminUserInput,
        audit: &AdminAudit,
    ) -> Result<User, AccountError> {
        let email = input
            .email
            .filter(|e| !e.trim().is_empty())
            .ok_or(AccountError::Validation(Invalid::NoEmail))?;
        let email = parse_email(&email)?;
        let user_metadata = object(input.user_metadata)?.unwrap_or_default();
        let base = json!({"provider": "email", "providers": ["email"]});
        let app_metadata = match object(input.app_metadata)? {
            Some(patch) => merge(&base, patch),
            None => base,
        };
        let banned_until = self.ban(input.ban_duration.as_deref())?.flatten();
        let given = input.password_hash.filter(|h| !h.is_empty());
        let password_hash = match (input.password.filter(|p| !p.is_empty()), given) {
            (Some(_), Some(_)) => return Err(AccountError::Validation(Invalid::PasswordAndHash)),
            (None, Some(hash)) if crate::auth::password::is_supported_hash(&hash) => Some(hash),
            (None, Some(_)) => return Err(AccountError::Validation(Invalid::PasswordHashFormat)),
            (Some(raw), None) => {
                let password = self.new_password(raw, email.as_str()).await?;
                Some(self.hasher.hash(&password).await?)
            }
            (None, None) => None,
        };
        let new = AdminNewUser {
            id: uuid::Uuid::new_v4().to_string(),
            email: email.as_str().to_string(),
            password_hash,
            confirmed: input.email_confirm,
            user_metadata: Value::Object(user_metadata),
            app_metadata,
            banned_until,
        };
        self.store
            .admin_create_user(&new, audit, AdminAction::UserCreated)
            .await
            .map_err(admin_store_error)
    }

    /// `updateUserById`. A new password or a ban ends every session of the user (returned,
    /// so the caller has every instance's caches forget them).
    pub async fn admin_update_user(
        &self,
        id: &str,
        input: AdminUserInput,
        audit: &AdminAudit,
    ) -> Result<(User, Ended), AccountError> {
        let user = self
            .store
            .user_by_id(id)
            .await?
            .ok_or(AccountError::UserNotFound)?;
        let email = match input.email.filter(|e| !e.trim().is_empty()) {
            Some(raw) => {
                let e = parse_email(&raw)?;
                (e.as_str() != user.email).then(|| e.as_str().to_string())
            }
            None => None,
        };
        let user_metadata = object(input.user_metadata)?.map(|p| merge(&user.user_metadata, p));
        let app_metadata = object(input.app_metadata)?.map(|p| merge(&user.app_metadata, p));
        let banned_until = self.ban(input.ban_duration.as_deref())?;
        let given = input.password_hash.filter(|h| !h.is_empty());
        let password_hash = match (input.password, given) {
            (Some(_), Some(_)) => return Err(AccountError::Validation(Invalid::PasswordAndHash)),
            (None, Some(hash)) if crate::auth::password::is_supported_hash(&hash) => Some(hash),
            (None, Some(_)) => return Err(AccountError::Validation(Invalid::PasswordHashFormat)),
            (Some(raw), None) => {
                let address = email.as_deref().unwrap_or(&user.email);
                let password = self.new_password(raw, address).await?;
                Some(self.hasher.hash(&password).await?)
            }
            (None, None) => None,
        };
        let patch = UserPatch {
            email,
            confirm: input.email_confirm,
            password_hash,
            user_metadata,
            app_metadata,
            banned_until,
        };
        self.store
            .admin_update_user(id, &patch, audit)
            .await
            .map_err(admin_store_error)
    }

    /// `deleteUser`: the user and everything hanging off it; the ended sessions come back.
    /// Refused ([`AccountError::SoleOwner`]) while the user is the only owner of an
    /// organization: it would be left without one (its ownership is transferred, or it is
    /// deleted, first).
    pub async fn admin_delete_user(
        &self,
        id: &str,
        audit: &AdminAudit,
    ) -> Result<Ended, AccountError> {
        match self
            .store
            .admin_delete_user(id, audit)
            .await
            .map_err(admin_store_error)?
        {
            UserDeletion::Deleted(ended) => Ok(ended),
            UserDeletion::SoleOwner { org_id, org_name } => {
                Err(AccountError::SoleOwner { org_id, org_name })
            }
        }
    }

    /// The argon2 hash of a password an admin call sets (`generateLink`'s sign-up), once it
    /// passes the password policy.
    pub async fn admin_password_hash(
        &self,
        raw: String,
        email: &crate::domain::Email,
    ) -> Result<String, AccountError> {
        let password = self.new_password(raw, email.as_str()).await?;
        Ok(self.hasher.hash(&password).await?)
    }

    /// The admin log, newest first: page `page` of `per_page` entries and how many there
    /// are (the read itself is logged first, so it is on the page).
    pub async fn admin_log(
        &self,
        page: i64,
        per_page: i64,
        audit: &AdminAudit,
    ) -> Result<(Vec<crate::store::AdminAuditEntry>, i64), AccountError> {
        self.store
            .record_admin_call(
                audit,
                AdminAction::LogRead,
                None,
                json!({ "page": page, "per_page": per_page }),
            )
            .await?;
        let total = self.store.count_admin_audit().await?;
        let offset = (page - 1).saturating_mul(per_page);
        let entries = self.store.admin_audit_log(None, per_page, offset).await?;
        Ok((entries, total))
    }

    /// `mfa.listFactors`: the user's factors, oldest first (verified or not).
    pub async fn admin_list_factors(
        &self,
        user_id: &str,
        audit: &AdminAudit,
    ) -> Result<Vec<Factor>, AccountError> {
        self.store
            .user_by_id(user_id)
            .await?
            .ok_or(AccountError::UserNotFound)?;
        let factors = self.store.mfa_factors(user_id).await?;
        self.store
            .record_admin_call(
                audit,
                AdminAction::FactorsListed,
                Some(user_id),
                json!({ "count": factors.len() }),
            )
            .await?;
        Ok(factors)
    }

    /// `mfa.deleteFactor`: removes one of the user's factors, verified or not (no aal2
    /// needed: the service key is the operator). Sessions it made aal2 are aal1 at their next
    /// refresh. `Ok(None)`: the user has no such factor.
    pub async fn admin_delete_factor(
        &self,
        user_id: &str,
        factor_id: &str,
        audit: &AdminAudit,
    ) -> Result<Option<Factor>, AccountError> {
        self.store
            .user_by_id(user_id)
            .await?
            .ok_or(AccountError::UserNotFound)?;
        Ok(self
            .store
            .admin_delete_mfa_factor(user_id, factor_id, audit)
            .await?)
    }

    /// Records an admin call whose work another service did (a link, an invitation, a
    /// sign-out).
    pub async fn admin_record(
        &self,
        audit: &AdminAudit,
        action: AdminAction,
        target: Option<&str>,
        details: Value,
    ) -> Result<(), AccountError> {
        Ok(self
            .store
            .record_admin_call(audit, action, target, details)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_go_duration;

    #[test]
    fn go_durations_parse_as_go_parses_them() {
        assert_eq!(parse_go_duration("24h"), Some(86_400_000));
        assert_eq!(parse_go_duration("1h30m"), Some(5_400_000));
        assert_eq!(parse_go_duration("1.5h"), Some(5_400_000));
        assert_eq!(parse_go_duration("300ms"), Some(300));
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("+2s"), Some(2000));
        for bad in [
            "",
            "h",
            "24",
            "-1h",
            "1d",
            "1h x",
            "1e3h",
            "99999999999999h",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }
}
