//! `radmfa bench`: a RADIUS load generator, so every performance figure is measured the same way.
//!
//! N workers each keep one request (or login flow) outstanding on their own UDP socket for a
//! duration or a total count, verify every response's authenticator, and record the latency. No
//! retransmits: a request unanswered within the timeout counts as a timeout.
//!
//! Flows (`append`, `challenge`) log in users from a seeds file, computing each code from the
//! user's TOTP seed, and never reuse a time step for a user (the server would refuse it as a
//! replay) unless told the server does not mind (see `steps`).
//!
//! With a rate (`rate`), requests go out open-loop instead: at that rate whatever the answers,
//! as a flood or a password spray arrives.
//!
//! With `tls`, the workers' requests go over a few kept RadSec or RADIUS/1.1 connections
//! instead, many outstanding on each (see `radsec`).
//!
//! `ldap-bind` measures the directory instead of a RADIUS server (see `ldap`).

mod ldap;
mod radsec;
mod rate;
mod report;
mod request;
mod steps;

pub use ldap::LdapBindOptions;
pub use radsec::{Connections, RadiusVersion, TlsOptions};
pub use report::{Answers, Report};
pub use steps::{StepOptions, StepPolicy};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::net::UdpSocket;

use crate::radius::{self, Code, Packet, attr};
use crate::secret::Secret;
use request::Request;
use steps::{Claim, UserSteps};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchKind {
    /// Access-Request with User-Name and User-Password: the whole authentication path.
    Access,
    /// Status-Server: the codec and receive loop alone, no directory.
    StatusServer,
    /// One request per login: password with the TOTP code appended.
    Append,
    /// Two requests per login: the password, then the code with the State of the challenge.
    Challenge,
    /// LDAP simple binds as the seeds file's users, on kept connections: no RADIUS at all.
    LdapBind,
}

/// A user the flows log in: `user password base32-seed` per line of the seeds file.
#[derive(Debug, Clone)]
pub struct BenchUser {
    pub user: String,
    pub password: Secret<String>,
    pub seed: Secret<Vec<u8>>,
}

/// Reads a seeds file: one `user password base32-seed` per line; `#` starts a comment.
pub fn read_seeds(text: &str) -> Result<Vec<BenchUser>, String> {
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [user, password, seed] = fields.as_slice() else {
            return Err(format!("line {}: expected `user password base32-seed`", i + 1));
        };
        let seed = totp_rs::Secret::Encoded(seed.to_string()).to_bytes().map_err(|_| format!("line {}: the seed is not base32", i + 1))?;
        users.push(BenchUser { user: user.to_string(), password: Secret::new(password.to_string()), seed: Secret::new(seed) });
    }
    Ok(users)
}

#[derive(Debug)]
pub struct BenchOptions {
    pub server: SocketAddr,
    pub secret: Secret<Vec<u8>>,
    pub user: String,
    pub password: Secret<Vec<u8>>,
    pub kind: BenchKind,
    pub concurrency: usize,
    /// Stop after this long...
    pub duration: Option<Duration>,
    /// ...or after this many requests, whichever comes first.
    pub count: Option<u64>,
    pub timeout: Duration,
    pub message_authenticator: bool,
    /// Users for the flows.
    pub users: Vec<BenchUser>,
    /// For `Access`: names to cycle through instead of `user` (a spray over many accounts).
    pub names: Vec<String>,
    /// Send open-loop at this many requests per second instead of keeping `concurrency` outstanding.
    pub rate: Option<u32>,
    /// The local address to send from (a NAS's address, when the server has several clients).
    pub bind: Option<SocketAddr>,
    pub totp: crate::otp::TotpParams,
    /// Which time steps the flows' codes come from.
    pub steps: StepOptions,
    /// The flows' used steps, read before and written after the run: a later run against the
    /// same server then sends no code it has seen.
    pub step_state: Option<std::path::PathBuf>,
    /// For `LdapBind`.
    pub ldap: Option<LdapBindOptions>,
    /// Over RadSec or RADIUS/1.1 instead of UDP.
    pub tls: Option<TlsOptions>,
}

pub async fn run(options: BenchOptions) -> std::io::Result<Report> {
    let options = Arc::new(options);
    if options.kind == BenchKind::LdapBind {
        let ldap = options.ldap.clone().ok_or_else(|| std::io::Error::other("--kind ldap-bind needs --ldap-url and --ca-file"))?;
        let mut report = ldap::run(options, &ldap).await?;
        report.transport = "ldap";
        return Ok(report);
    }
    if let Some(rate) = options.rate {
        if options.tls.is_some() {
            return Err(std::io::Error::other("--rate (open loop) goes over UDP only, not with --tls"));
        }
        let mut report = rate::run(options, rate).await?;
        report.transport = "udp";
        return Ok(report);
    }
    let remaining = Arc::new(AtomicU64::new(options.count.unwrap_or(u64::MAX)));
    let started = Instant::now();
    let deadline = options.duration.map(|d| started + d);
    let flows = matches!(options.kind, BenchKind::Append | BenchKind::Challenge);
    let workers_n = options.concurrency.max(1);
    if flows && options.users.is_empty() {
        return Err(std::io::Error::other("no users to log in: give --seeds"));
    }
    let users = Arc::new(UserSteps::new(options.users.len(), options.steps.clone()));
    let names: Vec<&str> = options.users.iter().map(|u| u.user.as_str()).collect();
    if let Some(path) = &options.step_state {
        match std::fs::read_to_string(path) {
            Ok(text) => users.load(&names, &text).map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(std::io::Error::other(format!("{}: {e}", path.display()))),
        }
    }
    let pool = match &options.tls {
        Some(tls) => Some(Arc::new(radsec::Pool::open(&options, tls).await?)),
        None => None,
    };
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..workers_n {
        let transport = match &pool {
            // Each worker keeps to one connection: a challenge's two steps go on the same one.
            Some(pool) => Transport::Tls { pool: Arc::clone(pool), slot: i % pool.len() },
            None => Transport::Udp(bound_socket(&options).await?),
        };
        workers.spawn(worker(transport, Arc::clone(&options), Arc::clone(&remaining), deadline, Arc::clone(&users)));
    }
    let mut report = Report { transport: options.tls.as_ref().map_or("udp", |t| t.version.as_str()), ..Report::default() };
    while let Some(joined) = workers.join_next().await {
        report.merge(joined.map_err(std::io::Error::other)??);
    }
    report.elapsed = started.elapsed();
    if let Some(pool) = &pool {
        report.connections = Some(pool.finish().await);
        if report.requests() > 0 && report.requests() == report.closed {
            let why = report.connections.as_ref().map(|c| c.closed_because.join("; ")).unwrap_or_default();
            return Err(std::io::Error::other(format!(
                "no request was answered: the connection closed ({why}); is this certificate a TLS [[client]] of the server?"
            )));
        }
    }
    if let Some(path) = &options.step_state {
        users.save(&names, path).map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
    }
    report.latencies.sort_unstable();
    report.first_steps.sort_unstable();
    report.second_steps.sort_unstable();
    Ok(report)
}

/// A UDP socket from the `bind` address (or any), connected to the server.
async fn bound_socket(options: &BenchOptions) -> std::io::Result<UdpSocket> {
    let any: SocketAddr = if options.server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket = UdpSocket::bind(options.bind.unwrap_or(any)).await?;
    socket.connect(options.server).await?;
    Ok(socket)
}

/// What became of one request.
pub(super) enum Answer {
    Reply(Packet, Duration),
    Timeout,
    Invalid,
    /// Its connection closed before the answer came (TLS).
    Closed,
}

/// Where a worker's requests go.
enum Transport {
    Udp(UdpSocket),
    /// Connection `slot` of the pool.
    Tls {
        pool: Arc<radsec::Pool>,
        slot: usize,
    },
}

enum Client<'a> {
    Udp(UdpClient<'a>),
    Tls { pool: &'a radsec::Pool, slot: usize, options: &'a BenchOptions },
}

impl Client<'_> {
    /// Sends `request` and waits for its answer.
    async fn ask(&mut self, request: &Request<'_>) -> std::io::Result<Answer> {
        match self {
            Self::Udp(udp) => udp.ask(request).await,
            Self::Tls { pool, slot, options } => pool.ask(*slot, request, options).await,
        }
    }
}

struct UdpClient<'a> {
    socket: &'a UdpSocket,
    buf: Vec<u8>,
    identifier: u8,
    options: &'a BenchOptions,
}

impl UdpClient<'_> {
    async fn ask(&mut self, request: &Request<'_>) -> std::io::Result<Answer> {
        self.identifier = self.identifier.wrapping_add(1);
        let mut authenticator = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut authenticator);
        let wire = request.signed(self.identifier, authenticator, self.options.secret.expose())?;
        let sent_at = Instant::now();
        self.socket.send(&wire).await?;
        let answer_by = sent_at + self.options.timeout;
        loop {
            let Ok(received) = tokio::time::timeout_at(answer_by.into(), self.socket.recv(&mut self.buf)).await else {
                return Ok(Answer::Timeout);
            };
            let datagram = self.buf.get(..received?).unwrap_or_default();
            let Ok(reply) = Packet::decode(datagram) else { continue };
            if reply.identifier != self.identifier {
                continue; // a late answer to a request that already timed out
            }
            return Ok(request::check_signed(datagram, reply, &authenticator, self.options.secret.expose(), sent_at.elapsed()));
        }
    }
}

fn count(report: &mut Report, answer: &Answer) {
    let mut answers = Answers::default();
    answers.count(answer);
    report.accepts += answers.accepts;
    report.rejects += answers.rejects;
    report.challenges += answers.challenges;
    report.timeouts += answers.timeouts;
    report.invalid += answers.invalid;
    report.closed += answers.closed;
}

async fn worker(
    transport: Transport,
    options: Arc<BenchOptions>,
    remaining: Arc<AtomicU64>,
    deadline: Option<Instant>,
    users: Arc<UserSteps>,
) -> std::io::Result<Report> {
    let mut report = Report::default();
    let mut client = match &transport {
        Transport::Udp(socket) => {
            Client::Udp(UdpClient { socket, buf: vec![0u8; radius::MAX_PACKET_LEN], identifier: rand::random(), options: &options })
        }
        Transport::Tls { pool, slot } => Client::Tls { pool, slot: *slot, options: &options },
    };
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err() {
            break;
        }
        match options.kind {
            BenchKind::Access | BenchKind::StatusServer | BenchKind::LdapBind => {
                let answer = client.ask(&Request::simple(&options, &options.user)).await?;
                if let Answer::Reply(_, latency) = &answer {
                    report.latencies.push(*latency);
                }
                count(&mut report, &answer);
            }
            BenchKind::Append | BenchKind::Challenge => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
                let (slot, step) = match users.claim(now) {
                    Claim::Login { user, step } => (user, step),
                    claim @ (Claim::Starved(wait) | Claim::TooLate(wait)) => {
                        let wait = deadline.map_or(wait, |d| wait.min(d.saturating_duration_since(Instant::now())));
                        match claim {
                            Claim::TooLate(_) => report.too_late += 1,
                            _ => report.starved += 1,
                        }
                        report.waited += wait;
                        tokio::time::sleep(wait).await;
                        remaining.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                let user = &options.users[slot];
                let code = options.totp.code_at_step(user.seed.expose(), step);
                if let Some(latency) = flow(&mut client, &options, user, code.expose(), &mut report).await? {
                    users.record_latency(latency);
                }
            }
        }
    }
    Ok(report)
}

/// One login; its latency if it was answered (whatever the answer).
async fn flow(
    client: &mut Client<'_>,
    options: &BenchOptions,
    user: &BenchUser,
    code: &str,
    report: &mut Report,
) -> std::io::Result<Option<Duration>> {
    let started = Instant::now();
    let first_password = match options.kind {
        BenchKind::Append => format!("{}{code}", user.password.expose()),
        _ => user.password.expose().clone(),
    };
    let answer = client.ask(&Request::login(&user.user, first_password.as_bytes(), None)).await?;
    let last = if options.kind == BenchKind::Challenge {
        report.first_answers.count(&answer);
        let state = match &answer {
            Answer::Reply(challenge, first) if challenge.code == Code::AccessChallenge => {
                report.first_steps.push(*first);
                challenge.get(attr::STATE).map(<[u8]>::to_vec)
            }
            _ => None,
        };
        match state {
            Some(state) => {
                let second = client.ask(&Request::login(&user.user, code.as_bytes(), Some(&state))).await?;
                report.second_answers.count(&second);
                if let Answer::Reply(_, latency) = &second {
                    report.second_steps.push(*latency);
                }
                second
            }
            // A challenge without a State cannot be answered: it counts as what it was.
            None => answer,
        }
    } else {
        answer
    };
    count(report, &last);
    let latency = matches!(last, Answer::Reply(..)).then(|| started.elapsed());
    report.latencies.extend(latency);
    Ok(latency)
}
