//! A pool of one thread per core for password hashing (argon2id).
//!
//! Each verification takes tens of milliseconds and ~19 MiB. On tokio's blocking pool every
//! verification may land on a different thread whose allocator arena then keeps that memory
//! (measured on 2 cores: RSS grew ~10 MB per login up to 765 MB, and to 8.7 GiB at 32 logins at
//! once). A fixed set of threads reuses the same few arenas, bounds CPU use to the cores, and
//! lets excess logins queue in async land instead of occupying threads.
//!
//! The queue is kept per NAS client (`crate::fairness`) and served in turn: a NAS flooding wrong
//! passwords builds a backlog only for itself, and another NAS's login waits for one job, not
//! for the flood.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::fairness::Key;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Debug, thiserror::Error)]
#[error("the hashing pool is gone or the job panicked")]
pub struct PoolError;

/// Jobs waiting, per client, and the clients with work in the order they are served.
#[derive(Default)]
struct Queues {
    by_client: HashMap<Key, VecDeque<Job>>,
    turn: VecDeque<Key>,
    /// Threads waiting for a job.
    idle: usize,
    closed: bool,
}

impl Queues {
    fn push(&mut self, client: Key, job: Job) {
        let queue = self.by_client.entry(client).or_default();
        if queue.is_empty() {
            self.turn.push_back(client);
        }
        queue.push_back(job);
    }

    /// The next client's oldest job; that client goes to the back of the line.
    fn pop(&mut self) -> Option<Job> {
        let client = self.turn.pop_front()?;
        let queue = self.by_client.get_mut(&client)?;
        let job = queue.pop_front();
        if queue.is_empty() {
            self.by_client.remove(&client);
        } else {
            self.turn.push_back(client);
        }
        job
    }
}

struct Shared {
    queues: Mutex<Queues>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct HashingPool {
    shared: Arc<Shared>,
}

impl HashingPool {
    /// Starts `threads` hashing threads (at least one). They end when the pool is dropped.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared { queues: Mutex::default(), ready: Condvar::new() });
        for i in 0..threads.max(1) {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new().name(format!("radmfa-hash-{i}")).spawn(move || {
                loop {
                    let job = {
                        let mut queues = shared.lock();
                        loop {
                            if let Some(job) = queues.pop() {
                                break job;
                            }
                            if queues.closed {
                                return;
                            }
                            queues.idle += 1;
                            queues = shared.ready.wait(queues).unwrap_or_else(|p| p.into_inner());
                            queues.idle -= 1;
                        }
                    };
                    // A panicking job drops its reply channel (the caller sees PoolError); the thread lives on.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                }
            })?;
        }
        Ok(Self { shared })
    }

    /// One thread per available core.
    pub fn per_core() -> std::io::Result<Self> {
        Self::new(std::thread::available_parallelism().map_or(1, usize::from))
    }

    /// Whether a job given now would wait: every thread busy or jobs already queued.
    pub fn busy(&self) -> bool {
        let queues = self.shared.lock();
        queues.idle == 0 || !queues.turn.is_empty()
    }

    /// Runs `work` on a hashing thread, in the current client's turn, and waits for it without
    /// blocking the async runtime.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, PoolError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // A caller that gave up (its request timed out) needs no hash.
            if !reply.is_closed() {
                let _ = reply.send(work());
            }
        });
        self.shared.lock().push(crate::fairness::current_client(), job);
        self.shared.ready.notify_one();
        answer.await.map_err(|_| PoolError)
    }
}

impl Drop for HashingPool {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_work_and_survives_a_panicking_job() {
        let pool = HashingPool::new(1).unwrap();
        assert_eq!(pool.run(|| 6 * 7).await.unwrap(), 42);
        let failed = pool.run(|| -> u8 { panic!("boom") }).await;
        assert!(failed.is_err());
        assert_eq!(pool.run(|| "still here").await.unwrap(), "still here", "the thread outlived the panic");
    }

    #[tokio::test]
    async fn busy_while_every_thread_works_or_jobs_wait() {
        let pool = Arc::new(HashingPool::new(1).unwrap());
        let idle_by = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while pool.busy() {
            assert!(std::time::Instant::now() < idle_by, "the thread never became idle");
            tokio::task::yield_now().await;
        }
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let running = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.run(move || wait.recv().is_ok()).await.unwrap() }
        });
        while !pool.busy() {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        assert!(running.await.unwrap());
        while pool.busy() {
            assert!(std::time::Instant::now() < idle_by, "idle again once the job is done");
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn clients_are_served_in_turn_not_in_arrival_order() {
        let mut queues = Queues::default();
        let order = Arc::new(Mutex::new(Vec::new()));
        let job = |name: &'static str| -> Job {
            let order = Arc::clone(&order);
            Box::new(move || order.lock().unwrap().push(name))
        };
        for _ in 0..3 {
            queues.push(1, job("flood"));
        }
        queues.push(2, job("login"));
        while let Some(job) = queues.pop() {
            job();
        }
        assert_eq!(*order.lock().unwrap(), ["flood", "login", "flood", "flood"], "the login waits for one job of the flood, not three");
        assert!(queues.by_client.is_empty() && queues.turn.is_empty());
    }

    #[tokio::test]
    async fn a_job_runs_as_the_client_of_its_request() {
        let pool = HashingPool::new(1).unwrap();
        let seen = crate::fairness::on_behalf_of(7, async { pool.run(|| 1).await }).await;
        assert_eq!(seen.unwrap(), 1);
        assert_eq!(crate::fairness::on_behalf_of(7, async { crate::fairness::current_client() }).await, 7);
        assert_eq!(crate::fairness::current_client(), 0, "outside any request");
    }
}
