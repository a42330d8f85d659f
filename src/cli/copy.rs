//! `radmfa store copy --from OLD.toml --to NEW.toml`: every token (its seed still sealed) and
//! every lockout counter from one store into another — SQLite to PostgreSQL when a second node
//! is added, or back. The destination must be another store (by the identity each store is
//! given when it is made, however its configuration spells it), its key file must open every
//! seed, and it must be empty or unchanged since the last copy into it (no server has used it:
//! a copy would roll back the codes it saw used, the tokens removed there, its locks) — all
//! checked before anything is written. Afterwards the destination is read back and compared.
//! Copying again takes what changed in the source since, so the last run can be made just
//! before the servers switch over. The audit trail and temporary codes are not copied (see
//! [`crate::store::Snapshot`]): the output says how many live codes stay behind.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use super::{CliError, OpenFailed, connect_store, open_keys, open_store};
use crate::config::Config;
use crate::store::sealed::seed_opens;
use crate::store::settings::BackendSettings;
use crate::store::sqlite::SqliteStore;

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
        if reader.identity().await? == writer.identity().await? {
            return Err(format!(
                "{} and {} name the same store ({} and {}): nothing to copy",
                from.display(),
                to.display(),
                source.store.shown(),
                destination.store.shown()
            )
            .into());
        }
        let before = writer.export().await?.tokens.len();
        writer.import(snapshot.clone()).await.map_err(|e| format!("{}: {e}", destination.store.shown()))?;
        let after = writer.export().await?;
        if after.digest() != snapshot.digest() {
            return Err(format!(
                "{}: read back, the destination does not hold the tokens and counters as copied: was it written meanwhile? \
                 Stop the servers that use it and copy again",
                destination.store.shown()
            )
            .into());
        }
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
            "verified: the destination holds every token and counter as the source has it; it held {before} token(s) before, {} now",
            after.tokens.len()
        )?;
        let live_codes = reader.list_temporary_codes(None, crate::clock::now()).await?.len();
        writeln!(
            out,
            "not copied: the audit trail (it stays in {}), {live_codes} live temporary code(s) (issue new ones once the servers use \
             the destination), portal sessions and SMS counts",
            source.store.shown()
        )?;
        Ok(())
    })
}
