//! One SMS on its way: sent in the background, its result taken by the login that asked for it if
//! it comes before that login must answer, and otherwise logged and counted by the sender itself
//! — also when the login was given up meanwhile (timed out, server stopping). So every SMS is
//! accounted for exactly once, and no answer waits on a slow gateway longer than it may.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Gateway, SmsError, SmsStats};
use crate::secret::Secret;

enum Slot {
    /// The login still waits for the result.
    Waiting,
    /// The result, not yet taken.
    Done(Result<(), SmsError>),
    /// The login answered (or was given up) without it: the sender accounts for it.
    Gone,
}

struct Shared {
    slot: Mutex<Slot>,
    ready: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How the SMS went, as far as the login is concerned.
#[derive(Debug)]
pub enum Delivered {
    /// The gateway took it.
    Sent,
    /// The gateway refused it, or could not be reached.
    Failed(SmsError),
    /// No result by the time the login had to answer; it will be logged when it comes.
    Pending,
}

pub struct Delivery {
    shared: Arc<Shared>,
    stats: Arc<SmsStats>,
    account: String,
    gateway: &'static str,
}

impl Delivery {
    /// Starts sending `text` to `to` (with one retry after a transient failure).
    pub fn start(gateway: Arc<dyn Gateway>, to: String, text: Secret<String>, stats: Arc<SmsStats>, account: &str) -> Self {
        let shared = Arc::new(Shared { slot: Mutex::new(Slot::Waiting), ready: Notify::new() });
        let kind = gateway.kind();
        let (sender, sender_stats, sender_account) = (Arc::clone(&shared), Arc::clone(&stats), account.to_owned());
        tokio::spawn(async move {
            let result = super::send_with_retry(gateway.as_ref(), &to, &text).await;
            let mut slot = sender.lock();
            match &*slot {
                Slot::Waiting => {
                    *slot = Slot::Done(result);
                    drop(slot);
                    sender.ready.notify_one();
                }
                Slot::Done(_) | Slot::Gone => {
                    drop(slot);
                    late(&sender_stats, kind, &sender_account, result);
                }
            }
        });
        Self { shared, stats, account: account.to_owned(), gateway: kind }
    }

    /// Waits for the result until `by` at the latest.
    pub async fn wait_until(self, by: Instant) -> Delivered {
        loop {
            let woken = self.shared.ready.notified();
            if let Some(delivered) = self.take() {
                return delivered;
            }
            if tokio::time::timeout_at(by, woken).await.is_err() {
                let mut slot = self.shared.lock();
                if matches!(&*slot, Slot::Waiting) {
                    *slot = Slot::Gone;
                    drop(slot);
                    self.stats.pending.inc();
                    return Delivered::Pending;
                }
            }
        }
    }

    /// The result, counted, if it is there.
    fn take(&self) -> Option<Delivered> {
        let mut slot = self.shared.lock();
        let Slot::Done(_) = &*slot else { return None };
        let Slot::Done(result) = std::mem::replace(&mut *slot, Slot::Gone) else { return None };
        drop(slot);
        Some(match result {
            Ok(()) => {
                self.stats.sent.inc();
                Delivered::Sent
            }
            Err(e) => {
                self.stats.failed.inc();
                tracing::error!(gateway = self.gateway, user = self.account.as_str(), error = %e, "SMS could not be sent");
                Delivered::Failed(e)
            }
        })
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        // Given up before the result (a request timed out, the server stopping): the sender
        // accounts for it when it comes; one that came meanwhile is accounted for here.
        let mut slot = self.shared.lock();
        match std::mem::replace(&mut *slot, Slot::Gone) {
            Slot::Done(result) => {
                drop(slot);
                late(&self.stats, self.gateway, &self.account, result);
            }
            Slot::Waiting | Slot::Gone => {}
        }
    }
}

fn late(stats: &SmsStats, gateway: &'static str, account: &str, result: Result<(), SmsError>) {
    match result {
        Ok(()) => {
            stats.late_sent.inc();
            tracing::info!(gateway, user = account, "SMS taken by the gateway after the answer went out");
        }
        Err(e) => {
            stats.late_failed.inc();
            tracing::error!(gateway, user = account, error = %e, "SMS failed after the answer went out: the user gets no code");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::time::Duration;

    struct Slow(Duration, bool);

    #[async_trait]
    impl Gateway for Slow {
        fn kind(&self) -> &'static str {
            "slow"
        }
        async fn send_once(&self, _: &str, _: &Secret<String>) -> Result<(), SmsError> {
            tokio::time::sleep(self.0).await;
            if self.1 { Ok(()) } else { Err(SmsError::Status(400)) }
        }
    }

    fn start(delay_ms: u64, works: bool, stats: &Arc<SmsStats>) -> Delivery {
        Delivery::start(
            Arc::new(Slow(Duration::from_millis(delay_ms), works)),
            "+46700000000".into(),
            Secret::new("x".into()),
            Arc::clone(stats),
            "alice",
        )
    }

    #[tokio::test]
    async fn every_result_is_accounted_once_in_time_late_or_given_up() {
        let stats = Arc::new(SmsStats::default());
        let soon = Instant::now() + Duration::from_millis(200);
        assert!(matches!(start(10, true, &stats).wait_until(soon).await, Delivered::Sent));
        assert!(matches!(start(10, false, &stats).wait_until(soon).await, Delivered::Failed(_)));
        assert!(matches!(start(300, true, &stats).wait_until(Instant::now() + Duration::from_millis(50)).await, Delivered::Pending));
        let given_up = start(100, false, &stats);
        drop(given_up);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let counted = |name: &str| stats.snapshot().into_iter().find(|(n, _)| *n == name).map(|(_, v)| v);
        assert_eq!(
            (counted("sent"), counted("failed"), counted("pending"), counted("late_sent"), counted("late_failed")),
            (Some(1), Some(1), Some(1), Some(1), Some(1))
        );
    }
}
