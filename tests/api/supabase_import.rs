//! Moving in from Supabase: `gatehouse import supabase` against a PostgreSQL database laid
//! out as GoTrue's migrations lay out `auth.users` and `auth.identities`, holding bcrypt hashes
//! made by another library; the imported users then sign in with their old passwords.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Client;
use serde_json::{json, Value};
use sqlx::Row;

use crate::helpers::{sql, tempdir, Db, TestDb, PK};
use crate::process::{command, start_with};

/// A subset of GoTrue's `auth` schema, written from the column definitions of
/// supabase/auth's migrations (the init schema, the renames to `email_confirmed_at` and
/// `provider_id`, and the columns added later: phone, bans, soft deletion, SSO, anonymous
/// users). The generated columns are GoTrue's too.
const AUTH_SCHEMA: &str = r#"
CREATE SCHEMA auth;
CREATE TABLE auth.users (
    instance_id uuid NULL,
    id uuid NOT NULL PRIMARY KEY,
    aud varchar(255) NULL,
    "role" varchar(255) NULL,
    email varchar(255) NULL,
    encrypted_password varchar(255) NULL,
    email_confirmed_at timestamptz NULL,
    invited_at timestamptz NULL,
    confirmation_token varchar(255) NULL,
    confirmation_sent_at timestamptz NULL,
    recovery_token varchar(255) NULL,
    recovery_sent_at timestamptz NULL,
    email_change_token_new varchar(255) NULL,
    email_change varchar(255) NULL,
    email_change_sent_at timestamptz NULL,
    last_sign_in_at timestamptz NULL,
    raw_app_meta_data jsonb NULL,
    raw_user_meta_data jsonb NULL,
    is_super_admin bool NULL,
    created_at timestamptz NULL,
    updated_at timestamptz NULL,
    phone text NULL UNIQUE DEFAULT NULL,
    phone_confirmed_at timestamptz NULL DEFAULT NULL,
    phone_change text NULL DEFAULT '',
    phone_change_token varchar(255) NULL DEFAULT '',
    phone_change_sent_at timestamptz NULL DEFAULT NULL,
    confirmed_at timestamptz GENERATED ALWAYS AS (LEAST(email_confirmed_at, phone_confirmed_at)) STORED,
    email_change_token_current varchar(255) NULL DEFAULT '',
    email_change_confirm_status smallint DEFAULT 0,
    banned_until timestamptz NULL,
    reauthentication_token varchar(255) NULL DEFAULT '',
    reauthentication_sent_at timestamptz NULL DEFAULT NULL,
    is_sso_user boolean NOT NULL DEFAULT false,
    deleted_at timestamptz NULL,
    is_anonymous boolean NOT NULL DEFAULT false
);
CREATE TABLE auth.identities (
    provider_id text NOT NULL,
    user_id uuid NOT NULL REFERENCES auth.users(id) ON DELETE CASCADE,
    identity_data jsonb NOT NULL,
    provider text NOT NULL,
    last_sign_in_at timestamptz NULL,
    created_at timestamptz NULL,
    updated_at timestamptz NULL,
    email text GENERATED ALWAYS AS (lower(identity_data->>'email')) STORED,
    id uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    CONSTRAINT identities_provider_id_provider_unique UNIQUE (provider_id, provider)
);
"#;

/// A bcrypt hash of `password` with GoTrue's cost (10) and the given prefix (`2a`, GoTrue's,
/// or `2b`), made by Python's `bcrypt` from PyPI when it is installed; otherwise the same
/// library's output for the test's two passwords, made once and kept here.
fn bcrypt(password: &str, prefix: &str) -> String {
    let made = std::process::Command::new("python3")
        .args([
            "-c",
            "import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), \
             bcrypt.gensalt(10, prefix=sys.argv[2].encode())).decode())",
            password,
            prefix,
        ])
        .output();
    if let Ok(out) = made {
        if out.status.success() {
            return String::from_utf8(out.stdout).unwrap().trim().to_string();
        }
    }
    match (password, prefix) {
        ("supabase password one", "2a") => {
            "$2a$10$p/lb/n2ikDG1bcpy4xFQFO0d6OLqGxZOc.2WFnR9gXNMDP.ZP0dDS".into()
        }
        ("supabase password two", "2b") => {
            "$2b$10$xozTkO/jp5P3ZF0g7W7oNekBpG.qVk0PcQ.zw6HV6MQrxKuvmubS2".into()
        }
        _ => panic!("no kept bcrypt hash for {password:?} with ${prefix}$"),
    }
}

/// A user row of the source database: (id, email, hash, confirmed, user metadata, app
/// metadata, deleted, anonymous).
type SourceUser<'a> = (
    &'a str,
    Option<&'a str>,
    &'a str,
    bool,
    Value,
    String,
    bool,
    bool,
);

const ALICE: &str = "0b6c3f5e-9d41-4e8a-b0a7-1c2d3e4f5a61";
const BOB: &str = "1c7d4a6f-0e52-4f9b-81b8-2d3e4f5a6b72";
const CAROL: &str = "2d8e5b7a-1f63-4a0c-92c9-3e4f5a6b7c83";
const GINA: &str = "3e9f6c8b-2a74-4b1d-a3da-4f5a6b7c8d94";

async fn fill(url: &str) {
    let pool = sql(url).await;
    for statement in AUTH_SCHEMA.split(';').filter(|s| !s.trim().is_empty()) {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let one = bcrypt("supabase password one", "2a");
    let two = bcrypt("supabase password two", "2b");
    let email_app = json!({"provider": "email", "providers": ["email"]}).to_string();
    let users: [SourceUser; 7] = [
        (
            ALICE,
            Some("alice@example.com"),
            &one,
            true,
            json!({"name": "Alice", "plan": "pro"}),
            email_app.clone(),
            false,
            false,
        ),
        (
            BOB,
            Some("bob@example.com"),
            &two,
            true,
            json!({}),
            json!({"provider": "email", "providers": ["email", "google"]}).to_string(),
            false,
            false,
        ),
        (
            CAROL,
            Some("carol@example.com"),
            &one,
            false,
            json!({}),
            email_app.clone(),
            false,
            false,
        ),
        (
            GINA,
            Some("gina@example.com"),
            "",
            true,
            json!({"avatar": "g.png"}),
            json!({"provider": "google", "providers": ["google"]}).to_string(),
            false,
            false,
        ),
        (
            "4fa07d9c-3b85-4c2e-b4eb-5a6b7c8d9ea5",
            Some("dave@example.com"),
            &one,
            true,
            json!({}),
            email_app.clone(),
            true,
            false,
        ),
        (
            "5ab18ead-4c96-4d3f-85fc-6b7c8d9eafb6",
            None,
            "",
            true,
            json!({}),
            json!({"provider": "phone"}).to_string(),
            false,
            false,
        ),
        (
            "6bc29fbe-5da7-4e40-96ad-7c8d9eafb0c7",
            None,
            "",
            false,
            json!({}),
            json!({}).to_string(),
            false,
            true,
        ),
    ];
    for (i, (id, email, hash, confirmed, meta, app, deleted, anonymous)) in users.iter().enumerate()
    {
        sqlx::query(&format!(
            "INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password, \
             email_confirmed_at, raw_app_meta_data, raw_user_meta_data, created_at, updated_at, \
             deleted_at, is_anonymous, last_sign_in_at) VALUES ('00000000-0000-0000-0000-000000000000', \
             '{id}', 'authenticated', 'authenticated', $1, $2, {}, CAST($3 AS jsonb), CAST($4 AS jsonb), \
             TIMESTAMPTZ '2024-03-0{} 12:00:00+00', now(), {}, {anonymous}, NULL)",
            if *confirmed { "TIMESTAMPTZ '2024-03-10 08:30:00.25+00'" } else { "NULL" },
            i + 1,
            if *deleted { "now()" } else { "NULL" },
        ))
        .bind(*email)
        .bind(*hash)
        .bind(app.as_str())
        .bind(meta.to_string())
        .execute(&pool)
        .await
        .unwrap();
    }
    for (id, provider, provider_id, email) in [
        (ALICE, "email", ALICE, "alice@example.com"),
        (BOB, "email", BOB, "bob@example.com"),
        (BOB, "google", "google-sub-1", "bob@example.com"),
        (CAROL, "email", CAROL, "carol@example.com"),
        (GINA, "google", "google-sub-2", "gina@example.com"),
    ] {
        sqlx::query(&format!(
            "INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at) \
             VALUES ($1, '{id}', CAST($2 AS jsonb), $3, now(), now())"
        ))
        .bind(provider_id)
        .bind(json!({"sub": provider_id, "email": email}).to_string())
        .bind(provider)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
}

fn import(db_url: &str, from: &str, extra: &[&str]) -> (bool, String, String) {
    let out = command(db_url, &[])
        .env("SUPABASE_DB_URL", from)
        .args(["--create", "import", "supabase"])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn sign_in(client: &Client, base: &str, email: &str, password: &str) -> (u16, Value) {
    let res = client
        .post(format!("{base}/auth/v1/token?grant_type=password"))
        .header("apikey", PK)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

/// GoTrue's error code, in either body format.
fn gotrue_code(body: &Value) -> Option<&str> {
    body["error_code"]
        .as_str()
        .or_else(|| body["code"].as_str())
}

async fn stored_hash(db_url: &str, id: &str) -> String {
    let pool = sql(db_url).await;
    let row = sqlx::query("SELECT password_hash FROM users WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    let hash: Option<String> = row.try_get(0).unwrap();
    pool.close().await;
    hash.unwrap_or_default()
}

#[tokio::test]
async fn supabase_users_move_in_with_their_ids_and_sign_in_with_their_old_passwords_on_postgres() {
    let source = TestDb::new(Db::Postgres).await;
    fill(&source.url).await;
    let dir = tempdir::Dir::new();
    let url = format!("sqlite://{}/moved.db", dir.0.display());

    // A dry run reports and writes nothing.
    let (ok, out, err) = import(&url, &source.url, &["--dry-run"]);
    assert!(ok, "{err}");
    assert!(out.contains("dry run: nothing was written"), "{out}");
    assert!(
        out.contains("would import 4 users (3 with their password hash)"),
        "{out}"
    );
    let pool = sql(&url).await;
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    pool.close().await;
    assert_eq!(count, 0, "the dry run wrote users");

    let (ok, out, err) = import(&url, &source.url, &[]);
    assert!(ok, "{err}");
    assert!(out.contains("read 7 users from auth.users"), "{out}");
    assert!(
        out.contains("imported 4 users (3 with their password hash)"),
        "{out}"
    );
    assert!(
        out.contains("skipped: 3 (anonymous 1, deleted 1, no_email 1)"),
        "{out}"
    );
    assert!(
        out.contains("identities of other providers, not imported: google 2"),
        "{out}"
    );
    assert!(
        !out.contains("$2a$") && !err.contains("$2a$"),
        "no hash is printed"
    );

    // Again: nothing new, nothing changed.
    let (ok, out, err) = import(&url, &source.url, &[]);
    assert!(ok, "{err}");
    assert!(out.contains("imported 0 users"), "{out}");
    assert!(
        out.contains("already imported (left as they are): 4"),
        "{out}"
    );

    let server = start_with(&url, &dir, &[]).await;
    let client = Client::new();
    let base = server.base.clone();
    // Alice's GoTrue bcrypt ($2a$) hash verifies; the session is hers, with her metadata.
    let (status, session) =
        sign_in(&client, &base, "alice@example.com", "supabase password one").await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["user"]["id"], ALICE);
    assert_eq!(
        session["user"]["user_metadata"],
        json!({"name": "Alice", "plan": "pro"})
    );
    assert_eq!(session["user"]["app_metadata"]["provider"], "email");
    let confirmed = session["user"]["email_confirmed_at"].as_str().unwrap();
    assert!(
        confirmed.starts_with("2024-03-10T08:30:00.25"),
        "{confirmed}"
    );
    let me = client
        .get(format!("{base}/auth/v1/user"))
        .header("apikey", PK)
        .bearer_auth(session["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    assert_eq!(me.json::<Value>().await.unwrap()["id"], ALICE);
    // The sign-in replaced the bcrypt hash by argon2id, which verifies the same password.
    assert!(stored_hash(&url, ALICE).await.starts_with("$argon2id$"));
    let (status, _) = sign_in(&client, &base, "alice@example.com", "supabase password one").await;
    assert_eq!(status, 200);
    // A wrong password fails and upgrades nothing.
    let (status, body) = sign_in(&client, &base, "bob@example.com", "supabase password one").await;
    assert_eq!(
        (status, gotrue_code(&body)),
        (400, Some("invalid_credentials")),
        "{body}"
    );
    assert!(stored_hash(&url, BOB).await.starts_with("$2b$"));
    let (status, session) =
        sign_in(&client, &base, "bob@example.com", "supabase password two").await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["user"]["id"], BOB);
    // Carol never confirmed her address, and still has not.
    let (status, body) =
        sign_in(&client, &base, "carol@example.com", "supabase password one").await;
    assert_eq!(
        (status, gotrue_code(&body)),
        (400, Some("email_not_confirmed")),
        "{body}"
    );
    // Gina signed in with Google only: she has no password here.
    let (status, _) = sign_in(&client, &base, "gina@example.com", "").await;
    assert_eq!(status, 400);
    assert_eq!(stored_hash(&url, GINA).await, "");
    drop(server);
    source.cleanup().await;
}
