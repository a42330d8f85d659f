//! `radmfa bench`: a RADIUS load generator, so every performance figure is measured the same way.
//!
//! N workers each keep one request outstanding on their own UDP socket for a duration or a
//! total count, verify every response's authenticator, and record the latency. No retransmits:
//! a request unanswered within the timeout counts as a timeout.

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
    /// Latencies of answered requests, sorted.
    pub latencies: Vec<Duration>,
}

impl Report {
    pub fn requests(&self) -> u64 {
        self.accepts + self.rejects + self.challenges + self.timeouts + self.invalid
    }

    pub fn per_second(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile(&self, q: f64) -> Option<Duration> {
        let last = self.latencies.len().checked_sub(1)?;
        self.latencies.get(((last as f64) * q).round() as usize).copied()
    }

    pub fn to_json(&self) -> serde_json::Value {
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
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
        })
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
        )
    }
}

pub async fn run(options: BenchOptions) -> std::io::Result<Report> {
    let options = Arc::new(options);
    let remaining = Arc::new(AtomicU64::new(options.count.unwrap_or(u64::MAX)));
    let started = Instant::now();
    let deadline = options.duration.map(|d| started + d);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..options.concurrency.max(1) {
        let bind: SocketAddr =
            if options.server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
        let socket = UdpSocket::bind(bind).await?;
        socket.connect(options.server).await?;
        workers.spawn(worker(socket, Arc::clone(&options), Arc::clone(&remaining), deadline));
    }
    let mut report = Report::default();
    while let Some(joined) = workers.join_next().await {
        let part = joined.map_err(std::io::Error::other)??;
        report.accepts += part.accepts;
        report.rejects += part.rejects;
        report.challenges += part.challenges;
        report.timeouts += part.timeouts;
        report.invalid += part.invalid;
        report.latencies.extend(part.latencies);
    }
    report.elapsed = started.elapsed();
    report.latencies.sort_unstable();
    Ok(report)
}

async fn worker(
    socket: UdpSocket,
    options: Arc<BenchOptions>,
    remaining: Arc<AtomicU64>,
    deadline: Option<Instant>,
) -> std::io::Result<Report> {
    let mut report = Report::default();
    let mut identifier: u8 = rand::random();
    let mut buf = vec![0u8; radius::MAX_PACKET_LEN];
    let secret = options.secret.expose().as_slice();
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err() {
            break;
        }
        identifier = identifier.wrapping_add(1);
        let mut authenticator = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut authenticator);
        let wire = encode(&options, identifier, authenticator).map_err(std::io::Error::other)?;
        let sent_at = Instant::now();
        socket.send(&wire).await?;
        let answer_by = sent_at + options.timeout;
        loop {
            let received = tokio::time::timeout_at(answer_by.into(), socket.recv(&mut buf)).await;
            let Ok(received) = received else {
                report.timeouts += 1;
                break;
            };
            let datagram = buf.get(..received?).unwrap_or_default();
            let Ok(reply) = Packet::decode(datagram) else { continue };
            if reply.identifier != identifier {
                continue; // a late answer to a request that already timed out
            }
            if !radius::verify_response(datagram, &authenticator, secret).unwrap_or(false) {
                report.invalid += 1;
                break;
            }
            report.latencies.push(sent_at.elapsed());
            match reply.code {
                Code::AccessAccept | Code::AccountingResponse => report.accepts += 1,
                Code::AccessReject => report.rejects += 1,
                Code::AccessChallenge => report.challenges += 1,
                _ => report.invalid += 1,
            }
            break;
        }
    }
    Ok(report)
}

fn encode(options: &BenchOptions, identifier: u8, authenticator: [u8; 16]) -> Result<Vec<u8>, radius::EncodeError> {
    let secret = options.secret.expose();
    let mut packet = match options.kind {
        BenchKind::StatusServer => Packet::new(Code::StatusServer, identifier, authenticator),
        BenchKind::Access => {
            let mut p = Packet::new(Code::AccessRequest, identifier, authenticator);
            p.push(Attribute::standard(attr::USER_NAME, options.user.as_bytes()));
            p.push(Attribute::standard(attr::USER_PASSWORD, radius::hide_password(options.password.expose(), secret, &authenticator)?));
            p
        }
    };
    packet.push(Attribute::standard(attr::NAS_IDENTIFIER, &b"radmfa-bench"[..]));
    let with_ma = options.message_authenticator || options.kind == BenchKind::StatusServer;
    radius::encode_request(&packet, secret, with_ma)
}
