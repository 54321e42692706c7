//! The in-process backend: each window's `tat` in a plain map behind one of 256 locks, the
//! lock chosen by the decision's tag so all windows of a decision change together.
//!
//! Hand-written rather than a cache crate: a GCRA counter whose `tat` is in the past is
//! exactly a fresh counter, so expiry needs no timers or access tracking: stale counters
//! are dropped when the limiter fills up, with no effect on any decision. That keeps a
//! decision to one uncontended lock and a few hash lookups (moka's per-read bookkeeping cost
//! more than the decision itself).
//!
//! The capacity is one count for the whole process, not a share per lock: all the counters of
//! one tag (an organization's keys) live behind one lock, so a share per lock would make a
//! large organization forget the counters of keys still in use, which loosens their limits.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{decide, Decision, Request};

/// Decisions of one tag are serialised by one of these locks; different tags rarely share one.
const STRIPES: usize = 256;

/// One window's counter: its theoretical arrival time (in 1/limit ms, as `gcra` keeps it)
/// and the unix ms after which it equals a fresh counter.
#[derive(Clone, Copy)]
struct Cell {
    tat: i64,
    stale_after_ms: i64,
}

/// The counters of one stripe.
struct Stripe {
    cells: HashMap<u128, Cell, BuildHasherDefault<IdHasher>>,
}

/// Counter ids are already keyed hashes, unknown outside the process: the map uses their low
/// 64 bits as they are instead of hashing them a second time.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used by `u128` keys; folds the bytes so the hasher stays correct for any key.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// The counter ids of `windows`: each (tag, policy, subject, rate) through both keyed
/// hashers, each already fed the tag. Windows of one policy and subject (a key's three
/// windows) share the hashed prefix: the hashers are fed (policy, subject) once and cloned
/// for each rate, which gives the same ids as hashing the whole tuple for every window.
fn ids(
    a: &std::collections::hash_map::DefaultHasher,
    b: &std::collections::hash_map::DefaultHasher,
    windows: &[super::Window],
) -> Vec<u128> {
    let mut out = Vec::with_capacity(windows.len());
    let mut prefix: Option<(&str, &str, [std::collections::hash_map::DefaultHasher; 2])> = None;
    for w in windows {
        let fed = match &prefix {
            Some((policy, subject, fed)) if *policy == w.policy && *subject == w.subject => fed,
            _ => {
                let feed = |h: &std::collections::hash_map::DefaultHasher| {
                    let mut h = h.clone();
                    w.policy.hash(&mut h);
                    w.subject.hash(&mut h);
                    h
                };
                &prefix.insert((w.policy, &w.subject, [feed(a), feed(b)])).2
            }
        };
        let half = |h: &std::collections::hash_map::DefaultHasher| {
            let mut h = h.clone();
            w.rate.limit.hash(&mut h);
            w.rate.window_seconds.hash(&mut h);
            h.finish()
        };
        out.push((u128::from(half(&fed[0])) << 64) | u128::from(half(&fed[1])));
    }
    out
}

/// An in-process limiter, bounded in memory.
#[derive(Clone)]
pub struct MemoryLimiter {
    stripes: Arc<[Mutex<Stripe>]>,
    /// Most counters held, over all stripes (a sweep brings them back under it).
    capacity: usize,
    /// Counters held, over all stripes.
    held: Arc<AtomicUsize>,
    /// Whether a sweep is under way (one at a time; decisions go on meanwhile).
    sweeping: Arc<AtomicBool>,
    /// Two independent keyed hashers make a counter's 128-bit id from (tag, policy,
    /// subject, rate): no string is built on the hot path, and a collision among a million
    /// counters has odds of about 1e-27.
    ids: (
        std::collections::hash_map::RandomState,
        std::collections::hash_map::RandomState,
    ),
    /// The latest time seen: a clock stepping back never loosens a limit.
    high_water: Arc<AtomicI64>,
}

impl MemoryLimiter {
    /// A limiter holding at most about `capacity` counters; when full, the counters closest
    /// to replenishing are forgotten first.
    pub fn new(capacity: u64) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX).max(16);
        Self {
            stripes: (0..STRIPES)
                .map(|_| {
                    Mutex::new(Stripe {
                        cells: HashMap::default(),
                    })
                })
                .collect(),
            capacity,
            held: Arc::new(AtomicUsize::new(0)),
            sweeping: Arc::new(AtomicBool::new(false)),
            ids: Default::default(),
            high_water: Arc::new(AtomicI64::new(i64::MIN)),
        }
    }

    /// Decides `req` at `now_ms`.
    pub fn check(&self, req: &Request, now_ms: i64) -> Decision {
        self.decide_at(req, now_ms, true)
    }

    /// The decision `check` would make at `now_ms`, spending nothing: a caller asks first
    /// whether a request would be admitted and spends only when it turns out to count (the
    /// failure budget spends on failed credentials alone).
    pub fn peek(&self, req: &Request, now_ms: i64) -> Decision {
        self.decide_at(req, now_ms, false)
    }

    fn decide_at(&self, req: &Request, now_ms: i64, spend: bool) -> Decision {
        let now = self
            .high_water
            .fetch_max(now_ms, Ordering::AcqRel)
            .max(now_ms);
        // The tag is hashed once per hasher; each window continues from there.
        let tagged = |state: &std::collections::hash_map::RandomState| {
            let mut h = state.build_hasher();
            req.tag.hash(&mut h);
            h
        };
        let (a, b) = (tagged(&self.ids.0), tagged(&self.ids.1));
        let ids = ids(&a, &b, &req.windows);
        let stripe = &self.stripes[(a.finish() as usize) % STRIPES];
        // A poisoned stripe only means another decision panicked mid-way; the counters are
        // plain integers and stay meaningful.
        let mut s = stripe.lock().unwrap_or_else(|p| p.into_inner());
        let mut tats: Vec<i64> = ids
            .iter()
            .map(|id| s.cells.get(id).map_or(i64::MIN, |c| c.tat))
            .collect();
        let decision = decide(&req.windows, &mut tats, now);
        let mut added = 0;
        if spend && decision.allowed {
            for ((id, tat), w) in ids.iter().zip(tats).zip(&req.windows) {
                let limit = i64::from(w.rate.limit.max(1));
                let cell = Cell {
                    tat,
                    stale_after_ms: tat.div_euclid(limit).saturating_add(1),
                };
                if s.cells.insert(*id, cell).is_none() {
                    added += 1;
                }
            }
        }
        drop(s);
        self.note_added(added, now);
        decision
    }

    /// Counts `added` new counters and sweeps when the limiter holds more than its capacity.
    /// Called with no stripe locked: the sweep takes the locks one at a time.
    fn note_added(&self, added: usize, now_ms: i64) {
        if added == 0 {
            return;
        }
        let held = self.held.fetch_add(added, Ordering::Relaxed) + added;
        if held > self.capacity {
            self.sweep(now_ms);
        }
    }

    /// Brings the counters held down to 7/8 of the capacity (so a sweep comes at most once
    /// per eighth of it): first drops those that equal fresh ones; if that is not enough,
    /// forgets those closest to replenishing, whatever their stripe (a bounded memory loosens
    /// those limits a little, never the others).
    fn sweep(&self, now_ms: i64) {
        if self.sweeping.swap(true, Ordering::Acquire) {
            return;
        }
        let target = self.capacity - self.capacity / 8;
        self.retain_all(|c| c.stale_after_ms > now_ms);
        let held = self.held.load(Ordering::Relaxed);
        if held > target {
            let mut ends: Vec<i64> = Vec::with_capacity(held);
            for stripe in self.stripes.iter() {
                let s = stripe.lock().unwrap_or_else(|p| p.into_inner());
                ends.extend(s.cells.values().map(|c| c.stale_after_ms));
            }
            let excess = ends.len().saturating_sub(target);
            if excess > 0 {
                let (_, cut, _) = ends.select_nth_unstable(excess - 1);
                let cut = *cut;
                // Exactly `excess` go: all below the cut, and as many as needed of those at it
                // (counters made in the same millisecond share their end).
                let below = ends.iter().filter(|e| **e < cut).count();
                let mut at_cut = excess - below;
                self.retain_all(|c| {
                    if c.stale_after_ms < cut {
                        false
                    } else if c.stale_after_ms == cut && at_cut > 0 {
                        at_cut -= 1;
                        false
                    } else {
                        true
                    }
                });
            }
        }
        self.sweeping.store(false, Ordering::Release);
    }

    /// Keeps the counters for which `keep` holds, one stripe at a time.
    fn retain_all(&self, mut keep: impl FnMut(&Cell) -> bool) {
        for stripe in self.stripes.iter() {
            let mut s = stripe.lock().unwrap_or_else(|p| p.into_inner());
            let before = s.cells.len();
            s.cells.retain(|_, c| keep(c));
            self.held
                .fetch_sub(before - s.cells.len(), Ordering::Relaxed);
        }
    }

    /// Charges (`deltas[i] > 0`) or gives back (`< 0`) units of each window of `req`
    /// without deciding: the settle of a reservation. A refund to a counter already
    /// forgotten does nothing (the forgotten counter was a fresh one).
    pub fn adjust(&self, req: &Request, deltas: &[i64], now_ms: i64) {
        let now = self
            .high_water
            .fetch_max(now_ms, Ordering::AcqRel)
            .max(now_ms);
        let tagged = |state: &std::collections::hash_map::RandomState| {
            let mut h = state.build_hasher();
            req.tag.hash(&mut h);
            h
        };
        let (a, b) = (tagged(&self.ids.0), tagged(&self.ids.1));
        let stripe = &self.stripes[(a.finish() as usize) % STRIPES];
        let ids = ids(&a, &b, &req.windows);
        let mut s = stripe.lock().unwrap_or_else(|p| p.into_inner());
        let mut added = 0;
        for ((w, delta), id) in req.windows.iter().zip(deltas).zip(ids) {
            let limit = i64::from(w.rate.limit.max(1));
            match s.cells.get_mut(&id) {
                Some(c) => {
                    c.tat = super::adjusted(w.rate, *delta, c.tat, now);
                    c.stale_after_ms = c.tat.div_euclid(limit).saturating_add(1);
                }
                None if *delta > 0 => {
                    let tat = super::adjusted(w.rate, *delta, i64::MIN, now);
                    added += 1;
                    let stale_after_ms = tat.div_euclid(limit).saturating_add(1);
                    s.cells.insert(
                        id,
                        Cell {
                            tat,
                            stale_after_ms,
                        },
                    );
                }
                None => {}
            }
        }
        drop(s);
        self.note_added(added, now);
    }

    /// Counters currently held.
    pub fn len(&self) -> u64 {
        self.held.load(Ordering::Relaxed) as u64
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, Hash, Hasher};

    use super::super::{Rate, Window};

    /// The shared prefix is an optimisation only: every id is the hash of the whole
    /// (tag, policy, subject, rate), as when each window was hashed on its own.
    #[test]
    fn ids_hash_each_window_whole() {
        let states = (
            std::collections::hash_map::RandomState::new(),
            std::collections::hash_map::RandomState::new(),
        );
        let w = |policy: &'static str, subject: &str, limit, window_seconds| Window {
            policy,
            subject: subject.to_string(),
            rate: Rate::new(limit, window_seconds),
            cost: 1,
        };
        let windows = [
            w("api_key", "key_1", 10, 1),
            w("api_key", "key_1", 10, 2),
            w("org", "org_1", 10, 1),
            w("org", "key_1", 10, 1),
            w("api_key", "key_1", 10, 3),
        ];
        let tagged = |s: &std::collections::hash_map::RandomState| {
            let mut h = s.build_hasher();
            "org:org_1".hash(&mut h);
            h
        };
        let (a, b) = (tagged(&states.0), tagged(&states.1));
        let whole = |w: &Window| {
            let rest = (w.policy, &w.subject, w.rate.limit, w.rate.window_seconds);
            let half = |h: &std::collections::hash_map::DefaultHasher| {
                let mut h = h.clone();
                rest.hash(&mut h);
                h.finish()
            };
            (u128::from(half(&a)) << 64) | u128::from(half(&b))
        };
        let ids = super::ids(&a, &b, &windows);
        assert_eq!(ids, windows.iter().map(whole).collect::<Vec<_>>());
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), windows.len());
    }
}
