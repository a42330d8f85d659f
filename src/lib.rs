//! radmfa: a RADIUS server for two-factor authentication — the directory password plus a
//! code from an authenticator app or SMS — in front of VPN and Citrix gateways.
//!
//! The protocol edge (`server`) is thin; `auth` decides, knowing nothing of UDP.

pub mod radius;
