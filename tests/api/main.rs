//! One integration-test binary: every story runs against a real server on port 0,
//! on SQLite and (when configured) on PostgreSQL.

mod helpers;

mod api_keys;
mod auth_failures;
mod auth_v1;
mod bad_input;
mod chat;
mod dashboard;
mod dashboard_page;
mod email;
mod orgs;
mod process;
mod ratelimit;
mod scaleout;
mod smtp_sink;
mod webhooks;
mod widgets;
