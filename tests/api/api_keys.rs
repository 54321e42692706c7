//! API keys: creation rules, use, revocation, rolling, verification, tenancy, audit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Method;
use serde_json::json;

use crate::helpers::{parts, refusal, TestApp};
use crate::story;

story!(
    a_key_is_shown_once_and_listed_by_its_start,
    |app: TestApp| async move {
        let ann = app.person().await;
        let org = app.org(&ann, "Acme").await;
        let (status, body) = app
        .call(Method::POST, &format!("/orgs/{org}/api-keys"), &ann.token, Some(json!({"name": "Server", "scopes": ["chat:write", "keys:read"], "environment": "test", "metadata": {"team": "core"}})))
        .await;
        assert_eq!(status, 201, "{body}");
        let key = body["data"]["key"].as_str().unwrap().to_string();
        let id = body["data"]["id"].as_str().unwrap().to_string();
        assert!(key.starts_with("gk_test_"));
        assert_eq!(body["data"]["start"], json!(&key[..12]));
        assert_eq!(body["data"]["masked"], json!(format!("{}••••", &key[..12])));
        let year = 365 * 86_400_000_i64;
        let lifetime = body["data"]["expires_at"].as_i64().unwrap()
            - body["data"]["created_at"].as_i64().unwrap();
        assert_eq!(lifetime, year);
        let hash = gatehouse::auth::tokens::sha256_hex(&key);
        for path in [
            format!("/orgs/{org}/api-keys"),
            format!("/orgs/{org}/api-keys/{id}"),
        ] {
            let res = app.v1(Method::GET, &path, &ann.token).send().await.unwrap();
            assert_eq!(res.status(), 200);
            let text = res.text().await.unwrap();
            assert!(
                !text.contains(&key) && !text.contains(&hash),
                "{path} leaks the key"
            );
            assert!(text.contains(&key[..12]));
        }
        let (status, me) = app.call(Method::GET, "/me", &key, None).await;
        assert_eq!(status, 200);
        assert_eq!(me["data"]["kind"], "api_key");
        assert_eq!(me["data"]["org_id"], json!(org));
        assert_eq!(me["data"]["key_id"], json!(id));
        assert_eq!(me["data"]["scopes"], json!(["chat:write", "keys:read"]));
        assert_eq!(me["data"]["environment"], "test");
        let res = app
            .client
            .get(app.url("/v1/me"))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        // The key reads what its scopes allow, and nothing else.
        let (status, _) = app
            .call(Method::GET, &format!("/orgs/{org}/api-keys"), &key, None)
            .await;
        assert_eq!(status, 200);
        let (status, body) = app
            .call(Method::GET, &format!("/orgs/{org}/members"), &key, None)
            .await;
        assert_eq!(
            (status, body["error"]["details"]["required"].clone()),
            (403, json!("members:read"))
        );
        app
    }
);

story!(creation_input_is_validated, |app: TestApp| async move {
    let ann = app.person().await;
    let org = app.org(&ann, "Acme").await;
    let path = format!("/orgs/{org}/api-keys");
    for (body, field) in [
        (json!({"name": "x".repeat(51)}), "name"),
        (json!({"name": "  "}), "name"),
        (json!({"name": "k", "scopes": ["root"]}), "scopes"),
        (json!({"name": "k", "scopes": ["keys:write"]}), "scopes"),
        (json!({"name": "k", "scopes": ["members:write"]}), "scopes"),
        (json!({"name": "k", "environment": "prod"}), "environment"),
        (
            json!({"name": "k", "expires_in_days": 0}),
            "expires_in_days",
        ),
        (
            json!({"name": "k", "expires_in_days": -3}),
            "expires_in_days",
        ),
        (json!({"name": "k", "metadata": [1, 2]}), "metadata"),
        (
            json!({"name": "k", "metadata": {"blob": "x".repeat(5000)}}),
            "metadata",
        ),
    ] {
        let (status, res) = app
            .call(Method::POST, &path, &ann.token, Some(body.clone()))
            .await;
        assert_eq!(status, 422, "{body} → {res}");
        assert_eq!(res["error"]["code"], "validation_failed");
        assert!(
            res["error"]["details"]["fields"][field].is_string(),
            "{res}"
        );
    }
    let (status, refused) = app
        .call(
            Method::POST,
            &path,
            &ann.token,
            Some(json!({"name": "k", "surprise": 1})),
        )
        .await;
    assert_eq!(
        refusal(status, &refused),
        (400, "invalid_request", ""),
        "{refused}"
    );
    let (status, body) = app
        .call(
            Method::POST,
            &path,
            &ann.token,
            Some(json!({"name": "forever", "expires_in_days": null})),
        )
        .await;
    assert_eq!(
        (status, body["data"]["expires_at"].clone()),
        (201, json!(null))
    );
    // A custom role may create keys, but not with scopes it lacks.
    let kim = app.person().await;
    app.call(
        Method::POST,
        &format!("/orgs/{org}/roles"),
        &ann.token,
        Some(json!({"name": "keysmith", "permissions": ["keys:write", "keys:read", "chat:write"]})),
    )
    .await;
    app.add(&ann, &org, &kim, "keysmith").await;
    let (status, body) = app
        .call(
            Method::POST,
            &path,
            &kim.token,
            Some(json!({"name": "k", "scopes": ["webhooks:write"]})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["details"]["required"].clone()),
        (403, json!("webhooks:write"))
    );
    let (status, _) = app
        .call(
            Method::POST,
            &path,
            &kim.token,
            Some(json!({"name": "k", "scopes": ["chat:write"]})),
        )
        .await;
    assert_eq!(status, 201);
    app
});

story!(
    bad_keys_are_refused_with_their_reason,
    |app: TestApp| async move {
        let ann = app.person().await;
        let org = app.org(&ann, "Acme").await;
        let (key, id) = app.key(&ann, &org, &["chat:write"]).await;
        let reason = |body: serde_json::Value| body["error"]["details"]["reason"].clone();
        let mut typo = key.clone().into_bytes();
        typo[15] = if typo[15] == b'A' { b'B' } else { b'A' };
        let (status, body) = parts(app.me(&String::from_utf8(typo).unwrap()).await).await;
        assert_eq!((status, reason(body)), (401, json!("malformed")));
        let unknown =
            gatehouse::auth::api_key::generate("gk", gatehouse::auth::api_key::Environment::Live);
        let (status, body) = parts(app.me(&unknown).await).await;
        assert_eq!((status, reason(body)), (401, json!("not_found")));
        let res = app
            .client
            .get(app.url("/v1/me"))
            .header("x-api-key", "short")
            .send()
            .await
            .unwrap();
        let (status, body) = parts(res).await;
        assert_eq!((status, reason(body)), (401, json!("malformed")));
        // Revocation applies at once, even with the key warm in the cache.
        assert_eq!(app.me(&key).await.status(), 200);
        let (status, body) = app
            .call(
                Method::DELETE,
                &format!("/orgs/{org}/api-keys/{id}"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(
            (status, body["data"]["status"].clone()),
            (200, json!("revoked"))
        );
        let (status, body) = parts(app.me(&key).await).await;
        assert_eq!((status, reason(body)), (401, json!("revoked")));
        let (status, refused) = app
            .call(
                Method::DELETE,
                &format!("/orgs/{org}/api-keys/{id}"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (409, "conflict", ""),
            "{refused}"
        );
        app
    }
);

mod expiry {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expired_key_is_refused_as_expired() {
        let clock = gatehouse::clock::Clock::manual(gatehouse::clock::Clock::System.now_ms());
        let app = TestApp::spawn_with_clock(crate::helpers::Db::Sqlite, clock, |_| {}).await;
        let ann = app.person().await;
        let org = app.org(&ann, "Acme").await;
        let (_, body) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/api-keys"),
                &ann.token,
                Some(json!({"name": "short", "expires_in_days": 1})),
            )
            .await;
        let key = body["data"]["key"].as_str().unwrap().to_string();
        assert_eq!(app.me(&key).await.status(), 200);
        app.state.edge.clock.advance_ms(86_400_000 + 1);
        let (status, body) = parts(app.me(&key).await).await;
        assert_eq!(
            (status, body["error"]["details"]["reason"].clone()),
            (401, json!("expired"))
        );
        app.stop().await;
    }
}

story!(
    a_rolled_key_keeps_working_for_its_grace_period,
    |app: TestApp| async move {
        let ann = app.person().await;
        let org = app.org(&ann, "Acme").await;
        let (old, id) = app.key(&ann, &org, &["chat:write"]).await;
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/api-keys/{id}/roll"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let new = body["data"]["key"].as_str().unwrap().to_string();
        assert_ne!(new, old);
        assert_eq!(body["data"]["scopes"], json!(["chat:write"]));
        assert_eq!(app.me(&new).await.status(), 200);
        assert_eq!(app.me(&old).await.status(), 200, "within the grace period");
        let (_, listed) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/api-keys/{id}"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(listed["data"]["rolled_to"], body["data"]["id"]);
        let (status, refused) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/api-keys/{id}/roll"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (409, "conflict", ""),
            "a key is rolled once: {refused}"
        );
        // With no grace the old key stops at once.
        let new_id = body["data"]["id"].as_str().unwrap().to_string();
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/api-keys/{new_id}/roll"),
                &ann.token,
                Some(json!({"grace_seconds": 0})),
            )
            .await;
        assert_eq!(status, 201);
        let newest = body["data"]["key"].as_str().unwrap().to_string();
        let (status, body) = parts(app.me(&new).await).await;
        assert_eq!(
            (status, body["error"]["details"]["reason"].clone()),
            (401, json!("expired"))
        );
        assert_eq!(app.me(&newest).await.status(), 200);
        let (status, refused) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/api-keys/{new_id}/roll"),
                &ann.token,
                Some(json!({"grace_seconds": -1})),
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (422, "validation_failed", ""),
            "{refused}"
        );
        app
    }
);

story!(
    verify_checks_keys_of_the_same_organization_only,
    |app: TestApp| async move {
        let ann = app.person().await;
        let org = app.org(&ann, "Acme").await;
        let other = app.org(&ann, "Other").await;
        let (checker, _) = app.key(&ann, &org, &["keys:verify"]).await;
        let (plain, _) = app.key(&ann, &org, &["chat:write"]).await;
        let (foreign, _) = app.key(&ann, &other, &["chat:write"]).await;
        let (status, v) = app
            .call(
                Method::POST,
                "/keys/verify",
                &checker,
                Some(json!({"key": plain})),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(v["data"]["valid"], true);
        assert_eq!(v["data"]["org_id"], json!(org));
        assert_eq!(v["data"]["scopes"], json!(["chat:write"]));
        assert_eq!(v["data"]["environment"], "live");
        let (_, v) = app
            .call(
                Method::POST,
                "/keys/verify",
                &checker,
                Some(json!({"key": foreign})),
            )
            .await;
        assert_eq!(
            (
                v["data"]["valid"].clone(),
                v["data"]["reason"].clone(),
                v["data"]["org_id"].clone()
            ),
            (json!(false), json!("not_found"), json!(null))
        );
        let (_, v) = app
            .call(
                Method::POST,
                "/keys/verify",
                &checker,
                Some(json!({"key": "gk_live_nope"})),
            )
            .await;
        assert_eq!(v["data"]["reason"], "malformed");
        let (status, body) = app
            .call(
                Method::POST,
                "/keys/verify",
                &plain,
                Some(json!({"key": checker})),
            )
            .await;
        assert_eq!(
            (status, body["error"]["details"]["required"].clone()),
            (403, json!("keys:verify"))
        );
        app
    }
);

story!(
    no_route_leaks_another_organizations_objects,
    |app: TestApp| async move {
        let ann = app.person().await;
        let eve = app.person().await;
        let mine = app.org(&ann, "Ann's").await;
        let theirs = app.org(&eve, "Eve's").await;
        let (eve_key, eve_key_id) = app.key(&eve, &theirs, &["keys:read", "chat:write"]).await;
        // Ann, in her own organization, asks for Eve's key and Eve's membership: 404, not 403.
        for (m, path) in [
            (Method::GET, format!("/orgs/{mine}/api-keys/{eve_key_id}")),
            (
                Method::DELETE,
                format!("/orgs/{mine}/api-keys/{eve_key_id}"),
            ),
            (
                Method::POST,
                format!("/orgs/{mine}/api-keys/{eve_key_id}/roll"),
            ),
            (Method::PATCH, format!("/orgs/{mine}/members/{}", eve.id)),
            (Method::DELETE, format!("/orgs/{mine}/members/{}", eve.id)),
        ] {
            let body = if m == Method::PATCH {
                Some(json!({"role": "member"}))
            } else {
                None
            };
            let (status, res) = app.call(m.clone(), &path, &ann.token, body).await;
            assert_eq!(
                refusal(status, &res),
                (404, "not_found", ""),
                "{m} {path}: {res}"
            );
        }
        // Ann's listing never shows Eve's key.
        let (_, list) = app
            .call(
                Method::GET,
                &format!("/orgs/{mine}/api-keys"),
                &ann.token,
                None,
            )
            .await;
        assert!(!list.to_string().contains(&eve_key_id));
        // Eve's key cannot reach into Ann's organization.
        let (status, refused) = app
            .call(
                Method::GET,
                &format!("/orgs/{mine}/api-keys"),
                &eve_key,
                None,
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (403, "forbidden", "not_a_member"),
            "{refused}"
        );
        // Eve's key still works after all that.
        assert_eq!(app.me(&eve_key).await.status(), 200);
        let (status, refused) = app
            .call(
                Method::GET,
                &format!("/orgs/{mine}/api-keys/key_zz"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (400, "invalid_request", "malformed_id"),
            "a malformed id is a clear 400: {refused}"
        );
        app
    }
);

story!(
    write_behind_batches_of_many_keys_go_out_in_multi_row_statements,
    |app: TestApp| async move {
        let ann = app.person().await;
        let org = app.org(&ann, "Busy").await;
        let (_, id) = app.key(&ann, &org, &["chat:write"]).await;
        async fn last_used(app: &TestApp, org: &str, id: &str, token: &str) -> Option<i64> {
            let (status, k) = app
                .call(
                    Method::GET,
                    &format!("/orgs/{org}/api-keys/{id}"),
                    token,
                    None,
                )
                .await;
            assert_eq!(status, 200, "{k}");
            k["data"]["last_used_at"].as_i64()
        }
        // More uses than one statement takes (500), the real key in the middle of the second
        // chunk; ids that match no key are skipped.
        let at = 1_796_000_000_000_i64;
        let mut uses: Vec<(String, i64)> =
            (0..1200).map(|i| (format!("key_gone_{i}"), at)).collect();
        uses.insert(700, (id.clone(), at));
        app.state.runtime.store.touch_api_keys(&uses).await.unwrap();
        assert_eq!(last_used(&app, &org, &id, &ann.token).await, Some(at));
        // A late batch with an older time never moves it back.
        app.state
            .runtime
            .store
            .touch_api_keys(&[(id.clone(), at - 5000)])
            .await
            .unwrap();
        assert_eq!(last_used(&app, &org, &id, &ann.token).await, Some(at));

        // Usage: 250 rows (three statements of at most 100), twice, so the second pass takes
        // the upsert's update path; a row of an organization that no longer exists is dropped.
        const HOUR: i64 = 3_600_000;
        let hour = at / HOUR * HOUR;
        let mut batch: Vec<((String, String, i64), gatehouse::store::UsageDelta)> = (0..250)
            .map(|i| {
                (
                    (org.clone(), format!("key_{i:03}"), hour),
                    gatehouse::store::UsageDelta {
                        api_requests: i + 1,
                        rate_limited: 1,
                        ..Default::default()
                    },
                )
            })
            .collect();
        batch.push((
            ("org_gone".into(), "key_x".into(), hour),
            gatehouse::store::UsageDelta {
                api_requests: 1,
                ..Default::default()
            },
        ));
        app.state.runtime.store.add_usage(&batch).await.unwrap();
        app.state.runtime.store.add_usage(&batch).await.unwrap();
        let rows = app
            .state
            .runtime
            .store
            .usage(&org, hour, hour + HOUR, HOUR, None)
            .await
            .unwrap();
        assert_eq!(rows.len(), 250);
        for (i, row) in (0_i64..).zip(&rows) {
            assert_eq!(row.key_id.as_deref(), Some(format!("key_{i:03}").as_str()));
            assert_eq!(
                (row.api_requests, row.rate_limited),
                (2 * (i + 1), 2),
                "{row:?}"
            );
        }
        app
    }
);

story!(
    a_warm_key_verifies_without_storage,
    |app: TestApp| async move {
        let ann = app.person().await;
        let org = app.org(&ann, "Acme").await;
        let (key, id) = app.key(&ann, &org, &["chat:write"]).await;
        assert_eq!(app.me(&key).await.status(), 200);
        // Last use is written behind, in a batch.
        assert_eq!(app.state.keys.flush_last_used().await.unwrap(), 1);
        let (_, k) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/api-keys/{id}"),
                &ann.token,
                None,
            )
            .await;
        assert!(k["data"]["last_used_at"].as_i64().is_some());
        // With storage gone, the warm key still verifies: the hot path never touched it.
        app.state.runtime.store.close().await;
        let (status, me) = parts(app.me(&key).await).await;
        assert_eq!(status, 200, "{me}");
        assert_eq!(me["data"]["key_id"], json!(id));
        // A key that is not cached cannot be checked now: 503 with Retry-After, not a 401 or a 500.
        let cold =
            gatehouse::auth::api_key::generate("gk", gatehouse::auth::api_key::Environment::Live);
        let res = app.me(&cold).await;
        assert_eq!(res.headers()["retry-after"], "1");
        let (status, body) = parts(res).await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (503, json!("service_unavailable"))
        );
        app
    }
);

story!(
    the_audit_log_records_changes_without_secrets,
    |app: TestApp| async move {
        let ann = app.person().await;
        let bob = app.person().await;
        let org = app.org(&ann, "Acme").await;
        app.call(
            Method::PATCH,
            &format!("/orgs/{org}"),
            &ann.token,
            Some(json!({"name": "Acme 2"})),
        )
        .await;
        app.add(&ann, &org, &bob, "member").await;
        app.call(
            Method::PATCH,
            &format!("/orgs/{org}/members/{}", bob.id),
            &ann.token,
            Some(json!({"role": "admin"})),
        )
        .await;
        let (key, id) = app.key(&ann, &org, &["chat:write"]).await;
        let (_, rolled) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/api-keys/{id}/roll"),
                &ann.token,
                None,
            )
            .await;
        let new_key = rolled["data"]["key"].as_str().unwrap().to_string();
        let new_id = rolled["data"]["id"].as_str().unwrap().to_string();
        app.call(
            Method::DELETE,
            &format!("/orgs/{org}/api-keys/{new_id}"),
            &ann.token,
            None,
        )
        .await;
        app.call(
            Method::DELETE,
            &format!("/orgs/{org}/members/{}", bob.id),
            &ann.token,
            None,
        )
        .await;
        let res = app
            .v1(Method::GET, &format!("/orgs/{org}/audit-log"), &ann.token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let text = res.text().await.unwrap();
        assert!(
            !text.contains(&key) && !text.contains(&new_key),
            "the audit log holds a key"
        );
        let log: serde_json::Value = serde_json::from_str(&text).unwrap();
        let actions: Vec<&str> = log["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(
            actions,
            [
                "member.removed",
                "api_key.revoked",
                "api_key.rolled",
                "api_key.created",
                "member.role_changed",
                "member.added",
                "invitation.accepted",
                "invitation.created",
                "organization.renamed",
                "organization.created"
            ]
        );
        let first = &log["data"][0];
        assert_eq!(first["actor"], json!(format!("user:{}", ann.id)));
        assert_eq!(first["target"], json!(bob.id));
        assert_eq!(first["ip"], "127.0.0.1");
        let (_, page) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/audit-log?limit=2"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(page["data"].as_array().unwrap().len(), 2);
        let (status, refused) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/audit-log?limit=0"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (422, "validation_failed", ""),
            "{refused}"
        );
        let (status, refused) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/audit-log?limit=abc"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (400, "invalid_request", ""),
            "{refused}"
        );
        app
    }
);
