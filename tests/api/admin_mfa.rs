//! The admin API's MFA routes (`auth.admin.mfa.listFactors` and `deleteFactor`): a service
//! key lists a user's factors and removes one, verified or not, without aal2; the user's aal2
//! sessions drop to aal1; each call is in the admin log; other users' factors stay out of reach.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{clocked, parts, sql, TestApp, PK};
use crate::mfa::{claims, enroll, with_factor, with_key, T0};
use crate::story;

fn admin(app: &TestApp, method: Method, path: &str) -> reqwest::RequestBuilder {
    // Minted at the story's manual clock.
    let key = app
        .state
        .accounts
        .jwt
        .sign_service(T0 / 1000, 3600)
        .unwrap();
    app.client
        .request(method, app.url(&format!("/auth/v1{path}")))
        .header("apikey", &key)
        .header("x-supabase-api-version", "2024-01-01")
        .bearer_auth(&key)
}

fn user_id(session: &Value) -> String {
    claims(session["access_token"].as_str().unwrap())["sub"]
        .as_str()
        .unwrap()
        .to_string()
}

story!(
    the_admin_lists_and_deletes_a_users_factors_and_the_session_drops_to_aal1,
    setup: |db| clocked(db, T0, with_key),
    |(app, _clock): (TestApp, gatehouse::clock::Clock)| async move {
        let (_, _, aal2, factor, _) = with_factor(&app, T0 / 1000).await;
        let uid = user_id(&aal2);
        let token = aal2["access_token"].as_str().unwrap().to_string();
        let (spare, _) = enroll(&app, &token, "tablet").await;
        // Another user's factor.
        let (_, _, other) = app.new_user().await;
        let (foreign, _) = enroll(&app, other["access_token"].as_str().unwrap(), "x").await;

        let list = format!("/admin/users/{uid}/factors");
        let (status, body) = parts(admin(&app, Method::GET, &list).send().await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        // (Both made at the same manual-clock instant: the order between them is the ids'.)
        let mut rows: Vec<(Value, Value, Value)> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["id"].clone(), f["status"].clone(), f["factor_type"].clone()))
            .collect();
        rows.sort_by_key(|r| r.1.to_string());
        assert_eq!(
            rows,
            vec![
                (json!(spare), json!("unverified"), json!("totp")),
                (json!(factor), json!("verified"), json!("totp")),
            ]
        );
        assert!(!body.to_string().contains("secret"), "{body}");

        // Not a factor of this user: 404 mfa_factor_not_found, nothing removed.
        let (status, body) = parts(
            admin(&app, Method::DELETE, &format!("{list}/{foreign}")).send().await.unwrap(),
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (404, Some("mfa_factor_not_found")), "{body}");
        // Not UUIDs: 404 validation_failed; an unknown user: user_not_found.
        for path in [format!("{list}/nope"), "/admin/users/nope/factors".to_string()] {
            let method = if path.ends_with("nope") { Method::DELETE } else { Method::GET };
            let (status, body) = parts(admin(&app, method, &path).send().await.unwrap()).await;
            assert_eq!((status, body["code"].as_str()), (404, Some("validation_failed")), "{path}: {body}");
        }
        let unknown = format!("/admin/users/{}/factors", uuid::Uuid::new_v4());
        let (status, body) = parts(admin(&app, Method::GET, &unknown).send().await.unwrap()).await;
        assert_eq!((status, body["code"].as_str()), (404, Some("user_not_found")), "{body}");
        // The publishable key is refused.
        let (status, body) = parts(
            app.client
                .delete(app.url(&format!("/auth/v1{list}/{factor}")))
                .header("apikey", PK)
                .header("x-supabase-api-version", "2024-01-01")
                .bearer_auth(PK)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (403, Some("not_admin")), "{body}");

        // The verified factor goes, with no aal2 asked of the service key.
        let (status, body) = parts(
            admin(&app, Method::DELETE, &format!("{list}/{factor}")).send().await.unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["id"], json!(factor));
        assert_eq!(body["status"], "verified");
        let (_, body) = parts(admin(&app, Method::GET, &list).send().await.unwrap()).await;
        assert_eq!(body.as_array().unwrap().len(), 1);
        assert_eq!(body[0]["id"], json!(spare));
        // The other user's factor is still there.
        let pool = sql(&app.db.url).await;
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM mfa_factors WHERE id = $1")
            .bind(&foreign)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 1);

        // The user's session is aal1 at its next refresh.
        let (status, refreshed) =
            parts(app.refresh(aal2["refresh_token"].as_str().unwrap()).await).await;
        assert_eq!(status, 200, "{refreshed}");
        assert_eq!(claims(refreshed["access_token"].as_str().unwrap())["aal"], "aal1");

        // The admin log: two listings (the failed calls are not logged), one deletion.
        let (_, log) = parts(
            admin(&app, Method::GET, "/admin/audit?per_page=10").send().await.unwrap(),
        )
        .await;
        let actions: Vec<(String, Value, Value)> = log
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["payload"]["action"] != "admin_log.read")
            .map(|e| {
                (
                    e["payload"]["action"].as_str().unwrap().to_string(),
                    e["payload"]["target"].clone(),
                    e["payload"]["traits"].clone(),
                )
            })
            .collect();
        assert_eq!(
            actions,
            vec![
                ("user.factors_listed".into(), json!(uid), json!({"count": 1})),
                (
                    "user.factor_deleted".into(),
                    json!(uid),
                    json!({"factor_id": factor, "factor_type": "totp", "status": "verified"})
                ),
                ("user.factors_listed".into(), json!(uid), json!({"count": 2})),
            ]
        );
        app
    }
);
