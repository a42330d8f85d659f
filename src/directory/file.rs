//! The local users file: a TOML list of users with argon2id password hashes.
//!
//! The embedded default directory, for trying radmfa and for small sites without AD. Names
//! match case-insensitively, as in Active Directory; the account id is the lower-cased
//! `username`. Hashes come from `radmfa user hash`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use async_trait::async_trait;
use serde::Deserialize;

use super::hashing::HashingPool;
use super::{Account, AccountStatus, Denial, Directory, DirectoryError, LoginName, MAX_ACCOUNT_ID, PasswordCheck, UserProfile};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFileFormat {
    #[serde(default)]
    user: Vec<UserEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    username: String,
    password_hash: String,
    given_name: Option<String>,
    surname: Option<String>,
    email: Option<String>,
    mobile: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    disabled: bool,
}

struct StoredUser {
    profile: UserProfile,
    password_hash: String,
    disabled: bool,
}

/// A problem in the users file, naming the file and the user or line.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct UsersFileError {
    pub path: String,
    pub message: String,
}

pub struct UsersFile {
    users: Arc<HashMap<String, StoredUser>>,
    /// argon2 runs here, one verification per core at a time (see `hashing`). An unknown name
    /// costs a verification only while checks are queued (`spend_like_a_check`): idle, every
    /// Reject leaves at the same time after arrival anyway.
    hashing: HashingPool,
}

impl UsersFile {
    pub fn load(path: &Path) -> Result<Self, UsersFileError> {
        let err = |message: String| UsersFileError { path: path.display().to_string(), message };
        let text = crate::settings::read_text_file(path, crate::settings::MAX_FILE_BYTES).map_err(|e| err(format!("cannot read: {e}")))?;
        Self::parse(&text).map_err(err)
    }

    fn parse(text: &str) -> Result<Self, String> {
        let file: UsersFileFormat = crate::toml_error::parse(text)?;
        let mut users = HashMap::new();
        for entry in file.user {
            if entry.username.trim().is_empty() {
                return Err("a user has an empty username".into());
            }
            if fold(&entry.username).len() > MAX_ACCOUNT_ID || entry.username.chars().any(char::is_control) {
                return Err(format!("user {:?}: a username has at most {MAX_ACCOUNT_ID} bytes and no control characters", entry.username));
            }
            let hash = PasswordHash::new(&entry.password_hash).map_err(|e| {
                format!("user {:?}: password_hash is not a PHC hash string ({e}); make one with `radmfa user hash`", entry.username)
            })?;
            if hash.algorithm.as_str() != "argon2id" {
                return Err(format!("user {:?}: password_hash uses {}, expected argon2id", entry.username, hash.algorithm));
            }
            let key = fold(&entry.username);
            let stored = StoredUser {
                password_hash: entry.password_hash.clone(),
                disabled: entry.disabled,
                profile: UserProfile {
                    username: entry.username.clone(),
                    given_name: entry.given_name,
                    surname: entry.surname,
                    email: entry.email,
                    mobile: entry.mobile,
                    groups: entry.groups,
                },
            };
            if users.insert(key, stored).is_some() {
                return Err(format!("user {:?} is listed twice", entry.username));
            }
        }
        let hashing = HashingPool::per_core().map_err(|e| format!("cannot start hashing threads: {e}"))?;
        Ok(Self { users: Arc::new(users), hashing })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// An argon2id PHC string for a password, with the library's recommended parameters.
pub fn hash_password(password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    hash_with(argon2::Params::default(), password)
}

fn hash_with(params: argon2::Params, password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let hasher = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    Ok(hasher.hash_password(password, &salt)?.to_string())
}

/// Names match case-insensitively; the file refuses two users whose names fold alike.
fn fold(username: &str) -> String {
    username.trim().to_lowercase()
}

fn verify(hash: &str, password: &[u8]) -> bool {
    verify_reusing_memory(hash, password).unwrap_or(false)
}

thread_local! {
    /// argon2's working memory (19 MiB at the default cost), kept per hashing thread so a login
    /// costs no allocation: allocating it anew each time left ~17 MB per login in the allocator.
    static ARGON2_MEMORY: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Recomputes an argon2 PHC hash with the stored parameters and salt, compares in constant time.
fn verify_reusing_memory(hash: &str, password: &[u8]) -> Option<bool> {
    use subtle::ConstantTimeEq;
    let parsed = PasswordHash::new(hash).ok()?;
    let algorithm = argon2::Algorithm::try_from(parsed.algorithm).ok()?;
    let version = parsed.version.map_or(Some(argon2::Version::V0x13), |v| argon2::Version::try_from(v).ok())?;
    let params = argon2::Params::try_from(&parsed).ok()?;
    let expected = parsed.hash?;
    let mut salt = [0u8; 64];
    let salt = parsed.salt?.decode_b64(&mut salt).ok()?;
    let mut computed = zeroize::Zeroizing::new(vec![0u8; expected.len()]);
    let blocks = params.block_count();
    let hasher = Argon2::new(algorithm, version, params);
    ARGON2_MEMORY.with(|memory| {
        let mut memory = memory.try_borrow_mut().ok()?;
        if memory.len() < blocks {
            memory.resize(blocks, argon2::Block::default());
        }
        let memory = memory.get_mut(..blocks)?;
        hasher.hash_password_into_with_memory(password, salt, &mut computed, memory).ok()
    })?;
    Some(bool::from(computed.as_slice().ct_eq(expected.as_bytes())))
}

#[async_trait]
impl Directory for UsersFile {
    async fn find(&self, login: &LoginName) -> Result<Option<Account>, DirectoryError> {
        // The name as typed first (a user may be listed under a UPN), then without our realm.
        let keys = std::iter::once(&login.name).chain(&login.local_part).map(|name| fold(name));
        Ok(keys.into_iter().find_map(|key| {
            let user = self.users.get(&key)?;
            Some(Account { id: key.clone(), locator: key, profile: user.profile.clone(), primary_group: None })
        }))
    }

    async fn check_password(&self, account: &Account, password: &[u8], _with_groups: bool) -> Result<PasswordCheck, DirectoryError> {
        if password.is_empty() {
            return Ok(PasswordCheck::Denied(Denial::WrongPassword));
        }
        let users = Arc::clone(&self.users);
        let key = account.locator.clone();
        let password = zeroize::Zeroizing::new(password.to_vec());
        self.hashing
            .run(move || check(&users, &key, &password))
            .await
            .map_err(|e| DirectoryError::Unavailable(format!("password check failed: {e}")))
    }

    async fn groups(&self, account: &Account) -> Result<Vec<String>, DirectoryError> {
        Ok(self.users.get(&account.locator).map(|u| u.profile.groups.clone()).unwrap_or_default())
    }

    async fn search(&self, text: &str, limit: usize) -> Result<Vec<Account>, DirectoryError> {
        let wanted = text.trim().to_lowercase();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let contains = |value: Option<&str>| value.is_some_and(|v| v.to_lowercase().contains(&wanted));
        let mut found: Vec<Account> = self
            .users
            .iter()
            .filter(|(key, user)| {
                let p = &user.profile;
                let full = format!("{} {}", p.given_name.as_deref().unwrap_or_default(), p.surname.as_deref().unwrap_or_default());
                key.contains(&wanted) || contains(Some(&full)) || contains(p.email.as_deref())
            })
            .map(|(key, user)| Account { id: key.clone(), locator: key.clone(), profile: user.profile.clone(), primary_group: None })
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found.truncate(limit.min(super::MAX_SEARCH_RESULTS));
        Ok(found)
    }

    async fn member_of(&self, account: &Account, groups: &[String]) -> Result<Vec<String>, DirectoryError> {
        // The file lists each user's groups by name (no nesting); names compare as AD's do.
        let held = self.users.get(&account.locator).map(|u| u.profile.groups.as_slice()).unwrap_or_default();
        Ok(groups.iter().filter(|g| held.iter().any(|h| h.to_lowercase() == g.to_lowercase())).cloned().collect())
    }

    async fn account_status(&self, account: &Account) -> Result<AccountStatus, DirectoryError> {
        let disabled = self.users.get(&account.locator).is_none_or(|u| u.disabled);
        Ok(AccountStatus { disabled, ..AccountStatus::default() })
    }

    async fn spend_like_a_check(&self, password: &[u8]) {
        if password.is_empty() || !self.hashing.busy() {
            return;
        }
        // Any listed user's hash: the cost parameters real checks pay. The result is not used.
        let Some(hash) = self.users.values().next().map(|u| u.password_hash.clone()) else { return };
        let password = zeroize::Zeroizing::new(password.to_vec());
        let _ = self.hashing.run(move || verify(&hash, &password)).await;
    }
}

fn check(users: &HashMap<String, StoredUser>, key: &str, password: &[u8]) -> PasswordCheck {
    match users.get(key) {
        None => PasswordCheck::Denied(Denial::NoSuchUser),
        Some(user) if !verify(&user.password_hash, password) => PasswordCheck::Denied(Denial::WrongPassword),
        Some(user) if user.disabled => PasswordCheck::Denied(Denial::AccountDisabled),
        Some(user) => PasswordCheck::Valid(user.profile.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap_hash(password: &str) -> String {
        hash_with(argon2::Params::new(1024, 1, 1, None).unwrap(), password.as_bytes()).unwrap()
    }

    fn users_toml() -> String {
        format!(
            r#"
[[user]]
username = "Alice"
password_hash = "{}"
given_name = "Alice"
mobile = "+46701234567"
groups = ["VPN-Users"]

[[user]]
username = "dave"
password_hash = "{}"
disabled = true
"#,
            cheap_hash("correct horse"),
            cheap_hash("pw")
        )
    }

    #[tokio::test]
    async fn every_spelling_finds_one_account_and_checks_its_password() {
        let dir = UsersFile::parse(&users_toml()).unwrap();
        assert_eq!(dir.len(), 2);
        let find = |name: &str| {
            let login = LoginName::normalise(name, &[], &[]);
            let dir = &dir;
            async move { dir.find(&login).await }
        };
        let alice = find(" ALICE ").await.unwrap().unwrap();
        assert_eq!(alice.id, "alice", "the account id is the lower-cased username, whatever the spelling");
        assert_eq!(find("alice").await.unwrap(), Some(alice.clone()));
        let upn = LoginName::normalise("alice@example.test", &[], &["example.test".into()]);
        assert_eq!(dir.find(&upn).await.unwrap(), Some(alice.clone()), "the name before a realm of ours");
        match dir.check_password(&alice, b"correct horse", true).await.unwrap() {
            PasswordCheck::Valid(p) => {
                assert_eq!(p.username, "Alice");
                assert_eq!(p.groups, vec!["VPN-Users"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(dir.check_password(&alice, b"wrong", true).await.unwrap(), PasswordCheck::Denied(Denial::WrongPassword));
        assert_eq!(dir.check_password(&alice, b"", true).await.unwrap(), PasswordCheck::Denied(Denial::WrongPassword));
        assert_eq!(find("mallory").await.unwrap(), None);
        let dave = find("dave").await.unwrap().unwrap();
        assert_eq!(dir.check_password(&dave, b"pw", true).await.unwrap(), PasswordCheck::Denied(Denial::AccountDisabled));
        assert_eq!(dir.check_password(&dave, b"nope", true).await.unwrap(), PasswordCheck::Denied(Denial::WrongPassword));
        assert_eq!(alice.profile.mobile.as_deref(), Some("+46701234567"));
        assert_eq!(dir.groups(&alice).await.unwrap(), vec!["VPN-Users"]);
    }

    #[test]
    fn verification_agrees_with_the_argon2_crate() {
        use argon2::password_hash::PasswordVerifier;
        for hash in [cheap_hash("pw"), hash_password(b"pw").unwrap()] {
            let parsed = PasswordHash::new(&hash).unwrap();
            for candidate in [&b"pw"[..], b"pw ", b"", b"PW"] {
                let reference = Argon2::default().verify_password(candidate, &parsed).is_ok();
                assert_eq!(verify(&hash, candidate), reference, "{candidate:?}");
            }
        }
        assert!(!verify("not a hash", b"pw"));
    }

    #[test]
    fn bad_files_name_the_problem() {
        let err = |t: &str| UsersFile::parse(t).err().unwrap();
        assert!(
            err("[[user]]\nusername = \"a\"\npassword_hash = \"plain\"\n").contains("user \"a\": password_hash is not a PHC hash string")
        );
        assert!(err("[[user]]\nusername = \"a\"\npasword_hash = \"x\"\n").contains("unknown field `pasword_hash`"));
        let twice = format!("{}\n[[user]]\nusername = \"ALICE\"\npassword_hash = \"{}\"\n", users_toml(), cheap_hash("x"));
        assert!(err(&twice).contains("listed twice"));
        let long = format!("[[user]]\nusername = \"{}\"\npassword_hash = \"{}\"\n", "a".repeat(121), cheap_hash("x"));
        assert!(err(&long).contains("at most 120 bytes"));
    }
}
