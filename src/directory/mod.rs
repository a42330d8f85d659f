//! Where users live: the first factor (password) and the profile (names, mobile, groups).
//!
//! `auth` sees only the [`Directory`] trait. Implementations: [`file::UsersFile`], the local
//! users file that is the embedded default, and [`ldap::LdapDirectory`] for Active Directory
//! (and other LDAP servers).

pub mod dn;
pub mod file;
pub mod hashing;
pub mod ldap;
pub mod settings;

use async_trait::async_trait;

/// What the directory knows of a user that the rest of radmfa uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserProfile {
    /// The account name as the directory spells it.
    pub username: String,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub email: Option<String>,
    pub mobile: Option<String>,
    /// Group names (or DNs, for LDAP) the user belongs to.
    pub groups: Vec<String>,
}

/// The answer to "is this the user's password?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordCheck {
    Valid(UserProfile),
    Denied(Denial),
}

/// Why the directory said no. Goes to the audit log only; the NAS learns nothing from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Denial {
    NoSuchUser,
    WrongPassword,
    AccountDisabled,
    /// AD 701: the account's end date has passed.
    AccountExpired,
    /// AD 532: the password is too old.
    PasswordExpired,
    /// AD 773: the password must be changed before use (pwdLastSet = 0).
    MustChangePassword,
    /// AD 775: AD's own lockout after too many bad passwords.
    AccountLocked,
    /// AD 530: outside the account's logon hours.
    NotPermittedNow,
    /// AD 531: not from this workstation.
    NotPermittedHere,
    /// Not a member (directly or through nesting) of any `required_groups`.
    NotInRequiredGroup,
}

impl Denial {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSuchUser => "no_such_user",
            Self::WrongPassword => "wrong_password",
            Self::AccountDisabled => "account_disabled",
            Self::AccountExpired => "account_expired",
            Self::PasswordExpired => "password_expired",
            Self::MustChangePassword => "must_change_password",
            Self::AccountLocked => "account_locked",
            Self::NotPermittedNow => "not_permitted_now",
            Self::NotPermittedHere => "not_permitted_here",
            Self::NotInRequiredGroup => "not_in_required_group",
        }
    }
}

/// The directory could not answer: not the user's fault. The message is safe to log (no
/// credentials).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// Every server refused (connection refused, TLS or service-account bind failed) or the
    /// backing file failed: nothing will answer soon.
    #[error("directory unavailable: {0}")]
    Unavailable(String),
    /// A server took the work but did not answer in time, or dropped it half-way: busy, not
    /// gone. The request is better left unanswered (the NAS retries, or asks its other RADIUS
    /// server) than rejected as if the user were wrong.
    #[error("directory busy: {0}")]
    Busy(String),
}

/// The account a login name resolved to, before any password is checked.
///
/// Every spelling the directory accepts for one account (`alice`, `ALICE`, her UPN, ...)
/// resolves to the same `id`, and everything radmfa remembers — tokens, lockouts, SMS limits,
/// challenge States, audit lines, portal sessions — is filed under that `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The directory's own name for the account: AD's `sAMAccountName` (the configured
    /// `username_attribute`) exactly as AD returns it, whatever case the user typed; the users
    /// file's `username`, lower-cased (the file refuses two names that fold alike).
    pub id: String,
    /// Where the directory finds the account again (for LDAP, the entry's DN).
    pub locator: String,
    /// Names, mail and mobile from the directory. `groups` holds what the entry itself lists;
    /// nested membership is resolved by a successful password check or [`Directory::groups`].
    pub profile: UserProfile,
    /// AD: the SID of the account's primary group (Domain Users as a rule), which AD holds in
    /// `primaryGroupID` and never lists among its groups. None elsewhere.
    pub primary_group: Option<Vec<u8>>,
}

/// A name to find an account by, as the user typed it: trimmed, our own `DOMAIN\` dropped, and
/// never case-folded — the directory compares names its own way (folding `K` KELVIN SIGN to `k`
/// would find another AD account). Only [`LoginName::normalise`] makes one, so no front end can
/// hand the directory a spelling that skipped these rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginName {
    /// The name as typed; a UPN keeps its suffix.
    name: String,
    /// For `x@realm` with a realm of ours: `x`, tried as the account name when no account has
    /// the UPN (as AD accepts `sam@domain`).
    local_part: Option<String>,
}

impl LoginName {
    /// The name to look up for `raw`: trimmed, a `DOMAIN\` prefix of one of our `domains`
    /// dropped; for `user@realm` with one of our `realms`, `user` as the fallback. Domains and
    /// realms compare case-insensitively; the name itself keeps its case.
    pub fn normalise(raw: &str, domains: &[String], realms: &[String]) -> Self {
        let name = raw.trim();
        let name = match name.split_once('\\') {
            Some((domain, user)) if domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) => user,
            _ => name,
        };
        let local_part = match name.rsplit_once('@') {
            Some((user, realm)) if !user.is_empty() && realms.iter().any(|r| r.eq_ignore_ascii_case(realm)) => Some(user.to_owned()),
            _ => None,
        };
        Self { name: name.to_owned(), local_part }
    }

    /// The name as typed (trimmed, our domain dropped); a UPN keeps its suffix.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// For `x@realm` with a realm of ours: `x`.
    pub fn local_part(&self) -> Option<&str> {
        self.local_part.as_deref()
    }
}

/// What the help desk sees of an account beyond its profile: whether the directory lets it log
/// in at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountStatus {
    /// False for a disabled account (AD's userAccountControl ACCOUNTDISABLE; the users file's
    /// `disabled`).
    pub disabled: bool,
    /// AD's own lockout after bad passwords (`lockoutTime` set); `None` where the directory has
    /// no such thing.
    pub locked_in_directory: Option<bool>,
    /// When the account expires (AD's `accountExpires`), as Unix time, if it does.
    pub expires_at: Option<i64>,
    /// AD: the password must be changed before the next logon (`pwdLastSet` = 0).
    pub must_change_password: Option<bool>,
}

/// Most accounts a directory search for the help desk returns.
pub const MAX_SEARCH_RESULTS: usize = 50;

/// A directory server's state, as `status` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStatus {
    pub url: String,
    /// `up`, `failing` (but still asked: no other server is), or `skipped` (for its back-off).
    pub state: &'static str,
    /// Connections open to it, idle or in use.
    pub open: usize,
    pub idle_service: usize,
    pub idle_bind: usize,
    /// Operations running on it, and waiting for one of its `max_connections` places.
    pub in_flight: usize,
    pub waiting: usize,
    pub max_connections: usize,
}

/// What a directory with servers reports to the metrics endpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DirectoryStatus {
    pub servers: Vec<ServerStatus>,
    pub searches: u64,
    pub binds: u64,
    pub connects: u64,
    /// Operations that waited for a connection, and how long they waited in all.
    pub waited: u64,
    pub wait_seconds: f64,
    pub timed_out: u64,
}

/// The longest account id radmfa files things under: it travels inside the challenge State
/// (253 octets in all). AD's sAMAccountName is at most 20 characters.
pub const MAX_ACCOUNT_ID: usize = 120;

#[async_trait]
pub trait Directory: Send + Sync {
    /// Finds the account a login name denotes, in any spelling the directory accepts. No
    /// password is involved: this decides what every later step is keyed on.
    async fn find(&self, login: &LoginName) -> Result<Option<Account>, DirectoryError>;

    /// Checks the password of an account `find` returned, and the group requirements. Callers
    /// reject empty passwords before calling (an LDAP bind with an empty password is an
    /// anonymous bind that succeeds); implementations refuse them too. `Valid` carries the
    /// profile; with `with_groups`, every group the account holds (nested membership
    /// resolved) — asked for only when an answer names them, as resolving names costs the
    /// directory work.
    async fn check_password(&self, account: &Account, password: &[u8], with_groups: bool) -> Result<PasswordCheck, DirectoryError>;

    /// The account's groups (nested membership resolved), without a password. The RADIUS code
    /// step does not need it (the first step keeps what the Accept needs with the challenge);
    /// it is there for a challenge begun by an older version.
    async fn groups(&self, account: &Account) -> Result<Vec<String>, DirectoryError>;

    /// Accounts whose name, display name or mail contains `text` (the help desk's search), at
    /// most `limit` (≤ [`MAX_SEARCH_RESULTS`]), in the directory's order. `text` reaches an
    /// LDAP filter only escaped (RFC 4515). By default none.
    async fn search(&self, _text: &str, _limit: usize) -> Result<Vec<Account>, DirectoryError> {
        Ok(Vec::new())
    }

    /// Which of `groups` (as configured: DNs for LDAP, names for the users file) the account is
    /// in, directly or through nesting, in the order given: the help desk role
    /// (`[portal] helpdesk_groups`) and the groups that matter in the help desk's view. By
    /// default none.
    async fn member_of(&self, _account: &Account, _groups: &[String]) -> Result<Vec<String>, DirectoryError> {
        Ok(Vec::new())
    }

    /// Whether the directory lets the account log in (disabled, locked, expired). By default
    /// nothing known.
    async fn account_status(&self, _account: &Account) -> Result<AccountStatus, DirectoryError> {
        Ok(AccountStatus::default())
    }

    /// Opens, in the background at start, what the first requests would otherwise wait for
    /// (connections). By default nothing.
    async fn warm_up(&self) {}

    /// Logs what the directory did since start (operations, connections, waits), at stop. By
    /// default nothing.
    fn log_totals(&self) {}

    /// Its servers and connections now, and what it did since start, for the metrics
    /// endpoint. By default nothing (the users file has no servers).
    fn status(&self) -> Option<DirectoryStatus> {
        None
    }

    /// Called with the password given for a name that denotes no account. A directory whose
    /// password checks queue (the users file's hashing threads) spends a check's work here while
    /// they are queued: otherwise, under load, only the Rejects of real accounts would leave
    /// after `reject_delay`, telling which names exist. Idle, it spends nothing (every Reject
    /// leaves at the same time anyway). By default nothing.
    async fn spend_like_a_check(&self, _password: &[u8]) {}
}
