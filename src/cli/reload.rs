//! Live reload: SIGHUP (`systemctl reload radmfa`) reads the configuration again and applies
//! what can change under a running server — the `[[client]]`s (with `conf.d/*.toml`), their
//! policies, the messages and second-factor settings, the dictionaries, the directory and the
//! SMS gateway. A configuration that fails its checks changes nothing: the one running goes on,
//! and the log says why. Sockets, the store, the portal and the metrics endpoint are what they
//! were at start; a change to them is reported as needing a restart.
//!
//! Challenges in flight survive: their States are sealed with the key file and their contexts
//! are in the store, neither of which a reload touches; a request already admitted finishes as
//! the client, directory and settings it began with.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::metrics::timed::{TimedDirectory, TimedGateway};
use crate::server::Server;
use crate::server::settings::ClientSettings;

/// What the running configuration was, to tell a reload what it changed.
pub(super) struct Running {
    /// The sections only a restart applies, as written.
    restart_only: BTreeMap<String, toml::Value>,
    /// Per client name: everything but the secret, and the secret.
    clients: BTreeMap<String, (String, Vec<u8>)>,
}

impl Running {
    /// `config` as it runs, with `clients` (taken out of it for the server).
    pub(super) fn of(config: &Config, clients: &[ClientSettings]) -> Self {
        Self { restart_only: config.restart_only.clone(), clients: described(clients) }
    }
}

fn described(clients: &[ClientSettings]) -> BTreeMap<String, (String, Vec<u8>)> {
    clients.iter().map(|c| (c.policy.name.clone(), (format!("{c:?}"), c.secret.expose().clone()))).collect()
}

/// Reloads at every SIGHUP (`hangups`, taken over at start: a SIGHUP's default is to end the
/// process) until `shutdown`.
pub(super) async fn reload_on_hangup(
    hangups: Option<tokio::signal::unix::Signal>,
    path: PathBuf,
    mut running: Running,
    server: Arc<Server>,
    authenticator: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let Some(mut hangups) = hangups else {
        tracing::error!("cannot install the SIGHUP handler: changes to the configuration need a restart");
        return;
    };
    loop {
        tokio::select! {
            _ = hangups.recv() => {}
            () = shutdown.cancelled() => return,
        }
        tracing::info!("SIGHUP: reading the configuration again from {}", path.display());
        // Reading files (users, dictionaries) blocks: off the threads that answer requests.
        let (path, server, authenticator, metrics, before) =
            (path.clone(), Arc::clone(&server), Arc::clone(&authenticator), Arc::clone(&metrics), running);
        let reloading = tokio::task::spawn_blocking(move || {
            let outcome = reload(&path, &before, &server, &authenticator, &metrics);
            (outcome, before)
        });
        running = match reloading.await {
            Ok((Ok(now), _)) => now,
            Ok((Err(e), before)) => {
                tracing::error!(error = %e, "reload failed: still running the configuration loaded before");
                before
            }
            Err(e) => {
                tracing::error!(error = %e, "reload failed: still running the configuration loaded before; no further reload is possible");
                return;
            }
        };
    }
}

/// Loads and checks the configuration, then applies it; nothing is applied if anything fails.
fn reload(
    path: &std::path::Path,
    running: &Running,
    server: &Server,
    authenticator: &Authenticator,
    metrics: &Arc<Metrics>,
) -> Result<Running, super::CliError> {
    let mut config = Config::load(path)?;
    for warning in config.warnings.iter().chain(&super::file_mode_warnings(&config)) {
        tracing::warn!("{warning}");
    }
    let directory = TimedDirectory::wrap(super::open_directory(&config)?, Arc::clone(metrics));
    let gateway = TimedGateway::wrap(super::open_gateway(&config)?, Arc::clone(metrics));
    let restart = config.needs_restart_for(&running.restart_only);
    let clients = std::mem::take(&mut config.clients);
    let now = Running::of(&config, &clients);
    let added: Vec<&String> = now.clients.keys().filter(|n| !running.clients.contains_key(*n)).collect();
    let removed: Vec<&String> = running.clients.keys().filter(|n| !now.clients.contains_key(*n)).collect();
    let changed: Vec<&String> =
        now.clients.iter().filter(|(n, c)| running.clients.get(*n).is_some_and(|old| old != *c)).map(|(n, _)| n).collect();

    // Everything is built and checked: from here on nothing fails.
    let warming = Arc::clone(&directory);
    tokio::spawn(async move { warming.warm_up().await });
    authenticator.reload(config.auth.clone(), directory, gateway);
    server.reload(clients, Arc::clone(&config.dictionary));
    tracing::info!(
        clients = now.clients.len(),
        added = ?added,
        removed = ?removed,
        changed = ?changed,
        drop_ins = config.drop_ins.len(),
        "configuration reloaded: clients, policies, messages, dictionaries, directory and SMS gateway"
    );
    if !restart.is_empty() {
        tracing::warn!(sections = ?restart, "these sections changed, and apply only at a restart (systemctl restart radmfa): still running them as they were");
    }
    Ok(now)
}
