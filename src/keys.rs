//! The key ring: AES-256-GCM keys from the key file, for TOTP seeds at rest and challenge States.
//!
//! The key file holds one key per line, `<id> <base64 of 32 bytes>`, newest first; the first key
//! seals, every key opens (so `radmfa keys rotate` can reseal old rows). A sealed value records
//! its key id. Associated data binds a sealed value to its place (a token row, a State), so a
//! blob moved elsewhere does not open. Without the key file, the database yields no seeds.
//!
//! A running server holds [`Keys`]: the ring, read again whenever the key file changes, so
//! `radmfa keys rotate` takes effect on live servers — new seeds are sealed with the new key and
//! resealed ones open — without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use zeroize::Zeroizing;

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("{path}: {message}")]
    File { path: String, message: String },
    /// The key file is readable by group or others.
    #[error("{path}: mode {mode:o} lets others read the key; run: chmod 600 {path}")]
    Permissions { path: String, mode: u32 },
    /// A line of the key file is malformed.
    #[error("{path}:{line}: {message}")]
    Format { path: String, line: usize, message: String },
}

/// A value that did not open: wrong key, tampered, or moved from its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sealed value does not open with the keys in the key file")]
pub struct OpenError;

pub struct KeyRing {
    current: String,
    keys: HashMap<String, Aes256Gcm>,
    /// Key ids, newest first, with the raw keys for rewriting the file.
    raw: Vec<(String, Zeroizing<[u8; 32]>)>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").field("current", &self.current).field("keys", &self.raw.len()).finish()
    }
}

impl KeyRing {
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let file_err = |message: String| KeyError::File { path: shown.clone(), message };
        let metadata = std::fs::metadata(path).map_err(|e| file_err(format!("cannot read: {e} (create one with `radmfa keygen`)")))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions { path: shown, mode });
            }
        }
        let text = Zeroizing::new(crate::settings::read_text_file(path, 1024 * 1024).map_err(|e| file_err(format!("cannot read: {e}")))?);
        let mut raw = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let format_err = |message: &str| KeyError::Format { path: shown.clone(), line: i + 1, message: message.to_owned() };
            let (id, encoded) = line.split_once(char::is_whitespace).ok_or_else(|| format_err("expected `<id> <base64 key>`"))?;
            let bytes = Zeroizing::new(B64.decode(encoded.trim()).map_err(|_| format_err("the key is not base64"))?);
            let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| format_err("the key must be 32 bytes"))?;
            if raw.iter().any(|(existing, _): &(String, _)| existing == id) {
                return Err(format_err("key id used twice"));
            }
            raw.push((id.to_owned(), Zeroizing::new(key)));
        }
        Self::from_keys(raw).ok_or_else(|| file_err("holds no key".into()))
    }

    fn from_keys(raw: Vec<(String, Zeroizing<[u8; 32]>)>) -> Option<Self> {
        let current = raw.first()?.0.clone();
        let keys = raw.iter().map(|(id, key)| (id.clone(), Aes256Gcm::new(key.as_ref().into()))).collect();
        Some(Self { current, keys, raw })
    }

    /// A ring with one fresh random key (tests, and `keygen`).
    pub fn generate(id: &str) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        Self::from_keys(vec![(id.to_owned(), key)]).unwrap_or_else(unreachable_ring)
    }

    /// This ring with a fresh key in front (the new sealing key); old keys still open. Its id is
    /// one past the highest `k<n>`, so an id is never used for a second key.
    pub fn with_new_key(&self) -> Self {
        let highest = self.raw.iter().filter_map(|(id, _)| id.strip_prefix('k')?.parse::<u64>().ok()).max().unwrap_or(0);
        let next = (highest + 1..).map(|n| format!("k{n}")).find(|id| !self.keys.contains_key(id)).unwrap_or_else(|| "k".into());
        let fresh = Self::generate(&next);
        let mut raw = fresh.raw;
        raw.extend(self.raw.iter().map(|(id, key)| (id.clone(), key.clone())));
        Self::from_keys(raw).unwrap_or_else(unreachable_ring)
    }

    /// Whether a key of this id is in the ring.
    pub fn has_key(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    /// Only the current key (after every sealed value was resealed with it).
    pub fn current_only(&self) -> Self {
        Self::from_keys(self.raw.iter().take(1).cloned().collect()).unwrap_or_else(unreachable_ring)
    }

    pub fn current_id(&self) -> &str {
        &self.current
    }

    /// Writes the key file with mode 0600, atomically (write beside, then rename).
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let shown = path.display().to_string();
        let err = |e: std::io::Error| KeyError::File { path: shown.clone(), message: e.to_string() };
        let mut text = Zeroizing::new(String::from(
            "# radmfa key file: AES-256-GCM keys for TOTP seeds and challenge states, newest first.\n\
             # Keep it secret (mode 0600) and back it up apart from the database: without it the seeds are lost.\n",
        ));
        for (id, key) in &self.raw {
            text.push_str(&format!("{id} {}\n", B64.encode(key.as_ref())));
        }
        // A fresh name, created new: the folder may be the service user's, and a name made
        // there beforehand (a link to /etc/passwd, say) must not be written or chowned by root.
        let temporary = path.with_extension(format!("tmp-{:016x}", rand::random::<u64>()));
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary).map_err(err)?;
        file.write_all(text.as_bytes()).map_err(err)?;
        file.sync_all().map_err(err)?;
        // The server reads this file as its own user (radmfa): a key written by root for it
        // must stay that user's, or the server stops opening seeds.
        if let Some(owner) = owner_for(path)
            && let Err(e) = give(&file, owner)
        {
            let _ = std::fs::remove_file(&temporary);
            return Err(KeyError::File {
                path: shown.clone(),
                message: format!(
                    "the new key file cannot be given the owner the server reads it as (uid {}, gid {}): {e}; run this as root or as that user",
                    owner.0, owner.1
                ),
            });
        }
        std::fs::rename(&temporary, path).map_err(err)
    }

    /// Seals `plain` for the place `aad` names: `<key id>:<base64 of nonce + ciphertext>`.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> String {
        let (id, bytes) = self.seal_bytes(plain, aad);
        format!("{id}:{}", B64.encode(bytes))
    }

    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let (id, encoded) = sealed.split_once(':').ok_or(OpenError)?;
        let bytes = B64.decode(encoded).map_err(|_| OpenError)?;
        self.open_with(id, &bytes, aad)
    }

    /// Sealed bytes with the current key: nonce followed by ciphertext and tag.
    pub fn seal_bytes(&self, plain: &[u8], aad: &[u8]) -> (&str, Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let cipher = &self.keys[&self.current];
        // Encryption with a valid key and nonce length fails only on absurd lengths (> 64 GiB).
        let sealed = cipher.encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad }).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        (&self.current, out)
    }

    /// Opens bytes sealed under the key `id`.
    pub fn open_with(&self, id: &str, bytes: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let cipher = self.keys.get(id).ok_or(OpenError)?;
        let nonce = bytes.get(..NONCE_LEN).ok_or(OpenError)?;
        let body = bytes.get(NONCE_LEN..).ok_or(OpenError)?;
        cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad }).map(Zeroizing::new).map_err(|_| OpenError)
    }

    /// Opens with whichever key works (States carry no key id, to stay small).
    pub fn open_any(&self, bytes: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        self.raw.iter().find_map(|(id, _)| self.open_with(id, bytes, aad).ok()).ok_or(OpenError)
    }

    /// A 32-byte key derived for one purpose, so States and seeds never share a key directly.
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        use hmac::{Hmac, Mac};
        let key: &[u8] = self.raw.first().map(|(_, k)| &k[..]).unwrap_or_default();
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable_hmac());
        mac.update(purpose.as_bytes());
        Zeroizing::new(mac.finalize().into_bytes().into())
    }
}

/// How often a running server looks at the key file for a change. `keys rotate` waits longer
/// than two of these before it removes the old key.
pub const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Who a file written at `path` should belong to: the file's owner if it exists, else its
/// folder's (`/var/lib/radmfa` is the service user's) — `None` if neither can be read.
pub(crate) fn owner_for(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let meta = std::fs::metadata(path).or_else(|_| std::fs::metadata(folder)).ok()?;
    Some((meta.uid(), meta.gid()))
}

/// Gives `file`, opened at `path`, to `owner` — only if `path` is that very file and not a
/// symbolic link (one planted in the service user's folder must not hand root's files over).
pub(crate) fn give_opened(file: &std::fs::File, path: &Path, owner: (u32, u32)) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (opened, named) = (file.metadata()?, std::fs::symlink_metadata(path)?);
    if named.file_type().is_symlink() || (opened.dev(), opened.ino()) != (named.dev(), named.ino()) {
        return Err(std::io::Error::other("not given away: the name is a link, or changed under us"));
    }
    give(file, owner)
}

/// Gives `file` to `owner` unless it is theirs already (changing it needs root).
pub(crate) fn give(file: &std::fs::File, owner: (u32, u32)) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata()?;
    if (meta.uid(), meta.gid()) == owner {
        return Ok(());
    }
    std::os::unix::fs::fchown(file, Some(owner.0), Some(owner.1))
}

/// What identifies one version of the key file: a rewrite (write beside, rename) changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp { inode: m.ino(), len: m.len(), modified: m.modified().ok() })
}

/// The key ring in use, and where it came from.
pub struct Keys {
    path: Option<PathBuf>,
    ring: RwLock<Arc<KeyRing>>,
    seen: Mutex<Option<Stamp>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("path", &self.path).field("ring", &*self.current()).finish()
    }
}

impl Keys {
    /// Keys that never change (tests, in-memory stores).
    pub fn fixed(ring: KeyRing) -> Self {
        Self { path: None, ring: RwLock::new(Arc::new(ring)), seen: Mutex::new(None) }
    }

    /// The key file, read now and again when it changes.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let seen = stamp(path);
        let ring = KeyRing::load(path)?;
        Ok(Self { path: Some(path.to_path_buf()), ring: RwLock::new(Arc::new(ring)), seen: Mutex::new(seen) })
    }

    /// The ring to seal and open with now.
    pub fn current(&self) -> Arc<KeyRing> {
        Arc::clone(&self.ring.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reads the key file again if it changed since it was last read. `Ok(true)` when a new
    /// ring is in use. A file that does not load (mid-edit, wrong mode) leaves the ring in use
    /// as it was, and is reported once per change.
    pub fn reload_if_changed(&self) -> Result<bool, KeyError> {
        let Some(path) = &self.path else { return Ok(false) };
        let now = stamp(path);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        let ring = KeyRing::load(path)?;
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
        Ok(true)
    }

    /// Opens a sealed seed. One sealed with a key this ring does not hold yet (just rotated in
    /// by another process) makes it look at the key file first.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let ring = self.current();
        let id = sealed.split_once(':').map(|(id, _)| id).unwrap_or_default();
        if !ring.keys.contains_key(id) && matches!(self.reload_if_changed(), Ok(true)) {
            return self.current().open(sealed, aad);
        }
        ring.open(sealed, aad)
    }
}

#[cold]
fn unreachable_ring() -> KeyRing {
    // from_keys fails only for an empty list, and every caller passes at least one key.
    KeyRing { current: String::new(), keys: HashMap::new(), raw: Vec::new() }
}

#[cold]
fn unreachable_hmac() -> Hmac256 {
    <Hmac256 as hmac::Mac>::new(&Default::default())
}

type Hmac256 = hmac::Hmac<sha2::Sha256>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_place_and_with_the_key() {
        let ring = KeyRing::generate("k1");
        let sealed = ring.seal(b"JBSWY3DPEHPK3PXP", b"token:1:alice");
        assert!(sealed.starts_with("k1:"));
        assert_eq!(ring.open(&sealed, b"token:1:alice").unwrap().as_slice(), b"JBSWY3DPEHPK3PXP");
        assert_eq!(ring.open(&sealed, b"token:2:alice"), Err(OpenError), "moved to another row");
        assert_eq!(KeyRing::generate("k1").open(&sealed, b"token:1:alice"), Err(OpenError), "another key");
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push('A');
        assert!(ring.open(&tampered, b"token:1:alice").is_err());
    }

    #[test]
    fn rotation_keeps_old_values_openable_and_seals_with_the_new_key() {
        let old = KeyRing::generate("k1");
        let sealed = old.seal(b"seed", b"aad");
        let rotated = old.with_new_key();
        assert_eq!(rotated.current_id(), "k2");
        assert_eq!(rotated.open(&sealed, b"aad").unwrap().as_slice(), b"seed");
        let resealed = rotated.seal(b"seed", b"aad");
        assert!(resealed.starts_with("k2:"));
        assert!(rotated.current_only().open(&sealed, b"aad").is_err(), "the old key is gone after rotation");
        assert_eq!(rotated.current_only().with_new_key().current_id(), "k3", "k1 is never used again");
    }

    #[test]
    fn a_running_server_picks_up_a_rotated_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let first = KeyRing::generate("k1");
        first.save(&path).unwrap();
        let keys = Keys::load(&path).unwrap();
        let old_seal = keys.current().seal(b"seed", b"aad");
        assert!(!keys.reload_if_changed().unwrap(), "nothing changed");
        let rotated = first.with_new_key();
        rotated.save(&path).unwrap();
        let new_seal = rotated.seal(b"seed", b"aad");
        // A seed sealed with the new key opens at once: the unknown key id triggers a look.
        assert_eq!(keys.open(&new_seal, b"aad").unwrap().as_slice(), b"seed");
        assert_eq!(keys.current().current_id(), "k2", "new seeds are sealed with the new key");
        assert_eq!(keys.open(&old_seal, b"aad").unwrap().as_slice(), b"seed");
        // A broken file keeps the ring in use.
        std::fs::write(&path, "k3 not-base64!\n").unwrap();
        assert!(keys.reload_if_changed().is_err());
        assert_eq!(keys.current().current_id(), "k2");
        rotated.current_only().save(&path).unwrap();
        assert!(keys.reload_if_changed().unwrap());
        assert!(keys.open(&old_seal, b"aad").is_err(), "the old key is gone once the file drops it");
    }

    #[test]
    fn key_file_round_trips_and_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let ring = KeyRing::generate("k1").with_new_key();
        ring.save(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let loaded = KeyRing::load(&path).unwrap();
        assert_eq!(loaded.current_id(), "k2");
        assert_eq!(loaded.open(&ring.seal(b"x", b"a"), b"a").unwrap().as_slice(), b"x");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(KeyRing::load(&path), Err(KeyError::Permissions { mode: 0o640, .. })));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "k1 not-base64!\n").unwrap();
        assert!(KeyRing::load(&path).unwrap_err().to_string().contains(":1: the key is not base64"));
        let shown = format!("{loaded:?}");
        for (_, key) in &loaded.raw {
            assert!(!shown.contains(&B64.encode(key.as_ref())), "Debug must not show key material: {shown}");
        }
    }
}
