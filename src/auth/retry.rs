//! A NAS's retry of a request whose answer was lost, sent to another node (NetScaler, ASA,
//! FortiGate and Palo Alto all fail over to their second server): the code it carries was used
//! up by the node that accepted it, so deciding the retry afresh would turn a login that
//! succeeded into a Reject (`code_replayed`). The node that accepts a code keeps its answer in
//! the shared store, under the request's key, for as long as a NAS retries; a node that finds
//! the code or the State already used looks there before it says so.
//!
//! An SMS challenge is kept the same way, before its SMS goes out: the NAS's retry of a password
//! step that sent a code gets the same Challenge (the same State, the code already on its way),
//! not a second SMS.
//!
//! The key is the client's name, the Request Authenticator (16 random octets the NAS chose for
//! this request and keeps in its retries), the User-Name, the State and the User-Password as
//! sent (hidden by the shared secret, so the key reveals nothing a listener could not see): only
//! a retry of that very request, the same answer included, finds the Accept.
//!
//! RADIUS/1.1 (RFC 9765) has neither: its Token is a counter of the connection, and the
//! password comes in the clear. The server then names the request by a digest of its other
//! attributes, and the password enters the key through an HMAC under a key of the key file, so
//! the kept key is no unsalted hash of a password that a copy of the database could be
//! searched for.

use sha2::{Digest, Sha256};

use super::{Authenticator, Decision, Reason, Request, Verdict};
use crate::radius::packet::VENDOR_SPECIFIC;
use crate::radius::vendor::split_vendor_specific;
use crate::radius::{Attribute, Code, Packet, VendorFormat, attr};
use crate::store::{KeptAnswer, UnixTime};

/// Names one Access-Request among all others, the same in each of its retries.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct RetryKey([u8; 32]);

impl RetryKey {
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(super) fn of(request: &Request, keys: &crate::keys::Keys) -> Self {
        let clear_password = match (&request.password, request.hidden_password.is_empty()) {
            (Some(password), true) => {
                use hmac::{Hmac, Mac};
                let key = keys.current().derive("radmfa/retry/clear-password");
                // HMAC takes a key of any length: this never fails.
                <Hmac<Sha256> as Mac>::new_from_slice(key.as_slice()).map_or_else(
                    |_| Vec::new(),
                    |mut mac| {
                        mac.update(password.expose());
                        mac.finalize().into_bytes().to_vec()
                    },
                )
            }
            _ => Vec::new(),
        };
        let mut hash = Sha256::new();
        for part in [
            b"radmfa/retry/v1".as_slice(),
            request.client.name.as_bytes(),
            &request.authenticator,
            request.user_name.as_deref().unwrap_or_default(),
            request.state.as_deref().unwrap_or_default(),
            &request.hidden_password,
            &clear_password,
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
        let key = RetryKey::of(request, &self.keys);
        RetryRecord { key, keep: self.kept(key, accept, now) }
    }

    /// `answer` as kept for this request's retries, until they stop; `None` when retries are
    /// answered by the node's own cache alone (no `retry_window`), or it is not kept (a Reject).
    pub(super) fn kept(&self, key: RetryKey, answer: &Decision, now: UnixTime) -> Option<KeptAnswer> {
        if self.settings().retry_window.is_zero() {
            return None;
        }
        let expires_at = now + self.settings().retry_window.as_secs() as UnixTime;
        Some(KeptAnswer { key: key.0.to_vec(), expires_at, answer: encode(&answer.verdict)? })
    }

    /// Keeps an answer for this request's retries: an Accept given after its State was used up
    /// (an SMS code's), or a Challenge before its SMS goes out.
    pub(super) async fn keep_answer(&self, request: &Request, answer: &Decision, now: UnixTime) -> Result<(), Reason> {
        let Some(kept) = self.kept(RetryKey::of(request, &self.keys), answer, now) else { return Ok(()) };
        self.store.keep_answer(kept).await.map_err(super::store_down)
    }

    /// The answer a node gave this very request before, if one is kept.
    pub(super) async fn answered_before(&self, key: RetryKey, now: UnixTime) -> Result<Option<Decision>, Reason> {
        if self.settings().retry_window.is_zero() {
            return Ok(None);
        }
        let kept = self.store.kept_answer(&key.0, now).await.map_err(super::store_down)?;
        Ok(kept.and_then(|bytes| decode(&bytes)))
    }
}

/// An Accept's attributes, or a Challenge's prompt and State, as RADIUS octets.
fn encode(verdict: &Verdict) -> Option<Vec<u8>> {
    let (code, attributes) = match verdict {
        Verdict::Accept { attributes } => (Code::AccessAccept, attributes.clone()),
        Verdict::Challenge { message, state } => {
            let mut attributes: Vec<Attribute> =
                message.as_bytes().chunks(253).map(|part| Attribute::standard(attr::REPLY_MESSAGE, part.to_vec())).collect();
            attributes.push(Attribute::standard(attr::STATE, state.clone()));
            (Code::AccessChallenge, attributes)
        }
        Verdict::Reject { .. } | Verdict::NoAnswer => return None,
    };
    let mut packet = Packet::new(code, 0, [0; 16]);
    packet.attributes = attributes;
    packet.encode().ok()
}

/// A kept answer as the decision it was.
pub(super) fn decode(bytes: &[u8]) -> Option<Decision> {
    let packet = Packet::decode_with(bytes, &|_| None).ok()?;
    match packet.code {
        Code::AccessAccept => {
            let attributes = packet.attributes.into_iter().map(single_sub_attribute).collect();
            Some(Decision { verdict: Verdict::Accept { attributes }, reason: Reason::RetryOfAccepted })
        }
        Code::AccessChallenge => {
            let values = |number: u8| {
                packet.attributes.iter().filter_map(move |a| match a {
                    Attribute::Standard { typ, value } if *typ == number => Some(value.as_slice()),
                    _ => None,
                })
            };
            let message = String::from_utf8(values(attr::REPLY_MESSAGE).flatten().copied().collect()).ok()?;
            let state = values(attr::STATE).next()?.to_vec();
            Some(Decision::challenge(Reason::RetryOfChallenge, message, state))
        }
        _ => None,
    }
}

/// A kept Vendor-Specific attribute as its sub-attribute when it reads as exactly one in RFC
/// 2865's layout (one each is how radmfa writes them), which re-encodes as the same octets;
/// else whole. The vendor's own layout is not known here, and reading a Vendor-Specific of
/// another layout as several sub-attributes would re-encode it as other octets.
fn single_sub_attribute(attribute: Attribute) -> Attribute {
    if let Attribute::Standard { typ: VENDOR_SPECIFIC, value } = &attribute
        && let Some(mut subs) = split_vendor_specific(value, &|_| Some(VendorFormat::RFC2865))
        && subs.len() == 1
        && let Some(sub) = subs.pop()
    {
        return sub;
    }
    attribute
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_come_back_as_they_were_kept() {
        // Lucent (format=2,1) type 2 = [3, 7], whose octets read in RFC 2865's layout would be
        // two sub-attributes, re-encoded as two Vendor-Specific attributes.
        let lucent = VendorFormat::new(2, 1, false).unwrap();
        let attributes = vec![
            Attribute::standard(25, b"class".to_vec()),
            Attribute::vendor(3845, 16, b"VPN-Users".to_vec()),
            Attribute::vendor_in(lucent, 4846, 2, [3, 7]),
        ];
        let Some(Decision { verdict: Verdict::Accept { attributes: back }, reason }) =
            decode(&encode(&Verdict::Accept { attributes: attributes.clone() }).unwrap())
        else {
            panic!("an Accept comes back an Accept")
        };
        assert_eq!(reason, Reason::RetryOfAccepted);
        let mut a = Packet::new(Code::AccessAccept, 1, [7; 16]);
        a.attributes = attributes;
        let mut b = Packet::new(Code::AccessAccept, 1, [7; 16]);
        b.attributes = back;
        assert_eq!(a.encode().unwrap(), b.encode().unwrap(), "the same octets on the wire");
    }

    #[test]
    fn a_challenge_comes_back_with_its_whole_prompt_and_state() {
        let message = "Ange koden som skickades till +46 70*** **67. ".repeat(8);
        let state = vec![0xa5; 120];
        let kept = encode(&Verdict::Challenge { message: message.clone(), state: state.clone() }).unwrap();
        let back = decode(&kept).unwrap();
        assert_eq!(back, Decision::challenge(Reason::RetryOfChallenge, message, state));
        assert!(encode(&Verdict::Reject { message: "no".into() }).is_none(), "a Reject is never kept");
    }
}
