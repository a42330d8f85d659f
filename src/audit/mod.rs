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

/// Events on their way to the store.
pub struct Trail {
    queue: Mutex<VecDeque<AuditEvent>>,
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
    /// Queues an event for the writer; never waits. Over the cap it is dropped and counted.
    pub fn push(&self, event: AuditEvent) {
        let mut queue = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if queue.len() >= QUEUE_CAP {
            drop(queue);
            if self.dropped.fetch_add(1, Ordering::Relaxed).is_multiple_of(10_000) {
                tracing::warn!(
                    "the audit trail's queue is full (the database is slow or down): events are dropped; the log still has them"
                );
            }
            return;
        }
        queue.push_back(event);
        if queue.len() >= BATCH {
            self.ready.notify_one();
        }
    }

    /// Events dropped because the queue was full, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events waiting to be written.
    pub fn pending(&self) -> usize {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Writes every queued event to `store` now (a view about to read the trail; the end of a
    /// command; the server's stop). A batch the store refuses goes back to the queue's head.
    pub async fn flush(&self, store: &dyn Store) -> Result<(), StoreError> {
        let _writing = self.writing.lock().await;
        loop {
            let batch: Vec<AuditEvent> = {
                let mut queue = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let n = queue.len().min(BATCH);
                queue.drain(..n).collect()
            };
            if batch.is_empty() {
                return Ok(());
            }
            if let Err(e) = store.record_events(batch.clone()).await {
                let mut queue = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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
