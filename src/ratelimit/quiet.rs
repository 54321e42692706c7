//! A warning said at most once per interval: an outage of Redis would otherwise log one
//! line per refused request, drowning everything else while it lasts.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Decides when a repeated warning is said again; cheap to share.
#[derive(Debug)]
pub struct Quiet {
    every_ms: i64,
    /// Unix ms of the last time it was said (`i64::MIN`: never).
    last: AtomicI64,
    /// Occurrences not said since then.
    held: AtomicU64,
}

impl Quiet {
    /// Says a warning at most once every `every_ms`.
    pub const fn new(every_ms: i64) -> Self {
        Self {
            every_ms,
            last: AtomicI64::new(i64::MIN),
            held: AtomicU64::new(0),
        }
    }

    /// Whether to say the warning at `now_ms`: `Some(n)` with the `n` occurrences kept
    /// quiet since it was last said, or `None` to keep this one quiet too.
    pub fn due(&self, now_ms: i64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        if last != i64::MIN && now_ms.saturating_sub(last) < self.every_ms {
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // One caller wins the turn; the others count as held.
        match self
            .last
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => Some(self.held.swap(0, Ordering::Relaxed)),
            Err(_) => {
                self.held.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// Unix ms now, for [`Quiet::due`] where no injected clock is at hand.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_is_said_once_per_interval_and_counts_the_rest() {
        let q = Quiet::new(10_000);
        assert_eq!(q.due(1_000), Some(0));
        for t in [1_001, 5_000, 10_999] {
            assert_eq!(q.due(t), None);
        }
        assert_eq!(q.due(11_000), Some(3));
        assert_eq!(q.due(11_001), None);
        assert_eq!(q.due(30_000), Some(1));
    }
}
