//! Session rules, identifiers, tokens, JWTs and signing keys. Knows nothing of HTTP or SQL.

pub mod crypto;
pub mod ids;
pub mod jwt;
pub mod keys;
pub mod rbac;
pub mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Unix seconds, injected so that tests move time instead of waiting for it.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    pub fn system() -> Self {
        Self(Arc::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        }))
    }

    /// A clock that only moves when told to; returns the handle that moves it.
    pub fn manual(start: i64) -> (Self, Arc<AtomicI64>) {
        let now = Arc::new(AtomicI64::new(start));
        let read = now.clone();
        (Self(Arc::new(move || read.load(Ordering::SeqCst))), now)
    }

    pub fn now(&self) -> i64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

/// RFC 3339 UTC with second precision, e.g. `2026-11-25T20:14:10Z`.
pub fn rfc3339(unix: i64) -> String {
    // Civil-from-days (H. Hinnant); avoids a formatting dependency on the hot path.
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (hour, minute, second) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if !(0..=9999).contains(&year) {
        return format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z");
    }
    // Digits written by hand: several timestamps go out with every authenticate, and
    // `format!` cost more than the rest of building the claims.
    let mut out = *b"0000-00-00T00:00:00Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, hour);
    put(14, 2, minute);
    put(17, 2, second);
    out.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_637_650), "2026-11-25T20:14:10Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_800), "10000-01-01T00:00:00Z");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let (clock, handle) = Clock::manual(100);
        assert_eq!(clock.now(), 100);
        handle.fetch_add(60, Ordering::SeqCst);
        assert_eq!(clock.now(), 160);
    }
}
