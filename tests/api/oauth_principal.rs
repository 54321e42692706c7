//! OAuth access tokens as a third kind of caller: the Bearer challenge on `/v1` and `/api`,
//! the audience check, `/v1/me`, scopes enforced as a key's and cut to what the person holds
//! now, grants revoked at the next use, limits per client and per person, the proxy's
//! identity headers and audit entries naming the client. Tokens come from the real flow
//! (registration, the dashboard cookie's consent, the token endpoint) unless a test needs one
//! the flow never issues (another audience, another type).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gatehouse::auth::jwt::AccessClaims;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Digest;

use crate::helpers::{parts, refusal, Person, TestApp};
use crate::story;

const REDIRECT: &str = "http://127.0.0.1:43110/callback";

/// A registered public client: its id.
pub(crate) async fn register(app: &TestApp, name: &str) -> String {
    let res = app
        .client
        .post(app.url("/oauth/register"))
        .json(&json!({
            "client_name": name,
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }))
        .send()
        .await
        .unwrap();
    let (status, body) = parts(res).await;
    assert_eq!(status, 201, "{body}");
    body["client_id"].as_str().unwrap().to_string()
}

/// The data of an answer in the `/v1` envelope, or the plain JSON of an `/oauth` route.
fn data(body: Value) -> Value {
    if body["success"] == json!(true) {
        body["data"].clone()
    } else {
        body
    }
}

/// Tokens from the whole code flow: `who` signs in to the dashboard (cookie), is sent to the
/// consent page by `/oauth/authorize`, approves for `org`, and the code is exchanged with
/// the PKCE verifier for `resource` (`v1` or `api`). Answers the token endpoint's JSON.
pub(crate) async fn authorize(
    app: &TestApp,
    who: &Person,
    client_id: &str,
    org: &str,
    scope: &str,
    resource: &str,
) -> Value {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = browser
        .post(app.url("/v1/session"))
        .json(&json!({"access_token": who.token}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let resource = app.url(&format!("/{resource}"));
    let res = browser
        .get(app.url("/oauth/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("scope", scope),
            ("state", "xyz"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("resource", &resource),
        ])
        .send()
        .await
        .unwrap();
    assert!(res.status().is_redirection(), "{}", res.status());
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let back = if location.starts_with(REDIRECT) {
        location
    } else {
        let id = location
            .split("request=")
            .nth(1)
            .unwrap_or_else(|| panic!("no consent request in {location}"))
            .split('&')
            .next()
            .unwrap()
            .to_string();
        let res = browser
            .post(app.url(&format!("/oauth/requests/{id}")))
            .header("origin", app.base.clone())
            .json(&json!({"decision": "approve", "org_id": org}))
            .send()
            .await
            .unwrap();
        let (status, body) = parts(res).await;
        assert_eq!(status, 200, "{body}");
        data(body)["redirect_to"].as_str().unwrap().to_string()
    };
    let url = reqwest::Url::parse(&back).unwrap();
    let code = url
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| panic!("no code in {back}"));
    let res = app
        .client
        .post(app.url("/oauth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", client_id),
            ("code_verifier", &verifier),
            ("resource", &resource),
        ])
        .send()
        .await
        .unwrap();
    let (status, body) = parts(res).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// An access token from the flow (the `v1` resource).
pub(crate) async fn access(
    app: &TestApp,
    who: &Person,
    org: &str,
    scope: &str,
) -> (String, String) {
    let client_id = register(app, "Probe").await;
    let t = authorize(app, who, &client_id, org, scope, "v1").await;
    (t["access_token"].as_str().unwrap().to_string(), client_id)
}

/// The claims of a JWT (unverified).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn challenge(res: &reqwest::Response) -> String {
    res.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

story!(
    every_401_of_a_protected_resource_names_its_metadata,
    |c: &mut gatehouse::config::Config| c.proxy_target = Some("http://127.0.0.1:9".into()),
    |app: TestApp| async move {
        let v1 = app.url("/.well-known/oauth-protected-resource/v1");
        let api = app.url("/.well-known/oauth-protected-resource/api");
        let res = app.client.get(app.url("/v1/me")).send().await.unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(
            challenge(&res),
            format!("Bearer resource_metadata=\"{v1}\"")
        );
        // A refused token: the same, with error="invalid_token" (RFC 6750 §3.1).
        let res = app.me("not-a-token").await;
        assert_eq!(res.status(), 401);
        assert_eq!(
            challenge(&res),
            format!("Bearer resource_metadata=\"{v1}\", error=\"invalid_token\"")
        );
        // The proxy is its own resource; the chat gateway under /api belongs to /v1.
        let res = app.client.get(app.url("/api/mcp")).send().await.unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(
            challenge(&res),
            format!("Bearer resource_metadata=\"{api}\"")
        );
        let res = app
            .client
            .post(app.url("/api/chat"))
            .json(&json!({"message": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(
            challenge(&res),
            format!("Bearer resource_metadata=\"{v1}\"")
        );
        // Supabase's routes are not an OAuth resource: no challenge there.
        let res = app
            .auth(Method::GET, "/user")
            .bearer_auth("not-a-token")
            .send()
            .await
            .unwrap();
        assert_eq!(challenge(&res), "");
        // A browser client may read it.
        let res = app
            .client
            .get(app.url("/v1/me"))
            .header("origin", "https://app.example")
            .send()
            .await
            .unwrap();
        let exposed = res.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(exposed.contains("www-authenticate"), "{exposed}");
        app
    }
);

story!(
    a_token_for_another_resource_or_of_another_type_is_refused,
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let now = gatehouse::clock::Clock::System.now_secs();
        let at = |aud: String| AccessClaims {
            iss: app.base.clone(),
            sub: owner.id.clone(),
            aud,
            exp: now + 600,
            iat: now,
            jti: "j1".into(),
            client_id: "c1".into(),
            scope: "keys:read".into(),
            org_id: org.clone(),
            grant_id: "oag_none".into(),
            aal: None,
            amr: Vec::new(),
        };
        let jwt = &app.state.accounts.jwt;
        // Signed by this deployment, but for the /api resource: 401 invalid_token at /v1.
        let other = jwt.sign_access(&at(app.url("/api"))).unwrap();
        let res = app.me(&other).await;
        assert!(challenge(&res).ends_with("error=\"invalid_token\""));
        let (status, body) = parts(res).await;
        assert_eq!(
            refusal(status, &body),
            (401, "unauthorized", "wrong_audience")
        );
        // For /v1 but under no grant: revoked (a grant that never was is no grant).
        let (status, body) =
            parts(app.me(&jwt.sign_access(&at(app.url("/v1"))).unwrap()).await).await;
        assert_eq!(refusal(status, &body), (401, "unauthorized", "revoked"));
        // Another issuer: invalid, whatever the audience.
        let mut foreign = at(app.url("/v1"));
        foreign.iss = "https://elsewhere.example".into();
        let (status, body) = parts(app.me(&jwt.sign_access(&foreign).unwrap()).await).await;
        assert_eq!(refusal(status, &body), (401, "unauthorized", "malformed"));
        // The same claims with `typ: at+jwt` but signed with a guessed secret: invalid.
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        let forged = jsonwebtoken::encode(
            &header,
            &at(app.url("/v1")),
            &jsonwebtoken::EncodingKey::from_secret(b"guess"),
        )
        .unwrap();
        let (status, body) = parts(app.me(&forged).await).await;
        assert_eq!(refusal(status, &body), (401, "unauthorized", "malformed"));
        // An OAuth token is no Supabase session either.
        let res = app
            .auth(Method::GET, "/user")
            .bearer_auth(jwt.sign_access(&at(app.url("/v1"))).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        app
    }
);

story!(
    an_oauth_client_is_a_third_kind_of_caller_with_the_scopes_the_person_holds_now,
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let ann = app.person().await;
        app.add(&owner, &org, &ann, "admin").await;
        let (token, client_id) = access(
            &app,
            &ann,
            &org,
            "openid offline_access keys:read members:read webhooks:write",
        )
        .await;
        let c = claims(&token);
        assert_eq!(c["aud"], json!(app.url("/v1")));
        assert_eq!(c["org_id"], json!(org));

        let (status, me) = app.call(Method::GET, "/me", &token, None).await;
        assert_eq!(status, 200, "{me}");
        let me = &me["data"];
        assert_eq!(me["kind"], "oauth_client");
        assert_eq!(me["via"], "oauth");
        assert_eq!(me["user_id"], json!(ann.id));
        assert_eq!(me["org_id"], json!(org));
        assert_eq!(me["client_id"], json!(client_id));
        assert_eq!(me["client_name"], "Probe");
        let scopes: Vec<&str> = me["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        for s in ["openid", "keys:read", "members:read", "webhooks:write"] {
            assert!(scopes.contains(&s), "{s} in {scopes:?}");
        }

        // Scopes are enforced as a key's: granted and held, allowed; not granted, refused.
        let (status, _) = app
            .call(Method::GET, &format!("/orgs/{org}/api-keys"), &token, None)
            .await;
        assert_eq!(status, 200);
        let (status, body) = app
            .call(Method::GET, &format!("/orgs/{org}/webhooks"), &token, None)
            .await;
        assert_eq!(
            (status, body["error"]["details"]["required"].clone()),
            (403, json!("webhooks:read"))
        );
        // Another organization is not the grant's.
        let other = app.org(&ann, "Elsewhere").await;
        let (status, body) = app
            .call(
                Method::GET,
                &format!("/orgs/{other}/api-keys"),
                &token,
                None,
            )
            .await;
        assert_eq!(refusal(status, &body), (403, "forbidden", "not_a_member"));
        // The person's own account stays theirs.
        let (status, body) = app
            .call(Method::POST, "/orgs", &token, Some(json!({"name": "Mine"})))
            .await;
        assert_eq!(
            (status, body["error"]["details"]["required"].clone()),
            (403, json!("user"))
        );

        // A role change applies to the token already issued: an admin's webhooks:write
        // goes with the role (before: past the permission check to the body's; after: 403).
        let hook = json!({"url": "not a url"});
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/webhooks"),
                &token,
                Some(hook.clone()),
            )
            .await;
        assert!(status == 400 || status == 422, "{status} {body}");
        let (status, body) = app
            .call(
                Method::PATCH,
                &format!("/orgs/{org}/members/{}", ann.id),
                &owner.token,
                Some(json!({"role": "member"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/webhooks"),
                &token,
                Some(hook),
            )
            .await;
        assert_eq!(
            (status, body["error"]["details"]["required"].clone()),
            (403, json!("webhooks:write"))
        );
        let (_, me) = app.call(Method::GET, "/me", &token, None).await;
        let now: Vec<Value> = me["data"]["scopes"].as_array().unwrap().clone();
        assert!(
            !now.contains(&json!("webhooks:write")) && now.contains(&json!("keys:read")),
            "{now:?}"
        );
        // Removed from the organization: nothing there.
        let (status, _) = app
            .call(
                Method::DELETE,
                &format!("/orgs/{org}/members/{}", ann.id),
                &owner.token,
                None,
            )
            .await;
        assert_eq!(status, 204);
        let (status, body) = app
            .call(Method::GET, &format!("/orgs/{org}/members"), &token, None)
            .await;
        assert_eq!(refusal(status, &body), (403, "forbidden", "not_a_member"));
        app
    }
);

story!(
    audit_entries_made_by_an_oauth_client_name_it_and_the_person,
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let (token, client_id) = access(&app, &owner, &org, "widgets:write").await;
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/widgets"),
                &token,
                Some(json!({"name": "Made by an app", "allowed_origins": ["https://shop.example.com"]})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let actor = format!("oauth_client:{client_id}/user:{}", owner.id);
        let (status, log) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/audit-log?action=widget.created"),
                &owner.token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{log}");
        assert_eq!(log["data"][0]["actor"], json!(actor));
        // The audit log filters by it.
        let (status, log) = app
            .call(
                Method::GET,
                &format!(
                    "/orgs/{org}/audit-log?actor={}",
                    url::form_urlencoded::byte_serialize(actor.as_bytes()).collect::<String>()
                ),
                &owner.token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{log}");
        assert_eq!(log["data"].as_array().unwrap().len(), 1);
        app
    }
);

story!(
    a_revoked_grant_refuses_its_access_token_at_the_next_use,
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let (token, client_id) = access(&app, &owner, &org, "keys:read").await;
        assert_eq!(app.me(&token).await.status(), 200);
        let (status, grants) = app
            .call(Method::GET, "/me/oauth/grants", &owner.token, None)
            .await;
        assert_eq!(status, 200, "{grants}");
        let grant = grants["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["client_id"] == json!(client_id))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(claims(&token)["grant_id"], json!(grant));
        // An app cannot revoke grants: that is the person's own account.
        let (status, _) = app
            .call(
                Method::DELETE,
                &format!("/me/oauth/grants/{grant}"),
                &token,
                None,
            )
            .await;
        assert_eq!(status, 403);
        let (status, _) = app
            .call(
                Method::DELETE,
                &format!("/me/oauth/grants/{grant}"),
                &owner.token,
                None,
            )
            .await;
        assert!(status == 200 || status == 204, "{status}");
        let res = app.me(&token).await;
        assert!(challenge(&res).contains("error=\"invalid_token\""));
        let (status, body) = parts(res).await;
        assert_eq!(refusal(status, &body), (401, "unauthorized", "revoked"));
        app
    }
);

story!(
    an_oauth_client_is_limited_per_client_and_per_person,
    |c: &mut gatehouse::config::Config| {
        c.rate_limit_api_key = gatehouse::ratelimit::Rates::parse("3/60s").unwrap();
    },
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let (token, _) = access(&app, &owner, &org, "keys:read").await;
        for _ in 0..3 {
            assert_eq!(app.me(&token).await.status(), 200);
        }
        let res = app.me(&token).await;
        assert_eq!(res.status(), 429);
        let policy = res.headers()["ratelimit-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(policy.contains("oauth_client"), "{policy}");
        // Another client of the same person shares the person's window.
        let (second, _) = access(&app, &owner, &org, "keys:read").await;
        assert_eq!(app.me(&second).await.status(), 429);
        app
    }
);

/// A backend that records the headers of every request.
async fn recording_backend() -> (SocketAddr, Arc<Mutex<Vec<axum::http::HeaderMap>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(req.headers().clone());
            "recorded"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

story!(
    the_proxy_tells_the_backend_which_client_acts_for_whom,
    setup: |db| async move {
        let (backend, seen) = recording_backend().await;
        let app = TestApp::spawn(db, |c| c.proxy_target = Some(format!("http://{backend}"))).await;
        (app, seen)
    },
    |(app, seen): (TestApp, Arc<Mutex<Vec<axum::http::HeaderMap>>>)| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let client_id = register(&app, "MCP Probe").await;
        let t = authorize(&app, &owner, &client_id, &org, "chat:write keys:read", "api").await;
        let token = t["access_token"].as_str().unwrap();
        let res = app
            .client
            .post(app.url("/api/mcp"))
            .bearer_auth(token)
            .header("x-gatehouse-client-id", "forged")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let h = seen.lock().unwrap().last().cloned().unwrap();
        let get = |n: &str| h.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(get("x-gatehouse-client-id"), Some(client_id.clone()));
        assert_eq!(get("x-gatehouse-user"), Some(owner.id.clone()));
        assert_eq!(get("x-gatehouse-org"), Some(org.clone()));
        let mut scopes: Vec<String> = get("x-gatehouse-scopes")
            .unwrap()
            .split(',')
            .map(str::to_string)
            .collect();
        scopes.sort();
        assert_eq!(scopes, ["chat:write", "keys:read"]);
        assert_eq!(get("authorization"), None);
        // The same token is not for /v1.
        let (status, body) = parts(app.me(token).await).await;
        assert_eq!(refusal(status, &body), (401, "unauthorized", "wrong_audience"));
        app
    }
);

story!(
    a_new_password_ends_the_persons_oauth_grants,
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let client_id = register(&app, "Probe").await;
        let t = authorize(
            &app,
            &owner,
            &client_id,
            &org,
            "members:read offline_access",
            "v1",
        )
        .await;
        let refresh = t["refresh_token"].as_str().unwrap().to_string();
        // Whoever approved the client, a new password cuts it off.
        let res = app
            .auth(Method::PUT, "/user")
            .bearer_auth(&owner.token)
            .json(&json!({"password": "Violet-Anchor-Mesa-9431"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let res = app
            .client
            .post(app.url("/oauth/token"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("client_id", client_id.as_str()),
            ])
            .send()
            .await
            .unwrap();
        let (status, body) = parts(res).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{body}"
        );
        // The organization's audit log says which grant ended, by whom and why.
        let (status, log) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/audit-log?action=oauth_grant.revoked"),
                &owner.token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{log}");
        let entries = log["data"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "{log}");
        assert_eq!(entries[0]["actor"], format!("user:{}", owner.id));
        assert_eq!(entries[0]["details"]["client_id"], client_id);
        assert_eq!(entries[0]["details"]["why"], "password_changed");
        app
    }
);
