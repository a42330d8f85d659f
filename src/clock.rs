//! The wall clock, read at the edges only: a RADIUS request's arrival, an HTTP request, a CLI
//! command's start, a background task's tick. Everything that decides (locks, replays, expiry)
//! is given that time, so a decision can be made — and tested — at any fixed time.

/// Seconds since the Unix epoch.
pub type UnixTime = i64;

/// Now, as a [`UnixTime`].
pub fn now() -> UnixTime {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
