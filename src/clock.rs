//! The wall clock, read at the edges only: a RADIUS request's arrival, an HTTP request, a CLI
//! command's start, a background task's tick. Everything that decides (locks, replays, expiry)
//! is given that time, so a decision can be made — and tested — at any fixed time.

/// Seconds since the Unix epoch.
pub type UnixTime = i64;

/// Now, as a [`UnixTime`].
pub fn now() -> UnixTime {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// `2026-12-06 11:56 UTC`: the minute of a Unix time, as pages and listings show it.
pub fn format_utc(t: UnixTime) -> String {
    let days = t.div_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm), so no date crate is needed.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let secs = t.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", secs / 3600, (secs % 3600) / 60)
}
