//! The audit log read with `action` and `actor` filters, alone, together and with paging; a
//! filter that cannot match anything the log records is refused, after the access check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{Person, TestApp};
use crate::story;

/// One page of `org`'s audit log read by `who` with query `q`.
async fn read(app: &TestApp, who: &Person, org: &str, q: &str) -> Vec<Value> {
    let (status, body) = app
        .call(
            Method::GET,
            &format!("/orgs/{org}/audit-log{q}"),
            &who.token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{q}: {body}");
    body["data"].as_array().unwrap().clone()
}

/// (action, actor) of each entry.
fn pairs(entries: &[Value]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

story!(
    the_audit_log_filters_by_action_and_actor_on_the_server,
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Filtered").await;
        let (key, key_id) = app.key(&owner, &org, &["widgets:write"]).await;
        let by_owner = format!("user:{}", owner.id);
        let by_key = format!("api_key:{key_id}");
        // Widgets by the owner and by the key, interleaved, and renames by the owner.
        for i in 0..3 {
            for bearer in [owner.token.as_str(), key.as_str()] {
                let (status, body) = app
                    .call(
                        Method::POST,
                        &format!("/orgs/{org}/widgets"),
                        bearer,
                        Some(json!({ "name": format!("W{i}") })),
                    )
                    .await;
                assert_eq!(status, 201, "{body}");
            }
            let (status, body) = app
                .call(
                    Method::PATCH,
                    &format!("/orgs/{org}"),
                    &owner.token,
                    Some(json!({ "name": format!("Filtered {i}") })),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
        let all = read(&app, &owner, &org, "?limit=200").await;
        let expect = |keep: &dyn Fn(&(String, String)) -> bool| -> Vec<Value> {
            all.iter()
                .zip(pairs(&all))
                .filter(|(_, p)| keep(p))
                .map(|(e, _)| e.clone())
                .collect()
        };

        // By action: every widget creation, by either actor, and nothing else.
        let widgets = read(&app, &owner, &org, "?action=widget.created").await;
        assert_eq!(widgets, expect(&|(a, _)| a == "widget.created"));
        assert_eq!(widgets.len(), 6);
        // By actor: the key's entries are its three widgets.
        let keys = read(&app, &owner, &org, &format!("?actor={by_key}")).await;
        assert_eq!(keys, expect(&|(_, who)| *who == by_key));
        assert_eq!(keys.len(), 3);
        // Both: the owner's widgets only (not the renames, not the key's widgets).
        let both = format!("?action=widget.created&actor={by_owner}");
        let mine = read(&app, &owner, &org, &both).await;
        assert_eq!(
            mine,
            expect(&|(a, who)| a == "widget.created" && *who == by_owner)
        );
        assert_eq!(mine.len(), 3);
        // A filter nothing matches is an empty page, not an error.
        assert!(read(&app, &owner, &org, "?actor=cli").await.is_empty());
        assert!(read(&app, &owner, &org, "?action=role.deleted")
            .await
            .is_empty());

        // Paging within a filter: pages of 2 below the last seq read give the same entries.
        let mut paged: Vec<Value> = Vec::new();
        let mut q = "?action=widget.created&limit=2".to_string();
        loop {
            let page = read(&app, &owner, &org, &q).await;
            assert!(page.len() <= 2 && paged.len() <= widgets.len(), "{q}");
            let Some(last) = page.last() else { break };
            q = format!(
                "?limit=2&before={}&action=widget.created",
                last["seq"].as_i64().unwrap()
            );
            paged.extend(page);
        }
        assert_eq!(paged, widgets);
        let q = format!(
            "?actor={by_owner}&action=widget.created&limit=1&before={}",
            mine[0]["seq"]
        );
        assert_eq!(read(&app, &owner, &org, &q).await, vec![mine[1].clone()]);

        // Values that cannot match what the log records are refused, each naming its field.
        for (q, field) in [
            ("?action=widget.exploded", "action"),
            ("?action=WIDGET.CREATED", "action"),
            ("?action=", "action"),
            ("?actor=someone", "actor"),
            ("?actor=user:not-a-uuid", "actor"),
            (
                "?actor=api_key:wgt_0190a0b27c4d7e8f9a0b1c2d3e4f5a6b",
                "actor",
            ),
            ("?actor=", "actor"),
        ] {
            let (status, body) = app
                .call(
                    Method::GET,
                    &format!("/orgs/{org}/audit-log{q}"),
                    &owner.token,
                    None,
                )
                .await;
            assert_eq!(status, 422, "{q}: {body}");
            assert_eq!(body["error"]["code"], "validation_failed", "{q}: {body}");
            assert!(
                body["error"]["details"]["fields"][field].is_string(),
                "{q}: {body}"
            );
        }
        // A caller who may not read the log is refused first, whatever its filters.
        let (status, body) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/audit-log?action=widget.exploded"),
                &key,
                None,
            )
            .await;
        assert_eq!(status, 403, "{body}");
        app
    }
);
