//! The in-process backend: one `tat` per window in a bounded cache, each forgotten once it
//! has been idle for its window (by then it equals a fresh counter).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{decide, Decision, Request};

/// One window's counter.
struct Cell {
    tat: AtomicI64,
    idle: Duration,
}

/// Forgets a counter once it has been idle for its own window.
struct IdleForWindow;

impl moka::Expiry<u128, Arc<Cell>> for IdleForWindow {
    fn expire_after_create(&self, _: &u128, cell: &Arc<Cell>, _: Instant) -> Option<Duration> {
        Some(cell.idle)
    }
    fn expire_after_read(
        &self,
        _: &u128,
        cell: &Arc<Cell>,
        _: Instant,
        _: Option<Duration>,
        _: Instant,
    ) -> Option<Duration> {
        Some(cell.idle)
    }
    fn expire_after_update(
        &self,
        _: &u128,
        cell: &Arc<Cell>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(cell.idle)
    }
}

/// Decisions of one tag are serialised by one of these locks, so all windows of a decision
/// change together; different tags rarely share one.
const STRIPES: usize = 256;

/// An in-process limiter, bounded in memory.
#[derive(Clone)]
pub struct MemoryLimiter {
    /// Counters by a 128-bit hash of (tag, policy, subject, rate): no string is built on
    /// the hot path, and a collision among a million counters has odds of about 1e-27.
    cells: moka::sync::Cache<u128, Arc<Cell>>,
    /// Two independent keyed hashers make the 128-bit counter id.
    ids: (
        std::collections::hash_map::RandomState,
        std::collections::hash_map::RandomState,
    ),
    stripes: Arc<[Mutex<()>]>,
    hasher: std::collections::hash_map::RandomState,
    /// The latest time seen: a clock stepping back never loosens a limit.
    high_water: Arc<AtomicI64>,
}

impl MemoryLimiter {
    /// A limiter holding at most `capacity` counters (least useful evicted first).
    pub fn new(capacity: u64) -> Self {
        Self {
            cells: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(IdleForWindow)
                .build(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            ids: Default::default(),
            hasher: Default::default(),
            high_water: Arc::new(AtomicI64::new(i64::MIN)),
        }
    }

    /// Decides `req` at `now_ms`.
    pub fn check(&self, req: &Request, now_ms: i64) -> Decision {
        let now = self
            .high_water
            .fetch_max(now_ms, Ordering::AcqRel)
            .max(now_ms);
        let cells: Vec<Arc<Cell>> = req
            .windows
            .iter()
            .map(|w| {
                let id = self.id(&req.tag, w);
                let idle = Duration::from_secs(u64::from(w.rate.window_seconds));
                self.cells.get_with(id, || {
                    Arc::new(Cell {
                        tat: AtomicI64::new(i64::MIN),
                        idle,
                    })
                })
            })
            .collect();
        let stripe = &self.stripes[(self.hasher.hash_one(&req.tag) as usize) % STRIPES];
        // A poisoned stripe only means another decision panicked mid-way; the counters are
        // plain integers and stay meaningful.
        let _guard = stripe.lock().unwrap_or_else(|p| p.into_inner());
        let mut tats: Vec<i64> = cells
            .iter()
            .map(|c| c.tat.load(Ordering::Acquire))
            .collect();
        let decision = decide(&req.windows, &mut tats, now);
        if decision.allowed {
            for (c, t) in cells.iter().zip(tats) {
                c.tat.store(t, Ordering::Release);
            }
        }
        decision
    }

    fn id(&self, tag: &str, w: &super::Window) -> u128 {
        let parts = (
            tag,
            w.policy,
            &w.subject,
            w.rate.limit,
            w.rate.window_seconds,
        );
        let half = |state: &std::collections::hash_map::RandomState| state.hash_one(parts);
        (u128::from(half(&self.ids.0)) << 64) | u128::from(half(&self.ids.1))
    }

    /// Counters currently held (after pending evictions are applied).
    pub fn len(&self) -> u64 {
        self.cells.run_pending_tasks();
        self.cells.entry_count()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
