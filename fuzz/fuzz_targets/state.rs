//! The challenge State as it comes back from a NAS: `ChallengeState::open` on arbitrary bytes,
//! and for states built from the input, `open(seal(x)) == x`, a flipped bit never opens, and the
//! opened state still knows its owner. Only the public `new`/`seal`/`open` API is used, so the
//! target survives changes to the State's inner layout.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use radmfa::auth::state::{ChallengeState, Stage};
use radmfa::keys::KeyRing;

/// A fixed key, so the committed seed States (made by `seed-corpus` with this key) open and the
/// fuzzer starts past the AEAD check. Not a secret: it exists only here.
const FUZZ_KEY_FILE: &str = "fuzz QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=\n";

fn keys() -> &'static KeyRing {
    static KEYS: OnceLock<KeyRing> = OnceLock::new();
    KEYS.get_or_init(|| {
        // KeyRing reads key files only (mode 0600); a fresh random ring would do for finding
        // panics, but then no seed would ever open.
        load_fixed_key().unwrap_or_else(|| KeyRing::generate("fuzz"))
    })
}

fn load_fixed_key() -> Option<KeyRing> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = tempfile::tempdir().ok()?;
    let path = dir.path().join("fuzz.key");
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).ok()?;
    file.write_all(FUZZ_KEY_FILE.as_bytes()).ok()?;
    KeyRing::load(&path).ok()
}

/// Splits off the first `N` bytes, zero-padded when the input is shorter.
fn take<const N: usize>(data: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = N.min(data.len());
    out[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    out
}

fuzz_target!(|data: &[u8]| {
    let keys = keys();

    // The bytes as a State attribute: must open or be refused, and what opens reseals alike.
    if let Some(opened) = ChallengeState::open(data, keys) {
        let resealed = opened.seal(keys).expect("an opened State fits in one again");
        assert_eq!(ChallengeState::open(&resealed, keys).as_ref(), Some(&opened));
    }

    // A State built from the bytes.
    let mut rest = data;
    let [flags, tries_left] = take::<2>(&mut rest);
    let stage = if flags & 1 == 0 { Stage::Totp } else { Stage::Sms };
    let expires_at = i64::from_be_bytes(take::<8>(&mut rest));
    let nonce = take::<16>(&mut rest);
    let code_salt = take::<16>(&mut rest);
    let code_hash = take::<32>(&mut rest);
    let flip = u16::from_be_bytes(take::<2>(&mut rest));
    let names = String::from_utf8_lossy(rest);
    let mut parts = names.splitn(3, '\0');
    let (user, account, client) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));

    let mut state = ChallengeState::new(stage, user, account, client, expires_at, tries_left);
    state.nonce = nonce;
    state.code_salt = code_salt;
    state.code_hash = code_hash;
    let Ok(sealed) = state.seal(keys) else {
        assert!(account.len() > radmfa::directory::MAX_ACCOUNT_ID, "only a too-long account id is refused");
        return;
    };
    let opened = ChallengeState::open(&sealed, keys);
    assert_eq!(opened.as_ref(), Some(&state));
    if let Some(opened) = &opened {
        assert!(opened.belongs_to(user, client));
        assert_eq!(opened.account, account);
        let retry = opened.retry();
        assert_eq!(retry.tries_left, tries_left.saturating_sub(1));
        let resealed = retry.seal(keys).expect("a retry fits as its State did");
        assert_eq!(ChallengeState::open(&resealed, keys).as_ref(), Some(&retry));
    }

    // Any single flipped bit, anywhere in the sealed bytes, makes it unopenable.
    if !sealed.is_empty() {
        let mut tampered = sealed.clone();
        let at = usize::from(flip) % (tampered.len() * 8);
        tampered[at / 8] ^= 1 << (at % 8);
        assert_eq!(ChallengeState::open(&tampered, keys), None);
    }
});
