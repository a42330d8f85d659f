//! Reading tokens made elsewhere from the files an admin moving users over has: otpauth:// URIs
//! ([`otpauth`]), a CSV export ([`table`]), or an RFC 6030 PSKC container as hardware tokens are
//! delivered ([`pskc`]). Each yields one [`Entry`] per line or KeyPackage: a token to file, or
//! why it is refused, placed so the admin finds it — and never with its secret.
//!
//! Only parsing and checking lives here; the command (`radmfa token import`) decides whose
//! token it is and files it through `auth`.

pub mod otpauth;
pub mod pskc;
pub mod table;

use std::collections::HashMap;
use std::fmt;

use crate::otp::TotpParams;
use crate::secret::Secret;

/// The largest file read: 100,000 PSKC KeyPackages with room to spare. Larger ones are split.
pub const MAX_FILE_BYTES: u64 = 128 * 1024 * 1024;

/// Seeds shorter than this are refused: 80 bits, as Google Authenticator's own enrollments made
/// them (RFC 4226 asks for 128; radmfa makes 160). Shorter ones are truncated or not seeds.
pub const MIN_SECRET_LEN: usize = 10;

/// Seeds longer than this are refused: more than an HMAC-SHA512 block is no token's.
pub const MAX_SECRET_LEN: usize = 128;

/// The longest token name kept, as the portal keeps them.
const MAX_NAME_CHARS: usize = 64;

/// Where in the file an entry is, as the report names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Line(u64),
    /// 1-based, in document order.
    KeyPackage {
        index: usize,
        serial: Option<String>,
    },
    /// A token the store holds already, by its id.
    Stored(i64),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Line(n) => write!(f, "line {n}"),
            Self::KeyPackage { index, serial: Some(serial) } => write!(f, "KeyPackage {index} (serial {serial})"),
            Self::KeyPackage { index, serial: None } => write!(f, "KeyPackage {index}"),
            Self::Stored(id) => write!(f, "token {id} in the store"),
        }
    }
}

/// Whether `text`, found where a name should be, could be a seed (16 or more base32
/// characters): a file whose columns are not what its header says puts seeds there, and a
/// refusal must not print them.
pub fn may_be_a_seed(text: &str) -> bool {
    // Base32 (the usual form), hex and base64 alike: 16 or more characters of their alphabets,
    // and none of the `@`, `.` or `\` that names have.
    let letters = text.chars().filter(|c| !matches!(c, ' ' | '-' | '=')).count();
    letters >= 16 && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '=' | '+' | '/' | '_'))
}

/// A token read from a file, its user as the file names them.
#[derive(Debug)]
pub struct Imported {
    pub user: String,
    pub name: String,
    pub params: TotpParams,
    pub secret: Secret<Vec<u8>>,
}

/// Why an entry is not imported, and whose it is when the file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub user: Option<String>,
    pub reason: String,
}

impl Refused {
    pub fn new(user: Option<&str>, reason: impl Into<String>) -> Self {
        Self { user: user.map(str::to_owned), reason: reason.into() }
    }
}

/// One line or KeyPackage of a file.
#[derive(Debug)]
pub struct Entry {
    pub place: Place,
    pub read: Result<Imported, Refused>,
}

/// What the file alone does not say.
#[derive(Debug, Default)]
pub struct Options<'a> {
    /// The name of tokens the file names none for.
    pub default_name: &'a str,
    /// A PSKC container's pre-shared key.
    pub psk: Option<&'a Secret<Vec<u8>>>,
    /// PSKC: the user of each token by its serial number (`--map`).
    pub serials: Option<&'a HashMap<String, String>>,
}

/// The token an entry describes, checked: a user name a login could carry, a name as the portal
/// keeps them (trimmed, no control characters, at most 64 characters; `default_name` when
/// empty), parameters the apps use, and a seed of a plausible length.
pub fn token(user: &str, name: &str, default_name: &str, params: TotpParams, secret: Secret<Vec<u8>>) -> Result<Imported, Refused> {
    let user = user.trim();
    if crate::auth::valid_user_name(user.as_bytes()).is_none() {
        let why = if user.is_empty() { "no user" } else { "the user name is too long or holds control characters" };
        return Err(Refused::new(None, why));
    }
    let refused = |reason: String| Refused::new(Some(user), reason);
    if let Some((parameter, problem)) = params.problem() {
        return Err(refused(format!("{parameter} {problem}")));
    }
    let len = secret.expose().len();
    if len < MIN_SECRET_LEN {
        return Err(refused(format!("the secret is {len} bytes: too short (at least {MIN_SECRET_LEN}; 20 is usual)")));
    }
    if len > MAX_SECRET_LEN {
        return Err(refused(format!("the secret is {len} bytes: too long (at most {MAX_SECRET_LEN})")));
    }
    // A test pattern or a placeholder, not a seed anyone keeps secret.
    if secret.expose().iter().all(|&b| b == secret.expose()[0]) {
        return Err(refused("the secret is one byte repeated: a placeholder, not a seed".into()));
    }
    let clean = |name: &str| name.trim().chars().filter(|c| !c.is_control()).take(MAX_NAME_CHARS).collect::<String>();
    let name = Some(clean(name)).filter(|n| !n.is_empty()).unwrap_or_else(|| clean(default_name));
    Ok(Imported { user: user.to_owned(), name, params, secret })
}

/// A number in a field, or why not.
fn number<T: std::str::FromStr>(field: &str, text: &str) -> Result<T, String> {
    text.trim().parse().map_err(|_| format!("{field}: not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(len: usize) -> Secret<Vec<u8>> {
        Secret::new((0..len).map(|i| i as u8 ^ 0x5a).collect())
    }

    #[test]
    fn an_entry_is_checked_as_a_login_and_the_apps_would_take_it() {
        let ok = token(" alice ", " Phone\u{7}  ", "Authenticator", TotpParams::default(), seed(20)).unwrap();
        assert_eq!((ok.user.as_str(), ok.name.as_str()), ("alice", "Phone"));
        assert_eq!(token("bob", "  ", "Authenticator", TotpParams::default(), seed(20)).unwrap().name, "Authenticator");
        assert_eq!(token("bob", &"x".repeat(100), "", TotpParams::default(), seed(20)).unwrap().name.len(), 64);
        let refused = |user: &str, params, len| token(user, "", "Authenticator", params, seed(len)).unwrap_err();
        assert_eq!(refused("", TotpParams::default(), 20), Refused::new(None, "no user"));
        assert_eq!(refused("a\nb", TotpParams::default(), 20).user, None);
        assert_eq!(refused(&"a".repeat(254), TotpParams::default(), 20).user, None);
        assert_eq!(refused("bob", TotpParams { digits: 9, ..TotpParams::default() }, 20).reason, "digits must be 6, 7 or 8");
        assert_eq!(
            refused("bob", TotpParams::default(), 9),
            Refused::new(Some("bob"), "the secret is 9 bytes: too short (at least 10; 20 is usual)")
        );
        assert_eq!(refused("bob", TotpParams::default(), 129).reason, "the secret is 129 bytes: too long (at most 128)");
        assert_eq!(token("bob", "", "", TotpParams::default(), seed(10)).unwrap().secret.expose().len(), 10);
        let zeros = token("bob", "", "", TotpParams::default(), Secret::new(vec![0; 20])).unwrap_err();
        assert_eq!(zeros.reason, "the secret is one byte repeated: a placeholder, not a seed");
    }

    #[test]
    fn places_read_as_the_admin_looks_for_them() {
        assert_eq!(Place::Line(4).to_string(), "line 4");
        assert_eq!(Place::KeyPackage { index: 2, serial: Some("987654321".into()) }.to_string(), "KeyPackage 2 (serial 987654321)");
        assert_eq!(Place::KeyPackage { index: 3, serial: None }.to_string(), "KeyPackage 3");
    }
}
