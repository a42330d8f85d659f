//! CSRF protection for the sign-in form, which has no server-side session behind it: a signed
//! double submit. The browser gets a random nonce in a short-lived HttpOnly, SameSite=Strict
//! cookie; the form carries `issued.mac`, an HMAC-SHA256 over the nonce and the issue time (Unix
//! seconds), keyed by a key derived from the key file's current key. A sign-in passes only with
//! the cookie and a matching, unexpired token: another site can neither make a token nor pair
//! its own with a victim's cookie, and nothing is stored per visitor. Every node sharing the key
//! file accepts the forms of every other (a load balancer may send the form's page and its post
//! to different nodes); a key rotation makes open sign-in forms expire once.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::digest::KeyInit;
use hmac::digest::generic_array::GenericArray;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::keys::Keys;
use crate::store::UnixTime;

/// What a nonce from our cookie looks like: 32 random bytes in URL-safe base64.
const NONCE_LEN: usize = 43;

/// What the key is derived for: no other use of the key file shares it.
const PURPOSE: &str = "radmfa/portal/signin-csrf/v1";

/// How far ahead of this node's clock another node's may be, for a form it issued.
const CLOCK_SKEW: u64 = 60;

pub struct SigninCsrf {
    keys: Arc<Keys>,
    lifetime: Duration,
}

impl std::fmt::Debug for SigninCsrf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigninCsrf").field("lifetime", &self.lifetime).finish_non_exhaustive()
    }
}

impl SigninCsrf {
    pub fn new(keys: Arc<Keys>, lifetime: Duration) -> Self {
        Self { keys, lifetime }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Whether a cookie's value is a nonce we could have made (else the page makes a new one).
    pub fn is_nonce(value: &str) -> bool {
        value.len() == NONCE_LEN && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    fn mac(&self, nonce: &str, issued: u64) -> [u8; 32] {
        // Zero-padded to SHA-256's block size, as HMAC pads any shorter key: the infallible
        // constructor.
        let mut key = Zeroizing::new([0u8; 64]);
        key[..32].copy_from_slice(self.keys.current().derive(PURPOSE).as_ref());
        let mut mac = <Hmac<Sha256> as KeyInit>::new(GenericArray::from_slice(key.as_ref()));
        mac.update(b"radmfa portal sign-in csrf\0");
        mac.update(nonce.as_bytes());
        mac.update(&issued.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A token for the sign-in form, bound to the cookie's nonce.
    pub fn token(&self, nonce: &str, now: UnixTime) -> String {
        let issued = u64::try_from(now).unwrap_or(0);
        format!("{issued}.{}", URL_SAFE_NO_PAD.encode(self.mac(nonce, issued)))
    }

    /// Whether `token` was made with the key file for `nonce` less than `lifetime` ago.
    pub fn verify(&self, nonce: &str, token: &str, now: UnixTime) -> bool {
        let Some((issued, mac)) = token.split_once('.') else { return false };
        let (Ok(issued), Ok(mac)) = (issued.parse::<u64>(), URL_SAFE_NO_PAD.decode(mac)) else { return false };
        let now = u64::try_from(now).unwrap_or(0);
        let fresh = issued <= now.saturating_add(CLOCK_SKEW) && now.saturating_sub(issued) < self.lifetime.as_secs();
        let genuine = bool::from(self.mac(nonce, issued).as_slice().ct_eq(&mac));
        fresh && genuine
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyRing;
    use crate::portal::session::random_token;

    fn csrf_with(ring: KeyRing) -> SigninCsrf {
        SigninCsrf::new(Arc::new(Keys::fixed(ring)), Duration::from_secs(3600))
    }

    #[test]
    fn a_token_passes_with_its_own_cookie_only_and_not_for_ever() {
        let ring = KeyRing::generate("k1");
        let csrf = csrf_with(ring.current_only());
        let t0: UnixTime = 1_800_000_000;
        let (mine, theirs) = (random_token(), random_token());
        assert!(SigninCsrf::is_nonce(&mine));
        let token = csrf.token(&mine, t0);
        assert!(csrf.verify(&mine, &token, t0 + 3599));
        assert!(csrf_with(ring).verify(&mine, &token, t0 + 10), "another node with the same key file");
        assert!(csrf.verify(&mine, &token, t0 - 30), "issued by a node whose clock is a little ahead");
        assert!(!csrf.verify(&mine, &token, t0 - 300), "issued in the future");
        assert!(!csrf.verify(&theirs, &token, t0), "another browser's cookie");
        assert!(!csrf.verify(&mine, &token, t0 + 3601), "expired");
        let (issued, mac) = token.split_once('.').unwrap();
        let later = format!("{}.{mac}", issued.parse::<u64>().unwrap() + 7200);
        assert!(!csrf.verify(&mine, &later, t0 + 7300), "a moved issue time breaks the MAC");
        assert!(!csrf.verify(&mine, &csrf_with(KeyRing::generate("k1")).token(&mine, t0), t0), "another key file");
        for forged in ["", ".", "1.", "x.y", "0.AAAA", &format!("0.{}", "A".repeat(43))] {
            assert!(!csrf.verify(&mine, forged, t0), "{forged:?}");
        }
        assert!(!SigninCsrf::is_nonce("short") && !SigninCsrf::is_nonce(&"a;".repeat(22)[..43]));
    }
}
