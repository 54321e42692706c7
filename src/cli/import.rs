//! `gatehouse import supabase`: reads `auth.users` and `auth.identities` of a Supabase
//! (GoTrue) database and creates the users here with their ids, emails, confirmation, metadata
//! and password hashes. GoTrue's bcrypt hashes verify at the user's next sign-in, which then
//! replaces them by argon2id.
//!
//! Rows are read as `to_jsonb(row)`, so the columns that GoTrue added over the years
//! (`deleted_at`, `is_anonymous`, `banned_until`, identities' `provider_id`) are read when they
//! exist and missing ones count as unset, whatever the source's version.

use std::collections::BTreeMap;

use futures_util::TryStreamExt;
use serde_json::{json, Value};
use sqlx::{Connection, Row};

use crate::auth::password::is_bcrypt;
use crate::store::{ImportOutcome, ImportedUser, Store};

/// What an import did (or, in a dry run, would do).
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    /// Rows of `auth.users`.
    pub read: u64,
    /// Users created.
    pub imported: u64,
    /// Of those, with the password hash they had.
    pub with_password: u64,
    /// Already here from an earlier run, left as they are.
    pub already_imported: u64,
    /// Left out, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    /// Users whose password hash is of a kind Gatehouse cannot verify: imported without a
    /// password (they sign in by email link or recover their password).
    pub password_not_imported: u64,
    /// Identities of providers other than email (Google, GitHub, …), by provider: their users
    /// are imported, the identities are not (sign-in by email still works).
    pub other_identities: BTreeMap<String, u64>,
}

/// Why a user of the source is left out.
fn skip_reason(u: &Value, now_ms: i64) -> Option<&'static str> {
    if !u["deleted_at"].is_null() {
        return Some("deleted");
    }
    if u["is_anonymous"].as_bool() == Some(true) {
        return Some("anonymous");
    }
    // Importing a banned user as a plain account would lift the ban.
    if ms(&u["banned_until"]).is_some_and(|until| until > now_ms) {
        return Some("banned");
    }
    match u["email"].as_str() {
        None | Some("") => Some("no_email"),
        Some(e) if crate::domain::Email::parse(e).is_err() => Some("invalid_email"),
        Some(_) => None,
    }
}

/// A timestamp of `to_jsonb` (`2024-05-01T10:00:00.123456+00:00`) as unix ms.
fn ms(v: &Value) -> Option<i64> {
    let s = v.as_str()?;
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

fn object(v: &Value) -> Value {
    match v {
        Value::Object(_) => v.clone(),
        _ => json!({}),
    }
}

/// The user as Gatehouse stores them, or why not.
fn convert(
    u: &Value,
    providers: &[String],
    now_ms: i64,
) -> Result<(ImportedUser, bool), &'static str> {
    if let Some(reason) = skip_reason(u, now_ms) {
        return Err(reason);
    }
    let id = u["id"].as_str().ok_or("no_id")?;
    let id = uuid::Uuid::parse_str(id).map_err(|_| "no_id")?.to_string();
    let email = crate::domain::Email::parse(u["email"].as_str().unwrap_or_default())
        .map_err(|_| "invalid_email")?;
    let hash = u["encrypted_password"].as_str().unwrap_or_default();
    let usable = is_bcrypt(hash) || hash.starts_with("$argon2");
    let mut app_metadata = object(&u["raw_app_meta_data"]);
    if app_metadata.get("providers").is_none() && !providers.is_empty() {
        app_metadata["providers"] = json!(providers);
    }
    let created_at = ms(&u["created_at"]).unwrap_or(now_ms);
    let user = ImportedUser {
        id,
        email: email.as_str().to_string(),
        password_hash: usable.then(|| hash.to_string()),
        email_confirmed_at: ms(&u["email_confirmed_at"]),
        last_sign_in_at: ms(&u["last_sign_in_at"]),
        user_metadata: object(&u["raw_user_meta_data"]),
        app_metadata,
        created_at,
        updated_at: ms(&u["updated_at"]).unwrap_or(created_at),
    };
    Ok((user, !hash.is_empty() && !usable))
}

/// Connects to the Supabase database at `from` and imports its users into `store`.
pub async fn supabase(
    store: &Store,
    from: &str,
    dry_run: bool,
    now_ms: i64,
) -> anyhow::Result<Summary> {
    let where_ = crate::store::describe(from);
    let mut conn = sqlx::postgres::PgConnection::connect(from)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {where_}: {e}"))?;
    let tables: (bool, bool) = {
        let row = sqlx::query(
            "SELECT to_regclass('auth.users') IS NOT NULL, to_regclass('auth.identities') IS NOT NULL",
        )
        .fetch_one(&mut conn)
        .await?;
        (row.try_get(0)?, row.try_get(1)?)
    };
    if !tables.0 {
        anyhow::bail!("{where_} has no auth.users table: is it a Supabase database?");
    }
    let mut summary = Summary::default();
    // Providers per user, from auth.identities.
    let mut providers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if tables.1 {
        let mut rows =
            sqlx::query("SELECT to_jsonb(i)::text FROM auth.identities i").fetch(&mut conn);
        while let Some(row) = rows.try_next().await? {
            let i: Value = serde_json::from_str(&row.try_get::<String, _>(0)?)?;
            let (Some(user), Some(provider)) = (i["user_id"].as_str(), i["provider"].as_str())
            else {
                continue;
            };
            if provider != "email" {
                *summary
                    .other_identities
                    .entry(provider.to_string())
                    .or_default() += 1;
            }
            providers
                .entry(user.to_string())
                .or_default()
                .push(provider.to_string());
        }
    }
    let mut rows =
        sqlx::query("SELECT to_jsonb(u)::text FROM auth.users u ORDER BY u.created_at, u.id")
            .fetch(&mut conn);
    while let Some(row) = rows.try_next().await? {
        summary.read += 1;
        let u: Value = serde_json::from_str(&row.try_get::<String, _>(0)?)?;
        let id = u["id"].as_str().unwrap_or("?").to_string();
        let no_providers = Vec::new();
        let theirs = providers.get(&id).unwrap_or(&no_providers);
        let (user, hash_dropped) = match convert(&u, theirs, now_ms) {
            Ok(converted) => converted,
            Err(reason) => {
                eprintln!("skipped {id}: {reason}");
                *summary.skipped.entry(reason).or_default() += 1;
                continue;
            }
        };
        match store.import_user(&user, dry_run).await? {
            ImportOutcome::Created => {
                summary.imported += 1;
                summary.with_password += u64::from(user.password_hash.is_some());
                summary.password_not_imported += u64::from(hash_dropped);
            }
            ImportOutcome::AlreadyThere => summary.already_imported += 1,
            ImportOutcome::EmailTaken => {
                eprintln!("skipped {id}: another user here has its email");
                *summary.skipped.entry("email_taken").or_default() += 1;
            }
        }
    }
    drop(rows);
    let _ = conn.close().await;
    Ok(summary)
}

/// The summary for people, one fact a line.
pub fn print(s: &Summary, dry_run: bool) {
    let verb = if dry_run { "would import" } else { "imported" };
    if dry_run {
        println!("dry run: nothing was written");
    }
    println!("read {} users from auth.users", s.read);
    println!(
        "{verb} {} users ({} with their password hash)",
        s.imported, s.with_password
    );
    println!(
        "already imported (left as they are): {}",
        s.already_imported
    );
    let skipped: u64 = s.skipped.values().sum();
    let reasons: Vec<String> = s.skipped.iter().map(|(r, n)| format!("{r} {n}")).collect();
    println!("skipped: {skipped} ({})", reasons.join(", "));
    if s.password_not_imported > 0 {
        println!(
            "password hashes of an unknown kind, not imported: {} (those users sign in by \
             email link or password recovery)",
            s.password_not_imported
        );
    }
    if !s.other_identities.is_empty() {
        let list: Vec<String> = s
            .other_identities
            .iter()
            .map(|(p, n)| format!("{p} {n}"))
            .collect();
        println!(
            "identities of other providers, not imported: {} (their users sign in by email)",
            list.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_gatehouse_cannot_hold_as_accounts_are_left_out() {
        let now = 1_700_000_000_000;
        let base = json!({"id": "6f1b7c9e-8a54-4c7e-9a43-2f1d0f6b8a11", "email": "A@Example.com",
            "encrypted_password": "$2a$10$p/lb/n2ikDG1bcpy4xFQFO0d6OLqGxZOc.2WFnR9gXNMDP.ZP0dDS",
            "email_confirmed_at": "2024-05-01T10:00:00.5+00:00", "created_at": "2024-04-30T09:00:00+00:00",
            "raw_user_meta_data": {"name": "A"}});
        let (u, dropped) = convert(&base, &["email".into()], now).unwrap();
        assert_eq!(u.email, "a@example.com");
        assert_eq!(u.email_confirmed_at, Some(1_714_557_600_500));
        assert_eq!(u.updated_at, u.created_at);
        assert_eq!(u.app_metadata, json!({"providers": ["email"]}));
        assert!(u.password_hash.is_some() && !dropped);
        let with = |k: &str, v: Value| {
            let mut u = base.clone();
            u[k] = v;
            convert(&u, &[], now).map(|(_, d)| d)
        };
        assert_eq!(
            with("deleted_at", json!("2024-06-01T00:00:00+00:00")).err(),
            Some("deleted")
        );
        assert_eq!(with("is_anonymous", json!(true)).err(), Some("anonymous"));
        assert_eq!(
            with("banned_until", json!("2999-01-01T00:00:00+00:00")).err(),
            Some("banned")
        );
        assert_eq!(
            with("banned_until", json!("2001-01-01T00:00:00+00:00")),
            Ok(false)
        );
        assert_eq!(with("email", Value::Null).err(), Some("no_email"));
        assert_eq!(
            with("email", json!("not an address")).err(),
            Some("invalid_email")
        );
        assert_eq!(with("encrypted_password", json!("")), Ok(false));
        assert_eq!(with("encrypted_password", json!("sha1$abc")), Ok(true));
    }
}
