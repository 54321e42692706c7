//! Property tests of the counters against a reference model, with time given explicitly
//! (the injected clock): the ledger is the truth, and the counters must never admit more
//! than the budget nor count a settle twice.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::counters::{Memory, Reserved, Target};
use super::{cost, Used};
use crate::config::ModelPrice;

#[test]
fn cost_rounds_each_side_up_and_never_overflows() {
    let p = ModelPrice {
        input_per_mtok: 150_000,
        output_per_mtok: 600_000,
    };
    let c = |prompt, completion| cost(&p, Used { prompt, completion });
    assert_eq!(c(0, 0), 0);
    assert_eq!(c(1, 0), 1); // 0.15 micro-units rounds up to 1
    assert_eq!(c(1_000_000, 1_000_000), 750_000);
    assert_eq!(c(10, 10), 2 + 6);
    let dear = ModelPrice {
        input_per_mtok: i64::MAX,
        output_per_mtok: i64::MAX,
    };
    assert_eq!(
        cost(
            &dear,
            Used {
                prompt: u64::MAX,
                completion: u64::MAX
            }
        ),
        i64::MAX
    );
}

#[derive(Clone, Debug)]
enum Op {
    /// Reserve this much (one chat).
    Reserve(i64),
    /// Settle the n-th live lease at this fraction (0-100 %) of its reservation.
    Settle(usize, i64),
    /// Settle an already settled lease again (a replay).
    Replay(usize),
    /// The instance holding the n-th live lease dies before settling anything.
    Die(usize),
    /// The instance holding the n-th live lease dies after its ledger row committed but
    /// before the counter was told.
    DieAfterCommit(usize, i64),
    /// Time passes.
    Advance(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1i64..400).prop_map(Op::Reserve),
        3 => (0usize..8, 0i64..=100).prop_map(|(i, f)| Op::Settle(i, f)),
        1 => (0usize..8).prop_map(Op::Replay),
        1 => (0usize..8).prop_map(Op::Die),
        1 => (0usize..8, 0i64..=100).prop_map(|(i, f)| Op::DieAfterCommit(i, f)),
        1 => (1i64..40_000).prop_map(Op::Advance),
    ]
}

const LEASE_MS: i64 = 30_000;

/// The reference: what the ledger holds, and which leases are live (reserved, unsettled,
/// their instance alive, not expired).
#[derive(Default)]
struct Model {
    ledger: BTreeMap<String, i64>,
    /// lease -> (amount, expires)
    live: HashMap<String, (i64, i64)>,
    /// Leases whose instance died: (amount, expires); they hold room until they expire.
    dead: HashMap<String, (i64, i64)>,
    settled: Vec<String>,
    /// Leases whose ledger row committed but whose counter was never told, until a
    /// reservation after their expiry recounts the counter: (lease, expires).
    unsynced: Vec<(String, i64, i64)>,
}

impl Model {
    fn spent(&self) -> i64 {
        self.ledger.values().sum()
    }
    fn held(&self, now: i64) -> i64 {
        self.live
            .values()
            .chain(self.dead.values())
            .filter(|(_, e)| *e > now)
            .map(|(a, _)| a)
            .sum()
    }
}

fn target(limit: i64) -> Target {
    Target {
        counter: "org:org_1:total:0".into(),
        limit: Some(limit),
        ttl_ms: 86_400_000,
    }
}

fn run(limit: i64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mem = Memory::default();
    let t = target(limit);
    let mut m = Model::default();
    let mut now = 1_000_000i64;
    let mut n = 0;
    for op in ops {
        match op {
            Op::Reserve(amount) => {
                n += 1;
                m.unsynced.retain(|(_, e, _)| *e > now);
                let lease = format!("spn_{n}");
                let mut decided = None;
                for _ in 0..3 {
                    match mem.reserve(
                        std::slice::from_ref(&t),
                        &lease,
                        amount,
                        now,
                        now + LEASE_MS,
                    ) {
                        Reserved::NeedSeed(_) => mem.seed(&[(&t, m.spent())], now),
                        d => {
                            decided = Some(d);
                            break;
                        }
                    }
                }
                match decided {
                    Some(Reserved::Done) => {
                        // Admitted only with room for the worst case of everything in flight.
                        prop_assert!(m.spent() + m.held(now) + amount <= limit);
                        m.live.insert(lease, (amount, now + LEASE_MS));
                    }
                    Some(Reserved::Exhausted(_, spent)) => {
                        prop_assert!(spent <= m.spent());
                        // Refused only without room, give or take the cost of a dead
                        // instance's settle that committed while its lease still holds the
                        // whole reservation (counted twice until the lease ends: conservative).
                        let pending: i64 = m.unsynced.iter().map(|(_, _, c)| c).sum();
                        prop_assert!(m.spent() + m.held(now) + amount + pending > limit);
                    }
                    other => prop_assert!(false, "undecided: {:?}", other),
                }
            }
            Op::Settle(i, fraction) => {
                let Some(lease) = nth(&m.live, i) else {
                    continue;
                };
                let (amount, expires) = m.live[&lease];
                if expires <= now {
                    continue; // a live chat renews its lease; an expired one is a dead one
                }
                m.live.remove(&lease);
                let c = amount * fraction / 100;
                m.ledger.entry(lease.clone()).or_insert(c);
                mem.settle(&[(&t.counter, &t.counter)], &lease, c);
                m.settled.push(lease);
            }
            Op::Replay(i) => {
                if m.settled.is_empty() {
                    continue;
                }
                let lease = m.settled[i % m.settled.len()].clone();
                let c = m.ledger[&lease];
                // The ledger ignores a second row with the same id; the counter a second settle.
                mem.settle(&[(&t.counter, &t.counter)], &lease, c);
            }
            Op::Die(i) => {
                let Some(lease) = nth(&m.live, i) else {
                    continue;
                };
                let v = m.live.remove(&lease).unwrap_or_default();
                m.dead.insert(lease, v);
            }
            Op::DieAfterCommit(i, fraction) => {
                let Some(lease) = nth(&m.live, i) else {
                    continue;
                };
                let v = m.live.remove(&lease).unwrap_or_default();
                let c = v.0 * fraction / 100;
                m.ledger.insert(lease.clone(), c);
                // Its reservation still holds room until it expires (then it is recounted).
                m.dead.insert(lease.clone(), (v.0 - c, v.1));
                m.unsynced.push((lease, v.1, c));
            }
            Op::Advance(ms) => {
                now += ms;
                m.live.retain(|_, (_, e)| *e > now);
            }
        }
        // Spend never exceeds the budget (every cost here is within its reservation)...
        prop_assert!(m.spent() <= limit, "spent {} > {}", m.spent(), limit);
        // ...and the counter never counts more than the ledger holds (no double settle).
        if let Some((Some(spent), _)) = mem.peek(&t.counter) {
            prop_assert!(
                spent <= m.spent(),
                "counter {} > ledger {}",
                spent,
                m.spent()
            );
            if m.unsynced.is_empty() {
                prop_assert_eq!(spent, m.spent());
            }
        }
    }
    Ok(())
}

fn nth(live: &HashMap<String, (i64, i64)>, i: usize) -> Option<String> {
    let mut keys: Vec<&String> = live.keys().collect();
    keys.sort();
    (!keys.is_empty()).then(|| keys[i % keys.len()].clone())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn concurrent_spend_never_exceeds_a_budget_and_settles_never_double_count(
        limit in 100i64..2_000,
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        run(limit, ops)?;
    }
}

#[test]
fn a_dead_instances_reservation_is_released_when_its_lease_ends() {
    let mem = Memory::default();
    let t = target(100);
    let now = 0;
    mem.seed(&[(&t, 0)], now);
    let r =
        |lease: &str, at: i64| mem.reserve(std::slice::from_ref(&t), lease, 80, at, at + LEASE_MS);
    assert_eq!(r("a", now), Reserved::Done);
    // The holder died: the room stays taken until the lease ends...
    assert_eq!(r("b", now + LEASE_MS - 1), Reserved::Exhausted(0, 0));
    // ...then the counter is recounted from the ledger and the room is free again.
    assert_eq!(r("b", now + LEASE_MS), Reserved::NeedSeed(vec![0]));
    mem.seed(&[(&t, 0)], now + LEASE_MS);
    assert_eq!(r("b", now + LEASE_MS), Reserved::Done);
}
