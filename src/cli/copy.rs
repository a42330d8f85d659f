//! `radmfa store copy --from OLD.toml --to NEW.toml`: every token (its seed still sealed) and
//! every lockout counter from one store into another — SQLite to PostgreSQL when a second node
//! is added, or back. Before anything is written the destination's key file must open every
//! seed; afterwards the destination is read back and compared, row by row. Copying again takes
//! what changed in the source since (used time steps, new tokens, locks) and changes nothing
//! else, so the last run can be made just before the servers switch over.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;

use super::{CliError, OpenFailed, connect_store, open_keys, open_store};
use crate::config::Config;
use crate::store::backend::TokenRow;
use crate::store::sealed::seed_opens;
use crate::store::settings::BackendSettings;
use crate::store::sqlite::SqliteStore;
use crate::store::{LockoutRecord, Snapshot};

pub fn copy(from: &Path, to: &Path) -> Result<(), CliError> {
    let source = Config::load(from)?;
    let destination = Config::load(to)?;
    if source.store.shown() == destination.store.shown() {
        return Err(format!("{} and {} name the same store ({})", from.display(), to.display(), source.store.shown()).into());
    }
    let source_keys = open_keys(&source)?;
    let destination_keys = open_keys(&destination).map_err(|e| {
        format!("{e}\n(the destination needs the source's key file: copy {} there, mode 0600)", source.store.key_file.display())
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let reader = open_store(&source, source_keys).await?;
        let snapshot = reader.export().await?;
        let sealed_elsewhere: Vec<i64> = snapshot.tokens.iter().filter(|t| !seed_opens(&destination_keys, t)).map(|t| t.id).collect();
        if !sealed_elsewhere.is_empty() {
            return Err(format!(
                "{} does not open {} of the {} seed(s) (token {}{}): the destination must use the source's key file; copy {} to {} \
                 (mode 0600). Nothing was copied.",
                destination.store.key_file.display(),
                sealed_elsewhere.len(),
                snapshot.tokens.len(),
                sealed_elsewhere[0],
                if sealed_elsewhere.len() > 1 { ", ..." } else { "" },
                source.store.key_file.display(),
                destination.store.key_file.display(),
            )
            .into());
        }
        let writer = match &destination.store.backend {
            // A new file is made (with the tables); an existing one must be a radmfa database.
            BackendSettings::Sqlite { path } if !path.exists() => {
                std::sync::Arc::new(SqliteStore::create(path, destination_keys).map_err(|e| format!("{}: {e}", path.display()))?)
            }
            // An empty database gets the tables, as `keygen` makes them.
            _ => connect_store(&destination, destination_keys, true).await.map_err(|e| match e {
                OpenFailed::Refused(why) => why,
                OpenFailed::Store(e) => format!("{}: {e}", destination.store.shown()),
            })?,
        };
        let before = writer.export().await?.tokens.len();
        writer.import(snapshot.clone()).await.map_err(|e| format!("{}: {e}", destination.store.shown()))?;
        let after = writer.export().await?;
        verify(&snapshot, &after)?;
        let users: BTreeSet<&str> = snapshot.tokens.iter().map(|t| t.username.as_str()).collect();
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "copied {} token(s) of {} user(s) and {} lockout counter(s) from {} to {}",
            snapshot.tokens.len(),
            users.len(),
            snapshot.lockouts.len(),
            source.store.shown(),
            destination.store.shown()
        )?;
        writeln!(
            out,
            "verified: the destination holds every copied token and counter as the source has it; it held {before} token(s) before, {} now",
            after.tokens.len()
        )?;
        Ok(())
    })
}

/// Every token and counter of `source` is in `copied` exactly as the source has it.
fn verify(source: &Snapshot, copied: &Snapshot) -> Result<(), CliError> {
    let kept: HashMap<i64, &TokenRow> = copied.tokens.iter().map(|t| (t.id, t)).collect();
    let differ = |a: &TokenRow, b: &TokenRow| {
        (&a.username, &a.name, a.params, &a.sealed, a.created_at, a.last_step, a.last_used_at, a.confirmed)
            != (&b.username, &b.name, b.params, &b.sealed, b.created_at, b.last_step, b.last_used_at, b.confirmed)
    };
    let wrong = source.tokens.iter().filter(|t| kept.get(&t.id).is_none_or(|k| differ(t, k))).count();
    let counters: HashMap<(&str, &str), &LockoutRecord> =
        copied.lockouts.iter().map(|l| ((l.factor.as_str(), l.username.as_str()), l)).collect();
    let wrong_counters =
        source.lockouts.iter().filter(|l| counters.get(&(l.factor.as_str(), l.username.as_str())).is_none_or(|k| *k != *l)).count();
    if wrong + wrong_counters > 0 {
        return Err(format!(
            "the destination does not hold {wrong} token(s) and {wrong_counters} counter(s) as the source has them: \
             was it written meanwhile? Run the copy again with the servers on the destination stopped"
        )
        .into());
    }
    Ok(())
}
