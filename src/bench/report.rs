//! What a bench run found: answers by code, latencies (of whole logins and of each step), the
//! waits for usable time steps, and over TLS what became of the connections; printed for
//! people or as JSON for scripts.

use std::time::Duration;

use super::Answer;
use super::radsec::Connections;
use crate::radius::Code;

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub accepts: u64,
    pub rejects: u64,
    pub challenges: u64,
    pub timeouts: u64,
    /// Answers that failed the authenticator check (RADIUS/1.1: RFC 9765's rules) or had an
    /// unexpected code.
    pub invalid: u64,
    /// Requests whose TLS connection closed before their answer came.
    pub closed: u64,
    /// `udp`, `radius/1.0` or `radius/1.1` (over TLS), `ldap`.
    pub transport: &'static str,
    /// Over TLS: what became of the connections.
    pub connections: Option<Connections>,
    pub elapsed: Duration,
    /// Latencies of answered requests (of whole logins, for flows), sorted.
    pub latencies: Vec<Duration>,
    /// For challenge flows: each step alone, sorted.
    pub first_steps: Vec<Duration>,
    pub second_steps: Vec<Duration>,
    /// Waits because every user had used every time step the server's window allows.
    pub starved: u64,
    /// Waits because the current step ended too soon to send its code.
    pub too_late: u64,
    /// Time the workers spent in those waits, added up.
    pub waited: Duration,
    /// For challenge flows: the answers to the password step and to the code step.
    pub first_answers: Answers,
    pub second_answers: Answers,
}

/// Answers by code.
#[derive(Debug, Default, Clone, Copy)]
pub struct Answers {
    pub accepts: u64,
    pub rejects: u64,
    pub challenges: u64,
    pub timeouts: u64,
    pub invalid: u64,
    pub closed: u64,
}

impl Answers {
    fn add(&mut self, other: Answers) {
        self.accepts += other.accepts;
        self.rejects += other.rejects;
        self.challenges += other.challenges;
        self.timeouts += other.timeouts;
        self.invalid += other.invalid;
        self.closed += other.closed;
    }

    pub(super) fn count(&mut self, answer: &Answer) {
        match answer {
            Answer::Reply(reply, _) => match reply.code {
                Code::AccessAccept | Code::AccountingResponse => self.accepts += 1,
                Code::AccessReject => self.rejects += 1,
                Code::AccessChallenge => self.challenges += 1,
                _ => self.invalid += 1,
            },
            Answer::Timeout => self.timeouts += 1,
            Answer::Invalid => self.invalid += 1,
            Answer::Closed => self.closed += 1,
        }
    }

    fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "accepts": self.accepts,
            "rejects": self.rejects,
            "challenges": self.challenges,
            "timeouts": self.timeouts,
            "invalid": self.invalid,
            "closed": self.closed,
        })
    }
}

impl std::fmt::Display for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "accept {}  reject {}  challenge {}  timeout {}  invalid {}",
            self.accepts, self.rejects, self.challenges, self.timeouts, self.invalid
        )?;
        if self.closed > 0 {
            write!(f, "  closed {}", self.closed)?;
        }
        Ok(())
    }
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
        self.accepts + self.rejects + self.challenges + self.timeouts + self.invalid + self.closed
    }

    pub fn per_second(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile(&self, q: f64) -> Option<Duration> {
        percentile(&self.latencies, q)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let connections = self.connections.as_ref();
        serde_json::json!({
            "transport": self.transport,
            "requests": self.requests(),
            "seconds": self.elapsed.as_secs_f64(),
            "requests_per_second": self.per_second(),
            "accepts": self.accepts,
            "rejects": self.rejects,
            "challenges": self.challenges,
            "timeouts": self.timeouts,
            "invalid": self.invalid,
            "closed": self.closed,
            "connections_reopened": connections.map(|c| c.reopened),
            "unmatched_answers": connections.map(|c| c.unmatched),
            "connections_closed_because": connections.map(|c| &c.closed_because),
            "p50_ms": ms(self.percentile(0.50)),
            "p99_ms": ms(self.percentile(0.99)),
            "max_ms": ms(self.latencies.last().copied()),
            "first_step_p50_ms": ms(percentile(&self.first_steps, 0.50)),
            "first_step_p99_ms": ms(percentile(&self.first_steps, 0.99)),
            "second_step_p50_ms": ms(percentile(&self.second_steps, 0.50)),
            "second_step_p99_ms": ms(percentile(&self.second_steps, 0.99)),
            "starved": self.starved,
            "too_late": self.too_late,
            "waited_seconds": self.waited.as_secs_f64(),
            "password_step": self.first_answers.to_json(),
            "code_step": self.second_answers.to_json(),
        })
    }

    pub(super) fn merge(&mut self, part: Report) {
        self.accepts += part.accepts;
        self.rejects += part.rejects;
        self.challenges += part.challenges;
        self.timeouts += part.timeouts;
        self.invalid += part.invalid;
        self.closed += part.closed;
        self.starved += part.starved;
        self.too_late += part.too_late;
        self.waited += part.waited;
        self.first_answers.add(part.first_answers);
        self.second_answers.add(part.second_answers);
        self.latencies.extend(part.latencies);
        self.first_steps.extend(part.first_steps);
        self.second_steps.extend(part.second_steps);
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), |d| format!("{:.2} ms", d.as_secs_f64() * 1000.0));
        writeln!(f, "requests  {} in {:.2} s = {:.1} req/s", self.requests(), self.elapsed.as_secs_f64(), self.per_second())?;
        write!(
            f,
            "answers   accept {}  reject {}  challenge {}  timeout {}  invalid {}",
            self.accepts, self.rejects, self.challenges, self.timeouts, self.invalid
        )?;
        if self.closed > 0 {
            write!(f, "  closed {}", self.closed)?;
        }
        writeln!(f)?;
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
            write!(f, "\npassword  {}\ncode      {}", self.first_answers, self.second_answers)?;
        }
        if self.starved > 0 {
            write!(f, "\nnote      {} waits for a fresh time step: give more users for this rate", self.starved)?;
        }
        if self.too_late > 0 {
            write!(f, "\nnote      {} waits for the next time step (the current one ended too soon to send its code)", self.too_late)?;
        }
        if !self.waited.is_zero() {
            write!(f, "\nwaited    {:.1} worker-seconds for a usable time step", self.waited.as_secs_f64())?;
        }
        if let Some(c) = self.connections.as_ref().filter(|c| c.reopened > 0 || c.unmatched > 0 || !c.closed_because.is_empty()) {
            write!(f, "\ntls       reopened {}  answers matching no request {}", c.reopened, c.unmatched)?;
            for why in &c.closed_because {
                write!(f, "\nclosed    {why}")?;
            }
        }
        Ok(())
    }
}
