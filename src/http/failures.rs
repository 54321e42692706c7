//! The failure budget: failed credential checks counted per client IP
//! (`rate_limit_auth_failures`), so that a flood of well-formed but unknown keys, forged
//! tokens or guessed passwords from one address stops reaching storage.
//!
//! A well-formed key is easy to make (its checksum is a public CRC32), and each unknown one
//! costs a storage read. So, before a credential is checked, [`admit`] asks whether the
//! client is already over its budget, a peek that spends nothing, and answers 429 with
//! `Retry-After` without touching storage; after a check fails, [`spend`] takes one unit.
//! Successful checks cost nothing. While over budget, every credential from the address is
//! refused, a valid one too: the check comes before the credential is looked at, as
//! GitHub's does, and that keeps the refusal free of storage.
//!
//! The peek and the spend are two decisions, not one: requests of one address already in
//! flight when it reaches its budget are still checked, so a flood overshoots the budget by
//! at most its concurrency, once.

use crate::app::AppState;
use crate::config::Policy;
use crate::error::ApiError;
use crate::http::extract::ClientIp;
use crate::http::gotrue::GoTrueError;
use crate::http::limits;
pub use crate::ratelimit::FailureBudget;
use crate::ratelimit::{Decision, Request};

/// Why a credential was refused before it was checked.
#[derive(Debug)]
pub enum Refusal {
    /// The address is over its failure budget.
    Limited(Decision),
    /// The budget could not be decided and `auth_failures` fails closed.
    Unavailable,
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Limited(d) => limits::refused(&d),
            Refusal::Unavailable => limits::unavailable(),
        }
    }
}

impl From<Refusal> for GoTrueError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Limited(d) => GoTrueError::rate_limited(&d),
            Refusal::Unavailable => GoTrueError::limiter_unavailable(),
        }
    }
}

fn request(state: &AppState, ip: &ClientIp) -> Request {
    let key = ip.key();
    let mut req = Request {
        tag: format!("ip:{key}"),
        windows: Vec::with_capacity(1),
        fail_closed: state.config.fails_closed(Policy::AuthFailures),
    };
    req.add(
        Policy::AuthFailures.name(),
        &key,
        state.config.rates(Policy::AuthFailures),
    );
    req
}

/// Before a credential is checked: refuses an address over its failure budget, spending
/// nothing. The refusal's decision is noted, so the 429 carries the rate-limit headers.
pub async fn admit(state: &AppState, ip: &ClientIp) -> Result<(), Refusal> {
    if !state.edge.auth_failures.failed_lately(&ip.bucket()) {
        return Ok(());
    }
    match state.limits.limiter().peek(&request(state, ip)).await {
        Ok(d) if d.allowed => Ok(()),
        Ok(d) => {
            limits::note(&d);
            Err(Refusal::Limited(d))
        }
        Err(_) => Err(Refusal::Unavailable),
    }
}

/// After a credential check failed: spends one unit of the address's budget. The failure
/// itself is already answered (401), so this neither notes headers nor fails.
pub async fn spend(state: &AppState, ip: &ClientIp) {
    state.edge.auth_failures.failed(ip.bucket());
    let _ = state.limits.limiter().check(&request(state, ip)).await;
}

/// Whether a refused `/v1` credential counts against the budget: an unknown, expired or
/// revoked one, or a token whose signature does not verify (`malformed` from a JWT or a
/// cookie). A missing credential does not count, nor does a key refused by its checksum
/// (that refusal reads nothing), nor a 503.
pub fn counts(e: &ApiError, checksum_checked: bool) -> bool {
    if e.code != crate::error::Code::Unauthorized {
        return false;
    }
    match e
        .details
        .as_ref()
        .and_then(|d| d.get("reason"))
        .and_then(|r| r.as_str())
    {
        Some("not_found" | "expired" | "revoked") => true,
        Some("malformed") => !checksum_checked,
        _ => false,
    }
}
