use std::net::SocketAddr;
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
/// Secrets are `secrecy`'s `SecretString`: `Debug` prints `[REDACTED]`, reading one takes
/// an explicit `expose_secret()`, and the memory is wiped on drop.
pub use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};

use crate::ratelimit::{Rate, Rates, RedisSettings};

mod external;
mod files;
pub use external::{ExternalProvider, ProviderKind};
pub use files::{masked_settings, SECRET_SETTINGS};

/// Verified API keys held in memory unless `key_cache_capacity` says otherwise.
pub const DEFAULT_KEY_CACHE_CAPACITY: u64 = 250_000;

/// What sits between Gatehouse and PostgreSQL (`database_pooler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DatabasePooler {
    /// A direct connection, or a pooler that keeps one server connection per client
    /// connection (PgBouncer's `pool_mode = session`).
    #[default]
    None,
    /// A pooler that lends a server connection for one transaction at a time (PgBouncer's
    /// `pool_mode = transaction`): every statement runs in a transaction, unnamed.
    Transaction,
}

/// Who may register OAuth clients at `POST /oauth/register` (`oauth_registration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OAuthRegistration {
    /// Anyone (RFC 7591 open registration), limited per IP by `rate_limit_oauth_register`.
    #[default]
    Open,
    /// Only a caller presenting `oauth_registration_token` as a bearer token (RFC 7591's
    /// initial access token).
    Token,
    /// Nobody: clients come from metadata documents or organization admins only.
    Off,
}

/// A captcha service (`captcha_provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptchaProvider {
    /// Cloudflare Turnstile.
    Turnstile,
    /// hCaptcha.
    Hcaptcha,
}

impl CaptchaProvider {
    /// The provider's own verification endpoint.
    pub fn verify_url(self) -> &'static str {
        match self {
            CaptchaProvider::Turnstile => {
                "https://challenges.cloudflare.com/turnstile/v0/siteverify"
            }
            CaptchaProvider::Hcaptcha => "https://api.hcaptcha.com/siteverify",
        }
    }
}

/// Every setting of a Gatehouse process. See `config.example.toml`.
///
/// `Serialize` only feeds the defaults to figment; secret fields are skipped there (their
/// default is unset) so a secret never has a serialised form.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://…` (`sslmode` and `sslrootcert` in the query).
    pub database_url: String,
    /// A file holding `database_url` (for a URL with a password); not with `database_url`.
    pub database_url_file: Option<String>,
    /// A direct PostgreSQL URL for migrations when `database_url` goes through a pooler;
    /// unset: migrations use `database_url`.
    pub migrate_database_url: Option<String>,
    /// A file holding `migrate_database_url`; not with `migrate_database_url`.
    pub migrate_database_url_file: Option<String>,
    /// What sits between Gatehouse and PostgreSQL: `none` (a direct connection or a
    /// session pooler) or `transaction` (a transaction pooler such as PgBouncer's
    /// `pool_mode = transaction`).
    pub database_pooler: DatabasePooler,
    /// The URL users reach this server at (token issuer, CSRF origin, cookie security).
    pub public_url: String,
    /// The key clients send in `apikey` on `/auth/v1`; generated and stored at first start when unset.
    #[serde(skip_serializing)]
    pub publishable_key: Option<SecretString>,
    /// A file holding `publishable_key`; not with `publishable_key`.
    pub publishable_key_file: Option<String>,
    /// When set, access tokens are signed HS256 with this shared secret instead of ES256.
    #[serde(skip_serializing)]
    pub jwt_secret: Option<SecretString>,
    /// A file holding `jwt_secret`; not with `jwt_secret`.
    pub jwt_secret_file: Option<String>,
    /// Access-token lifetime in seconds.
    pub jwt_expiry_seconds: i64,
    /// The key TOTP secrets are sealed under at rest (at least 32 characters); unset, TOTP
    /// enrolment and verification are off (`mfa_totp_enroll_not_enabled`).
    #[serde(skip_serializing)]
    pub mfa_encryption_key: Option<SecretString>,
    /// A file holding `mfa_encryption_key`; not with `mfa_encryption_key`.
    pub mfa_encryption_key_file: Option<String>,
    /// Seconds an MFA challenge may be verified against.
    pub mfa_challenge_expiry_seconds: i64,
    /// Most factors (verified or not) one user may have.
    pub mfa_max_enrolled_factors: i64,
    /// Seconds between reloads of the signing keys, so `gatehouse jwt rotate` reaches running
    /// servers.
    pub signing_key_reload_seconds: u64,
    /// Window in which a rotated refresh token may be presented again (racing tabs).
    pub refresh_reuse_interval_seconds: i64,
    /// Confirm new users at sign-up (development).
    pub autoconfirm: bool,
    /// Anonymous sign-in (`signInAnonymously`: a sign-up with neither email nor phone).
    pub anonymous_sign_ins: bool,
    /// A password change (`PUT /auth/v1/user`) from a session older than 24 hours needs the
    /// nonce of `/auth/v1/reauthenticate` (GoTrue's secure password change).
    pub secure_password_change: bool,
    /// Minimum password length.
    pub password_min_length: usize,
    /// Least zxcvbn strength score (0-4) of a new password; 0 turns the estimator off.
    pub password_min_score: u8,
    /// Base URL of a Have-I-Been-Pwned-compatible range API (`{url}/range/{5 hex}`) new
    /// passwords are looked up in; unset: no lookup.
    pub password_breach_check_url: Option<String>,
    /// Refuse a new password (503) when the breach lookup fails, instead of accepting it.
    pub password_breach_check_fail_closed: bool,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// Prefix of API keys (`{prefix}_{env}_…`).
    pub key_prefix: String,
    /// Seconds between writes of API keys' last-used times and usage counters.
    pub write_behind_seconds: u64,
    /// Verified API keys held in memory (above the number in use per minute, or
    /// verifications read storage).
    pub key_cache_capacity: u64,
    /// Concurrent argon2 computations allowed (0 = number of CPUs).
    pub password_hash_concurrency: usize,
    /// Dashboard session lifetime in seconds.
    pub web_session_seconds: i64,
    /// Absolute lifetime of a token session from sign-in, in seconds; unset: none.
    pub session_max_seconds: Option<i64>,
    /// A token session not refreshed for this many seconds ends; unset: never.
    pub session_inactivity_seconds: Option<i64>,
    /// An email change applies only once both the current and the new address confirm it.
    pub email_change_double_confirm: bool,
    /// Per API key, every window at once (a key's own `rate_limits` replace these).
    pub rate_limit_api_key: Rates,
    /// Per organization, across all its keys (an organization's `rate_limits` replace these).
    pub rate_limit_org: Rates,
    /// Per client IP: password sign-in.
    pub rate_limit_sign_in: Rates,
    /// Per client IP: sign-up.
    pub rate_limit_sign_up: Rates,
    /// Per client IP: anonymous sign-ins.
    pub rate_limit_anonymous: Rates,
    /// Per client IP: magic links and one-time codes sent by email.
    pub rate_limit_magic_link: Rates,
    /// Per client IP: verification of emailed links and codes.
    pub rate_limit_verify: Rates,
    /// Per client IP: refresh-token grants.
    pub rate_limit_token_refresh: Rates,
    /// Per client IP: OAuth dynamic client registrations.
    pub rate_limit_oauth_register: Rates,
    /// Per client IP: OAuth authorization requests (`GET /oauth/authorize`).
    pub rate_limit_oauth_authorize: Rates,
    /// Per MFA factor: challenges and verification attempts.
    pub rate_limit_mfa_verify: Rates,
    /// Per widget session.
    pub rate_limit_widget_session: Rates,
    /// Per client IP on the public widget routes.
    pub rate_limit_widget_ip: Rates,
    /// Per widget, across all its visitors (bounds what one embedded page can spend).
    pub rate_limit_widget: Rates,
    /// Per client IP: failed credential checks (unknown, revoked or expired keys, bad or
    /// expired tokens, wrong passwords); over it, every credential from that IP gets 429
    /// before any storage read.
    pub rate_limit_auth_failures: Rates,
    /// Widget session lifetime in seconds (the page renews before it ends).
    pub widget_session_seconds: u64,
    /// Policies that refuse requests (503) rather than decide in memory when Redis is down.
    #[serde(deserialize_with = "comma_list")]
    pub rate_limit_fail_closed: Vec<String>,
    /// Most rate-limit counters held in memory (idle ones are forgotten first).
    pub rate_limit_memory_capacity: u64,
    /// `redis://…`: share rate limits and cache invalidations between instances.
    #[serde(skip_serializing)]
    pub redis_url: Option<SecretString>,
    /// A file holding `redis_url`; not with `redis_url`.
    pub redis_url_file: Option<String>,
    /// Seed nodes of a Redis/Valkey Cluster (`redis://…` or `rediss://…`, a TOML array or
    /// comma-separated); instead of `redis_url`. Secret: the URLs may hold a password.
    #[serde(skip_serializing, deserialize_with = "secret_list")]
    pub redis_cluster_urls: Option<SecretString>,
    /// A file holding `redis_cluster_urls` (comma-separated); not with `redis_cluster_urls`.
    pub redis_cluster_urls_file: Option<String>,
    /// A PEM file of the CA certificates trusted for `rediss://` (a private CA) instead of
    /// the public roots.
    pub redis_ca_file: Option<String>,
    /// Prefix of every Redis key and channel (one Redis can serve several deployments).
    pub redis_prefix: String,
    /// Longest wait for one Redis command before deciding in memory, in milliseconds.
    pub redis_timeout_ms: u64,
    /// Proxies whose `X-Forwarded-For` is believed (IPs or CIDRs); empty: the socket peer.
    #[serde(deserialize_with = "comma_list")]
    pub trusted_proxies: Vec<String>,
    /// An OpenAI-compatible server (`…/v1` or `…/v1/chat/completions`); unset: the echo upstream.
    pub upstream_url: Option<String>,
    /// The `model` sent upstream.
    pub upstream_model: String,
    /// Sent upstream as `Authorization: Bearer`; never logged.
    #[serde(skip_serializing)]
    pub upstream_api_key: Option<SecretString>,
    /// A file holding `upstream_api_key`; not with `upstream_api_key`.
    pub upstream_api_key_file: Option<String>,
    /// Longest wait for the model server's first answer and between two streamed pieces (ms).
    pub upstream_timeout_ms: u64,
    /// Earlier messages of a thread sent upstream with a new one.
    pub chat_history_messages: i64,
    /// The currency of every price and budget (ISO 4217 code); amounts are integer
    /// micro-units of it.
    pub currency: String,
    /// The price table: per model, micro-units per million prompt and completion tokens.
    pub models: std::collections::BTreeMap<String, ModelPrice>,
    /// Seconds a budget reservation lives without being settled (a dead instance's
    /// reservation is released after this).
    pub spend_lease_seconds: u64,
    /// More models the model server offers, listed by `GET /v1/models` beside `upstream_model`.
    #[serde(deserialize_with = "comma_list")]
    pub chat_models: Vec<String>,
    /// The answer's tokens reserved for a chat that gives no `max_tokens`: in the token
    /// windows, and against budgets (where it is also sent upstream as `max_tokens`).
    pub chat_reserve_tokens: u32,
    /// Lifetime of a concurrency lease without renewal: how long a dead instance's answers
    /// keep their place in `max_parallel` (seconds).
    pub chat_lease_seconds: u64,
    /// Tokens per day for one widget, all its visitors together, unless the widget sets its own.
    pub widget_tokens_per_day: u64,
    /// Tokens per day for one widget visitor, unless the widget sets its own.
    pub widget_visitor_tokens_per_day: u64,
    /// The customer's own backend: other requests under `/api/` are forwarded there after
    /// authentication and limits; unset: they get 404.
    pub proxy_target: Option<String>,
    /// Allow webhook targets on loopback, private and link-local addresses (tests, private networks).
    pub webhooks_allow_private: bool,
    /// Resolve webhook hosts with this DNS server (`ip:port`) instead of the system resolver.
    pub webhooks_dns_server: Option<SocketAddr>,
    /// How often the webhook worker looks for due deliveries when nothing woke it (ms).
    pub webhooks_poll_interval_ms: u64,
    /// Seconds to wait before each delivery attempt: the first (0: at once), then each retry.
    #[serde(deserialize_with = "seconds_list")]
    pub webhooks_retry_schedule: Vec<u64>,
    /// Longest wait for one webhook delivery, connection to answer (ms).
    pub webhooks_timeout_ms: u64,
    /// Log filter (tracing `EnvFilter` syntax).
    pub log: String,
    /// `text` or `json`.
    pub log_format: String,
    /// Base URL of an OpenTelemetry collector's OTLP/HTTP receiver (`http://collector:4318`);
    /// spans go to `{otlp_endpoint}/v1/traces` as protobuf. Unset: no spans are exported.
    pub otlp_endpoint: Option<String>,
    /// When set, `/metrics` needs `Authorization: Bearer <metrics_token>` (at least 16
    /// characters; compared in constant time); unset: `/metrics` needs no credential.
    #[serde(skip_serializing)]
    pub metrics_token: Option<SecretString>,
    /// A file holding `metrics_token`; not with `metrics_token`.
    pub metrics_token_file: Option<String>,
    /// Who may register OAuth clients dynamically: `open`, `token` or `off`.
    pub oauth_registration: OAuthRegistration,
    /// The initial access token `POST /oauth/register` needs when `oauth_registration` is
    /// `token` (at least 16 characters; compared in constant time).
    #[serde(skip_serializing)]
    pub oauth_registration_token: Option<SecretString>,
    /// A file holding `oauth_registration_token`; not with `oauth_registration_token`.
    pub oauth_registration_token_file: Option<String>,
    /// Lifetime of an OAuth authorization code, in seconds (10–600).
    pub oauth_code_seconds: i64,
    /// Lifetime of an OAuth refresh token, in seconds; each rotation starts a new one.
    pub oauth_refresh_seconds: i64,
    /// A secret service key for `/auth/v1/admin` besides the minted `service_role` JWTs
    /// (at least 32 characters; compared in constant time). Unset: only the JWTs.
    #[serde(skip_serializing)]
    pub service_key: Option<SecretString>,
    /// A file holding `service_key`; not with `service_key`.
    pub service_key_file: Option<String>,
    /// `turnstile` or `hcaptcha`: sign-up, password sign-in, `/otp`, `/recover` need a
    /// verified `gotrue_meta_security.captcha_token`. Unset: no captcha.
    pub captcha_provider: Option<CaptchaProvider>,
    /// The provider's secret key (with `captcha_provider`).
    #[serde(skip_serializing)]
    pub captcha_secret: Option<SecretString>,
    /// A file holding `captcha_secret`; not with `captcha_secret`.
    pub captcha_secret_file: Option<String>,
    /// Where tokens are verified; unset: the provider's own siteverify URL.
    pub captcha_verify_url: Option<String>,
    /// How long a verification may take, in milliseconds (then the request is refused).
    pub captcha_timeout_ms: u64,
    /// When set, `/metrics` is served only on this address (e.g. `127.0.0.1:9090`) and the
    /// main listener answers 404 there.
    pub metrics_listen: Option<SocketAddr>,
    /// Development mode: confirms sign-ups at once (as `autoconfirm`), allows private webhook
    /// targets and accepts every loopback name of `public_url`'s port as its origin.
    pub dev: bool,
    /// `smtp://`/`smtps://` URL mail goes out through (may hold credentials: never logged).
    #[serde(skip_serializing)]
    pub smtp_url: Option<SecretString>,
    /// A file holding `smtp_url`; not with `smtp_url`.
    pub smtp_url_file: Option<String>,
    /// A PEM file of CA certificates trusted for SMTP TLS beside the public roots (a private CA).
    pub smtp_ca_file: Option<String>,
    /// The `From:` of every mail.
    pub mail_from: String,
    /// Without SMTP (development): mails are logged and written here, one file each.
    pub mail_outbox_dir: String,
    /// A folder whose template files replace the built-in ones.
    pub mail_templates_dir: Option<String>,
    /// Where emailed links land by default (GoTrue's `SITE_URL`); unset: `public_url`.
    pub site_url: Option<String>,
    /// URLs (exact, or `*`/`**` patterns) an emailed link may redirect to.
    #[serde(deserialize_with = "comma_list")]
    pub redirect_allowlist: Vec<String>,
    /// Sign-in with external providers (`signInWithOAuth`), by name: OpenID Connect or plain
    /// OAuth 2 ([supabase](docs/supabase.md)).
    pub external_providers: std::collections::BTreeMap<String, ExternalProvider>,
    /// Lifetime of emailed links and codes, in seconds.
    pub otp_expiry_seconds: i64,
    /// Least time between two mails to one address, in seconds.
    pub mail_min_interval_seconds: i64,
    /// Lifetime of a PKCE auth code (`?code=` of a followed link), in seconds.
    pub pkce_code_expiry_seconds: i64,
    /// Lifetime of an invitation to an organization, in seconds.
    pub invitation_seconds: i64,
    /// Per organization: invitations created.
    pub rate_limit_invitation_org: Rates,
    /// Per inviting user: invitations created.
    pub rate_limit_invitation_user: Rates,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://gatehouse.db".into(),
            database_url_file: None,
            migrate_database_url: None,
            migrate_database_url_file: None,
            database_pooler: DatabasePooler::None,
            public_url: "http://127.0.0.1:8080".into(),
            publishable_key: None,
            publishable_key_file: None,
            jwt_secret: None,
            jwt_secret_file: None,
            mfa_encryption_key: None,
            mfa_encryption_key_file: None,
            mfa_challenge_expiry_seconds: 300,
            mfa_max_enrolled_factors: 10,
            jwt_expiry_seconds: 3600,
            signing_key_reload_seconds: 60,
            refresh_reuse_interval_seconds: 10,
            autoconfirm: false,
            anonymous_sign_ins: false,
            secure_password_change: false,
            password_min_length: 8,
            password_min_score: 3,
            password_breach_check_url: None,
            password_breach_check_fail_closed: false,
            body_limit_bytes: 1024 * 1024,
            key_prefix: "gk".into(),
            key_cache_capacity: DEFAULT_KEY_CACHE_CAPACITY,
            write_behind_seconds: 30,
            password_hash_concurrency: 0,
            web_session_seconds: 7 * 24 * 3600,
            session_max_seconds: None,
            session_inactivity_seconds: None,
            email_change_double_confirm: true,
            rate_limit_api_key: Rates(vec![
                Rate::new(60, 60),
                Rate::new(1000, 3600),
                Rate::new(10_000, 86_400),
            ]),
            rate_limit_org: Rates::one(Rate::new(120, 60)),
            rate_limit_sign_in: Rates::one(Rate::new(20, 60)),
            rate_limit_sign_up: Rates::one(Rate::new(5, 60)),
            rate_limit_anonymous: Rates::one(Rate::new(30, 3600)),
            rate_limit_magic_link: Rates::one(Rate::new(5, 60)),
            rate_limit_verify: Rates::one(Rate::new(10, 60)),
            rate_limit_token_refresh: Rates::one(Rate::new(150, 300)),
            rate_limit_oauth_register: Rates::one(Rate::new(10, 3600)),
            rate_limit_oauth_authorize: Rates::one(Rate::new(60, 60)),
            rate_limit_mfa_verify: Rates::one(Rate::new(10, 60)),
            rate_limit_widget_session: Rates::one(Rate::new(30, 60)),
            rate_limit_widget_ip: Rates::one(Rate::new(120, 60)),
            rate_limit_widget: Rates::one(Rate::new(1200, 60)),
            rate_limit_auth_failures: Rates::one(Rate::new(300, 60)),
            widget_session_seconds: 900,
            rate_limit_fail_closed: vec!["magic_link".into()],
            rate_limit_memory_capacity: 1_000_000,
            redis_url: None,
            redis_url_file: None,
            redis_cluster_urls: None,
            redis_cluster_urls_file: None,
            redis_ca_file: None,
            redis_prefix: "gatehouse".into(),
            redis_timeout_ms: 250,
            trusted_proxies: Vec::new(),
            upstream_url: None,
            upstream_model: "default".into(),
            upstream_api_key: None,
            upstream_api_key_file: None,
            upstream_timeout_ms: 60_000,
            currency: "USD".into(),
            models: std::collections::BTreeMap::new(),
            spend_lease_seconds: 300,
            chat_history_messages: 20,
            chat_models: Vec::new(),
            chat_reserve_tokens: 4096,
            chat_lease_seconds: 60,
            widget_tokens_per_day: 200_000,
            widget_visitor_tokens_per_day: 20_000,
            proxy_target: None,
            webhooks_allow_private: false,
            webhooks_dns_server: None,
            webhooks_poll_interval_ms: 1000,
            webhooks_retry_schedule: vec![0, 5, 300, 1800, 7200, 18_000, 36_000, 36_000],
            webhooks_timeout_ms: 15_000,
            log: "info".into(),
            log_format: "text".into(),
            otlp_endpoint: None,
            metrics_token: None,
            metrics_token_file: None,
            oauth_registration: OAuthRegistration::Open,
            oauth_registration_token: None,
            oauth_registration_token_file: None,
            oauth_code_seconds: 60,
            oauth_refresh_seconds: 30 * 86_400,
            service_key: None,
            service_key_file: None,
            captcha_provider: None,
            captcha_secret: None,
            captcha_secret_file: None,
            captcha_verify_url: None,
            captcha_timeout_ms: 5000,
            metrics_listen: None,
            dev: false,
            smtp_url: None,
            smtp_url_file: None,
            smtp_ca_file: None,
            mail_from: "Gatehouse <noreply@localhost>".into(),
            mail_outbox_dir: "./outbox".into(),
            mail_templates_dir: None,
            site_url: None,
            redirect_allowlist: Vec::new(),
            external_providers: std::collections::BTreeMap::new(),
            otp_expiry_seconds: 3600,
            mail_min_interval_seconds: 60,
            pkce_code_expiry_seconds: 300,
            invitation_seconds: 48 * 3600,
            rate_limit_invitation_org: Rates::one(Rate::new(100, 3600)),
            rate_limit_invitation_user: Rates::one(Rate::new(30, 3600)),
        }
    }
}

/// A model's price: integer micro-units of `currency` per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Per million prompt tokens.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub input_per_mtok: i64,
    /// Per million completion tokens.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub output_per_mtok: i64,
}

/// A named rate-limit policy; its windows come from the configuration, and for keys and
/// organizations may be replaced per key or per organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Per API key.
    ApiKey,
    /// Per organization.
    Org,
    /// Per IP, password sign-in.
    SignIn,
    /// Per IP, sign-up.
    SignUp,
    /// Per IP, emailed links and codes.
    MagicLink,
    /// Per IP, verification of emailed links and codes.
    Verify,
    /// Per IP, refresh-token grants.
    TokenRefresh,
    /// Per MFA factor, challenges and verification attempts.
    MfaVerify,
    /// Per widget session.
    WidgetSession,
    /// Per IP, public widget routes.
    WidgetIp,
    /// Per widget, all visitors.
    Widget,
    /// Per organization, invitations created.
    InvitationOrg,
    /// Per inviting user, invitations created.
    InvitationUser,
    /// Per IP, failed credential checks.
    AuthFailures,
    /// Per IP, OAuth dynamic client registrations.
    OAuthRegister,
    /// Per IP, OAuth authorization requests.
    OAuthAuthorize,
    /// Per IP, anonymous sign-ins.
    Anonymous,
}

impl Policy {
    /// Every policy.
    pub const ALL: [Policy; 17] = [
        Policy::ApiKey,
        Policy::Org,
        Policy::SignIn,
        Policy::SignUp,
        Policy::MagicLink,
        Policy::Verify,
        Policy::TokenRefresh,
        Policy::MfaVerify,
        Policy::WidgetSession,
        Policy::WidgetIp,
        Policy::Widget,
        Policy::InvitationOrg,
        Policy::InvitationUser,
        Policy::AuthFailures,
        Policy::OAuthRegister,
        Policy::OAuthAuthorize,
        Policy::Anonymous,
    ];

    /// The name in configuration, headers and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Policy::ApiKey => "api_key",
            Policy::Org => "org",
            Policy::SignIn => "sign_in",
            Policy::SignUp => "sign_up",
            Policy::MagicLink => "magic_link",
            Policy::Verify => "verify",
            Policy::TokenRefresh => "token_refresh",
            Policy::MfaVerify => "mfa_verify",
            Policy::WidgetSession => "widget_session",
            Policy::WidgetIp => "widget_ip",
            Policy::Widget => "widget",
            Policy::InvitationOrg => "invitation_org",
            Policy::InvitationUser => "invitation_user",
            Policy::AuthFailures => "auth_failures",
            Policy::OAuthRegister => "oauth_register",
            Policy::OAuthAuthorize => "oauth_authorize",
            Policy::Anonymous => "anonymous",
        }
    }

    /// The policy of a name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// A list given as `"a, b"` (handy in environment variables) or as a TOML array.
fn comma_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Form::deserialize(d)? {
        Form::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        Form::Many(v) => v,
    })
}

/// The items of a comma-separated list, trimmed, empty ones left out.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A secret list given as `"a, b"` or as a TOML array, kept as one secret `"a,b"`.
fn secret_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        One(String),
        Many(Vec<String>),
    }
    let items = match Option::<Form>::deserialize(d)? {
        None => return Ok(None),
        Some(Form::One(s)) => split_list(&s),
        Some(Form::Many(v)) => v.iter().flat_map(|s| split_list(s)).collect(),
    };
    Ok((!items.is_empty()).then(|| SecretString::from(items.join(","))))
}

/// Seconds given as `"0, 5, 300"` (handy in environment variables) or as a TOML array.
fn seconds_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Number(u64),
        Text(String),
        Many(Vec<u64>),
    }
    match Form::deserialize(d)? {
        Form::Number(n) => Ok(vec![n]),
        Form::Many(v) => Ok(v),
        Form::Text(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u64>().map_err(serde::de::Error::custom))
            .collect(),
    }
}

/// Environment variables with this prefix belong to the test suite, not to the server.
const RESERVED_ENV_PREFIX: &str = "TEST_";

/// Read by the command line itself (`--config`), not a setting.
const CONFIG_FILE_ENV: &str = "CONFIG_FILE";

impl Config {
    /// The Redis settings, for `ratelimit::RedisLink`.
    pub fn redis_settings(&self) -> RedisSettings {
        RedisSettings {
            url: self.redis_url.clone(),
            cluster_urls: self
                .redis_cluster_urls
                .as_ref()
                .map(|u| split_list(u.expose_secret()))
                .unwrap_or_default(),
            ca_file: self.redis_ca_file.clone(),
            timeout: std::time::Duration::from_millis(self.redis_timeout_ms),
            prefix: self.redis_prefix.clone(),
        }
    }

    /// Defaults, then the TOML file (if any), then `GATEHOUSE_*` variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        // What the operator gave (file, then environment), without the defaults: a secret
        // and its `…_file` may not both be given.
        let mut given = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                anyhow::bail!("config file {} does not exist", path.display());
            }
            given = given.merge(Toml::file(path));
        }
        given = given.merge(Env::prefixed("GATEHOUSE_").filter(|k| {
            let k = k.as_str().to_ascii_uppercase();
            !k.starts_with(RESERVED_ENV_PREFIX) && k != CONFIG_FILE_ENV
        }));
        let mut cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(given.clone())
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        cfg.read_secret_files(|key| given.contains(key))?;
        external::prepare(&mut cfg.external_providers)?;
        if cfg.dev {
            cfg.autoconfirm = true;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the Redis settings (part of `validate`): one of `redis_url` and
    /// `redis_cluster_urls`, cluster seeds all `redis://` or all `rediss://`, and
    /// `redis_ca_file` only for TLS.
    fn check_redis(&self) -> anyhow::Result<()> {
        let cluster = self
            .redis_cluster_urls
            .as_ref()
            .map(|u| split_list(u.expose_secret()))
            .unwrap_or_default();
        if self.redis_url.is_some() && !cluster.is_empty() {
            anyhow::bail!("redis_url and redis_cluster_urls are both set: keep one");
        }
        let scheme = |u: &str| {
            if u.starts_with("rediss://") {
                Some(true)
            } else if u.starts_with("redis://") {
                Some(false)
            } else {
                None
            }
        };
        let mut tls = self
            .redis_url
            .as_ref()
            .map(|u| scheme(u.expose_secret()) == Some(true));
        for u in &cluster {
            let Some(this) = scheme(u) else {
                anyhow::bail!(
                    "redis_cluster_urls: every URL must start with redis:// or rediss://"
                );
            };
            if tls.is_some_and(|t| t != this) {
                anyhow::bail!("redis_cluster_urls: mix no redis:// and rediss:// URLs");
            }
            tls = Some(this);
        }
        if self.redis_ca_file.is_some() && tls != Some(true) {
            anyhow::bail!(
                "redis_ca_file is for TLS: give redis_url (or redis_cluster_urls) as rediss://"
            );
        }
        Ok(())
    }

    /// Checks the captcha settings (part of `validate`): a provider needs its secret, and the
    /// secret or a verify URL without a provider would be silently unused.
    pub fn check_captcha(&self) -> anyhow::Result<()> {
        match (&self.captcha_provider, &self.captcha_secret) {
            (Some(_), None) => anyhow::bail!("captcha_provider needs captcha_secret"),
            (None, Some(_)) => anyhow::bail!("captcha_secret is set but captcha_provider is not"),
            _ => {}
        }
        if let Some(u) = &self.captcha_verify_url {
            if self.captcha_provider.is_none() {
                anyhow::bail!("captcha_verify_url is set but captcha_provider is not");
            }
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                anyhow::bail!("captcha_verify_url must start with http:// or https://");
            }
        }
        if !(100..=60_000).contains(&self.captcha_timeout_ms) {
            anyhow::bail!("captcha_timeout_ms must be between 100 and 60000");
        }
        Ok(())
    }

    /// Checks the email settings (part of `validate`).
    pub fn check_mail(&self) -> anyhow::Result<()> {
        if let Some(u) = &self.smtp_url {
            let u = u.expose_secret();
            if !(u.starts_with("smtp://") || u.starts_with("smtps://")) {
                anyhow::bail!("smtp_url must start with smtp:// or smtps://");
            }
        }
        if let Some(s) = &self.site_url {
            if !(s.starts_with("http://") || s.starts_with("https://")) {
                anyhow::bail!("site_url must start with http:// or https://");
            }
        }
        if self.mail_from.parse::<lettre::message::Mailbox>().is_err() {
            anyhow::bail!("mail_from must be an address, e.g. \"Gatehouse <noreply@example.com>\"");
        }
        if !(60..=86_400).contains(&self.otp_expiry_seconds) {
            anyhow::bail!("otp_expiry_seconds must be between 60 and 86400");
        }
        if !(0..=86_400).contains(&self.mail_min_interval_seconds) {
            anyhow::bail!("mail_min_interval_seconds must be between 0 and 86400");
        }
        if !(10..=3600).contains(&self.pkce_code_expiry_seconds) {
            anyhow::bail!("pkce_code_expiry_seconds must be between 10 and 3600");
        }
        if self.redirect_allowlist.iter().any(|p| p.trim().is_empty()) {
            anyhow::bail!("redirect_allowlist entries must not be empty");
        }
        Ok(())
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.jwt_expiry_seconds < 60 {
            anyhow::bail!("jwt_expiry_seconds must be at least 60");
        }
        if !(1..=3600).contains(&self.signing_key_reload_seconds) {
            anyhow::bail!("signing_key_reload_seconds must be between 1 and 3600");
        }
        for (name, v) in [
            ("session_max_seconds", self.session_max_seconds),
            (
                "session_inactivity_seconds",
                self.session_inactivity_seconds,
            ),
        ] {
            if v.is_some_and(|s| s < 60) {
                anyhow::bail!("{name} must be at least 60 when set");
            }
        }
        if self.refresh_reuse_interval_seconds < 0 {
            anyhow::bail!("refresh_reuse_interval_seconds must not be negative");
        }
        if self.password_min_length < 6 {
            anyhow::bail!("password_min_length must be at least 6");
        }
        if self.password_min_score > 4 {
            anyhow::bail!("password_min_score must be between 0 and 4");
        }
        if let Some(u) = self.password_breach_check_url.as_deref() {
            if !(u.is_empty() || u.starts_with("http://") || u.starts_with("https://")) {
                anyhow::bail!("password_breach_check_url must start with http:// or https://");
            }
        }
        if !(self.key_prefix.len() <= 16
            && !self.key_prefix.is_empty()
            && self.key_prefix.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            anyhow::bail!("key_prefix must be 1-16 ASCII letters or digits");
        }
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://")) {
            anyhow::bail!("public_url must start with http:// or https://");
        }
        for name in &self.rate_limit_fail_closed {
            if Policy::from_name(name).is_none() {
                anyhow::bail!(
                    "rate_limit_fail_closed: unknown policy {name:?} (one of {})",
                    Policy::ALL.map(|p| p.name()).join(", ")
                );
            }
        }
        if !(1..=3600).contains(&self.write_behind_seconds) {
            anyhow::bail!("write_behind_seconds must be between 1 and 3600");
        }
        if !(1000..=100_000_000).contains(&self.key_cache_capacity) {
            anyhow::bail!("key_cache_capacity must be between 1000 and 100000000");
        }
        if self.rate_limit_memory_capacity < 1000 {
            anyhow::bail!("rate_limit_memory_capacity must be at least 1000");
        }
        if !(60..=86_400).contains(&self.widget_session_seconds) {
            anyhow::bail!("widget_session_seconds must be between 60 and 86400");
        }
        if self.redis_prefix.is_empty()
            || !self
                .redis_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            anyhow::bail!("redis_prefix must be letters, digits, or - _ . :");
        }
        if !(1..=10_000).contains(&self.redis_timeout_ms) {
            anyhow::bail!("redis_timeout_ms must be between 1 and 10000");
        }
        self.check_redis()?;
        self.proxy_nets()?;
        if let Some(u) = &self.upstream_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                anyhow::bail!("upstream_url must start with http:// or https://");
            }
        }
        if let Some(u) = &self.otlp_endpoint {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                anyhow::bail!("otlp_endpoint must start with http:// or https://");
            }
        }
        if let Some(u) = &self.proxy_target {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                anyhow::bail!("proxy_target must start with http:// or https://");
            }
            // Request paths are appended to it: a query or fragment would swallow them.
            match url::Url::parse(u) {
                Ok(parsed) if parsed.query().is_none() && parsed.fragment().is_none() => {}
                _ => anyhow::bail!("proxy_target must be a URL without a query or fragment"),
            }
        }
        if let Some(t) = &self.oauth_registration_token {
            let t = t.expose_secret();
            if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                anyhow::bail!(
                    "oauth_registration_token must be at least 16 characters, without spaces"
                );
            }
        }
        if self.oauth_registration == OAuthRegistration::Token
            && self.oauth_registration_token.is_none()
        {
            anyhow::bail!(
                "oauth_registration = \"token\" needs oauth_registration_token (or its _file)"
            );
        }
        if !(10..=600).contains(&self.oauth_code_seconds) {
            anyhow::bail!("oauth_code_seconds must be between 10 and 600");
        }
        if !(60..=31_536_000).contains(&self.oauth_refresh_seconds) {
            anyhow::bail!("oauth_refresh_seconds must be between 60 and 31536000 (a year)");
        }
        if let Some(t) = &self.metrics_token {
            let t = t.expose_secret();
            if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                anyhow::bail!("metrics_token must be at least 16 characters, without spaces");
            }
        }
        if let Some(k) = &self.service_key {
            let k = k.expose_secret();
            if k.len() < 32 || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
                anyhow::bail!("service_key must be at least 32 characters, without spaces");
            }
        }
        self.check_captcha()?;
        if self
            .metrics_listen
            .is_some_and(|m| m == self.listen && m.port() != 0)
        {
            anyhow::bail!("metrics_listen must differ from listen");
        }
        if !(100..=600_000).contains(&self.upstream_timeout_ms) {
            anyhow::bail!("upstream_timeout_ms must be between 100 and 600000");
        }
        if self.password_hash_concurrency > 256 {
            anyhow::bail!("password_hash_concurrency must be between 0 (one per CPU) and 256");
        }
        if self.currency.len() != 3 || !self.currency.chars().all(|c| c.is_ascii_uppercase()) {
            anyhow::bail!("currency must be a three-letter ISO 4217 code, e.g. USD");
        }
        for (model, price) in &self.models {
            if model.is_empty() || model.len() > 200 {
                anyhow::bail!("models: a model name must be 1 to 200 characters");
            }
            if price.input_per_mtok < 0 || price.output_per_mtok < 0 {
                anyhow::bail!("models.{model}: prices must be 0 or more");
            }
        }
        if !(5..=86_400).contains(&self.spend_lease_seconds) {
            anyhow::bail!("spend_lease_seconds must be between 5 and 86400");
        }
        if !(0..=1000).contains(&self.chat_history_messages) {
            anyhow::bail!("chat_history_messages must be between 0 and 1000");
        }
        if !crate::domain::chat_limits::valid_model(&self.upstream_model) {
            anyhow::bail!("upstream_model must be 1-200 printable characters without spaces");
        }
        if self.chat_models.len() > 1000
            || !self
                .chat_models
                .iter()
                .all(|m| crate::domain::chat_limits::valid_model(m))
        {
            anyhow::bail!(
                "chat_models must be at most 1000 names of 1-200 printable characters without spaces"
            );
        }
        if !(1..=1_000_000).contains(&self.chat_reserve_tokens) {
            anyhow::bail!("chat_reserve_tokens must be between 1 and 1000000");
        }
        if !(5..=3600).contains(&self.chat_lease_seconds) {
            anyhow::bail!("chat_lease_seconds must be between 5 and 3600");
        }
        for (name, v) in [
            ("widget_tokens_per_day", self.widget_tokens_per_day),
            (
                "widget_visitor_tokens_per_day",
                self.widget_visitor_tokens_per_day,
            ),
        ] {
            if !(1..=crate::domain::chat_limits::MAX_TOKENS_PER_WINDOW).contains(&v) {
                anyhow::bail!("{name} must be between 1 and 1000000000");
            }
        }
        if !(10..=60_000).contains(&self.webhooks_poll_interval_ms) {
            anyhow::bail!("webhooks_poll_interval_ms must be between 10 and 60000");
        }
        if !(100..=60_000).contains(&self.webhooks_timeout_ms) {
            anyhow::bail!("webhooks_timeout_ms must be between 100 and 60000");
        }
        if self.webhooks_retry_schedule.is_empty()
            || self.webhooks_retry_schedule.len() > 20
            || self.webhooks_retry_schedule.iter().any(|s| *s > 7 * 86_400)
        {
            anyhow::bail!("webhooks_retry_schedule must be 1-20 delays of at most 604800 seconds");
        }
        self.check_mail()?;
        if !(3600..=30 * 86_400).contains(&self.invitation_seconds) {
            anyhow::bail!("invitation_seconds must be between 3600 and 2592000");
        }
        if let Some(secret) = &self.jwt_secret {
            if secret.expose_secret().len() < 32 {
                anyhow::bail!("jwt_secret must be at least 32 characters");
            }
        }
        if let Some(key) = &self.mfa_encryption_key {
            if key.expose_secret().len() < 32 {
                anyhow::bail!("mfa_encryption_key must be at least 32 characters");
            }
        }
        if !(30..=3600).contains(&self.mfa_challenge_expiry_seconds) {
            anyhow::bail!("mfa_challenge_expiry_seconds must be between 30 and 3600");
        }
        if !(1..=100).contains(&self.mfa_max_enrolled_factors) {
            anyhow::bail!("mfa_max_enrolled_factors must be between 1 and 100");
        }
        Ok(())
    }

    /// The models `GET /v1/models` offers before allow-lists: `upstream_model`, then
    /// `chat_models`, without repeats.
    pub fn chat_model_names(&self) -> Vec<String> {
        let mut out = vec![self.upstream_model.clone()];
        for m in &self.chat_models {
            if !out.contains(m) {
                out.push(m.clone());
            }
        }
        out
    }

    /// The windows of a policy.
    pub fn rates(&self, policy: Policy) -> &Rates {
        match policy {
            Policy::ApiKey => &self.rate_limit_api_key,
            Policy::Org => &self.rate_limit_org,
            Policy::SignIn => &self.rate_limit_sign_in,
            Policy::SignUp => &self.rate_limit_sign_up,
            Policy::MagicLink => &self.rate_limit_magic_link,
            Policy::Verify => &self.rate_limit_verify,
            Policy::TokenRefresh => &self.rate_limit_token_refresh,
            Policy::MfaVerify => &self.rate_limit_mfa_verify,
            Policy::WidgetSession => &self.rate_limit_widget_session,
            Policy::WidgetIp => &self.rate_limit_widget_ip,
            Policy::Widget => &self.rate_limit_widget,
            Policy::InvitationOrg => &self.rate_limit_invitation_org,
            Policy::InvitationUser => &self.rate_limit_invitation_user,
            Policy::AuthFailures => &self.rate_limit_auth_failures,
            Policy::OAuthRegister => &self.rate_limit_oauth_register,
            Policy::OAuthAuthorize => &self.rate_limit_oauth_authorize,
            Policy::Anonymous => &self.rate_limit_anonymous,
        }
    }

    /// Whether a policy refuses requests when Redis is down.
    pub fn fails_closed(&self, policy: Policy) -> bool {
        self.rate_limit_fail_closed
            .iter()
            .any(|n| n == policy.name())
    }

    /// The trusted proxies as networks.
    pub fn proxy_nets(&self) -> anyhow::Result<Vec<ipnet::IpNet>> {
        self.trusted_proxies
            .iter()
            .map(|s| {
                let s = s.trim();
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| anyhow::anyhow!("trusted_proxies: {s:?} is not an IP or CIDR"))
            })
            .collect()
    }

    /// The public URL without a trailing slash.
    pub fn public_base(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }

    /// `scheme://host[:port]` of the public URL, for Origin checks.
    pub fn public_origin(&self) -> String {
        let base = self.public_base();
        let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
        match base[after_scheme..].find('/') {
            Some(i) => base[..after_scheme + i].to_string(),
            None => base.to_string(),
        }
    }

    /// Whether a browser request from `origin` (`scheme://host[:port]`) comes from this
    /// server's own pages: `public_url`'s origin, or, in development mode, any loopback
    /// spelling (`localhost`, `127.0.0.1`, `[::1]`) of it with the same scheme and port, so
    /// a dashboard opened at `http://localhost:8080` works when `public_url` says
    /// `127.0.0.1`. Outside development the origin must match exactly.
    pub fn accepts_origin(&self, origin: &str) -> bool {
        let expected = self.public_origin();
        if origin == expected {
            return true;
        }
        let (Ok(got), Ok(want)) = (url::Url::parse(origin), url::Url::parse(&expected)) else {
            return false;
        };
        // `http://host:80` and `http://host` are one origin.
        if got.origin() == want.origin() {
            return true;
        }
        self.dev
            && got.scheme() == want.scheme()
            && got.port_or_known_default() == want.port_or_known_default()
            && got.path() == "/"
            && is_loopback_host(&got)
            && is_loopback_host(&want)
    }

    /// Webhook targets on private and loopback addresses are allowed: by
    /// `webhooks_allow_private`, or in development mode, so a developer can point an
    /// endpoint at a receiver on their own machine.
    pub fn webhooks_private_allowed(&self) -> bool {
        self.webhooks_allow_private || self.dev
    }

    /// A warning for an operator when `listen` and `public_url` disagree on the port while
    /// `public_url` names this machine (a loopback host): then nothing sits between them,
    /// so the browser reaches one port while the CSRF check expects the other. A public
    /// host name behind a reverse proxy legitimately differs and gets no warning.
    pub fn port_mismatch(&self, bound: SocketAddr) -> Option<String> {
        let public = url::Url::parse(&self.public_origin()).ok()?;
        let port = public.port_or_known_default()?;
        (is_loopback_host(&public) && bound.port() != port).then(|| {
            format!(
                "public_url ({}) names port {port} but the server listens on {bound}: browsers \
                 that follow public_url miss this server, and sign-in from http://{bound} is \
                 refused as cross-site; make the ports agree",
                self.public_base()
            )
        })
    }

    /// Cookies are `Secure` unless the public URL is plain-http localhost.
    pub fn secure_cookies(&self) -> bool {
        let origin = self.public_origin();
        !(origin.starts_with("http://localhost")
            || origin.starts_with("http://127.0.0.1")
            || origin.starts_with("http://[::1]"))
    }

    /// Where emailed links land when no allowed `redirect_to` is given.
    pub fn site(&self) -> &str {
        self.site_url
            .as_deref()
            .unwrap_or(&self.public_url)
            .trim_end_matches('/')
    }

    /// The JWT issuer claim.
    pub fn issuer(&self) -> String {
        format!("{}/auth/v1", self.public_base())
    }
}

/// `localhost`, a 127.0.0.0/8 address or `[::1]`.
fn is_loopback_host(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_in_debug() {
        let cfg = Config {
            jwt_secret: Some(SecretString::from(
                "a-very-secret-value-that-is-long-enough",
            )),
            ..Config::default()
        };
        let printed = format!("{cfg:?}");
        assert!(!printed.contains("a-very-secret-value"));
        assert!(printed.contains("REDACTED"));
    }

    #[test]
    fn secrets_are_read_from_the_file_and_never_serialised() {
        let c: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(
                "jwt_secret = \"from-the-file-and-long-enough-0123\"",
            ))
            .extract()
            .unwrap_or_else(|e| panic!("{e}"));
        let secret = c.jwt_secret.as_ref().map(|s| s.expose_secret());
        assert_eq!(secret, Some("from-the-file-and-long-enough-0123"));
        let text = serde_json::to_string(&c).unwrap_or_default();
        // `jwt_secret_file` (a path, no secret) is serialised; the secret is not.
        assert!(!text.contains("from-the-file") && !text.contains("\"jwt_secret\""));
    }

    #[test]
    fn the_example_file_lists_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let from_file: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(&text))
            .extract()
            .unwrap_or_else(|e| panic!("config.example.toml: {e}"));
        assert_eq!(format!("{from_file:?}"), format!("{:?}", Config::default()));
        // Every setting appears in the file (set, or commented out when it has no default).
        // Secrets have no serialised form, so they are named here (and checked to be fields).
        let printed = format!("{:?}", Config::default());
        let mut keys = toml_keys(&Config::default());
        for secret in SECRET_KEYS {
            assert!(printed.contains(&format!("{secret}: None")), "{secret}");
            keys.push(secret.to_string());
        }
        for key in keys {
            assert!(
                text.contains(&format!("{key} =")),
                "{key} is missing from config.example.toml"
            );
        }
    }

    const SECRET_KEYS: [&str; 11] = [
        "publishable_key",
        "jwt_secret",
        "mfa_encryption_key",
        "redis_url",
        "redis_cluster_urls",
        "upstream_api_key",
        "metrics_token",
        "smtp_url",
        "oauth_registration_token",
        "service_key",
        "captcha_secret",
    ];

    fn toml_keys(c: &Config) -> Vec<String> {
        match serde_json::to_value(c) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn lists_come_as_arrays_or_comma_strings() {
        let c: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(
                "trusted_proxies = \"10.0.0.0/8, 192.168.1.1\"\nrate_limit_fail_closed = [\"api_key\"]\nrate_limit_org = [\"10/1s\", \"100/1m\"]",
            ))
            .extract()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.trusted_proxies, vec!["10.0.0.0/8", "192.168.1.1"]);
        assert!(c.fails_closed(Policy::ApiKey) && !c.fails_closed(Policy::MagicLink));
        assert_eq!(c.rate_limit_org.to_string(), "10/1s,100/60s");
        assert_eq!(c.proxy_nets().map(|n| n.len()).ok(), Some(2));
        let bad = Config {
            trusted_proxies: vec!["not-an-ip".into()],
            ..Config::default()
        };
        assert!(bad.validate().is_err());
        let bad = Config {
            rate_limit_fail_closed: vec!["nope".into()],
            ..Config::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn redis_cluster_urls_come_as_a_list_and_the_redis_settings_are_checked() {
        let from = |toml: &str| -> Config {
            Figment::from(Serialized::defaults(Config::default()))
                .merge(Toml::string(toml))
                .extract()
                .unwrap()
        };
        let listed = |c: &Config| {
            c.redis_cluster_urls
                .as_ref()
                .map(|u| u.expose_secret().to_string())
        };
        let a = from("redis_cluster_urls = \"redis://a:1, redis://b:2,\"");
        let b = from("redis_cluster_urls = [\"redis://a:1\", \"redis://b:2\"]");
        assert_eq!(listed(&a).as_deref(), Some("redis://a:1,redis://b:2"));
        assert_eq!(listed(&a), listed(&b));
        assert!(a.validate().is_ok());
        let err = |toml: &str| from(toml).validate().unwrap_err().to_string();
        assert!(
            err("redis_url = \"redis://x:1\"\nredis_cluster_urls = \"redis://a:1\"")
                .contains("both set")
        );
        assert!(err("redis_cluster_urls = \"redis://a:1,rediss://b:2\"").contains("mix"));
        assert!(err("redis_cluster_urls = \"http://a:1\"").contains("redis://"));
        assert!(
            err("redis_url = \"redis://x:1\"\nredis_ca_file = \"/ca.pem\"")
                .contains("redis_ca_file is for TLS")
        );
        assert!(
            from("redis_url = \"rediss://x:1\"\nredis_ca_file = \"/ca.pem\"")
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn metrics_settings_are_checked_and_the_token_masked() {
        let cfg = Config {
            metrics_token: Some(SecretString::from("scrape-secret-0123456789")),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            ..Config::default()
        };
        assert!(cfg.validate().is_ok());
        let printed = format!("{cfg:?}");
        assert!(!printed.contains("scrape-secret"), "{printed}");
        for bad in ["short", "has a space in it, long enough"] {
            let cfg = Config {
                metrics_token: Some(SecretString::from(bad)),
                ..Config::default()
            };
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains("metrics_token"), "{e}");
        }
        let same = Config {
            metrics_listen: Some(Config::default().listen),
            ..Config::default()
        };
        assert!(same.validate().is_err());
        for bad in ["http://backend/base?x=1", "http://backend/#f", "http://"] {
            let cfg = Config {
                proxy_target: Some(bad.into()),
                ..Config::default()
            };
            assert!(cfg.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn one_setting_reserves_the_answer_for_windows_and_budgets() {
        let c: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string("chat_reserve_tokens = 700"))
            .extract()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.chat_reserve_tokens, 700);
        assert!(c.validate().is_ok());
        // The budgets' former name of the same cap is no setting any more.
        let old: Result<Config, _> = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string("max_completion_tokens_reserved = 700"))
            .extract();
        assert!(old.is_err());
        for bad in [0, 1_000_001] {
            let cfg = Config {
                chat_reserve_tokens: bad,
                ..Config::default()
            };
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains("chat_reserve_tokens"), "{e}");
        }
    }

    #[test]
    fn password_hash_threads_are_bounded() {
        let at = |n| Config {
            password_hash_concurrency: n,
            ..Config::default()
        };
        assert!(at(0).validate().is_ok() && at(256).validate().is_ok());
        let e = at(257).validate().unwrap_err().to_string();
        assert!(e.contains("password_hash_concurrency"), "{e}");
    }

    #[test]
    fn public_origin_drops_the_path() {
        let cfg = Config {
            public_url: "https://auth.example.com/base/".into(),
            ..Config::default()
        };
        assert_eq!(cfg.public_origin(), "https://auth.example.com");
        assert!(cfg.secure_cookies());
        let local = Config::default();
        assert_eq!(local.public_origin(), "http://127.0.0.1:8080");
        assert!(!local.secure_cookies());
    }

    #[test]
    fn development_accepts_every_loopback_spelling_of_the_public_port_and_nothing_else() {
        let strict = Config::default();
        assert!(strict.accepts_origin("http://127.0.0.1:8080"));
        assert!(!strict.accepts_origin("http://localhost:8080"));
        let dev = Config {
            dev: true,
            ..Config::default()
        };
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://LOCALHOST:8080",
            "http://[::1]:8080",
        ] {
            assert!(dev.accepts_origin(ok), "{ok}");
        }
        for refused in [
            "http://localhost:8081",
            "https://localhost:8080",
            "http://localhost.evil.example:8080",
            "http://192.168.1.2:8080",
            "null",
            "",
        ] {
            assert!(!dev.accepts_origin(refused), "{refused}");
        }
        let public = Config {
            dev: true,
            public_url: "https://auth.example.com".into(),
            ..Config::default()
        };
        assert!(!public.accepts_origin("https://localhost"));
    }

    #[test]
    fn a_port_mismatch_is_reported_only_for_a_loopback_public_url() {
        let cfg = Config::default();
        assert_eq!(cfg.port_mismatch(cfg.listen), None);
        let other: SocketAddr = "127.0.0.1:9000".parse().unwrap_or_else(|e| panic!("{e}"));
        let warning = cfg.port_mismatch(other).unwrap_or_default();
        assert!(
            warning.contains("8080") && warning.contains("9000"),
            "{warning}"
        );
        let proxied = Config {
            public_url: "https://auth.example.com".into(),
            ..Config::default()
        };
        assert_eq!(proxied.port_mismatch(other), None);
    }
}
