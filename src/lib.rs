//! radmfa: a RADIUS server for two-factor authentication — the directory password plus a
//! code from an authenticator app or SMS — in front of VPN and Citrix gateways.
//!
//! The protocol edge (`server`) is thin; `auth` decides, knowing nothing of UDP.
//! `radius` is our own codec; each subsystem owns its section of the TOML file (`settings`
//! modules) and `config` assembles them for the command line.

pub mod audit;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod counters;
pub mod directory;
pub mod fairness;
pub mod import;
pub mod keys;
pub mod metrics;
pub mod otp;
pub mod portal;
pub mod radius;
pub mod secret;
pub mod server;
pub mod settings;
pub mod sms;
pub mod store;
pub mod tls;
mod toml_error;
