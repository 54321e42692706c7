//! The limiter the application uses: memory, or Redis with a circuit breaker and an
//! in-memory fallback.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::redis::{Joint, RedisFailure, Then};
use super::{Decision, MemoryLimiter, RedisLimiter, Request};
use crate::clock::Clock;
use crate::metrics::Metrics;

/// A decision could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimiterError {
    /// The shared backend is unreachable and the policy fails closed.
    #[error("the rate limiter is unavailable")]
    Unavailable,
}

/// Consecutive failures that open the breaker. More than a couple, so one slow moment on a
/// busy machine does not split the shared limits into per-instance ones.
const TRIP_AFTER: u32 = 5;
/// How long an open breaker sends every decision to memory before trying Redis again.
const OPEN_FOR: Duration = Duration::from_secs(2);

/// Stops asking Redis for a while after it failed several times in a row, so an outage
/// costs each request nothing rather than a timeout.
struct Breaker {
    started: Instant,
    failures: AtomicU32,
    /// Milliseconds since `started` until which Redis is not asked.
    open_until: AtomicU64,
}

impl Breaker {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn is_open(&self) -> bool {
        self.elapsed_ms() < self.open_until.load(Ordering::Acquire)
    }

    fn succeeded(&self) {
        if self.failures.swap(0, Ordering::AcqRel) >= TRIP_AFTER {
            tracing::info!("Redis answers again; rate limits are shared again");
        }
    }

    fn failed(&self, cause: &dyn std::fmt::Display) {
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= TRIP_AFTER {
            self.open_until.store(
                self.elapsed_ms() + OPEN_FOR.as_millis() as u64,
                Ordering::Release,
            );
            if n == TRIP_AFTER {
                tracing::warn!(error = %cause, "Redis is unreachable; deciding rate limits in memory on this instance");
            }
        }
    }
}

enum Backend {
    Memory(MemoryLimiter),
    Redis {
        redis: RedisLimiter,
        fallback: MemoryLimiter,
        breaker: Breaker,
    },
}

/// Rate-limit decisions for the whole application.
#[derive(Clone)]
pub struct Limiter {
    backend: Arc<Backend>,
    clock: Clock,
    metrics: Arc<Metrics>,
}

impl Limiter {
    /// In memory only, holding at most `capacity` counters.
    pub fn memory(capacity: u64, clock: Clock, metrics: Arc<Metrics>) -> Self {
        Self {
            backend: Arc::new(Backend::Memory(MemoryLimiter::new(capacity))),
            clock,
            metrics,
        }
    }

    /// Shared through Redis, falling back to memory when Redis does not answer.
    pub fn redis(redis: RedisLimiter, capacity: u64, clock: Clock, metrics: Arc<Metrics>) -> Self {
        Self {
            backend: Arc::new(Backend::Redis {
                redis,
                fallback: MemoryLimiter::new(capacity),
                breaker: Breaker::new(),
            }),
            clock,
            metrics,
        }
    }

    /// The backend's name, for `/readyz` and logs.
    pub fn backend_name(&self) -> &'static str {
        match *self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis { .. } => "redis",
        }
    }

    /// Decides one request over all its windows.
    pub async fn check(&self, req: &Request) -> Result<Decision, LimiterError> {
        let result = self.decide(req, true).await;
        let outcome = match &result {
            Ok(d) if d.allowed => "allowed",
            Ok(_) => "denied",
            Err(_) => "unavailable",
        };
        self.metrics.limit_decision(req.policy(), outcome);
        result
    }

    /// The decision `check` would make, spending nothing. Only a refusal is counted in the
    /// metrics: an admitting peek decides nothing by itself.
    pub async fn peek(&self, req: &Request) -> Result<Decision, LimiterError> {
        let result = self.decide(req, false).await;
        match &result {
            Ok(d) if !d.allowed => self.metrics.limit_decision(req.policy(), "denied"),
            Err(_) => self.metrics.limit_decision(req.policy(), "unavailable"),
            Ok(_) => {}
        }
        result
    }

    /// Charges (`deltas[i] > 0`) or gives back (`< 0`) units in each window of `req`
    /// without deciding: the settle of a cost-weighted reservation. With Redis down, the
    /// adjustment goes to the in-memory fallback (where the reservation was made then).
    pub async fn adjust(&self, req: &Request, deltas: &[i64]) -> Result<(), LimiterError> {
        let now = self.clock.now_ms();
        match &*self.backend {
            Backend::Memory(m) => {
                m.adjust(req, deltas, now);
                Ok(())
            }
            Backend::Redis {
                redis,
                fallback,
                breaker,
            } => {
                if !breaker.is_open() {
                    let now_arg = matches!(self.clock, Clock::Manual(_)).then_some(now);
                    match redis.adjust(req, deltas, now_arg).await {
                        Ok(()) => {
                            breaker.succeeded();
                            return Ok(());
                        }
                        Err(e) => breaker.failed(&e),
                    }
                }
                if req.fail_closed {
                    return Err(LimiterError::Unavailable);
                }
                fallback.adjust(req, deltas, now);
                Ok(())
            }
        }
    }

    /// Decides `req` and, when it is admitted, runs `then` in the same Redis call. `None`
    /// when decisions do not go to Redis now (memory, or Redis skipped after failures): the
    /// caller decides in two steps instead. A failure is counted towards skipping Redis, and
    /// is not replaced by a decision in memory: the caller refuses.
    pub async fn check_then(
        &self,
        req: &Request,
        then: &Then,
    ) -> Option<Result<Joint, RedisFailure>> {
        let Backend::Redis { redis, breaker, .. } = &*self.backend else {
            return None;
        };
        if breaker.is_open() {
            return None;
        }
        let now_arg = matches!(self.clock, Clock::Manual(_)).then(|| self.clock.now_ms());
        let result = redis.check_then(req, now_arg, then).await;
        match &result {
            Ok(j) => {
                breaker.succeeded();
                match j {
                    Joint::Admitted(..) => self.metrics.limit_decision(req.policy(), "allowed"),
                    Joint::Denied(_) => self.metrics.limit_decision(req.policy(), "denied"),
                    Joint::Retry(_) => {}
                }
            }
            Err(e) => {
                breaker.failed(e);
                self.metrics.limit_decision(req.policy(), "unavailable");
            }
        }
        Some(result)
    }

    async fn decide(&self, req: &Request, spend: bool) -> Result<Decision, LimiterError> {
        let now = self.clock.now_ms();
        match &*self.backend {
            Backend::Memory(m) if spend => Ok(m.check(req, now)),
            Backend::Memory(m) => Ok(m.peek(req, now)),
            Backend::Redis {
                redis,
                fallback,
                breaker,
            } => {
                let shared = if breaker.is_open() {
                    None
                } else {
                    // A controlled clock (tests) is passed to the script; the system clock
                    // defers to Redis TIME.
                    let now_arg = matches!(self.clock, Clock::Manual(_)).then_some(now);
                    let shared = if spend {
                        redis.check(req, now_arg).await
                    } else {
                        redis.peek(req, now_arg).await
                    };
                    match shared {
                        Ok(d) => {
                            breaker.succeeded();
                            Some(d)
                        }
                        Err(e) => {
                            breaker.failed(&e);
                            None
                        }
                    }
                };
                match shared {
                    Some(d) => Ok(d),
                    None if req.fail_closed => Err(LimiterError::Unavailable),
                    None => {
                        self.metrics.redis_fallback();
                        Ok(if spend {
                            fallback.check(req, now)
                        } else {
                            fallback.peek(req, now)
                        })
                    }
                }
            }
        }
    }
}
