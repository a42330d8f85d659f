//! A NAS's retry of a request whose answer was lost, sent to another node (NetScaler, ASA,
//! FortiGate and Palo Alto all fail over to their second server): the code it carries was used
//! up by the node that accepted it, so deciding the retry afresh would turn a login that
//! succeeded into a Reject (`code_replayed`). The node that accepts a code keeps its answer in
//! the shared store, under the request's key, for as long as a NAS retries; a node that finds
//! the code or the State already used looks there before it says so.
//!
//! The key is the client's name, the Request Authenticator (16 random octets the NAS chose for
//! this request and keeps in its retries), the User-Name, the State and the User-Password as
//! sent (hidden by the shared secret, so the key reveals nothing a listener could not see): only
//! a retry of that very request, the same answer included, finds the Accept.

use sha2::{Digest, Sha256};

use super::{Authenticator, Decision, Reason, Request, Verdict};
use crate::radius::{Attribute, Code, Packet};
use crate::store::{KeptAnswer, UnixTime};

/// Names one Access-Request among all others, the same in each of its retries.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct RetryKey([u8; 32]);

impl RetryKey {
    pub(super) fn of(request: &Request) -> Self {
        let mut hash = Sha256::new();
        for part in [
            b"radmfa/retry/v1".as_slice(),
            request.client.name.as_bytes(),
            &request.authenticator,
            request.user_name.as_deref().unwrap_or_default(),
            request.state.as_deref().unwrap_or_default(),
            &request.hidden_password,
        ] {
            // Each part with its length, so no two different requests hash the same octets.
            hash.update((part.len() as u32).to_be_bytes());
            hash.update(part);
        }
        Self(hash.finalize().into())
    }
}

/// What a request that uses up a code leaves for its retries: its key, and the Accept to keep
/// with the code's use (in the same store operation, so a node that dies right after using the
/// code has left the answer too).
pub(super) struct RetryRecord {
    pub(super) key: RetryKey,
    pub(super) keep: Option<KeptAnswer>,
}

impl Authenticator {
    /// The record of `request`, to be answered with `accept` if its code wins.
    pub(super) fn retry_record(&self, request: &Request, accept: &Decision, now: UnixTime) -> RetryRecord {
        let key = RetryKey::of(request);
        RetryRecord { key, keep: self.kept(key, accept, now) }
    }

    fn kept(&self, key: RetryKey, accept: &Decision, now: UnixTime) -> Option<KeptAnswer> {
        let Verdict::Accept { attributes } = &accept.verdict else { return None };
        if self.settings.retry_window.is_zero() {
            return None;
        }
        let expires_at = now + self.settings.retry_window.as_secs() as UnixTime;
        Some(KeptAnswer { key: key.0.to_vec(), expires_at, answer: encode(attributes)? })
    }

    /// Keeps an Accept given after its State was used up (an SMS code's). A failure to keep it
    /// is logged, not fatal: the login succeeded, and the answer goes out.
    pub(super) async fn keep_accept(&self, request: &Request, accept: &Decision, now: UnixTime) {
        let Some(kept) = self.kept(RetryKey::of(request), accept, now) else { return };
        if let Err(e) = self.services.store.keep_answer(kept).await {
            tracing::warn!(error = %e, client = request.client.name.as_str(), "could not keep an Accept for the NAS's retries");
        }
    }

    /// The Accept a node gave this very request before, if one is kept.
    pub(super) async fn accepted_before(&self, key: RetryKey, now: UnixTime) -> Result<Option<Decision>, Reason> {
        if self.settings.retry_window.is_zero() {
            return Ok(None);
        }
        let kept = self.services.store.kept_answer(&key.0, now).await.map_err(super::store_down)?;
        Ok(kept
            .and_then(|bytes| decode(&bytes))
            .map(|attributes| Decision { verdict: Verdict::Accept { attributes }, reason: Reason::RetryOfAccepted }))
    }
}

/// An Accept's attributes as RADIUS octets (the body of a packet).
fn encode(attributes: &[Attribute]) -> Option<Vec<u8>> {
    let mut packet = Packet::new(Code::AccessAccept, 0, [0; 16]);
    packet.attributes = attributes.to_vec();
    packet.encode().ok()
}

fn decode(bytes: &[u8]) -> Option<Vec<Attribute>> {
    Packet::decode(bytes).ok().map(|packet| packet.attributes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_come_back_as_they_were_kept() {
        let attributes = vec![Attribute::standard(25, b"class".to_vec()), Attribute::vendor(3845, 16, b"VPN-Users".to_vec())];
        let back = decode(&encode(&attributes).unwrap()).unwrap();
        let mut a = Packet::new(Code::AccessAccept, 1, [7; 16]);
        a.attributes = attributes;
        let mut b = Packet::new(Code::AccessAccept, 1, [7; 16]);
        b.attributes = back;
        assert_eq!(a.encode().unwrap(), b.encode().unwrap(), "the same octets on the wire");
    }
}
