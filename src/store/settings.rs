//! `[store]`: where tokens, counters and used States are kept, and the key file that seals the
//! seeds.

use std::path::PathBuf;

use serde::Deserialize;

use crate::settings::Sources;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    kind: StoreKind,
    path: PathBuf,
    key_file: PathBuf,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self { kind: StoreKind::Sqlite, path: "radmfa.db".into(), key_file: "master.key".into() }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum StoreKind {
    Sqlite,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    pub path: PathBuf,
    pub key_file: PathBuf,
}

impl StoreSection {
    pub fn build(self, sources: &Sources<'_>) -> StoreSettings {
        let Self { kind: StoreKind::Sqlite, path, key_file } = self;
        StoreSettings { path: sources.path(path), key_file: sources.path(key_file) }
    }
}
