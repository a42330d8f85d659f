//! Decisions in flight, shared fairly between NAS (source addresses), so one NAS's flood (a password spray,
//! a misconfigured retry storm) cannot take the capacity another NAS's users need.
//!
//! A client alone may use all of `max_in_flight`. While several have work in flight, each is
//! entitled to an equal share of it: a client below its share is always admitted, even when
//! the others have filled the pool (the total may then briefly exceed `max_in_flight`, up to
//! twice it); a client at or above its share only gets capacity nobody else is using.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Which NAS a permit belongs to: its source address (`crate::fairness::key_of`), so the
/// devices behind one `[[client]]` network entry have a share each.
pub type ClientKey = crate::fairness::Key;

pub struct FairShare {
    limit: usize,
    state: Mutex<InFlight>,
    /// Told whenever a permit is let go: a stream transport waits for one rather than drop a
    /// request its client will never send again.
    freed: tokio::sync::Notify,
}

#[derive(Default)]
struct InFlight {
    total: usize,
    /// Only clients with work in flight have an entry.
    by_client: HashMap<ClientKey, usize>,
}

/// One decision in flight; dropping it frees the capacity.
pub struct Permit {
    pool: Arc<FairShare>,
    client: ClientKey,
}

impl FairShare {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit: limit.max(1), state: Mutex::new(InFlight::default()), freed: tokio::sync::Notify::new() })
    }

    /// A permit for one more decision of `client`, or `None` when it has had its share.
    pub fn try_acquire(self: &Arc<Self>, client: ClientKey) -> Option<Permit> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mine = state.by_client.get(&client).copied().unwrap_or(0);
        let busy = state.by_client.len() + usize::from(mine == 0);
        let share = (self.limit / busy).max(1);
        let admit = if state.total < self.limit { true } else { mine < share && state.total < 2 * self.limit };
        if !admit {
            return None;
        }
        state.total += 1;
        *state.by_client.entry(client).or_default() += 1;
        Some(Permit { pool: Arc::clone(self), client })
    }

    /// A permit for one more decision of `client`, as soon as it has a share again.
    pub async fn acquire(self: &Arc<Self>, client: ClientKey) -> Permit {
        loop {
            // Asked for before trying, so a permit let go in between is not missed.
            let freed = self.freed.notified();
            if let Some(permit) = self.try_acquire(client) {
                return permit;
            }
            freed.await;
        }
    }

    /// Decisions in flight in all.
    pub fn in_flight(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.pool.state.lock().unwrap_or_else(|p| p.into_inner());
        state.total = state.total.saturating_sub(1);
        if let Some(n) = state.by_client.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.by_client.remove(&self.client);
            }
        }
        drop(state);
        self.pool.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooding_client_cannot_keep_another_out() {
        let pool = FairShare::new(8);
        let (flood, quiet) = (1, 2);
        let held: Vec<Permit> = std::iter::from_fn(|| pool.try_acquire(flood)).take(100).collect();
        assert_eq!(held.len(), 8, "alone, a client may use all of it");
        assert!(pool.try_acquire(flood).is_none());
        let mine: Vec<Permit> = std::iter::from_fn(|| pool.try_acquire(quiet)).take(100).collect();
        assert_eq!(mine.len(), 4, "the newcomer gets its half even though the pool was full");
        assert!(pool.try_acquire(flood).is_none(), "over its share and the pool over the limit");
        drop(held);
        assert_eq!(pool.in_flight(), 4);
        let again: Vec<Permit> = std::iter::from_fn(|| pool.try_acquire(flood)).take(100).collect();
        assert_eq!(again.len(), 4, "free capacity may be borrowed up to the limit");
        drop(mine);
        drop(again);
        assert_eq!(pool.in_flight(), 0);
        assert!(pool.try_acquire(quiet).is_some());
    }

    #[tokio::test]
    async fn a_waiter_gets_the_permit_let_go() {
        let pool = FairShare::new(1);
        let held = pool.try_acquire(1).unwrap();
        let waiting = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.acquire(1).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "no share while the other is held");
        drop(held);
        let permit = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert_eq!(pool.in_flight(), 1);
        drop(permit);
    }

    #[test]
    fn the_total_never_exceeds_twice_the_limit() {
        let pool = FairShare::new(4);
        let mut held = Vec::new();
        for client in 0..50 {
            held.extend(std::iter::from_fn(|| pool.try_acquire(client)).take(10));
        }
        assert_eq!(pool.in_flight(), 8);
    }
}
