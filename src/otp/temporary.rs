//! Temporary codes the help desk issues to a user who lost their phone: eight digits from the
//! OS's CSPRNG (longer than an app's code, so that an appended one is told apart by its
//! length), valid for a set time and number of logins, kept sealed like seeds.

use rand::Rng;
use subtle::ConstantTimeEq;

use crate::secret::Secret;

pub const DIGITS: usize = 8;

/// A new uniformly random code, e.g. "04291735".
pub fn generate() -> Secret<String> {
    let n: u32 = rand::rngs::OsRng.gen_range(0..100_000_000);
    Secret::new(format!("{n:08}"))
}

/// Whether `typed` is `code`, in constant time (a space or two around it forgiven, as people
/// copy codes read out over the phone).
pub fn matches(typed: &str, code: &str) -> bool {
    let typed = typed.trim();
    typed.len() == code.len() && bool::from(typed.as_bytes().ct_eq(code.as_bytes()))
}

/// Whether `typed` has a temporary code's shape (eight digits).
pub fn looks_like(typed: &str) -> bool {
    let typed = typed.trim();
    typed.len() == DIGITS && typed.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_eight_digits_compared_whole() {
        let code = generate();
        assert_eq!(code.expose().len(), DIGITS);
        assert!(looks_like(code.expose()));
        assert!(matches(code.expose(), code.expose()));
        assert!(matches(&format!(" {} ", code.expose()), code.expose()));
        assert!(!matches(&code.expose()[..7], code.expose()));
        assert!(!matches("", code.expose()));
        assert!(!looks_like("1234567"));
        assert!(!looks_like("1234567a"));
    }
}
