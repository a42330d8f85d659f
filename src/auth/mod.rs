//! The decision: an authenticated, decoded request in, `Accept`, `Reject` or `Challenge` out.
//!
//! Knows nothing of sockets or retransmissions (the server answers those from its cache before
//! calling here) and nothing of how a decision is signed. Everything it needs comes through
//! traits — `Directory`, `Store`, `Gateway` — so it is tested with in-memory stand-ins. It writes
//! exactly one audit line per request, also for one that times out undecided.
//!
//! The login name is resolved by the directory to its account first: every spelling of one
//! account (`alice`, `ALICE`, her UPN, `EXAMPLE\alice`) meets the same tokens, lockouts and SMS
//! limits. The flows live in `flow`, the second factor (shared with the portal) in
//! `second_factor`. Every Reject carries the same Reply-Message, whatever its reason.

mod allowance;
mod context;
mod decision;
mod flow;
pub mod helpdesk;
pub mod messages;
pub mod portal;
pub mod reply;
mod retry;
mod second_factor;
pub mod settings;
pub mod state;
pub mod username;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use regex::Regex;

use crate::directory::{Directory, LoginName};
use crate::keys::Keys;
use crate::secret::Secret;
use crate::sms::{Gateway, SmsStats};
use crate::store::{LockoutPolicy, SmsLimits, Store};
pub use decision::{Decision, Outcome, Reason, Verdict};
pub use messages::Messages;
pub use reply::ReplyTemplate;
pub use second_factor::{ExistingToken, MadeToken};
pub use username::UsernameRules;

/// How a client's users give their second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The code appended to the password, in one field.
    Append,
    /// The password, then an Access-Challenge for the code.
    Challenge,
    /// Append when the field ends in a code's worth of digits and the user has a token, else challenge.
    Auto,
}

/// What happens to a user with no confirmed token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoToken {
    /// A code by SMS to the directory's mobile number.
    Sms,
    Reject,
    /// The password alone suffices: for a rollout, while users are still enrolling. Audited as
    /// `password_only`. Never for an account with a confirmed token, whatever the spelling.
    PasswordOnly,
}

/// How a NAS encodes User-Password. Most send UTF-8; some older ones send Latin-1, which must
/// become UTF-8 before it is compared with a directory password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum PasswordEncoding {
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    #[serde(rename = "latin-1", alias = "latin1", alias = "iso-8859-1")]
    Latin1,
}

impl PasswordEncoding {
    /// The password as UTF-8 bytes.
    pub fn to_utf8<'a>(&self, raw: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        match self {
            Self::Utf8 => raw.into(),
            Self::Latin1 if raw.is_ascii() => raw.into(),
            Self::Latin1 => raw.iter().map(|&b| char::from(b)).collect::<String>().into_bytes().into(),
        }
    }
}

/// What a NAS client is allowed and given, from its `[[client]]` section.
#[derive(Debug)]
pub struct ClientPolicy {
    pub name: String,
    /// Whether the NAS can answer an Access-Challenge (`challenges = false`: never one, not
    /// even for a State issued before a reload said so).
    pub challenges: bool,
    pub mode: Mode,
    pub no_token: NoToken,
    pub password_encoding: PasswordEncoding,
    /// Attributes added to every Access-Accept for this client.
    pub reply_attributes: Vec<ReplyTemplate>,
    /// Which of the user's groups `{group}` templates expand to (all when unset).
    pub group_filter: Option<Regex>,
}

impl ClientPolicy {
    /// Whether an Accept for this client names the user's groups: only then are they resolved.
    pub fn needs_groups(&self) -> bool {
        self.reply_attributes.iter().any(|t| matches!(t, ReplyTemplate::PerGroup { .. } | ReplyTemplate::Joined { .. }))
    }
}

impl ClientPolicy {
    /// A policy with the defaults: auto mode, SMS for users without a token, no reply attributes.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.into(),
            challenges: true,
            mode: Mode::Auto,
            no_token: NoToken::Sms,
            password_encoding: PasswordEncoding::Utf8,
            reply_attributes: Vec::new(),
            group_filter: None,
        }
    }
}

/// How the NAS carried the credentials. Only PAP hands us a password we can check against a
/// directory bind; the others are recognised so they are refused with a clear log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Pap,
    Chap,
    MsChap,
    Eap,
    /// No credential attribute at all.
    None,
}

/// The facts auth needs, already authenticated and decoded by the server.
#[derive(Debug)]
pub struct Request {
    /// User-Name as sent (raw: it may not be UTF-8; auth validates it).
    pub user_name: Option<Vec<u8>>,
    pub password: Option<Secret<Vec<u8>>>,
    pub method: Method,
    pub state: Option<Vec<u8>>,
    pub client: Arc<ClientPolicy>,
    /// The Request Authenticator: with the client, the user and the hidden password it names
    /// this request among the NAS's retries, which carry the same to whichever server they go.
    pub authenticator: [u8; 16],
    /// The User-Password attribute as sent, hidden by the shared secret (empty if none): part of
    /// a retry's key, so a request that reuses an authenticator with another answer is not one.
    pub hidden_password: Vec<u8>,
    pub nas_ip: Option<IpAddr>,
    pub nas_identifier: Option<String>,
    pub calling_station: Option<String>,
    /// When the datagram was read: what bounds how long the answer may wait for an SMS gateway,
    /// and the time its code and expiries are checked at.
    pub arrived: Instant,
    /// Octets the answer's attributes may take: a packet's 4096 less its header, the
    /// Message-Authenticator and the Proxy-State copied from the request.
    pub answer_room: usize,
}

impl Request {
    /// The wall-clock time the datagram was read: a code typed just before its time step ended
    /// stays valid however long the directory then takes.
    pub fn arrival_time(&self) -> crate::store::UnixTime {
        let at = std::time::SystemTime::now().checked_sub(self.arrived.elapsed()).unwrap_or(std::time::UNIX_EPOCH);
        at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
    }
}

/// Longest User-Name we take: AD's sAMAccountName is 20, a UPN 1024, but RADIUS carries 253.
const MAX_USER_NAME: usize = 253;

/// The second-factor settings `auth` applies.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `[totp]` algorithm, digits and period: of every token enrolled (portal and CLI alike),
    /// and the length of the code `append` splits off the password.
    pub totp: crate::otp::TotpParams,
    /// Time steps accepted either side of now.
    pub totp_window: u64,
    /// Wrong codes before the second factor locks.
    pub lockout: LockoutPolicy,
    /// Wrong passwords before the account's password step locks (checked before any bind, so
    /// set below AD's own lockout threshold).
    pub password_lockout: LockoutPolicy,
    /// How long a TOTP challenge waits for its answer.
    pub challenge_ttl: Duration,
    /// How long an SMS code is valid, and how many tries it allows.
    pub sms_validity: Duration,
    pub sms_tries: u8,
    pub sms_limits: SmsLimits,
    /// How long an answer waits for the SMS gateway: a slower gateway finishes in the
    /// background, so the NAS (NetScaler waits 3 s) gets its challenge in time.
    pub sms_answer_within: Duration,
    pub default_country_code: String,
    pub messages: Messages,
    pub usernames: UsernameRules,
    /// How long a NAS may retry a request (the server's `cache_ttl`): an Accept that used up a
    /// code is kept in the store that long, for a retry that reaches another node. Zero (one
    /// node, SQLite): nothing is kept, the server's own cache answers retries.
    pub retry_window: Duration,
    /// What a temporary code may be issued for.
    pub helpdesk: settings::HelpdeskSettings,
}

/// The services the decision uses.
pub struct Services {
    pub directory: Arc<dyn Directory>,
    pub store: Arc<dyn Store>,
    pub sms: Arc<dyn Gateway>,
    /// Seals challenge States (the key file, reloaded when it changes).
    pub keys: Arc<Keys>,
}

/// Decides requests. Its settings and its directory can be replaced while it runs (`reload`):
/// a decision under way finishes with those it began with, what is kept in the store (States,
/// contexts, lockouts) carries over.
pub struct Authenticator {
    store: Arc<dyn Store>,
    sms: ArcSwap<Arc<dyn Gateway>>,
    keys: Arc<Keys>,
    directory: ArcSwap<Arc<dyn Directory>>,
    settings: ArcSwap<AuthSettings>,
    sms_stats: Arc<SmsStats>,
    /// Password and code tries in flight per account.
    allowance: allowance::Allowance,
    /// Decisions' and portal steps' events, on their way to the store.
    trail: Arc<crate::audit::Trail>,
}

/// One request on its way through the flows.
struct Login<'a> {
    request: &'a Request,
    /// The name to look up; its `name` is what the State binds the answer to.
    user: LoginName,
    /// The account the name resolved to, once known: what the audit line names.
    account: Option<String>,
    answer: &'a [u8],
}

impl Authenticator {
    pub fn new(services: Services, settings: AuthSettings) -> Self {
        let Services { directory, store, sms, keys } = services;
        Self {
            store,
            sms: ArcSwap::from_pointee(sms),
            keys,
            directory: ArcSwap::from_pointee(directory),
            settings: ArcSwap::from_pointee(settings),
            sms_stats: Arc::default(),
            allowance: allowance::Allowance::default(),
            trail: Arc::default(),
        }
    }

    /// Decides from now on with `settings`, `directory` and the SMS gateway `sms` (a
    /// reloaded configuration).
    pub fn reload(&self, settings: AuthSettings, directory: Arc<dyn Directory>, sms: Arc<dyn Gateway>) {
        self.settings.store(Arc::new(settings));
        self.directory.store(Arc::new(directory));
        self.sms.store(Arc::new(sms));
    }

    /// The settings now: a decision reads them as it goes.
    fn settings(&self) -> Arc<AuthSettings> {
        self.settings.load_full()
    }

    /// The directory now.
    pub fn directory(&self) -> Arc<dyn Directory> {
        Arc::clone(&self.directory.load())
    }

    /// Whether the store can be used now (see [`crate::store::Store::available`]).
    pub fn store_available(&self) -> bool {
        self.store.available()
    }

    /// The audit trail's queue: the server runs its writer ([`crate::audit::Trail::run`]).
    pub fn audit_trail(&self) -> Arc<crate::audit::Trail> {
        Arc::clone(&self.trail)
    }

    /// Writes the queued audit events now (a command's end, a test).
    pub async fn flush_audit(&self) -> Result<(), crate::store::StoreError> {
        self.trail.flush(self.store.as_ref()).await
    }

    /// What became of the SMS codes sent, for the counters logged at stop.
    pub fn sms_stats(&self) -> Arc<SmsStats> {
        Arc::clone(&self.sms_stats)
    }

    /// Decides one Access-Request and writes its audit line.
    pub async fn decide(&self, request: &Request) -> Decision {
        let started = Instant::now();
        let (user, decision) = self.decide_inner(request).await;
        audit(&self.trail, request, &user, decision.outcome().as_str(), decision.reason, started.elapsed());
        decision
    }

    /// As [`decide`](Self::decide), but gives up after `limit`: then nothing is answered (the
    /// NAS retransmits or fails over) and the audit line says `timed_out`. A decision dropped
    /// half-way (the server stopping) still writes its line, saying `abandoned`.
    pub async fn decide_within(&self, request: &Request, limit: Duration) -> Option<Decision> {
        let mut line = AuditOnDrop { trail: &self.trail, request, login: self.login_of(request), started: Instant::now(), written: false };
        let decided = tokio::time::timeout(limit, self.decide_inner(request)).await;
        line.written = true;
        match decided {
            Ok((user, decision)) => {
                audit(&self.trail, request, &user, decision.outcome().as_str(), decision.reason, line.started.elapsed());
                Some(decision)
            }
            Err(_) => {
                audit(&self.trail, request, &Who::login(line.login.clone()), "none", Reason::TimedOut, line.started.elapsed());
                None
            }
        }
    }

    /// The login name for an audit line written without a decision.
    fn login_of(&self, request: &Request) -> Option<String> {
        request.user_name.as_deref().and_then(valid_user_name).map(|u| self.settings().usernames.login_name(u).name().to_owned())
    }

    async fn decide_inner(&self, request: &Request) -> (Who, Decision) {
        let user = match request.user_name.as_deref().map(valid_user_name) {
            None => return (Who::login(None), self.rejected(Reason::MissingUserName)),
            Some(None) => return (Who::login(None), self.rejected(Reason::InvalidUserName)),
            Some(Some(user)) => self.settings().usernames.login_name(user),
        };
        let reject = |reason| (Who::login(Some(user.name().to_owned())), self.rejected(reason));
        if request.method != Method::Pap {
            tracing::warn!(
                client = request.client.name.as_str(),
                method = ?request.method,
                "only PAP is supported: the password must reach the directory in clear; configure the NAS for PAP"
            );
            return reject(match request.method {
                Method::None => Reason::MissingPassword,
                other => Reason::UnsupportedMethod(other),
            });
        }
        let Some(password) = request.password.as_ref() else { return reject(Reason::MissingPassword) };
        if password.expose().is_empty() {
            return reject(Reason::EmptyPassword);
        }
        let mut login = Login { request, user: user.clone(), account: None, answer: password.expose() };
        let decision = match &request.state {
            Some(state) => self.continue_challenge(&mut login, state).await,
            None => self.first_step(&mut login).await,
        };
        let decision = match decision {
            Ok(Decision { verdict: Verdict::Reject { .. }, reason }) => self.rejected(reason),
            Ok(decision) => decision,
            // A busy DC says nothing about the user: a Reject would lock out valid users at the
            // morning peak. Unanswered, the NAS retries or fails over.
            Err(Reason::DirectoryBusy) => Decision::no_answer(Reason::DirectoryBusy),
            // Nor does a store that cannot be used: another node (sharing a database that
            // answers it) or a later retry decides.
            Err(Reason::StoreUnavailable) => Decision::no_answer(Reason::StoreUnavailable),
            Err(reason) => self.rejected(reason),
        };
        // While the store cannot be used, a request that needs it is left unanswered: so is one
        // that did not get that far (an unknown name, a wrong password), or the silence would
        // tell which names are accounts.
        let decision = match decision.verdict {
            Verdict::Reject { .. } if !self.store_available() => Decision::no_answer(Reason::StoreUnavailable),
            _ => decision,
        };
        let who = match login.account {
            Some(account) => Who { name: Some(account), account: true },
            None => Who::login(Some(user.name().to_owned())),
        };
        (who, decision)
    }

    /// A Reject: one Reply-Message for every reason, so the NAS (and whoever drives it) learns
    /// nothing about which accounts exist, have tokens, or are locked.
    fn rejected(&self, reason: Reason) -> Decision {
        Decision::reject(reason, self.settings().messages.rejected.clone())
    }
}

/// The reason for a directory that could not answer, logged.
fn directory_down(e: &crate::directory::DirectoryError, doing: &str) -> Reason {
    match e {
        crate::directory::DirectoryError::Busy(_) => {
            tracing::debug!(error = %e, "directory busy while it {doing}: the request is left unanswered");
            Reason::DirectoryBusy
        }
        _ => {
            tracing::error!(error = %e, "directory could not answer while it {doing}");
            Reason::DirectoryUnavailable
        }
    }
}

fn store_down(e: crate::store::StoreError) -> Reason {
    match e {
        // The store says when the database stops and starts answering: not once per request.
        crate::store::StoreError::Unavailable(_) => tracing::debug!(error = %e, "store unavailable"),
        _ => tracing::error!(error = %e, "store failed"),
    }
    Reason::StoreUnavailable
}

/// Whom an audit line is about: the account the name resolved to, or the name as given.
struct Who {
    name: Option<String>,
    /// Whether `name` is an account id (the directory resolved it).
    account: bool,
}

impl Who {
    fn login(name: Option<String>) -> Self {
        Self { name, account: false }
    }
}

/// Writes the `abandoned` audit line of a decision dropped before it wrote its own.
struct AuditOnDrop<'a> {
    trail: &'a crate::audit::Trail,
    request: &'a Request,
    login: Option<String>,
    started: Instant,
    written: bool,
}

impl Drop for AuditOnDrop<'_> {
    fn drop(&mut self) {
        if !self.written {
            audit(self.trail, self.request, &Who::login(self.login.clone()), "none", Reason::Abandoned, self.started.elapsed());
        }
    }
}

/// A User-Name we are willing to look up: UTF-8, not blank, no control characters.
pub(crate) fn valid_user_name(raw: &[u8]) -> Option<&str> {
    let name = std::str::from_utf8(raw).ok()?;
    let ok = !name.trim().is_empty() && name.len() <= MAX_USER_NAME && !name.chars().any(char::is_control);
    ok.then_some(name)
}

/// The audit line, and the decision's event in the trail. Client-supplied values go in as
/// strings: the text log prints them quoted with control, bidi and invisible characters
/// escaped, the JSON log as JSON strings; pages escape them as HTML.
fn audit(trail: &crate::audit::Trail, request: &Request, who: &Who, result: &'static str, reason: Reason, elapsed: Duration) {
    let user = who.name.as_deref();
    // Absent values are logged as empty strings, so every line has every field.
    let login = request.user_name.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
    let nas_ip = request.nas_ip.map(|ip| ip.to_string()).unwrap_or_default();
    tracing::info!(
        target: "radmfa::audit",
        user = user.unwrap_or_default(),
        login = login.as_ref(),
        client = request.client.name.as_str(),
        nas_ip = nas_ip.as_str(),
        nas_identifier = request.nas_identifier.as_deref().unwrap_or_default(),
        calling_station = request.calling_station.as_deref().unwrap_or_default(),
        result,
        reason = reason.as_str(),
        elapsed_ms = (elapsed.as_secs_f64() * 1e5).round() / 100.0,
        "decision"
    );
    // A request about no account (no name, one the directory does not know, or refused before
    // the name was looked up) has nothing for the help desk to see, and names sprayed at the
    // server must not fill the store: the log line is enough.
    let Some(account) = user.filter(|_| who.account) else { return };
    let from = request.calling_station.clone().or_else(|| request.nas_ip.map(|ip| ip.to_string()));
    trail.push(crate::store::AuditEvent {
        at: request.arrival_time(),
        account: account.to_owned(),
        action: "radius".to_owned(),
        client: request.client.name.clone(),
        from,
        result: result.to_owned(),
        reason: reason.as_str().to_owned(),
        actor: None,
        detail: None,
    });
}

/// Text for a terminal or a plain listing (`token list`): control, bidi and invisible
/// characters shown as escapes, so a crafted name cannot reorder or hide what is around it.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    let plain = |c: char| !c.is_control() && c.escape_debug().nth(1).is_none();
    if text.chars().all(|c| plain(c) || c == '"' || c == '\'') {
        return text.into();
    }
    text.chars()
        .map(|c| if plain(c) || c == '"' || c == '\'' { c.to_string() } else { c.escape_debug().to_string() })
        .collect::<String>()
        .into()
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod encoding_tests {
    use super::PasswordEncoding;

    #[test]
    fn latin1_passwords_become_utf8() {
        assert_eq!(PasswordEncoding::Latin1.to_utf8(b"L\xf6senord").as_ref(), "Lösenord".as_bytes());
        assert_eq!(PasswordEncoding::Latin1.to_utf8(b"plain").as_ref(), b"plain");
        assert_eq!(PasswordEncoding::Utf8.to_utf8("Lösenord".as_bytes()).as_ref(), "Lösenord".as_bytes());
    }
}
