//! Members join by invitation: invite, the mail (through a real SMTP conversation), accept,
//! decline, revoke, expiry, limits, and no difference between registered and unknown addresses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{refusal, Db, Person, TestApp};
use crate::smtp_sink::{Received, SmtpSink};
use crate::story;

const HOUR_MS: i64 = 3_600_000;

/// A server sending through a fresh sink, `autoconfirm` as given, on a manual clock the
/// story may move.
async fn spawn(
    db: Db,
    autoconfirm: bool,
    tweak: impl FnOnce(&mut gatehouse::config::Config),
) -> (TestApp, SmtpSink, gatehouse::clock::Clock) {
    let clock = gatehouse::clock::Clock::manual(gatehouse::clock::Clock::System.now_ms());
    let sink = SmtpSink::start().await;
    let url = sink.url(None);
    let app = TestApp::spawn_with_clock(db, clock.clone(), move |c| {
        c.autoconfirm = autoconfirm;
        c.smtp_url = Some(gatehouse::config::SecretString::from(url));
        tweak(c);
    })
    .await;
    (app, sink, clock)
}

fn fresh() -> String {
    format!("invitee-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// The accept link of an invitation mail and its token.
fn accept_link(mail: &Received) -> (String, String) {
    let d = mail.decoded();
    let start = d.find("/dashboard/#invitation=").expect("no accept link");
    let begin = d[..start].rfind("http").unwrap();
    let s = &d[begin..];
    let end = s
        .find(|c: char| c.is_whitespace() || c == '"' || c == '<')
        .unwrap_or(s.len());
    let link = s[..end].replace("&amp;", "&");
    let frag = link.split_once('#').unwrap().1.to_string();
    let token = url::form_urlencoded::parse(frag.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    (link, token)
}

async fn invite(app: &TestApp, by: &str, org: &str, email: &str, role: &str) -> (u16, Value) {
    app.call(
        Method::POST,
        &format!("/orgs/{org}/invitations"),
        by,
        Some(json!({"email": email, "role": role})),
    )
    .await
}

async fn org_count(app: &TestApp, who: &Person) -> usize {
    let (status, me) = app.call(Method::GET, "/me", &who.token, None).await;
    assert_eq!(status, 200, "{me}");
    me["data"]["organizations"].as_array().unwrap().len()
}

/// A connection of the test's own to the server's database.
async fn db(app: &TestApp) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&app.db.url).await.unwrap()
}

/// A membership row written directly: no invitation, no mail, no limit spent.
async fn enrol(app: &TestApp, org: &str, who: &Person, role: &str) {
    sqlx::query(
        "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, 0)",
    )
    .bind(org)
    .bind(&who.id)
    .bind(role)
    .execute(&db(app).await)
    .await
    .unwrap();
}

/// A fresh access token for `who` (after the clock moved).
async fn sign_in_again(app: &TestApp, who: &Person) -> Person {
    let (status, s) =
        crate::helpers::parts(app.sign_in(&who.email, "correct horse battery").await).await;
    assert_eq!(status, 200, "{s}");
    Person {
        email: who.email.clone(),
        id: who.id.clone(),
        token: s["access_token"].as_str().unwrap().to_string(),
    }
}

async fn post_public(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let res = app
        .client
        .post(app.url(&format!("/v1{path}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    crate::helpers::parts(res).await
}

story!(
    an_invitation_is_mailed_and_accepted_by_an_existing_user,
    setup: |db| spawn(db, true, |_c| {}),
    |(app, sink, _clock): (TestApp, SmtpSink, gatehouse::clock::Clock)| async move {
        let ann = app.person().await;
        let bob = app.person().await;
        let org = app.org(&ann, "Acme Rockets").await;
        let (status, body) = invite(&app, &ann.token, &org, &bob.email, "admin").await;
        assert_eq!(status, 201, "{body}");
        let inv = &body["data"];
        let id = inv["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("inv_"), "{inv}");
        assert_eq!(inv["email"], json!(bob.email));
        assert_eq!(inv["role"], "admin");
        assert_eq!(inv["inviter_email"], json!(ann.email));
        assert_eq!(inv["status"], "pending");
        assert_eq!(
            inv["expires_at"].as_i64().unwrap() - inv["created_at"].as_i64().unwrap(),
            48 * HOUR_MS
        );
        assert!(inv.get("token").is_none() && inv.get("token_hash").is_none());
        // Not a member, nothing revealed or enrolled before acceptance.
        assert_eq!(org_count(&app, &bob).await, 0);
        let mail = sink.wait_for(&bob.email, 1, 10).await.remove(0);
        let text = mail.decoded().replace("\r\n ", " ");
        assert!(
            text.contains("invited you to Acme Rockets"),
            "subject: {text}"
        );
        assert!(
            text.contains(&format!(
                "{} invited {} to join Acme Rockets as admin",
                ann.email, bob.email
            )),
            "{text}"
        );
        let (link, token) = accept_link(&mail);
        assert!(link.starts_with(&format!("{}/dashboard/#invitation={id}&token=", app.base)));
        assert!(token.len() >= 43, "a 256-bit token");
        // The token is stored only as a hash.
        let stored: Vec<(String,)> = sqlx::query_as("SELECT token_hash FROM invitations")
            .fetch_all(&db(&app).await)
            .await
            .unwrap();
        assert!(stored.iter().all(|(h,)| h != &token && h.len() == 64));
        // The link's holder may see what it is for.
        let (status, seen) =
            post_public(&app, "/invitations/lookup", json!({"token": token})).await;
        assert_eq!(
            (status, seen["data"]["org_name"].clone()),
            (200, json!("Acme Rockets"))
        );
        let (status, mine) = app
            .call(Method::GET, "/invitations", &bob.token, None)
            .await;
        assert_eq!(status, 200);
        assert_eq!(mine["data"][0]["id"], json!(id));
        let (status, accepted) = app
            .call(
                Method::POST,
                &format!("/invitations/{id}/accept"),
                &bob.token,
                None,
            )
            .await;
        assert_eq!(
            (status, accepted["data"]["status"].clone()),
            (200, json!("accepted")),
            "{accepted}"
        );
        assert_eq!(org_count(&app, &bob).await, 1);
        let (_, members) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/members"),
                &ann.token,
                None,
            )
            .await;
        assert!(members["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["user_id"] == json!(bob.id) && m["role"] == "admin"));
        // Single use: neither the link nor the id accepts again.
        let (status, again) = app
            .call(
                Method::POST,
                &format!("/invitations/{id}/accept"),
                &bob.token,
                None,
            )
            .await;
        assert_eq!(
            (status, again["error"]["details"]["reason"].clone()),
            (409, json!("accepted"))
        );
        let (status, refused) = post_public(
            &app,
            "/invitations/redeem",
            json!({"token": token, "password": "correct horse battery"}),
        )
        .await;
        assert_eq!(refusal(status, &refused), (409, "conflict", "accepted"), "{refused}");
        let (_, log) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/audit-log"),
                &ann.token,
                None,
            )
            .await;
        let actions: Vec<&str> = log["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        for a in ["invitation.created", "invitation.accepted", "member.added"] {
            assert!(actions.contains(&a), "{a} missing from {actions:?}");
        }
        app
    }
);

story!(
    the_answer_is_the_same_for_registered_unknown_and_member_addresses,
    setup: |db| spawn(db, true, |_c| {}),
    |(app, sink, _clock): (TestApp, SmtpSink, gatehouse::clock::Clock)| async move {
        let ann = app.person().await;
        let bob = app.person().await;
        let carl = app.person().await;
        let org = app.org(&ann, "Acme").await;
        enrol(&app, &org, &carl, "member").await;
        let ghost = fresh();
        let mut answers = Vec::new();
        for email in [carl.email.as_str(), bob.email.as_str(), ghost.as_str()] {
            let (status, body) = invite(&app, &ann.token, &org, email, "member").await;
            let mut data = body["data"].clone();
            let keys: Vec<String> = data.as_object().unwrap().keys().cloned().collect();
            for k in ["id", "email", "created_at", "expires_at"] {
                data.as_object_mut().unwrap().remove(k);
            }
            answers.push((status, keys, data));
        }
        assert_eq!(answers[0], answers[1], "member vs registered");
        assert_eq!(answers[1], answers[2], "registered vs unknown");
        assert_eq!(answers[0].0, 201);
        // The deprecated route answers alike and enrols nobody.
        let dan = app.person().await;
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/members"),
                &ann.token,
                Some(json!({"email": dan.email, "role": "member"})),
            )
            .await;
        assert_eq!(
            (status, body["data"]["status"].clone()),
            (201, json!("pending")),
            "{body}"
        );
        assert!(body["data"].get("user_id").is_none());
        assert_eq!(org_count(&app, &bob).await, 0);
        assert_eq!(org_count(&app, &dan).await, 0);
        // Registered and unknown addresses get the mail, a member none.
        sink.wait_for(&bob.email, 1, 10).await;
        sink.wait_for(&ghost, 1, 10).await;
        sink.wait_for(&dan.email, 1, 10).await;
        // The worker records a mail as sent just after the sink has it: wait for that.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while app.state.runtime.store.pending_mail_count().await.unwrap() > 0 {
            assert!(std::time::Instant::now() < deadline, "mail still queued");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(sink.to(&carl.email).is_empty(), "a member gets no mail");
        app
    }
);

story!(
    invitations_are_declined_revoked_and_refused_to_other_addresses,
    setup: |db| spawn(db, true, |_c| {}),
    |(app, _sink, _clock): (TestApp, SmtpSink, gatehouse::clock::Clock)| async move {
        let ann = app.person().await;
        let bob = app.person().await;
        let carl = app.person().await;
        let mo = app.person().await;
        let org = app.org(&ann, "Acme").await;
        app.add(&ann, &org, &mo, "member").await;
        let (_, b) = invite(&app, &ann.token, &org, &bob.email, "member").await;
        let bob_inv = b["data"]["id"].as_str().unwrap().to_string();
        let (_, c) = invite(&app, &ann.token, &org, &carl.email, "member").await;
        let carl_inv = c["data"]["id"].as_str().unwrap().to_string();
        // Someone else's invitation is refused, without saying whose.
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/invitations/{bob_inv}/accept"),
                &carl.token,
                None,
            )
            .await;
        assert_eq!(
            (status, body["error"]["details"]["reason"].clone()),
            (403, json!("wrong_email"))
        );
        assert!(!body.to_string().contains(&bob.email));
        let (_, mine) = app
            .call(Method::GET, "/invitations", &carl.token, None)
            .await;
        assert_eq!(mine["data"].as_array().unwrap().len(), 1);
        assert_eq!(org_count(&app, &carl).await, 0);
        // Declined: no longer acceptable.
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/invitations/{bob_inv}/decline"),
                &bob.token,
                None,
            )
            .await;
        assert_eq!(
            (status, body["data"]["status"].clone()),
            (200, json!("declined"))
        );
        let (status, refused) = app
            .call(
                Method::POST,
                &format!("/invitations/{bob_inv}/accept"),
                &bob.token,
                None,
            )
            .await;
        assert_eq!(refusal(status, &refused), (409, "conflict", "declined"), "{refused}");
        assert_eq!(org_count(&app, &bob).await, 0);
        // Revoked: members without members:write cannot; then not acceptable; twice is 409.
        let path = format!("/orgs/{org}/invitations/{carl_inv}");
        let (status, refused) = app.call(Method::DELETE, &path, &mo.token, None).await;
        assert_eq!(refusal(status, &refused), (403, "forbidden", ""), "{refused}");
        assert_eq!(refused["error"]["details"]["required"], "members:write");
        let (status, _) = app.call(Method::DELETE, &path, &ann.token, None).await;
        assert_eq!(status, 204);
        let (status, refused) = app.call(Method::DELETE, &path, &ann.token, None).await;
        assert_eq!(refusal(status, &refused), (409, "conflict", "revoked"), "{refused}");
        let (status, refused) = app
            .call(
                Method::POST,
                &format!("/invitations/{carl_inv}/accept"),
                &carl.token,
                None,
            )
            .await;
        assert_eq!(refusal(status, &refused), (409, "conflict", "revoked"), "{refused}");
        assert_eq!(org_count(&app, &carl).await, 0);
        let missing = format!("/orgs/{org}/invitations/inv_{}", "0".repeat(32));
        let (status, refused) = app.call(Method::DELETE, &missing, &ann.token, None).await;
        assert_eq!(refusal(status, &refused), (404, "not_found", ""), "{refused}");
        let (status, refused) = app
            .call(
                Method::DELETE,
                &format!("/orgs/{org}/invitations/nope"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(refusal(status, &refused), (400, "invalid_request", "malformed_id"), "{refused}");
        // Members read the list: every state is there.
        let (status, list) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/invitations"),
                &mo.token,
                None,
            )
            .await;
        assert_eq!(status, 200);
        let status_of = |id: &str| {
            list["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["id"] == json!(id))
                .map(|i| i["status"].clone())
        };
        assert_eq!(status_of(&bob_inv), Some(json!("declined")));
        assert_eq!(status_of(&carl_inv), Some(json!("revoked")));
        app
    }
);

story!(
    an_invitation_expires_after_invitation_seconds,
    setup: |db| spawn(db, true, |_c| {}),
    |(app, _sink, clock): (TestApp, SmtpSink, gatehouse::clock::Clock)| async move {
        let ann = app.person().await;
        let bob = app.person().await;
        let org = app.org(&ann, "Acme").await;
        let (_, b) = invite(&app, &ann.token, &org, &bob.email, "member").await;
        let id = b["data"]["id"].as_str().unwrap().to_string();
        clock.advance_ms(48 * HOUR_MS - 1000);
        let bob = sign_in_again(&app, &bob).await;
        let ann = sign_in_again(&app, &ann).await;
        let (_, mine) = app
            .call(Method::GET, "/invitations", &bob.token, None)
            .await;
        assert_eq!(mine["data"].as_array().unwrap().len(), 1, "still pending");
        clock.advance_ms(1000);
        let (_, mine) = app
            .call(Method::GET, "/invitations", &bob.token, None)
            .await;
        assert_eq!(mine["data"].as_array().unwrap().len(), 0);
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/invitations/{id}/accept"),
                &bob.token,
                None,
            )
            .await;
        assert_eq!(
            (status, body["error"]["details"]["reason"].clone()),
            (409, json!("expired"))
        );
        let (_, list) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/invitations"),
                &ann.token,
                None,
            )
            .await;
        assert_eq!(list["data"][0]["status"], "expired");
        assert_eq!(org_count(&app, &bob).await, 0);
        app
    }
);

story!(
    inviting_again_replaces_the_pending_invitation_and_mails_again,
    setup: |db| spawn(db, true, |_c| {}),
    |(app, sink, clock): (TestApp, SmtpSink, gatehouse::clock::Clock)| async move {
        let ann = app.person().await;
        let bob = app.person().await;
        let org = app.org(&ann, "Acme").await;
        let (_, first) = invite(&app, &ann.token, &org, &bob.email, "member").await;
        let first_mail = sink.wait_for(&bob.email, 1, 10).await.remove(0);
        let (_, old_token) = accept_link(&first_mail);
        // The per-address mail interval applies to invitations too.
        let (status, body) = invite(&app, &ann.token, &org, &bob.email, "admin").await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (429, json!("rate_limited"))
        );
        clock.advance_ms(61_000);
        let (status, second) = invite(&app, &ann.token, &org, &bob.email, "admin").await;
        assert_eq!(status, 201, "{second}");
        assert_ne!(first["data"]["id"], second["data"]["id"]);
        let mails = sink.wait_for(&bob.email, 2, 10).await;
        let (_, new_token) = accept_link(&mails[1]);
        assert!(mails[1].decoded().contains("as admin"));
        let (_, list) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/invitations"),
                &ann.token,
                None,
            )
            .await;
        let list = list["data"].as_array().unwrap();
        assert_eq!(list.len(), 1, "replaced, not added: {list:?}");
        assert_eq!(list[0]["role"], "admin");
        let (status, refused) =
            post_public(&app, "/invitations/lookup", json!({"token": old_token})).await;
        assert_eq!(refusal(status, &refused), (404, "not_found", "invalid_token"), "the replaced link is dead: {refused}");
        let (status, seen) =
            post_public(&app, "/invitations/lookup", json!({"token": new_token})).await;
        assert_eq!(
            (status, seen["data"]["role"].clone()),
            (200, json!("admin"))
        );
        app
    }
);

story!(
    invitations_are_limited_per_organization_and_per_inviter,
    setup: |db| spawn(db, true, |c: &mut gatehouse::config::Config| {
        c.rate_limit_invitation_user = gatehouse::ratelimit::Rates::parse("2/1h").unwrap();
        c.rate_limit_invitation_org = gatehouse::ratelimit::Rates::parse("3/1h").unwrap();
    }),
    |(app, _sink, _clock): (TestApp, SmtpSink, gatehouse::clock::Clock)| async move {
        let ann = app.person().await;
        let ada = app.person().await;
        let mo = app.person().await;
        let org = app.org(&ann, "Acme").await;
        // Direct membership rows: the limits below count only what this story sends.
        enrol(&app, &org, &ada, "admin").await;
        enrol(&app, &org, &mo, "member").await;
        // Nobody offers a role they could not grant.
        let (status, body) = invite(&app, &ada.token, &org, &fresh(), "owner").await;
        assert_eq!(
            (status, body["error"]["details"]["required"].clone()),
            (403, json!("owner"))
        );
        let (status, body) = invite(&app, &mo.token, &org, &fresh(), "member").await;
        assert_eq!(
            (status, body["error"]["details"]["required"].clone()),
            (403, json!("members:write"))
        );
        for _ in 0..2 {
            assert_eq!(
                invite(&app, &ann.token, &org, &fresh(), "member").await.0,
                201
            );
        }
        let (status, body) = invite(&app, &ann.token, &org, &fresh(), "member").await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (429, json!("rate_limited")),
            "per inviter"
        );
        assert_eq!(
            invite(&app, &ada.token, &org, &fresh(), "member").await.0,
            201
        );
        let (status, refused) = invite(&app, &ada.token, &org, &fresh(), "member").await;
        assert_eq!(refusal(status, &refused), (429, "rate_limited", ""), "per organization: {refused}");
        // Another organization has its own window; the inviter's own is then spent.
        let other = app.org(&ada, "Other").await;
        assert_eq!(
            invite(&app, &ada.token, &other, &fresh(), "member").await.0,
            201
        );
        let (status, refused) = invite(&app, &ada.token, &other, &fresh(), "member").await;
        assert_eq!(refusal(status, &refused), (429, "rate_limited", ""), "per inviter, across organizations");
        let (status, body) = invite(&app, &ann.token, &org, "not an address", "member").await;
        assert_eq!(refusal(status, &body), (422, "validation_failed", ""), "{body}");
        app
    }
);

story!(
    a_new_user_signs_up_from_the_link_and_lands_in_the_organization,
    setup: |db| spawn(db, false, |_c| {}),
    |(app, sink, clock): (TestApp, SmtpSink, gatehouse::clock::Clock)| async move {
        let owner_email = fresh();
        app.state
            .accounts
            .create_confirmed_user(&owner_email, "correct horse battery".into())
            .await
            .unwrap();
        let (_, s) =
            crate::helpers::parts(app.sign_in(&owner_email, "correct horse battery").await).await;
        let owner = Person {
            email: owner_email,
            id: s["user"]["id"].as_str().unwrap().to_string(),
            token: s["access_token"].as_str().unwrap().to_string(),
        };
        let org = app.org(&owner, "Acme").await;
        // An account someone else made for an address before its invitation, never confirmed.
        let squatted = fresh();
        assert_eq!(
            app.signup(&squatted, "squatter password").await.status(),
            200
        );
        clock.advance_ms(61_000);
        let newcomer = fresh();
        for email in [&newcomer, &squatted] {
            assert_eq!(
                invite(&app, &owner.token, &org, email, "member").await.0,
                201
            );
        }
        let mail = sink
            .wait_for(&newcomer, 1, 10)
            .await
            .into_iter()
            .find(|m| m.decoded().contains("/dashboard/#invitation="))
            .unwrap();
        let (_, token) = accept_link(&mail);
        // The page signs up with the public API (no session: confirmation is on). The
        // invitation took the address's mail slot when it was sent, so the sign-up answers
        // 429 for its confirmation mail; the account exists all the same.
        let (status, body) =
            crate::helpers::parts(app.signup(&newcomer, "newcomer password").await).await;
        assert_eq!(
            (status, &body["code"]),
            (429, &json!("over_email_send_rate_limit")),
            "{body}"
        );
        assert!(body["access_token"].is_null());
        // …then accepts with the link's token and that password; a wrong one is refused.
        let (status, refused) = post_public(
            &app,
            "/invitations/redeem",
            json!({"token": token, "password": "not the password"}),
        )
        .await;
        assert_eq!(refusal(status, &refused), (401, "unauthorized", "invalid_credentials"), "{refused}");
        let (status, body) = post_public(
            &app,
            "/invitations/redeem",
            json!({"token": token, "password": "newcomer password"}),
        )
        .await;
        assert_eq!(
            (status, body["data"]["status"].clone()),
            (200, json!("accepted")),
            "{body}"
        );
        // The token proved the address: signing in needs no confirmation mail.
        let (status, s) =
            crate::helpers::parts(app.sign_in(&newcomer, "newcomer password").await).await;
        assert_eq!(status, 200, "{s}");
        let me = Person {
            email: newcomer.clone(),
            id: s["user"]["id"].as_str().unwrap().to_string(),
            token: s["access_token"].as_str().unwrap().to_string(),
        };
        assert_eq!(org_count(&app, &me).await, 1);
        // Without an account, the link alone creates one, confirmed, with the password given.
        let brand_new = fresh();
        assert_eq!(
            invite(&app, &owner.token, &org, &brand_new, "member")
                .await
                .0,
            201
        );
        let mail = sink.wait_for(&brand_new, 1, 10).await.remove(0);
        let (_, token) = accept_link(&mail);
        let (status, body) = post_public(
            &app,
            "/invitations/redeem",
            json!({"token": token, "password": "short"}),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (422, json!("validation_failed"))
        );
        let (status, body) = post_public(
            &app,
            "/invitations/redeem",
            json!({"token": token, "password": "brand new password"}),
        )
        .await;
        assert_eq!(
            (status, body["data"]["status"].clone()),
            (200, json!("accepted")),
            "{body}"
        );
        let (status, _) =
            crate::helpers::parts(app.sign_in(&brand_new, "brand new password").await).await;
        assert_eq!(status, 200);
        assert_eq!(sink.to(&brand_new).len(), 1, "no confirmation mail");
        // The squatter's password, set before the invitation existed, is never confirmed.
        let squat_mail = sink
            .wait_for(&squatted, 2, 10)
            .await
            .into_iter()
            .find(|m| m.decoded().contains("/dashboard/#invitation="))
            .unwrap();
        let (_, squat_token) = accept_link(&squat_mail);
        let (status, body) = post_public(
            &app,
            "/invitations/redeem",
            json!({"token": squat_token, "password": "squatter password"}),
        )
        .await;
        assert_eq!(
            (status, body["error"]["details"]["reason"].clone()),
            (409, json!("account_predates_invitation"))
        );
        let (status, body) =
            crate::helpers::parts(app.sign_in(&squatted, "squatter password").await).await;
        assert_eq!(
            (status, &body["code"]),
            (400, &json!("email_not_confirmed")),
            "still unconfirmed: {body}"
        );
        app
    }
);
