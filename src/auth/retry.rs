//! A NAS's retry of a request whose answer was lost, sent to another node (NetScaler, ASA,
//! FortiGate and Palo Alto all fail over to their second server): the code it carries was used
//! up by the node that accepted it, so deciding the retry afresh would turn a login that
//! succeeded into a Reject (`code_replayed`). The node that accepts a code keeps its answer in
//! the shared store, under the request's key, for as long as a NAS retries; a node that finds
//! the code or the State already used looks there before it says so.
//!
//! The key is the client's name, the Request Authenticator (16 random octets the NAS chose for
//! this request and keeps in its retries), the User-Name and the State: only a retry of that
//! very request, from a client holding the shared secret, finds the answer.

use sha2::{Digest, Sha256};

use super::{Authenticator, Decision, Reason, Request, Verdict};
use crate::radius::{Attribute, Code, Packet};
use crate::store::UnixTime;

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
        ] {
            // Each part with its length, so no two different requests hash the same octets.
            hash.update((part.len() as u32).to_be_bytes());
            hash.update(part);
        }
        Self(hash.finalize().into())
    }
}

impl Authenticator {
    /// Keeps an Accept that used up a code, for the NAS's retries. A failure to keep it is
    /// logged, not fatal: the login succeeded, and the answer goes out.
    pub(super) async fn keep_accept(&self, request: &Request, decision: &Decision, now: UnixTime) {
        let Verdict::Accept { attributes } = &decision.verdict else { return };
        if decision.reason != Reason::Authenticated {
            return;
        }
        let Some(answer) = encode(attributes) else { return };
        let expires_at = now + self.settings.retry_window.as_secs() as UnixTime;
        let key = RetryKey::of(request);
        if let Err(e) = self.services.store.keep_answer(&key.0, expires_at, answer).await {
            tracing::warn!(error = %e, client = request.client.name.as_str(), "could not keep an Accept for the NAS's retries");
        }
    }

    /// The Accept a node gave this very request before, if one is kept.
    pub(super) async fn accepted_before(&self, key: RetryKey, now: UnixTime) -> Result<Option<Decision>, Reason> {
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
