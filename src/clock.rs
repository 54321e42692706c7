use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// A source of the current time in unix milliseconds, injectable for tests.
#[derive(Clone)]
pub enum Clock {
    /// The system clock.
    System,
    /// A manually driven clock (tests).
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// Milliseconds since the unix epoch.
    pub fn now_ms(&self) -> i64 {
        match self {
            // Whole seconds and the millisecond part, with no 128-bit division (this runs
            // several times per request).
            Clock::System => match std::time::UNIX_EPOCH.elapsed() {
                Ok(d) => d.as_secs() as i64 * 1000 + i64::from(d.subsec_millis()),
                Err(before) => {
                    let d = before.duration();
                    -(d.as_secs() as i64 * 1000 + i64::from(d.subsec_millis()))
                }
            },
            Clock::Manual(t) => t.load(Ordering::Relaxed),
        }
    }

    /// Seconds since the unix epoch.
    pub fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// A manual clock starting at `ms`.
    pub fn manual(ms: i64) -> Self {
        Clock::Manual(Arc::new(AtomicI64::new(ms)))
    }

    /// Moves a manual clock forward; a no-op on the system clock.
    pub fn advance_ms(&self, by: i64) {
        if let Clock::Manual(t) = self {
            t.fetch_add(by, Ordering::Relaxed);
        }
    }
}

/// Formats unix milliseconds as RFC 3339 with microseconds, as GoTrue does.
pub fn rfc3339(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    let dt = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    dt.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}
