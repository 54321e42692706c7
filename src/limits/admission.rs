//! Chat admission: which model a caller may ask for (allow-lists of the key and the
//! organization, a widget's own model), how many answers it may have under way
//! (`max_parallel` leases) and how many tokens it may spend (cost-weighted windows of the
//! rate limiter: a reservation before the model server is asked, settled to what it used).

use std::sync::Arc;

use crate::domain::chat_limits::allows;
use crate::domain::ChatLimits;
use crate::ratelimit::{Decision, Lease, LeaseError, LeaseSpec, Limiter, Rate, Request, Window};
use crate::store::{ApiKeyRecord, StoreError, WidgetRecord};

use super::Limits;

/// The largest limit one rate-limiter window counts exactly; token limits above it are
/// counted in steps of `ceil(limit / MAX_EXACT)` tokens (the limiter keeps `tat` in
/// 1/limit ms in an `i64`, and Redis in doubles).
const MAX_EXACT: u64 = 1_000_000;

const MINUTE: u32 = 60;
const DAY: u32 = 86_400;

/// Why a chat is not admitted.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    /// The model is on no list that applies.
    #[error("model {model} is not allowed")]
    ModelNotAllowed {
        /// The model asked for.
        model: String,
        /// The patterns of the list that refused it.
        allowed: Vec<String>,
    },
    /// `max_parallel` answers are under way already.
    #[error("{scope} has {max_parallel} answers under way")]
    Concurrency {
        /// `key` or `org`.
        scope: &'static str,
        /// The bound.
        max_parallel: u32,
    },
    /// A token window refused the reservation.
    #[error("a token window is exhausted")]
    Tokens(Decision),
    /// The shared limiter is unreachable and the policy fails closed.
    #[error("the rate limiter is unavailable")]
    Unavailable,
    /// Redis holds the `max_parallel` leases and does not answer: refused, never counted
    /// per instance.
    #[error("the concurrency leases are unavailable")]
    LeasesUnavailable,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who asks: the organization, and the key or the widget visitor.
#[derive(Clone, Copy)]
pub struct Asker<'a> {
    /// The organization paying.
    pub org_id: &'a str,
    /// The key, when one is used.
    pub key: Option<&'a ApiKeyRecord>,
    /// The widget and the visitor, for a widget's chat.
    pub widget: Option<(&'a WidgetRecord, &'a str)>,
}

/// What one chat holds while it runs: its concurrency lease and its token reservation.
/// [`Admission::settle`] gives back what the answer did not use; dropped unsettled (the
/// client went away mid-stream), it settles in the background with what it had seen.
pub struct Admission {
    lease: Option<Lease>,
    tokens: Option<Reservation>,
    /// Tokens of the prompt as estimated before asking.
    pub prompt_estimate: u64,
    /// Bytes of answer text seen so far, for a settle without the model server's count.
    seen_bytes: u64,
}

struct Reservation {
    limiter: Limiter,
    req: Request,
    /// Tokens per counted unit, per window.
    units: Vec<u64>,
    /// Units reserved, per window.
    reserved: Vec<i64>,
}

/// Tokens of a text as estimated before the model server counts them: a quarter of its
/// bytes rounded up (English averages about four characters a token), plus 4 per message
/// for the chat format.
pub fn estimate_tokens<'a>(texts: impl IntoIterator<Item = &'a str>) -> u64 {
    texts
        .into_iter()
        .map(|t| (t.len() as u64).div_ceil(4) + 4)
        .sum()
}

impl Limits {
    /// The model a chat asks for: a widget's own (any other named in the body is refused),
    /// else the body's, else the deployment's `upstream_model`.
    pub fn model_for(
        &self,
        asked: Option<&str>,
        widget: Option<&WidgetRecord>,
    ) -> Result<String, AdmissionError> {
        let default = widget
            .and_then(|w| w.model.clone())
            .unwrap_or_else(|| self.config.upstream_model.clone());
        match asked {
            Some(m) if widget.is_some() && m != default => Err(AdmissionError::ModelNotAllowed {
                model: m.to_string(),
                allowed: vec![default],
            }),
            Some(m) => Ok(m.to_string()),
            None => Ok(default),
        }
    }

    /// Refuses a model that the key's or the organization's allow-list does not match.
    pub async fn check_model(&self, who: Asker<'_>, model: &str) -> Result<(), AdmissionError> {
        let refused = |list: &[String]| AdmissionError::ModelNotAllowed {
            model: model.to_string(),
            allowed: list.to_vec(),
        };
        if let Some(list) = who
            .key
            .and_then(|k| k.chat_limits.allowed_models.as_deref())
        {
            if !allows(Some(list), model) {
                return Err(refused(list));
            }
        }
        let org = self.orgs.chat_limits(who.org_id).await?;
        if let Some(list) = org.allowed_models.as_deref() {
            if !allows(Some(list), model) {
                return Err(refused(list));
            }
        }
        Ok(())
    }

    /// The configured models (`upstream_model`, `chat_models`) that `who` may ask for.
    pub async fn allowed_models(&self, who: Asker<'_>) -> Result<Vec<String>, StoreError> {
        let org = self.orgs.chat_limits(who.org_id).await?;
        let key = who
            .key
            .and_then(|k| k.chat_limits.allowed_models.as_deref());
        Ok(self
            .config
            .chat_model_names()
            .into_iter()
            .filter(|m| allows(key, m) && allows(org.allowed_models.as_deref(), m))
            .collect())
    }

    /// An organization's chat limits.
    pub async fn org_chat_limits(&self, org_id: &str) -> Result<Arc<ChatLimits>, StoreError> {
        self.orgs.chat_limits(org_id).await
    }

    /// Takes a lease on the key's and the organization's `max_parallel` (when set; `None`
    /// when neither is). Dropping it releases it.
    pub async fn lease(&self, who: Asker<'_>) -> Result<Option<Lease>, AdmissionError> {
        let org = self.orgs.chat_limits(who.org_id).await?;
        let mut specs = Vec::with_capacity(2);
        if let Some(k) = who.key {
            if let Some(max) = k.chat_limits.max_parallel {
                specs.push(LeaseSpec {
                    scope: "key",
                    subject: k.id.clone(),
                    max,
                });
            }
        }
        if let Some(max) = org.max_parallel {
            specs.push(LeaseSpec {
                scope: "org",
                subject: who.org_id.to_string(),
                max,
            });
        }
        if specs.is_empty() {
            return Ok(None);
        }
        let tag = format!("org:{}", who.org_id);
        match self.leases.acquire(&tag, &specs).await {
            Ok(l) => Ok(Some(l)),
            Err(LeaseError::Unavailable) => Err(AdmissionError::LeasesUnavailable),
            Err(LeaseError::Full(i)) => {
                let s = &specs[i.min(specs.len() - 1)];
                Err(AdmissionError::Concurrency {
                    scope: s.scope,
                    max_parallel: s.max,
                })
            }
        }
    }

    /// Reserves `prompt + answer` tokens in every token window that applies and returns
    /// what the chat holds from now on (with its `lease`), to settle when the answer ends.
    pub async fn reserve_tokens(
        &self,
        who: Asker<'_>,
        prompt: u64,
        answer: u64,
        lease: Option<Lease>,
    ) -> Result<Admission, AdmissionError> {
        let org = self.orgs.chat_limits(who.org_id).await?;
        let tokens = self.reserve(who, &org, prompt + answer).await?;
        Ok(Admission {
            lease,
            tokens,
            prompt_estimate: prompt,
            seen_bytes: 0,
        })
    }

    async fn reserve(
        &self,
        who: Asker<'_>,
        org: &ChatLimits,
        tokens: u64,
    ) -> Result<Option<Reservation>, AdmissionError> {
        let mut windows: Vec<(&'static str, String, u64, u32)> = Vec::new();
        if let Some((w, visitor)) = who.widget {
            let t = w.token_limits.unwrap_or_default();
            windows.push((
                "widget_tokens",
                w.id.clone(),
                t.tokens_per_day
                    .unwrap_or(self.config.widget_tokens_per_day),
                DAY,
            ));
            windows.push((
                "visitor_tokens",
                format!("{}:{visitor}", w.id),
                t.visitor_tokens_per_day
                    .unwrap_or(self.config.widget_visitor_tokens_per_day),
                DAY,
            ));
        }
        let mut add = |policy: &'static str, subject: &str, l: &ChatLimits| {
            if let Some(t) = l.token_limits {
                if let Some(n) = t.tokens_per_minute {
                    windows.push((policy, subject.to_string(), n, MINUTE));
                }
                if let Some(n) = t.tokens_per_day {
                    windows.push((policy, subject.to_string(), n, DAY));
                }
            }
        };
        if let Some(k) = who.key {
            add("key_tokens", &k.id, &k.chat_limits);
        }
        add("org_tokens", who.org_id, org);
        if windows.is_empty() {
            return Ok(None);
        }
        let mut req = Request {
            tag: format!("org:{}", who.org_id),
            windows: Vec::with_capacity(windows.len()),
            fail_closed: self.config.fails_closed(crate::config::Policy::ApiKey),
        };
        let (mut units, mut reserved) = (Vec::new(), Vec::new());
        for (policy, subject, limit, secs) in windows {
            let unit = limit.div_ceil(MAX_EXACT).max(1);
            let counted = u32::try_from(limit / unit).unwrap_or(u32::MAX).max(1);
            // A reservation larger than the window is admitted when the window is full and
            // charged exactly at the settle; otherwise it could never pass.
            let cost = u32::try_from(tokens.div_ceil(unit))
                .unwrap_or(u32::MAX)
                .min(counted);
            req.windows.push(Window {
                policy,
                subject,
                rate: Rate::new(counted, secs),
                cost,
            });
            units.push(unit);
            reserved.push(i64::from(cost));
        }
        let mut d = self
            .limiter
            .check(&req)
            .await
            .map_err(|_| AdmissionError::Unavailable)?;
        // Report tokens, not counted units.
        for (s, unit) in d.windows.iter_mut().zip(&units) {
            let unit = u32::try_from(*unit).unwrap_or(u32::MAX);
            s.limit = s.limit.saturating_mul(unit);
            s.remaining = s.remaining.saturating_mul(unit);
        }
        crate::ratelimit::noted::add(&d);
        if !d.allowed {
            self.webhooks.tokens_limited(
                &self.store,
                &self.clock,
                &req,
                &d,
                who.key.map(|k| k.id.as_str()),
                who.widget.map(|(w, _)| w.id.as_str()),
            );
            return Err(AdmissionError::Tokens(d));
        }
        Ok(Some(Reservation {
            limiter: self.limiter.clone(),
            req,
            units,
            reserved,
        }))
    }
}

impl Reservation {
    async fn settle(self, used: u64) {
        let deltas: Vec<i64> = self
            .units
            .iter()
            .zip(&self.reserved)
            .map(|(unit, reserved)| {
                i64::try_from(used.div_ceil(*unit)).unwrap_or(i64::MAX) - reserved
            })
            .collect();
        if deltas.iter().all(|d| *d == 0) {
            return;
        }
        if self.limiter.adjust(&self.req, &deltas).await.is_err() {
            tracing::warn!("a token reservation could not be settled; it stands as reserved");
        }
    }
}

impl Admission {
    /// Counts answer text seen, for a settle without the model server's count.
    pub fn saw(&mut self, text: &str) {
        self.seen_bytes += text.len() as u64;
    }

    fn estimate(&self) -> u64 {
        self.prompt_estimate + self.seen_bytes.div_ceil(4)
    }

    /// Settles the token windows to `used` tokens (the model server's count; `None`: the
    /// estimate of what was sent and seen) and releases the lease.
    pub async fn settle(mut self, used: Option<u64>) {
        let used = used.unwrap_or_else(|| self.estimate());
        self.lease.take();
        if let Some(r) = self.tokens.take() {
            r.settle(used).await;
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        // The lease releases itself; the reservation settles to what was seen.
        let used = self.estimate();
        if let Some(r) = self.tokens.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(r.settle(used));
            }
        }
    }
}
