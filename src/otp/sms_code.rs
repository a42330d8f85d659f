//! One-time codes sent by SMS: six digits from the OS's CSPRNG, kept only as a keyed hash.

use hmac::{Hmac, Mac};
use rand::Rng;
use subtle::ConstantTimeEq;

use crate::secret::Secret;

pub const DIGITS: usize = 6;

/// A new uniformly random code, e.g. "042917".
pub fn generate() -> Secret<String> {
    let n: u32 = rand::rngs::OsRng.gen_range(0..1_000_000);
    Secret::new(format!("{n:06}"))
}

/// The hash a challenge State carries instead of the code, salted by the State's nonce.
pub fn hash(code: &str, salt: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(salt).unwrap_or_else(|_| <Hmac<sha2::Sha256> as Mac>::new(&Default::default()));
    mac.update(code.trim().as_bytes());
    mac.finalize().into_bytes().into()
}

pub fn matches(code: &str, salt: &[u8], expected: &[u8; 32]) -> bool {
    bool::from(hash(code, salt).ct_eq(expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits_and_checked_by_hash() {
        let code = generate();
        assert_eq!(code.expose().len(), DIGITS);
        assert!(code.expose().bytes().all(|b| b.is_ascii_digit()));
        let h = hash(code.expose(), b"salt");
        assert!(matches(code.expose(), b"salt", &h));
        assert!(matches(&format!(" {} ", code.expose()), b"salt", &h), "spaces around are forgiven");
        assert!(!matches(code.expose(), b"other salt", &h));
        assert!(!matches("x", b"salt", &h));
    }
}
