//! The portal's accept loop: HTTP/1.1 (hyper) over plain TCP or TLS (tokio-rustls, ring), with
//! the limits a server facing the Internet needs and `axum::serve` does not have:
//!
//! - `header_timeout`: the TLS handshake, and then each request head (also the next one on a
//!   kept-alive connection), must arrive within it, however slowly it trickles in;
//! - `idle_timeout`: a connection on which nothing is read or written for this long is closed
//!   (a stalled body upload, a client that stops reading);
//! - `request_timeout` (a layer in `router`): a whole request, reading its body included;
//! - `max_connections_per_address` from one client address (an IPv6 /64; not for trusted
//!   proxies, which carry everybody's connections): a connection over it is closed at once;
//! - `max_connections` open at once: a newcomer over it first displaces the oldest connection
//!   with no request running (see `Gate::admit`), and is closed at once only if there is none.
//!
//! Refused and displaced connections are counted, logged at most every few seconds, and
//! summed up when the portal stops.
//!
//! On shutdown it stops accepting and lets requests in flight finish (up to `GRACE`).

use std::collections::{BTreeMap, HashMap};
use std::io::BufReader;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::client_addr::host_key;
use super::{Portal, PortalSettings, router};

/// How long shutdown waits for requests in flight.
const GRACE: Duration = Duration::from_secs(10);
/// Per connection (hyper's minimum is 8 KiB).
const READ_BUFFER: usize = 32 * 1024;
/// At most one log line per this long about refused connections or failing accepts.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves until `shutdown` is cancelled: HTTPS with the configured certificate, else HTTP.
pub async fn serve(portal: Arc<Portal>, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    let settings = portal.settings.clone();
    let tls = match &settings.tls {
        Some(files) => Some(tls_acceptor(&files.chain, &files.key)?),
        None => None,
    };
    if tls.is_none() && settings.trusted_proxies.is_empty() {
        tracing::warn!(
            "portal: plain HTTP behind a reverse proxy, but [portal] trusted_proxies is empty: every request will appear to come from the proxy and share its rate limits; set trusted_proxies to the proxy's address"
        );
    }
    let connections = Arc::new(Connections {
        app: router(portal),
        tls,
        header_timeout: settings.header_timeout,
        idle_timeout: settings.idle_timeout,
        shutdown: shutdown.clone(),
    });
    let gate = Arc::new(Gate::new(&settings));
    let graceful = GracefulShutdown::new();
    let accept_errors = Throttled::default();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, say: back off rather than spin.
                accept_errors.log(|n| tracing::warn!(error = %e, errors = n, "portal: cannot accept connections"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(permit) = gate.admit(peer.ip()) else { continue };
        let (connections, watcher) = (Arc::clone(&connections), graceful.watcher());
        tokio::spawn(async move {
            tokio::select! {
                () = connections.serve(stream, peer, watcher, &permit.tracker) => {}
                // Dropping the connection closes it.
                () = permit.tracker.shed.cancelled() => {}
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("portal: requests still running {GRACE:?} after shutdown began; closing them");
    }
    tracing::info!(
        refused_over_max_connections = gate.refused_total.load(Ordering::Relaxed),
        refused_over_max_connections_per_address = gate.refused_per_address.load(Ordering::Relaxed),
        idle_closed_at_max_connections = gate.shed_idle.load(Ordering::Relaxed),
        "portal stopped"
    );
    Ok(())
}

fn tls_acceptor(cert: &Path, key: &Path) -> std::io::Result<TlsAcceptor> {
    let failed = |e: &dyn std::fmt::Display| std::io::Error::other(format!("portal TLS ({}, {}): {e}", cert.display(), key.display()));
    // Regular files of bounded size only: a FIFO would hang the start, /dev/zero fill memory.
    let open = |path: &Path| {
        crate::settings::read_text_file(path, 1024 * 1024).map(|pem| BufReader::new(std::io::Cursor::new(pem))).map_err(|e| failed(&e))
    };
    let chain = rustls_pemfile::certs(&mut open(cert)?).collect::<Result<Vec<_>, _>>().map_err(|e| failed(&e))?;
    if chain.is_empty() {
        return Err(failed(&"no certificate in the PEM file"));
    }
    let private_key = rustls_pemfile::private_key(&mut open(key)?).map_err(|e| failed(&e))?.ok_or_else(|| failed(&"no private key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| failed(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| failed(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What every connection shares.
struct Connections {
    app: Router,
    tls: Option<TlsAcceptor>,
    header_timeout: Duration,
    idle_timeout: Duration,
    shutdown: CancellationToken,
}

impl Connections {
    async fn serve(&self, stream: TcpStream, peer: SocketAddr, watcher: Watcher, tracker: &Arc<Tracker>) {
        let _ = stream.set_nodelay(true);
        let mut io = TimeoutStream::new(stream);
        io.set_read_timeout(Some(self.idle_timeout));
        io.set_write_timeout(Some(self.idle_timeout));
        let io = Box::pin(io);
        let Some(acceptor) = &self.tls else { return self.http(io, peer, watcher, tracker).await };
        let handshake = tokio::select! {
            () = self.shutdown.cancelled() => return,
            done = tokio::time::timeout(self.header_timeout, acceptor.accept(io)) => done,
        };
        match handshake {
            Ok(Ok(tls)) => self.http(tls, peer, watcher, tracker).await,
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "portal: TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "portal: no TLS handshake within header_timeout"),
        }
    }

    async fn http<I>(&self, io: I, peer: SocketAddr, watcher: Watcher, tracker: &Arc<Tracker>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (app, tracker, body_timeout) = (self.app.clone(), Arc::clone(tracker), self.header_timeout);
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            // What axum's `into_make_service_with_connect_info` would give the handlers.
            request.extensions_mut().insert(ConnectInfo(peer));
            let (app, tracker) = (app.clone(), Arc::clone(&tracker));
            async move {
                // The body is read first, within header_timeout, while the connection still
                // counts as idle: a client trickling a body cannot hold a place no one may take.
                let request = match read_body(request, body_timeout).await {
                    Ok(request) => request,
                    Err(status) => return Ok(status.into_response()),
                };
                let running = RequestRunning::start(&tracker);
                let response = app.oneshot(request).await;
                drop(running);
                // Held back (a failed sign-in leaves at one time after arrival) while counting as
                // idle: waiting out the delay takes no place a real request needs.
                if let Ok(response) = &response
                    && let Some(NotBefore(at)) = response.extensions().get::<NotBefore>().copied()
                {
                    tokio::time::sleep_until(at).await;
                }
                response
            }
        });
        let mut builder = http1::Builder::new();
        // The read buffer, and so the largest request head: hyper's ~400 KB default would let
        // max_connections slow clients hold 200 MB. The portal's heads are well under 2 KB.
        builder.timer(TokioTimer::new()).header_read_timeout(self.header_timeout).max_buf_size(READ_BUFFER);
        if let Err(e) = watcher.watch(builder.serve_connection(TokioIo::new(io), service)).await {
            tracing::debug!(%peer, error = %e, "portal: connection closed");
        }
    }
}

/// A response extension: do not send the response before then.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NotBefore(pub tokio::time::Instant);

/// The request with its body read (at most `MAX_BODY` bytes, within `within`), or the status to
/// answer instead.
async fn read_body(request: hyper::Request<Incoming>, within: Duration) -> Result<axum::extract::Request, StatusCode> {
    use http_body_util::BodyExt;
    let (parts, body) = request.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match tokio::time::timeout(within, limited.collect()).await {
        Ok(Ok(collected)) => Ok(axum::extract::Request::from_parts(parts, axum::body::Body::from(collected.to_bytes()))),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(StatusCode::PAYLOAD_TOO_LARGE),
        Ok(Err(_)) => Err(StatusCode::BAD_REQUEST),
        Err(_) => Err(StatusCode::REQUEST_TIMEOUT),
    }
}

/// The largest request body read: the portal's forms are far smaller (the router refuses more
/// than 16 KiB), so this only bounds memory.
const MAX_BODY: usize = 64 * 1024;

/// The connection caps: counts open connections, in all and per client address, and knows
/// which of them have no request running, oldest first, to make room for a newcomer.
struct Gate {
    open: Mutex<OpenConnections>,
    max_total: usize,
    max_per_address: usize,
    /// Trusted proxies: only the total cap applies to them.
    uncapped: Vec<IpNet>,
    refused_total: AtomicU64,
    refused_per_address: AtomicU64,
    shed_idle: AtomicU64,
    refusals: Throttled,
    sheddings: Throttled,
}

#[derive(Default)]
struct OpenConnections {
    next: u64,
    /// Every open connection, oldest first.
    live: BTreeMap<u64, Arc<Tracker>>,
    /// Only addresses with open connections are here, so it never outgrows `max_total`.
    per_address: HashMap<IpAddr, usize>,
}

impl OpenConnections {
    /// Stops counting a connection (closed, or shed to make room); idempotent.
    fn forget(&mut self, seq: u64) -> Option<Arc<Tracker>> {
        let tracker = self.live.remove(&seq)?;
        if let Some(a) = tracker.address
            && let Some(n) = self.per_address.get_mut(&a)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_address.remove(&a);
            }
        }
        Some(tracker)
    }
}

/// One admitted connection as the gate sees it.
struct Tracker {
    seq: u64,
    /// The address it counts against, when capped per address.
    address: Option<IpAddr>,
    /// Requests running on it: none while it waits for a TLS hello or a request head.
    requests: AtomicUsize,
    /// Cancelled when the gate closes the connection to make room.
    shed: CancellationToken,
}

/// Counts a request as running on its connection until dropped.
struct RequestRunning(Arc<Tracker>);

impl RequestRunning {
    fn start(tracker: &Arc<Tracker>) -> Self {
        tracker.requests.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(tracker))
    }
}

impl Drop for RequestRunning {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One admitted connection; dropping it frees its place.
struct Permit {
    gate: Arc<Gate>,
    tracker: Arc<Tracker>,
}

impl Gate {
    fn new(settings: &PortalSettings) -> Self {
        Self {
            open: Mutex::default(),
            max_total: settings.max_connections,
            max_per_address: settings.max_connections_per_address,
            uncapped: settings.trusted_proxies.clone(),
            refused_total: AtomicU64::new(0),
            refused_per_address: AtomicU64::new(0),
            shed_idle: AtomicU64::new(0),
            refusals: Throttled::default(),
            sheddings: Throttled::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OpenConnections> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A permit for a connection from `peer`, or `None` (counted and logged) when it is over a
    /// cap; the caller then drops the connection, which closes it.
    ///
    /// At `max_connections` the oldest connection with no request running is closed to make
    /// room, rather than the newcomer: connections that never finish a request head (slowloris)
    /// are always such, so they cannot lock real users out, while a browser's idle kept-alive
    /// connection costs it only a reconnect. Only when every connection is busy is the newcomer
    /// refused. (Finding one is a walk over at most `max_connections`, only at the cap.)
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Permit> {
        let peer = peer.to_canonical();
        let address = (!self.uncapped.iter().any(|net| net.contains(&peer))).then(|| host_key(peer));
        let mut open = self.lock();
        if address.and_then(|a| open.per_address.get(&a)).is_some_and(|&n| n >= self.max_per_address) {
            drop(open);
            self.refuse(peer, "max_connections_per_address", &self.refused_per_address);
            return None;
        }
        if open.live.len() >= self.max_total {
            let idle = open.live.values().find(|t| t.requests.load(Ordering::Relaxed) == 0).map(|t| t.seq);
            let Some(shed) = idle.and_then(|seq| open.forget(seq)) else {
                drop(open);
                self.refuse(peer, "max_connections", &self.refused_total);
                return None;
            };
            shed.shed.cancel();
            let n = self.shed_idle.fetch_add(1, Ordering::Relaxed) + 1;
            self.sheddings.log(|_| tracing::warn!(shed = n, "portal: at max_connections; closed the oldest idle connection"));
        }
        let seq = open.next;
        open.next += 1;
        let tracker = Arc::new(Tracker { seq, address, requests: AtomicUsize::new(0), shed: CancellationToken::new() });
        open.live.insert(seq, Arc::clone(&tracker));
        if let Some(a) = address {
            *open.per_address.entry(a).or_default() += 1;
        }
        Some(Permit { gate: Arc::clone(self), tracker })
    }

    fn refuse(&self, peer: IpAddr, cap: &'static str, counter: &AtomicU64) {
        let refused = counter.fetch_add(1, Ordering::Relaxed) + 1;
        self.refusals.log(|_| tracing::warn!(%peer, cap, refused, "portal: connection refused, over the cap"));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.lock().forget(self.tracker.seq);
    }
}

/// Logs at most once per `LOG_EVERY`, with how many events that line stands for.
#[derive(Default)]
struct Throttled {
    last: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

impl Throttled {
    fn log(&self, write: impl FnOnce(u64)) {
        let events = self.unlogged.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_none_or(|at| now.duration_since(at) >= LOG_EVERY) {
            *last = Some(now);
            self.unlogged.fetch_sub(events, Ordering::Relaxed);
            write(events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_total: usize, max_per_address: usize, uncapped: &[&str]) -> Arc<Gate> {
        let mut settings = crate::portal::tests::portal_settings();
        settings.max_connections = max_total;
        settings.max_connections_per_address = max_per_address;
        settings.trusted_proxies = uncapped.iter().map(|n| n.parse().unwrap()).collect();
        Arc::new(Gate::new(&settings))
    }

    #[test]
    fn connections_are_capped_per_address_and_in_all() {
        let gate = gate(5, 2, &["127.0.0.1/32"]);
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let (a, b) = (gate.admit(one).unwrap(), gate.admit(one).unwrap());
        assert!(gate.admit(one).is_none(), "a third from one address");
        let v6 = |s: &str| gate.admit(s.parse().unwrap());
        let c = v6("2001:db8::1").unwrap();
        let _d = v6("2001:db8::2").unwrap();
        assert!(v6("2001:db8::3").is_none(), "one IPv6 /64 counts as one address");
        drop(a);
        let _a = gate.admit(one).expect("a closed connection frees its place");
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let _p = gate.admit(proxy).expect("a trusted proxy has no per-address cap");
        assert_eq!(gate.refused_per_address.load(Ordering::Relaxed), 2);
        drop((b, _a, c, _d, _p));
        assert!(gate.lock().live.is_empty());
        assert!(gate.lock().per_address.is_empty(), "nothing left behind");
    }

    #[test]
    fn at_the_total_cap_the_oldest_idle_connection_makes_room() {
        let gate = gate(3, 3, &[]);
        let peer = |n: u8| IpAddr::from([192, 0, 2, n]);
        let mut held: Vec<Permit> = (1..=3).map(|n| gate.admit(peer(n)).unwrap()).collect();
        let busy = RequestRunning::start(&held[0].tracker);
        let newcomer = gate.admit(peer(9)).expect("room is made");
        assert!(!held[0].tracker.shed.is_cancelled(), "a connection with a request running stays");
        assert!(held[1].tracker.shed.is_cancelled(), "the oldest idle one goes");
        let shed = held.remove(1);
        assert_eq!(gate.lock().live.len(), 3);
        drop(shed);
        assert_eq!(gate.lock().live.len(), 3, "the shed one is not counted twice");
        let _running = [RequestRunning::start(&held[1].tracker), RequestRunning::start(&newcomer.tracker)];
        assert!(gate.admit(peer(10)).is_none(), "every connection busy: the newcomer is refused");
        assert_eq!((gate.shed_idle.load(Ordering::Relaxed), gate.refused_total.load(Ordering::Relaxed)), (1, 1));
        drop(busy);
    }
}
