//! Gatehouse: API keys, Supabase-compatible sign-in, widget tokens, rate limits
//! and signed webhooks for multi-tenant AI-assistant platforms, in one server.

/// Users and sessions (sign-up, sign-in, refresh, sign-out).
pub mod accounts;
/// Application state, router assembly and the serve loop.
pub mod app;
/// Password hashing, JWT signing/verification, opaque tokens and sealing.
pub mod auth;
/// Gathering queued work into batches (group commits, the Redis limiter's calls).
pub mod batch;
/// The chat gateway: threads, the model server, usage.
pub mod chat;
/// The `gatehouse` command line.
pub mod cli;
/// Injected time, so expiry and limits are tested exactly.
pub mod clock;
/// Configuration: defaults, then a TOML file, then `GATEHOUSE_*` variables.
pub mod config;
/// Credential checks: an API key, access token or dashboard cookie becomes a `Principal`.
pub mod credentials;
/// Newtypes parsed at the edge (emails, passwords).
pub mod domain;
/// The error code table: one place for every code and status.
pub mod error;
/// Sign-in with external providers (OpenID Connect, plain OAuth 2) and linked identities.
pub mod external;
/// Cache invalidation between instances over Redis.
pub mod fanout;
/// HTTP handlers, extractors and the response envelope.
pub mod http;
/// Typed identifiers (`org_…`, `key_…`, …), minted and parsed in one place.
pub mod ids;
/// Invitations: the only way into an organization.
pub mod invitations;
/// API keys: minting and cached verification.
pub mod keys;
/// Rate-limit decisions for requests: the limiter with the configured, key and organization
/// rates, and the `rate_limit.exceeded` event.
pub mod limits;
/// Email: templates, the durable mail queue, SMTP and the one-time-token flows.
pub mod mail;
/// Prometheus metrics.
pub mod metrics;
/// The OAuth 2.1 authorization server: clients, consent, codes and tokens.
pub mod oauth;
/// Organizations, members, roles and what a principal may do in one.
pub mod orgs;
/// Rate limiting (GCRA).
pub mod ratelimit;
/// The serve loop: listeners, background workers and shutdown.
pub mod server;
/// Money budgets: prices, reserve then settle, the spend ledger and threshold alerts.
pub mod spend;
/// Storage on SQLite or PostgreSQL.
pub mod store;
/// Logging setup.
pub mod telemetry;
/// Signed webhooks: signing, the SSRF guard and the delivery worker.
pub mod webhooks;
/// Widgets: origins, widget tokens, sessions, request signatures and replays.
pub mod widgets;
