//! One integration-test binary: every story runs against a real server on port 0,
//! on SQLite and on PostgreSQL. Tests that need PostgreSQL or the shared Redis are named
//! for it (`on_postgres`, `on_redis`; see helpers.rs), so the runner can leave them out.

mod helpers;

mod access_tokens;
mod account_safety;
mod admin;
mod admin_mfa;
mod anonymous;
mod api_keys;
mod audit_log;
mod auth_failures;
mod auth_v1;
mod backup;
mod bad_input;
mod captcha;
mod chat;
mod chat_admission;
mod cli;
mod concurrency;
mod config_check;
mod credits;
mod dashboard;
mod dashboard_page;
mod dev_mode;
mod docs_api_table;
mod docs_links;
mod docs_lists;
mod email;
mod external_providers;
mod invitations;
mod layers;
mod me_sessions;
mod metrics_guard;
mod mfa;
mod migrations;
mod money_fails_closed;
mod naming;
mod oauth;
mod oauth_principal;
mod orgs;
mod own_postgres;
mod passwords;
mod pgbouncer;
mod pkce;
mod postgres_tls;
mod process;
mod promises_contention;
mod promises_fanout;
mod promises_http;
mod promises_mail;
mod promises_process;
mod promises_races;
mod promises_smtp;
mod proxy;
mod ratelimit;
mod redirects;
// Two instances on PostgreSQL and a Redis Cluster the test starts itself: named for
// PostgreSQL only (it needs no shared Redis).
#[path = "redis_cluster.rs"]
mod redis_cluster_on_postgres;
mod redis_tls;
mod resend_reauth;
// Every scale-out test needs PostgreSQL and the shared Redis: the module's name carries both
// markers of the naming convention (see helpers.rs), so `scripts/test` can leave them out.
#[path = "scaleout.rs"]
mod scaleout_on_postgres_on_redis;
mod several_instances;
mod smtp_sink;
mod supabase_import;
mod traces;
// Two instances on PostgreSQL and the shared Redis: named for both, as scaleout is.
mod spend;
#[path = "spend_scaleout.rs"]
mod spend_scaleout_on_postgres_on_redis;
mod webhooks;
mod widgets;
