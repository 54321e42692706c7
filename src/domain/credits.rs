//! Credits: a key's remaining uses, its refill rule, and the one spending rule every meter
//! (memory, the Redis script, the PostgreSQL statement) applies.
//!
//! A balance belongs to a period: `period` is the unix ms at which it was last set (by its
//! creator or a change) or refilled. A refill rule names the instants at which a new period
//! starts (UTC midnight each day, or UTC midnight of a day of each month, clamped to the
//! month's end); the first use in a new period finds `period` older than the period's start
//! and *sets* the balance to the rule's amount. Refills are lazy: nothing runs at midnight.

use time::{Date, Month, OffsetDateTime, Time};

/// The largest balance or refill amount: below 2^53, so the Redis script's numbers (Lua
/// doubles) are exact.
pub const MAX_CREDITS: i64 = 1_000_000_000_000_000;
/// The largest `cost` of one verification.
pub const MAX_COST: i64 = 1_000_000;

const DAY_MS: i64 = 86_400_000;

/// How often a balance is set back to the refill amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interval {
    /// At every UTC midnight.
    Daily,
    /// At UTC midnight of `day` each month (the month's last day when it is shorter).
    Monthly,
}

impl Interval {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Daily => "daily",
            Interval::Monthly => "monthly",
        }
    }

    /// From the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "daily" => Some(Interval::Daily),
            "monthly" => Some(Interval::Monthly),
            _ => None,
        }
    }
}

/// A refill rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refill {
    /// Daily or monthly.
    pub interval: Interval,
    /// The balance each period starts with.
    pub amount: i64,
    /// The day of the month (1-31) of a monthly refill; `None` for daily.
    pub day: Option<u8>,
}

impl Refill {
    /// The start (unix ms) of the period that holds `now_ms`.
    pub fn period_start(&self, now_ms: i64) -> i64 {
        match self.interval {
            Interval::Daily => now_ms.div_euclid(DAY_MS) * DAY_MS,
            Interval::Monthly => monthly_start(now_ms, self.day.unwrap_or(1)),
        }
    }
}

/// UTC midnight of `day` (clamped to the month's length) in the latest month where that
/// instant is not after `now_ms`.
fn monthly_start(now_ms: i64, day: u8) -> i64 {
    let Ok(now) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000) else {
        return i64::MIN;
    };
    let (y, m) = (now.year(), now.month());
    let this = refill_instant(y, m, day);
    if this <= now_ms {
        return this;
    }
    let (py, pm) = if m == Month::January {
        (y - 1, Month::December)
    } else {
        (y, m.previous())
    };
    refill_instant(py, pm, day)
}

fn refill_instant(year: i32, month: Month, day: u8) -> i64 {
    let last = month.length(year);
    Date::from_calendar_date(year, month, day.clamp(1, last))
        .map(|d| {
            (d.with_time(Time::MIDNIGHT)
                .assume_utc()
                .unix_timestamp_nanos()
                / 1_000_000) as i64
        })
        .unwrap_or(i64::MIN)
}

/// Credits as a caller sets them: a balance and maybe a refill rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreditsSetting {
    /// The balance to start with (0 to [`MAX_CREDITS`]).
    pub remaining: i64,
    /// The refill rule.
    pub refill: Option<Refill>,
}

/// A key's credits as stored: the settings' generation, the balance as of its last write,
/// and the refill rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyCredits {
    /// Bumped by every change of the settings; spends decided under an older generation are
    /// not applied to a newer one.
    pub gen: i64,
    /// The balance (storage's copy: spends are written in batches, before each answer).
    pub balance: Balance,
    /// The refill rule.
    pub refill: Option<Refill>,
}

/// A key's balance as its meter keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Balance {
    /// Uses left in this period.
    pub remaining: i64,
    /// The amount the balance was last set or refilled to (`credits.low` fires at 10 % of it).
    pub base: i64,
    /// Unix ms at which this balance was set or refilled.
    pub period: i64,
}

/// What one spend did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spent {
    /// Whether the use is admitted (and `cost` taken).
    pub admitted: bool,
    /// The balance after it.
    pub balance: Balance,
    /// This spend took the balance to 10 % of `base` or below (it was above).
    pub low: bool,
    /// This spend took the balance to zero.
    pub exhausted: bool,
}

/// The start of the period holding `now_ms`, or `i64::MIN` when there is no refill (no
/// stored period is older than that, so nothing refills).
pub fn current_period(refill: Option<&Refill>, now_ms: i64) -> i64 {
    refill.map_or(i64::MIN, |r| r.period_start(now_ms))
}

impl Balance {
    /// The balance at `now_ms`: refilled if a new period started since it was set.
    pub fn at(self, refill: Option<&Refill>, now_ms: i64) -> Balance {
        let cur = current_period(refill, now_ms);
        match refill {
            Some(r) if self.period < cur => Balance {
                remaining: r.amount,
                base: r.amount,
                period: cur,
            },
            _ => self,
        }
    }

    /// Spends `cost` at `now_ms`: refused (nothing taken) when the balance is zero or below
    /// `cost`. The Redis script (`credits_core.lua`) and the PostgreSQL statement apply this same
    /// rule; the property tests hold it against a model.
    pub fn spend(self, refill: Option<&Refill>, now_ms: i64, cost: i64) -> Spent {
        let before = self.at(refill, now_ms);
        if before.remaining == 0 || cost > before.remaining {
            return Spent {
                admitted: false,
                balance: before,
                low: false,
                exhausted: false,
            };
        }
        let after = Balance {
            remaining: before.remaining - cost,
            ..before
        };
        let (low, exhausted) = crossings(before.remaining, after.remaining, before.base);
        Spent {
            admitted: true,
            balance: after,
            low,
            exhausted,
        }
    }
}

/// Whether going from `before` to `after` crosses 10 % of `base` (from above) and zero.
pub fn crossings(before: i64, after: i64, base: i64) -> (bool, bool) {
    let threshold = base / 10;
    (
        before > threshold && after <= threshold,
        before > 0 && after == 0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(y: i32, m: Month, d: u8, h: u8) -> i64 {
        let t = Date::from_calendar_date(y, m, d)
            .and_then(|d| d.with_hms(h, 0, 0))
            .map(|t| t.assume_utc().unix_timestamp() * 1000);
        t.unwrap_or(0)
    }

    fn monthly(day: u8, amount: i64) -> Refill {
        Refill {
            interval: Interval::Monthly,
            amount,
            day: Some(day),
        }
    }

    #[test]
    fn a_refill_on_the_31st_comes_on_the_last_day_of_shorter_months() {
        let r = monthly(31, 5);
        assert_eq!(
            r.period_start(ms(2025, Month::February, 27, 12)),
            ms(2025, Month::January, 31, 0)
        );
        assert_eq!(
            r.period_start(ms(2025, Month::February, 28, 0)),
            ms(2025, Month::February, 28, 0)
        );
        assert_eq!(
            r.period_start(ms(2024, Month::February, 28, 23)),
            ms(2024, Month::January, 31, 0)
        );
        assert_eq!(
            r.period_start(ms(2024, Month::February, 29, 1)),
            ms(2024, Month::February, 29, 0)
        );
        assert_eq!(
            r.period_start(ms(2025, Month::April, 30, 0)),
            ms(2025, Month::April, 30, 0)
        );
        assert_eq!(
            r.period_start(ms(2025, Month::January, 2, 0)),
            ms(2024, Month::December, 31, 0)
        );
    }

    #[test]
    fn a_spent_balance_is_set_back_to_the_amount_at_the_next_period() {
        let r = Refill {
            interval: Interval::Daily,
            amount: 3,
            day: None,
        };
        let set_at = ms(2025, Month::March, 3, 10);
        let b = Balance {
            remaining: 2,
            base: 10,
            period: set_at,
        };
        let s = b.spend(Some(&r), set_at + 1, 2);
        assert!(s.admitted && s.exhausted && s.low);
        assert!(!s.balance.spend(Some(&r), set_at + 2, 1).admitted);
        // Next midnight: set (not added) to 3.
        let next = s.balance.spend(Some(&r), ms(2025, Month::March, 4, 0), 1);
        assert_eq!(next.balance.remaining, 2);
        assert_eq!(next.balance.base, 3);
    }

    /// The reference model: the balance day by day, refilled by walking the calendar one
    /// day at a time (no period arithmetic), spent by one subtraction.
    struct Model {
        remaining: i64,
        /// The last calendar day (days since the epoch) whose refill has been applied.
        last_day: i64,
    }

    fn refills_on(r: &Refill, day: i64) -> bool {
        match r.interval {
            Interval::Daily => true,
            Interval::Monthly => {
                let Ok(d) = OffsetDateTime::from_unix_timestamp(day * 86_400) else {
                    return false;
                };
                let want = r.day.unwrap_or(1);
                let last = d.month().length(d.year());
                d.day() == want.min(last)
            }
        }
    }

    impl Model {
        fn spend(&mut self, r: &Refill, now_ms: i64, cost: i64) -> bool {
            let today = now_ms.div_euclid(DAY_MS);
            for day in (self.last_day + 1)..=today {
                if refills_on(r, day) {
                    self.remaining = r.amount;
                }
            }
            self.last_day = self.last_day.max(today);
            if self.remaining == 0 || cost > self.remaining {
                return false;
            }
            self.remaining -= cost;
            true
        }
    }

    proptest! {
        #[test]
        fn spending_matches_the_day_by_day_model_and_never_goes_below_zero(
            start in 0i64..4_000_000_000_000,
            initial in 0i64..50,
            daily in any::<bool>(),
            day in 1u8..=31,
            amount in 0i64..50,
            steps in proptest::collection::vec((0i64..3 * DAY_MS, 0i64..8), 1..60),
        ) {
            let r = if daily {
                Refill { interval: Interval::Daily, amount, day: None }
            } else {
                monthly(day, amount)
            };
            let mut b = Balance { remaining: initial, base: initial, period: start };
            let mut model = Model { remaining: initial, last_day: start.div_euclid(DAY_MS) };
            let mut now = start;
            let (mut lows, mut exhausts, mut periods) = (0, 0, 1);
            for (advance, cost) in steps {
                now += advance;
                let before = b.period;
                let s = b.spend(Some(&r), now, cost);
                if s.balance.period != before {
                    periods += 1;
                }
                prop_assert_eq!(s.admitted, model.spend(&r, now, cost));
                prop_assert_eq!(s.balance.remaining, model.remaining);
                prop_assert!(s.balance.remaining >= 0);
                lows += i32::from(s.low);
                exhausts += i32::from(s.exhausted);
                b = s.balance;
            }
            // Each alert at most once per period.
            prop_assert!(lows <= periods && exhausts <= periods);
        }

        #[test]
        fn without_a_refill_the_balance_only_falls_and_admits_exactly_what_it_held(
            initial in 0i64..200,
            costs in proptest::collection::vec(0i64..5, 0..300),
        ) {
            let mut b = Balance { remaining: initial, base: initial, period: 1 };
            let mut admitted_cost = 0;
            for c in costs {
                let s = b.spend(None, 10, c);
                if s.admitted { admitted_cost += c; }
                prop_assert!(s.balance.remaining <= b.remaining && s.balance.remaining >= 0);
                b = s.balance;
            }
            prop_assert_eq!(initial - admitted_cost, b.remaining);
        }
    }
}
