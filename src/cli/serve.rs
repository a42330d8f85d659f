//! `radmfa serve`: load the config, bind every socket, run until SIGTERM or SIGINT.

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::CliError;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::server::{self, PortKind, Server};
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

pub fn serve(config_path: &Path) -> Result<(), CliError> {
    let config = Config::load(config_path)?;
    super::create_key_on_first_start(&config)?;
    let (services, store) = super::open_services(&config)?;
    tracing::info!(
        clients = config.clients.len(),
        sms_gateway = services.sms.kind(),
        "configuration loaded from {}",
        config_path.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("radmfa").build()?;
    runtime.block_on(async move {
        let mut sockets = Vec::new();
        let listen = config.server.listen.iter().map(|a| (a, PortKind::Auth));
        let accounting = config.server.accounting_listen.iter().map(|a| (a, PortKind::Accounting));
        for (address, kind) in listen.chain(accounting) {
            let socket = server::bind_udp(*address).map_err(|e| format!("cannot listen on {address}: {e}"))?;
            let bound = socket.local_addr()?;
            tracing::info!(address = %bound, kind = kind.as_str(), "listening");
            sockets.push((socket, kind));
        }
        let authenticator = Arc::new(Authenticator::new(services, config.auth.clone()));
        let shutdown = CancellationToken::new();
        let portal = match &config.portal {
            Some(settings) => {
                let listener = tokio::net::TcpListener::bind(settings.listen)
                    .await
                    .map_err(|e| format!("portal: cannot listen on {}: {e}", settings.listen))?;
                tracing::info!(address = %listener.local_addr()?, kind = "portal", "listening");
                let portal = crate::portal::Portal::new(Arc::clone(&authenticator), settings.clone());
                Some(tokio::spawn(crate::portal::serve(portal, listener, shutdown.clone())))
            }
            None => None,
        };
        let server = Server::new(config.server.clone(), config.clients, authenticator, Arc::clone(&config.dictionary));
        tokio::spawn(stop_on_signal(shutdown.clone()));
        tokio::spawn(purge_periodically(store, shutdown.clone()));
        notify_systemd(sd_notify::NotifyState::Ready);
        server.run(sockets, shutdown).await;
        if let Some(portal) = portal {
            if let Ok(Err(e)) = portal.await {
                tracing::error!(error = %e, "portal stopped with an error");
            }
        }
        let stats: Vec<String> = server.stats().snapshot().iter().map(|(name, n)| format!("{name}={n}")).collect();
        tracing::info!(stats = %stats.join(" "), "stopped");
        Ok::<(), CliError>(())
    })
}

/// Forgets used States and old SMS sends now and then, so the store stays small.
async fn purge_periodically(store: Arc<SqliteStore>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(300));
    loop {
        tokio::select! {
            _ = every.tick() => {
                if let Err(e) = store.purge(crate::store::now()).await {
                    tracing::warn!(error = %e, "store purge failed");
                }
            }
            () = shutdown.cancelled() => break,
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
