//! Arbitrary text as the TOML configuration file: `Config::parse` must return a config or an
//! error naming the problem, never panic. The file "lives" in an empty temporary folder and the
//! environment is empty, so relative paths in the input (`secret_file`, `dictionary`, ...)
//! name files that do not exist.
//!
//! `Config::parse` reads files the config names. So that no input makes the fuzzer read from the
//! machine (`/dev/zero` would also never end), inputs holding a string that could leave the
//! empty folder — absolute, or with `..` — are skipped before parsing.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use radmfa::config::Config;

/// `<empty temp dir>/radmfa.toml`; the folder lives as long as the process.
fn config_path() -> Option<&'static PathBuf> {
    static PATH: OnceLock<Option<(tempfile::TempDir, PathBuf)>> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().join("radmfa.toml");
        Some((dir, path))
    })
    .as_ref()
    .map(|(_, path)| path)
}

/// Could this string, used as a path, reach outside the config's empty folder?
fn escapes(text: &str) -> bool {
    text.starts_with('/') || text.contains("..") || text.starts_with('~')
}

fn any_escaping_string(value: &toml::Value) -> bool {
    match value {
        toml::Value::String(s) => escapes(s),
        toml::Value::Array(items) => items.iter().any(any_escaping_string),
        toml::Value::Table(table) => table.values().any(any_escaping_string),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some(path) = config_path() else { return };
    // Text that is not TOML fails in Config::parse before any file is touched.
    if let Ok(document) = text.parse::<toml::Table>() {
        if document.values().any(any_escaping_string) {
            return;
        }
    }
    match Config::parse(path, text, |_| None) {
        Ok(config) => {
            // A config that parses has what the server needs to start.
            assert!(!config.server.listen.is_empty());
            let _ = format!("{config:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
