//! CSRF protection for the sign-in form, which has no server-side session behind it: a signed
//! double submit. The browser gets a random nonce in a short-lived HttpOnly, SameSite=Strict
//! cookie; the form carries `issued.mac`, an HMAC-SHA256 over the nonce and the issue time,
//! keyed by a random key made at start-up. A sign-in passes only with the cookie and a matching,
//! unexpired token: another site can neither make a token nor pair its own with a victim's
//! cookie, and nothing is stored per visitor. A restart makes open sign-in forms expire once.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::digest::KeyInit;
use hmac::digest::generic_array::GenericArray;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// What a nonce from our cookie looks like: 32 random bytes in URL-safe base64.
const NONCE_LEN: usize = 43;

pub struct SigninCsrf {
    key: Zeroizing<[u8; 64]>,
    /// Issue times count from here, so a wall-clock step cannot revive an old token.
    epoch: Instant,
    lifetime: Duration,
}

impl std::fmt::Debug for SigninCsrf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigninCsrf").field("lifetime", &self.lifetime).finish_non_exhaustive()
    }
}

impl SigninCsrf {
    pub fn new(lifetime: Duration) -> Self {
        let mut key = Zeroizing::new([0u8; 64]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        Self { key, epoch: Instant::now(), lifetime }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Whether a cookie's value is a nonce we could have made (else the page makes a new one).
    pub fn is_nonce(value: &str) -> bool {
        value.len() == NONCE_LEN && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    fn mac(&self, nonce: &str, issued: u64) -> [u8; 32] {
        // A key of exactly SHA-256's block size: the infallible constructor.
        let mut mac = <Hmac<Sha256> as KeyInit>::new(GenericArray::from_slice(self.key.as_ref()));
        mac.update(b"radmfa portal sign-in csrf\0");
        mac.update(nonce.as_bytes());
        mac.update(&issued.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A token for the sign-in form, bound to the cookie's nonce.
    pub fn token(&self, nonce: &str, now: Instant) -> String {
        let issued = now.saturating_duration_since(self.epoch).as_secs();
        format!("{issued}.{}", URL_SAFE_NO_PAD.encode(self.mac(nonce, issued)))
    }

    /// Whether `token` was made by this process for `nonce` less than `lifetime` ago.
    pub fn verify(&self, nonce: &str, token: &str, now: Instant) -> bool {
        let Some((issued, mac)) = token.split_once('.') else { return false };
        let (Ok(issued), Ok(mac)) = (issued.parse::<u64>(), URL_SAFE_NO_PAD.decode(mac)) else { return false };
        let age = now.saturating_duration_since(self.epoch).as_secs().checked_sub(issued);
        let fresh = age.is_some_and(|age| age < self.lifetime.as_secs());
        let genuine = bool::from(self.mac(nonce, issued).as_slice().ct_eq(&mac));
        fresh && genuine
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portal::session::random_token;

    #[test]
    fn a_token_passes_with_its_own_cookie_only_and_not_for_ever() {
        let csrf = SigninCsrf::new(Duration::from_secs(3600));
        let t0 = Instant::now();
        let (mine, theirs) = (random_token(), random_token());
        assert!(SigninCsrf::is_nonce(&mine));
        let token = csrf.token(&mine, t0);
        assert!(csrf.verify(&mine, &token, t0 + Duration::from_secs(3599)));
        assert!(!csrf.verify(&theirs, &token, t0), "another browser's cookie");
        assert!(!csrf.verify(&mine, &token, t0 + Duration::from_secs(3601)), "expired");
        let (issued, mac) = token.split_once('.').unwrap();
        let later = format!("{}.{mac}", issued.parse::<u64>().unwrap() + 7200);
        assert!(!csrf.verify(&mine, &later, t0 + Duration::from_secs(7300)), "a moved issue time breaks the MAC");
        assert!(!csrf.verify(&mine, &SigninCsrf::new(Duration::from_secs(3600)).token(&mine, t0), t0), "another key");
        for forged in ["", ".", "1.", "x.y", "0.AAAA", &format!("0.{}", "A".repeat(43))] {
            assert!(!csrf.verify(&mine, forged, t0), "{forged:?}");
        }
        assert!(!SigninCsrf::is_nonce("short") && !SigninCsrf::is_nonce(&"a;".repeat(22)[..43]));
    }
}
