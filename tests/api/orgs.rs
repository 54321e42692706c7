//! Organizations, members and roles.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Method;
use serde_json::json;

use crate::helpers::{parts, refusal, TestApp};
use crate::story;

story!(
    the_creator_owns_a_new_organization_and_sees_it_in_me,
    |app: TestApp| async move {
        let ann = app.person().await;
        let org = app.org(&ann, "Acme").await;
        let (status, me) = app.call(Method::GET, "/me", &ann.token, None).await;
        assert_eq!(status, 200);
        let orgs = me["data"]["organizations"].as_array().unwrap();
        assert_eq!(orgs.len(), 1);
        assert_eq!(
            (&orgs[0]["id"], &orgs[0]["name"], &orgs[0]["role"]),
            (&json!(org), &json!("Acme"), &json!("owner"))
        );
        assert_eq!(
            orgs[0]["permissions"].as_array().unwrap().len(),
            14,
            "an owner holds every permission, listed for the dashboard"
        );
        // A member's permissions: the read ones and chat, never keys:write.
        let bob = app.person().await;
        app.add(&ann, &org, &bob, "member").await;
        let (_, me) = app.call(Method::GET, "/me", &bob.token, None).await;
        let perms = me["data"]["organizations"][0]["permissions"].to_string();
        assert!(
            perms.contains("keys:read") && !perms.contains("keys:write"),
            "{perms}"
        );
        let (status, list) = app.call(Method::GET, "/orgs", &ann.token, None).await;
        assert_eq!(
            (status, list["data"][0]["role"].clone()),
            (200, json!("owner"))
        );
        let (status, body) = app
            .call(
                Method::PATCH,
                &format!("/orgs/{org}"),
                &ann.token,
                Some(json!({"name": "Acme Inc"})),
            )
            .await;
        assert_eq!(
            (status, body["data"]["name"].clone()),
            (200, json!("Acme Inc"))
        );
        app
    }
);

story!(
    a_non_member_is_told_so_whatever_the_org,
    |app: TestApp| async move {
        let ann = app.person().await;
        let bob = app.person().await;
        let org = app.org(&ann, "Acme").await;
        for (m, path) in [
            (Method::GET, format!("/orgs/{org}")),
            (Method::GET, format!("/orgs/{org}/members")),
            (Method::GET, format!("/orgs/{org}/api-keys")),
            (
                Method::GET,
                "/orgs/org_00000000000000000000000000000000".to_string(),
            ),
        ] {
            let (status, body) = app.call(m, &path, &bob.token, None).await;
            assert_eq!(
                refusal(status, &body),
                (403, "forbidden", "not_a_member"),
                "{path}: {body}"
            );
            assert_eq!(
                body["error"]["message"],
                "Not a member of the selected organization"
            );
        }
        let (status, body) = app
            .call(Method::GET, "/orgs/not-an-id", &bob.token, None)
            .await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
        assert_eq!(body["error"]["details"]["reason"], "malformed_id", "{body}");
        app
    }
);

story!(
    members_are_added_changed_and_removed_with_the_last_owner_protected,
    |app: TestApp| async move {
        let ann = app.person().await;
        let bob = app.person().await;
        let org = app.org(&ann, "Acme").await;
        app.add(&ann, &org, &bob, "member").await;
        // The deprecated route invites: an unknown address is neither refused nor enrolled.
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/members"),
                &ann.token,
                Some(json!({"email": "ghost@example.com", "role": "member"})),
            )
            .await;
        assert_eq!(
            (status, body["data"]["status"].clone()),
            (201, json!("pending"))
        );
        let (status, refused) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/members"),
                &ann.token,
                Some(json!({"email": "ghost@example.com", "role": "emperor"})),
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (422, "validation_failed", ""),
            "{refused}"
        );
        // A member cannot manage members.
        let carl = app.person().await;
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/members"),
                &bob.token,
                Some(json!({"email": carl.email, "role": "member"})),
            )
            .await;
        assert_eq!(
            (status, body["error"]["details"]["required"].clone()),
            (403, json!("members:write"))
        );
        let (status, members) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/members"),
                &bob.token,
                None,
            )
            .await;
        assert_eq!(
            (status, members["data"].as_array().unwrap().len()),
            (200, 2)
        );
        // The last owner can be neither demoted nor removed.
        let (status, body) = app
            .call(
                Method::PATCH,
                &format!("/orgs/{org}/members/{}", ann.id),
                &ann.token,
                Some(json!({"role": "admin"})),
            )
            .await;
        assert_eq!(status, 409);
        assert_eq!(body["error"]["code"], "conflict", "{body}");
        assert_eq!(body["error"]["message"], "the last owner cannot be demoted");
        let (status, body) = app
            .call(
                Method::DELETE,
                &format!("/orgs/{org}/members/{}", ann.id),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(status, 409);
        assert_eq!(body["error"]["code"], "conflict", "{body}");
        assert_eq!(body["error"]["message"], "the last owner cannot be removed");
        // With a second owner, the first can step down.
        let (status, _) = app
            .call(
                Method::PATCH,
                &format!("/orgs/{org}/members/{}", bob.id),
                &ann.token,
                Some(json!({"role": "owner"})),
            )
            .await;
        assert_eq!(status, 200);
        let (status, _) = app
            .call(
                Method::PATCH,
                &format!("/orgs/{org}/members/{}", ann.id),
                &ann.token,
                Some(json!({"role": "member"})),
            )
            .await;
        assert_eq!(status, 200);
        let (status, _) = app
            .call(
                Method::DELETE,
                &format!("/orgs/{org}/members/{}", ann.id),
                &bob.token,
                None,
            )
            .await;
        assert_eq!(status, 204);
        let (status, body) = app
            .call(Method::GET, &format!("/orgs/{org}"), &ann.token, None)
            .await;
        assert_eq!(status, 403);
        assert_eq!(body["error"]["details"]["reason"], "not_a_member", "{body}");
        app
    }
);

story!(
    admins_cannot_touch_owners_or_create_keys,
    |app: TestApp| async move {
        let ann = app.person().await;
        let ada = app.person().await;
        let carl = app.person().await;
        let org = app.org(&ann, "Acme").await;
        app.add(&ann, &org, &ada, "admin").await;
        let (status, refused) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/members"),
                &ada.token,
                Some(json!({"email": carl.email, "role": "owner"})),
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (403, "forbidden", ""),
            "{refused}"
        );
        assert_eq!(
            refused["error"]["details"]["required"], "owner",
            "{refused}"
        );
        app.add(&ada, &org, &carl, "member").await;
        let (status, refused) = app
            .call(
                Method::PATCH,
                &format!("/orgs/{org}/members/{}", ann.id),
                &ada.token,
                Some(json!({"role": "member"})),
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (403, "forbidden", ""),
            "{refused}"
        );
        assert_eq!(
            refused["error"]["details"]["required"], "owner",
            "{refused}"
        );
        let (status, refused) = app
            .call(
                Method::DELETE,
                &format!("/orgs/{org}/members/{}", ann.id),
                &ada.token,
                None,
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (403, "forbidden", ""),
            "{refused}"
        );
        assert_eq!(
            refused["error"]["details"]["required"], "owner",
            "{refused}"
        );
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/api-keys"),
                &ada.token,
                Some(json!({"name": "k"})),
            )
            .await;
        assert_eq!(
            (status, body["error"]["details"]["required"].clone()),
            (403, json!("keys:write"))
        );
        let (status, refused) = app
            .call(Method::DELETE, &format!("/orgs/{org}"), &ada.token, None)
            .await;
        assert_eq!(
            refusal(status, &refused),
            (403, "forbidden", ""),
            "{refused}"
        );
        assert_eq!(
            refused["error"]["details"]["required"], "owner",
            "{refused}"
        );
        let (status, _) = app
            .call(
                Method::PATCH,
                &format!("/orgs/{org}"),
                &ada.token,
                Some(json!({"name": "Renamed"})),
            )
            .await;
        assert_eq!(status, 200);
        app
    }
);

story!(
    custom_roles_grant_exactly_their_permissions,
    |app: TestApp| async move {
        let ann = app.person().await;
        let ada = app.person().await;
        let coach = app.person().await;
        let org = app.org(&ann, "Acme").await;
        app.add(&ann, &org, &ada, "admin").await;
        let (status, _) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/roles"),
                &ada.token,
                Some(json!({"name": "keymaster", "permissions": ["keys:write"]})),
            )
            .await;
        assert_eq!(
            status, 403,
            "an admin cannot mint a role with a permission it lacks"
        );
        let (status, refused) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/roles"),
                &ann.token,
                Some(json!({"name": "coach", "permissions": ["chat:write", "nope:nope"]})),
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (422, "validation_failed", ""),
            "{refused}"
        );
        let (status, refused) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/roles"),
                &ann.token,
                Some(json!({"name": "owner", "permissions": []})),
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (422, "validation_failed", ""),
            "{refused}"
        );
        let (status, role) = app.call(Method::POST, &format!("/orgs/{org}/roles"), &ann.token, Some(json!({"name": "coach", "permissions": ["chat:write", "threads:read", "keys:read"]}))).await;
        assert_eq!(
            (status, role["data"]["name"].clone()),
            (201, json!("coach"))
        );
        app.add(&ann, &org, &coach, "coach").await;
        let (status, _) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/api-keys"),
                &coach.token,
                None,
            )
            .await;
        assert_eq!(status, 200);
        let (status, body) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/members"),
                &coach.token,
                None,
            )
            .await;
        assert_eq!(
            (status, body["error"]["details"]["required"].clone()),
            (403, json!("members:read"))
        );
        let (status, roles) = app
            .call(Method::GET, &format!("/orgs/{org}/roles"), &ann.token, None)
            .await;
        assert_eq!(status, 200);
        assert_eq!(roles["data"].as_array().unwrap().len(), 4);
        let (status, refused) = app
            .call(
                Method::DELETE,
                &format!("/orgs/{org}/roles/coach"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(
            refusal(status, &refused),
            (409, "conflict", ""),
            "still held: {refused}"
        );
        let (status, _) = app
            .call(
                Method::DELETE,
                &format!("/orgs/{org}/members/{}", coach.id),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(status, 204);
        let (status, _) = app
            .call(
                Method::DELETE,
                &format!("/orgs/{org}/roles/coach"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(status, 204);
        app
    }
);

story!(
    deleting_an_organization_takes_its_keys_with_it,
    |app: TestApp| async move {
        let ann = app.person().await;
        let org = app.org(&ann, "Doomed").await;
        let (key, _) = app.key(&ann, &org, &["chat:write"]).await;
        assert_eq!(app.me(&key).await.status(), 200);
        let (status, _) = app
            .call(Method::DELETE, &format!("/orgs/{org}"), &ann.token, None)
            .await;
        assert_eq!(status, 204);
        let (status, body) = crate::helpers::parts(app.me(&key).await).await;
        assert_eq!(
            (status, body["error"]["details"]["reason"].clone()),
            (401, json!("not_found"))
        );
        let (status, refused) = app
            .call(Method::GET, &format!("/orgs/{org}"), &ann.token, None)
            .await;
        assert_eq!(
            refusal(status, &refused),
            (403, "forbidden", "not_a_member"),
            "{refused}"
        );
        app
    }
);

story!(
    me_shows_membership_changes_at_once,
    |app: TestApp| async move {
        let ann = app.person().await;
        let bob = app.person().await;
        let orgs_of = |p: &crate::helpers::Person| {
            let req = app.v1(Method::GET, "/me", &p.token);
            async move {
                let (status, me) = parts(req.send().await.unwrap()).await;
                assert_eq!(status, 200, "{me}");
                me["data"]["organizations"].clone()
            }
        };
        assert_eq!(orgs_of(&bob).await, json!([]), "warms Bob's cached list");
        let org = app.org(&ann, "Acme").await;
        assert_eq!(
            orgs_of(&ann).await[0]["role"],
            "owner",
            "a new org is listed"
        );
        app.add(&ann, &org, &bob, "member").await;
        let list = orgs_of(&bob).await;
        assert_eq!(
            (list[0]["id"].as_str(), list[0]["role"].as_str()),
            (Some(org.as_str()), Some("member"))
        );
        let (status, _) = app
            .call(
                Method::PATCH,
                &format!("/orgs/{org}/members/{}", bob.id),
                &ann.token,
                Some(json!({"role": "admin"})),
            )
            .await;
        assert_eq!(status, 200);
        let list = orgs_of(&bob).await;
        assert_eq!(list[0]["role"], "admin");
        assert!(list[0]["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("members:write")));
        let (status, _) = app
            .call(
                Method::PATCH,
                &format!("/orgs/{org}"),
                &ann.token,
                Some(json!({"name": "Acme Two"})),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            orgs_of(&bob).await[0]["name"],
            "Acme Two",
            "a rename reaches every member"
        );
        let (status, _) = app
            .call(
                Method::DELETE,
                &format!("/orgs/{org}/members/{}", bob.id),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(status, 204);
        assert_eq!(orgs_of(&bob).await, json!([]));
        let (status, _) = app
            .call(Method::DELETE, &format!("/orgs/{org}"), &ann.token, None)
            .await;
        assert_eq!(status, 204);
        assert_eq!(orgs_of(&ann).await, json!([]), "a deleted org is gone");
        app
    }
);

story!(
    nobody_changes_or_removes_a_member_who_holds_permissions_they_lack,
    |app: TestApp| async move {
        let ann = app.person().await;
        let ada = app.person().await;
        let mo = app.person().await;
        let carl = app.person().await;
        let org = app.org(&ann, "Acme").await;
        // A manager holds members:write and what a member holds, but not the admin's writes.
        let mut perms: Vec<&str> = vec!["members:write", "chat:write"];
        perms.extend([
            "keys:read",
            "members:read",
            "widgets:read",
            "threads:read",
            "analytics:read",
            "audit:read",
            "webhooks:read",
            "export:read",
        ]);
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/roles"),
                &ann.token,
                Some(json!({"name": "manager", "permissions": perms})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        app.add(&ann, &org, &ada, "admin").await;
        app.add(&ann, &org, &mo, "manager").await;
        app.add(&ann, &org, &carl, "member").await;
        for (method, body) in [
            (Method::PATCH, Some(json!({"role": "member"}))),
            (Method::DELETE, None),
        ] {
            let (status, err) = app
                .call(
                    method,
                    &format!("/orgs/{org}/members/{}", ada.id),
                    &mo.token,
                    body,
                )
                .await;
            assert_eq!(refusal(status, &err), (403, "forbidden", ""), "{err}");
            assert_eq!(err["error"]["details"]["required"], json!("widgets:write"));
        }
        let (status, members) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/members"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert!(members["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["user_id"] == json!(ada.id) && m["role"] == json!("admin")));
        // A member's permissions are all the manager's: it may act on them.
        let (status, body) = app
            .call(
                Method::DELETE,
                &format!("/orgs/{org}/members/{}", carl.id),
                &mo.token,
                None,
            )
            .await;
        assert_eq!(status, 204, "{body}");
        app
    }
);
