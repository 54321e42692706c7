//! The admin API (`/auth/v1/admin`, `supabase.auth.admin`) with a service key, and bans.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{parts, sql, TestApp, PK};
use crate::story;

/// A long enough configured secret service key.
const SECRET: &str = "service-secret-0123456789abcdef-0123456789";

fn service_key(app: &TestApp) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    app.state.accounts.jwt.sign_service(now, 3600).unwrap()
}

/// A request to `/auth/v1{path}` the way an admin client sends it: the service key as
/// `apikey` and as the bearer token.
fn admin(app: &TestApp, key: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.client
        .request(method, app.url(&format!("/auth/v1{path}")))
        .header("apikey", key)
        .header("x-supabase-api-version", "2024-01-01")
        .bearer_auth(key)
}

async fn create(app: &TestApp, key: &str, body: Value) -> Value {
    let (status, user) = parts(
        admin(app, key, Method::POST, "/admin/users")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{user}");
    user
}

story!(
    the_admin_api_takes_a_service_key_and_never_the_publishable_key,
    |c: &mut gatehouse::config::Config| c.service_key = Some(SECRET.to_string().into()),
    |app: TestApp| async move {
        let jwt = service_key(&app);
        let (_, _, session) = app.new_user().await;
        let user_token = session["access_token"].as_str().unwrap().to_string();
        // No bearer token: 401 no_authorization, GoTrue's shape.
        let (status, body) =
            parts(app.auth(Method::GET, "/admin/users").send().await.unwrap()).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("no_authorization")),
            "{body}"
        );
        assert!(body["message"].is_string());
        // The publishable key, a user's access token, garbage: 403 not_admin.
        for bearer in [
            PK,
            user_token.as_str(),
            "not-a-key",
            &SECRET[..SECRET.len() - 1],
        ] {
            let res = app
                .auth(Method::GET, "/admin/users")
                .bearer_auth(bearer)
                .send()
                .await
                .unwrap();
            let (status, body) = parts(res).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (403, Some("not_admin")),
                "{bearer}: {body}"
            );
            assert_eq!(body["message"], "User not allowed");
        }
        // The legacy error shape too.
        let res = app
            .client
            .get(app.url("/auth/v1/admin/users"))
            .header("apikey", PK)
            .bearer_auth(PK)
            .send()
            .await
            .unwrap();
        let (status, body) = parts(res).await;
        assert_eq!(
            (status, body["error_code"].as_str(), body["code"].as_u64()),
            (403, Some("not_admin"), Some(403))
        );
        // A service key as apikey alone is no admin credential.
        let res = app
            .client
            .get(app.url("/auth/v1/admin/users"))
            .header("apikey", jwt.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        // Both kinds of service key work, with the publishable key or the service key as apikey.
        for key in [jwt.as_str(), SECRET] {
            let res = app
                .auth(Method::GET, "/admin/users")
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let res = admin(&app, key, Method::GET, "/admin/users")
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
        // Without apikey the gate still answers first.
        let res = app
            .client
            .get(app.url("/auth/v1/admin/users"))
            .bearer_auth(jwt.as_str())
            .send()
            .await
            .unwrap();
        let (status, body) = parts(res).await;
        assert_eq!(
            (status, body["error_code"].as_str()),
            (401, Some("no_api_key"))
        );
        // Every call is in the admin log, with the key kind as actor.
        let log = app
            .state
            .accounts
            .store
            .admin_audit_log(None, 50, 0)
            .await
            .unwrap();
        let actors: Vec<&str> = log.iter().map(|e| e.actor.as_str()).collect();
        assert!(
            actors.contains(&"service_key:jwt") && actors.contains(&"service_key:secret"),
            "{actors:?}"
        );
        assert!(log.iter().all(|e| e.action == "users.listed"));
        app
    }
);

story!(
    list_users_pages_with_gotrues_headers,
    |app: TestApp| async move {
        let key = service_key(&app);
        let mut ids = Vec::new();
        for i in 0..5 {
            let u = create(
                &app,
                &key,
                json!({"email": format!("page-{i}@example.com"), "email_confirm": true}),
            )
            .await;
            ids.push(u["id"].as_str().unwrap().to_string());
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        let res = admin(&app, &key, Method::GET, "/admin/users?page=1&per_page=2")
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["x-total-count"], "5");
        let link = res.headers()["link"].to_str().unwrap().to_string();
        assert!(link.contains("page=2&per_page=2>; rel=\"next\""), "{link}");
        assert!(link.contains("page=3&per_page=2>; rel=\"last\""), "{link}");
        let (_, body) = parts(res).await;
        assert_eq!(body["aud"], "authenticated");
        let first: Vec<&str> = body["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap())
            .collect();
        // Newest first.
        assert_eq!(first, vec![ids[4].as_str(), ids[3].as_str()]);
        let res = admin(&app, &key, Method::GET, "/admin/users?page=3&per_page=2")
            .send()
            .await
            .unwrap();
        let link = res.headers()["link"].to_str().unwrap().to_string();
        assert!(!link.contains("next"), "{link}");
        let (_, body) = parts(res).await;
        assert_eq!(body["users"].as_array().unwrap().len(), 1);
        assert_eq!(body["users"][0]["id"], json!(ids[0]));
        for bad in ["page=0", "per_page=0", "per_page=1001", "page=x"] {
            let (status, body) = parts(
                admin(&app, &key, Method::GET, &format!("/admin/users?{bad}"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(
                (status, body["code"].as_str()),
                (400, Some("validation_failed")),
                "{bad}"
            );
        }
        app
    }
);

story!(
    admin_creates_reads_updates_and_deletes_users,
    |app: TestApp| async move {
        let key = service_key(&app);
        let user = create(
            &app,
            &key,
            json!({"email": "Made@Example.com", "password": "correct horse battery", "email_confirm": true,
                   "user_metadata": {"name": "Ann"}, "app_metadata": {"plan": "pro"}}),
        )
        .await;
        let id = user["id"].as_str().unwrap().to_string();
        assert_eq!(user["email"], "made@example.com");
        assert!(user["email_confirmed_at"].is_string());
        assert_eq!(user["user_metadata"], json!({"name": "Ann"}));
        assert_eq!(
            user["app_metadata"],
            json!({"provider": "email", "providers": ["email"], "plan": "pro"})
        );
        assert_eq!(
            app.sign_in("made@example.com", "correct horse battery")
                .await
                .status(),
            200
        );
        // The same address again, a weak password, a bad id, an unknown id.
        let (status, body) = parts(
            admin(&app, &key, Method::POST, "/admin/users")
                .json(&json!({"email": "made@example.com"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (422, Some("email_exists")));
        let (status, body) = parts(
            admin(&app, &key, Method::POST, "/admin/users")
                .json(&json!({"email": "weak@example.com", "password": "abc"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (422, Some("weak_password"))
        );
        let (status, body) = parts(
            admin(&app, &key, Method::GET, "/admin/users/not-a-uuid")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("validation_failed"))
        );
        let unknown = uuid::Uuid::new_v4();
        let (status, body) = parts(
            admin(&app, &key, Method::GET, &format!("/admin/users/{unknown}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("user_not_found"))
        );
        // Read, then merge metadata (null removes a key) and change the password.
        let (status, got) = parts(
            admin(&app, &key, Method::GET, &format!("/admin/users/{id}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, &got["email"]), (200, &json!("made@example.com")));
        let (status, updated) = parts(
            admin(&app, &key, Method::PUT, &format!("/admin/users/{id}"))
                .json(&json!({"user_metadata": {"name": null, "team": "blue"}, "password": "another good password"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{updated}");
        assert_eq!(updated["user_metadata"], json!({"team": "blue"}));
        assert_eq!(
            app.sign_in("made@example.com", "correct horse battery")
                .await
                .status(),
            400
        );
        assert_eq!(
            app.sign_in("made@example.com", "another good password")
                .await
                .status(),
            200
        );
        // Delete: gone, and so is its sign-in.
        let (status, body) = parts(
            admin(&app, &key, Method::DELETE, &format!("/admin/users/{id}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, body), (200, json!({})));
        assert_eq!(
            app.sign_in("made@example.com", "another good password")
                .await
                .status(),
            400
        );
        let res = admin(&app, &key, Method::GET, &format!("/admin/users/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
        let log = app
            .state
            .accounts
            .store
            .admin_audit_log(None, 50, 0)
            .await
            .unwrap();
        let actions: Vec<&str> = log.iter().rev().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            vec![
                "user.created",
                "user.viewed",
                "user.updated",
                "user.deleted"
            ]
        );
        // The same log over HTTP, in GoTrue's audit shape, this read first.
        let res = admin(&app, &key, Method::GET, "/admin/audit?per_page=2")
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["x-total-count"], "5");
        let (status, page) = parts(res).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page.as_array().unwrap().len(), 2);
        assert_eq!(page[0]["payload"]["action"], "admin_log.read");
        assert_eq!(page[1]["payload"]["action"], "user.deleted");
        assert_eq!(page[1]["payload"]["actor_username"], "service_key:jwt");
        assert_eq!(page[1]["payload"]["target"], json!(id));
        assert_eq!(page[1]["ip_address"], "127.0.0.1");
        let res = app
            .auth(Method::GET, "/admin/audit")
            .bearer_auth(PK)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        let deleted = &log[0];
        assert_eq!(
            (deleted.target.as_deref(), &deleted.details["email"]),
            (Some(id.as_str()), &json!("made@example.com"))
        );
        let updated = &log[1];
        assert_eq!(
            updated.details["changed"],
            json!(["password", "user_metadata"])
        );
        assert!(!updated
            .details
            .to_string()
            .contains("another good password"));
        app
    }
);

story!(
    a_banned_user_cannot_sign_in_or_refresh_until_unbanned,
    |app: TestApp| async move {
        let key = service_key(&app);
        let (email, password, session) = app.new_user().await;
        let id = session["user"]["id"].as_str().unwrap().to_string();
        let refresh = session["refresh_token"].as_str().unwrap().to_string();
        let (status, bad) = parts(
            admin(&app, &key, Method::PUT, &format!("/admin/users/{id}"))
                .json(&json!({"ban_duration": "1 day"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, bad["code"].as_str()),
            (400, Some("validation_failed"))
        );
        let (status, banned) = parts(
            admin(&app, &key, Method::PUT, &format!("/admin/users/{id}"))
                .json(&json!({"ban_duration": "24h"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{banned}");
        let until = chrono_like_secs(banned["banned_until"].as_str().unwrap());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((until - now - 86_400).abs() < 60, "{banned}");
        // Sign-in: user_banned. The ban ended the sessions: the refresh token is dead, the
        // access token too.
        let (status, body) = parts(app.sign_in(&email, &password).await).await;
        assert_eq!(
            (status, body["code"].as_str(), body["message"].as_str()),
            (400, Some("user_banned"), Some("User is banned"))
        );
        let (status, _) = parts(app.refresh(&refresh).await).await;
        assert_eq!(status, 400);
        let res = app
            .auth(Method::GET, "/user")
            .bearer_auth(session["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        // Lifted: signs in again.
        let (status, lifted) = parts(
            admin(&app, &key, Method::PUT, &format!("/admin/users/{id}"))
                .json(&json!({"ban_duration": "none"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        assert!(lifted.get("banned_until").is_none(), "{lifted}");
        let (status, again) = parts(app.sign_in(&email, &password).await).await;
        assert_eq!(status, 200);
        // A ban that reaches a live session some other way (set in storage) still refuses
        // its refresh, before anything rotates.
        let pool = sql(&app.db.url).await;
        sqlx::query("UPDATE users SET banned_until = $1 WHERE id = $2")
            .bind((now + 3600) * 1000)
            .bind(&id)
            .execute(&pool)
            .await
            .unwrap();
        let (status, body) =
            parts(app.refresh(again["refresh_token"].as_str().unwrap()).await).await;
        assert_eq!(
            (status, body["code"].as_str(), body["message"].as_str()),
            (
                400,
                Some("user_banned"),
                Some("Invalid Refresh Token: User Banned")
            )
        );
        pool.close().await;
        // A user created banned cannot sign in either.
        create(&app, &key, json!({"email": "born-banned@example.com", "password": "correct horse battery", "email_confirm": true, "ban_duration": "1h30m"})).await;
        let (status, body) = parts(
            app.sign_in("born-banned@example.com", "correct horse battery")
                .await,
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (400, Some("user_banned")));
        app
    }
);

/// Unix seconds of an RFC 3339 UTC time as the server writes it (`2026-01-02T03:04:05.678Z`).
fn chrono_like_secs(s: &str) -> i64 {
    let t = time_parse(s);
    t.unwrap_or_else(|| panic!("not a time: {s}"))
}

fn time_parse(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = rest.trim_end_matches('Z').split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec = t.next()?.split('.').next()?.parse::<i64>().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + min * 60 + sec)
}

story!(
    generate_link_makes_links_that_work_and_mails_nothing,
    |app: TestApp| async move {
        let key = service_key(&app);
        let (email, _, _) = app.new_user().await;
        let pool = sql(&app.db.url).await;
        let mails = |pool: sqlx::AnyPool| async move {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM mail_outbox")
                .fetch_one(&pool)
                .await
                .unwrap();
            n
        };
        let before = mails(pool.clone()).await;
        let (status, link) = parts(
            admin(&app, &key, Method::POST, "/admin/generate_link")
                .json(&json!({"type": "magiclink", "email": email}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{link}");
        assert_eq!(link["verification_type"], "magiclink");
        assert_eq!(link["email"], json!(email));
        assert_eq!(link["email_otp"].as_str().unwrap().len(), 6);
        let action = link["action_link"].as_str().unwrap();
        assert!(
            action.starts_with(&format!("{}/auth/v1/verify?token=", app.base)),
            "{action}"
        );
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let res = browser.get(action).send().await.unwrap();
        assert_eq!(res.status(), 303);
        let location = res.headers()["location"].to_str().unwrap().to_string();
        assert!(location.contains("#access_token="), "{location}");
        // A new address: a sign-up link with the password given; its token signs in.
        let (status, signup) = parts(admin(&app, &key, Method::POST, "/admin/generate_link").json(&json!({"type": "signup", "email": "linked@example.com", "password": "correct horse battery", "data": {"from": "admin"}})).send().await.unwrap()).await;
        assert_eq!(status, 200, "{signup}");
        assert_eq!(signup["user"], Value::Null);
        assert_eq!(signup["user_metadata"], json!({"from": "admin"}));
        assert!(signup["email_confirmed_at"].is_null());
        let (status, session) = parts(
            app.auth(Method::POST, "/verify")
                .json(&json!({"type": "signup", "token_hash": signup["hashed_token"]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{session}");
        assert_eq!(
            app.sign_in("linked@example.com", "correct horse battery")
                .await
                .status(),
            200
        );
        // A confirmed address gets no sign-up or invite link; recovery needs an account.
        for t in ["signup", "invite"] {
            let (status, body) = parts(
                admin(&app, &key, Method::POST, "/admin/generate_link")
                    .json(&json!({"type": t, "email": email, "password": "correct horse battery"}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(
                (status, body["code"].as_str()),
                (422, Some("email_exists")),
                "{t}"
            );
        }
        let (status, body) = parts(
            admin(&app, &key, Method::POST, "/admin/generate_link")
                .json(&json!({"type": "recovery", "email": "nobody@example.com"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("user_not_found"))
        );
        let (status, body) = parts(
            admin(&app, &key, Method::POST, "/admin/generate_link")
                .json(&json!({"type": "sms", "email": email}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("validation_failed"))
        );
        // An email change (both addresses confirm, `email_change_double_confirm`): the two
        // links made one after the other both stay valid.
        let mut hashes = Vec::new();
        for t in ["email_change_new", "email_change_current"] {
            let (status, change) = parts(
                admin(&app, &key, Method::POST, "/admin/generate_link")
                    .json(&json!({"type": t, "email": email, "new_email": "moved@example.com"}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, 200, "{change}");
            assert_eq!(change["verification_type"], t);
            hashes.push(change["hashed_token"].clone());
        }
        let (status, pending) = parts(
            app.auth(Method::POST, "/verify")
                .json(&json!({"type": "email_change", "token_hash": hashes[0]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, pending["code"].as_u64()),
            (200, Some(200)),
            "{pending}"
        );
        let (status, moved) = parts(
            app.auth(Method::POST, "/verify")
                .json(&json!({"type": "email_change", "token_hash": hashes[1]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{moved}");
        assert_eq!(moved["user"]["email"], "moved@example.com");
        assert_eq!(
            mails(pool.clone()).await,
            before,
            "generate_link mails nothing"
        );
        pool.close().await;
        let log = app
            .state
            .accounts
            .store
            .admin_audit_log(None, 50, 0)
            .await
            .unwrap();
        assert_eq!(
            log.iter()
                .filter(|e| e.action == "user.link_generated")
                .count(),
            4
        );
        app
    }
);

story!(
    invite_mails_an_invitation_whose_link_signs_in,
    |app: TestApp| async move {
        let key = service_key(&app);
        let (status, user) = parts(
            admin(&app, &key, Method::POST, "/invite")
                .json(&json!({"email": "invited@example.com", "data": {"team": "blue"}}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{user}");
        assert!(user["email_confirmed_at"].is_null());
        assert_eq!(user["user_metadata"], json!({"team": "blue"}));
        let pool = sql(&app.db.url).await;
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM mail_outbox WHERE recipient = $1 AND subject = $2",
        )
        .bind("invited@example.com")
        .bind("You have been invited")
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(n, 1);
        // Its link confirms the address and signs in (type invite). Sent mails keep no body
        // in storage; the development outbox has the file.
        let (mail_id, created_at): (String, i64) =
            sqlx::query_as("SELECT id, created_at FROM mail_outbox WHERE recipient = $1")
                .bind("invited@example.com")
                .fetch_one(&pool)
                .await
                .unwrap();
        pool.close().await;
        let file = std::path::Path::new(&app.state.config.mail_outbox_dir)
            .join(format!("{created_at}-{mail_id}.txt"));
        crate::helpers::eventually(
            std::time::Duration::from_secs(10),
            "the invitation in the outbox",
            || {
                let file = file.clone();
                async move { file.exists() }
            },
        )
        .await;
        let text = std::fs::read_to_string(&file).unwrap();
        let link = text
            .split_whitespace()
            .find(|w| w.contains("/auth/v1/verify?token="))
            .unwrap_or_else(|| panic!("no link in {text}"));
        assert!(link.contains("type=invite"), "{link}");
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let res = browser.get(link).send().await.unwrap();
        assert_eq!(res.status(), 303);
        let location = res.headers()["location"].to_str().unwrap().to_string();
        assert!(
            location.contains("#access_token=") && location.contains("type=invite"),
            "{location}"
        );
        let (_, confirmed) = parts(
            admin(
                &app,
                &key,
                Method::GET,
                &format!("/admin/users/{}", user["id"].as_str().unwrap()),
            )
            .send()
            .await
            .unwrap(),
        )
        .await;
        assert!(confirmed["email_confirmed_at"].is_string(), "{confirmed}");
        // A confirmed address is invited no more.
        let (status, body) = parts(
            admin(&app, &key, Method::POST, "/invite")
                .json(&json!({"email": "invited@example.com"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (422, Some("email_exists")));
        // The publishable key invites nobody.
        let res = app
            .auth(Method::POST, "/invite")
            .bearer_auth(PK)
            .json(&json!({"email": "x@example.com"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        // An admin signOut(jwt): the user's token with the service key as apikey, logged.
        let (_, _, session) = app.new_user().await;
        let res = app
            .client
            .post(app.url("/auth/v1/logout?scope=global"))
            .header("apikey", key.as_str())
            .bearer_auth(session["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        assert_eq!(
            app.refresh(session["refresh_token"].as_str().unwrap())
                .await
                .status(),
            400
        );
        let log = app
            .state
            .accounts
            .store
            .admin_audit_log(None, 50, 0)
            .await
            .unwrap();
        assert_eq!(log[0].action, "user.signed_out");
        assert_eq!(log[0].target.as_deref(), session["user"]["id"].as_str());
        assert_eq!(log[0].details["scope"], "global");
        assert_eq!(log[1].action, "user.viewed");
        assert_eq!(log[2].action, "user.invited");
        app
    }
);

story!(
    deleting_the_only_owner_of_an_organization_is_refused_naming_it,
    |app: TestApp| async move {
        let key = service_key(&app);
        let (owner, other) = (app.person().await, app.person().await);
        let org = app.org(&owner, "Sole Owned").await;
        app.add(&owner, &org, &other, "admin").await;
        let delete =
            |id: String| admin(&app, &key, Method::DELETE, &format!("/admin/users/{id}")).send();
        let (status, err) = parts(delete(owner.id.clone()).await.unwrap()).await;
        assert_eq!(
            (status, err["code"].as_str()),
            (409, Some("conflict")),
            "{err}"
        );
        let message = err["message"].as_str().unwrap();
        assert!(
            message.contains("Sole Owned") && message.contains(&org),
            "{message}"
        );
        // Nothing was deleted: the owner still signs in and still owns it.
        assert_eq!(app.me(&owner.token).await.status(), 200);
        let (status, _) = app
            .call(Method::GET, &format!("/orgs/{org}"), &owner.token, None)
            .await;
        assert_eq!(status, 200);
        // A member who is not the only owner goes, and so does an owner once another exists.
        let (status, _) = parts(delete(other.id.clone()).await.unwrap()).await;
        assert_eq!(status, 200);
        let second = app.person().await;
        app.add(&owner, &org, &second, "owner").await;
        let (status, body) = parts(delete(owner.id.clone()).await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        let (status, _) = app
            .call(Method::GET, &format!("/orgs/{org}"), &second.token, None)
            .await;
        assert_eq!(status, 200, "the organization keeps its other owner");
        app
    }
);

story!(
    create_user_takes_an_existing_bcrypt_or_argon2_password_hash,
    |app: TestApp| async move {
        let key = service_key(&app);
        // bcrypt, GoTrue's cost and prefix (Python's bcrypt made it), of "supabase password one".
        let bcrypt = "$2a$10$p/lb/n2ikDG1bcpy4xFQFO0d6OLqGxZOc.2WFnR9gXNMDP.ZP0dDS";
        let user = create(
            &app,
            &key,
            json!({"email": "hashed@example.com", "password_hash": bcrypt, "email_confirm": true}),
        )
        .await;
        assert_eq!(user["email"], "hashed@example.com");
        let res = app
            .sign_in("hashed@example.com", "supabase password one")
            .await;
        assert_eq!(res.status(), 200, "the hash's password signs in");
        let res = app
            .sign_in("hashed@example.com", "another password 1")
            .await;
        assert_eq!(res.status(), 400);
        // Both, or a hash of no known form: 400 validation_failed, and nobody is made.
        for body in [
            json!({"email": "both@example.com", "password": "correct horse battery", "password_hash": bcrypt}),
            json!({"email": "plain@example.com", "password_hash": "correct horse battery"}),
            json!({"email": "sha@example.com", "password_hash": "$pbkdf2-sha256$i=1$c2FsdA$aGFzaA"}),
        ] {
            let (status, err) = parts(
                admin(&app, &key, Method::POST, "/admin/users")
                    .json(&body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(
                (status, err["code"].as_str()),
                (400, Some("validation_failed")),
                "{body}: {err}"
            );
        }
        let pool = sql(&app.db.url).await;
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 1);
        app
    }
);
