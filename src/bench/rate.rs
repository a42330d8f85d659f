//! Open-loop load: requests leave at a fixed rate whatever the answers, the way a flood or a
//! password spray arrives (the workers of `bench` wait for each answer before the next, so a
//! slow server slows them down too). Answers are matched to requests per socket by identifier,
//! verified, counted and timed; an unanswered request counts as a timeout after `timeout`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::net::UdpSocket;

use super::request::{Request, check_signed};
use super::{Answer, BenchOptions, Report, bound_socket, count};
use crate::radius::{self, Packet};

/// Sockets to spread requests over: 256 identifiers each bound how many may be outstanding.
const SOCKETS: usize = 16;

/// Requests sent on one socket and not answered yet: identifier → (authenticator, sent at).
type Pending = Mutex<HashMap<u8, ([u8; 16], Instant)>>;

pub(super) async fn run(options: Arc<BenchOptions>, rate: u32) -> std::io::Result<Report> {
    let report = Arc::new(Mutex::new(Report::default()));
    let mut lanes = Vec::with_capacity(SOCKETS);
    let mut receivers = Vec::with_capacity(SOCKETS);
    for _ in 0..SOCKETS {
        let socket = Arc::new(bound_socket(&options).await?);
        let pending: Arc<Pending> = Arc::default();
        receivers.push(tokio::spawn(receive(Arc::clone(&socket), Arc::clone(&pending), Arc::clone(&options), Arc::clone(&report))));
        lanes.push((socket, pending, 0u8));
    }
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut sent = 0u64;
    loop {
        if options.duration.is_some_and(|d| started.elapsed() >= d) || options.count.is_some_and(|c| sent >= c) {
            break;
        }
        tokio::time::sleep_until((started + interval.mul_f64(sent as f64)).into()).await;
        let lane = &mut lanes[sent as usize % SOCKETS];
        let user = match options.names.is_empty() {
            true => options.user.as_str(),
            false => options.names[sent as usize % options.names.len()].as_str(),
        };
        sent += 1;
        lane.2 = lane.2.wrapping_add(1);
        let mut authenticator = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut authenticator);
        let wire = Request::simple(&options, user).signed(lane.2, authenticator, options.secret.expose())?;
        let expired = {
            let mut pending = lane.1.lock().unwrap_or_else(|p| p.into_inner());
            pending.insert(lane.2, (authenticator, Instant::now())).is_some()
        };
        if expired {
            // The identifier came round again before its answer: that request is lost.
            count(&mut report.lock().unwrap_or_else(|p| p.into_inner()), &Answer::Timeout);
        }
        lane.0.send(&wire).await?;
    }
    tokio::time::sleep(options.timeout).await;
    for receiver in receivers {
        receiver.abort();
    }
    let mut report = std::mem::take(&mut *report.lock().unwrap_or_else(|p| p.into_inner()));
    for (_, pending, _) in &lanes {
        let left = pending.lock().unwrap_or_else(|p| p.into_inner()).len();
        report.timeouts += left as u64;
    }
    report.elapsed = started.elapsed().saturating_sub(options.timeout);
    report.latencies.sort_unstable();
    Ok(report)
}

async fn receive(socket: Arc<UdpSocket>, pending: Arc<Pending>, options: Arc<BenchOptions>, report: Arc<Mutex<Report>>) {
    let mut buf = vec![0u8; radius::MAX_PACKET_LEN];
    while let Ok(n) = socket.recv(&mut buf).await {
        let datagram = buf.get(..n).unwrap_or_default();
        let Ok(reply) = Packet::decode(datagram) else { continue };
        let Some((authenticator, sent_at)) = pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&reply.identifier) else {
            continue;
        };
        let latency = sent_at.elapsed();
        let answer = if latency > options.timeout {
            Answer::Timeout
        } else {
            check_signed(datagram, reply, &authenticator, options.secret.expose(), latency)
        };
        let mut report = report.lock().unwrap_or_else(|p| p.into_inner());
        if let Answer::Reply(_, latency) = &answer {
            report.latencies.push(*latency);
        }
        count(&mut report, &answer);
    }
}
