//! The challenge State (RFC 2865 §5.24) as a self-contained sealed blob, so any radmfa node
//! holding the key file can resume a challenge another node began.
//!
//! It carries the stage (TOTP or SMS), expiry, a random nonce (recorded in the store when used,
//! so a State works once), tags binding it to the login name and the NAS client, the account id
//! the login resolved to (so the code step files its work under the same account without asking
//! the directory again), and for SMS the salted hash of the code and the tries left.
//! AES-256-GCM under the key file's current key; 128 octets plus the account id on the wire,
//! within the 253 one attribute carries for any id up to `MAX_ACCOUNT_ID`.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::directory::MAX_ACCOUNT_ID;
use crate::keys::KeyRing;
use crate::store::UnixTime;

const VERSION: u8 = 2;
const AAD: &[u8] = b"radmfa/state/v2";
/// The fixed fields; the account id (a length octet, then its bytes) follows.
const FIXED_LEN: usize = 1 + 1 + 8 + 16 + 16 + 8 + 16 + 32;

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
    /// The account the login resolved to: what tokens, lockouts and SMS limits are keyed on.
    pub account: String,
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

/// The login name's tag, ignoring ASCII case only: `ALICE` may answer `alice`'s challenge (one
/// AD account), but `Kalle` with a KELVIN SIGN may not answer `kalle`'s (two accounts).
fn user_tag(login: &str) -> [u8; 16] {
    tag("user", &login.to_ascii_lowercase())
}

pub fn random16() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// The account id does not fit in a State (longer than `MAX_ACCOUNT_ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the account id is longer than {MAX_ACCOUNT_ID} bytes and does not fit in a challenge State")]
pub struct AccountTooLong;

impl ChallengeState {
    /// A State for `login` (the name the NAS sent, normalised: its answer must come under the
    /// same name) resolved to `account`, on `client`.
    pub fn new(stage: Stage, login: &str, account: &str, client: &str, expires_at: UnixTime, tries_left: u8) -> Self {
        Self {
            stage,
            tries_left,
            expires_at,
            nonce: random16(),
            account: account.to_owned(),
            user_tag: user_tag(login),
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
        self.user_tag == user_tag(user) && self.client_tag == tag::<8>("client", client)
    }

    pub fn seal(&self, keys: &KeyRing) -> Result<Vec<u8>, AccountTooLong> {
        let account_len = u8::try_from(self.account.len()).ok().filter(|&n| usize::from(n) <= MAX_ACCOUNT_ID).ok_or(AccountTooLong)?;
        let mut plain = Vec::with_capacity(FIXED_LEN + 1 + self.account.len());
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
        plain.push(account_len);
        plain.extend_from_slice(self.account.as_bytes());
        let (_, sealed) = keys.seal_bytes(&plain, AAD);
        let mut out = vec![VERSION];
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a State from the wire; `None` for anything we did not seal.
    pub fn open(bytes: &[u8], keys: &KeyRing) -> Option<Self> {
        let (&version, sealed) = bytes.split_first()?;
        if version != VERSION {
            return None;
        }
        let plain = keys.open_any(sealed, AAD).ok()?;
        let mut r = crate::radius::codec::Reader::new(&plain);
        let stage = match r.u8()? {
            0 => Stage::Totp,
            1 => Stage::Sms,
            _ => return None,
        };
        let tries_left = r.u8()?;
        let expires_at = i64::from_be_bytes(r.array()?);
        let nonce = r.array()?;
        let user_tag = r.array()?;
        let client_tag = r.array()?;
        let code_salt = r.array()?;
        let code_hash = r.array()?;
        let account_len = r.u8()?;
        let account = std::str::from_utf8(r.take(usize::from(account_len))?).ok()?.to_owned();
        if !r.is_empty() {
            return None;
        }
        Some(Self { stage, tries_left, expires_at, nonce, account, user_tag, client_tag, code_salt, code_hash })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_opens_only_with_the_key_and_knows_its_owner() {
        let keys = KeyRing::generate("k1");
        let mut state = ChallengeState::new(Stage::Sms, "alice@example.test", "alice", "netscaler-1", 1_000, 3);
        state.code_salt = random16();
        state.code_hash = [7; 32];
        let wire = state.seal(&keys).unwrap();
        assert_eq!(wire.len(), 128 + "alice".len());
        let opened = ChallengeState::open(&wire, &keys).unwrap();
        assert_eq!(opened, state);
        assert_eq!(opened.account, "alice");
        assert!(opened.belongs_to("alice@example.test", "netscaler-1"));
        assert!(!opened.belongs_to("alice", "netscaler-1"), "the answer comes under the name the NAS sent first");
        assert!(!opened.belongs_to("bob", "netscaler-1"));
        assert!(opened.belongs_to("ALICE@example.TEST", "netscaler-1"), "ASCII case aside");
        let kelvin = ChallengeState::new(Stage::Totp, "\u{212a}alle", "\u{212a}alle", "nas", 1, 3);
        assert!(!kelvin.belongs_to("kalle", "nas"), "KELVIN SIGN is another name");
        assert!(!opened.belongs_to("alice@example.test", "asa"));
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
        assert_eq!(retry.account, "alice");
    }

    #[test]
    fn the_longest_account_id_fits_in_one_attribute_and_a_longer_one_is_refused() {
        let keys = KeyRing::generate("k1");
        let longest = "å".repeat(MAX_ACCOUNT_ID / 2);
        let wire = ChallengeState::new(Stage::Sms, "x", &longest, "nas", 1, 3).seal(&keys).unwrap();
        assert!(wire.len() <= 253, "{}", wire.len());
        assert_eq!(ChallengeState::open(&wire, &keys).unwrap().account, longest);
        let too_long = "a".repeat(MAX_ACCOUNT_ID + 1);
        assert_eq!(ChallengeState::new(Stage::Sms, "x", &too_long, "nas", 1, 3).seal(&keys), Err(AccountTooLong));
    }
}
