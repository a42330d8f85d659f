//! `radmfa serve`: load the config, bind every socket, run until SIGTERM or SIGINT.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::reload::{Running, reload_on_hangup};
use super::{CliError, OpenFailed};
use crate::auth::{Authenticator, Services};
use crate::config::Config;
use crate::keys::{Keys, RELOAD_EVERY};
use crate::metrics::timed::{TimedDirectory, TimedGateway, TimedStore};
use crate::metrics::{AuditWatch, CounterSet, DirectoryWatch, Metrics, RadsecWatch, StoreAvailability};
use crate::server::{self, PortKind, Server};
use crate::store::{Store, StoreError};

pub fn serve(config_path: &Path) -> Result<(), CliError> {
    let mut config = Config::load(config_path)?;
    for warning in config.warnings.iter().chain(&super::file_mode_warnings(&config)) {
        tracing::warn!("{warning}");
    }
    super::create_key_on_first_start(&config)?;
    let keys = super::open_keys(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("radmfa").build()?;
    let served = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        // At once: until taken over, a SIGHUP (systemctl reload while the database is still
        // awaited) would end the process. Those that come before the server runs reload it then.
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let metrics = Arc::new(Metrics::new());
        let Some(store) = open_store_when_writable(&config, &keys, &shutdown).await? else { return Ok(()) };
        let store = TimedStore::wrap(store, Arc::clone(&metrics));
        let directory = TimedDirectory::wrap(super::open_directory(&config)?, Arc::clone(&metrics));
        let warming = Arc::clone(&directory);
        tokio::spawn(async move { warming.warm_up().await });
        let services = Services {
            directory: Arc::clone(&directory),
            store: store.clone(),
            sms: TimedGateway::wrap(super::open_gateway(&config)?, Arc::clone(&metrics)),
            keys: Arc::clone(&keys),
        };
        let sms_gateway = services.sms.kind();
        tracing::info!(clients = config.clients.len(), sms_gateway, "configuration loaded from {}", config_path.display());
        let mut sockets = Vec::new();
        let listen = config.server.listen.iter().map(|a| (a, PortKind::Auth));
        let accounting = config.server.accounting_listen.iter().map(|a| (a, PortKind::Accounting));
        for (address, kind) in listen.chain(accounting) {
            let socket = server::bind_udp(*address).map_err(|e| format!("cannot listen on {address}: {e}"))?;
            let bound = socket.local_addr()?;
            tracing::info!(address = %bound, kind = kind.as_str(), "listening");
            sockets.push((socket, kind));
        }
        if let Some(tls) = &config.server.tls {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
            if let Some(warning) = tls.certificate.expiry_warning(now) {
                tracing::warn!("{warning}");
            }
        }
        let mut tls_listeners = Vec::new();
        for address in config.server.tls.iter().flat_map(|tls| &tls.listen) {
            let listener = server::bind_tls(*address).map_err(|e| format!("cannot listen on {address} (tls_listen): {e}"))?;
            tracing::info!(address = %listener.local_addr()?, kind = "radsec", "listening");
            tls_listeners.push(listener);
        }
        let authenticator = Arc::new(Authenticator::new(services, config.auth.clone()));
        let portal = match &config.portal {
            Some(settings) => {
                let listener = tokio::net::TcpListener::bind(settings.listen)
                    .await
                    .map_err(|e| format!("portal: cannot listen on {}: {e}", settings.listen))?;
                tracing::info!(address = %listener.local_addr()?, kind = "portal", "listening");
                let portal = crate::portal::Portal::observed(
                    Arc::clone(&authenticator),
                    store.clone(),
                    Arc::clone(&keys),
                    settings.clone(),
                    Arc::clone(&metrics),
                );
                Some(tokio::spawn(crate::portal::serve(portal, listener, shutdown.clone())))
            }
            None => None,
        };
        let sms_stats = authenticator.sms_stats();
        let clients = std::mem::take(&mut config.clients);
        let running = Running::of(&config, &clients);
        let server = Arc::new(Server::new(
            config.server.clone(),
            clients,
            Arc::clone(&authenticator),
            Arc::clone(&config.dictionary),
            Arc::clone(&metrics),
        ));
        watch_everything(&metrics, &server, &sms_stats, &authenticator, &store);
        tokio::spawn(reload_on_hangup(
            hangups,
            config_path.to_path_buf(),
            running,
            Arc::clone(&server),
            Arc::clone(&authenticator),
            Arc::clone(&metrics),
            shutdown.clone(),
        ));
        if let Some(settings) = config.metrics.clone() {
            let listener = tokio::net::TcpListener::bind(settings.listen)
                .await
                .map_err(|e| format!("metrics: cannot listen on {}: {e}", settings.listen))?;
            tracing::info!(address = %listener.local_addr()?, kind = "metrics", "listening");
            tokio::spawn(crate::metrics::endpoint::serve(Arc::clone(&metrics), settings, listener, shutdown.clone()));
        }
        tokio::spawn(purge_periodically(store.clone(), config.audit.retention, shutdown.clone()));
        let audit_writer = tokio::spawn(authenticator.audit_trail().run(store.clone(), shutdown.clone()));
        tokio::spawn(watch_database(store.clone(), shutdown.clone()));
        tokio::spawn(probe_store(store, shutdown.clone()));
        tokio::spawn(reload_keys(keys, shutdown.clone()));
        notify_systemd(sd_notify::NotifyState::Ready);
        server.run(sockets, tls_listeners, shutdown).await;
        // The decisions' last events, written before the store closes.
        let _ = audit_writer.await;
        if let Some(portal) = portal
            && let Ok(Err(e)) = portal.await
        {
            tracing::error!(error = %e, "portal stopped with an error");
        }
        let counters = server.stats().snapshot().into_iter().chain(sms_stats.snapshot().into_iter().map(|(name, n)| (sms_name(name), n)));
        let stats: Vec<String> = counters.map(|(name, n)| format!("{name}={n}")).collect();
        authenticator.directory().log_totals();
        tracing::info!(stats = %stats.join(" "), "stopped");
        Ok::<(), CliError>(())
    });
    // A blocking task that never ends (a reload reading a file that never ends) must not keep
    // a stopped server from exiting.
    runtime.shutdown_timeout(Duration::from_secs(5));
    served
}

/// What the metrics endpoint reads at each scrape, besides what is recorded as it happens.
fn watch_everything(
    metrics: &Metrics,
    server: &Arc<Server>,
    sms_stats: &Arc<crate::sms::SmsStats>,
    authenticator: &Arc<Authenticator>,
    store: &Arc<dyn Store>,
) {
    let stats = server.stats();
    metrics.watch(CounterSet { prefix: "radius", labels: Vec::new(), read: move || stats.described() });
    // Weak: the server holds the metrics.
    let radsec = Arc::downgrade(server);
    metrics.watch(RadsecWatch(move || radsec.upgrade().map(|s| s.radsec_connections()).unwrap_or_default()));
    let sms = Arc::clone(sms_stats);
    // Whichever gateway sent them (a reload may change it): per gateway, see sms_send_seconds.
    metrics.watch(CounterSet { prefix: "sms", labels: Vec::new(), read: move || sms.described() });
    // The directory a reload put in place, not the one at start. Weak: the metrics are held by
    // what they watch (the timed store), and a cycle would keep the store from closing (and
    // folding its write-ahead log into the database file) at stop.
    metrics.watch(AuditWatch(Arc::downgrade(&authenticator.audit_trail())));
    let authenticator = Arc::downgrade(authenticator);
    metrics.watch(DirectoryWatch(move || authenticator.upgrade().and_then(|a| a.directory().status())));
    metrics.watch(StoreAvailability(Arc::downgrade(store)));
}

fn sms_name(name: &'static str) -> &'static str {
    match name {
        "sent" => "sms_sent",
        "failed" => "sms_failed",
        "pending" => "sms_pending",
        "late_sent" => "sms_late_sent",
        "late_failed" => "sms_late_failed",
        other => other,
    }
}

/// Opens the store; while the database is not writable (SQLite) or cannot be reached
/// (PostgreSQL), waits (and does not tell systemd it is ready, so the NAS keeps using its other
/// server) and tries again. `None`: stopped meanwhile.
async fn open_store_when_writable(
    config: &Config,
    keys: &Arc<Keys>,
    shutdown: &CancellationToken,
) -> Result<Option<Arc<dyn Store>>, CliError> {
    let database = config.store.shown();
    let mut said = None;
    loop {
        match super::connect_store(config, Arc::clone(keys), false).await {
            Ok(store) => {
                if said.is_some() {
                    tracing::info!(database = database.as_str(), "the database can be used now: starting");
                }
                return Ok(Some(store));
            }
            Err(OpenFailed::Store(StoreError::NotWritable(why))) => {
                if said.as_deref() != Some(why.as_str()) {
                    tracing::error!(
                        database = database.as_str(),
                        error = why.as_str(),
                        "the database is not writable: not ready until it is (trying again every 2 s)"
                    );
                    said = Some(why);
                }
            }
            Err(OpenFailed::Store(StoreError::Unavailable(why))) => {
                if said.as_deref() != Some(why.as_str()) {
                    tracing::error!(
                        database = database.as_str(),
                        error = why.as_str(),
                        "the database cannot be reached: not ready until it can (trying again every 2 s)"
                    );
                    said = Some(why);
                }
            }
            Err(OpenFailed::Refused(why)) => return Err(why.into()),
            Err(OpenFailed::Store(e)) => return Err(format!("{database}: {e}").into()),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            () = shutdown.cancelled() => return Ok(None),
        }
    }
}

/// Forgets used States and old SMS sends now and then, and audit events past `retention`, so
/// the store stays small, and folds the write-ahead log into the database file.
async fn purge_periodically(store: Arc<dyn Store>, retention: Duration, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(300));
    loop {
        tokio::select! {
            _ = every.tick() => {
                let now = crate::clock::now();
                if let Err(e) = store.purge(now).await {
                    tracing::warn!(error = %e, "store purge failed");
                }
                match store.purge_events(now - retention.as_secs() as crate::clock::UnixTime).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(events = n, "audit events past their retention purged"),
                    Err(e) => tracing::warn!(error = %e, "audit trail purge failed"),
                }
                // So that radmfa.db alone (a backup copy) holds what was written.
                if let Err(e) = store.checkpoint().await {
                    tracing::warn!(error = %e, "store checkpoint failed");
                }
            }
            () = shutdown.cancelled() => break,
        }
    }
}

/// Notices the database file being deleted or replaced under the running server: what it
/// writes from then on is lost at the next restart, which will refuse to start.
async fn watch_database(store: Arc<dyn Store>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    let mut last_said: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => break,
        }
        match (store.storage_problem(), last_said) {
            (Some(problem), None) => {
                tracing::error!(
                    problem = problem.as_str(),
                    "the database file is gone from under the server: restore it from a backup; a restart without it is refused"
                );
                last_said = Some(std::time::Instant::now());
            }
            (Some(problem), Some(at)) if at.elapsed() >= Duration::from_secs(300) => {
                tracing::error!(problem = problem.as_str(), "the database file is still gone from under the server");
                last_said = Some(std::time::Instant::now());
            }
            (None, Some(_)) => {
                tracing::info!("the database file is back in place");
                last_said = None;
            }
            _ => {}
        }
    }
}

/// Pings the store every 30 s (its clock compared with this node's), and every second while
/// the database cannot be used: a node that leaves Status-Server unanswered gets no logins from
/// a NAS that watches it, and so would never learn that the database is back.
async fn probe_store(store: Arc<dyn Store>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => break,
        }
        ticks = ticks.wrapping_add(1);
        if !store.available() || ticks.is_multiple_of(30) {
            // Its outcome is noted by the store itself (and said in the log when it changes).
            let _ = store.ping(crate::clock::now()).await;
        }
    }
}

/// Picks up a changed key file (`radmfa keys rotate`) without a restart.
async fn reload_keys(keys: Arc<Keys>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(RELOAD_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => break,
        }
        match keys.reload_if_changed() {
            Ok(true) => tracing::info!(current = keys.current().current_id(), "key file changed: reloaded"),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "key file changed but does not load: still using the keys read before"),
        }
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down: finishing requests in flight");
    notify_systemd(sd_notify::NotifyState::Stopping);
    shutdown.cancel();
}

fn notify_systemd(state: sd_notify::NotifyState<'_>) {
    // A no-op outside systemd (no NOTIFY_SOCKET).
    if let Err(e) = sd_notify::notify(false, &[state]) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}
