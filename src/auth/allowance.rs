//! How many tries of a factor (a password bind, a code check) may run at once for one account.
//!
//! The store counts failures once a try has ended. Tries made at once — thirty wrong passwords
//! sent in the same millisecond — would all see "no failures yet" and all reach the directory
//! (locking the user's AD account) or the codes. So a try starts only while
//! `failures + tries in flight < max_failures`: of any burst at most the allowance is tried, and
//! the others wait for a try to end (or their request's deadline). Right answers made at once
//! only wait for each other. The tries in flight are counted here, in memory: they end with the
//! process, so a crash cannot leave an account's allowance taken. (Across nodes the store's
//! failure count is shared; each node counts its own tries in flight.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::store::{Factor, LockoutPolicy, Store, StoreError, UnixTime};

/// What a try turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guess {
    /// Clears the failures and the doubling (unless a failure was counted since the try began).
    Right,
    /// Counts as a failure; may lock.
    Wrong,
    /// Says nothing about the guess (the directory could not answer): not counted.
    Unknown,
}

/// Why a try may not start.
#[derive(Debug)]
pub(crate) enum Refused {
    Locked,
    Store(StoreError),
}

type Key = (String, Factor);

/// The tries in flight per account and factor; an account without any costs nothing.
#[derive(Default, Clone)]
pub(crate) struct Allowance {
    accounts: Arc<Mutex<HashMap<Key, Arc<Account>>>>,
}

#[derive(Default)]
struct Account {
    /// One reading of the store and decision at a time per account, so two tries cannot both
    /// take the last unit of the allowance.
    gate: tokio::sync::Mutex<()>,
    in_flight: AtomicU32,
    ended: Notify,
}

/// Another node's tries are not announced here: a waiting try looks at the store again this often.
const LOOK_AGAIN: Duration = Duration::from_millis(50);

impl Allowance {
    /// Starts a try of `factor` for `account`: refused when the factor is locked; while the
    /// allowance is taken by tries in flight, waits for one of them to end (the caller's deadline
    /// bounds the wait).
    pub(crate) async fn begin(
        &self,
        store: &Arc<dyn Store>,
        account: &str,
        factor: Factor,
        now: UnixTime,
        policy: LockoutPolicy,
    ) -> Result<Try, Refused> {
        let key = (account.to_owned(), factor);
        // Gives the entry back to the map's care however this ends (a Try holds its own).
        let hold = Hold { allowance: self, key: &key, entry: Some(self.entry(&key)) };
        let Some(entry) = hold.entry.as_ref() else { unreachable!("set just above") };
        loop {
            // Asked to be woken before reading the store, so a try ending in between is not missed.
            let ended = entry.ended.notified();
            {
                let _turn = entry.gate.lock().await;
                let state = store.lockout_state(account, factor, now, policy).await.map_err(Refused::Store)?;
                if state.locked_until.is_some() {
                    return Err(Refused::Locked);
                }
                let in_flight = entry.in_flight.load(Ordering::Acquire);
                if state.failures.saturating_add(in_flight) < policy.max_failures.max(1) {
                    entry.in_flight.fetch_add(1, Ordering::AcqRel);
                    return Ok(Try {
                        allowance: self.clone(),
                        key: key.clone(),
                        entry: Some(Arc::clone(entry)),
                        store: Arc::clone(store),
                        policy,
                        seen: state.seq,
                    });
                }
            }
            let _ = tokio::time::timeout(LOOK_AGAIN, ended).await;
        }
    }

    /// Accounts with a try in flight or waiting (for tests: the map must not grow with names).
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.accounts.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn entry(&self, key: &Key) -> Arc<Account> {
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(accounts.entry(key.clone()).or_default())
    }

    /// Drops `entry`; the account leaves the map when nothing else holds it (no try, no waiter).
    fn release(&self, key: &Key, entry: Arc<Account>) {
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        drop(entry);
        // Under the map's lock nobody can take a new handle, so a count of one is the map's own.
        if accounts.get(key).is_some_and(|held| Arc::strong_count(held) == 1) {
            accounts.remove(key);
        }
    }
}

struct Hold<'a> {
    allowance: &'a Allowance,
    key: &'a Key,
    entry: Option<Arc<Account>>,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.allowance.release(self.key, entry);
        }
    }
}

/// A try in flight. [`Try::settle`] it with what it turned out to be; dropped unsettled (the
/// request was cancelled or failed) it ends as telling nothing.
pub(crate) struct Try {
    allowance: Allowance,
    key: Key,
    entry: Option<Arc<Account>>,
    store: Arc<dyn Store>,
    policy: LockoutPolicy,
    /// The failures' sequence number when the try began.
    seen: u64,
}

impl Try {
    /// Records the guess; `Some(until)` when this wrong answer locked the factor. The try ends
    /// (letting a waiting one start) only after the store has counted it.
    pub(crate) async fn settle(self, guess: Guess, now: UnixTime) -> Result<Option<UnixTime>, StoreError> {
        let (account, factor) = (&self.key.0, self.key.1);
        match guess {
            Guess::Wrong => self.store.record_failure(account, factor, now, self.policy).await,
            // Nothing counted when the try began (no row: seq 0) — nothing to clear, no write.
            // A failure counted since then made a row with a new seq, which stays.
            Guess::Right if self.seen == 0 => Ok(None),
            Guess::Right => self.store.record_success(account, factor, self.seen).await.map(|()| None),
            Guess::Unknown => Ok(None),
        }
    }
}

impl Drop for Try {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            entry.in_flight.fetch_sub(1, Ordering::AcqRel);
            entry.ended.notify_waiters();
            self.allowance.release(&self.key, entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyRing, Keys};
    use crate::store::memory::MemoryStore;

    fn memory_store() -> Arc<dyn Store> {
        Arc::new(MemoryStore::in_memory(Arc::new(Keys::fixed(KeyRing::generate("k1")))))
    }

    fn policy(max_failures: u32) -> LockoutPolicy {
        LockoutPolicy { max_failures, duration: Duration::from_secs(60), max_duration: Duration::from_secs(600), forget_after: None }
    }

    #[tokio::test]
    async fn a_burst_gets_only_the_allowance_and_the_rest_wait() {
        let store = memory_store();
        let allowance = Allowance::default();
        let mut tries = Vec::new();
        for _ in 0..3 {
            tries.push(allowance.begin(&store, "alice", Factor::Password, 1_000, policy(3)).await.unwrap());
        }
        let fourth = tokio::time::timeout(Duration::from_millis(200), allowance.begin(&store, "alice", Factor::Password, 1_000, policy(3)));
        assert!(fourth.await.is_err(), "the fourth waits while three are in flight");
        // Another account and the other factor are not held up.
        allowance.begin(&store, "bob", Factor::Password, 1_000, policy(3)).await.unwrap();
        allowance.begin(&store, "alice", Factor::Code, 1_000, policy(3)).await.unwrap();

        // One ends as telling nothing: a waiting try may start.
        let waiting = tokio::spawn({
            let (allowance, store) = (allowance.clone(), Arc::clone(&store));
            async move { allowance.begin(&store, "alice", Factor::Password, 1_000, policy(3)).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tries.pop().unwrap().settle(Guess::Unknown, 1_000).await.unwrap();
        drop(tries.pop());
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap().unwrap();

        // The last one is wrong, and with two failures already counted the third locks.
        store.record_failure("alice", Factor::Password, 1_000, policy(3)).await.unwrap();
        store.record_failure("alice", Factor::Password, 1_000, policy(3)).await.unwrap();
        assert!(tries.pop().unwrap().settle(Guess::Wrong, 1_000).await.unwrap().is_some());
        assert!(matches!(allowance.begin(&store, "alice", Factor::Password, 1_001, policy(3)).await, Err(Refused::Locked)));
        assert_eq!(allowance.tracked(), 0, "nothing kept once no try is in flight");
    }

    #[tokio::test]
    async fn a_right_answer_does_not_clear_a_failure_counted_after_it_began() {
        let store = memory_store();
        let allowance = Allowance::default();
        let right = allowance.begin(&store, "alice", Factor::Code, 1_000, policy(5)).await.unwrap();
        let wrong = allowance.begin(&store, "alice", Factor::Code, 1_000, policy(5)).await.unwrap();
        wrong.settle(Guess::Wrong, 1_000).await.unwrap();
        right.settle(Guess::Right, 1_000).await.unwrap();
        assert_eq!(store.lockout_state("alice", Factor::Code, 1_000, policy(5)).await.unwrap().failures, 1);
        let right = allowance.begin(&store, "alice", Factor::Code, 1_000, policy(5)).await.unwrap();
        right.settle(Guess::Right, 1_000).await.unwrap();
        assert_eq!(store.lockout_state("alice", Factor::Code, 1_000, policy(5)).await.unwrap().failures, 0);
    }
}
