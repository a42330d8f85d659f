//! The PostgreSQL backend: any number of radmfa nodes on one (replicated) database, so a NAS
//! that fails over from one node to the next finds the same tokens, used time steps, lockouts,
//! SMS counts and challenges. A pool of connections (`deadpool-postgres`, TLS by rustls with the
//! server's certificate verified), the schema migrated once however many nodes start together
//! (`schema`), and the contract's SQL in `queries`: each operation one statement, or one
//! transaction where it must read and write together.
//!
//! A database that cannot be reached is [`StoreError::Unavailable`]: the request that needed it
//! is left unanswered (the NAS fails over), one log line says so when it starts and one when it
//! ends, and the pool reconnects by itself.

mod batch;
mod queries;
mod schema;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;

use super::settings::{PostgresSettings, TlsMode};
use super::{SealedStore, StoreError};

pub use schema::SCHEMA_VERSION;

/// The PostgreSQL store as `auth` and the CLI use it: seeds sealed above the PostgreSQL backend.
pub type PostgresStore = SealedStore<PostgresBackend>;

pub struct PostgresBackend {
    pool: Pool,
    /// The longest one operation (waiting for a connection included) may take.
    timeout: Duration,
    health: Arc<Health>,
    /// The login path's operations, batched.
    batch: Arc<batch::Batcher>,
    /// Whether this node's clock agrees with the database's.
    clock: ClockCheck,
}

/// How far a node's clock may be from the database's before it is said: codes, challenges,
/// sessions and locks are decided on each node's clock, and shared.
const CLOCK_TOLERANCE: i64 = 10;

/// This node's clock against the database's (read at each purge), said in the log when it
/// goes wrong and when it is right again.
#[derive(Default)]
pub(super) struct ClockCheck {
    off: AtomicBool,
}

impl ClockCheck {
    /// `skew`: this node's time less the database's, in seconds.
    pub(super) fn note(&self, skew: i64) {
        let off = skew.abs() > CLOCK_TOLERANCE;
        if off && !self.off.swap(true, Ordering::Relaxed) {
            let (by, way) = (skew.abs(), if skew > 0 { "ahead of" } else { "behind" });
            tracing::warn!(
                skew_seconds = skew,
                "this node's clock is {by} s {way} the database's: every node must keep the same time (NTP) — TOTP codes, challenges, \
                 sessions and locks are decided on it; expired rows are purged by the earlier of the two clocks"
            );
        } else if !off && self.off.swap(false, Ordering::Relaxed) {
            tracing::info!(skew_seconds = skew, "this node's clock agrees with the database's again");
        }
    }
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend").field("url", &self.health.shown).finish_non_exhaustive()
    }
}

/// Whether the database answers, said in the log when it changes: unreachable at the first
/// operation that could not reach it, reachable again once operations have succeeded for
/// [`SETTLED`] with none failing — so a database that stalls now and then is said once, not at
/// every stall.
struct Health {
    reachable: AtomicBool,
    /// When an operation last failed to reach the database (ms since `epoch`).
    last_failure: std::sync::atomic::AtomicU64,
    epoch: std::time::Instant,
    /// Where, for messages (no password).
    shown: String,
}

/// How long operations must succeed, none failing, before the database counts as back.
const SETTLED: Duration = Duration::from_secs(5);

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if unreachable(&e) {
            return Self::Unavailable(describe(&e));
        }
        Self::Database { message: describe(&e), source: Some(Box::new(e)) }
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => e.into(),
            PoolError::Timeout(_) => Self::Unavailable("no connection to the database within the timeout".into()),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// The server's own message when it sent one (tokio-postgres's Display says only "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                text = format!("{text}: {cause}");
                source = cause.source();
            }
            text
        }
    }
}

/// Whether an error means "the database cannot be reached or cannot serve now" (connection
/// refused or lost, shutting down, too many connections), as opposed to a statement it refused.
fn unreachable(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            class == "08"
                || class == "57"
                || class == "53"
                || *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        }
    }
}

impl SealedStore<PostgresBackend> {
    /// See [`PostgresBackend::connect`].
    pub async fn connect(settings: &PostgresSettings, keys: std::sync::Arc<crate::keys::Keys>) -> Result<Self, StoreError> {
        Ok(Self::new(keys, PostgresBackend::connect(settings).await?))
    }

    /// See [`PostgresBackend::create`].
    pub async fn create(settings: &PostgresSettings, keys: std::sync::Arc<crate::keys::Keys>) -> Result<Self, StoreError> {
        Ok(Self::new(keys, PostgresBackend::create(settings).await?))
    }
}

impl PostgresBackend {
    /// Connects to a database radmfa's tables are in and brings the schema up to date (or
    /// refuses a schema newer than this radmfa). An empty database is refused: started on one
    /// (a typo in the database name, a restore gone wrong) a node would find no tokens, and
    /// every enrolled user would fall under `no_token`.
    pub async fn connect(settings: &PostgresSettings) -> Result<Self, StoreError> {
        Self::open(settings, false).await
    }

    /// As [`Self::connect`], creating the tables in an empty database (`radmfa keygen`).
    pub async fn create(settings: &PostgresSettings) -> Result<Self, StoreError> {
        Self::open(settings, true).await
    }

    async fn open(settings: &PostgresSettings, may_create: bool) -> Result<Self, StoreError> {
        let mut connection = settings.connection.clone();
        connection.ssl_mode(match settings.tls {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require => SslMode::Require,
        });
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(settings)?);
        // A pooled connection found closed is dropped when next taken; one that dies under an
        // operation is retried on a fresh one (`batch`) or counted as unavailable.
        let manager = Manager::from_config(connection, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.timeout))
            .create_timeout(Some(settings.timeout))
            .recycle_timeout(Some(settings.timeout))
            .build()
            .map_err(|e| StoreError::database(format!("connection pool: {e}")))?;
        // Migrations may wait for another node's: not bound by the per-operation timeout.
        schema::migrate(&mut *pool.get().await?, may_create).await?;
        let health = Arc::new(Health {
            reachable: AtomicBool::new(true),
            last_failure: std::sync::atomic::AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            shown: settings.shown.clone(),
        });
        let batch = batch::Batcher::new(pool.clone(), settings.pool_size, settings.timeout, Arc::clone(&health));
        Ok(Self { pool, timeout: settings.timeout, health, batch, clock: ClockCheck::default() })
    }

    /// Runs `work` on a pooled connection within the timeout, and notes whether the database
    /// was reached.
    async fn run<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.run_within(self.timeout, work).await
    }

    /// As [`Self::run`], within `timeout` (an admin's bulk operation may take longer than a
    /// request's).
    async fn run_within<T, F, Fut>(&self, timeout: Duration, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let attempt = async {
            let client = self.pool.get().await?;
            work(client).await
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!("no answer from the database within {timeout:?}"))),
        };
        self.health.note(&result);
        result
    }
}

impl Health {
    fn available(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    fn since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// One log line when the database stops answering, one when it answers again.
    fn note<T>(&self, result: &Result<T, StoreError>) {
        match result {
            Err(StoreError::Unavailable(why)) => {
                self.last_failure.store(self.since_epoch(), Ordering::Relaxed);
                if self.reachable.swap(false, Ordering::Relaxed) {
                    tracing::error!(
                        database = self.shown.as_str(),
                        error = why.as_str(),
                        "the database cannot be reached: requests that need it are left unanswered (the NAS fails over) until it can"
                    );
                }
            }
            _ => {
                let quiet = self.since_epoch().saturating_sub(self.last_failure.load(Ordering::Relaxed));
                if u128::from(quiet) >= SETTLED.as_millis() && !self.reachable.swap(true, Ordering::Relaxed) {
                    tracing::info!(database = self.shown.as_str(), "the database answers again");
                }
            }
        }
    }
}

/// The TLS client: the CA file's roots, or the system's. With TLS off, no roots are needed.
fn tls_config(settings: &PostgresSettings) -> Result<rustls::ClientConfig, StoreError> {
    let config = match (&settings.ca_file, settings.tls) {
        (Some(ca), _) => crate::tls::client_config(ca),
        (None, TlsMode::Disable) => crate::tls::with_roots(rustls::RootCertStore::empty()),
        (None, _) => crate::tls::system_client_config(),
    };
    config.map_err(StoreError::database)
}
