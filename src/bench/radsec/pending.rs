//! The requests outstanding on one multiplexed connection, by the number an answer is matched
//! with: the Identifier for RADIUS/TLS (256 of them, so at most 256 outstanding, and none
//! taken again while its request is outstanding: RFC 6613 §2.6.5), or the Token for RADIUS/1.1
//! (a 32-bit counter of the connection that starts at a random value and advances for every
//! new packet: RFC 9765 §4.2.1).
//!
//! A request whose waiter gave up (a timeout) keeps its number until its answer comes or the
//! connection closes: were the number taken again sooner, the late answer would be taken for
//! the new request's.

use std::collections::HashMap;

use tokio::sync::{OwnedSemaphorePermit, oneshot};

/// How requests are numbered on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numbering {
    /// RADIUS/TLS: the one-octet Identifier.
    Identifier,
    /// RADIUS/1.1: the four-octet Token.
    Token,
}

impl Numbering {
    /// How many numbers there are.
    fn space(self) -> u64 {
        match self {
            Self::Identifier => 256,
            Self::Token => 1 << 32,
        }
    }

    fn after(self, number: u32) -> u32 {
        match self {
            Self::Identifier => (number + 1) & 0xff,
            Self::Token => number.wrapping_add(1),
        }
    }
}

/// A number given to a request, and which of the number's uses it is (a number comes round
/// again once freed: the serial tells the uses apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub number: u32,
    serial: u64,
}

/// Where an answer goes.
#[derive(Debug)]
pub enum Match {
    /// To this waiter.
    Waiting(oneshot::Sender<Vec<u8>>),
    /// Nowhere: its waiter gave up; the number is free again.
    Late,
    /// No request outstanding has this number.
    Unknown,
}

struct Entry {
    serial: u64,
    /// `None` once the waiter gave up.
    waiter: Option<oneshot::Sender<Vec<u8>>>,
    /// One of the connection's identifiers (RADIUS/TLS), given back with the entry.
    _identifier: Option<OwnedSemaphorePermit>,
}

pub struct Pending {
    numbering: Numbering,
    entries: HashMap<u32, Entry>,
    next: u32,
    serials: u64,
    abandoned: usize,
}

impl Pending {
    /// A table whose first number is `first` (random, for a Token: RFC 9765 §4.2.1).
    pub fn new(numbering: Numbering, first: u32) -> Self {
        let next = match numbering {
            Numbering::Identifier => first & 0xff,
            Numbering::Token => first,
        };
        Self { numbering, entries: HashMap::new(), next, serials: 0, abandoned: 0 }
    }

    /// A number for a new request whose answer goes to `waiter`: the next one not outstanding
    /// (numbers go round in order, so a freed one is not taken again at once). `None` when
    /// every number is outstanding. `identifier` is the permit that bounds the connection to
    /// 256 outstanding, held as long as the number is.
    pub fn open(&mut self, waiter: oneshot::Sender<Vec<u8>>, identifier: Option<OwnedSemaphorePermit>) -> Option<Ticket> {
        if self.entries.len() as u64 >= self.numbering.space() {
            return None;
        }
        let mut number = self.next;
        while self.entries.contains_key(&number) {
            number = self.numbering.after(number);
        }
        self.next = self.numbering.after(number);
        self.serials += 1;
        let serial = self.serials;
        self.entries.insert(number, Entry { serial, waiter: Some(waiter), _identifier: identifier });
        Some(Ticket { number, serial })
    }

    /// Where the answer numbered `number` goes; its number is free from now on.
    pub fn answer(&mut self, number: u32) -> Match {
        match self.entries.remove(&number) {
            Some(Entry { waiter: Some(waiter), .. }) => Match::Waiting(waiter),
            Some(Entry { waiter: None, .. }) => {
                self.abandoned -= 1;
                Match::Late
            }
            None => Match::Unknown,
        }
    }

    /// The waiter of `ticket` gave up: its number stays taken until the answer or the close.
    /// Nothing happens if that request's answer came meanwhile.
    pub fn abandon(&mut self, ticket: Ticket) {
        if let Some(entry) = self.entries.get_mut(&ticket.number).filter(|e| e.serial == ticket.serial && e.waiter.is_some()) {
            entry.waiter = None;
            self.abandoned += 1;
        }
    }

    /// `ticket`'s request was never sent: its number is free at once.
    pub fn cancel(&mut self, ticket: Ticket) {
        if self.entries.get(&ticket.number).is_some_and(|e| e.serial == ticket.serial)
            && let Some(Entry { waiter: None, .. }) = self.entries.remove(&ticket.number)
        {
            self.abandoned -= 1;
        }
    }

    /// The connection closed: every waiter learns it (its sender dropped), every number is free.
    pub fn close(&mut self) {
        self.entries.clear();
        self.abandoned = 0;
    }

    /// Numbers held by requests whose waiters gave up.
    pub fn abandoned(&self) -> usize {
        self.abandoned
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Semaphore;

    use super::*;

    fn waiter() -> (oneshot::Sender<Vec<u8>>, oneshot::Receiver<Vec<u8>>) {
        oneshot::channel()
    }

    #[test]
    fn identifiers_are_256_distinct_then_none_until_one_is_answered() {
        let mut pending = Pending::new(Numbering::Identifier, 0x7000_00fe);
        let mut receivers = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..256 {
            let (tx, rx) = waiter();
            receivers.push(rx);
            let ticket = pending.open(tx, None).unwrap();
            assert!(ticket.number < 256);
            assert!(seen.insert(ticket.number), "identifier {} given twice", ticket.number);
        }
        assert_eq!(receivers.len(), 256);
        assert!(pending.open(waiter().0, None).is_none(), "a 257th outstanding request has no identifier");
        let Match::Waiting(tx) = pending.answer(7) else { panic!("7 is outstanding") };
        tx.send(vec![1]).unwrap();
        assert_eq!(pending.open(waiter().0, None).unwrap().number, 7, "the one freed");
    }

    #[test]
    fn identifiers_go_round_and_wrap_from_the_start_given() {
        let mut pending = Pending::new(Numbering::Identifier, 254);
        let numbers: Vec<u32> = (0..3)
            .map(|_| {
                let ticket = pending.open(waiter().0, None).unwrap();
                let _ = pending.answer(ticket.number);
                ticket.number
            })
            .collect();
        assert_eq!(numbers, [254, 255, 0], "a freed identifier is not taken again at once");
    }

    #[test]
    fn an_abandoned_identifier_is_held_until_its_late_answer() {
        let mut pending = Pending::new(Numbering::Identifier, 0);
        let first = pending.open(waiter().0, None).unwrap();
        pending.abandon(first);
        assert_eq!(pending.abandoned(), 1);
        // Round the whole space: 0 is skipped while its late answer may still come.
        for _ in 0..300 {
            let ticket = pending.open(waiter().0, None).unwrap();
            assert_ne!(ticket.number, first.number);
            let _ = pending.answer(ticket.number);
        }
        assert!(matches!(pending.answer(first.number), Match::Late));
        assert_eq!(pending.abandoned(), 0);
        assert!(matches!(pending.answer(first.number), Match::Unknown), "answered once only");
    }

    #[test]
    fn giving_up_after_the_answer_came_does_not_touch_the_next_use_of_the_number() {
        let mut pending = Pending::new(Numbering::Identifier, 0);
        let old = pending.open(waiter().0, None).unwrap();
        let _ = pending.answer(old.number);
        // Every other identifier taken: the next request gets the same number again.
        for _ in 0..255 {
            pending.open(waiter().0, None).unwrap();
        }
        let (tx, mut rx) = waiter();
        let new = pending.open(tx, None).unwrap();
        assert_eq!(new.number, old.number);
        pending.abandon(old);
        pending.cancel(old);
        assert_eq!(pending.abandoned(), 0);
        assert!(matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)), "the new request still waits");
        assert!(matches!(pending.answer(new.number), Match::Waiting(_)));
    }

    #[test]
    fn tokens_count_up_from_a_start_and_wrap_and_skip_outstanding_ones() {
        let mut pending = Pending::new(Numbering::Token, u32::MAX - 1);
        let a = pending.open(waiter().0, None).unwrap();
        let b = pending.open(waiter().0, None).unwrap();
        let c = pending.open(waiter().0, None).unwrap();
        assert_eq!([a.number, b.number, c.number], [u32::MAX - 1, u32::MAX, 0]);
        // Round the space with `a` still outstanding: the counter passes over it.
        pending.next = u32::MAX - 1;
        let _ = pending.answer(b.number);
        assert_eq!(pending.open(waiter().0, None).unwrap().number, u32::MAX, "not a's token");
    }

    #[test]
    fn a_token_answer_goes_to_its_waiter_and_unknown_tokens_nowhere() {
        let mut pending = Pending::new(Numbering::Token, 1000);
        let (tx, mut rx) = waiter();
        let ticket = pending.open(tx, None).unwrap();
        assert!(matches!(pending.answer(ticket.number + 1), Match::Unknown));
        let Match::Waiting(tx) = pending.answer(ticket.number) else { panic!("outstanding") };
        tx.send(vec![9]).unwrap();
        assert_eq!(rx.try_recv().unwrap(), [9]);
        assert!(pending.entries.is_empty());
    }

    #[test]
    fn closing_tells_every_waiter_and_gives_identifiers_back() {
        let identifiers = Arc::new(Semaphore::new(2));
        let mut pending = Pending::new(Numbering::Identifier, 0);
        let (tx, mut rx) = waiter();
        pending.open(tx, Some(Arc::clone(&identifiers).try_acquire_owned().unwrap())).unwrap();
        let abandoned = pending.open(waiter().0, Some(Arc::clone(&identifiers).try_acquire_owned().unwrap())).unwrap();
        pending.abandon(abandoned);
        assert_eq!(identifiers.available_permits(), 0, "an abandoned request keeps its identifier");
        pending.close();
        assert!(matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Closed)));
        assert_eq!(identifiers.available_permits(), 2);
        assert_eq!(pending.abandoned(), 0);
    }
}
