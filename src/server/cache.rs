//! The response cache (RFC 5080 §2.2.2): a retransmitted request gets the bytes we sent the
//! first time, and one that arrives while the first is still being decided is dropped.
//!
//! This is what makes retries free: a NAS retransmit never reaches `auth`, so it never burns a
//! TOTP step, counts a failure twice, or sends a second SMS. Memory is bounded by an entry cap
//! (oldest evicted first) and a TTL.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A request's identity on the wire: who sent it, from which port (or on which connection),
/// with which identifier (or RADIUS/1.1 Token). The request authenticator tells a
/// retransmission from a new request reusing the identifier.
pub type Key = (Source, u32);

/// Where requests whose identifiers are one space come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A NAS's UDP address and port.
    Datagram(SocketAddr),
    /// One TLS connection, numbered by the server and never reused: its entries die with it
    /// (RFC 6613 §2.6.1), however the NAS's next connection is numbered by the kernel.
    Connection(u64),
}

#[derive(Debug)]
enum State {
    InFlight,
    Done(Arc<[u8]>),
}

#[derive(Debug)]
struct Entry {
    authenticator: [u8; 16],
    generation: u64,
    state: State,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    /// Insertion order, for expiry and eviction: (key, generation, inserted at).
    order: VecDeque<(Key, u64, Instant)>,
    next_generation: u64,
}

#[derive(Debug)]
pub struct ResponseCache {
    inner: Mutex<Inner>,
    ttl: Duration,
    capacity: usize,
}

/// What to do with an arriving request.
#[derive(Debug)]
pub enum Lookup {
    /// First sight: decide it, then [`Ticket::complete`] (dropping the ticket forgets it).
    New(Ticket),
    /// Seen and answered: send these bytes again.
    Replay(Arc<[u8]>),
    /// Seen and still being decided: drop this copy.
    InFlight,
}

impl ResponseCache {
    pub fn new(ttl: Duration, capacity: usize) -> Arc<Self> {
        Arc::new(Self { inner: Mutex::new(Inner::default()), ttl, capacity: capacity.max(1) })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every update is one statement).
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn begin(self: &Arc<Self>, key: Key, authenticator: [u8; 16], now: Instant) -> Lookup {
        let mut inner = self.lock();
        inner.expire(now, self.ttl);
        if let Some(entry) = inner.entries.get(&key)
            && entry.authenticator == authenticator
        {
            return match &entry.state {
                State::Done(bytes) => Lookup::Replay(Arc::clone(bytes)),
                State::InFlight => Lookup::InFlight,
            };
        }
        // New, or the same identifier with a new authenticator (the NAS moved on): this request
        // takes the entry.
        while inner.entries.len() >= self.capacity && !inner.entries.contains_key(&key) {
            if !inner.evict_oldest() {
                break;
            }
        }
        let generation = inner.next_generation;
        inner.next_generation += 1;
        inner.entries.insert(key, Entry { authenticator, generation, state: State::InFlight });
        inner.order.push_back((key, generation, now));
        Lookup::New(Ticket { cache: Arc::clone(self), key, generation, completed: false })
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn expire(&mut self, now: Instant, ttl: Duration) {
        while let Some(&(key, generation, at)) = self.order.front() {
            if now.duration_since(at) < ttl {
                break;
            }
            self.order.pop_front();
            if self.entries.get(&key).is_some_and(|e| e.generation == generation) {
                self.entries.remove(&key);
            }
        }
    }

    fn evict_oldest(&mut self) -> bool {
        while let Some((key, generation, _)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|e| e.generation == generation) {
                self.entries.remove(&key);
                return true;
            }
        }
        false
    }
}

/// The right to answer one request. Completing it caches the answer; dropping it without
/// completing (an error, a timeout, a panic) forgets the request so a retransmit is decided anew.
#[derive(Debug)]
pub struct Ticket {
    cache: Arc<ResponseCache>,
    key: Key,
    generation: u64,
    completed: bool,
}

impl Ticket {
    pub fn complete(mut self, response: Arc<[u8]>) {
        let mut inner = self.cache.lock();
        if let Some(entry) = inner.entries.get_mut(&self.key).filter(|e| e.generation == self.generation) {
            entry.state = State::Done(response);
        }
        self.completed = true;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.completed {
            return;
        }
        let mut inner = self.cache.lock();
        if inner.entries.get(&self.key).is_some_and(|e| e.generation == self.generation) {
            inner.entries.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16, id: u8) -> Key {
        (Source::Datagram(SocketAddr::from(([127, 0, 0, 1], port))), u32::from(id))
    }

    #[test]
    fn retransmits_replay_and_in_flight_copies_drop() {
        let cache = ResponseCache::new(Duration::from_secs(30), 100);
        let t0 = Instant::now();
        let Lookup::New(ticket) = cache.begin(key(1, 1), [1; 16], t0) else { panic!() };
        assert!(matches!(cache.begin(key(1, 1), [1; 16], t0), Lookup::InFlight));
        ticket.complete(Arc::from(&b"answer"[..]));
        match cache.begin(key(1, 1), [1; 16], t0) {
            Lookup::Replay(bytes) => assert_eq!(&*bytes, b"answer"),
            other => panic!("{other:?}"),
        }
        // Another port, another id, or a new authenticator: a new request.
        assert!(matches!(cache.begin(key(2, 1), [1; 16], t0), Lookup::New(_)));
        assert!(matches!(cache.begin(key(1, 2), [1; 16], t0), Lookup::New(_)));
        assert!(matches!(cache.begin(key(1, 1), [2; 16], t0), Lookup::New(_)));
    }

    #[test]
    fn an_abandoned_request_is_forgotten() {
        let cache = ResponseCache::new(Duration::from_secs(30), 100);
        let t0 = Instant::now();
        let Lookup::New(ticket) = cache.begin(key(1, 1), [1; 16], t0) else { panic!() };
        drop(ticket);
        assert!(matches!(cache.begin(key(1, 1), [1; 16], t0), Lookup::New(_)));
    }

    #[test]
    fn a_replaced_request_cannot_overwrite_its_successor() {
        let cache = ResponseCache::new(Duration::from_secs(30), 100);
        let t0 = Instant::now();
        let Lookup::New(old) = cache.begin(key(1, 1), [1; 16], t0) else { panic!() };
        let Lookup::New(new) = cache.begin(key(1, 1), [2; 16], t0) else { panic!() };
        old.complete(Arc::from(&b"old"[..]));
        assert!(matches!(cache.begin(key(1, 1), [2; 16], t0), Lookup::InFlight));
        new.complete(Arc::from(&b"new"[..]));
        assert!(matches!(cache.begin(key(1, 1), [2; 16], t0), Lookup::Replay(b) if &*b == b"new"));
    }

    #[test]
    fn entries_expire_and_capacity_is_bounded() {
        let cache = ResponseCache::new(Duration::from_secs(30), 3);
        let t0 = Instant::now();
        for id in 0..10 {
            if let Lookup::New(t) = cache.begin(key(1, id), [0; 16], t0) {
                t.complete(Arc::from(&b"x"[..]));
            }
        }
        assert_eq!(cache.len(), 3, "capacity holds");
        assert!(matches!(cache.begin(key(1, 9), [0; 16], t0), Lookup::Replay(_)), "newest kept");
        assert!(matches!(cache.begin(key(1, 0), [0; 16], t0), Lookup::New(_)), "oldest evicted");
        let later = t0 + Duration::from_secs(31);
        assert!(matches!(cache.begin(key(1, 9), [0; 16], later), Lookup::New(_)), "expired after the TTL");
        assert_eq!(cache.len(), 0, "expired entries are gone, and the dropped ticket took its own");
    }
}
