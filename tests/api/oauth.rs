//! Gatehouse as an OAuth 2.1 authorization server (docs/oauth.md): discovery, registration,
//! the code flow with PKCE S256, consent, tokens for a resource, refresh rotation with reuse
//! detection, revocation, introspection, userinfo, and each refusal with its standard code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::{Client, Method};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{clocked, parts, Person, TestApp};
use crate::story;

const REDIRECT: &str = "http://127.0.0.1/callback";

/// A browser: keeps cookies, follows no redirect.
fn browser() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs `who` into the dashboard in `b` (through an access token).
async fn sign_in(app: &TestApp, b: &Client, who: &Person) {
    let res = b
        .post(app.url("/v1/session"))
        .json(&json!({ "access_token": who.token }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

fn pkce() -> (String, String) {
    let verifier = format!("v{}", gatehouse::auth::tokens::random_token(40));
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// Registers a client dynamically; answers the registration response.
async fn register(app: &TestApp, extra: Value) -> Value {
    let mut body = json!({
        "client_name": "Test tool",
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, reg) = parts(
        app.client
            .post(app.url("/oauth/register"))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{reg}");
    reg
}

/// `GET /oauth/authorize` in `b`; answers the status and the `Location`.
async fn authorize(app: &TestApp, b: &Client, pairs: &[(&str, &str)]) -> (u16, String, String) {
    let res = b
        .get(app.url("/oauth/authorize"))
        .query(pairs)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, location, res.text().await.unwrap())
}

fn query_of(location: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn standard<'a>(client_id: &'a str, challenge: &'a str, scope: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", "http://127.0.0.1:43123/callback"),
        ("scope", scope),
        ("state", "st-1"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]
}

/// The consent decision in `b`: answers the status and body.
async fn decide(app: &TestApp, b: &Client, request: &str, body: Value) -> (u16, Value) {
    parts(
        b.post(app.url(&format!("/oauth/requests/{request}")))
            .header("origin", &app.base)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Runs the flow up to the code: authorize, consent (approve in `org`); answers the code.
async fn code_for(
    app: &TestApp,
    b: &Client,
    client_id: &str,
    challenge: &str,
    scope: &str,
    org: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut pairs = standard(client_id, challenge, scope);
    pairs.extend_from_slice(extra);
    let (status, location, _) = authorize(app, b, &pairs).await;
    assert_eq!(status, 302, "{location}");
    let prefix = format!("{}/dashboard/#/oauth/consent?request=", app.base);
    let request = location
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{location}"));
    let (status, view) = parts(
        b.get(app.url(&format!("/oauth/requests/{request}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["data"]["client"]["client_id"], client_id);
    assert!(view["data"]["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["id"] == org));
    let (status, body) = decide(
        app,
        b,
        request,
        json!({"decision": "approve", "org_id": org}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let to = body["data"]["redirect_to"].as_str().unwrap();
    assert!(to.starts_with("http://127.0.0.1:43123/callback?"), "{to}");
    let q = query_of(to);
    assert_eq!(q["state"], "st-1");
    assert_eq!(q["iss"], app.base);
    q["code"].clone()
}

/// `POST /oauth/token` with a form (and optional Basic credentials).
async fn token(app: &TestApp, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> (u16, Value) {
    let mut req = app.client.post(app.url("/oauth/token")).form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    parts(req.send().await.unwrap()).await
}

async fn exchange(
    app: &TestApp,
    client_id: &str,
    code: &str,
    verifier: &str,
    resource: &str,
) -> (u16, Value) {
    token(
        app,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", "http://127.0.0.1:43123/callback"),
            ("resource", resource),
        ],
        None,
    )
    .await
}

/// A person with an organization, signed into a browser, and a registered public client.
async fn setup(app: &TestApp) -> (Person, String, Client, String) {
    let owner = app.person().await;
    let org = app.org(&owner, "Acme").await;
    let b = browser();
    sign_in(app, &b, &owner).await;
    let reg = register(app, json!({})).await;
    let client_id = reg["client_id"].as_str().unwrap().to_string();
    (owner, org, b, client_id)
}

fn claims(app: &TestApp, access: &str, aud: &str) -> gatehouse::auth::jwt::AccessClaims {
    app.state
        .accounts
        .jwt
        .verify_access(access, app.state.edge.clock.now_secs(), &app.base, aud)
        .unwrap_or_else(|e| panic!("{e:?} for aud {aud}"))
}

story!(
    discovery_documents_name_every_endpoint_and_both_resources,
    |app: TestApp| async move {
        let base = app.base.clone();
        for path in [
            "/.well-known/oauth-authorization-server",
            "/.well-known/openid-configuration",
        ] {
            let (status, m) = parts(app.client.get(app.url(path)).send().await.unwrap()).await;
            assert_eq!(status, 200);
            assert_eq!(m["issuer"], base);
            assert_eq!(
                m["authorization_endpoint"],
                format!("{base}/oauth/authorize")
            );
            assert_eq!(m["token_endpoint"], format!("{base}/oauth/token"));
            assert_eq!(m["registration_endpoint"], format!("{base}/oauth/register"));
            assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
            assert_eq!(m["response_types_supported"], json!(["code"]));
            assert_eq!(
                m["grant_types_supported"],
                json!(["authorization_code", "refresh_token"])
            );
            assert_eq!(m["client_id_metadata_document_supported"], true);
            let scopes = m["scopes_supported"].as_array().unwrap();
            assert!(
                scopes.contains(&json!("offline_access")) && scopes.contains(&json!("chat:write"))
            );
            assert!(!scopes.contains(&json!("keys:write")));
            let (status, _) = parts(
                app.client
                    .get(m["jwks_uri"].as_str().unwrap())
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, 200);
        }
        for (path, resource) in [
            ("/.well-known/oauth-protected-resource", "/v1"),
            ("/.well-known/oauth-protected-resource/v1", "/v1"),
            ("/.well-known/oauth-protected-resource/api", "/api"),
        ] {
            let (status, m) = parts(app.client.get(app.url(path)).send().await.unwrap()).await;
            assert_eq!(status, 200);
            assert_eq!(m["resource"], format!("{base}{resource}"));
            assert_eq!(m["authorization_servers"], json!([base]));
            assert_eq!(m["bearer_methods_supported"], json!(["header"]));
            // The MCP SDK asks for these scopes: offline_access gets it a refresh token.
            let scopes = m["scopes_supported"].as_array().unwrap();
            assert!(scopes.contains(&json!("offline_access")), "{path}: {m}");
            assert!(scopes.contains(&json!("chat:write")), "{path}: {m}");
        }
        app
    }
);

story!(
    the_code_flow_issues_a_token_for_the_resource_then_refresh_rotates,
    |app: TestApp| async move {
        let (owner, org, b, client_id) = setup(&app).await;
        let (verifier, challenge) = pkce();
        let scope = "chat:write email offline_access openid";
        let api = format!("{}/api", app.base);
        let code = code_for(
            &app,
            &b,
            &client_id,
            &challenge,
            scope,
            &org,
            &[("resource", &api)],
        )
        .await;
        let (status, t) = exchange(&app, &client_id, &code, &verifier, &api).await;
        assert_eq!(status, 200, "{t}");
        assert_eq!(t["token_type"], "Bearer");
        assert_eq!(t["scope"], scope);
        assert!(t["id_token"].is_string());
        let access = t["access_token"].as_str().unwrap();
        let header = jsonwebtoken::decode_header(access).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        let c = claims(&app, access, &api);
        assert_eq!(c.sub, owner.id);
        assert_eq!(c.client_id, client_id);
        assert_eq!(c.org_id, org);
        assert_eq!(c.scope, scope);
        // Issued for /api, so not valid at /v1.
        assert!(app
            .state
            .accounts
            .jwt
            .verify_access(
                access,
                app.state.edge.clock.now_secs(),
                &app.base,
                &format!("{}/v1", app.base)
            )
            .is_err());
        let grant = app
            .state
            .oauth
            .active_grant(&c.grant_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(grant.user_id, owner.id);
        assert_eq!(grant.client_name, "Test tool");
        // Userinfo.
        let (status, info) = parts(
            app.client
                .get(app.url("/oauth/userinfo"))
                .bearer_auth(access)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{info}");
        assert_eq!(info["sub"], owner.id);
        assert_eq!(info["email"], owner.email);
        // Refresh: a new pair; the old refresh token is then a replay that ends the grant.
        let first = t["refresh_token"].as_str().unwrap().to_string();
        let refresh = |rt: String| {
            let app = &app;
            let client_id = client_id.clone();
            async move {
                token(
                    app,
                    &[
                        ("grant_type", "refresh_token"),
                        ("client_id", &client_id),
                        ("refresh_token", &rt),
                    ],
                    None,
                )
                .await
            }
        };
        let (status, t2) = refresh(first.clone()).await;
        assert_eq!(status, 200, "{t2}");
        let second = t2["refresh_token"].as_str().unwrap().to_string();
        assert_ne!(first, second);
        assert_eq!(
            claims(&app, t2["access_token"].as_str().unwrap(), &api).grant_id,
            c.grant_id
        );
        let (status, e) = refresh(first).await;
        assert_eq!(
            (status, e["error"].as_str()),
            (400, Some("invalid_grant")),
            "{e}"
        );
        assert!(app
            .state
            .oauth
            .active_grant(&c.grant_id)
            .await
            .unwrap()
            .is_none());
        let (status, e) = refresh(second).await;
        assert_eq!(
            (status, e["error"].as_str()),
            (400, Some("invalid_grant")),
            "{e}"
        );
        // The token store holds hashes only.
        let pool = crate::helpers::sql(&app.db.url).await;
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM oauth_refresh_tokens WHERE token_hash = $1")
                .bind(gatehouse::auth::tokens::sha256_hex(
                    t2["refresh_token"].as_str().unwrap(),
                ))
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(n, 0, "the revoked grant's refresh tokens are gone");
        pool.close().await;
        app
    }
);

story!(
    pkce_s256_is_required_and_a_wrong_or_missing_verifier_is_invalid_grant,
    |app: TestApp| async move {
        let (_owner, org, b, client_id) = setup(&app).await;
        let (verifier, challenge) = pkce();
        let code = code_for(&app, &b, &client_id, &challenge, "chat:write", &org, &[]).await;
        // No challenge, or plain: an error sent back to the client (granted, so trusted).
        let mut pairs = standard(&client_id, &challenge, "chat:write");
        pairs.retain(|(k, _)| !k.starts_with("code_challenge"));
        let (status, location, _) = authorize(&app, &b, &pairs).await;
        assert_eq!(status, 302);
        let q = query_of(&location);
        assert_eq!(q["error"], "invalid_request");
        assert_eq!(q["state"], "st-1");
        let mut pairs = standard(&client_id, &verifier, "chat:write");
        pairs.retain(|(k, _)| *k != "code_challenge_method");
        pairs.push(("code_challenge_method", "plain"));
        let (_, location, _) = authorize(&app, &b, &pairs).await;
        assert_eq!(query_of(&location)["error"], "invalid_request");
        // A wrong verifier, then a missing one: invalid_grant.
        let v1 = format!("{}/v1", app.base);
        let (wrong, _) = pkce();
        let (status, e) = exchange(&app, &client_id, &code, &wrong, &v1).await;
        assert_eq!(
            (status, e["error"].as_str()),
            (400, Some("invalid_grant")),
            "{e}"
        );
        let code = code_for(
            &app,
            &b,
            &client_id,
            &challenge,
            "chat:write",
            &org,
            &[("prompt", "consent")],
        )
        .await;
        let (status, e) = token(
            &app,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", &client_id),
                ("code", &code),
            ],
            None,
        )
        .await;
        assert_eq!(
            (status, e["error"].as_str()),
            (400, Some("invalid_grant")),
            "{e}"
        );
        app
    }
);

story!(
    a_reused_code_is_refused_and_revokes_the_tokens_it_issued,
    |app: TestApp| async move {
        let (_owner, org, b, client_id) = setup(&app).await;
        let (verifier, challenge) = pkce();
        let code = code_for(
            &app,
            &b,
            &client_id,
            &challenge,
            "chat:write offline_access",
            &org,
            &[],
        )
        .await;
        let v1 = format!("{}/v1", app.base);
        let (status, t) = exchange(&app, &client_id, &code, &verifier, &v1).await;
        assert_eq!(status, 200, "{t}");
        let grant = claims(&app, t["access_token"].as_str().unwrap(), &v1).grant_id;
        let (status, e) = exchange(&app, &client_id, &code, &verifier, &v1).await;
        assert_eq!(
            (status, e["error"].as_str()),
            (400, Some("invalid_grant")),
            "{e}"
        );
        assert!(app
            .state
            .oauth
            .active_grant(&grant)
            .await
            .unwrap()
            .is_none());
        let (status, e) = token(
            &app,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", &client_id),
                ("refresh_token", t["refresh_token"].as_str().unwrap()),
            ],
            None,
        )
        .await;
        assert_eq!(
            (status, e["error"].as_str()),
            (400, Some("invalid_grant")),
            "{e}"
        );
        // Another client cannot use a code either.
        let other = register(&app, json!({})).await;
        let code = code_for(
            &app,
            &b,
            &client_id,
            &challenge,
            "chat:write",
            &org,
            &[("prompt", "consent")],
        )
        .await;
        let (status, e) = exchange(
            &app,
            other["client_id"].as_str().unwrap(),
            &code,
            &verifier,
            &v1,
        )
        .await;
        assert_eq!(
            (status, e["error"].as_str()),
            (400, Some("invalid_grant")),
            "{e}"
        );
        app
    }
);

story!(
    codes_expire_after_oauth_code_seconds,
    setup: |db| clocked(db, 1_800_000_000_000, |_| {}),
    |(app, clock): (TestApp, gatehouse::clock::Clock)| async move {
        let (_owner, org, b, client_id) = setup(&app).await;
        let (verifier, challenge) = pkce();
        let code = code_for(&app, &b, &client_id, &challenge, "chat:write", &org, &[]).await;
        clock.advance_ms(61_000);
        let v1 = format!("{}/v1", app.base);
        let (status, e) = exchange(&app, &client_id, &code, &verifier, &v1).await;
        assert_eq!((status, e["error"].as_str()), (400, Some("invalid_grant")), "{e}");
        assert!(e["error_description"].as_str().unwrap().contains("expired"));
        app
    }
);

story!(
    redirect_uris_match_exactly_except_the_loopback_port,
    |app: TestApp| async move {
        let (_owner, _org, b, client_id) = setup(&app).await;
        let (_, challenge) = pkce();
        for wrong in [
            "http://127.0.0.1:43123/other",
            "http://evil.example/callback",
            "http://127.0.0.1:43123/callback/x",
        ] {
            let mut pairs = standard(&client_id, &challenge, "chat:write");
            pairs.retain(|(k, _)| *k != "redirect_uri");
            pairs.push(("redirect_uri", wrong));
            let (status, location, page) = authorize(&app, &b, &pairs).await;
            assert_eq!(status, 400, "{wrong}: {location}");
            assert!(location.is_empty());
            assert!(
                page.contains("invalid_request") && page.contains("redirect_uri"),
                "{page}"
            );
        }
        // An https client's URI must match to the character.
        let reg = register(&app, json!({"redirect_uris": ["https://app.example/cb"]})).await;
        let https_client = reg["client_id"].as_str().unwrap();
        let mut pairs = standard(https_client, &challenge, "chat:write");
        pairs.retain(|(k, _)| *k != "redirect_uri");
        pairs.push(("redirect_uri", "https://app.example:444/cb"));
        let (status, _, _) = authorize(&app, &b, &pairs).await;
        assert_eq!(status, 400);
        // Unknown client: a page too.
        let (status, _, page) = authorize(
            &app,
            &b,
            &standard(
                "oac_00000000000000000000000000000000",
                &challenge,
                "chat:write",
            ),
        )
        .await;
        assert_eq!(status, 400);
        assert!(page.contains("invalid_client"), "{page}");
        // Registration refuses plain http off loopback.
        let (status, e) = parts(
            app.client
                .post(app.url("/oauth/register"))
                .json(&json!({"redirect_uris": ["http://app.example/cb"]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, e["error"].as_str()),
            (400, Some("invalid_redirect_uri")),
            "{e}"
        );
        app
    }
);

story!(
    a_resource_that_is_not_gatehouses_is_invalid_target,
    |app: TestApp| async move {
        let (_owner, org, b, client_id) = setup(&app).await;
        let (verifier, challenge) = pkce();
        let code = code_for(&app, &b, &client_id, &challenge, "chat:write", &org, &[]).await;
        let (status, location, _) = authorize(
            &app,
            &b,
            &[
                standard(&client_id, &challenge, "chat:write"),
                vec![("resource", "https://evil.example/api")],
            ]
            .concat(),
        )
        .await;
        assert_eq!(status, 302);
        assert_eq!(query_of(&location)["error"], "invalid_target");
        let (status, e) = exchange(
            &app,
            &client_id,
            &code,
            &verifier,
            "https://evil.example/api",
        )
        .await;
        assert_eq!(
            (status, e["error"].as_str()),
            (400, Some("invalid_target")),
            "{e}"
        );
        // A code consented for /v1 (the default) never becomes a token for /api.
        let (verifier, challenge) = pkce();
        let code = code_for(
            &app,
            &b,
            &client_id,
            &challenge,
            "chat:write openid",
            &org,
            &[],
        )
        .await;
        let api = app.url("/api");
        let (status, e) = exchange(&app, &client_id, &code, &verifier, &api).await;
        assert_eq!(
            (status, e["error"].as_str()),
            (400, Some("invalid_target")),
            "{e}"
        );
        app
    }
);

story!(
    a_client_metadata_document_at_a_private_address_is_refused,
    |app: TestApp| async move {
        let (_owner, _org, b, _client_id) = setup(&app).await;
        let (_, challenge) = pkce();
        for id in [
            "https://127.0.0.1/client.json",
            "https://169.254.169.254/latest/meta-data",
            "https://localhost/client.json",
        ] {
            let mut pairs = standard(id, &challenge, "chat:write");
            pairs.retain(|(k, _)| *k != "redirect_uri");
            pairs.push(("redirect_uri", REDIRECT));
            let (status, location, page) = authorize(&app, &b, &pairs).await;
            assert_eq!(status, 400, "{id}: {location}");
            assert!(
                page.contains("invalid_client") && page.contains("private"),
                "{id}: {page}"
            );
        }
        app
    }
);

story!(
    registration_floods_are_limited_per_ip,
    |c: &mut gatehouse::config::Config| {
        c.rate_limit_oauth_register =
            gatehouse::ratelimit::Rates::one(gatehouse::ratelimit::Rate::new(2, 3600));
    },
    |app: TestApp| async move {
        register(&app, json!({})).await;
        register(&app, json!({})).await;
        let res = app
            .client
            .post(app.url("/oauth/register"))
            .json(&json!({"redirect_uris": [REDIRECT]}))
            .send()
            .await
            .unwrap();
        assert!(res.headers().contains_key("retry-after"));
        let (status, e) = parts(res).await;
        assert_eq!(
            (status, e["error"].as_str()),
            (429, Some("slow_down")),
            "{e}"
        );
        app
    }
);

story!(
    registration_can_need_an_initial_access_token,
    |c: &mut gatehouse::config::Config| {
        c.oauth_registration = gatehouse::config::OAuthRegistration::Token;
        c.oauth_registration_token = Some("initial-access-token-0123456789".to_string().into());
    },
    |app: TestApp| async move {
        let body = json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"});
        let (status, e) = parts(
            app.client
                .post(app.url("/oauth/register"))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, e["error"].as_str()),
            (401, Some("invalid_token")),
            "{e}"
        );
        let (status, e) = parts(
            app.client
                .post(app.url("/oauth/register"))
                .bearer_auth("initial-access-token-012345678X")
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, e["error"].as_str()),
            (401, Some("invalid_token")),
            "{e}"
        );
        let (status, reg) = parts(
            app.client
                .post(app.url("/oauth/register"))
                .bearer_auth("initial-access-token-0123456789")
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 201, "{reg}");
        assert!(reg["client_secret"].is_null());
        app
    }
);

story!(
    confidential_clients_authenticate_with_their_hashed_secret,
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let b = browser();
        sign_in(&app, &b, &owner).await;
        let reg = register(
            &app,
            json!({"token_endpoint_auth_method": "client_secret_basic"}),
        )
        .await;
        let id = reg["client_id"].as_str().unwrap();
        let secret = reg["client_secret"].as_str().unwrap();
        assert_eq!(reg["client_secret_expires_at"], 0);
        let pool = crate::helpers::sql(&app.db.url).await;
        let (stored,): (String,) =
            sqlx::query_as("SELECT secret_hash FROM oauth_clients WHERE client_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(stored, gatehouse::auth::tokens::sha256_hex(secret));
        pool.close().await;
        let (verifier, challenge) = pkce();
        let code = code_for(&app, &b, id, &challenge, "chat:write", &org, &[]).await;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", verifier.as_str()),
        ];
        // No secret, a wrong one: 401 invalid_client (Basic names its scheme).
        let (status, e) = token(&app, &[&form[..], &[("client_id", id)]].concat(), None).await;
        assert_eq!(
            (status, e["error"].as_str()),
            (401, Some("invalid_client")),
            "{e}"
        );
        let res = app
            .client
            .post(app.url("/oauth/token"))
            .form(&form)
            .basic_auth(id, Some("wrong"))
            .send()
            .await
            .unwrap();
        assert!(res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"));
        let (status, e) = parts(res).await;
        assert_eq!(
            (status, e["error"].as_str()),
            (401, Some("invalid_client")),
            "{e}"
        );
        let (status, t) = token(&app, &form, Some((id, secret))).await;
        assert_eq!(status, 200, "{t}");
        assert!(
            t["refresh_token"].is_null(),
            "no offline_access, no refresh token"
        );
        // The same secret in the form works too; the confidential client may introspect its token.
        let (status, i) = parts(
            app.client
                .post(app.url("/oauth/introspect"))
                .form(&[
                    ("token", t["access_token"].as_str().unwrap()),
                    ("client_id", id),
                    ("client_secret", secret),
                ])
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{i}");
        assert_eq!(i["active"], true);
        assert_eq!(i["client_id"], id);
        app
    }
);

story!(
    consent_is_remembered_listed_and_revocable_with_audit_entries,
    |app: TestApp| async move {
        let (owner, org, b, client_id) = setup(&app).await;
        let (verifier, challenge) = pkce();
        let code = code_for(&app, &b, &client_id, &challenge, "chat:write", &org, &[]).await;
        let v1 = format!("{}/v1", app.base);
        let (status, t) = exchange(&app, &client_id, &code, &verifier, &v1).await;
        assert_eq!(status, 200, "{t}");
        // Asked again with the same scopes: straight back with a code.
        let (status, location, _) =
            authorize(&app, &b, &standard(&client_id, &challenge, "chat:write")).await;
        assert_eq!(status, 302);
        let q = query_of(&location);
        assert!(q.contains_key("code"), "{location}");
        let (status, again) = exchange(&app, &client_id, &q["code"], &verifier, &v1).await;
        assert_eq!(status, 200, "{again}");
        // A different scope set is asked again; without a session, prompt=none says so.
        let (_, location, _) = authorize(
            &app,
            &b,
            &standard(&client_id, &challenge, "chat:write threads:read"),
        )
        .await;
        assert!(
            location.contains("/dashboard/#/oauth/consent?request="),
            "{location}"
        );
        let (_, location, _) = authorize(
            &app,
            &browser(),
            &[
                standard(&client_id, &challenge, "chat:write"),
                vec![("prompt", "none")],
            ]
            .concat(),
        )
        .await;
        assert_eq!(query_of(&location)["error"], "login_required");
        // Connected apps: listed, then revoked.
        let (status, list) = app
            .call(Method::GET, "/me/oauth/grants", &owner.token, None)
            .await;
        assert_eq!(status, 200, "{list}");
        let grants = list["data"].as_array().unwrap();
        assert_eq!(grants.len(), 1);
        assert_eq!(grants[0]["client_name"], "Test tool");
        let grant = grants[0]["id"].as_str().unwrap().to_string();
        let stranger = app.person().await;
        let (status, _) = app
            .call(
                Method::DELETE,
                &format!("/me/oauth/grants/{grant}"),
                &stranger.token,
                None,
            )
            .await;
        assert_eq!(status, 404);
        let (status, _) = app
            .call(
                Method::DELETE,
                &format!("/me/oauth/grants/{grant}"),
                &owner.token,
                None,
            )
            .await;
        assert_eq!(status, 204);
        assert!(app
            .state
            .oauth
            .active_grant(&grant)
            .await
            .unwrap()
            .is_none());
        let (status, e) = parts(
            app.client
                .get(app.url("/oauth/userinfo"))
                .bearer_auth(t["access_token"].as_str().unwrap())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, e["error"].as_str()),
            (401, Some("invalid_token")),
            "{e}"
        );
        let (_, log) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/audit-log"),
                &owner.token,
                None,
            )
            .await;
        let actions: Vec<&str> = log["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert!(
            actions.contains(&"oauth_grant.created") && actions.contains(&"oauth_grant.revoked"),
            "{actions:?}"
        );
        // Denying sends access_denied back.
        let (_, location, _) =
            authorize(&app, &b, &standard(&client_id, &challenge, "chat:write")).await;
        let request = location.rsplit('=').next().unwrap().to_string();
        let (status, body) = decide(&app, &b, &request, json!({"decision": "deny"})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            query_of(body["data"]["redirect_to"].as_str().unwrap())["error"],
            "access_denied"
        );
        // A stranger's organization cannot be chosen.
        let (_, location, _) =
            authorize(&app, &b, &standard(&client_id, &challenge, "chat:write")).await;
        let request = location.rsplit('=').next().unwrap().to_string();
        let theirs = app.org(&stranger, "Other").await;
        let (status, _) = decide(
            &app,
            &b,
            &request,
            json!({"decision": "approve", "org_id": theirs}),
        )
        .await;
        assert_eq!(status, 403);
        app
    }
);

story!(
    revocation_and_introspection_follow_rfc_7009_and_7662,
    |app: TestApp| async move {
        let (owner, org, b, client_id) = setup(&app).await;
        let (verifier, challenge) = pkce();
        let code = code_for(
            &app,
            &b,
            &client_id,
            &challenge,
            "chat:write offline_access",
            &org,
            &[],
        )
        .await;
        let v1 = format!("{}/v1", app.base);
        let (_, t) = exchange(&app, &client_id, &code, &verifier, &v1).await;
        let access = t["access_token"].as_str().unwrap();
        let introspect = |auth: Option<String>, tok: String| {
            let app = &app;
            async move {
                let mut req = app
                    .client
                    .post(app.url("/oauth/introspect"))
                    .form(&[("token", tok)]);
                if let Some(k) = auth {
                    req = req.header("x-api-key", k);
                }
                parts(req.send().await.unwrap()).await
            }
        };
        let (verify_key, _) = app.key(&owner, &org, &["keys:verify"]).await;
        let (plain_key, _) = app.key(&owner, &org, &["keys:read"]).await;
        let (status, e) = introspect(None, access.into()).await;
        assert_eq!(
            (status, e["error"].as_str()),
            (401, Some("invalid_client")),
            "{e}"
        );
        let (status, e) = introspect(Some(plain_key), access.into()).await;
        assert_eq!(status, 403, "{e}");
        let (status, i) = introspect(Some(verify_key.clone()), access.into()).await;
        assert_eq!(status, 200, "{i}");
        assert_eq!(i["active"], true);
        assert_eq!(i["sub"], owner.id);
        assert_eq!(i["org_id"], org);
        assert_eq!(i["aud"], v1);
        assert_eq!(i["scope"], "chat:write offline_access");
        let (_, i) = introspect(Some(verify_key.clone()), "not-a-token".into()).await;
        assert_eq!(i, json!({"active": false}));
        // Another organization's key sees nothing.
        let other = app.person().await;
        let other_org = app.org(&other, "Other").await;
        let (their_key, _) = app.key(&other, &other_org, &["keys:verify"]).await;
        let (_, i) = introspect(Some(their_key), access.into()).await;
        assert_eq!(i, json!({"active": false}));
        // Revocation: unknown tokens are fine; the refresh token ends the grant.
        let revoke = |tok: String| {
            let app = &app;
            let client_id = client_id.clone();
            async move {
                parts(
                    app.client
                        .post(app.url("/oauth/revoke"))
                        .form(&[("token", tok), ("client_id", client_id)])
                        .send()
                        .await
                        .unwrap(),
                )
                .await
            }
        };
        assert_eq!(revoke("unknown".into()).await.0, 200);
        assert_eq!(
            revoke(t["refresh_token"].as_str().unwrap().into()).await.0,
            200
        );
        let (_, i) = introspect(Some(verify_key), access.into()).await;
        assert_eq!(i, json!({"active": false}));
        app
    }
);

story!(
    organization_admins_register_clients_bound_to_their_organization,
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let member = app.person().await;
        app.add(&owner, &org, &member, "member").await;
        let body = json!({"name": "Internal tool", "redirect_uris": ["https://tool.acme.example/cb"], "confidential": true});
        let (status, _) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/oauth/clients"),
                &member.token,
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 403);
        let (status, made) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/oauth/clients"),
                &owner.token,
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{made}");
        let id = made["data"]["client_id"].as_str().unwrap().to_string();
        assert!(made["data"]["client_secret"].is_string());
        assert_eq!(made["data"]["kind"], "admin");
        let (status, list) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/oauth/clients"),
                &owner.token,
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(list["data"][0]["client_id"], id);
        assert!(list["data"][0].get("client_secret").is_none());
        let (status, _) = app
            .call(
                Method::DELETE,
                &format!("/orgs/{org}/oauth/clients/{id}"),
                &owner.token,
                None,
            )
            .await;
        assert_eq!(status, 204);
        let (_, log) = app
            .call(
                Method::GET,
                &format!("/orgs/{org}/audit-log"),
                &owner.token,
                None,
            )
            .await;
        let actions: Vec<&str> = log["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert!(
            actions.contains(&"oauth_client.created") && actions.contains(&"oauth_client.deleted"),
            "{actions:?}"
        );
        app
    }
);

/// Serves `doc` at `/client.json` on a free loopback port; answers the document's URL.
async fn serve_document(doc: impl Fn(&str) -> Value + Send + Sync + 'static) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/client.json", listener.local_addr().unwrap());
    let body = doc(&url).to_string();
    let app = axum::Router::new().route(
        "/client.json",
        axum::routing::get(move || {
            let body = body.clone();
            async move {
                (
                    [
                        ("content-type", "application/json"),
                        ("cache-control", "max-age=600"),
                    ],
                    body,
                )
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

story!(
    a_client_known_by_its_metadata_document_completes_the_flow,
    |c: &mut gatehouse::config::Config| c.webhooks_allow_private = true,
    |app: TestApp| async move {
        let owner = app.person().await;
        let org = app.org(&owner, "Acme").await;
        let b = browser();
        sign_in(&app, &b, &owner).await;
        let url = serve_document(|url| {
            json!({"client_id": url, "client_name": "Doc tool", "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none"})
        })
        .await;
        let (verifier, challenge) = pkce();
        let (status, location, _) =
            authorize(&app, &b, &standard(&url, &challenge, "chat:write")).await;
        assert_eq!(status, 302, "{location}");
        let request = location.rsplit('=').next().unwrap().to_string();
        let (_, view) = parts(
            b.get(app.url(&format!("/oauth/requests/{request}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(view["data"]["client"]["name"], "Doc tool");
        assert_eq!(view["data"]["client"]["metadata_host"], "127.0.0.1");
        let (status, body) = decide(
            &app,
            &b,
            &request,
            json!({"decision": "approve", "org_id": org}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let code = query_of(body["data"]["redirect_to"].as_str().unwrap())["code"].clone();
        let (status, t) = exchange(&app, &url, &code, &verifier, &format!("{}/v1", app.base)).await;
        assert_eq!(status, 200, "{t}");
        // A document naming another client_id is refused.
        let liar = serve_document(|_| {
            json!({"client_id": "https://elsewhere.example/client.json", "redirect_uris": [REDIRECT]})
        })
        .await;
        let (status, _, page) =
            authorize(&app, &b, &standard(&liar, &challenge, "chat:write")).await;
        assert_eq!(status, 400);
        assert!(page.contains("invalid_client"), "{page}");
        app
    }
);

story!(
    registration_can_be_off,
    |c: &mut gatehouse::config::Config| c.oauth_registration =
        gatehouse::config::OAuthRegistration::Off,
    |app: TestApp| async move {
        let (status, e) = parts(
            app.client
                .post(app.url("/oauth/register"))
                .json(&json!({"redirect_uris": [REDIRECT]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, e["error"].as_str()),
            (403, Some("access_denied")),
            "{e}"
        );
        app
    }
);

/// `pairs` with `key` set to `value` (replaced, or added).
fn with<'a>(pairs: &[(&'a str, &'a str)], key: &'a str, value: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<_> = pairs.iter().filter(|(k, _)| *k != key).cloned().collect();
    out.push((key, value));
    out
}

story!(
    errors_go_back_only_to_clients_an_admin_registered_or_someone_granted,
    |app: TestApp| async move {
        let (owner, org, b, granted) = setup(&app).await;
        let (_, challenge) = pkce();
        // Anyone can register a client whose redirect URI is theirs: until someone grants it,
        // Gatehouse does not send people there with an error (no open redirector).
        let evil = register(&app, json!({"redirect_uris": ["https://evil.example/cb"]})).await;
        let evil = evil["client_id"].as_str().unwrap().to_string();
        let base = vec![
            ("response_type", "code"),
            ("client_id", evil.as_str()),
            ("redirect_uri", "https://evil.example/cb"),
            ("scope", "chat:write"),
            ("state", "s"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        for (pairs, error) in [
            (with(&base, "scope", "no-such-scope"), "invalid_scope"),
            (
                with(&base, "response_type", "token"),
                "unsupported_response_type",
            ),
            (
                with(&base, "resource", "https://other.example/api"),
                "invalid_target",
            ),
            (
                with(&base, "code_challenge_method", "plain"),
                "invalid_request",
            ),
            (with(&base, "prompt", "none"), "login_required"),
        ] {
            let (status, location, page) = authorize(&app, &browser(), &pairs).await;
            assert_eq!((status, location.as_str()), (400, ""), "{error}: {page}");
            assert!(page.contains(error), "{error}: {page}");
        }
        // The same errors go back to a client someone granted…
        let other_scope = with(
            &standard(&granted, &challenge, "chat:write"),
            "scope",
            "no-such-scope",
        );
        let (status, _, _) = authorize(&app, &b, &other_scope).await;
        assert_eq!(status, 400);
        code_for(&app, &b, &granted, &challenge, "chat:write", &org, &[]).await;
        let (status, location, _) = authorize(&app, &b, &other_scope).await;
        assert_eq!(status, 302, "{location}");
        assert!(
            location.starts_with("http://127.0.0.1:43123/callback?"),
            "{location}"
        );
        assert_eq!(query_of(&location)["error"], "invalid_scope");
        assert_eq!(query_of(&location)["state"], "st-1");
        // …until the grant is revoked.
        let (_, list) = app
            .call(Method::GET, "/me/oauth/grants", &owner.token, None)
            .await;
        let grant = list["data"][0]["id"].as_str().unwrap().to_string();
        let (status, _) = app
            .call(
                Method::DELETE,
                &format!("/me/oauth/grants/{grant}"),
                &owner.token,
                None,
            )
            .await;
        assert_eq!(status, 204);
        let (status, location, _) = authorize(&app, &b, &other_scope).await;
        assert_eq!((status, location.as_str()), (400, ""));
        // An organization admin's client is trusted from the start.
        let (status, made) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/oauth/clients"),
                &owner.token,
                Some(json!({"name": "Internal", "redirect_uris": ["https://app.example/cb"]})),
            )
            .await;
        assert_eq!(status, 201, "{made}");
        let admin_id = made["data"]["client_id"].as_str().unwrap().to_string();
        let pairs = [
            ("response_type", "code"),
            ("client_id", admin_id.as_str()),
            ("redirect_uri", "https://app.example/cb"),
            ("scope", "no-such-scope"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        let (status, location, _) = authorize(&app, &browser(), &pairs).await;
        assert_eq!(status, 302, "{location}");
        assert!(
            location.starts_with("https://app.example/cb?error=invalid_scope"),
            "{location}"
        );
        app
    }
);

story!(
    authorization_requests_are_limited_per_ip,
    |c: &mut gatehouse::config::Config| {
        c.rate_limit_oauth_authorize =
            gatehouse::ratelimit::Rates::one(gatehouse::ratelimit::Rate::new(2, 3600));
    },
    |app: TestApp| async move {
        let (_owner, _org, b, client_id) = setup(&app).await;
        let (_, challenge) = pkce();
        for _ in 0..2 {
            let (status, location, _) =
                authorize(&app, &b, &standard(&client_id, &challenge, "chat:write")).await;
            assert_eq!(status, 302, "{location}");
        }
        let res = b
            .get(app.url("/oauth/authorize"))
            .query(&standard(&client_id, &challenge, "chat:write"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 429);
        let h = res.headers();
        assert!(h.get("location").is_none());
        let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=1800).contains(&retry), "{retry}");
        assert_eq!(h["x-ratelimit-remaining"], "0");
        assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
        let page = res.text().await.unwrap();
        assert!(page.contains("Too many authorization requests"), "{page}");
        app
    }
);

story!(
    never_granted_clients_and_expired_requests_do_not_pile_up,
    setup: |db| clocked(db, 1_800_000_000_000, |_| {}),
    |(app, clock): (TestApp, gatehouse::clock::Clock)| async move {
        let (_owner, org, b, granted) = setup(&app).await;
        let (_, challenge) = pkce();
        code_for(&app, &b, &granted, &challenge, "chat:write", &org, &[]).await;
        let idle = register(&app, json!({})).await["client_id"].as_str().unwrap().to_string();
        let (status, location, _) =
            authorize(&app, &b, &standard(&idle, &challenge, "chat:write")).await;
        assert_eq!(status, 302);
        let request = location.split("request=").nth(1).unwrap().to_string();
        let pool = crate::helpers::sql(&app.db.url).await;
        let count = |table: &'static str, column: &'static str, id: String| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(&format!(
                    "SELECT COUNT(*) FROM {table} WHERE {column} = $1"
                ))
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
            }
        };
        assert_eq!(count("oauth_requests", "id", request.clone()).await, 1);
        // A pending request is gone once it expired and another one is stored.
        clock.advance_ms(11 * 60 * 1000);
        let again = with(&standard(&granted, &challenge, "chat:write"), "prompt", "consent");
        let (status, location, _) = authorize(&app, &b, &again).await;
        assert!(location.contains("request="), "{status} {location}");
        assert_eq!(count("oauth_requests", "id", request).await, 0);
        // A client nobody granted goes a week after it was registered, at a later registration;
        // a granted one stays.
        clock.advance_ms(6 * 86_400_000);
        register(&app, json!({})).await;
        assert_eq!(count("oauth_clients", "client_id", idle.clone()).await, 1);
        clock.advance_ms(86_400_000);
        let fresh = register(&app, json!({})).await["client_id"].as_str().unwrap().to_string();
        assert_eq!(count("oauth_clients", "client_id", idle).await, 0);
        assert_eq!(count("oauth_clients", "client_id", granted).await, 1);
        assert_eq!(count("oauth_clients", "client_id", fresh).await, 1);
        app
    }
);
