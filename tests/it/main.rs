//! Integration tests: the real `radmfa` binary on 127.0.0.1 port 0, driven over real UDP by
//! FreeRADIUS's `radclient`, by the `radius` crate, and by raw sockets.
//!
//! One test binary with modules (link time): add a module here rather than a file in tests/.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure should panic

mod active_directory;
mod audit_trail_bench;
mod cli;
mod codec;
mod dictionaries;
mod harness;
mod helpdesk_cli;
mod http;
mod keys_and_database;
mod metrics;
mod nas_guides;
mod one_identity;
mod oracle;
mod package;
mod portal_abuse;
mod portal_e2e;
mod postgres;
mod postgres_store;
mod radius_abuse;
mod radsec;
mod radsec_bench;
mod radsec_interop;
mod reload;
mod samba;
mod second_factor;
mod server;
mod store_contract;
mod store_copy;
mod token_import;
mod two_nodes;
