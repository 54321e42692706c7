//! Sign-in with external providers (issue 23, item 3): `/authorize` → provider → `/callback`,
//! with a small OpenID provider inside the test (ES256 ID tokens signed here with
//! jsonwebtoken, its discovery document and JWKS served over axum on a free port), for the
//! edges a certified provider never produces: a wrong nonce, audience or signature, an
//! expired token, a reused state, an unverified address, an identity linked twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use gatehouse::config::{Config, ExternalProvider, ProviderKind, SecretString};
use jsonwebtoken::{EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePrivateKey;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{parts, Db, TestApp};
use crate::story;

const CLIENT_ID: &str = "gatehouse-test";
const KID: &str = "test-key-1";

#[derive(Default)]
struct IdpState {
    /// The ID token the next code exchange answers.
    id_token: Option<String>,
    /// The forms the token endpoint received.
    forms: Vec<HashMap<String, String>>,
    /// What the GitHub-style `/user/emails` answers.
    emails: Value,
}

/// A minimal OpenID provider: discovery, JWKS, a token endpoint answering what the test
/// queued.
struct Idp {
    base: String,
    key: EncodingKey,
    other: EncodingKey,
    state: Arc<Mutex<IdpState>>,
}

fn ec_key() -> (EncodingKey, Value) {
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let pem = secret.to_pkcs8_pem(Default::default()).unwrap();
    let point = secret.public_key().to_encoded_point(false);
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": KID,
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    });
    (EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(), jwk)
}

impl Idp {
    async fn start() -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (key, jwk) = ec_key();
        let (other, _) = ec_key();
        let state = Arc::new(Mutex::new(IdpState::default()));
        let discovery = json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}/authorize"),
            "token_endpoint": format!("{base}/token"),
            "jwks_uri": format!("{base}/jwks"),
            "userinfo_endpoint": format!("{base}/userinfo"),
        });
        let jwks = json!({ "keys": [jwk] });
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route("/jwks", get(move || async move { Json(jwks) }))
            .route(
                "/token",
                post(
                    |State(s): State<Arc<Mutex<IdpState>>>,
                     Form(form): Form<HashMap<String, String>>| async move {
                        let mut s = s.lock().unwrap();
                        s.forms.push(form);
                        let token = s.id_token.take().unwrap_or_default();
                        Json(json!({
                            "access_token": "provider-access-token",
                            "token_type": "Bearer",
                            "expires_in": 3600,
                            "id_token": token,
                        }))
                    },
                ),
            )
            // A GitHub-style plain OAuth 2 provider: the person and their addresses.
            .route(
                "/user",
                get(|| async {
                    Json(json!({"id": 4242, "login": "octo", "name": "Octo Cat", "email": null}))
                }),
            )
            .route(
                "/user/emails",
                get(|State(s): State<Arc<Mutex<IdpState>>>| async move {
                    Json(s.lock().unwrap().emails.clone())
                }),
            )
            .with_state(state.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Idp {
            base,
            key,
            other,
            state,
        }
    }

    fn provider(&self) -> ExternalProvider {
        ExternalProvider {
            kind: ProviderKind::Oidc,
            enabled: true,
            client_id: CLIENT_ID.into(),
            client_secret: Some(SecretString::from("idp-client-secret")),
            client_secret_file: None,
            scopes: Vec::new(),
            issuer: Some(self.base.clone()),
            authorize_url: None,
            token_url: None,
            userinfo_url: None,
            emails_url: None,
            id_field: "id".into(),
            email_field: "email".into(),
            email_verified_field: None,
        }
    }

    /// Claims of a good ID token for `sub` with `nonce`.
    fn claims(&self, sub: &str, nonce: &str, email: &str, verified: bool) -> Value {
        let now = chrono_now();
        json!({
            "iss": self.base, "aud": CLIENT_ID, "sub": sub, "nonce": nonce,
            "iat": now, "exp": now + 300,
            "email": email, "email_verified": verified, "name": "Ida Provider",
        })
    }

    fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(KID.into());
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }

    fn sign_with_other_key(&self, claims: &Value) -> String {
        let mut h = Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(KID.into());
        jsonwebtoken::encode(&h, claims, &self.other).unwrap()
    }

    fn answer(&self, id_token: String) {
        self.state.lock().unwrap().id_token = Some(id_token);
    }

    fn last_form(&self) -> HashMap<String, String> {
        self.state.lock().unwrap().forms.last().cloned().unwrap()
    }
}

/// Makes an ID token from the provider and the flow's nonce.
type MakeToken = dyn Fn(&Idp, &str) -> String;

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn with_idp(db: Db) -> (TestApp, Idp) {
    let idp = Idp::start().await;
    let provider = idp.provider();
    let github = ExternalProvider {
        kind: ProviderKind::Oauth2,
        issuer: None,
        authorize_url: Some(format!("{}/login/oauth/authorize", idp.base)),
        token_url: Some(format!("{}/token", idp.base)),
        userinfo_url: Some(format!("{}/user", idp.base)),
        emails_url: Some(format!("{}/user/emails", idp.base)),
        client_id: "gh-client".into(),
        client_secret: Some(SecretString::from("gh-secret")),
        ..idp.provider()
    };
    let app = TestApp::spawn(db, move |c: &mut Config| {
        c.external_providers =
            BTreeMap::from([("idp".to_string(), provider), ("gh".to_string(), github)]);
    })
    .await;
    (app, idp)
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn query(location: &str) -> HashMap<String, String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

fn fragment(location: &str) -> HashMap<String, String> {
    let frag = location.split_once('#').map(|(_, f)| f).unwrap_or("");
    url::form_urlencoded::parse(frag.as_bytes())
        .into_owned()
        .collect()
}

/// What `/authorize` sent the provider.
struct Started {
    state: String,
    nonce: String,
    challenge: String,
}

async fn authorize(app: &TestApp, extra: &str) -> Started {
    let landing = app.url("/welcome");
    let res = no_redirects()
        .get(app.url(&format!(
            "/auth/v1/authorize?provider=idp&redirect_to={}{extra}",
            urlencode(&landing)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    started(&location)
}

fn started(location: &str) -> Started {
    let q = query(location);
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["redirect_uri"].ends_with("/auth/v1/callback"));
    assert!(q["scope"].split(' ').any(|s| s == "openid"));
    Started {
        state: q["state"].clone(),
        nonce: q["nonce"].clone(),
        challenge: q["code_challenge"].clone(),
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Follows the provider's redirect back to `/callback`: the landing URL.
async fn callback(app: &TestApp, state: &str) -> String {
    let res = no_redirects()
        .get(app.url(&format!(
            "/auth/v1/callback?code=provider-code&state={}",
            urlencode(state)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    res.headers()["location"].to_str().unwrap().to_string()
}

fn error_code(location: &str) -> String {
    let f = fragment(location);
    assert_eq!(
        query(location).get("error_code"),
        f.get("error_code"),
        "the error is in the query and the fragment: {location}"
    );
    assert!(!f.contains_key("access_token"), "{location}");
    f.get("error_code").cloned().unwrap_or_default()
}

async fn get_user(app: &TestApp, token: &str) -> Value {
    let (status, body) = parts(
        app.auth(Method::GET, "/user")
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn fresh_email() -> String {
    format!("ext-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// A full sign-in of `sub` with `email`: the landing URL.
async fn sign_in_as(app: &TestApp, idp: &Idp, sub: &str, email: &str, verified: bool) -> String {
    let s = authorize(app, "").await;
    idp.answer(idp.sign(&idp.claims(sub, &s.nonce, email, verified)));
    callback(app, &s.state).await
}

story!(
    a_verified_provider_address_signs_up_with_an_oauth_session,
    setup: with_idp,
    |(app, idp): (TestApp, Idp)| async move {
        let email = fresh_email();
        let s = authorize(&app, "").await;
        idp.answer(idp.sign(&idp.claims("sub-1", &s.nonce, &email, true)));
        let location = callback(&app, &s.state).await;
        assert!(location.starts_with(&app.url("/welcome#")), "{location}");
        let f = fragment(&location);
        assert_eq!(f["token_type"], "bearer");
        assert_eq!(f["provider_token"], "provider-access-token");
        // PKCE towards the provider: the verifier sent at the exchange matches the challenge.
        let form = idp.last_form();
        let verifier = &form["code_verifier"];
        assert_eq!(URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())), s.challenge);
        assert_eq!(form["code"], "provider-code");
        assert_eq!(form["grant_type"], "authorization_code");
        assert!(!form.contains_key("client_secret"), "an OpenID provider gets HTTP Basic");

        let claims = claims_of(&f["access_token"]);
        assert_eq!(claims["amr"][0]["method"], "oauth");
        assert_eq!(claims["email"], email.as_str());
        let user = get_user(&app, &f["access_token"]).await;
        assert_eq!(user["app_metadata"]["provider"], "idp");
        assert_eq!(user["app_metadata"]["providers"], json!(["idp"]));
        assert_eq!(user["user_metadata"]["full_name"], "Ida Provider");
        let ids = user["identities"].as_array().unwrap();
        assert_eq!(ids.len(), 1, "{user}");
        assert_eq!(ids[0]["provider"], "idp");
        assert_eq!(ids[0]["id"], "sub-1");
        assert_eq!(ids[0]["identity_data"]["email_verified"], true);
        assert_eq!(ids[0]["identity_data"]["email"], email.as_str());

        // The same person again: the same account, no second user.
        let again = sign_in_as(&app, &idp, "sub-1", &email, true).await;
        let token = fragment(&again)["access_token"].clone();
        assert_eq!(claims_of(&token)["sub"], claims["sub"]);

        // The only identity cannot be unlinked.
        let id = ids[0]["identity_id"].as_str().unwrap();
        let (status, body) = parts(
            app.auth(Method::DELETE, &format!("/user/identities/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (422, Some("single_identity_not_deletable")));

        // /settings reports the provider as on.
        let (_, settings) = parts(app.auth(Method::GET, "/settings").send().await.unwrap()).await;
        assert_eq!(settings["external"]["idp"], true);
        app
    }
);

story!(
    an_id_token_with_a_wrong_nonce_audience_signature_or_expiry_is_refused,
    setup: with_idp,
    |(app, idp): (TestApp, Idp)| async move {
        let email = fresh_email();
        let cases: Vec<(&str, Box<MakeToken>)> = vec![
            ("nonce", Box::new(|idp: &Idp, _n: &str| idp.sign(&idp.claims("sub-x", "another-nonce", &fresh_email(), true)))),
            ("audience", Box::new(|idp: &Idp, n: &str| {
                let mut c = idp.claims("sub-x", n, &fresh_email(), true);
                c["aud"] = json!("someone-else");
                idp.sign(&c)
            })),
            ("signature", Box::new(|idp: &Idp, n: &str| idp.sign_with_other_key(&idp.claims("sub-x", n, &fresh_email(), true)))),
            ("expired", Box::new(|idp: &Idp, n: &str| {
                let mut c = idp.claims("sub-x", n, &fresh_email(), true);
                c["exp"] = json!(chrono_now() - 3600);
                idp.sign(&c)
            })),
            ("issuer", Box::new(|idp: &Idp, n: &str| {
                let mut c = idp.claims("sub-x", n, &fresh_email(), true);
                c["iss"] = json!("https://evil.example.com");
                idp.sign(&c)
            })),
        ];
        for (check, make) in cases {
            let s = authorize(&app, "").await;
            idp.answer(make(&idp, &s.nonce));
            let location = callback(&app, &s.state).await;
            assert!(location.starts_with(&app.url("/welcome")), "{location}");
            assert_eq!(error_code(&location), "bad_oauth_callback", "{check}: {location}");
            let description = fragment(&location)["error_description"].clone();
            assert!(description.contains(check), "{check}: {description}");
        }
        // None of them created an account: the person's first good sign-in creates it now.
        let location = sign_in_as(&app, &idp, "sub-x", &email, true).await;
        let token = fragment(&location)["access_token"].clone();
        let user = get_user(&app, &token).await;
        assert_eq!(user["email"], email.as_str());
        app
    }
);

story!(
    a_state_is_used_once,
    setup: with_idp,
    |(app, idp): (TestApp, Idp)| async move {
        let s = authorize(&app, "").await;
        idp.answer(idp.sign(&idp.claims("sub-2", &s.nonce, &fresh_email(), true)));
        let first = callback(&app, &s.state).await;
        assert!(fragment(&first).contains_key("access_token"), "{first}");
        idp.answer(idp.sign(&idp.claims("sub-2", &s.nonce, &fresh_email(), true)));
        let second = callback(&app, &s.state).await;
        assert_eq!(error_code(&second), "bad_oauth_state");
        // Unknown and missing states land on the site URL with the error.
        let unknown = callback(&app, "never-issued").await;
        assert_eq!(error_code(&unknown), "bad_oauth_state");
        let res = no_redirects().get(app.url("/auth/v1/callback?code=x")).send().await.unwrap();
        let missing = res.headers()["location"].to_str().unwrap().to_string();
        assert_eq!(error_code(&missing), "bad_oauth_callback");
        // The provider's own refusal comes through.
        let s = authorize(&app, "").await;
        let res = no_redirects()
            .get(app.url(&format!("/auth/v1/callback?error=access_denied&error_description=no&state={}", urlencode(&s.state))))
            .send()
            .await
            .unwrap();
        let refused = res.headers()["location"].to_str().unwrap().to_string();
        assert_eq!(fragment(&refused)["error"], "access_denied");
        assert_eq!(error_code(&refused), "bad_oauth_callback");
        // An unknown provider is GoTrue's 400.
        let (status, body) = parts(
            no_redirects().get(app.url("/auth/v1/authorize?provider=nope")).send().await.unwrap(),
        )
        .await;
        assert_eq!((status, body["error_code"].as_str()), (400, Some("validation_failed")));
        assert!(body["msg"].as_str().unwrap().starts_with("Unsupported provider"), "{body}");
        app
    }
);

story!(
    an_unverified_provider_address_never_joins_an_existing_account,
    setup: with_idp,
    |(app, idp): (TestApp, Idp)| async move {
        let (email, password, _) = app.new_user().await;
        let location = sign_in_as(&app, &idp, "sub-3", &email, false).await;
        assert_eq!(error_code(&location), "provider_email_needs_verification");
        assert_eq!(fragment(&location)["error"], "access_denied");
        // The account is as it was: its password signs in and it has no idp identity.
        let (status, session) = parts(app.sign_in(&email, &password).await).await;
        assert_eq!(status, 200);
        let user = get_user(&app, session["access_token"].as_str().unwrap()).await;
        let providers: Vec<&str> = user["identities"].as_array().unwrap().iter().map(|i| i["provider"].as_str().unwrap()).collect();
        assert_eq!(providers, ["email"]);
        // An unverified address with no account creates nothing either.
        let nobody = fresh_email();
        let location = sign_in_as(&app, &idp, "sub-4", &nobody, false).await;
        assert_eq!(error_code(&location), "provider_email_needs_verification");
        let (status, _) = parts(app.auth(Method::POST, "/token?grant_type=password").json(&json!({"email": nobody, "password": "x"})).send().await.unwrap()).await;
        assert_eq!(status, 400);
        app
    }
);

story!(
    a_verified_address_joins_its_account_and_an_unproven_password_stops_working,
    setup: |db| async move {
        let idp = Idp::start().await;
        let provider = idp.provider();
        let app = TestApp::spawn(db, move |c: &mut Config| {
            c.autoconfirm = false;
            c.external_providers = BTreeMap::from([("idp".to_string(), provider)]);
        })
        .await;
        (app, idp)
    },
    |(app, idp): (TestApp, Idp)| async move {
        // Someone signs up with the victim's address and never confirms it.
        let email = fresh_email();
        let res = app.signup(&email, "squatters password 1").await;
        assert_eq!(res.status(), 200);
        // The owner signs in with a provider that verified the address: same account.
        let location = sign_in_as(&app, &idp, "sub-5", &email, true).await;
        let token = fragment(&location)["access_token"].clone();
        assert!(!token.is_empty(), "{location}");
        let user = get_user(&app, &token).await;
        assert!(user["email_confirmed_at"].is_string());
        assert_eq!(user["app_metadata"]["providers"], json!(["email", "idp"]));
        // The squatter's password never signs in.
        let (status, body) = parts(app.sign_in(&email, "squatters password 1").await).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("invalid_credentials")));
        app
    }
);

story!(
    linking_an_identity_owned_by_another_user_is_refused,
    setup: with_idp,
    |(app, idp): (TestApp, Idp)| async move {
        let (_, _, ann) = app.new_user().await;
        let ann_token = ann["access_token"].as_str().unwrap().to_string();
        let link = |token: String| {
            let app = &app;
            async move {
                let (status, body) = parts(
                    app.auth(Method::GET, &format!("/user/identities/authorize?provider=idp&skip_http_redirect=true&redirect_to={}", urlencode(&app.url("/welcome"))))
                        .bearer_auth(token)
                        .send()
                        .await
                        .unwrap(),
                )
                .await;
                assert_eq!(status, 200, "{body}");
                started(body["url"].as_str().unwrap())
            }
        };
        // Ann links the provider identity sub-6 (its address need not be hers).
        let s = link(ann_token.clone()).await;
        idp.answer(idp.sign(&idp.claims("sub-6", &s.nonce, &fresh_email(), false)));
        let location = callback(&app, &s.state).await;
        let token = fragment(&location)["access_token"].clone();
        let user = get_user(&app, &token).await;
        assert_eq!(user["id"], ann["user"]["id"]);
        let ids = user["identities"].as_array().unwrap();
        assert_eq!(ids.len(), 2, "{user}");
        let linked = ids.iter().find(|i| i["provider"] == "idp").unwrap();
        assert_eq!(linked["id"], "sub-6");

        // Bob tries to link the same provider identity: refused.
        let (_, _, bob) = app.new_user().await;
        let s = link(bob["access_token"].as_str().unwrap().to_string()).await;
        idp.answer(idp.sign(&idp.claims("sub-6", &s.nonce, &fresh_email(), true)));
        let location = callback(&app, &s.state).await;
        assert_eq!(error_code(&location), "identity_already_exists");
        assert!(fragment(&location)["error_description"].contains("another user"));

        // Ann unlinks it; her email identity remains.
        let id = linked["identity_id"].as_str().unwrap();
        let (status, body) = parts(
            app.auth(Method::DELETE, &format!("/user/identities/{id}")).bearer_auth(&token).send().await.unwrap(),
        )
        .await;
        assert_eq!((status, body), (200, json!({})));
        let user = get_user(&app, &token).await;
        assert_eq!(user["identities"].as_array().unwrap().len(), 1);
        assert_eq!(user["app_metadata"]["providers"], json!(["email"]));
        let (status, body) = parts(
            app.auth(Method::DELETE, "/user/identities/not-a-uuid").bearer_auth(&token).send().await.unwrap(),
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (404, Some("validation_failed")));
        app
    }
);

story!(
    a_pkce_sign_in_lands_with_a_code_exchanged_once,
    setup: with_idp,
    |(app, idp): (TestApp, Idp)| async move {
        let verifier = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let s = authorize(&app, &format!("&code_challenge={challenge}&code_challenge_method=s256")).await;
        idp.answer(idp.sign(&idp.claims("sub-7", &s.nonce, &fresh_email(), true)));
        let location = callback(&app, &s.state).await;
        assert!(!location.contains("access_token"), "{location}");
        let code = query(&location)["code"].clone();
        let exchange = |v: String| {
            let app = &app;
            let code = code.clone();
            async move {
                parts(app.auth(Method::POST, "/token?grant_type=pkce").json(&json!({"auth_code": code, "code_verifier": v})).send().await.unwrap()).await
            }
        };
        let (status, session) = exchange(verifier.clone()).await;
        assert_eq!(status, 200, "{session}");
        assert_eq!(claims_of(session["access_token"].as_str().unwrap())["amr"][0]["method"], "oauth");
        // The answer's user lists the provider identity, as GoTrue's does.
        let providers: Vec<&str> = session["user"]["identities"].as_array().unwrap().iter().map(|i| i["provider"].as_str().unwrap()).collect();
        assert_eq!(providers, ["idp"]);
        let (status, _) = exchange(verifier).await;
        assert_eq!(status, 404);
        app
    }
);

story!(
    a_plain_oauth2_provider_signs_in_with_its_primary_verified_address,
    setup: with_idp,
    |(app, idp): (TestApp, Idp)| async move {
        let landing = app.url("/welcome");
        let start = || async {
            let res = no_redirects()
                .get(app.url(&format!("/auth/v1/authorize?provider=gh&scopes=user:email&redirect_to={}", urlencode(&landing))))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 302);
            let location = res.headers()["location"].to_str().unwrap().to_string();
            assert!(location.starts_with(&format!("{}/login/oauth/authorize?", idp.base)), "{location}");
            let q = query(&location);
            assert_eq!(q["client_id"], "gh-client");
            assert_eq!(q["scope"], "user:email");
            assert!(!q.contains_key("nonce"), "no nonce for plain OAuth 2");
            q["state"].clone()
        };
        // Only unverified addresses: refused, nothing created.
        let email = fresh_email();
        idp.state.lock().unwrap().emails = json!([{"email": email, "primary": true, "verified": false}]);
        let state = start().await;
        let location = callback(&app, &state).await;
        assert_eq!(error_code(&location), "provider_email_needs_verification");
        // The primary verified address: an account, its id the provider's numeric id.
        idp.state.lock().unwrap().emails = json!([
            {"email": fresh_email(), "primary": false, "verified": true},
            {"email": email, "primary": true, "verified": true},
        ]);
        let state = start().await;
        let location = callback(&app, &state).await;
        let f = fragment(&location);
        let user = get_user(&app, &f["access_token"]).await;
        assert_eq!(user["email"], email.as_str());
        let ids = user["identities"].as_array().unwrap();
        assert_eq!((ids[0]["provider"].as_str(), ids[0]["id"].as_str()), (Some("gh"), Some("4242")));
        assert_eq!(user["user_metadata"]["full_name"], "Octo Cat");
        // The client's credentials went in the form, GitHub's way.
        let form = idp.last_form();
        assert_eq!((form["client_id"].as_str(), form["client_secret"].as_str()), ("gh-client", "gh-secret"));
        app
    }
);
