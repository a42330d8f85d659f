//! What a challenge's code step needs to answer, kept apart from the State that travels through
//! the NAS: the profile of the first step (user name, mobile number, and the groups its reply
//! attributes name). It does not fit in the 253 octets of a State, so it is kept in the store
//! under the State's nonce — sealed with the key file (it names people and their phones), and
//! bound to that nonce so one challenge's context cannot be served for another's.

use crate::directory::UserProfile;
use crate::keys::KeyRing;

const AAD: &[u8] = b"radmfa/challenge-context/v1";

fn aad(nonce: &[u8]) -> Vec<u8> {
    [AAD, nonce].concat()
}

/// The profile, sealed for the State with `nonce`.
pub(super) fn seal(profile: &UserProfile, nonce: &[u8], keys: &KeyRing) -> Result<Vec<u8>, serde_json::Error> {
    let plain = zeroize::Zeroizing::new(serde_json::to_vec(profile)?);
    Ok(keys.seal_bytes(&plain, &aad(nonce)).1)
}

/// The profile sealed for `nonce`; `None` for anything else.
pub(super) fn open(sealed: &[u8], nonce: &[u8], keys: &KeyRing) -> Option<UserProfile> {
    let plain = keys.open_any(sealed, &aad(nonce)).ok()?;
    serde_json::from_slice(&plain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_opens_only_for_its_own_nonce_and_key() {
        let keys = KeyRing::generate("k1");
        let profile = UserProfile {
            username: "alice".into(),
            mobile: Some("+46701234567".into()),
            groups: vec!["CN=VPN-Users,DC=example,DC=test".into()],
            ..Default::default()
        };
        let sealed = seal(&profile, b"nonce-1", &keys).unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("+4670"), "sealed, not in clear");
        assert_eq!(open(&sealed, b"nonce-1", &keys), Some(profile));
        assert_eq!(open(&sealed, b"nonce-2", &keys), None, "another State's context");
        assert_eq!(open(&sealed, b"nonce-1", &KeyRing::generate("k1")), None, "another key");
        assert_eq!(open(b"garbage", b"nonce-1", &keys), None);
    }
}
