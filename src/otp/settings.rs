//! `[totp]`: how tokens' codes are made (algorithm, digits, period — one source for every
//! token, enrolled by the portal or the CLI), how far either side of now a code is accepted,
//! and how long a challenge waits for its code.

use std::time::Duration;

use serde::Deserialize;

use super::{Algorithm, TotpParams};
use crate::settings::Invalid;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TotpSection {
    issuer: String,
    digits: u32,
    period: u64,
    window: u64,
    algorithm: Algorithm,
    #[serde(with = "humantime_serde")]
    challenge_timeout: Duration,
}

// Sections with `#[serde(default)]` take every missing key from their `Default` impl, so each
// default value is written once, there.
impl Default for TotpSection {
    fn default() -> Self {
        let app = TotpParams::default();
        Self {
            issuer: "radmfa".into(),
            digits: app.digits,
            period: app.period,
            window: 1,
            algorithm: app.algorithm,
            challenge_timeout: Duration::from_secs(120),
        }
    }
}

/// How new tokens are made and shown, and how codes are accepted.
#[derive(Debug, Clone)]
pub struct TotpSettings {
    /// The name authenticator apps show above the code.
    pub issuer: String,
    pub params: TotpParams,
    /// Time steps accepted either side of now.
    pub window: u64,
    /// How long a TOTP challenge waits for its answer.
    pub challenge_timeout: Duration,
}

impl TotpSection {
    /// Checked; errors name the key within the section.
    pub fn build(self) -> Result<TotpSettings, Invalid> {
        let params = TotpParams { algorithm: self.algorithm, digits: self.digits, period: self.period };
        if let Some((key, problem)) = params.problem() {
            return Err(Invalid::new(key, problem));
        }
        if self.window > 10 {
            return Err(Invalid::new("window", "more than 10 steps either side accepts too many codes"));
        }
        Ok(TotpSettings { issuer: self.issuer, params, window: self.window, challenge_timeout: self.challenge_timeout })
    }
}
