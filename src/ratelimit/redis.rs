//! The shared backend: Redis `TIME` as the clock, every counter of a decision under one hash
//! tag (Redis Cluster safe), and the decisions that arrive together sent together: one script
//! call ([`DECIDE`]) per hash tag decides all of them in order, reading and writing each
//! counter once. A decision alone is sent at once; under load the next batch forms while the
//! last one is in Redis, so the round trips and the reads and writes of a busy key's counters
//! are shared by every decision of the batch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::{ceil_div, Decision, RedisLink, Request, WindowState};
use crate::domain::credits::Balance;

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
    /// The call that held this decision with others failed: Redis's error, for each of them.
    #[error("{0}")]
    Batch(String),
    /// The script answered something else than it should.
    #[error("unexpected reply")]
    Reply,
}

/// The decision script: the credits step (`keys/credits_core.lua`), then the decisions.
pub const DECIDE: &str = concat!(
    include_str!("../keys/credits_core.lua"),
    include_str!("decide.lua")
);

/// A key's credit spend decided in the same script call as a decision's windows, only when
/// they admit: one round trip decides both.
pub struct Then {
    /// The balance's hash, under the request's hash tag (Redis Cluster: one slot per call).
    pub key: String,
    /// The seven arguments of `credits` (see `keys/credits_core.lua`).
    pub args: [i64; 7],
}

/// What a decision with a credit spend answered.
#[derive(Debug)]
pub enum Joint {
    /// A window refused: the spend did not run, nothing was stored.
    Denied(Decision),
    /// The windows admitted and the spend ran: its answer.
    Admitted(Decision, Vec<i64>),
    /// The spend answered this negative number alone: nothing was stored.
    Retry(i64),
}

/// Decisions one script call holds at most.
const BATCH_MAX: usize = 256;

/// One decision waiting for its batch: its tag, its own keys and arguments (keys numbered
/// from 1 within the decision), and who to tell.
struct Job {
    tag: String,
    now_ms: Option<i64>,
    keys: Vec<String>,
    /// Mode, number of windows, the windows, and in mode 2 the balance's key and arguments.
    args: Vec<i64>,
    reply: oneshot::Sender<Result<Vec<i64>, RedisFailure>>,
}

const MODE_CHECK: i64 = 0;
const MODE_PEEK: i64 = 1;
const MODE_CREDITS: i64 = 2;

/// The Redis-backed limiter.
#[derive(Clone)]
pub struct RedisLimiter {
    link: RedisLink,
    script: Arc<redis::Script>,
    adjust: Arc<redis::Script>,
    /// The batching task's queue, started on first use (inside the runtime).
    queue: Arc<OnceLock<mpsc::Sender<Job>>>,
    /// Decision script calls sent so far.
    calls: Arc<AtomicU64>,
}

impl RedisLimiter {
    /// A limiter over `link`.
    pub fn new(link: RedisLink) -> Self {
        Self {
            link,
            script: Arc::new(redis::Script::new(DECIDE)),
            adjust: Arc::new(redis::Script::new(include_str!("adjust.lua"))),
            queue: Arc::new(OnceLock::new()),
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many decision script calls this limiter has sent (each holds one decision or a
    /// batch of them): what tests and benchmarks compare with the decisions made.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Decides `req`. `now_ms` is for tests; production passes `None` and Redis's own clock
    /// decides, so instances with skewed clocks agree.
    pub async fn check(
        &self,
        req: &Request,
        now_ms: Option<i64>,
    ) -> Result<Decision, RedisFailure> {
        let reply = self.send(req, now_ms, MODE_CHECK, None).await?;
        decision(req, &reply)
    }

    /// The decision `check` would make, storing nothing.
    pub async fn peek(&self, req: &Request, now_ms: Option<i64>) -> Result<Decision, RedisFailure> {
        let reply = self.send(req, now_ms, MODE_PEEK, None).await?;
        decision(req, &reply)
    }

    /// Decides `req` and, when its windows admit, spends credits as `then` says, in the same
    /// script call.
    pub async fn check_then(
        &self,
        req: &Request,
        now_ms: Option<i64>,
        then: &Then,
    ) -> Result<Joint, RedisFailure> {
        let reply = self.send(req, now_ms, MODE_CREDITS, Some(then)).await?;
        if let [code] = reply[..] {
            if code < 0 {
                return Ok(Joint::Retry(code));
            }
        }
        let n = 1 + 3 * req.windows.len();
        if reply.len() < n {
            return Err(RedisFailure::Reply);
        }
        let decision = decision(req, &reply[..n])?;
        match (decision.allowed, reply.len() == n) {
            (false, true) => Ok(Joint::Denied(decision)),
            (true, false) => Ok(Joint::Admitted(decision, reply[n..].to_vec())),
            _ => Err(RedisFailure::Reply),
        }
    }

    /// Spends credits as `then` says, without windows: the seven numbers `credits` answers,
    /// or its one negative number.
    pub async fn spend(
        &self,
        tag: &str,
        then: &Then,
        now_ms: Option<i64>,
    ) -> Result<Vec<i64>, RedisFailure> {
        let req = Request {
            tag: tag.to_string(),
            windows: Vec::new(),
            fail_closed: true,
        };
        let mut reply = self.send(&req, now_ms, MODE_CREDITS, Some(then)).await?;
        match reply[..] {
            [code] if code < 0 => Ok(reply),
            [1, ..] if reply.len() == 8 => Ok(reply.split_off(1)),
            _ => Err(RedisFailure::Reply),
        }
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

    /// Queues one decision for the next batch and waits for its reply.
    async fn send(
        &self,
        req: &Request,
        now_ms: Option<i64>,
        mode: i64,
        then: Option<&Then>,
    ) -> Result<Vec<i64>, RedisFailure> {
        if self.link.connection().is_none() {
            return Err(RedisFailure::NotConnected);
        }
        let mut keys = Vec::with_capacity(req.windows.len() + 1);
        let mut args = Vec::with_capacity(2 + 4 * req.windows.len() + 8);
        args.extend([mode, req.windows.len() as i64]);
        for w in &req.windows {
            let name = counter_key(&self.link.prefix, &req.tag, w);
            // A counter two windows share is one key (never in practice: rates differ).
            let index = match keys.iter().position(|k| *k == name) {
                Some(i) => i,
                None => {
                    keys.push(name);
                    keys.len() - 1
                }
            };
            args.extend([
                index as i64 + 1,
                i64::from(w.rate.limit),
                i64::from(w.rate.window_seconds) * 1000,
                i64::from(w.cost),
            ]);
        }
        if let Some(then) = then {
            // Redis Cluster: every key of a call must be under the call's hash tag.
            debug_assert!(then.key.contains(&format!("{{{}}}", req.tag)));
            keys.push(then.key.clone());
            args.push(keys.len() as i64);
            args.extend(then.args);
        }
        let (tx, rx) = oneshot::channel();
        let job = Job {
            tag: req.tag.clone(),
            now_ms,
            keys,
            args,
            reply: tx,
        };
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(4 * BATCH_MAX);
            tokio::spawn(batches(
                self.link.clone(),
                self.script.clone(),
                self.calls.clone(),
                rx,
            ));
            tx
        });
        let span = tracing::debug_span!(
            "redis",
            otel.name = if then.is_some() {
                "EVALSHA rate limit and credits"
            } else {
                "EVALSHA rate limit"
            },
            otel.kind = "client",
            db.system.name = "redis"
        );
        // One timeout for the whole wait: the queue, the batch before this one, and its own
        // call. A decision dropped here is not sent (see `batches`).
        let wait = async {
            queue
                .send(job)
                .await
                .map_err(|_| RedisFailure::NotConnected)?;
            rx.await.unwrap_or(Err(RedisFailure::NotConnected))
        };
        tokio::time::timeout(self.link.timeout, wait)
            .instrument(span)
            .await
            .unwrap_or(Err(RedisFailure::Timeout))
    }
}

/// The batching task: takes every decision waiting, sends one script call per hash tag (and
/// clock), and answers each decision from its call's reply. One batch at a time: while it is
/// in Redis, the next one forms.
async fn batches(
    link: RedisLink,
    script: Arc<redis::Script>,
    calls: Arc<AtomicU64>,
    mut rx: mpsc::Receiver<Job>,
) {
    let mut pending = Vec::with_capacity(BATCH_MAX);
    while crate::batch::next_batch(&mut rx, &mut pending, BATCH_MAX).await > 0 {
        let mut groups: HashMap<(String, Option<i64>), Vec<Job>> = HashMap::new();
        // A decision whose caller stopped waiting (its timeout passed while the batch before
        // was in Redis) is not sent: it must not take a request's place or spend credits.
        for job in pending.drain(..).filter(|j| !j.reply.is_closed()) {
            groups
                .entry((job.tag.clone(), job.now_ms))
                .or_default()
                .push(job);
        }
        let sent = groups
            .into_iter()
            .map(|((_, now_ms), jobs)| call(&link, &script, &calls, now_ms, jobs));
        futures_util::future::join_all(sent).await;
    }
}

/// Keys one script call names at most: Lua's `unpack` of KEYS (for the `MGET`) holds a few
/// thousand values; a batch with more is sent in several calls.
const KEYS_PER_CALL: usize = 2000;

/// The script calls for `jobs` (one hash tag), each holding as many decisions as its keys
/// allow. A call Redis answers with an error (a counter it cannot read, say) is sent again one
/// decision at a time, so one bad decision fails alone rather than with its batch.
async fn call(
    link: &RedisLink,
    script: &redis::Script,
    calls: &AtomicU64,
    now_ms: Option<i64>,
    mut jobs: Vec<Job>,
) {
    while !jobs.is_empty() {
        let mut named = 0;
        let take = jobs
            .iter()
            .position(|j| {
                named += j.keys.len();
                named > KEYS_PER_CALL
            })
            .unwrap_or(jobs.len())
            .max(1);
        let rest = jobs.split_off(take);
        calls.fetch_add(1, Ordering::Relaxed);
        match decide_all(link, script, now_ms, &jobs).await {
            Err(RedisFailure::Redis(_)) if jobs.len() > 1 => {
                for job in jobs {
                    calls.fetch_add(1, Ordering::Relaxed);
                    let result = decide_all(link, script, now_ms, std::slice::from_ref(&job)).await;
                    answer(vec![job], result);
                }
            }
            result => answer(jobs, result),
        }
        jobs = rest;
    }
}

/// Tells each of `jobs` its reply, or the call's failure.
fn answer(jobs: Vec<Job>, result: Result<Vec<Vec<i64>>, RedisFailure>) {
    match result {
        Ok(replies) => {
            for (job, reply) in jobs.into_iter().zip(replies) {
                let _ = job.reply.send(Ok(reply));
            }
        }
        Err(e) => {
            for job in jobs {
                let _ = job.reply.send(Err(match &e {
                    RedisFailure::NotConnected => RedisFailure::NotConnected,
                    RedisFailure::Timeout => RedisFailure::Timeout,
                    RedisFailure::Reply => RedisFailure::Reply,
                    other => RedisFailure::Batch(other.to_string()),
                }));
            }
        }
    }
}

/// One script call deciding `jobs` (one hash tag): identical decisions are sent once with
/// their count, every key once. The replies, in the order of `jobs`.
async fn decide_all(
    link: &RedisLink,
    script: &redis::Script,
    now_ms: Option<i64>,
    jobs: &[Job],
) -> Result<Vec<Vec<i64>>, RedisFailure> {
    let mut keys: Vec<&str> = Vec::new();
    let mut key_index: HashMap<&str, i64> = HashMap::new();
    // Each shape: its arguments with the keys numbered in the call, and its decisions.
    let mut shapes: Vec<(Vec<i64>, Vec<usize>)> = Vec::new();
    let mut shape_index: HashMap<Vec<i64>, usize> = HashMap::new();
    for (j, job) in jobs.iter().enumerate() {
        let global: Vec<i64> = job
            .keys
            .iter()
            .map(|k| {
                *key_index.entry(k.as_str()).or_insert_with(|| {
                    keys.push(k.as_str());
                    keys.len() as i64
                })
            })
            .collect();
        let mut args = job.args.clone();
        let windows = args[1] as usize;
        for w in 0..windows {
            let i = 2 + 4 * w;
            args[i] = global[args[i] as usize - 1];
        }
        if args[0] == MODE_CREDITS {
            let i = 2 + 4 * windows;
            args[i] = global[args[i] as usize - 1];
        }
        match shape_index.get(&args) {
            Some(&s) => shapes[s].1.push(j),
            None => {
                shape_index.insert(args.clone(), shapes.len());
                shapes.push((args, vec![j]));
            }
        }
    }
    let reply = invoke(link, script, now_ms, &keys, &shapes).await?;
    // The script answers now, then shape by shape what its decisions started from.
    let (&now, mut rest) = reply.split_first().ok_or(RedisFailure::Reply)?;
    let mut ordered: Vec<Vec<i64>> = vec![Vec::new(); jobs.len()];
    for (args, js) in &shapes {
        let (replies, used) = expand(args, js.len(), now, rest).ok_or(RedisFailure::Reply)?;
        rest = &rest[used..];
        for (&j, r) in js.iter().zip(replies) {
            ordered[j] = r;
        }
    }
    if !rest.is_empty() {
        return Err(RedisFailure::Reply);
    }
    Ok(ordered)
}

/// The replies of a shape's `n` identical decisions (`args`: mode, windows, credits), each as
/// the decision alone would have been answered: `{allowed, remaining_1, reset_1, retry_1, …}`,
/// then in mode 2, when its windows admitted, the seven numbers of `credits`; or, when
/// `credits` answered a negative number, that number alone as the whole reply. From what the
/// script answered for the shape (`reply`, see decide.lua): how many were admitted, each
/// window's base, the first spend. Also how many numbers of `reply` were the shape's. `None`
/// when the reply does not fit the shape.
///
/// The numbers are the script's own rules, which port `gcra` and `Balance::spend`: the i-th
/// admitted decision starts from the base plus i steps of cost × length (in 1/limit ms), a
/// refused one from where the admitted ones left the window; each spend after the first is
/// `Balance::spend` on the balance the one before left.
fn expand(args: &[i64], n: usize, now: i64, reply: &[i64]) -> Option<(Vec<Vec<i64>>, usize)> {
    let (mode, nw) = (*args.first()?, usize::try_from(*args.get(1)?).ok()?);
    let k = usize::try_from(*reply.first()?).ok().filter(|k| *k <= n)?;
    let bases = reply.get(1..1 + 2 * nw)?;
    let mut used = 1 + 2 * nw;
    let first_spend = if mode == MODE_CREDITS && k >= 1 {
        let len = if *reply.get(used)? < 0 { 1 } else { 7 };
        let spend = reply.get(used..used + len)?;
        used += len;
        if let [code] = spend {
            // Not decided: every decision of the shape answers the same.
            return Some((vec![vec![*code]; n], used));
        }
        Some(spend)
    } else {
        None
    };
    let cost = if mode == MODE_CREDITS {
        *args.get(2 + 4 * nw + 2)?
    } else {
        0
    };
    let windows: Vec<[i128; 5]> = (0..nw)
        .map(|j| {
            let w = args.get(2 + 4 * j..6 + 4 * j)?;
            let (l, len, c) = (i128::from(w[1]), i128::from(w[2]), i128::from(w[3]));
            (l > 0 && len > 0).then_some(())?;
            let base = i128::from(bases[2 * j]) * l + i128::from(bases[2 * j + 1]);
            Some([l, len, c * len, base, i128::from(now) * l])
        })
        .collect::<Option<_>>()?;
    let mut spend: Option<[i64; 7]> = None;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        // A peek stores nothing: each answers as the first would.
        let (admitted, before) = if mode == MODE_PEEK {
            (k >= 1, 0)
        } else {
            (i < k, i.min(k))
        };
        let mut r = Vec::with_capacity(1 + 3 * nw + if admitted { 7 } else { 0 });
        r.push(i64::from(admitted));
        for &[l, len, step, base, now_scaled] in &windows {
            let at = base + step * before as i128;
            let window = len * l;
            let behind = at - now_scaled;
            let ahead = behind + step;
            let (remaining, reset, retry) = if admitted {
                (
                    (window - ahead).div_euclid(len),
                    ceil_div(at + step, l * 1000),
                    0,
                )
            } else if ahead > window {
                let wait_ms = ceil_div(ahead - window, l);
                (
                    (window - behind).div_euclid(len),
                    ceil_div(at, l * 1000),
                    ceil_div(wait_ms, 1000).max(1),
                )
            } else {
                ((window - behind).div_euclid(len), ceil_div(at, l * 1000), 0)
            };
            r.extend([remaining.clamp(0, l) as i64, reset as i64, retry as i64]);
        }
        if admitted {
            if let Some(first) = first_spend {
                let next = match spend {
                    None => <[i64; 7]>::try_from(first).ok()?,
                    Some([_, remaining, base, period, _, _, gen]) => {
                        // No refill within a shape: its period start is the same for all.
                        let b = Balance {
                            remaining,
                            base,
                            period,
                        };
                        let s = b.spend(None, now, cost);
                        [
                            i64::from(s.admitted),
                            s.balance.remaining,
                            base,
                            period,
                            i64::from(s.low),
                            i64::from(s.exhausted),
                            gen,
                        ]
                    }
                };
                spend = Some(next);
                r.extend(next);
            }
        }
        out.push(r);
    }
    Some((out, used))
}

async fn invoke(
    link: &RedisLink,
    script: &redis::Script,
    now_ms: Option<i64>,
    keys: &[&str],
    shapes: &[(Vec<i64>, Vec<usize>)],
) -> Result<Vec<i64>, RedisFailure> {
    let mut conn = link.connection().ok_or(RedisFailure::NotConnected)?;
    let mut inv = script.prepare_invoke();
    for k in keys {
        inv.key(*k);
    }
    inv.arg(now_ms.map(|n| n.to_string()).unwrap_or_default());
    inv.arg(shapes.len());
    for (args, decisions) in shapes {
        inv.arg(decisions.len());
        for a in args {
            inv.arg(*a);
        }
    }
    let replies = tokio::time::timeout(link.timeout, inv.invoke_async(&mut conn))
        .await
        .map_err(|_| RedisFailure::Timeout)??;
    Ok(replies)
}

/// The decision in a script's answer `{allowed, remaining_1, reset_1, retry_1, …}`.
fn decision(req: &Request, reply: &[i64]) -> Result<Decision, RedisFailure> {
    if reply.len() != 1 + 3 * req.windows.len() {
        return Err(RedisFailure::Reply);
    }
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
    Ok(Decision {
        allowed: reply[0] == 1,
        windows,
    })
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
