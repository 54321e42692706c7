//! The dashboard's cookie session and its CSRF check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;

use crate::helpers::{parts, refused, TestApp};
use crate::story;

/// Signs a fresh person in through `/v1/session`; the client keeps the cookie.
async fn cookie_sign_in(app: &TestApp) -> (String, reqwest::Response) {
    let (email, password, _) = app.new_user().await;
    let res = app
        .client
        .post(app.url("/v1/session"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    (email, res)
}

story!(
    a_cookie_session_signs_in_reads_me_and_signs_out,
    |app: TestApp| async move {
        let (email, res) = cookie_sign_in(&app).await;
        let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(cookie.starts_with("gatehouse_session="));
        assert!(
            cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Lax")
                && cookie.contains("Path=/")
        );
        assert!(
            !cookie.contains("Secure"),
            "plain-http localhost has no Secure flag"
        );
        let (status, me) = parts(app.client.get(app.url("/v1/me")).send().await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(me["data"]["via"], "cookie");
        assert_eq!(me["data"]["email"], json!(email));
        assert_eq!(me["data"]["organizations"], json!([]));
        // A cross-site sign-out is refused.
        let res = app
            .client
            .delete(app.url("/v1/session"))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        let (status, body) = parts(res).await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (403, json!("forbidden"))
        );
        let res = app
            .client
            .delete(app.url("/v1/session"))
            .header("origin", app.base.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        assert_eq!(
            app.client
                .get(app.url("/v1/me"))
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
        app
    }
);

story!(a_wrong_password_sets_no_cookie, |app: TestApp| async move {
    let (email, _, _) = app.new_user().await;
    let res = app
        .client
        .post(app.url("/v1/session"))
        .json(&json!({"email": email, "password": "wrong one"}))
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("set-cookie").is_none());
    let (status, body) = parts(res).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    app
});

story!(a_cross_site_sign_in_is_refused, |app: TestApp| async move {
    let (email, password, _) = app.new_user().await;
    let res = app
        .client
        .post(app.url("/v1/session"))
        .header("origin", "https://evil.example")
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused(res).await, "403 forbidden csrf");
    app
});

story!(a_jwt_reads_me_as_a_user, |app: TestApp| async move {
    let (email, _, s) = app.new_user().await;
    let (status, me) = parts(app.me(s["access_token"].as_str().unwrap()).await).await;
    assert_eq!(status, 200);
    assert_eq!(me["success"], true);
    assert_eq!(me["data"]["kind"], "user");
    assert_eq!(me["data"]["via"], "jwt");
    assert_eq!(me["data"]["email"], json!(email));
    assert_eq!(me["data"]["user_id"], s["user"]["id"]);
    app
});

story!(
    a_cookie_change_to_v1_from_another_site_is_refused,
    |app: TestApp| async move {
        cookie_sign_in(&app).await;
        let create = |origin: Option<&str>, referer: Option<&str>| {
            let mut req = app
                .client
                .post(app.url("/v1/orgs"))
                .json(&json!({"name": "Acme"}));
            if let Some(o) = origin {
                req = req.header("origin", o);
            }
            if let Some(r) = referer {
                req = req.header("referer", r);
            }
            req.send()
        };
        let own = app.base.clone();
        let own_page = format!("{own}/dashboard");
        let lookalike = format!("{own}.evil.example/dashboard");
        let refused: [(Option<&str>, Option<&str>); 5] = [
            (None, None),
            (Some("https://evil.example"), None),
            // A foreign Origin wins over a Referer that looks like ours.
            (Some("https://evil.example"), Some(&own_page)),
            (None, Some("https://evil.example/dashboard")),
            // Our origin as a prefix of another host is not our origin.
            (None, Some(&lookalike)),
        ];
        for (origin, referer) in refused {
            let (status, body) = parts(create(origin, referer).await.unwrap()).await;
            assert_eq!(
                status, 403,
                "origin {origin:?}, referer {referer:?}: {body}"
            );
            assert_eq!(body["error"]["details"]["reason"], "csrf");
        }
        let (status, orgs) = parts(app.client.get(app.url("/v1/me")).send().await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(
            orgs["data"]["organizations"],
            json!([]),
            "nothing was created"
        );
        // A read is not a change: no Origin needed.
        let res = app
            .client
            .get(app.url("/v1/me"))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        // From our own page: by Origin, or by Referer when the browser sends no Origin.
        let (status, _) = parts(create(Some(&own), None).await.unwrap()).await;
        assert_eq!(status, 201);
        let (status, _) = parts(create(None, Some(&own_page)).await.unwrap()).await;
        assert_eq!(status, 201);
        let (_, me) = parts(app.client.get(app.url("/v1/me")).send().await.unwrap()).await;
        assert_eq!(me["data"]["organizations"].as_array().unwrap().len(), 2);
        app
    }
);

/// `POST /v1/session` with `{"access_token"}`; the client keeps any cookie.
async fn token_sign_in(app: &TestApp, token: &str) -> (u16, serde_json::Value, bool) {
    let res = app
        .client
        .post(app.url("/v1/session"))
        .json(&json!({ "access_token": token }))
        .send()
        .await
        .unwrap();
    let cookie = res.headers().get("set-cookie").is_some();
    let (status, body) = parts(res).await;
    (status, body, cookie)
}

story!(
    a_fresh_access_token_opens_a_dashboard_session,
    |app: TestApp| async move {
        let (email, _, s) = app.new_user().await;
        let token = s["access_token"].as_str().unwrap();
        let (status, body, cookie) = token_sign_in(&app, token).await;
        assert_eq!((status, cookie), (200, true), "{body}");
        assert_eq!(body["data"]["email"], json!(email));
        let (status, me) = parts(app.client.get(app.url("/v1/me")).send().await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(me["data"]["via"], "cookie");
        assert_eq!(me["data"]["email"], json!(email));
        app
    }
);

story!(
    a_bad_or_cross_site_access_token_opens_no_session,
    |app: TestApp| async move {
        let (status, body, cookie) = token_sign_in(&app, "not-a-token").await;
        assert_eq!((status, cookie), (401, false));
        assert_eq!(body["error"]["details"]["reason"], "malformed");
        let (_, _, s) = app.new_user().await;
        let res = app
            .client
            .post(app.url("/v1/session"))
            .header("origin", "https://evil.example")
            .json(&json!({ "access_token": s["access_token"] }))
            .send()
            .await
            .unwrap();
        assert!(res.headers().get("set-cookie").is_none());
        assert_eq!(refused(res).await, "403 forbidden csrf");
        // Both forms at once, or neither, is a bad request.
        let res = app
            .client
            .post(app.url("/v1/session"))
            .json(&json!({ "access_token": s["access_token"], "email": "a@example.com" }))
            .send()
            .await
            .unwrap();
        assert_eq!(refused(res).await, "400 invalid_request");
        app
    }
);

story!(
    an_access_token_older_than_five_minutes_opens_no_session,
    setup: |db| async move {
        let clock = gatehouse::clock::Clock::manual(gatehouse::clock::Clock::System.now_ms());
        let app = crate::helpers::TestApp::spawn_with_clock(db, clock.clone(), |_| {}).await;
        (app, clock)
    },
    |(app, clock): (TestApp, gatehouse::clock::Clock)| async move {
        let (_, _, s) = app.new_user().await;
        let token = s["access_token"].as_str().unwrap();
        clock.advance_ms(301_000);
        let (status, body, cookie) = token_sign_in(&app, token).await;
        assert_eq!((status, cookie), (401, false), "{body}");
        assert_eq!(body["error"]["details"]["reason"], "expired");
        // The token itself still works where tokens are accepted: only the exchange is refused.
        assert_eq!(app.me(token).await.status(), 200);
        app
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_sends_a_browser_to_the_dashboard() {
    let app = TestApp::spawn(crate::helpers::Db::Sqlite, |_| {}).await;
    let res = app.client.get(app.url("/")).send().await.unwrap();
    // The test client follows redirects: it ends on the dashboard page.
    assert_eq!(res.status(), 200);
    assert_eq!(res.url().path(), "/dashboard");
    app.stop().await;
}
