//! One integration-test binary: every story runs against a real server on port 0,
//! on SQLite and (when configured) on PostgreSQL.

mod helpers;

mod access_tokens;
mod account_safety;
mod api_keys;
mod auth_failures;
mod auth_v1;
mod bad_input;
mod chat;
mod cli;
mod concurrency;
mod dashboard;
mod dashboard_page;
mod docs_api_table;
mod docs_links;
mod docs_lists;
mod dev_mode;
mod email;
mod invitations;
mod layers;
mod metrics_guard;
mod migrations;
mod orgs;
mod passwords;
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
mod scaleout;
mod smtp_sink;
mod webhooks;
mod widgets;
