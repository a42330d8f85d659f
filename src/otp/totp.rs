//! TOTP (RFC 6238) through the totp-rs crate: new secrets, otpauth:// URIs, and checking a code
//! within a window of time steps, reporting which step matched so the caller can refuse replays.

use std::str::FromStr;

use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// Secret length for new tokens: 160 bits, as RFC 4226 recommends and the apps expect.
pub const SECRET_LEN: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
            Self::Sha512 => "SHA512",
        }
    }

    fn to_totp_rs(self) -> totp_rs::Algorithm {
        match self {
            Self::Sha1 => totp_rs::Algorithm::SHA1,
            Self::Sha256 => totp_rs::Algorithm::SHA256,
            Self::Sha512 => totp_rs::Algorithm::SHA512,
        }
    }
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().replace('-', "").as_str() {
            "SHA1" => Ok(Self::Sha1),
            "SHA256" => Ok(Self::Sha256),
            "SHA512" => Ok(Self::Sha512),
            other => Err(format!("unknown TOTP algorithm {other:?} (SHA1, SHA256 or SHA512)")),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Algorithm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// How a token's codes are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpParams {
    pub algorithm: Algorithm,
    pub digits: u32,
    /// Seconds per time step.
    pub period: u64,
}

impl Default for TotpParams {
    /// What Microsoft Authenticator and Google Authenticator use.
    fn default() -> Self {
        Self { algorithm: Algorithm::Sha1, digits: 6, period: 30 }
    }
}

impl TotpParams {
    /// What is wrong with these parameters, if anything, as (parameter, problem): digits and
    /// period the authenticator apps and RFC 6238 make sense of.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        if !(6..=8).contains(&self.digits) {
            return Some(("digits", "must be 6, 7 or 8"));
        }
        if self.period == 0 || self.period > 300 {
            return Some(("period", "must be 1..=300 seconds"));
        }
        None
    }

    fn totp(&self, secret: &[u8], issuer: Option<String>, account: String) -> totp_rs::TOTP {
        totp_rs::TOTP::new_unchecked(
            self.algorithm.to_totp_rs(),
            self.digits as usize,
            0,
            self.period.max(1),
            secret.to_vec(),
            issuer,
            account,
        )
    }

    /// The time step a Unix time falls in.
    pub fn step_at(&self, unix_time: u64) -> u64 {
        unix_time / self.period.max(1)
    }

    /// The code for a time step.
    pub fn code_at_step(&self, secret: &[u8], step: u64) -> Secret<String> {
        Secret::new(self.totp(secret, None, String::new()).generate(step.saturating_mul(self.period.max(1))))
    }

    /// The otpauth:// URI an authenticator app scans.
    pub fn otpauth_uri(&self, secret: &[u8], issuer: &str, account: &str) -> Secret<String> {
        let issuer = (!issuer.is_empty()).then(|| issuer.to_owned());
        Secret::new(self.totp(secret, issuer, account.to_owned()).get_url())
    }

    /// The time step of `window` steps either side of `now` whose code is `code`, if any. Every
    /// candidate is compared in constant time; a later step wins if two match.
    pub fn matching_step(&self, secret: &[u8], code: &str, unix_now: u64, window: u64) -> Option<u64> {
        if code.len() != self.digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let now = self.step_at(unix_now);
        let mut found = None;
        for step in now.saturating_sub(window)..=now.saturating_add(window) {
            let candidate = self.code_at_step(secret, step);
            if bool::from(candidate.expose().as_bytes().ct_eq(code.as_bytes())) {
                found = Some(step);
            }
        }
        found
    }
}

/// The seed as HMAC uses it: a key shorter than the hash's block is padded with zero bytes,
/// so a seed and the same seed with zero bytes appended give the same codes. Two seeds are
/// one token's when these forms are equal.
pub fn effective_seed(seed: &[u8]) -> &[u8] {
    let end = seed.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &seed[..end]
}

/// A fresh random secret for a new token.
pub fn new_secret() -> Secret<Vec<u8>> {
    let mut secret = vec![0u8; SECRET_LEN];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    Secret::new(secret)
}

/// Base32 (RFC 4648, no padding), the form apps and `oathtool --base32` take.
pub fn base32(secret: &[u8]) -> Secret<String> {
    Secret::new(totp_rs::Secret::Raw(secret.to_vec()).to_encoded().to_string())
}

/// Base32 as people and exports write it: either case, spaces, hyphens and `=` padding
/// anywhere, trailing bits not checked (as the apps take it). The error names no part of it.
pub fn from_base32(text: &str) -> Result<Secret<Vec<u8>>, &'static str> {
    static LENIENT: std::sync::LazyLock<Option<data_encoding::Encoding>> = std::sync::LazyLock::new(|| {
        let mut spec = data_encoding::Specification::new();
        spec.symbols.push_str("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567");
        spec.translate.from.push_str("abcdefghijklmnopqrstuvwxyz");
        spec.translate.to.push_str("ABCDEFGHIJKLMNOPQRSTUVWXYZ");
        spec.ignore.push_str(" \t-=");
        spec.check_trailing_bits = false;
        spec.encoding().ok()
    });
    let encoding = LENIENT.as_ref().ok_or("base32 decoder")?;
    let bytes = text.as_bytes();
    // The symbols first: a wrong one says more than the length it leaves.
    if !bytes.iter().all(|b| b.is_ascii_alphabetic() || (b'2'..=b'7').contains(b) || b" \t-=".contains(b)) {
        return Err("not base32 (a character other than A-Z and 2-7)");
    }
    let mut out = vec![0u8; encoding.decode_len(bytes.len()).map_err(|_| "not base32 (its length)")?];
    match encoding.decode_mut(bytes, &mut out) {
        Ok(len) => {
            out.truncate(len);
            Ok(Secret::new(out))
        }
        Err(partial) => {
            zeroize::Zeroize::zeroize(&mut out);
            Err(match partial.error.kind {
                data_encoding::DecodeKind::Length => "not base32 (its length)",
                _ => "not base32 (a character other than A-Z and 2-7)",
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238 Appendix B: the SHA1 secret "12345678901234567890", 8 digits.
    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc6238_test_vectors() {
        let p = TotpParams { digits: 8, ..TotpParams::default() };
        for (time, code) in
            [(59u64, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"), (1234567890, "89005924"), (2000000000, "69279037")]
        {
            assert_eq!(p.code_at_step(RFC_SECRET, p.step_at(time)).expose(), code, "t={time}");
        }
    }

    #[test]
    fn a_code_matches_within_the_window_and_reports_its_step() {
        let p = TotpParams::default();
        let now = 1_700_000_000;
        let step = p.step_at(now);
        let previous = p.code_at_step(RFC_SECRET, step - 1);
        assert_eq!(p.matching_step(RFC_SECRET, previous.expose(), now, 1), Some(step - 1));
        assert_eq!(p.matching_step(RFC_SECRET, previous.expose(), now, 0), None);
        let far = p.code_at_step(RFC_SECRET, step - 2);
        assert_eq!(p.matching_step(RFC_SECRET, far.expose(), now, 1), None);
        for bad in ["", "12345", "1234567", "12a456", " 123456"] {
            assert_eq!(p.matching_step(RFC_SECRET, bad, now, 1), None, "{bad:?}");
        }
    }

    #[test]
    fn otpauth_uri_carries_issuer_account_and_secret() {
        let uri = TotpParams::default().otpauth_uri(RFC_SECRET, "Example Region", "alice");
        assert_eq!(
            uri.expose(),
            &format!("otpauth://totp/Example%20Region:alice?secret={}&issuer=Example%20Region", base32(RFC_SECRET).expose())
        );
        let parsed = totp_rs::TOTP::from_url_unchecked(uri.expose()).unwrap();
        assert_eq!(parsed.secret, RFC_SECRET);
        assert_eq!(new_secret().expose().len(), 20);
    }

    #[test]
    fn base32_is_read_as_people_write_it() {
        let written = base32(RFC_SECRET);
        assert_eq!(from_base32(written.expose()).unwrap().expose(), RFC_SECRET);
        let grouped = "gezd gnbv gy3t qojq GEZD-GNBV GY3T QOJQ====";
        assert_eq!(from_base32(grouped).unwrap().expose(), RFC_SECRET);
        // 26 symbols (what some generators give for 16 bytes), trailing bits not zero.
        assert_eq!(from_base32("JBSWY3DPEHPK3PXPJBSWY3DPEI").unwrap().expose().len(), 16);
        assert_eq!(from_base32("GEZDGNBVGY3TQOJ1"), Err("not base32 (a character other than A-Z and 2-7)"));
        assert_eq!(from_base32("GEZDGNBVG"), Err("not base32 (its length)"));
        assert_eq!(from_base32("NOTBASE32!!"), Err("not base32 (a character other than A-Z and 2-7)"));
        assert_eq!(from_base32("").unwrap().expose().len(), 0);
    }

    #[test]
    fn parameters_apps_cannot_use_are_named() {
        assert_eq!(TotpParams::default().problem(), None);
        assert_eq!(TotpParams { digits: 10, ..TotpParams::default() }.problem(), Some(("digits", "must be 6, 7 or 8")));
        assert_eq!(TotpParams { period: 0, ..TotpParams::default() }.problem().map(|p| p.0), Some("period"));
        assert_eq!(TotpParams { period: 301, ..TotpParams::default() }.problem().map(|p| p.0), Some("period"));
    }
}
