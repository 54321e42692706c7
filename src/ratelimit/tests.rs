use proptest::prelude::*;

use super::*;

fn window(policy: &'static str, limit: u32, secs: u32) -> Window {
    Window {
        policy,
        subject: "s".into(),
        rate: Rate::new(limit, secs),
        cost: 1,
    }
}

fn request(windows: Vec<Window>) -> Request {
    Request {
        tag: "t".into(),
        windows,
        fail_closed: false,
    }
}

/// The reference model: a leaky bucket per window holding `level` (in 1/limit ms) that
/// drains one unit per 1/limit ms; a request adds one emission interval if it fits.
/// It is the meter form of GCRA, written independently of `gcra`.
#[derive(Clone)]
struct Bucket {
    limit: i128,
    window_ms: i128,
    level: i128,
    last: Option<i128>,
}

impl Bucket {
    fn new(rate: Rate) -> Self {
        Self {
            limit: rate.limit.into(),
            window_ms: i128::from(rate.window_seconds) * 1000,
            level: 0,
            last: None,
        }
    }
    fn drained(&self, now: i128) -> i128 {
        match self.last {
            Some(last) => (self.level - (now - last) * self.limit).max(0),
            None => 0,
        }
    }
    fn fits(&self, now: i128) -> bool {
        self.drained(now) + self.window_ms <= self.window_ms * self.limit
    }
    fn take(&mut self, now: i128) {
        self.level = self.drained(now) + self.window_ms;
        self.last = Some(now);
    }
}

fn model_admits(buckets: &mut [Bucket], now: i128) -> bool {
    let ok = buckets.iter().all(|b| b.fits(now));
    if ok {
        for b in buckets.iter_mut() {
            b.take(now);
        }
    }
    ok
}

#[test]
fn parses_rates_with_units() {
    assert_eq!(Rate::parse("20/60s"), Ok(Rate::new(20, 60)));
    assert_eq!(Rate::parse("150/5m"), Ok(Rate::new(150, 300)));
    assert_eq!(Rate::parse("10000/1d"), Ok(Rate::new(10000, 86400)));
    assert_eq!(Rate::parse("5/60"), Ok(Rate::new(5, 60)));
    assert!(Rate::parse("0/60s").is_err());
    assert!(Rate::parse("5/0s").is_err());
    assert!(Rate::parse("5/31d").is_err());
    assert!(Rate::parse("abc").is_err());
    assert_eq!(
        Rates::parse("60/60s, 1000/1h,10000/1d"),
        Ok(Rates(vec![
            Rate::new(60, 60),
            Rate::new(1000, 3600),
            Rate::new(10000, 86400)
        ]))
    );
    assert!(Rates::parse("60/60s,100/1m").is_err(), "same window twice");
    assert_eq!(
        Rates::parse("60/60s,1000/1h").map(|r| r.to_string()),
        Ok("60/60s,1000/3600s".into())
    );
}

#[test]
fn n_requests_at_one_instant_pass_and_the_next_waits_exactly() {
    let l = MemoryLimiter::new(1000);
    let req = request(vec![window("p", 5, 60)]);
    let now = 1_000_000;
    for i in 0..5 {
        let d = l.check(&req, now);
        assert!(d.allowed, "request {i}");
        assert_eq!(d.windows[0].remaining, 4 - i);
    }
    let d = l.check(&req, now);
    assert!(!d.allowed);
    assert_eq!(d.retry_after(), 12);
    assert!(!l.check(&req, now + 11_000).allowed, "one second early");
    assert!(!l.check(&req, now + 11_999).allowed, "a millisecond early");
    let d = l.check(&req, now + 12_000);
    assert!(d.allowed, "at Retry-After");
    assert_eq!(d.windows[0].remaining, 0);
}

#[test]
fn emission_intervals_that_do_not_divide_evenly_stay_exact() {
    // 600 per second: an interval of 5/3 ms. A floored interval would admit 1000.
    let l = MemoryLimiter::new(1000);
    let req = request(vec![window("p", 600, 1)]);
    let admitted = (0..1000).filter(|_| l.check(&req, 5_000).allowed).count();
    assert_eq!(admitted, 600);
    // 7 per minute: the eighth waits 60/7 s, rounded up to 9 s.
    let l = MemoryLimiter::new(1000);
    let req = request(vec![window("q", 7, 60)]);
    for _ in 0..7 {
        assert!(l.check(&req, 0).allowed);
    }
    assert_eq!(l.check(&req, 0).retry_after(), 9);
    assert!(!l.check(&req, 8_571).allowed);
    assert!(l.check(&req, 8_572).allowed);
}

#[test]
fn a_denial_by_one_window_consumes_nothing_in_the_others() {
    let l = MemoryLimiter::new(1000);
    let req = request(vec![window("minute", 2, 60), window("day", 3, 86_400)]);
    assert!(l.check(&req, 0).allowed);
    assert!(l.check(&req, 0).allowed);
    for _ in 0..100 {
        let d = l.check(&req, 0);
        assert!(!d.allowed);
        assert_eq!(d.binding().map(|w| w.policy), Some("minute"));
        assert_eq!(d.windows[1].remaining, 1, "the day window is untouched");
    }
    // Next minute: the day window still has exactly one left.
    assert!(l.check(&req, 60_000).allowed);
    let d = l.check(&req, 60_000);
    assert!(!d.allowed);
    assert_eq!(d.binding().map(|w| w.policy), Some("day"));
}

#[test]
fn a_peek_tells_the_decision_and_spends_nothing() {
    let l = MemoryLimiter::new(1000);
    let req = request(vec![window("failures", 3, 60)]);
    for _ in 0..10 {
        let d = l.peek(&req, 0);
        assert!(d.allowed);
        assert_eq!(d.windows[0].remaining, 2, "as a check would leave it");
    }
    assert!(l.is_empty(), "a peek stores no counter");
    for _ in 0..3 {
        assert!(l.check(&req, 0).allowed);
    }
    let peeked = l.peek(&req, 0);
    assert!(!peeked.allowed);
    assert_eq!(
        peeked,
        l.check(&req, 0),
        "a refusing peek is the refusing check"
    );
    assert_eq!(peeked.retry_after(), 20);
    assert!(!l.peek(&req, 19_999).allowed);
    assert!(l.peek(&req, 20_000).allowed);
    // The peek at 20 s did not take the slot it saw.
    assert!(l.check(&req, 20_000).allowed);
    assert!(!l.peek(&req, 20_000).allowed);
}

#[test]
fn idle_counters_are_forgotten_and_memory_stays_bounded() {
    let l = MemoryLimiter::new(10_000);
    for i in 0..50_000u32 {
        let mut req = request(vec![window("ip", 5, 60)]);
        req.tag = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        l.check(&req, 0);
    }
    assert!(l.len() <= 10_000, "held {}", l.len());
}

#[test]
fn a_large_organization_keeps_the_counters_of_every_key_in_use() {
    // Every window of one organization's keys shares the organization's tag, so all of them
    // sit behind one lock. 5,000 keys in use fit a limiter of 20,000 counters: none of them
    // is forgotten, and each key's second request in the minute is refused.
    let l = MemoryLimiter::new(20_000);
    let key = |i: u32| {
        let mut req = request(vec![window("api_key", 1, 60)]);
        req.tag = "org:big".into();
        req.windows[0].subject = format!("key_{i}");
        req
    };
    for i in 0..5_000 {
        assert!(l.check(&key(i), 0).allowed);
    }
    assert_eq!(l.len(), 5_000);
    for i in 0..5_000 {
        assert!(!l.check(&key(i), 1_000).allowed, "key {i} was forgotten");
    }
}

#[test]
fn one_tag_alone_cannot_grow_past_the_capacity() {
    let l = MemoryLimiter::new(10_000);
    for i in 0..50_000u32 {
        let mut req = request(vec![window("api_key", 5, 60)]);
        req.tag = "org:big".into();
        req.windows[0].subject = format!("key_{i}");
        l.check(&req, 0);
    }
    // A sweep forgets exactly down to 7/8 of the capacity, even when every counter ends in
    // the same millisecond.
    assert!((8_750..=10_000).contains(&l.len()), "held {}", l.len());
}

proptest! {
    #[test]
    fn gcra_matches_the_reference_model(
        limit in 1u32..50,
        secs in 1u32..120,
        steps in proptest::collection::vec(0i64..5_000, 1..300),
    ) {
        let rate = Rate::new(limit, secs);
        let mut bucket = Bucket::new(rate);
        let mut tat = i64::MIN;
        let mut now = 1_700_000_000_000i64;
        for dt in steps {
            now += dt;
            let (state, next) = gcra("p", rate, 1, tat, now);
            let expected = model_admits(std::slice::from_mut(&mut bucket), now.into());
            prop_assert_eq!(state.retry_after == 0, expected);
            if expected {
                tat = next;
            } else {
                // Retry-After is exact: denied a second before it, admitted at it.
                let wait = state.retry_after as i64 * 1000;
                prop_assert!(bucket.fits(i128::from(now + wait)));
                prop_assert!(wait == 1000 || !bucket.fits(i128::from(now + wait - 1000)));
            }
        }
    }

    #[test]
    fn multi_window_decisions_match_the_model(
        a in 1u32..10, b in 10u32..40,
        steps in proptest::collection::vec(0i64..3_000, 1..300),
    ) {
        let windows = vec![window("short", a, 10), window("long", b, 120)];
        let mut buckets: Vec<Bucket> = windows.iter().map(|w| Bucket::new(w.rate)).collect();
        let mut tats = vec![i64::MIN; 2];
        let mut now = 0i64;
        for dt in steps {
            now += dt;
            let d = decide(&windows, &mut tats, now);
            prop_assert_eq!(d.allowed, model_admits(&mut buckets, now.into()));
        }
    }

    #[test]
    fn a_backwards_clock_step_never_loosens_a_limit(
        limit in 1u32..20,
        times in proptest::collection::vec(-120_000i64..120_000, 1..200),
    ) {
        // However the clock jumps around, no more requests are admitted than with a clock
        // that stood at the latest time seen.
        let l = MemoryLimiter::new(100);
        let req = request(vec![window("p", limit, 60)]);
        let mut frozen = Bucket::new(Rate::new(limit, 60));
        let mut latest = i64::MIN;
        let base = 10_000_000i64;
        for t in times {
            latest = latest.max(base + t);
            let admitted = l.check(&req, base + t).allowed;
            let model = model_admits(std::slice::from_mut(&mut frozen), latest.into());
            prop_assert!(!admitted || model, "admitted where the monotonic model denies");
        }
    }
}

proptest! {
    #[test]
    fn a_cost_of_c_is_c_requests_in_one_instant(
        limit in 1u32..200,
        secs in 1u32..3600,
        cost in 1u32..200,
        start in 0i64..10_000_000,
        gap in 0i64..100_000,
    ) {
        let rate = Rate::new(limit, secs);
        let now = 1_700_000_000_000i64 + start;
        // Some earlier traffic, then the weighted request against c single ones.
        let (_, tat0) = gcra("p", rate, 1, i64::MIN, now - gap);
        let (weighted, w_tat) = gcra("p", rate, cost, tat0, now);
        let mut tat = tat0;
        let mut all = true;
        for _ in 0..cost {
            let (s, next) = gcra("p", rate, 1, tat, now);
            if s.retry_after != 0 {
                all = false;
                break;
            }
            tat = next;
        }
        prop_assert_eq!(weighted.retry_after == 0, all);
        if all {
            prop_assert_eq!(w_tat, tat);
        }
    }

    #[test]
    fn a_settle_leaves_what_the_real_cost_would_have(
        limit in 1u32..1000,
        reserved in 1u32..1000,
        used in 0u32..2000,
        gap in 0i64..60_000,
    ) {
        let reserved = reserved.min(limit);
        let rate = Rate::new(limit, 60);
        let now = 1_700_000_000_000i64;
        let (_, reserved_tat) = gcra("p", rate, reserved, i64::MIN, now);
        let settled = adjusted(rate, i64::from(used) - i64::from(reserved), reserved_tat, now + gap);
        // What charging `used` at the reservation's time would have left: a refund gives
        // exactly that; a charge beyond the reservation never leaves more room than it (it
        // counts from now when the window had refilled meanwhile, as a request now would).
        let exact = adjusted(rate, i64::from(used), i64::MIN, now);
        let fresh = (now + gap) * i64::from(limit);
        if used <= reserved {
            prop_assert_eq!(settled.max(fresh), exact.max(fresh));
        } else {
            prop_assert!(settled >= exact);
        }
    }
}

#[test]
fn a_settle_in_memory_gives_back_what_was_not_used() {
    let l = MemoryLimiter::new(100);
    let mut w = window("tokens", 100, 60);
    w.cost = 80;
    let req = request(vec![w]);
    let now = 1_700_000_000_000i64;
    assert!(l.check(&req, now).allowed);
    // 20 left: a second reservation of 80 waits.
    assert!(!l.check(&req, now).allowed);
    // Only 10 were used: 70 come back, and 80 fit again.
    l.adjust(&req, &[-70], now);
    let d = l.check(&req, now);
    assert!(d.allowed);
    assert_eq!(d.windows[0].remaining, 10);
    // A charge beyond the reservation is taken whatever the window holds.
    l.adjust(&req, &[30], now);
    let mut one = req.clone();
    one.windows[0].cost = 1;
    assert!(!l.check(&one, now).allowed);
}
