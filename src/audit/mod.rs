//! The audit trail in the store: one [`AuditEvent`] per RADIUS decision, portal step and
//! helpdesk or admin action, so the help desk sees a user's last events from any node. The log
//! lines stay as they are; this is the part that can be searched by account.
//!
//! Decisions must not wait on the database, so their events go through a [`Trail`]: a bounded
//! queue that a writer task empties into the store in batches (one transaction each), about once
//! a second. Actions are rarer and must not be lost, so they are written at once by their caller.
//! `[audit] retention` bounds how long events are kept (`settings`).

pub mod settings;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use crate::store::AuditEvent;
use crate::store::{Store, StoreError};
pub use settings::{AuditSection, AuditSettings};

/// Events waiting for the writer at most: beyond, new ones are dropped and counted (the log
/// lines still have them). A minute of a busy server's decisions.
const QUEUE_CAP: usize = 100_000;
/// Events written per store transaction.
const BATCH: usize = 1_000;
/// How often the writer empties the queue when it is not full enough to wake it earlier.
const INTERVAL: Duration = Duration::from_secs(1);

/// Events kept per account and minute: a NAS (or a script behind one) hammering one account
/// must not fill the store for `retention`. Past it, one event says so; the log keeps the rest.
const PER_ACCOUNT_PER_MINUTE: u32 = 60;
/// Accounts counted per minute at most (the directory's accounts bound it anyway).
const COUNTED_ACCOUNTS: usize = 100_000;

/// What is queued, and how many events each account had this minute.
#[derive(Default)]
struct Queued {
    events: VecDeque<AuditEvent>,
    minute: i64,
    per_account: std::collections::HashMap<String, u32>,
}

impl Queued {
    /// Counts an event of `account` at `at`; whether it is kept, and whether it is the last
    /// one kept this minute.
    fn count(&mut self, account: &str, at: i64) -> (bool, bool) {
        let minute = at.div_euclid(60);
        if minute != self.minute || self.per_account.len() >= COUNTED_ACCOUNTS {
            self.minute = minute;
            self.per_account.clear();
        }
        // Looked up before inserting: the account's name is copied once a minute, not per event.
        let n = match self.per_account.get_mut(account) {
            Some(n) => {
                *n = n.saturating_add(1);
                *n
            }
            None => {
                self.per_account.insert(account.to_owned(), 1);
                1
            }
        };
        (n <= PER_ACCOUNT_PER_MINUTE, n == PER_ACCOUNT_PER_MINUTE)
    }
}

/// Events on their way to the store.
pub struct Trail {
    queue: Mutex<Queued>,
    /// Wakes the writer when a batch is ready.
    ready: tokio::sync::Notify,
    dropped: AtomicU64,
    /// Held while a batch is written, so the writer and a flush keep the order of writes.
    writing: tokio::sync::Mutex<()>,
}

impl Default for Trail {
    fn default() -> Self {
        Self {
            queue: Mutex::default(),
            ready: tokio::sync::Notify::new(),
            dropped: AtomicU64::new(0),
            writing: tokio::sync::Mutex::new(()),
        }
    }
}

impl Trail {
    /// Queues an event for the writer; never waits. Over the queue's cap, or the account's
    /// for this minute, it is dropped (and counted).
    pub fn push(&self, event: AuditEvent) {
        let mut queued = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Accepts and what someone did are always kept: the cap must not hide a login that
        // worked, nor an action, behind a flood of refusals.
        let always = event.result == "accept" || event.actor.is_some();
        let (kept, last) = queued.count(&event.account, event.at);
        if !kept && !always {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let marker = (last && kept).then(|| AuditEvent {
            result: "none".to_owned(),
            reason: "events_suppressed".to_owned(),
            actor: None,
            detail: Some(format!(
                "more than {PER_ACCOUNT_PER_MINUTE} events for this account in a minute: the rest of this minute's are in the log only"
            )),
            ..event.clone()
        });
        let queue = &mut queued.events;
        if queue.len() >= QUEUE_CAP {
            drop(queued);
            if self.dropped.fetch_add(1, Ordering::Relaxed).is_multiple_of(10_000) {
                tracing::warn!(
                    "the audit trail's queue is full (the database is slow or down): events are dropped; the log still has them"
                );
            }
            return;
        }
        queue.push_back(event);
        queue.extend(marker);
        if queue.len() >= BATCH {
            self.ready.notify_one();
        }
    }

    /// Events dropped since start: the queue was full, or an account's share of a minute spent.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events waiting to be written.
    pub fn pending(&self) -> usize {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).events.len()
    }

    /// Writes every queued event to `store` now (a view about to read the trail; the end of a
    /// command; the server's stop). A batch the store refuses goes back to the queue's head.
    pub async fn flush(&self, store: &dyn Store) -> Result<(), StoreError> {
        let _writing = self.writing.lock().await;
        loop {
            let batch: Vec<AuditEvent> = {
                let mut queued = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let n = queued.events.len().min(BATCH);
                queued.events.drain(..n).collect()
            };
            if batch.is_empty() {
                return Ok(());
            }
            if let Err(e) = store.record_events(batch.clone()).await {
                let queue = &mut self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).events;
                for event in batch.into_iter().rev() {
                    if queue.len() < QUEUE_CAP {
                        queue.push_front(event);
                    }
                }
                return Err(e);
            }
        }
    }

    /// The writer: empties the queue into `store` every second, or as soon as a batch is
    /// ready, until `shutdown`; then once more.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, shutdown: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.ready.notified() => {}
                () = tokio::time::sleep(INTERVAL) => {}
            }
            match self.flush(store.as_ref()).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, pending = self.pending(), "cannot write the audit trail to the store; kept queued and tried again");
                }
                Err(_) => {}
            }
        }
        if let Err(e) = self.flush(store.as_ref()).await {
            tracing::warn!(error = %e, lost = self.pending(), "audit events not written at stop");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyRing, Keys};
    use crate::store::memory::MemoryStore;

    fn event(account: &str, at: i64) -> AuditEvent {
        AuditEvent {
            at,
            account: account.into(),
            action: "radius".into(),
            client: "nas".into(),
            from: None,
            result: "reject".into(),
            reason: "wrong_code".into(),
            actor: None,
            detail: None,
        }
    }

    #[tokio::test]
    async fn one_account_hammered_keeps_a_minute_s_share_and_says_so_others_are_untouched() {
        let trail = Trail::default();
        let store = MemoryStore::in_memory(std::sync::Arc::new(Keys::fixed(KeyRing::generate("k1"))));
        for _ in 0..1_000 {
            trail.push(event("alice", 600));
        }
        trail.push(event("bob", 600));
        trail.push(event("alice", 660));
        trail.flush(&store).await.unwrap();
        assert_eq!(trail.pending(), 0);
        let alice = store.events("alice", 10_000).await.unwrap();
        assert_eq!(alice.len(), PER_ACCOUNT_PER_MINUTE as usize + 2, "the minute's share, its marker, and the next minute's");
        assert_eq!(alice.iter().filter(|e| e.reason == "events_suppressed").count(), 1);
        assert_eq!(alice[0].at, 660, "newest first");
        assert_eq!(store.events("bob", 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_cap_never_hides_an_accept_or_an_action() {
        let trail = Trail::default();
        let store = MemoryStore::in_memory(std::sync::Arc::new(Keys::fixed(KeyRing::generate("k1"))));
        for _ in 0..100 {
            trail.push(event("carol", 600));
        }
        trail.push(AuditEvent { result: "accept".into(), reason: "authenticated".into(), ..event("carol", 610) });
        trail.push(AuditEvent { action: "unlock".into(), actor: Some("hanna".into()), ..event("carol", 620) });
        trail.flush(&store).await.unwrap();
        let kept = store.events("carol", 1000).await.unwrap();
        assert_eq!(kept.len(), PER_ACCOUNT_PER_MINUTE as usize + 3);
        assert_eq!((kept[0].action.as_str(), kept[1].result.as_str()), ("unlock", "accept"));
    }
}
