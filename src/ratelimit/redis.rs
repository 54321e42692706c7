//! The shared backend: one script call per decision for all its windows, Redis `TIME` as
//! the clock, every counter of a decision under one hash tag (Redis Cluster safe).

use std::sync::Arc;

use tracing::Instrument;

use super::{Decision, RedisLink, Request, WindowState};

/// Why a Redis decision did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    /// No connection yet.
    #[error("not connected")]
    NotConnected,
    /// No answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// Redis answered with an error, or the connection broke.
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    /// The script answered something else than it should.
    #[error("unexpected reply")]
    Reply,
}

/// The body of the decision script (see its header); [`GCRA`] and the scripts that compose
/// a second step after the windows ([`RedisLimiter::check_then`]) start with it.
pub const GCRA_CORE: &str = include_str!("gcra_core.lua");

/// The limiter's own script: every window decided, stored when all admit.
const GCRA: &str = concat!(
    "local n = #KEYS\n",
    include_str!("gcra_core.lua"),
    "if allowed == 1 and spend then store() end\nreturn out\n"
);

/// A second step run in the same script call as a decision's windows, only when they admit
/// (a key's credit spend): one round trip decides both.
///
/// Its script is [`GCRA_CORE`] preceded by `local n = #KEYS - 1` and followed by the step,
/// which reads its key at `KEYS[n + 1]` and its arguments from `ARGV[3 * n + 2]` on, and either
/// answers one negative number storing nothing (the caller retries with other arguments), or
/// runs `store()` and appends its own answer to `out`.
pub struct Then<'a> {
    /// The composed script.
    pub script: &'a redis::Script,
    /// The step's key, under the request's hash tag (Redis Cluster: one slot per call).
    pub key: String,
    /// The step's arguments.
    pub args: &'a [i64],
}

/// What a decision with a second step answered.
#[derive(Debug)]
pub enum Joint {
    /// A window refused: the step did not run, nothing was stored.
    Denied(Decision),
    /// The windows admitted and the step ran: its answer.
    Admitted(Decision, Vec<i64>),
    /// The step answered this negative number alone: nothing was stored.
    Retry(i64),
}

/// The Redis-backed limiter.
#[derive(Clone)]
pub struct RedisLimiter {
    link: RedisLink,
    script: Arc<redis::Script>,
    adjust: Arc<redis::Script>,
}

impl RedisLimiter {
    /// A limiter over `link`.
    pub fn new(link: RedisLink) -> Self {
        Self {
            link,
            script: Arc::new(redis::Script::new(GCRA)),
            adjust: Arc::new(redis::Script::new(include_str!("adjust.lua"))),
        }
    }

    /// Decides `req` in one `EVALSHA`. `now_ms` is for tests; production passes `None`
    /// and Redis's own clock decides, so instances with skewed clocks agree.
    pub async fn check(
        &self,
        req: &Request,
        now_ms: Option<i64>,
    ) -> Result<Decision, RedisFailure> {
        self.decide(req, now_ms, true).await
    }

    /// The decision `check` would make, in the same script, storing nothing.
    pub async fn peek(&self, req: &Request, now_ms: Option<i64>) -> Result<Decision, RedisFailure> {
        self.decide(req, now_ms, false).await
    }

    /// Charges or gives back `deltas` in each window of `req`, in one `EVALSHA`.
    pub async fn adjust(
        &self,
        req: &Request,
        deltas: &[i64],
        now_ms: Option<i64>,
    ) -> Result<(), RedisFailure> {
        let mut conn = self.link.connection().ok_or(RedisFailure::NotConnected)?;
        let mut inv = self.adjust.prepare_invoke();
        for w in &req.windows {
            inv.key(counter_key(&self.link.prefix, &req.tag, w));
        }
        inv.arg(now_ms.map(|n| n.to_string()).unwrap_or_default());
        for (w, d) in req.windows.iter().zip(deltas) {
            inv.arg(w.rate.limit)
                .arg(u64::from(w.rate.window_seconds) * 1000)
                .arg(*d);
        }
        let _: i64 = tokio::time::timeout(self.link.timeout, inv.invoke_async(&mut conn))
            .await
            .map_err(|_| RedisFailure::Timeout)??;
        Ok(())
    }

    /// Decides `req` and, when its windows admit, runs `then` in the same `EVALSHA`.
    pub async fn check_then(
        &self,
        req: &Request,
        now_ms: Option<i64>,
        then: &Then<'_>,
    ) -> Result<Joint, RedisFailure> {
        let mut conn = self.link.connection().ok_or(RedisFailure::NotConnected)?;
        let mut inv = then.script.prepare_invoke();
        self.windows(&mut inv, req, now_ms);
        inv.key(&then.key);
        for a in then.args {
            inv.arg(*a);
        }
        let span = tracing::debug_span!(
            "redis",
            otel.name = "EVALSHA rate limit and credits",
            otel.kind = "client",
            db.system.name = "redis"
        );
        let reply: Vec<i64> = tokio::time::timeout(self.link.timeout, inv.invoke_async(&mut conn))
            .instrument(span)
            .await
            .map_err(|_| RedisFailure::Timeout)??;
        if let [code] = reply[..] {
            if code < 0 {
                return Ok(Joint::Retry(code));
            }
        }
        let n = 1 + 3 * req.windows.len();
        if reply.len() < n {
            return Err(RedisFailure::Reply);
        }
        let decision = decision(req, &reply[..n]);
        match (decision.allowed, reply.len() == n) {
            (false, true) => Ok(Joint::Denied(decision)),
            (true, false) => Ok(Joint::Admitted(decision, reply[n..].to_vec())),
            _ => Err(RedisFailure::Reply),
        }
    }

    /// The window counters' keys and arguments of `req`, as the decision scripts take them.
    fn windows(&self, inv: &mut redis::ScriptInvocation<'_>, req: &Request, now_ms: Option<i64>) {
        for w in &req.windows {
            inv.key(counter_key(&self.link.prefix, &req.tag, w));
        }
        inv.arg(now_ms.map(|n| n.to_string()).unwrap_or_default());
        for w in &req.windows {
            inv.arg(w.rate.limit)
                .arg(u64::from(w.rate.window_seconds) * 1000)
                .arg(w.cost);
        }
    }

    async fn decide(
        &self,
        req: &Request,
        now_ms: Option<i64>,
        spend: bool,
    ) -> Result<Decision, RedisFailure> {
        let mut conn = self.link.connection().ok_or(RedisFailure::NotConnected)?;
        let mut inv = self.script.prepare_invoke();
        self.windows(&mut inv, req, now_ms);
        if !spend {
            inv.arg("peek");
        }
        let span = tracing::debug_span!(
            "redis",
            otel.name = "EVALSHA rate limit",
            otel.kind = "client",
            db.system.name = "redis"
        );
        let reply: Vec<i64> = tokio::time::timeout(self.link.timeout, inv.invoke_async(&mut conn))
            .instrument(span)
            .await
            .map_err(|_| RedisFailure::Timeout)??;
        if reply.len() != 1 + 3 * req.windows.len() {
            return Err(RedisFailure::Reply);
        }
        Ok(decision(req, &reply))
    }
}

/// The decision in a script's answer `{allowed, remaining_1, reset_1, retry_1, …}`.
fn decision(req: &Request, reply: &[i64]) -> Decision {
    let windows = req
        .windows
        .iter()
        .zip(reply[1..].chunks_exact(3))
        .map(|(w, r)| WindowState {
            policy: w.policy,
            limit: w.rate.limit,
            window_seconds: w.rate.window_seconds,
            remaining: r[0].clamp(0, i64::from(u32::MAX)) as u32,
            reset_at: r[1],
            retry_after: r[2].max(0) as u64,
        })
        .collect();
    Decision {
        allowed: reply[0] == 1,
        windows,
    }
}

/// `{prefix}:rl:{{tag}}{cell}`, the name of window `w`'s counter: what
/// `link.key(&format!("rl:{{{tag}}}{}", w.cell()))` makes, in one allocation instead of three
/// (a decision names every window's counter on each request).
fn counter_key(prefix: &str, tag: &str, w: &super::Window) -> String {
    let mut n = itoa::Buffer::new();
    let mut k = String::with_capacity(prefix.len() + tag.len() + w.subject.len() + 48);
    for part in [prefix, ":rl:{", tag, "}", w.policy, ":", &w.subject, ":"] {
        k.push_str(part);
    }
    k.push_str(n.format(w.rate.limit));
    k.push(':');
    k.push_str(n.format(w.rate.window_seconds));
    k
}

#[cfg(test)]
mod tests {
    use super::super::{Rate, Window};

    #[test]
    fn a_counter_is_named_as_the_cell_under_its_tag_and_prefix() {
        let w = Window {
            policy: "api_key",
            subject: "key_01ab".into(),
            rate: Rate::checked(60, 3600).unwrap(),
            cost: 1,
        };
        assert_eq!(
            super::counter_key("gatehouse", "org:org_9", &w),
            format!("gatehouse:rl:{{org:org_9}}{}", w.cell())
        );
        assert_eq!(
            super::counter_key("gatehouse", "org:org_9", &w),
            "gatehouse:rl:{org:org_9}api_key:key_01ab:60:3600"
        );
    }
}
