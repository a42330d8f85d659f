//! One-time codes: TOTP (RFC 6238) from an authenticator app, and codes sent by SMS.
//!
//! Pure functions of secret, time and input; the replay and lockout bookkeeping that needs
//! shared state lives in `store`, and the decisions in `auth`.

pub mod phone;
pub mod settings;
pub mod sms_code;
pub mod temporary;
pub mod totp;

pub use totp::{Algorithm, TotpParams};
