//! The challenge State (RFC 2865 §5.24) as a self-contained sealed blob, so any radmfa node
//! holding the key file can resume a challenge another node began.
//!
//! It carries the stage (TOTP or SMS), expiry, a random nonce (recorded in the store when used,
//! so a State works once), tags binding it to the user and the NAS client, and for SMS the salted
//! hash of the code and the tries left. AES-256-GCM under the key file's current key; 127
//! octets on the wire, well within the 253 one attribute carries.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::UnixTime;
use crate::store::seal::KeyRing;

const VERSION: u8 = 1;
const AAD: &[u8] = b"radmfa/state/v1";
const PLAIN_LEN: usize = 1 + 1 + 8 + 16 + 16 + 8 + 16 + 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for a code from the authenticator app (or "sms").
    Totp,
    /// Waiting for the code sent by SMS.
    Sms,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeState {
    pub stage: Stage,
    pub tries_left: u8,
    pub expires_at: UnixTime,
    /// Unique per State; single use is enforced on it.
    pub nonce: [u8; 16],
    user_tag: [u8; 16],
    client_tag: [u8; 8],
    /// The salt of `code_hash`; stays the same across retries of one SMS code.
    pub code_salt: [u8; 16],
    pub code_hash: [u8; 32],
}

fn tag<const N: usize>(kind: &str, value: &str) -> [u8; N] {
    let digest = Sha256::new().chain_update(kind).chain_update([0]).chain_update(value).finalize();
    let mut out = [0u8; N];
    out.copy_from_slice(&digest[..N]);
    out
}

pub fn random16() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

impl ChallengeState {
    pub fn new(stage: Stage, user: &str, client: &str, expires_at: UnixTime, tries_left: u8) -> Self {
        Self {
            stage,
            tries_left,
            expires_at,
            nonce: random16(),
            user_tag: tag("user", user),
            client_tag: tag("client", client),
            code_salt: [0; 16],
            code_hash: [0; 32],
        }
    }

    /// The next State for another try at the same SMS code: a fresh nonce, one try fewer.
    pub fn retry(&self) -> Self {
        Self { nonce: random16(), tries_left: self.tries_left.saturating_sub(1), ..self.clone() }
    }

    pub fn belongs_to(&self, user: &str, client: &str) -> bool {
        self.user_tag == tag::<16>("user", user) && self.client_tag == tag::<8>("client", client)
    }

    pub fn seal(&self, keys: &KeyRing) -> Vec<u8> {
        let mut plain = Vec::with_capacity(PLAIN_LEN);
        plain.push(match self.stage {
            Stage::Totp => 0,
            Stage::Sms => 1,
        });
        plain.push(self.tries_left);
        plain.extend_from_slice(&self.expires_at.to_be_bytes());
        plain.extend_from_slice(&self.nonce);
        plain.extend_from_slice(&self.user_tag);
        plain.extend_from_slice(&self.client_tag);
        plain.extend_from_slice(&self.code_salt);
        plain.extend_from_slice(&self.code_hash);
        let (_, sealed) = keys.seal_bytes(&plain, AAD);
        let mut out = vec![VERSION];
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a State from the wire; `None` for anything we did not seal.
    pub fn open(bytes: &[u8], keys: &KeyRing) -> Option<Self> {
        let (&version, sealed) = bytes.split_first()?;
        if version != VERSION {
            return None;
        }
        let plain = keys.open_any(sealed, AAD).ok()?;
        if plain.len() != PLAIN_LEN {
            return None;
        }
        let mut r = crate::radius::codec::Reader::new(&plain);
        let stage = match r.u8()? {
            0 => Stage::Totp,
            1 => Stage::Sms,
            _ => return None,
        };
        Some(Self {
            stage,
            tries_left: r.u8()?,
            expires_at: i64::from_be_bytes(r.array()?),
            nonce: r.array()?,
            user_tag: r.array()?,
            client_tag: r.array()?,
            code_salt: r.array()?,
            code_hash: r.array()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_opens_only_with_the_key_and_knows_its_owner() {
        let keys = KeyRing::generate("k1");
        let mut state = ChallengeState::new(Stage::Sms, "alice", "netscaler-1", 1_000, 3);
        state.code_salt = random16();
        state.code_hash = [7; 32];
        let wire = state.seal(&keys);
        assert_eq!(wire.len(), 127);
        let opened = ChallengeState::open(&wire, &keys).unwrap();
        assert_eq!(opened, state);
        assert!(opened.belongs_to("alice", "netscaler-1"));
        assert!(!opened.belongs_to("bob", "netscaler-1"));
        assert!(!opened.belongs_to("alice", "asa"));
        assert!(ChallengeState::open(&wire, &KeyRing::generate("k1")).is_none(), "another server's key");
        let mut forged = wire.clone();
        forged[40] ^= 1;
        assert!(ChallengeState::open(&forged, &keys).is_none());
        assert!(ChallengeState::open(b"", &keys).is_none());
        assert!(ChallengeState::open(&[1; 20], &keys).is_none());
        let retry = opened.retry();
        assert_eq!(retry.tries_left, 2);
        assert_ne!(retry.nonce, opened.nonce);
        assert_eq!(retry.code_salt, opened.code_salt);
    }
}
