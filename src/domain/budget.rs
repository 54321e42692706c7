//! Money budgets: an amount of micro-units of the configured currency per period, and the
//! periods' boundaries (UTC).

use serde::{Deserialize, Serialize};

const DAY_MS: i64 = 86_400_000;

/// How long a budget's spend accumulates before it starts again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// A UTC day.
    Day,
    /// An ISO week: from Monday 00:00 UTC.
    Week,
    /// A calendar month (UTC).
    Month,
    /// Never resets.
    Total,
}

impl Period {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Total => "total",
        }
    }

    /// The start (unix ms) of the period holding `now_ms`; 0 for `total`.
    pub fn start(self, now_ms: i64) -> i64 {
        let day = now_ms.div_euclid(DAY_MS);
        match self {
            Period::Day => day * DAY_MS,
            // 1970-01-01 was a Thursday: day 0 is 3 days after a Monday.
            Period::Week => (day - (day + 3).rem_euclid(7)) * DAY_MS,
            Period::Month => {
                let (y, m, _) = civil_from_days(day);
                days_from_civil(y, m, 1) * DAY_MS
            }
            Period::Total => 0,
        }
    }

    /// When the period holding `now_ms` ends (the next one starts); `None` for `total`.
    pub fn resets_at(self, now_ms: i64) -> Option<i64> {
        let start = self.start(now_ms);
        match self {
            Period::Day => Some(start + DAY_MS),
            Period::Week => Some(start + 7 * DAY_MS),
            Period::Month => {
                let (y, m, _) = civil_from_days(start.div_euclid(DAY_MS));
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                Some(days_from_civil(y, m, 1) * DAY_MS)
            }
            Period::Total => None,
        }
    }
}

/// A spend budget: at most `amount` micro-units per `period`. A `soft` budget is never
/// enforced; it only raises `budget.threshold`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Micro-units of the configured `currency` (1 USD = 1,000,000).
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: i64,
    /// `day`, `week` (ISO, from Monday UTC), `month` or `total`.
    pub period: Period,
    /// Alert only, never refuse (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub soft: bool,
}

/// The largest budget amount (10⁹ currency units).
pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

/// Checks a list of budgets: 1 to 4, amounts 1..=10¹⁵, at most one per period.
pub fn check_budgets(list: &[Budget]) -> Result<(), String> {
    if list.is_empty() || list.len() > 4 {
        return Err("must hold 1 to 4 budgets (or be null for none)".into());
    }
    for (i, b) in list.iter().enumerate() {
        if !(1..=MAX_AMOUNT).contains(&b.amount) {
            return Err(format!(
                "amount must be between 1 and {MAX_AMOUNT} micro-units"
            ));
        }
        if list[..i].iter().any(|o| o.period == b.period) {
            return Err(format!(
                "at most one budget per period ({})",
                b.period.as_str()
            ));
        }
    }
    Ok(())
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`; hand-written because `time` needs a fallible round trip for this).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a civil date (the inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-01-31T15:00:00Z, a Saturday.
    const T: i64 = 1_769_871_600_000;

    #[test]
    fn periods_start_and_reset_on_utc_boundaries() {
        assert_eq!(Period::Day.start(T), 1_769_817_600_000); // 2026-01-31
        assert_eq!(Period::Day.resets_at(T), Some(1_769_904_000_000));
        assert_eq!(Period::Week.start(T), 1_769_385_600_000); // Monday 2026-01-26
        assert_eq!(Period::Week.resets_at(T), Some(1_769_990_400_000)); // Monday 2026-02-02
        assert_eq!(Period::Month.start(T), 1_767_225_600_000); // 2026-01-01
        assert_eq!(Period::Month.resets_at(T), Some(1_769_904_000_000)); // 2026-02-01
        assert_eq!(Period::Total.start(T), 0);
        assert_eq!(Period::Total.resets_at(T), None);
        // December rolls over to January of the next year.
        let dec = 1_767_139_200_000; // 2025-12-31
        assert_eq!(Period::Month.resets_at(dec), Some(1_767_225_600_000));
    }

    #[test]
    fn civil_dates_round_trip() {
        for day in [-1000, 0, 59, 60, 11_016, 20_454, 40_000] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn budget_lists_are_checked() {
        let b = |amount, period| Budget {
            amount,
            period,
            soft: false,
        };
        assert!(check_budgets(&[b(1, Period::Day), b(5, Period::Month)]).is_ok());
        assert!(check_budgets(&[]).is_err());
        assert!(check_budgets(&[b(0, Period::Day)]).is_err());
        assert!(check_budgets(&[b(1, Period::Day), b(2, Period::Day)]).is_err());
    }
}
