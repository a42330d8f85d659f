//! Which user and which TOTP time step the next login of a flow uses.
//!
//! A server with replay protection (radmfa) refuses a step a user has already used, and one
//! older than the last used; one without it (FreeRADIUS's `rlm_totp`) accepts any repeat but
//! only the current step. Both refuse a code whose step has ended by the time they check it, so
//! a code is not sent when its step ends within the margin: a wait the report counts, rather
//! than a reject the server would be blamed for.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// The time steps the codes are taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPolicy {
    /// Now-1, now and now+1, oldest first: all a TOTP window of ±1 accepts.
    Window,
    /// The current step only (`rlm_totp` looks neither back nor ahead).
    Current,
}

#[derive(Debug, Clone)]
pub struct StepOptions {
    pub policy: StepPolicy,
    /// Let a user use a step again: for servers without replay protection. Users are taken in
    /// turn, so a small seeds file still gives any rate.
    pub reuse: bool,
    /// Codes are not sent when their step ends within this plus 1.25 × the mean login latency
    /// so far: a login checked after the step ended would be refused through the loader's fault.
    pub margin: Duration,
    pub period: u64,
}

/// What the next login uses, or how long to wait for one.
#[derive(Debug, PartialEq)]
pub enum Claim {
    Login {
        user: usize,
        step: u64,
    },
    /// Every user has used every step the server accepts now.
    Starved(Duration),
    /// The step ends too soon to use it (the current-step policy).
    TooLate(Duration),
}

/// The next step each user may use, shared by the workers: claimed atomically, so no two
/// logins send one code.
pub struct UserSteps {
    next: Vec<AtomicU64>,
    cursor: AtomicUsize,
    options: StepOptions,
    /// Mean login latency in microseconds (an exponential moving average).
    latency_us: AtomicU64,
}

impl UserSteps {
    pub fn new(n: usize, options: StepOptions) -> Self {
        Self { next: (0..n).map(|_| AtomicU64::new(0)).collect(), cursor: AtomicUsize::new(0), options, latency_us: AtomicU64::new(0) }
    }

    pub fn record_latency(&self, latency: Duration) {
        let sample = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        let _ = self
            .latency_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| Some(if old == 0 { sample } else { old - old / 8 + sample / 8 }));
    }

    fn margin(&self) -> Duration {
        let mean = Duration::from_micros(self.latency_us.load(Ordering::Relaxed));
        self.options.margin + mean.mul_f64(1.25)
    }

    /// A user and step for a login at `unix_time` (seconds, with fraction).
    pub fn claim(&self, unix_time: f64) -> Claim {
        let period = self.options.period.max(1);
        let now = (unix_time.max(0.0) as u64) / period;
        let left = Duration::from_secs_f64((((now + 1) * period) as f64 - unix_time).max(0.0));
        let fresh_enough = left > self.margin();
        let (lowest, highest) = match (self.options.policy, fresh_enough) {
            (StepPolicy::Window, true) => (now.saturating_sub(1), now + 1),
            (StepPolicy::Window, false) => (now, now + 1),
            (StepPolicy::Current, true) => (now, now),
            // A little past the flip, so the server's clock has flipped too.
            (StepPolicy::Current, false) => return Claim::TooLate(left + Duration::from_millis(20)),
        };
        let n = self.next.len();
        if n == 0 {
            return Claim::Starved(left);
        }
        if self.options.reuse {
            let user = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
            return Claim::Login { user, step: highest.min(now.max(lowest)) };
        }
        for _ in 0..n {
            let i = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
            let next = self.next[i].load(Ordering::Relaxed);
            let step = next.max(lowest);
            if step > highest {
                continue;
            }
            if self.next[i].compare_exchange(next, step + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                return Claim::Login { user: i, step };
            }
        }
        Claim::Starved(left.min(Duration::from_millis(200)) + Duration::from_millis(20))
    }

    /// Steps used by an earlier run against the same server: `user next-step` per line. Users
    /// not in the seeds are ignored; a line that does not parse is an error (a wrong file).
    pub fn load(&self, names: &[&str], text: &str) -> Result<(), String> {
        let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (name, step) = line.rsplit_once(' ').ok_or_else(|| format!("line {}: expected `user next-step`", i + 1))?;
            let step: u64 = step.parse().map_err(|_| format!("line {}: the step is not a number", i + 1))?;
            if let Some(slot) = index.get(name).and_then(|&u| self.next.get(u)) {
                slot.fetch_max(step, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// The counterpart of `load`, for the next run.
    pub fn save(&self, names: &[&str], path: &Path) -> std::io::Result<()> {
        let mut text = String::new();
        for (name, next) in names.iter().zip(&self.next) {
            let next = next.load(Ordering::Relaxed);
            if next > 0 {
                text.push_str(&format!("{name} {next}\n"));
            }
        }
        // Whole or not at all: a half-written file would let the next run replay steps.
        let partial = path.with_extension("partial");
        std::fs::write(&partial, text)?;
        std::fs::rename(&partial, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(n: usize, policy: StepPolicy, reuse: bool) -> UserSteps {
        UserSteps::new(n, StepOptions { policy, reuse, margin: Duration::from_secs(1), period: 30 })
    }

    #[test]
    fn a_window_gives_each_user_three_steps_oldest_first() {
        let s = steps(2, StepPolicy::Window, false);
        let t = 30.0 * 100.0 + 5.0;
        let mut got = Vec::new();
        while let Claim::Login { user, step } = s.claim(t) {
            got.push((user, step));
        }
        assert_eq!(got, [(0, 99), (1, 99), (0, 100), (1, 100), (0, 101), (1, 101)]);
        assert!(matches!(s.claim(t), Claim::Starved(_)));
        // After the flip each user has one step more.
        assert!(matches!(s.claim(t + 30.0), Claim::Login { step: 102, .. }));
    }

    #[test]
    fn near_the_flip_the_ending_step_is_not_used() {
        let s = steps(1, StepPolicy::Window, false);
        assert_eq!(s.claim(3029.5), Claim::Login { user: 0, step: 100 });
        let c = steps(1, StepPolicy::Current, true);
        assert!(matches!(c.claim(3029.5), Claim::TooLate(d) if d > Duration::from_millis(500)));
        c.record_latency(Duration::from_secs(2));
        assert!(matches!(c.claim(3025.0), Claim::Login { .. }));
        assert!(matches!(c.claim(3027.0), Claim::TooLate(_)), "a slow server widens the margin");
    }

    #[test]
    fn four_thousand_users_sustain_300_logins_a_second_for_20_seconds() {
        // Wherever in a step the run starts, even just before a flip (no now-1 then).
        for phase in [0.0, 10.0, 25.0, 29.9] {
            let s = steps(4000, StepPolicy::Window, false);
            let start = 30.0 * 1000.0 + phase;
            let starved = (0..300 * 20).filter(|i| !matches!(s.claim(start + f64::from(*i) / 300.0), Claim::Login { .. })).count();
            assert_eq!(starved, 0, "starting {phase} s into a step");
        }
    }

    #[test]
    fn the_current_step_with_reuse_never_starves() {
        let s = steps(2, StepPolicy::Current, true);
        for _ in 0..10 {
            assert!(matches!(s.claim(3005.0), Claim::Login { step: 100, .. }));
        }
        let s = steps(2, StepPolicy::Current, false);
        assert!(matches!(s.claim(3005.0), Claim::Login { step: 100, .. }));
        assert!(matches!(s.claim(3005.0), Claim::Login { step: 100, .. }));
        assert!(matches!(s.claim(3005.0), Claim::Starved(_)));
    }

    #[test]
    fn saved_steps_carry_over_to_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steps");
        let names = ["alice", "bob"];
        let s = steps(2, StepPolicy::Window, false);
        assert_eq!(s.claim(3005.0), Claim::Login { user: 0, step: 99 });
        s.save(&names, &path).unwrap();
        let again = steps(2, StepPolicy::Window, false);
        again.load(&names, &std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(again.claim(3005.0), Claim::Login { user: 0, step: 100 }, "alice's step 99 is used");
        assert_eq!(again.claim(3005.0), Claim::Login { user: 1, step: 99 });
        assert!(again.load(&names, "alice x\n").is_err());
    }
}
