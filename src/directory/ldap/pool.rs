//! The LDAP servers and the connections kept open to them.
//!
//! Each server has two sets of idle connections — bound as the service account (for searches),
//! and for user binds — that grow with the load up to `max_connections` operations in flight per
//! server and are kept, so a login costs the DC no TLS handshake. `pool_size` of each are opened
//! at start. Work beyond `max_connections` waits for a connection, one NAS at a time in turn;
//! the wait counts against the request's deadline, never against the server.
//!
//! Busy is not dead. A server is skipped for `dead_server_backoff` only when connecting to it
//! fails (refused, unreachable, TLS, the service account's bind) or operations on fresh
//! connections fail several times in a row — never because answers are slow under load — and
//! the last server not skipped is never skipped: with one DC, every request still tries it.
//! Each change of a server's state is one log line.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapResult, Scope, SearchEntry};

use super::LdapSettings;
use super::failure::{Failure, FailureKind};
use crate::fairness::FairGate;
use crate::tls::client_config;

/// Operations that failed on fresh connections, in a row, before a server is skipped.
const FAILURES_BEFORE_SKIP: u32 = 3;

/// Which identity a connection is bound as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The service account: searches and reads.
    Service,
    /// Whoever bound last: used only to bind again, never to search.
    UserBind,
}

/// What the directory did since start: logged at stop, read by `scripts/bench-ad`.
#[derive(Debug, Default)]
pub(super) struct Totals {
    pub searches: AtomicU64,
    /// User binds (password checks); the service account binds once per connection it opens
    /// (counted in `connects`).
    pub binds: AtomicU64,
    pub connects: AtomicU64,
    /// Operations that had to wait for a connection, and how long in all and at most.
    pub waited: AtomicU64,
    pub wait_micros: AtomicU64,
    pub wait_micros_max: AtomicU64,
    /// Operations and connections not answered within `timeout`. (A request given up by
    /// `request_timeout` while its operation waited is counted by the server, as `timed_out`.)
    pub timed_out: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A connection to a server, counted among its open ones while it lives (however its
/// operation ends: a request given up half-way drops it too).
pub(super) struct Conn {
    ldap: Ldap,
    open: Arc<AtomicUsize>,
    /// When it was last put back idle.
    idle_since: Instant,
}

impl Conn {
    fn new(ldap: Ldap, open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self { ldap, open: Arc::clone(open), idle_since: Instant::now() }
    }
}

/// How long a connection is kept idle. AD closes LDAP connections idle for 15 minutes
/// (MaxConnIdleTime) and firewalls forget quiet sessions, often silently: a bind sent on such a
/// connection is never answered, and is not sent again (AD may have counted it).
const IDLE_LIMIT: Duration = Duration::from_secs(5 * 60);

impl Drop for Conn {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::ops::Deref for Conn {
    type Target = Ldap;
    fn deref(&self) -> &Ldap {
        &self.ldap
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Ldap {
        &mut self.ldap
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    /// Failing, but the last server not skipped, so still tried.
    Failing,
    Skipped(Instant),
}

struct Health {
    state: State,
    failures_in_a_row: u32,
}

struct Server {
    url: String,
    health: Mutex<Health>,
    idle_service: Mutex<Vec<Conn>>,
    idle_bind: Mutex<Vec<Conn>>,
    /// Connections open to it, idle or in use.
    open: Arc<AtomicUsize>,
    /// Operations in flight on it; more wait, one NAS at a time in turn.
    gate: Arc<FairGate>,
    /// When "every connection in use" was last said, so it is said at most once a minute.
    said_full: Mutex<Option<Instant>>,
}

impl Server {
    fn idle(&self, role: Role) -> &Mutex<Vec<Conn>> {
        match role {
            Role::Service => &self.idle_service,
            Role::UserBind => &self.idle_bind,
        }
    }

    /// Whether the server is to be skipped now. When its back-off has passed, the one caller
    /// that notices is let through to try it — the others keep skipping it for another back-off
    /// — so a server that is still dead costs one request, not every request in flight.
    fn skipped(&self, now: Instant, backoff: Duration) -> bool {
        let mut health = lock(&self.health);
        match health.state {
            State::Skipped(until) if until > now => true,
            State::Skipped(_) => {
                health.state = State::Skipped(now + backoff);
                false
            }
            State::Up | State::Failing => false,
        }
    }
}

pub(super) struct Pool {
    settings: Arc<LdapSettings>,
    tls: Option<Arc<rustls::ClientConfig>>,
    servers: Vec<Server>,
    pub totals: Totals,
}

impl Pool {
    pub(super) fn new(settings: Arc<LdapSettings>) -> Result<Self, String> {
        if settings.urls.is_empty() {
            return Err("urls: at least one server is needed".into());
        }
        let tls = match &settings.ca_file {
            Some(path) if !settings.tls_insecure_skip_verify => Some(Arc::new(client_config(path)?)),
            _ => None,
        };
        if settings.tls_insecure_skip_verify {
            tracing::warn!("tls_insecure_skip_verify = true: LDAP server certificates are NOT checked; for a lab only");
        }
        let servers = settings
            .urls
            .iter()
            .map(|url| Server {
                url: url.clone(),
                health: Mutex::new(Health { state: State::Up, failures_in_a_row: 0 }),
                idle_service: Mutex::new(Vec::new()),
                idle_bind: Mutex::new(Vec::new()),
                open: Arc::default(),
                gate: FairGate::new(settings.max_connections),
                said_full: Mutex::new(None),
            })
            .collect();
        Ok(Self { settings, tls, servers, totals: Totals::default() })
    }

    /// Opens `pool_size` connections of each kind to the first server not skipped, and keeps
    /// them idle. Failures are logged as any connection failure is.
    pub(super) async fn warm_up(&self) {
        let Some(server) = self.servers.iter().find(|s| !s.skipped(Instant::now(), self.settings.dead_server_backoff)) else { return };
        for role in [Role::Service, Role::UserBind] {
            for _ in 0..self.settings.pool_size {
                match self.open(server, role).await {
                    Ok(ldap) => self.keep(server, role, ldap),
                    Err(failure) => {
                        self.connect_failed(server, &failure);
                        return;
                    }
                }
            }
        }
        tracing::debug!(url = %server.url, connections = server.open.load(Ordering::Relaxed), "LDAP connections opened at start");
    }

    /// Runs `op` on a connection of `role`: an idle one of the first server not skipped, or a
    /// new one (a server that cannot be connected to gives way to the next). A pooled
    /// connection that fails (the server may have closed it while idle) is replaced and the
    /// operation tried once more — unless it was sent and not answered in time. The operation
    /// takes the connection and hands it back with its result.
    pub(super) async fn run<T, Op>(&self, role: Role, op: impl Fn(Conn) -> Op) -> Result<T, Failure>
    where
        Op: Future<Output = (Conn, Result<T, Failure>)>,
    {
        let mut failures = Vec::new();
        for server in self.candidates() {
            let _turn = self.enter(server).await;
            let mut kept = take_idle(server, role);
            let mut retried = false;
            loop {
                let (conn, fresh) = match kept.take() {
                    Some(conn) => (conn, false),
                    None => match self.open(server, role).await {
                        Ok(conn) => (conn, true),
                        Err(failure) => {
                            // The next server, if there is one, may answer.
                            self.connect_failed(server, &failure);
                            failures.push(failure);
                            break;
                        }
                    },
                };
                let (conn, result) = op(conn).await;
                let failure = match result {
                    Ok(value) => {
                        self.succeeded(server);
                        self.keep(server, role, conn);
                        return Ok(value);
                    }
                    Err(failure) if failure.kind == FailureKind::Unusable => {
                        // The server answered: it is well, and so is the connection.
                        self.succeeded(server);
                        self.keep(server, role, conn);
                        return Err(failure);
                    }
                    Err(failure) => failure,
                };
                drop(conn);
                // A kept connection may have been closed or lost while it was idle (a firewall
                // forgets idle sessions): once, a new one. Not for a bind sent and unanswered:
                // AD may have counted it, and would count a wrong password twice.
                let unanswered_bind = failure.kind == FailureKind::TimedOut && role == Role::UserBind;
                let resend = !(fresh || retried || unanswered_bind);
                if !resend {
                    if fresh && failure.kind != FailureKind::TimedOut {
                        self.operation_failed(server, &failure);
                    }
                    return Err(failure);
                }
                tracing::debug!(url = %server.url, error = %failure.message, "LDAP operation failed on a kept connection; trying a new one");
                retried = true;
            }
        }
        // Refused only when every server refused: one that did not answer in time may be busy.
        let unanswered = failures.iter().position(|f| f.kind == FailureKind::TimedOut);
        let failure = match unanswered {
            Some(i) => failures.swap_remove(i),
            None => failures.pop().unwrap_or_else(|| Failure::refused("no LDAP server to ask".into())),
        };
        Err(failure)
    }

    /// The servers to try, in order: those not skipped, then — when every one of those failed
    /// to connect — the skipped ones, so a DC that is back is used before its back-off ends.
    fn candidates(&self) -> Vec<&Server> {
        let now = Instant::now();
        let backoff = self.settings.dead_server_backoff;
        let (usable, skipped): (Vec<&Server>, Vec<&Server>) = self.servers.iter().partition(|s| !s.skipped(now, backoff));
        usable.into_iter().chain(skipped).collect()
    }

    /// A place among the server's operations in flight; a wait is counted.
    async fn enter(&self, server: &Server) -> crate::fairness::GatePass {
        let asked = Instant::now();
        let pass = server.gate.enter().await;
        let waited = asked.elapsed();
        if waited >= Duration::from_millis(1) {
            let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
            bump(&self.totals.waited);
            self.totals.wait_micros.fetch_add(micros, Ordering::Relaxed);
            self.totals.wait_micros_max.fetch_max(micros, Ordering::Relaxed);
            let mut said = lock(&server.said_full);
            if said.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                *said = Some(Instant::now());
                tracing::info!(
                    url = %server.url,
                    max_connections = self.settings.max_connections,
                    waited_ms = waited.as_millis() as u64,
                    "every LDAP connection to the server is in use: requests wait their turn (said at most once a minute)"
                );
            }
        }
        pass
    }

    /// A new connection of `role` to `server`, bound as the service account for `Service`.
    async fn open(&self, server: &Server, role: Role) -> Result<Conn, Failure> {
        bump(&self.totals.connects);
        let url = &server.url;
        let timeout = self.settings.timeout;
        // The whole of connecting (TCP, TLS, StartTLS) is bounded below, so that running out of
        // time reads as unanswered, not as refused.
        let mut conn_settings = LdapConnSettings::new();
        if self.settings.starttls && url.starts_with("ldap://") {
            conn_settings = conn_settings.set_starttls(true);
        }
        if self.settings.tls_insecure_skip_verify {
            conn_settings = conn_settings.set_no_tls_verify(true);
        } else if let Some(config) = &self.tls {
            conn_settings = conn_settings.set_config(Arc::clone(config));
        }
        let connecting = LdapConnAsync::with_settings(conn_settings, url);
        let (conn, ldap) = match tokio::time::timeout(timeout, connecting).await {
            // Unanswered is not refused: a DC busy with handshakes answers late.
            Err(_) | Ok(Err(ldap3::LdapError::Timeout { .. })) => {
                return Err(self.unanswered(format!("{url}: no connection within {timeout:?}")));
            }
            Ok(Err(e)) => return Err(Failure::refused(format!("{url}: {e}"))),
            Ok(Ok(connected)) => connected,
        };
        ldap3::drive!(conn);
        let mut ldap = Conn::new(ldap, &server.open);
        if role == Role::Service {
            let bound = self.within(ldap.simple_bind(&self.settings.bind_dn, self.settings.bind_password.expose())).await;
            let refused = match bound {
                Ok(result) if result.rc == 0 => None,
                Ok(result) => {
                    tracing::error!(rc = result.rc, bind_dn = %self.settings.bind_dn, "the service account cannot bind: check bind_dn and bind_password");
                    Some(format!("{url}: the service account's bind answered result {}: {}", result.rc, result.text))
                }
                Err(failure) => {
                    return Err(Failure { message: format!("{url}: the service account's bind: {}", failure.message), ..failure });
                }
            };
            if let Some(message) = refused {
                return Err(Failure::refused(message));
            }
        }
        tracing::debug!(url = %server.url, open = server.open.load(Ordering::Relaxed), "LDAP connection opened");
        Ok(ldap)
    }

    /// Connects to each server in turn as a login would (TCP, TLS with the certificate
    /// checked, the service account's bind), reads `base_dn` and each of `required_groups`, and
    /// says what happened: for `check-config --connect`. Touches no server's state.
    pub(super) async fn probe(&self) -> Vec<ServerProbe> {
        let mut probes = Vec::new();
        for server in &self.servers {
            let started = Instant::now();
            let transport = if server.url.starts_with("ldaps://") {
                "LDAPS"
            } else if self.settings.starttls {
                "StartTLS"
            } else {
                "plain LDAP"
            };
            let mut steps = Vec::new();
            // An admin waiting at a prompt: at most PROBE_LIMIT per server, whatever `timeout`.
            let opened = match tokio::time::timeout(PROBE_LIMIT, self.open(server, Role::Service)).await {
                Ok(opened) => opened,
                Err(_) => Err(Failure::refused(format!("{}: no connection and bind within {PROBE_LIMIT:?}", server.url))),
            };
            let outcome = match opened {
                Err(failure) => Err(explain(&failure.message)),
                Ok(mut ldap) => {
                    let certificate = if transport == "plain LDAP" {
                        "no TLS: passwords cross the network in clear".to_owned()
                    } else if self.settings.tls_insecure_skip_verify {
                        "certificate NOT checked (tls_insecure_skip_verify)".to_owned()
                    } else {
                        match &self.settings.ca_file {
                            Some(ca) => format!("certificate verified against {}", ca.display()),
                            None => "certificate verified against the system's CAs".to_owned(),
                        }
                    };
                    steps.push(format!("{transport}, {certificate}"));
                    steps.push(format!("bound as {}", self.settings.bind_dn));
                    let mut outcome = Ok(());
                    let base = std::iter::once(("base_dn", &self.settings.base_dn));
                    let groups = self.settings.required_groups.iter().map(|g| ("required group", g));
                    for (what, dn) in base.chain(groups) {
                        let read =
                            tokio::time::timeout(PROBE_LIMIT, self.search(&mut ldap, dn, Scope::Base, "(objectClass=*)", vec!["1.1"]));
                        let read = read.await.unwrap_or_else(|_| Err(Failure::refused(format!("no answer within {PROBE_LIMIT:?}"))));
                        match read {
                            Ok((entries, result)) if result.rc == 0 && entries.len() == 1 => steps.push(format!("{what} {dn} readable")),
                            Ok((_, result)) if result.rc == 32 => {
                                outcome = Err(format!("{what} {dn} does not exist (or the service account cannot see it)"));
                                break;
                            }
                            Ok((_, result)) => {
                                outcome = Err(format!("reading {what} {dn} answered result {}: {}", result.rc, result.text));
                                break;
                            }
                            Err(failure) => {
                                outcome = Err(format!("reading {what} {dn}: {}", failure.message));
                                break;
                            }
                        }
                    }
                    outcome
                }
            };
            probes.push(ServerProbe { url: server.url.clone(), steps, outcome, took: started.elapsed() });
        }
        probes
    }

    /// Keeps a connection that worked, up to `max_connections` idle of its kind.
    fn keep(&self, server: &Server, role: Role, mut conn: Conn) {
        let mut idle = lock(server.idle(role));
        if idle.len() < self.settings.max_connections {
            conn.idle_since = Instant::now();
            idle.push(conn);
        }
    }

    /// One operation under `timeout`. (ldap3's own `with_timeout` covers only the next call on
    /// a connection, so a pooled one would wait forever.) A connection whose operation timed out
    /// is dropped, never pooled: its answer may still come.
    pub(super) async fn within<T>(&self, op: impl Future<Output = Result<T, ldap3::LdapError>>) -> Result<T, Failure> {
        match tokio::time::timeout(self.settings.timeout, op).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(self.unanswered(format!("no answer within {:?}", self.settings.timeout))),
        }
    }

    /// A search, counted.
    pub(super) async fn search(
        &self,
        ldap: &mut Ldap,
        base: &str,
        scope: Scope,
        filter: &str,
        attributes: Vec<&str>,
    ) -> Result<(Vec<SearchEntry>, LdapResult), Failure> {
        bump(&self.totals.searches);
        let ldap3::SearchResult(entries, result) = self.within(ldap.search(base, scope, filter, attributes)).await?;
        Ok((entries.into_iter().map(SearchEntry::construct).collect(), result))
    }

    /// A user's bind, counted.
    pub(super) async fn bind(&self, ldap: &mut Ldap, dn: &str, password: &str) -> Result<LdapResult, Failure> {
        bump(&self.totals.binds);
        self.within(ldap.simple_bind(dn, password)).await
    }

    /// A failure for what was not answered within `timeout`, counted.
    fn unanswered(&self, message: String) -> Failure {
        bump(&self.totals.timed_out);
        Failure { message, kind: FailureKind::TimedOut }
    }

    fn succeeded(&self, server: &Server) {
        let mut health = lock(&server.health);
        health.failures_in_a_row = 0;
        if health.state != State::Up {
            health.state = State::Up;
            tracing::info!(url = %server.url, "LDAP server answers again");
        }
    }

    fn connect_failed(&self, server: &Server, failure: &Failure) {
        self.failed(server, failure, true);
    }

    fn operation_failed(&self, server: &Server, failure: &Failure) {
        self.failed(server, failure, false);
    }

    /// Skips the server for the back-off — when connecting failed, or operations on fresh
    /// connections failed several times in a row — unless it is the last server not skipped.
    fn failed(&self, server: &Server, failure: &Failure, connecting: bool) {
        let now = Instant::now();
        let others_usable =
            self.servers.iter().any(|s| !std::ptr::eq(s, server) && !matches!(lock(&s.health).state, State::Skipped(until) if until > now));
        let mut health = lock(&server.health);
        health.failures_in_a_row += 1;
        if !connecting && health.failures_in_a_row < FAILURES_BEFORE_SKIP {
            tracing::debug!(url = %server.url, error = %failure.message, "LDAP operation failed");
            return;
        }
        let backoff = self.settings.dead_server_backoff;
        let next = if others_usable { State::Skipped(now + backoff) } else { State::Failing };
        let was = health.state;
        health.state = next;
        match (was, next) {
            (State::Skipped(_), State::Skipped(_)) | (State::Failing, State::Failing) => {
                tracing::debug!(url = %server.url, error = %failure.message, "LDAP server still failing");
            }
            (_, State::Skipped(_)) => {
                tracing::warn!(url = %server.url, error = %failure.message, ?backoff, "LDAP server failing; the other servers are asked until the back-off has passed");
            }
            _ => {
                tracing::warn!(url = %server.url, error = %failure.message, "LDAP server failing, and no other server is available: still asking it");
            }
        }
    }

    /// Each server's state and connections, and the totals, for the metrics endpoint.
    pub(super) fn status(&self) -> crate::directory::DirectoryStatus {
        let t = &self.totals;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let servers = self
            .servers
            .iter()
            .map(|server| {
                let state = match lock(&server.health).state {
                    State::Up => "up",
                    State::Failing => "failing",
                    State::Skipped(_) => "skipped",
                };
                let (free, waiting) = server.gate.load();
                let max_connections = self.settings.max_connections.max(1);
                crate::directory::ServerStatus {
                    url: server.url.clone(),
                    state,
                    open: server.open.load(Ordering::Relaxed),
                    idle_service: lock(&server.idle_service).len(),
                    idle_bind: lock(&server.idle_bind).len(),
                    in_flight: max_connections.saturating_sub(free),
                    waiting,
                    max_connections,
                }
            })
            .collect();
        crate::directory::DirectoryStatus {
            servers,
            searches: get(&t.searches),
            binds: get(&t.binds),
            connects: get(&t.connects),
            waited: get(&t.waited),
            wait_seconds: get(&t.wait_micros) as f64 / 1e6,
            timed_out: get(&t.timed_out),
        }
    }

    /// The counters, for the line logged at stop.
    pub(super) fn log_totals(&self) {
        let t = &self.totals;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let open: usize = self.servers.iter().map(|s| s.open.load(Ordering::Relaxed)).sum();
        tracing::info!(
            searches = get(&t.searches),
            binds = get(&t.binds),
            connects = get(&t.connects),
            open,
            waited = get(&t.waited),
            wait_ms_total = get(&t.wait_micros) / 1000,
            wait_ms_max = get(&t.wait_micros_max) / 1000,
            timed_out = get(&t.timed_out),
            "directory totals"
        );
    }
}

/// How long `check-config --connect` waits for one step at one server.
const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// What `check-config --connect` found at one server.
#[derive(Debug)]
pub struct ServerProbe {
    pub url: String,
    /// What worked, in order.
    pub steps: Vec<String>,
    /// Why it stopped, if it did, with a hint at the setting to change.
    pub outcome: Result<(), String>,
    pub took: Duration,
}

/// A connection failure, with what usually causes it.
fn explain(message: &str) -> String {
    let hint = if message.contains("UnknownIssuer") || message.contains("unknown issuer") {
        "the DC's certificate is not signed by a CA radmfa trusts: set ca_file to the CA that issued it"
    } else if message.contains("NotValidForName") || message.contains("not valid for name") {
        "the DC's certificate does not name this host: put the name the certificate carries in urls"
    } else if message.contains("Expired") || message.contains("expired") {
        "the DC's certificate has expired (or this machine's clock is wrong)"
    } else if message.contains("data 52e") || message.contains("result 49") || message.contains("rc=49") {
        "invalid credentials: check bind_dn and bind_password (AD 52e: wrong password or unknown DN)"
    } else if message.contains("data 533") {
        "the service account is disabled"
    } else if message.contains("data 775") {
        "the service account is locked out"
    } else if message.contains("data 532") || message.contains("data 773") {
        "the service account's password has expired or must be changed"
    } else if message.contains("Connection refused") {
        "nothing listens there: check the host and port in urls (LDAPS is 636, LDAP 389)"
    } else if message.contains("no connection within") {
        "no answer: a firewall in the way, or the wrong host"
    } else if message.contains("HandshakeFailure") || message.contains("CorruptMessage") || message.contains("InvalidContentType") {
        "the TLS handshake failed: is it ldaps:// on a port that speaks plain LDAP (use ldap:// with starttls = true)?"
    } else {
        return message.to_owned();
    };
    format!("{message} — {hint}")
}

/// The connection of `role` kept last (closed ones and those idle past `IDLE_LIMIT` dropped).
fn take_idle(server: &Server, role: Role) -> Option<Conn> {
    let mut idle = lock(server.idle(role));
    // Kept in the order they were put back: the oldest first.
    let stale = idle.iter().take_while(|c| c.idle_since.elapsed() >= IDLE_LIMIT).count();
    if stale > 0 {
        idle.drain(..stale);
        tracing::debug!(url = %server.url, closed = stale, "LDAP connections idle too long closed");
    }
    while let Some(mut conn) = idle.pop() {
        if !conn.is_closed() {
            return Some(conn);
        }
    }
    None
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
