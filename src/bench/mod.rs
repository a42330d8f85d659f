//! `radmfa bench`: a RADIUS load generator, so every performance figure is measured the same way.
//!
//! N workers each keep one request (or login flow) outstanding on their own UDP socket for a
//! duration or a total count, verify every response's authenticator, and record the latency. No
//! retransmits: a request unanswered within the timeout counts as a timeout.
//!
//! Flows (`append`, `challenge`) log in users from a seeds file, computing each code from the
//! user's TOTP seed, and never reuse a time step for a user (the server would refuse it as a replay).
//!
//! With a rate (`rate`), requests go out open-loop instead: at that rate whatever the answers,
//! as a flood or a password spray arrives.

mod rate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::net::UdpSocket;

use crate::radius::{self, Attribute, Code, Packet, attr};
use crate::secret::Secret;

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
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub accepts: u64,
    pub rejects: u64,
    pub challenges: u64,
    pub timeouts: u64,
    /// Answers that failed the authenticator check or had an unexpected code.
    pub invalid: u64,
    pub elapsed: Duration,
    /// Latencies of answered requests (of whole logins, for flows), sorted.
    pub latencies: Vec<Duration>,
    /// For challenge flows: each step alone, sorted.
    pub first_steps: Vec<Duration>,
    pub second_steps: Vec<Duration>,
    /// Logins skipped because every user had used every time step the server's window allows.
    pub starved: u64,
}

fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    let last = sorted.len().checked_sub(1)?;
    sorted.get(((last as f64) * q).round() as usize).copied()
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

impl Report {
    pub fn requests(&self) -> u64 {
        self.accepts + self.rejects + self.challenges + self.timeouts + self.invalid
    }

    pub fn per_second(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile(&self, q: f64) -> Option<Duration> {
        percentile(&self.latencies, q)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests(),
            "seconds": self.elapsed.as_secs_f64(),
            "requests_per_second": self.per_second(),
            "accepts": self.accepts,
            "rejects": self.rejects,
            "challenges": self.challenges,
            "timeouts": self.timeouts,
            "invalid": self.invalid,
            "p50_ms": ms(self.percentile(0.50)),
            "p99_ms": ms(self.percentile(0.99)),
            "max_ms": ms(self.latencies.last().copied()),
            "first_step_p50_ms": ms(percentile(&self.first_steps, 0.50)),
            "first_step_p99_ms": ms(percentile(&self.first_steps, 0.99)),
            "second_step_p50_ms": ms(percentile(&self.second_steps, 0.50)),
            "second_step_p99_ms": ms(percentile(&self.second_steps, 0.99)),
            "starved": self.starved,
        })
    }

    fn merge(&mut self, part: Report) {
        self.accepts += part.accepts;
        self.rejects += part.rejects;
        self.challenges += part.challenges;
        self.timeouts += part.timeouts;
        self.invalid += part.invalid;
        self.starved += part.starved;
        self.latencies.extend(part.latencies);
        self.first_steps.extend(part.first_steps);
        self.second_steps.extend(part.second_steps);
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), |d| format!("{:.2} ms", d.as_secs_f64() * 1000.0));
        writeln!(f, "requests  {} in {:.2} s = {:.1} req/s", self.requests(), self.elapsed.as_secs_f64(), self.per_second())?;
        writeln!(
            f,
            "answers   accept {}  reject {}  challenge {}  timeout {}  invalid {}",
            self.accepts, self.rejects, self.challenges, self.timeouts, self.invalid
        )?;
        write!(
            f,
            "latency   p50 {}  p99 {}  max {}",
            ms(self.percentile(0.50)),
            ms(self.percentile(0.99)),
            ms(self.latencies.last().copied())
        )?;
        if !self.second_steps.is_empty() {
            let step = |v: &[Duration]| format!("p50 {}  p99 {}", ms(percentile(v, 0.5)), ms(percentile(v, 0.99)));
            write!(f, "\nsteps     password {}  |  code {}", step(&self.first_steps), step(&self.second_steps))?;
        }
        if self.starved > 0 {
            write!(f, "\nnote      {} waits for a fresh time step: give more users for this rate", self.starved)?;
        }
        Ok(())
    }
}

pub async fn run(options: BenchOptions) -> std::io::Result<Report> {
    let options = Arc::new(options);
    if let Some(rate) = options.rate {
        return rate::run(options, rate).await;
    }
    let remaining = Arc::new(AtomicU64::new(options.count.unwrap_or(u64::MAX)));
    let started = Instant::now();
    let deadline = options.duration.map(|d| started + d);
    let flows = matches!(options.kind, BenchKind::Append | BenchKind::Challenge);
    let workers_n = options.concurrency.max(1);
    if flows && options.users.is_empty() {
        return Err(std::io::Error::other("no users to log in: give --seeds"));
    }
    let users = Arc::new(UserSteps::new(options.users.len()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..workers_n {
        let socket = bound_socket(&options).await?;
        workers.spawn(worker(socket, Arc::clone(&options), Arc::clone(&remaining), deadline, Arc::clone(&users)));
    }
    let mut report = Report::default();
    while let Some(joined) = workers.join_next().await {
        report.merge(joined.map_err(std::io::Error::other)??);
    }
    report.elapsed = started.elapsed();
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
enum Answer {
    Reply(Packet, Duration),
    Timeout,
    Invalid,
}

struct Client<'a> {
    socket: &'a UdpSocket,
    buf: Vec<u8>,
    identifier: u8,
    options: &'a BenchOptions,
}

impl Client<'_> {
    /// Sends one request built by `build` (given identifier and authenticator) and waits for its answer.
    async fn ask(&mut self, build: impl FnOnce(u8, [u8; 16]) -> Result<Vec<u8>, radius::EncodeError>) -> std::io::Result<Answer> {
        self.identifier = self.identifier.wrapping_add(1);
        let mut authenticator = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut authenticator);
        let wire = build(self.identifier, authenticator).map_err(std::io::Error::other)?;
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
            if !radius::verify_response(datagram, &authenticator, self.options.secret.expose()).unwrap_or(false) {
                return Ok(Answer::Invalid);
            }
            return Ok(Answer::Reply(reply, sent_at.elapsed()));
        }
    }
}

fn count(report: &mut Report, answer: &Answer) {
    match answer {
        Answer::Reply(reply, _) => match reply.code {
            Code::AccessAccept | Code::AccountingResponse => report.accepts += 1,
            Code::AccessReject => report.rejects += 1,
            Code::AccessChallenge => report.challenges += 1,
            _ => report.invalid += 1,
        },
        Answer::Timeout => report.timeouts += 1,
        Answer::Invalid => report.invalid += 1,
    }
}

/// The next time step each user may use, shared by all workers: a user's step is claimed
/// atomically, so no two logins use one code (the server would refuse the second as a replay).
struct UserSteps {
    next: Vec<AtomicU64>,
    cursor: std::sync::atomic::AtomicUsize,
}

impl UserSteps {
    fn new(n: usize) -> Self {
        Self { next: (0..n).map(|_| AtomicU64::new(0)).collect(), cursor: Default::default() }
    }

    /// A user and a time step within the server's window (now ±1) nobody has used yet.
    fn claim(&self, now: u64) -> Option<(usize, u64)> {
        let n = self.next.len();
        for _ in 0..n {
            let i = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
            let next = self.next[i].load(Ordering::Relaxed);
            let step = next.max(now.saturating_sub(1));
            if step > now + 1 {
                continue;
            }
            if self.next[i].compare_exchange(next, step + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                return Some((i, step));
            }
        }
        None
    }
}

async fn worker(
    socket: UdpSocket,
    options: Arc<BenchOptions>,
    remaining: Arc<AtomicU64>,
    deadline: Option<Instant>,
    users: Arc<UserSteps>,
) -> std::io::Result<Report> {
    let mut report = Report::default();
    let mut client = Client { socket: &socket, buf: vec![0u8; radius::MAX_PACKET_LEN], identifier: rand::random(), options: &options };
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err() {
            break;
        }
        match options.kind {
            BenchKind::Access | BenchKind::StatusServer => {
                let answer = client.ask(|id, auth| encode(&options, id, auth)).await?;
                if let Answer::Reply(_, latency) = &answer {
                    report.latencies.push(*latency);
                }
                count(&mut report, &answer);
            }
            BenchKind::Append | BenchKind::Challenge => {
                let now = options.totp.step_at(crate::store::now().max(0) as u64);
                let Some((slot, step)) = users.claim(now) else {
                    report.starved += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    remaining.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let user = &options.users[slot];
                let code = options.totp.code_at_step(user.seed.expose(), step);
                flow(&mut client, &options, user, code.expose(), &mut report).await?;
            }
        }
    }
    Ok(report)
}

async fn flow(client: &mut Client<'_>, options: &BenchOptions, user: &BenchUser, code: &str, report: &mut Report) -> std::io::Result<()> {
    let secret = options.secret.expose();
    let started = Instant::now();
    let first_password = match options.kind {
        BenchKind::Append => format!("{}{code}", user.password.expose()),
        _ => user.password.expose().clone(),
    };
    let answer = client.ask(|id, auth| login_request(secret, id, auth, &user.user, &first_password, None)).await?;
    if options.kind == BenchKind::Challenge {
        let Answer::Reply(challenge, first) = &answer else {
            count(report, &answer);
            return Ok(());
        };
        let Some(state) = challenge.get(attr::STATE).filter(|_| challenge.code == Code::AccessChallenge).map(<[u8]>::to_vec) else {
            count(report, &answer);
            return Ok(());
        };
        report.first_steps.push(*first);
        let second = client.ask(|id, auth| login_request(secret, id, auth, &user.user, code, Some(&state))).await?;
        if let Answer::Reply(_, latency) = &second {
            report.second_steps.push(*latency);
            report.latencies.push(started.elapsed());
        }
        count(report, &second);
        return Ok(());
    }
    if let Answer::Reply(_, _) = &answer {
        report.latencies.push(started.elapsed());
    }
    count(report, &answer);
    Ok(())
}

fn login_request(
    secret: &[u8],
    id: u8,
    authenticator: [u8; 16],
    user: &str,
    password: &str,
    state: Option<&[u8]>,
) -> Result<Vec<u8>, radius::EncodeError> {
    let mut p = Packet::new(Code::AccessRequest, id, authenticator);
    p.push(Attribute::standard(attr::USER_NAME, user.as_bytes()));
    p.push(Attribute::standard(attr::USER_PASSWORD, radius::hide_password(password.as_bytes(), secret, &authenticator)?));
    if let Some(state) = state {
        p.push(Attribute::standard(attr::STATE, state));
    }
    p.push(Attribute::standard(attr::NAS_IDENTIFIER, &b"radmfa-bench"[..]));
    radius::encode_request(&p, secret, true)
}

fn encode(options: &BenchOptions, identifier: u8, authenticator: [u8; 16]) -> Result<Vec<u8>, radius::EncodeError> {
    encode_for(options, &options.user, identifier, authenticator)
}

/// An Access-Request for `user` with the options' password (or a Status-Server).
fn encode_for(options: &BenchOptions, user: &str, identifier: u8, authenticator: [u8; 16]) -> Result<Vec<u8>, radius::EncodeError> {
    let secret = options.secret.expose();
    let mut packet = match options.kind {
        BenchKind::StatusServer => Packet::new(Code::StatusServer, identifier, authenticator),
        BenchKind::Access | BenchKind::Append | BenchKind::Challenge => {
            let mut p = Packet::new(Code::AccessRequest, identifier, authenticator);
            p.push(Attribute::standard(attr::USER_NAME, user.as_bytes()));
            p.push(Attribute::standard(attr::USER_PASSWORD, radius::hide_password(options.password.expose(), secret, &authenticator)?));
            p
        }
    };
    packet.push(Attribute::standard(attr::NAS_IDENTIFIER, &b"radmfa-bench"[..]));
    let with_ma = options.message_authenticator || options.kind == BenchKind::StatusServer;
    radius::encode_request(&packet, secret, with_ma)
}
