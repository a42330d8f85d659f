//! How fast the store takes the audit trail (BENCHMARKS.md): events written in batches of 1,000,
//! as the trail's writer sends them, into SQLite on disk (`synchronous = FULL`, as in
//! production) and into a PostgreSQL of its own that syncs commits to disk; then one account's
//! last 50 events read back (the help desk's user view) and half of them purged (retention).
//! Under `cargo test` it runs small (10,000 events), as a check of the counts; the measurement
//! is the full size:
//!
//! `RADMFA_BENCH_FULL=1 cargo test --release --test it audit_trail_bench -- --nocapture --test-threads 1`

use std::sync::Arc;
use std::time::{Duration, Instant};

use radmfa::keys::{KeyRing, Keys};
use radmfa::store::sqlite::SqliteStore;
use radmfa::store::{AuditEvent, Store, UnixTime};

use crate::postgres;

/// Events per batch, as the trail's writer sends them.
const BATCH: usize = 1_000;
const READS: usize = 500;

/// Batches written, and the accounts they are spread over (each ends with 100 events, or 50 in
/// the small run): the full measurement with `RADMFA_BENCH_FULL`, a small check without.
fn scale() -> (usize, usize) {
    if std::env::var_os("RADMFA_BENCH_FULL").is_some() { (200, 2_000) } else { (10, 200) }
}

fn keys() -> Arc<Keys> {
    Arc::new(Keys::fixed(KeyRing::generate("k1")))
}

/// The `i`th event: a RADIUS decision as the trail records it, one second apart per batch.
fn event(i: usize, accounts: usize) -> AuditEvent {
    let (account, rejected) = (i % accounts, i.is_multiple_of(7));
    AuditEvent {
        at: 1_700_000_000 + (i / BATCH) as UnixTime,
        account: format!("user{account}@example.test"),
        action: "radius".into(),
        client: format!("vpn-{}", i % 4),
        from: Some(format!("192.0.2.{}", i % 250)),
        result: if rejected { "reject" } else { "accept" }.into(),
        reason: if rejected { "wrong_code" } else { "ok" }.into(),
        actor: None,
        detail: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn measure(name: &str, store: &dyn Store) {
    let (batches, accounts) = scale();
    let started = Instant::now();
    for b in 0..batches {
        store.record_events((b * BATCH..(b + 1) * BATCH).map(|i| event(i, accounts)).collect()).await.unwrap();
    }
    let written = started.elapsed();
    let total = batches * BATCH;

    let mut reads = Vec::with_capacity(READS);
    for r in 0..READS {
        let account = format!("user{}@example.test", (r * 7919) % accounts);
        let started = Instant::now();
        let events = store.events(&account, 50).await.unwrap();
        reads.push(started.elapsed());
        assert_eq!(events.len(), 50, "{account}");
    }
    reads.sort_unstable();

    let started = Instant::now();
    let purged = store.purge_events(1_700_000_000 + (batches / 2) as UnixTime).await.unwrap();
    let purge = started.elapsed();
    assert_eq!(purged, total / 2);

    println!(
        "{name}: {total} events in {batches} batches of {BATCH}: {:.2} s, {:.0} events/s ({:.1} ms a batch); \
         last 50 of an account: p50 {:.2} ms, p99 {:.2} ms; {purged} purged in {:.2} s ({:.0}/s)",
        written.as_secs_f64(),
        total as f64 / written.as_secs_f64(),
        written.as_secs_f64() * 1e3 / batches as f64,
        percentile(&reads, 0.5).as_secs_f64() * 1e3,
        percentile(&reads, 0.99).as_secs_f64() * 1e3,
        purge.as_secs_f64(),
        purged as f64 / purge.as_secs_f64(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_trail_bench_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::create(&dir.path().join("radmfa.db"), keys()).unwrap();
    measure("SQLite", &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_trail_bench_postgres() {
    let Some(pg) = postgres::durable_server() else { return };
    let store = radmfa::store::postgres::PostgresStore::create(&postgres::settings(&pg.fresh_database()), keys()).await.unwrap();
    measure("PostgreSQL", &store).await;
}
