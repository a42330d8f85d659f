//! The login path's operations, many requests' at a time: each statement takes arrays and
//! serves every queued operation of its kind, and a batch is one transaction (one commit, one
//! WAL flush). PostgreSQL's cost is per statement and per commit far more than per row, so at
//! a morning peak this is what keeps the database from being the limit (BENCHMARKS.md).
//!
//! Semantics are those of the operations run one by one: a batch never holds two operations on
//! the same key (nonce, token, answer key) — the second waits for the next batch — so "exactly
//! one of two uses of a step wins" holds inside a batch as between nodes. Rows are locked in a
//! fixed order (statement kinds in one order, keys sorted), so batches running at once on
//! several connections, or on several nodes, do not deadlock; were PostgreSQL to report one
//! anyway, the batch is run again.
//!
//! Flushes run as tasks of their own, so a request that stops waiting (its timeout) does not
//! take other requests' operations down with it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{GenericClient, Pool};
use tokio::sync::oneshot;
use tokio_postgres::error::SqlState;

use super::Health;
use super::queries::{TOKEN_COLUMNS, lockout_table, read_token};
use crate::store::backend::TokenRow;
use crate::store::{Factor, KeptAnswer, StateUse, StoreError, UnixTime};

/// Operations in one batch at most (the arrays' length).
const MAX_BATCH: usize = 512;

/// Batches running at once, each on a connection of its own.
const MAX_FLUSHERS: usize = 2;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A factor's counters as stored.
#[derive(Debug, Clone, Copy)]
pub(super) struct LockoutRow {
    pub failures: i32,
    pub locked_until: Option<UnixTime>,
    pub last_failure_at: Option<UnixTime>,
    pub seq: i64,
}

pub(super) enum Op {
    KeepContext { nonce: Vec<u8>, expires_at: UnixTime, context: Vec<u8>, reply: Reply<()> },
    ConsumeState { nonce: Vec<u8>, expires_at: UnixTime, request: Vec<u8>, reply: Reply<StateUse> },
    ReadContext { nonce: Vec<u8>, reply: Reply<Option<Vec<u8>>> },
    Lockout { username: String, factor: Factor, reply: Reply<Option<LockoutRow>> },
    Tokens { username: String, reply: Reply<Vec<TokenRow>> },
    UseStep { token_id: i64, step: i64, now: UnixTime, keep: Option<KeptAnswer>, reply: Reply<bool> },
    KeepAnswer { kept: KeptAnswer, reply: Reply<()> },
}

impl Op {
    /// What two operations of a batch must not share (`None`: reads, which may).
    fn key(&self) -> Option<(u8, Vec<u8>)> {
        match self {
            Self::KeepContext { nonce, .. } => Some((0, nonce.clone())),
            Self::ConsumeState { nonce, .. } => Some((1, nonce.clone())),
            Self::UseStep { token_id, .. } => Some((2, token_id.to_be_bytes().to_vec())),
            Self::KeepAnswer { kept, .. } => Some((3, kept.key.clone())),
            Self::Lockout { .. } | Self::Tokens { .. } | Self::ReadContext { .. } => None,
        }
    }

    fn fail(self, e: &StoreError) {
        let e = copy(e);
        match self {
            Self::KeepContext { reply, .. } | Self::KeepAnswer { reply, .. } => drop(reply.send(Err(e))),
            Self::UseStep { reply, .. } => drop(reply.send(Err(e))),
            Self::ConsumeState { reply, .. } => drop(reply.send(Err(e))),
            Self::ReadContext { reply, .. } => drop(reply.send(Err(e))),
            Self::Lockout { reply, .. } => drop(reply.send(Err(e))),
            Self::Tokens { reply, .. } => drop(reply.send(Err(e))),
        }
    }
}

/// The same error again, for each operation of a failed batch.
fn copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(why) => StoreError::Unavailable(why.clone()),
        StoreError::NotWritable(why) => StoreError::NotWritable(why.clone()),
        other => StoreError::database(other.to_string()),
    }
}

pub(super) struct Batcher {
    queue: Mutex<VecDeque<Op>>,
    /// Flush tasks running, at most `max_flushers`.
    flushers: Mutex<usize>,
    max_flushers: usize,
    pool: Pool,
    timeout: Duration,
    health: Arc<Health>,
}

impl Batcher {
    pub(super) fn new(pool: Pool, pool_size: usize, timeout: Duration, health: Arc<Health>) -> Arc<Self> {
        // Two batches at once: one may wait on a row another node holds while the other goes
        // on. More only split the load into smaller batches and more commits (measured: 1, 2,
        // 4, 8 and 16 at once; BENCHMARKS.md).
        let max_flushers = pool_size.clamp(1, MAX_FLUSHERS);
        Arc::new(Self { queue: Mutex::default(), flushers: Mutex::new(0), max_flushers, pool, timeout, health })
    }

    /// Queues `op` (built around the reply channel) and waits for its result.
    pub(super) async fn run<T>(self: &Arc<Self>, op: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        lock(&self.queue).push_back(op(reply));
        self.start_flusher();
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(result)) => result,
            // The batch was given up (its connection hung): as unavailable as a timeout.
            Ok(Err(_)) => Err(StoreError::Unavailable("the database did not finish the operation".into())),
            Err(_) => {
                let e = StoreError::Unavailable(format!("no answer from the database within {:?}", self.timeout));
                self.health.note::<()>(&Err(copy(&e)));
                Err(e)
            }
        }
    }

    fn start_flusher(self: &Arc<Self>) {
        {
            let mut running = lock(&self.flushers);
            if *running >= self.max_flushers {
                return;
            }
            *running += 1;
        }
        let batcher = Arc::clone(self);
        tokio::spawn(async move { batcher.flush_until_empty().await });
    }

    async fn flush_until_empty(self: Arc<Self>) {
        loop {
            let batch = {
                let mut queue = lock(&self.queue);
                let batch = take_batch(&mut queue);
                if batch.is_empty() {
                    // Decided under the queue's lock: an operation queued after this sees the
                    // count lowered and starts a flusher.
                    *lock(&self.flushers) -= 1;
                    return;
                }
                batch
            };
            // A backstop: `execute` gives up on a hung connection after `timeout` itself.
            let result = match tokio::time::timeout(self.timeout * 2, self.flush(batch)).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Unavailable(format!("no answer from the database within {:?}", self.timeout))),
            };
            self.health.note(&result);
        }
    }

    /// Runs one batch (again, after a deadlock); every operation gets its answer or the error.
    async fn flush(&self, batch: Vec<Op>) -> Result<(), StoreError> {
        let mut tries = 0;
        let results = loop {
            tries += 1;
            match self.execute(&batch).await {
                Err(Retry::Deadlock | Retry::Closed) if tries < 3 => continue,
                Err(Retry::Deadlock) => break Err(StoreError::database("deadlock, three times")),
                Err(Retry::Closed) => break Err(StoreError::Unavailable("the connection to the database closed, three times".into())),
                Err(Retry::Failed(e)) => break Err(e),
                Ok(results) => break Ok(results),
            }
        };
        match results {
            Ok(results) => {
                results.answer(batch);
                Ok(())
            }
            Err(e) => {
                for op in batch {
                    op.fail(&e);
                }
                Err(e)
            }
        }
    }

    /// One statement per kind of operation in the batch; in one transaction when there are
    /// several (one commit), on its own when there is one (at low load, most batches).
    async fn execute(&self, batch: &[Op]) -> Result<Results, Retry> {
        let mut client = self.pool.get().await.map_err(|e| Retry::Failed(e.into()))?;
        let args = Arguments::of(batch);
        let work = async {
            if args.statements() > 1 {
                let transaction = client.transaction().await?;
                let results = statements(&transaction, &args).await?;
                transaction.commit().await?;
                Ok(results)
            } else {
                statements(&client, &args).await
            }
        };
        let outcome = tokio::time::timeout(self.timeout, work).await;
        outcome.unwrap_or_else(|_| {
            // A connection that stopped answering (a hung server, a firewall that dropped it
            // silently) is not given back to the pool, where the next batch would hang on it.
            drop(deadpool_postgres::Object::take(client));
            Err(Retry::Failed(StoreError::Unavailable(format!("no answer from the database within {:?}", self.timeout))))
        })
    }
}

/// The batch's statements, in a fixed order of kinds (and of keys within each), so concurrent
/// batches lock rows in one order.
async fn statements(c: &impl GenericClient, args: &Arguments) -> Result<Results, Retry> {
    let mut results = Results::default();
    if !args.keep_context.0.is_empty() {
        let sql = "INSERT INTO challenge_contexts (nonce, expires_at, context)
                   SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bytea[]) ORDER BY 1
                   ON CONFLICT (nonce) DO UPDATE SET expires_at = EXCLUDED.expires_at, context = EXCLUDED.context";
        let (n, e, x) = &args.keep_context;
        c.execute(&c.prepare_cached(sql).await?, &[n, e, x]).await?;
    }
    if !args.consume.0.is_empty() {
        // Every nonce's row comes back: inserted now (xmax 0), or found with the request that
        // used it (the no-op update locks it, so two batches cannot both insert).
        let sql = "INSERT INTO used_states (nonce, expires_at, request)
                   SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bytea[]) ORDER BY 1
                   ON CONFLICT (nonce) DO UPDATE SET request = used_states.request
                   RETURNING nonce, request, xmax = 0";
        let (n, e, r) = &args.consume;
        for row in c.query(&c.prepare_cached(sql).await?, &[n, e, r]).await? {
            results.consumed.insert(row.try_get(0)?, (row.try_get(2)?, row.try_get(1)?));
        }
    }
    if !args.read.is_empty() {
        let sql = "SELECT nonce, context FROM challenge_contexts WHERE nonce = ANY($1::bytea[])";
        for row in c.query(&c.prepare_cached(sql).await?, &[&args.read]).await? {
            results.contexts.insert(row.try_get(0)?, row.try_get(1)?);
        }
    }
    for (factor, users) in [(Factor::Code, &args.code_lockouts), (Factor::Password, &args.password_lockouts)] {
        if users.is_empty() {
            continue;
        }
        let sql = format!(
            "SELECT username, failures, locked_until, last_failure_at, seq FROM {} WHERE username = ANY($1::text[])",
            lockout_table(factor)
        );
        for row in c.query(&c.prepare_cached(&sql).await?, &[users]).await? {
            let counters = LockoutRow {
                failures: row.try_get(1)?,
                locked_until: row.try_get(2)?,
                last_failure_at: row.try_get(3)?,
                seq: row.try_get(4)?,
            };
            results.lockouts.insert((factor, row.try_get(0)?), counters);
        }
    }
    if !args.tokens.is_empty() {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE username = ANY($1::text[]) ORDER BY id");
        for row in c.query(&c.prepare_cached(&sql).await?, &[&args.tokens]).await? {
            let token = read_token(&row).map_err(Retry::Failed)?;
            results.tokens.entry(token.username.clone()).or_default().push(token);
        }
    }
    if !args.steps.id.is_empty() {
        // The tokens' rows locked in id order; a step later than the last one used; the
        // winners' Accepts kept in the same statement (so in the same commit as their step).
        let sql = "WITH v AS (
                       SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bytea[], $5::bigint[], $6::bytea[])
                           AS v(id, step, at, key, expires_at, answer)
                   ),
                   locked AS (SELECT id FROM tokens WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE),
                   used AS (
                       UPDATE tokens t SET last_step = v.step, last_used_at = v.at FROM v
                       WHERE t.id = v.id AND t.id IN (SELECT id FROM locked)
                         AND t.confirmed AND (t.last_step IS NULL OR t.last_step < v.step)
                       RETURNING t.id
                   ),
                   kept AS (
                       INSERT INTO kept_answers (key, expires_at, answer)
                       SELECT v.key, v.expires_at, v.answer FROM v JOIN used USING (id) WHERE v.key IS NOT NULL ORDER BY 1
                       ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at, answer = EXCLUDED.answer
                   )
                   SELECT id FROM used";
        let s = &args.steps;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [&s.id, &s.step, &s.at, &s.key, &s.expires_at, &s.answer];
        for row in c.query(&c.prepare_cached(sql).await?, &params).await? {
            results.used.insert(row.try_get(0)?);
        }
    }
    if !args.answers.0.is_empty() {
        let sql = "INSERT INTO kept_answers (key, expires_at, answer)
                   SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bytea[]) ORDER BY 1
                   ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at, answer = EXCLUDED.answer";
        let (k, e, a) = &args.answers;
        c.execute(&c.prepare_cached(sql).await?, &[k, e, a]).await?;
    }
    Ok(results)
}

/// Why a batch did not run: a deadlock or a connection found closed (run it again, on a fresh
/// connection: a pooled one may have died with a database restart), or anything else.
enum Retry {
    Deadlock,
    Closed,
    Failed(StoreError),
}

impl From<tokio_postgres::Error> for Retry {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) {
            Self::Deadlock
        } else if e.is_closed() {
            Self::Closed
        } else {
            Self::Failed(e.into())
        }
    }
}

impl From<StoreError> for Retry {
    fn from(e: StoreError) -> Self {
        Self::Failed(e)
    }
}

/// The batch's operations as the statements' arrays.
#[derive(Default)]
struct Arguments {
    keep_context: (Vec<Vec<u8>>, Vec<i64>, Vec<Vec<u8>>),
    consume: (Vec<Vec<u8>>, Vec<i64>, Vec<Vec<u8>>),
    read: Vec<Vec<u8>>,
    code_lockouts: Vec<String>,
    password_lockouts: Vec<String>,
    tokens: Vec<String>,
    steps: Steps,
    answers: (Vec<Vec<u8>>, Vec<i64>, Vec<Vec<u8>>),
}

/// Step uses, with the answer each keeps if it wins (`None` where it keeps none).
#[derive(Default)]
struct Steps {
    id: Vec<i64>,
    step: Vec<i64>,
    at: Vec<i64>,
    key: Vec<Option<Vec<u8>>>,
    expires_at: Vec<Option<i64>>,
    answer: Vec<Option<Vec<u8>>>,
}

impl Arguments {
    fn of(batch: &[Op]) -> Self {
        let mut a = Self::default();
        for op in batch {
            match op {
                Op::KeepContext { nonce, expires_at, context, .. } => {
                    a.keep_context.0.push(nonce.clone());
                    a.keep_context.1.push(*expires_at);
                    a.keep_context.2.push(context.clone());
                }
                Op::ConsumeState { nonce, expires_at, request, .. } => {
                    a.consume.0.push(nonce.clone());
                    a.consume.1.push(*expires_at);
                    a.consume.2.push(request.clone());
                }
                Op::ReadContext { nonce, .. } => a.read.push(nonce.clone()),
                Op::Lockout { username, factor: Factor::Code, .. } => a.code_lockouts.push(username.clone()),
                Op::Lockout { username, factor: Factor::Password, .. } => a.password_lockouts.push(username.clone()),
                Op::Tokens { username, .. } => a.tokens.push(username.clone()),
                Op::UseStep { token_id, step, now, keep, .. } => {
                    a.steps.id.push(*token_id);
                    a.steps.step.push(*step);
                    a.steps.at.push(*now);
                    a.steps.key.push(keep.as_ref().map(|k| k.key.clone()));
                    a.steps.expires_at.push(keep.as_ref().map(|k| k.expires_at));
                    a.steps.answer.push(keep.as_ref().map(|k| k.answer.clone()));
                }
                Op::KeepAnswer { kept, .. } => {
                    a.answers.0.push(kept.key.clone());
                    a.answers.1.push(kept.expires_at);
                    a.answers.2.push(kept.answer.clone());
                }
            }
        }
        a
    }

    /// How many statements the batch takes.
    fn statements(&self) -> usize {
        [
            !self.keep_context.0.is_empty(),
            !self.consume.0.is_empty(),
            !self.read.is_empty(),
            !self.code_lockouts.is_empty(),
            !self.password_lockouts.is_empty(),
            !self.tokens.is_empty(),
            !self.steps.id.is_empty(),
            !self.answers.0.is_empty(),
        ]
        .into_iter()
        .filter(|&present| present)
        .count()
    }
}

/// What a batch's statements returned, for handing out.
#[derive(Default)]
struct Results {
    /// Each nonce: whether this batch used it, and the request that did.
    consumed: HashMap<Vec<u8>, (bool, Option<Vec<u8>>)>,
    contexts: HashMap<Vec<u8>, Vec<u8>>,
    lockouts: HashMap<(Factor, String), LockoutRow>,
    tokens: HashMap<String, Vec<TokenRow>>,
    used: HashSet<i64>,
}

impl Results {
    fn answer(self, batch: Vec<Op>) {
        for op in batch {
            // A receiver that stopped waiting (its request timed out) is no matter.
            match op {
                Op::KeepContext { reply, .. } | Op::KeepAnswer { reply, .. } => drop(reply.send(Ok(()))),
                Op::ConsumeState { nonce, request, reply, .. } => {
                    let used = match self.consumed.get(&nonce) {
                        Some((true, _)) => Ok(StateUse::First),
                        Some((false, by)) if by.as_deref() == Some(request.as_slice()) => Ok(StateUse::SameRequest),
                        Some((false, _)) => Ok(StateUse::Used),
                        None => Err(StoreError::database("a State's use did not come back from the database")),
                    };
                    drop(reply.send(used));
                }
                Op::ReadContext { nonce, reply } => drop(reply.send(Ok(self.contexts.get(&nonce).cloned()))),
                Op::Lockout { username, factor, reply } => drop(reply.send(Ok(self.lockouts.get(&(factor, username)).copied()))),
                Op::Tokens { username, reply } => drop(reply.send(Ok(self.tokens.get(&username).cloned().unwrap_or_default()))),
                Op::UseStep { token_id, reply, .. } => drop(reply.send(Ok(self.used.contains(&token_id)))),
            }
        }
    }
}

/// The next batch: queued operations in order, each key once (a second operation on a key
/// stays queued, in order, for the next batch).
fn take_batch(queue: &mut VecDeque<Op>) -> Vec<Op> {
    let mut batch = Vec::new();
    let mut keys = HashSet::new();
    let mut left = VecDeque::new();
    while let Some(op) = queue.pop_front() {
        if batch.len() >= MAX_BATCH {
            left.push_back(op);
            continue;
        }
        let fresh = op.key().is_none_or(|key| keys.insert(key));
        if fresh {
            batch.push(op);
        } else {
            left.push_back(op);
        }
    }
    *queue = left;
    batch
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
