//! Which NAS a piece of work is done for, so what every request shares (the password-hashing
//! threads, the directory's connections) serves NAS in turn: one NAS's backlog then delays
//! another NAS's work by one turn, not by the whole backlog. A NAS is its source address (so the
//! devices of one `[[client]]` network entry are apart too). The server sets it around each
//! decision; work outside any request (the portal, the CLI) runs as key 0.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::oneshot;

/// A NAS, as fairness tells them apart.
pub type Key = u128;

tokio::task_local! {
    static CLIENT: (Key, Instant);
}

/// The key of a source address (IPv4 as its IPv4-mapped IPv6 form, so both spellings meet).
pub fn key_of(address: IpAddr) -> Key {
    match address.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Runs `work` on behalf of `client`, as work begun now.
pub async fn on_behalf_of<F: std::future::Future>(client: Key, work: F) -> F::Output {
    CLIENT.scope((client, Instant::now()), work).await
}

/// The client the current task works for (0 outside any request).
pub fn current_client() -> Key {
    CLIENT.try_with(|(client, _)| *client).unwrap_or(0)
}

/// When the current task's work began (now, outside any request).
fn current_start() -> Instant {
    CLIENT.try_with(|(_, since)| *since).unwrap_or_else(|_| Instant::now())
}

/// At most `n` holders at once; those waiting are let in one client at a time, in turn, and
/// within a client the work begun first goes first. A login takes several turns (a search, a
/// bind, a read): served in the order they queued, every login of an overloaded gate would
/// advance a step at a time alongside all the others and all would run out of time together;
/// served oldest first, the logins begun first finish.
pub struct FairGate {
    state: Mutex<GateState>,
}

struct GateState {
    free: usize,
    waiting: HashMap<Key, BinaryHeap<Waiter>>,
    turn: VecDeque<Key>,
    /// Orders waiters begun at the same instant by their arrival at the gate.
    next: u64,
}

struct Waiter {
    since: Instant,
    seq: u64,
    place: oneshot::Sender<GatePass>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        (self.since, self.seq) == (other.since, other.seq)
    }
}

impl Eq for Waiter {}

impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiter {
    /// The greatest is the oldest (the heap's top).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.since, other.seq).cmp(&(self.since, self.seq))
    }
}

/// A place in the gate; dropping it lets the next one in.
pub struct GatePass {
    gate: Option<Arc<FairGate>>,
}

impl FairGate {
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Self { state: Mutex::new(GateState { free: n.max(1), waiting: HashMap::new(), turn: VecDeque::new(), next: 0 }) })
    }

    /// Places free now, and holders waiting for one (for the metrics endpoint).
    pub fn load(&self) -> (usize, usize) {
        let state = self.lock();
        (state.free, state.waiting.values().map(BinaryHeap::len).sum())
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a place, in the current client's turn.
    pub async fn enter(self: &Arc<Self>) -> GatePass {
        let waiting = {
            let mut state = self.lock();
            if state.free > 0 && state.turn.is_empty() {
                state.free -= 1;
                return GatePass { gate: Some(Arc::clone(self)) };
            }
            let (tx, rx) = oneshot::channel();
            let client = current_client();
            let state = &mut *state;
            state.next += 1;
            let waiter = Waiter { since: current_start(), seq: state.next, place: tx };
            let queue = state.waiting.entry(client).or_default();
            if queue.is_empty() {
                state.turn.push_back(client);
            }
            queue.push(waiter);
            rx
        };
        // The sender is dropped only with the gate, which this pass's holder keeps alive.
        waiting.await.unwrap_or(GatePass { gate: None })
    }

    /// Hands a freed place to the next client in turn, or keeps it free.
    fn release(self: &Arc<Self>) {
        let mut guard = self.lock();
        let state = &mut *guard;
        while let Some(client) = state.turn.pop_front() {
            let Some(queue) = state.waiting.get_mut(&client) else { continue };
            let next = queue.pop().map(|waiter| waiter.place);
            if queue.is_empty() {
                state.waiting.remove(&client);
            } else {
                state.turn.push_back(client);
            }
            let Some(next) = next else { continue };
            match next.send(GatePass { gate: Some(Arc::clone(self)) }) {
                Ok(()) => return,
                // That waiter gave up: the pass comes back; forget it without releasing again.
                Err(mut pass) => pass.gate = None,
            }
        }
        state.free += 1;
    }
}

impl Drop for GatePass {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_key_alike_in_both_spellings() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(key_of(v4), key_of(mapped));
        assert_ne!(key_of(v4), key_of("192.0.2.8".parse().unwrap()));
    }

    #[tokio::test]
    async fn waiting_clients_are_let_in_by_turns_and_cancelled_waits_lose_nothing() {
        let gate = FairGate::new(1);
        let held = gate.enter().await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for (client, name) in [(1, "flood"), (1, "flood"), (1, "flood"), (2, "login")] {
            let (gate, order) = (Arc::clone(&gate), Arc::clone(&order));
            waiters.push(tokio::spawn(on_behalf_of(client, async move {
                let _pass = gate.enter().await;
                order.lock().unwrap().push(name);
            })));
            tokio::task::yield_now().await;
        }
        // One more that gives up before its turn.
        let gave_up = tokio::spawn(on_behalf_of(3, {
            let gate = Arc::clone(&gate);
            async move { gate.enter().await }
        }));
        tokio::task::yield_now().await;
        gave_up.abort();
        drop(held);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["flood", "login", "flood", "flood"], "the login waits for one of the flood, not three");
        let _again = tokio::time::timeout(std::time::Duration::from_secs(1), gate.enter()).await.expect("the place came back");
    }

    #[tokio::test]
    async fn within_a_client_the_work_begun_first_goes_first() {
        let gate = FairGate::new(1);
        let held = gate.enter().await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let step = |name: &'static str, first_wait: u64| {
            let (gate, order) = (Arc::clone(&gate), Arc::clone(&order));
            tokio::spawn(on_behalf_of(1, async move {
                tokio::time::sleep(std::time::Duration::from_millis(first_wait)).await;
                let _pass = gate.enter().await;
                order.lock().unwrap().push(name);
            }))
        };
        // A login begun first reaches the gate for its next step after two logins begun later.
        let older = step("older", 40);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let newer = [step("newer-1", 0), step("newer-2", 0)];
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        drop(held);
        for task in newer.into_iter().chain([older]) {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["older", "newer-1", "newer-2"]);
    }
}
