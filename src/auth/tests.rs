//! The flows with in-memory stand-ins: a directory with two users that counts its binds, an
//! in-memory SQLite store, and a gateway that records what it was asked to send.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;

use super::flow::split_code;
use super::*;
use crate::directory::{Account, Denial, DirectoryError, LoginName, PasswordCheck, UserProfile};
use crate::keys::KeyRing;
use crate::otp::TotpParams;
use crate::radius::Attribute;
use crate::sms::SmsError;
use crate::store::sqlite::SqliteStore;
use crate::store::{Factor, NewToken};

/// `alice` / `pw` with a mobile number and a group, also found as `alice@example.test` (her UPN)
/// and `a.andersson`; `bob` / `pw` without either. Counts what it is asked; can be down (refusing),
/// busy (not answering in time), or slow.
#[derive(Default)]
pub(crate) struct FakeDirectory {
    pub(crate) binds: AtomicUsize,
    pub(crate) finds: AtomicUsize,
    pub(crate) group_reads: AtomicUsize,
    pub(crate) down: AtomicBool,
    pub(crate) busy: AtomicBool,
    pub(crate) slow: Option<Duration>,
    /// Groups for alice instead of her own.
    pub(crate) alice_groups: Mutex<Option<Vec<String>>>,
}

impl FakeDirectory {
    fn failure(&self) -> Option<DirectoryError> {
        if self.down.load(Ordering::SeqCst) {
            return Some(DirectoryError::Unavailable("down".into()));
        }
        self.busy.load(Ordering::SeqCst).then(|| DirectoryError::Busy("no answer in time".into()))
    }
}

impl FakeDirectory {
    fn profile(id: &str) -> Option<UserProfile> {
        match id {
            "alice" => Some(UserProfile {
                username: "alice".into(),
                mobile: Some("070-123 45 67".into()),
                groups: vec!["VPN-Users".into()],
                ..Default::default()
            }),
            "bob" => Some(UserProfile { username: "bob".into(), ..Default::default() }),
            _ => None,
        }
    }
}

#[async_trait]
impl Directory for FakeDirectory {
    async fn find(&self, login: &LoginName) -> Result<Option<Account>, DirectoryError> {
        if let Some(slow) = self.slow {
            tokio::time::sleep(slow).await;
        }
        self.finds.fetch_add(1, Ordering::SeqCst);
        if let Some(failure) = self.failure() {
            return Err(failure);
        }
        // Like AD: names compare without regard to (ASCII) case; a UPN first, then our realm's name.
        let id = |name: &str| match name.to_ascii_lowercase().as_str() {
            "alice" | "alice@example.test" | "a.andersson" => Some("alice"),
            "bob" => Some("bob"),
            _ => None,
        };
        let found = id(login.name()).or_else(|| login.local_part().and_then(id));
        let profile = |id: &str| {
            let mut profile = Self::profile(id)?;
            if let Some(groups) = self.alice_groups.lock().unwrap().clone().filter(|_| id == "alice") {
                profile.groups = groups;
            }
            Some(profile)
        };
        Ok(found
            .and_then(|id| profile(id).map(|profile| Account { id: id.into(), locator: format!("CN={id}"), profile, primary_group: None })))
    }

    async fn check_password(&self, account: &Account, password: &[u8], with_groups: bool) -> Result<PasswordCheck, DirectoryError> {
        self.binds.fetch_add(1, Ordering::SeqCst);
        if let Some(failure) = self.failure() {
            return Err(failure);
        }
        if with_groups {
            self.group_reads.fetch_add(1, Ordering::SeqCst);
        }
        Ok(match password {
            b"pw" => PasswordCheck::Valid(UserProfile {
                groups: if with_groups { account.profile.groups.clone() } else { Vec::new() },
                ..account.profile.clone()
            }),
            _ => PasswordCheck::Denied(Denial::WrongPassword),
        })
    }

    async fn groups(&self, account: &Account) -> Result<Vec<String>, DirectoryError> {
        self.group_reads.fetch_add(1, Ordering::SeqCst);
        if let Some(failure) = self.failure() {
            return Err(failure);
        }
        Ok(account.profile.groups.clone())
    }
}

#[derive(Default)]
pub(crate) struct RecordingGateway {
    pub(crate) sent: Mutex<Vec<(String, String)>>,
    pub(crate) broken: bool,
}

#[async_trait]
impl Gateway for RecordingGateway {
    fn kind(&self) -> &'static str {
        "recording"
    }

    async fn send_once(&self, to: &str, message: &Secret<String>) -> Result<(), SmsError> {
        if self.broken {
            return Err(SmsError::Status(400));
        }
        self.sent.lock().unwrap().push((to.to_owned(), message.expose().clone()));
        Ok(())
    }
}

impl RecordingGateway {
    pub(crate) fn last_code(&self) -> String {
        let sent = self.sent.lock().unwrap();
        sent.last().unwrap().1.chars().filter(char::is_ascii_digit).collect()
    }

    pub(crate) fn count(&self) -> usize {
        self.sent.lock().unwrap().len()
    }
}

struct Fixture {
    auth: Authenticator,
    directory: Arc<FakeDirectory>,
    store: Arc<SqliteStore>,
    sms: Arc<RecordingGateway>,
    secret: Vec<u8>,
}

pub(crate) fn settings() -> AuthSettings {
    AuthSettings {
        totp: TotpParams::default(),
        totp_window: 1,
        lockout: LockoutPolicy {
            max_failures: 5,
            duration: Duration::from_secs(300),
            max_duration: Duration::from_secs(3600),
            forget_after: None,
        },
        password_lockout: LockoutPolicy {
            max_failures: 5,
            duration: Duration::from_secs(900),
            max_duration: Duration::from_secs(3600),
            forget_after: Some(Duration::from_secs(900)),
        },
        challenge_ttl: Duration::from_secs(120),
        sms_validity: Duration::from_secs(300),
        sms_tries: 3,
        sms_limits: SmsLimits { per_user: 3, per_user_window: Duration::from_secs(900), global_per_minute: 100 },
        sms_answer_within: Duration::from_secs(2),
        default_country_code: "46".into(),
        messages: Messages::for_language(messages::Language::En),
        usernames: UsernameRules { domains: vec!["EXAMPLE".into()], realms: vec![] },
        retry_window: Duration::from_secs(30),
        helpdesk: Default::default(),
    }
}

async fn fixture_with(directory: FakeDirectory, sms: RecordingGateway, settings: AuthSettings) -> Fixture {
    let keys = Arc::new(Keys::fixed(KeyRing::generate("k1")));
    let store = Arc::new(SqliteStore::in_memory(Arc::clone(&keys)).unwrap());
    let secret = b"alice-seed-0123456789".to_vec();
    store
        .add_token(NewToken {
            username: "alice".into(),
            name: "phone".into(),
            params: TotpParams::default(),
            secret: Secret::new(secret.clone()),
            confirmed: true,
            created_at: crate::clock::now(),
        })
        .await
        .unwrap();
    let directory = Arc::new(directory);
    let sms = Arc::new(sms);
    let services = Services { directory: directory.clone(), store: store.clone(), sms: sms.clone(), keys };
    Fixture { auth: Authenticator::new(services, settings), directory, store, sms, secret }
}

async fn fixture() -> Fixture {
    fixture_with(FakeDirectory::default(), RecordingGateway::default(), settings()).await
}

fn client(mode: Mode, no_token: NoToken) -> Arc<ClientPolicy> {
    Arc::new(ClientPolicy { mode, no_token, ..ClientPolicy::named("nas") })
}

fn request(client: &Arc<ClientPolicy>, user: &str, password: &[u8], state: Option<Vec<u8>>) -> Request {
    Request {
        user_name: Some(user.as_bytes().to_vec()),
        password: Some(Secret::new(password.to_vec())),
        method: Method::Pap,
        state,
        client: Arc::clone(client),
        authenticator: rand::random(),
        hidden_password: Vec::new(),
        nas_ip: None,
        nas_identifier: None,
        calling_station: None,
        arrived: std::time::Instant::now(),
        answer_room: 4096 - 38,
    }
}

impl Fixture {
    /// The code of the step `offset` steps from now.
    fn code(&self, offset: i64) -> String {
        let p = TotpParams::default();
        let step = (p.step_at(crate::clock::now() as u64) as i64 + offset) as u64;
        p.code_at_step(&self.secret, step).expose().clone()
    }

    async fn decide(&self, client: &Arc<ClientPolicy>, user: &str, password: &[u8], state: Option<Vec<u8>>) -> Decision {
        self.auth.decide(&request(client, user, password, state)).await
    }
}

fn with_code(password: &str, code: &str) -> Vec<u8> {
    format!("{password}{code}").into_bytes()
}

#[tokio::test]
async fn append_accepts_password_plus_code_once() {
    let f = fixture().await;
    let nas = client(Mode::Append, NoToken::Reject);
    let code = f.code(0);
    let d = f.decide(&nas, "alice", &with_code("pw", &code), None).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Accept, Reason::Authenticated));
    let d = f.decide(&nas, "alice", &with_code("pw", &code), None).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Reject, Reason::CodeReplayed), "the same code twice");
    let d = f.decide(&nas, "alice", &with_code("pw", &f.code(-1)), None).await;
    assert_eq!(d.reason, Reason::CodeReplayed, "an earlier step after a later one");
    let d = f.decide(&nas, "alice", &with_code("pw", &f.code(1)), None).await;
    assert_eq!(d.outcome(), Outcome::Accept, "the next step, within the window");
    let d = f.decide(&nas, "alice", &with_code("nope", &f.code(0)), None).await;
    assert_eq!(d.reason, Reason::Directory(Denial::WrongPassword));
    assert_eq!(d.reply_message(), Some("Authentication failed"));
    let d = f.decide(&nas, "alice", b"pw", None).await;
    assert_eq!(d.reason, Reason::MissingCode, "append mode needs the code");
    assert_eq!(f.directory.binds.load(Ordering::SeqCst), 5, "one bind per request, none without a code");
}

#[tokio::test]
async fn challenge_round_trip_and_state_rules() {
    let f = fixture().await;
    let nas = client(Mode::Challenge, NoToken::Reject);
    let first = f.decide(&nas, "EXAMPLE\\Alice", b"pw", None).await;
    assert_eq!((first.outcome(), first.reason), (Outcome::Challenge, Reason::TotpChallenge));
    assert_eq!(first.reply_message(), Some("Enter the code from your authenticator app, or type sms"));
    let state = first.state().unwrap().to_vec();
    // The State belongs to alice on this client: not to bob, not to another NAS.
    let d = f.decide(&nas, "bob", f.code(0).as_bytes(), Some(state.clone())).await;
    assert_eq!(d.reason, Reason::StateMismatch);
    let other_nas = Arc::new(ClientPolicy { mode: Mode::Challenge, ..ClientPolicy::named("asa") });
    let d = f.decide(&other_nas, "alice", f.code(0).as_bytes(), Some(state.clone())).await;
    assert_eq!(d.reason, Reason::StateMismatch);
    let d = f.decide(&nas, "alice", f.code(0).as_bytes(), Some(state.clone())).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Accept, Reason::Authenticated));
    assert_eq!(d.attributes(), Vec::<Attribute>::new());
    let d = f.decide(&nas, "alice", f.code(1).as_bytes(), Some(state)).await;
    assert_eq!(d.reason, Reason::StateReused, "a State works once");
    let d = f.decide(&nas, "alice", b"x", Some(b"forged state".to_vec())).await;
    assert_eq!(d.reason, Reason::InvalidState);
    assert_eq!(f.directory.binds.load(Ordering::SeqCst), 1, "only the first step binds");
}

#[tokio::test]
async fn a_state_from_before_a_reload_set_challenges_off_leads_to_no_challenge_nor_sms() {
    let f = fixture().await;
    let nas = client(Mode::Challenge, NoToken::Reject);
    let first = f.decide(&nas, "alice", b"pw", None).await;
    assert_eq!(first.reason, Reason::TotpChallenge);
    let state = first.state().unwrap().to_vec();
    // The same client after a reload: challenges = false (append only).
    let reloaded =
        Arc::new(ClientPolicy { challenges: false, mode: Mode::Append, no_token: NoToken::Reject, ..ClientPolicy::named("nas") });
    for answer in [b"sms".as_slice(), f.code(0).as_bytes()] {
        let d = f.decide(&reloaded, "alice", answer, Some(state.clone())).await;
        assert_eq!((d.outcome(), d.reason), (Outcome::Reject, Reason::ChallengeNotAllowed));
    }
    assert!(f.sms.sent.lock().unwrap().is_empty(), "no SMS for a NAS that cannot ask for its code");
}

#[tokio::test]
async fn a_retry_of_an_accepted_request_gets_the_accept_again_and_nothing_else_does() {
    let f = fixture().await;
    let nas = client_with_groups(Mode::Append);
    let code = f.code(0);
    let accepted = request(&nas, "alice", &with_code("pw", &code), None);
    let first = f.auth.decide(&accepted).await;
    assert_eq!((first.outcome(), first.reason), (Outcome::Accept, Reason::Authenticated));
    // The NAS's retry (same Request Authenticator), at this node or another sharing the store.
    let retry = f.auth.decide(&accepted).await;
    assert_eq!((retry.outcome(), retry.reason), (Outcome::Accept, Reason::RetryOfAccepted));
    assert_eq!(retry.attributes(), first.attributes(), "the same Accept, reply attributes and all");
    // Another request with the same code is a replay, as before; so is the retry from another NAS.
    let other = f.decide(&nas, "alice", &with_code("pw", &code), None).await;
    assert_eq!(other.reason, Reason::CodeReplayed);
    let asa = Arc::new(ClientPolicy { mode: Mode::Append, no_token: NoToken::Reject, ..ClientPolicy::named("asa") });
    let elsewhere = request(&asa, "alice", &with_code("pw", &code), None);
    let elsewhere = Request { authenticator: accepted.authenticator, ..elsewhere };
    assert_eq!(f.auth.decide(&elsewhere).await.reason, Reason::CodeReplayed, "the key names the client");
    let state = f.store.lockout_state("alice", Factor::Code, crate::clock::now(), settings().lockout).await.unwrap();
    assert_eq!(state.failures, 2, "the two replays counted, the retry did not");
    // A challenge answered on one node, its answer lost, the NAS's retry: the Accept again.
    let nas = client(Mode::Challenge, NoToken::Reject);
    let state = f.decide(&nas, "alice", b"pw", None).await.into_state().unwrap();
    let answer = request(&nas, "alice", f.code(1).as_bytes(), Some(state.clone()));
    assert_eq!(f.auth.decide(&answer).await.reason, Reason::Authenticated);
    assert_eq!(f.auth.decide(&answer).await.reason, Reason::RetryOfAccepted);
    // The same authenticator and State with another answer is not that request's retry.
    let forged = Request { hidden_password: b"another answer".to_vec(), ..request(&nas, "alice", b"000000", Some(state.clone())) };
    let forged = Request { authenticator: answer.authenticator, ..forged };
    assert_eq!(f.auth.decide(&forged).await.reason, Reason::StateReused);
    let again = f.decide(&nas, "alice", f.code(1).as_bytes(), Some(state)).await;
    assert_eq!(again.reason, Reason::StateReused, "another request with the used State");
}

#[tokio::test]
async fn an_expired_state_is_rejected() {
    let f =
        fixture_with(FakeDirectory::default(), RecordingGateway::default(), AuthSettings { challenge_ttl: Duration::ZERO, ..settings() })
            .await;
    let nas = client(Mode::Challenge, NoToken::Reject);
    let state = f.decide(&nas, "alice", b"pw", None).await.into_state().unwrap();
    let d = f.decide(&nas, "alice", f.code(0).as_bytes(), Some(state)).await;
    assert_eq!(d.reason, Reason::StateExpired);
}

#[tokio::test]
async fn sms_at_the_challenge_sends_one_code_that_logs_in() {
    let f = fixture().await;
    let nas = client(Mode::Challenge, NoToken::Reject);
    let state = f.decide(&nas, "alice", b"pw", None).await.into_state().unwrap();
    let d = f.decide(&nas, "alice", b"SMS", Some(state)).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Challenge, Reason::SmsSent));
    assert_eq!(d.reply_message(), Some("Enter the code sent to +46 70*** **67"));
    assert_eq!(f.sms.count(), 1);
    assert_eq!(f.sms.sent.lock().unwrap()[0].0, "+46701234567", "E.164 from the directory's 070-123 45 67");
    let code = f.sms.last_code();
    assert_eq!(code.len(), 6);
    let d = f.decide(&nas, "alice", code.as_bytes(), d.into_state()).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Accept, Reason::Authenticated));
}

#[tokio::test]
async fn no_token_means_sms_and_wrong_sms_codes_get_three_tries() {
    let f = fixture().await;
    let nas = client(Mode::Auto, NoToken::Sms);
    f.store.remove_token("alice", 1).await.unwrap();
    let d = f.decide(&nas, "alice", b"pw", None).await;
    assert_eq!(d.reason, Reason::SmsSent);
    let d = f.decide(&nas, "alice", b"000000x", d.into_state()).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Challenge, Reason::SmsRetry));
    assert_eq!(d.reply_message(), Some("Wrong code, try again"));
    let d = f.decide(&nas, "alice", b"000000x", d.into_state()).await;
    assert_eq!(d.reason, Reason::SmsRetry);
    let d = f.decide(&nas, "alice", f.sms.last_code().as_bytes(), d.into_state()).await;
    assert_eq!(d.outcome(), Outcome::Accept, "the third try may still be right");

    let d = f.decide(&nas, "alice", b"pw", None).await;
    let mut state = d.into_state();
    for _ in 0..2 {
        state = f.decide(&nas, "alice", b"wrong", state).await.into_state();
    }
    let d = f.decide(&nas, "alice", f.sms.last_code().as_bytes(), None).await;
    assert_ne!(d.outcome(), Outcome::Accept, "a code is no password");
    let d = f.decide(&nas, "alice", b"wrong", state).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Reject, Reason::WrongCode), "three wrong tries end it");
}

#[tokio::test]
async fn users_without_a_mobile_or_over_the_limit_are_told_so() {
    let f = fixture().await;
    let nas = client(Mode::Auto, NoToken::Sms);
    let d = f.decide(&nas, "bob", b"pw", None).await;
    assert_eq!((d.outcome(), d.reply_message()), (Outcome::Reject, Some("Authentication failed")), "the reason is not told");
    assert_eq!(d.reason, Reason::NoMobile);
    f.store.remove_token("alice", 1).await.unwrap();
    for _ in 0..3 {
        assert_eq!(f.decide(&nas, "alice", b"pw", None).await.reason, Reason::SmsSent);
    }
    assert_eq!(f.decide(&nas, "alice", b"pw", None).await.reason, Reason::SmsRateLimited);
    assert_eq!(f.sms.count(), 3);
    let d = f.decide(&client(Mode::Auto, NoToken::Reject), "bob", b"pw", None).await;
    assert_eq!(d.reason, Reason::NoToken);
    let d = f.decide(&client(Mode::Auto, NoToken::PasswordOnly), "bob", b"pw", None).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Accept, Reason::PasswordOnly));
}

#[tokio::test]
async fn a_failing_gateway_still_challenges_so_the_answer_tells_nothing() {
    let f = fixture_with(FakeDirectory::default(), RecordingGateway { broken: true, ..Default::default() }, settings()).await;
    f.store.remove_token("alice", 1).await.unwrap();
    let d = f.decide(&client(Mode::Auto, NoToken::Sms), "alice", b"pw", None).await;
    // A Reject would leave later than any other (it waited on the gateway): a challenge instead,
    // which a wrong password never gets anyway; the failure is logged and counted.
    assert_eq!((d.outcome(), d.reason), (Outcome::Challenge, Reason::SmsFailed));
    assert_eq!(f.auth.sms_stats().failed.get(), 1);
}

#[tokio::test]
async fn the_wait_for_the_gateway_counts_from_the_packets_arrival() {
    let keys = Arc::new(Keys::fixed(KeyRing::generate("k1")));
    let store = Arc::new(SqliteStore::in_memory(Arc::clone(&keys)).unwrap());
    let services =
        Services { directory: Arc::new(FakeDirectory::default()), store, sms: Arc::new(SlowGateway(Duration::from_secs(1))), keys };
    let auth = Authenticator::new(services, AuthSettings { sms_answer_within: Duration::from_secs(2), ..settings() });
    let mut late = request(&client(Mode::Auto, NoToken::Sms), "alice", b"pw", None);
    late.arrived = std::time::Instant::now() - Duration::from_millis(1900);
    let started = std::time::Instant::now();
    let d = auth.decide(&late).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Challenge, Reason::SmsPending));
    assert!(started.elapsed() < Duration::from_millis(600), "the packet waited 1.9 s already: {:?}", started.elapsed());
}

#[tokio::test]
async fn five_wrong_codes_lock_the_second_factor_before_any_bind() {
    let f = fixture().await;
    let nas = client(Mode::Append, NoToken::Reject);
    for _ in 0..5 {
        assert_eq!(f.decide(&nas, "alice", &with_code("pw", "000000"), None).await.reason, Reason::WrongCode);
    }
    let binds = f.directory.binds.load(Ordering::SeqCst);
    let d = f.decide(&nas, "alice", &with_code("pw", &f.code(0)), None).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Reject, Reason::SecondFactorLocked), "even the right code");
    assert_eq!(d.reply_message(), Some("Authentication failed"), "the lock does not reveal itself");
    assert_eq!(f.directory.binds.load(Ordering::SeqCst), binds, "no bind while locked");
    f.store.unlock("alice").await.unwrap();
    assert_eq!(f.decide(&nas, "alice", &with_code("pw", &f.code(0)), None).await.outcome(), Outcome::Accept);
}

#[tokio::test]
async fn auto_appends_only_for_token_users_with_trailing_digits() {
    let f = fixture().await;
    let nas = client(Mode::Auto, NoToken::Sms);
    assert_eq!(f.decide(&nas, "alice", &with_code("pw", &f.code(0)), None).await.outcome(), Outcome::Accept);
    assert_eq!(f.decide(&nas, "alice", b"pw", None).await.reason, Reason::TotpChallenge);
}

#[tokio::test]
async fn bad_input_is_rejected_before_the_directory() {
    let f = fixture().await;
    let nas = client(Mode::Auto, NoToken::Sms);
    assert_eq!(f.decide(&nas, "alice", b"", None).await.reason, Reason::EmptyPassword);
    assert_eq!(f.decide(&nas, "al\nice", b"pw", None).await.reason, Reason::InvalidUserName);
    assert_eq!(f.decide(&nas, "   ", b"pw", None).await.reason, Reason::InvalidUserName);
    let mut chap = request(&nas, "alice", b"", None);
    chap.method = Method::Chap;
    chap.password = None;
    assert_eq!(f.auth.decide(&chap).await.reason, Reason::UnsupportedMethod(Method::Chap));
    let mut none = request(&nas, "alice", b"pw", None);
    none.user_name = None;
    assert_eq!(f.auth.decide(&none).await.reason, Reason::MissingUserName);
    assert_eq!(f.directory.binds.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn directory_outage_rejects() {
    let f = fixture_with(FakeDirectory { down: true.into(), ..Default::default() }, RecordingGateway::default(), settings()).await;
    let d = f.decide(&client(Mode::Auto, NoToken::Sms), "alice", b"pw", None).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Reject, Reason::DirectoryUnavailable));
}

#[tokio::test]
async fn a_busy_directory_leaves_the_request_unanswered_not_rejected() {
    let f = fixture_with(FakeDirectory { busy: true.into(), ..Default::default() }, RecordingGateway::default(), settings()).await;
    let nas = client(Mode::Auto, NoToken::Sms);
    let d = f.decide(&nas, "alice", &with_code("pw", &f.code(0)), None).await;
    assert_eq!((d.outcome(), d.reason, d.reply_message()), (Outcome::NoAnswer, Reason::DirectoryBusy, None));
    // Busy spells count no wrong password: after more of them than the lock allows, the user
    // still gets in.
    f.directory.busy.store(false, Ordering::SeqCst);
    let d = f.decide(&nas, "alice", b"wrong", None).await;
    assert_eq!(d.reason, Reason::Directory(Denial::WrongPassword));
    let before = f.directory.binds.load(Ordering::SeqCst);
    f.directory.busy.store(true, Ordering::SeqCst);
    for _ in 0..6 {
        assert_eq!(f.decide(&nas, "alice", b"pw", None).await.outcome(), Outcome::NoAnswer);
    }
    assert_eq!(f.directory.binds.load(Ordering::SeqCst), before, "a busy search stops before the bind");
    f.directory.busy.store(false, Ordering::SeqCst);
    let d = f.decide(&nas, "alice", &with_code("pw", &f.code(0)), None).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Accept, Reason::Authenticated), "nothing was locked by the busy spell");
}

/// A client whose Accept names the user's groups.
fn client_with_groups(mode: Mode) -> Arc<ClientPolicy> {
    let dict = crate::radius::dict::Dictionary::builtin().unwrap();
    let groups = ReplyTemplate::new(&dict, "Citrix-User-Groups", "{group}").unwrap();
    Arc::new(ClientPolicy { mode, no_token: NoToken::Reject, reply_attributes: vec![groups], ..ClientPolicy::named("nas") })
}

#[tokio::test]
async fn groups_are_resolved_only_for_a_client_whose_answer_names_them() {
    let f = fixture().await;
    let d = f.decide(&client(Mode::Append, NoToken::Reject), "alice", &with_code("pw", &f.code(0)), None).await;
    assert_eq!(d.outcome(), Outcome::Accept);
    assert_eq!(f.directory.group_reads.load(Ordering::SeqCst), 0);
    let d = f.decide(&client_with_groups(Mode::Append), "alice", &with_code("pw", &f.code(1)), None).await;
    assert_eq!(d.outcome(), Outcome::Accept);
    assert_eq!(d.attributes(), vec![Attribute::vendor(66, 16, *b"VPN-Users")]);
    assert_eq!(f.directory.group_reads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_accept_too_big_for_a_packet_is_rejected_and_audited_as_such() {
    let f = fixture().await;
    let nas = client_with_groups(Mode::Append);
    let mut squeezed = request(&nas, "alice", &with_code("pw", &f.code(0)), None);
    // Room for less than one Citrix-User-Groups attribute (8 octets of VSA header + "VPN-Users").
    squeezed.answer_room = 16;
    let d = f.auth.decide(&squeezed).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Reject, Reason::AnswerTooBig));
    assert!(d.attributes().is_empty());
    // Refused before the code was checked: the same code still works.
    let mut roomy = request(&nas, "alice", &with_code("pw", &f.code(0)), None);
    roomy.answer_room = 17;
    assert_eq!(f.auth.decide(&roomy).await.outcome(), Outcome::Accept, "exactly the room it needs");
}

#[tokio::test]
async fn a_challenge_keeps_every_group_its_accept_names_and_checks_the_room_again() {
    let f = fixture().await;
    // 100 groups whose DNs (~80 octets each) fill two packets, whose names (15 octets sent each)
    // fit in one.
    let groups: Vec<String> =
        (0..100).map(|n| format!("CN=Grp-{n:03},OU=A-Long-Organisational-Unit-Name,OU=Groups,DC=example,DC=test")).collect();
    *f.directory.alice_groups.lock().unwrap() = Some(groups);
    let nas = client_with_groups(Mode::Challenge);
    let first = f.decide(&nas, "alice", b"pw", None).await;
    assert_eq!(first.reason, Reason::TotpChallenge);
    let d = f.decide(&nas, "alice", f.code(0).as_bytes(), first.into_state()).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Accept, Reason::Authenticated));
    assert_eq!(d.attributes().len(), 100, "every group the first step checked");
    // The code step's own request leaves less room (a proxy's Proxy-State): refused before the
    // code is used.
    let first = f.decide(&nas, "alice", b"pw", None).await;
    let mut squeezed = request(&nas, "alice", f.code(1).as_bytes(), first.into_state());
    squeezed.answer_room = 1000;
    let d = f.auth.decide(&squeezed).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Reject, Reason::AnswerTooBig));
    let first = f.decide(&nas, "alice", b"pw", None).await;
    let d = f.decide(&nas, "alice", f.code(1).as_bytes(), first.into_state()).await;
    assert_eq!(d.outcome(), Outcome::Accept, "the code was not used up by the refused request");
}

#[tokio::test]
async fn the_code_step_asks_the_directory_nothing_and_survives_its_outage() {
    let f = fixture().await;
    let nas = client_with_groups(Mode::Challenge);
    let first = f.decide(&nas, "alice", b"pw", None).await;
    assert_eq!(first.reason, Reason::TotpChallenge);
    let asked = |d: &FakeDirectory| (d.finds.load(Ordering::SeqCst), d.binds.load(Ordering::SeqCst), d.group_reads.load(Ordering::SeqCst));
    let after_first = asked(&f.directory);
    // The DC goes down between the two rounds.
    f.directory.down.store(true, Ordering::SeqCst);
    let d = f.decide(&nas, "alice", f.code(0).as_bytes(), first.into_state()).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Accept, Reason::Authenticated));
    assert_eq!(d.attributes(), vec![Attribute::vendor(66, 16, *b"VPN-Users")], "the groups of the first round");
    // "sms" instead of a code: the mobile number comes from the first round too, and so do a
    // wrong SMS code's retry and the right code's groups.
    f.directory.down.store(false, Ordering::SeqCst);
    let first = f.decide(&nas, "alice", b"pw", None).await;
    let after_second_first = asked(&f.directory);
    f.directory.down.store(true, Ordering::SeqCst);
    let d = f.decide(&nas, "alice", b"sms", first.into_state()).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Challenge, Reason::SmsSent));
    assert_eq!(d.reply_message(), Some("Enter the code sent to +46 70*** **67"));
    let d = f.decide(&nas, "alice", b"000000", d.into_state()).await;
    assert_eq!(d.reason, Reason::SmsRetry);
    let d = f.decide(&nas, "alice", f.sms.last_code().as_bytes(), d.into_state()).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Accept, Reason::Authenticated));
    assert_eq!(d.attributes(), vec![Attribute::vendor(66, 16, *b"VPN-Users")]);
    assert_eq!(asked(&f.directory), after_second_first, "no directory operation on any code step");
    assert_eq!(after_first.0 + 1, after_second_first.0);
}

#[tokio::test]
async fn the_code_is_checked_at_the_packets_arrival_however_long_the_directory_takes() {
    // No window: only the step of the arrival is right.
    let f = fixture_with(FakeDirectory::default(), RecordingGateway::default(), AuthSettings { totp_window: 0, ..settings() }).await;
    let nas = client(Mode::Append, NoToken::Reject);
    let p = TotpParams::default();
    // A datagram that arrived 30 s ago, in the previous time step, decided only now (the
    // directory took that long): its code is the previous step's.
    let mut late = request(&nas, "alice", b"", None);
    late.arrived = std::time::Instant::now().checked_sub(Duration::from_secs(30)).unwrap();
    let code = p.code_at_step(&f.secret, p.step_at(late.arrival_time() as u64)).expose().clone();
    late.password = Some(Secret::new(with_code("pw", &code)));
    let d = f.auth.decide(&late).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Accept, Reason::Authenticated), "read at the decision's end, the step had passed");
}

#[test]
fn shown_escapes_control_bidi_and_invisible_characters() {
    assert_eq!(shown("alice"), "alice");
    assert_eq!(shown("åsa.öberg \"x\""), "åsa.öberg \"x\"");
    assert_eq!(shown("a\nINFO forged"), "a\\nINFO forged");
    assert_eq!(shown("\u{1b}[31m"), "\\u{1b}[31m");
    assert_eq!(shown("evil\u{202e}gpj.exe"), "evil\\u{202e}gpj.exe", "right-to-left override");
    assert_eq!(shown("ad\u{200b}min"), "ad\\u{200b}min", "zero-width space");
    assert_eq!(shown("a\\u{202e}"), "a\\\\u{202e}", "a typed backslash cannot pass for an escape");
}

#[test]
fn split_code_needs_digits_and_a_password() {
    assert_eq!(split_code(b"secret123456", 6), Some((&b"secret"[..], &b"123456"[..])));
    assert_eq!(split_code(b"123456", 6), None);
    assert_eq!(split_code(b"secret12345a", 6), None);
    assert_eq!(split_code(b"abc", 6), None);
}

#[tokio::test]
async fn a_code_is_tried_against_each_confirmed_token() {
    let f = fixture().await;
    let spare = b"spare-phone-seed-0123".to_vec();
    f.store
        .add_token(NewToken {
            username: "alice".into(),
            name: "spare".into(),
            params: TotpParams::default(),
            secret: Secret::new(spare.clone()),
            confirmed: true,
            created_at: crate::clock::now(),
        })
        .await
        .unwrap();
    let unconfirmed = b"unconfirmed-seed-0123".to_vec();
    f.store
        .add_token(NewToken {
            username: "alice".into(),
            name: "new".into(),
            params: TotpParams::default(),
            secret: Secret::new(unconfirmed.clone()),
            confirmed: false,
            created_at: crate::clock::now(),
        })
        .await
        .unwrap();
    let p = TotpParams::default();
    let step = p.step_at(crate::clock::now() as u64);
    let nas = client(Mode::Append, NoToken::Reject);
    let spare_code = p.code_at_step(&spare, step);
    assert_eq!(
        f.decide(&nas, "alice", &with_code("pw", spare_code.expose()), None).await.outcome(),
        Outcome::Accept,
        "the spare phone's code"
    );
    assert_eq!(f.decide(&nas, "alice", &with_code("pw", &f.code(0)), None).await.outcome(), Outcome::Accept, "and the main phone's");
    let pending = p.code_at_step(&unconfirmed, step);
    assert_eq!(
        f.decide(&nas, "alice", &with_code("pw", pending.expose()), None).await.reason,
        Reason::WrongCode,
        "never an unconfirmed token"
    );
}

#[tokio::test]
async fn every_spelling_of_an_enrolled_account_meets_its_token() {
    let f = fixture().await;
    // password_only lets in users without a token; alice has one, under any spelling.
    let rollout = client(Mode::Auto, NoToken::PasswordOnly);
    for spelling in ["alice@example.test", "A.Andersson", "EXAMPLE\\alice", "ALICE"] {
        let d = f.decide(&rollout, spelling, b"pw", None).await;
        assert_eq!((d.outcome(), d.reason), (Outcome::Challenge, Reason::TotpChallenge), "{spelling}: asked for her code, never let in");
    }
    let append = client(Mode::Append, NoToken::PasswordOnly);
    let d = f.decide(&append, "alice@example.test", b"pw", None).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Reject, Reason::MissingCode));
    let d = f.decide(&append, "alice@example.test", &with_code("pw", &f.code(0)), None).await;
    assert_eq!(d.outcome(), Outcome::Accept);
    let d = f.decide(&append, "alice", &with_code("pw", &f.code(0)), None).await;
    assert_eq!(d.reason, Reason::CodeReplayed, "one account, one replay record");
    // A State begun under one spelling is answered under that spelling, filed under the account.
    let challenge = client(Mode::Challenge, NoToken::Reject);
    let state = f.decide(&challenge, "alice@example.test", b"pw", None).await.into_state();
    let d = f.decide(&challenge, "alice", f.code(1).as_bytes(), state.clone()).await;
    assert_eq!(d.reason, Reason::StateMismatch, "the NAS answers under the name it sent first");
    let state = f.decide(&challenge, "alice@example.test", b"pw", None).await.into_state();
    let d = f.decide(&challenge, "alice@example.test", f.code(1).as_bytes(), state).await;
    assert_eq!(d.outcome(), Outcome::Accept);
}

#[tokio::test]
async fn lockout_and_sms_limits_are_shared_by_every_spelling() {
    let f = fixture().await;
    let nas = client(Mode::Append, NoToken::Sms);
    for spelling in ["alice", "alice@example.test", "a.andersson", "alice@example.test", "alice"] {
        assert_eq!(f.decide(&nas, spelling, &with_code("pw", "000000"), None).await.reason, Reason::WrongCode, "{spelling}");
    }
    for spelling in ["alice", "alice@example.test", "a.andersson"] {
        let d = f.decide(&nas, spelling, &with_code("pw", &f.code(0)), None).await;
        assert_eq!(d.reason, Reason::SecondFactorLocked, "{spelling}: locked under every name");
    }
    f.store.unlock("alice").await.unwrap();
    f.store.remove_token("alice", 1).await.unwrap();
    let sms = client(Mode::Auto, NoToken::Sms);
    for spelling in ["alice", "alice@example.test", "a.andersson"] {
        assert_eq!(f.decide(&sms, spelling, b"pw", None).await.reason, Reason::SmsSent);
    }
    assert_eq!(f.decide(&sms, "alice@example.test", b"pw", None).await.reason, Reason::SmsRateLimited, "one allowance for all spellings");
    assert_eq!(f.sms.count(), 3);
}

#[tokio::test]
async fn tokens_an_older_version_filed_under_a_spelling_move_to_the_account() {
    let f = fixture().await;
    let upn_seed = b"upn-filed-seed-012345".to_vec();
    f.store
        .add_token(NewToken {
            username: "alice@example.test".into(),
            name: "enrolled as UPN".into(),
            params: TotpParams::default(),
            secret: Secret::new(upn_seed.clone()),
            confirmed: true,
            created_at: crate::clock::now(),
        })
        .await
        .unwrap();
    let p = TotpParams::default();
    let code = p.code_at_step(&upn_seed, p.step_at(crate::clock::now() as u64));
    let nas = client(Mode::Append, NoToken::PasswordOnly);
    let d = f.decide(&nas, "alice@example.test", &with_code("pw", code.expose()), None).await;
    assert_eq!(d.outcome(), Outcome::Accept, "the token keeps working");
    assert!(f.store.tokens("alice@example.test").await.unwrap().is_empty());
    assert_eq!(f.store.tokens("alice").await.unwrap().len(), 2, "now filed under the account");
}

#[tokio::test]
async fn wrong_passwords_lock_the_password_step_before_any_bind() {
    let f = fixture().await;
    let nas = client(Mode::Append, NoToken::Reject);
    for spelling in ["alice", "alice@example.test", "alice", "a.andersson", "ALICE"] {
        let d = f.decide(&nas, spelling, &with_code("guess", &f.code(0)), None).await;
        assert_eq!(d.reason, Reason::Directory(Denial::WrongPassword), "{spelling}");
    }
    let binds = f.directory.binds.load(Ordering::SeqCst);
    let d = f.decide(&nas, "alice", &with_code("pw", &f.code(0)), None).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Reject, Reason::PasswordLocked), "even the right password, for a while");
    assert_eq!(d.reply_message(), Some("Authentication failed"));
    assert_eq!(f.directory.binds.load(Ordering::SeqCst), binds, "no bind: AD's own lockout counter is not fed");
    let d = f.decide(&nas, "bob", b"pw", None).await;
    assert_eq!(d.reason, Reason::NoToken, "other accounts are not affected");
    f.store.unlock("alice").await.unwrap();
    assert_eq!(f.decide(&nas, "alice", &with_code("pw", &f.code(0)), None).await.outcome(), Outcome::Accept);
    // A success clears the count: four more typos do not lock.
    for _ in 0..4 {
        f.decide(&nas, "alice", &with_code("typo", &f.code(1)), None).await;
    }
    assert_eq!(f.store.locked_until("alice", Factor::Password, crate::clock::now()).await.unwrap(), None);
}

#[tokio::test]
async fn every_reject_says_the_same_whatever_the_reason() {
    let f = fixture().await;
    f.store.remove_token("alice", 1).await.unwrap();
    let cases: Vec<(Arc<ClientPolicy>, &str, &[u8])> = vec![
        (client(Mode::Auto, NoToken::Sms), "nobody", b"pw"),
        (client(Mode::Auto, NoToken::Sms), "alice", b"wrong"),
        (client(Mode::Auto, NoToken::Sms), "bob", b"pw"),
        (client(Mode::Auto, NoToken::Reject), "bob", b"pw"),
        (client(Mode::Auto, NoToken::Sms), "al\ni", b"pw"),
        (client(Mode::Auto, NoToken::Sms), "alice", b""),
    ];
    let mut reasons = Vec::new();
    for (nas, user, password) in cases {
        let d = f.decide(&nas, user, password, None).await;
        assert_eq!((d.outcome(), d.reply_message()), (Outcome::Reject, Some("Authentication failed")), "{user}");
        reasons.push(d.reason);
    }
    let distinct: std::collections::HashSet<_> = reasons.iter().map(|r| r.as_str()).collect();
    assert_eq!(distinct.len(), reasons.len(), "six different reasons, one text: {reasons:?}");
}

/// A gateway that takes its time, as a slow SMS provider does.
struct SlowGateway(Duration);

#[async_trait]
impl Gateway for SlowGateway {
    fn kind(&self) -> &'static str {
        "slow"
    }

    async fn send_once(&self, _to: &str, _message: &Secret<String>) -> Result<(), SmsError> {
        tokio::time::sleep(self.0).await;
        Ok(())
    }
}

#[tokio::test]
async fn a_slow_gateway_does_not_hold_the_challenge_past_answer_within() {
    let keys = Arc::new(Keys::fixed(KeyRing::generate("k1")));
    let store = Arc::new(SqliteStore::in_memory(Arc::clone(&keys)).unwrap());
    let services =
        Services { directory: Arc::new(FakeDirectory::default()), store, sms: Arc::new(SlowGateway(Duration::from_millis(600))), keys };
    let auth = Authenticator::new(services, AuthSettings { sms_answer_within: Duration::from_millis(100), ..settings() });
    let started = std::time::Instant::now();
    let d = auth.decide(&request(&client(Mode::Auto, NoToken::Sms), "alice", b"pw", None)).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Challenge, Reason::SmsPending));
    assert!(started.elapsed() < Duration::from_millis(500), "answered before the gateway finished: {:?}", started.elapsed());
    let stats = auth.sms_stats();
    assert_eq!((stats.pending.get(), stats.late_sent.get()), (1, 0));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(stats.late_sent.get(), 1, "the gateway's late result is counted");
}

#[tokio::test]
async fn an_undecided_request_gets_no_answer_after_the_limit() {
    let f =
        fixture_with(FakeDirectory { slow: Some(Duration::from_secs(5)), ..Default::default() }, RecordingGateway::default(), settings())
            .await;
    let req = request(&client(Mode::Auto, NoToken::Sms), "alice", b"pw", None);
    assert_eq!(f.auth.decide_within(&req, Duration::from_millis(50)).await, None);
}

#[tokio::test]
async fn tries_sent_at_once_cannot_all_reach_the_directory_or_the_codes() {
    let f = fixture().await;
    let nas = client(Mode::Append, NoToken::Reject);
    let burst = (0..30).map(|i| request(&nas, "alice", format!("guess-{i}{}", f.code(0)).as_bytes(), None)).collect::<Vec<_>>();
    let decisions = futures_join_all(burst.iter().map(|r| f.auth.decide(r))).await;
    assert_eq!(f.directory.binds.load(Ordering::SeqCst), 5, "of thirty wrong passwords at once, five reached the directory");
    assert_eq!(decisions.iter().filter(|d| d.reason == Reason::PasswordLocked).count(), 25);
    f.store.unlock("alice").await.unwrap();

    // A challenge answered thirty times at once (thirty States collected first): five code checks.
    let challenge = client(Mode::Challenge, NoToken::Reject);
    let mut states = Vec::new();
    for _ in 0..30 {
        states.push(f.decide(&challenge, "alice", b"pw", None).await.into_state());
    }
    let answers =
        states.into_iter().enumerate().map(|(i, s)| request(&challenge, "alice", format!("{:06}", i).as_bytes(), s)).collect::<Vec<_>>();
    let decisions = futures_join_all(answers.iter().map(|r| f.auth.decide(r))).await;
    let checked = decisions.iter().filter(|d| d.reason == Reason::WrongCode).count();
    assert_eq!(checked, 5, "{:?}", decisions.iter().map(|d| d.reason).collect::<Vec<_>>());
    assert_eq!(decisions.iter().filter(|d| d.reason == Reason::SecondFactorLocked).count(), 25);
}

#[tokio::test]
async fn right_answers_made_at_once_only_wait_for_each_other() {
    let f = fixture().await;
    f.store.remove_token("alice", 1).await.unwrap();
    // Twelve logins of one account at once (a shared account, a load test): more than the
    // allowance of five tries in flight, all with the right password.
    let rollout = client(Mode::Auto, NoToken::PasswordOnly);
    let burst = (0..12).map(|_| request(&rollout, "alice", b"pw", None)).collect::<Vec<_>>();
    let decisions = futures_join_all(burst.iter().map(|r| f.auth.decide(r))).await;
    assert!(decisions.iter().all(|d| d.outcome() == Outcome::Accept), "{:?}", decisions.iter().map(|d| d.reason).collect::<Vec<_>>());
    assert_eq!(f.directory.binds.load(Ordering::SeqCst), 12);
}

/// Runs the futures concurrently on this task and returns their outputs in order.
async fn futures_join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (fut, slot) in set.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[tokio::test]
async fn the_portal_enrolls_with_the_configured_algorithm_and_period() {
    let configured = TotpParams { algorithm: crate::otp::Algorithm::Sha256, digits: 8, period: 60 };
    let f = fixture_with(FakeDirectory::default(), RecordingGateway::default(), AuthSettings { totp: configured, ..settings() }).await;
    let enrollment = f.auth.portal_enroll("bob", "phone", "radmfa", 5, crate::clock::now()).await.unwrap();
    let uri = enrollment.uri.expose();
    assert!(uri.contains("algorithm=SHA256") && uri.contains("period=60") && uri.contains("digits=8"), "{uri}");
    let stored = f.store.tokens("bob").await.unwrap();
    assert_eq!(stored[0].params, configured, "what the app is told is what the server checks");
    let code = configured.code_at_step(enrollment.secret.expose(), configured.step_at(crate::clock::now() as u64));
    let from = std::net::IpAddr::from([127, 0, 0, 1]);
    let now = crate::clock::now() as u64;
    f.auth.portal_confirm("bob", &enrollment, code.expose(), Duration::from_secs(300), 5, from, now as i64).await.unwrap();
    // Over RADIUS, codes of a later step: a SHA-1, 30 s one (of the configured length, so it is
    // checked as a code) is refused, the configured SHA-256, 60 s one accepted.
    let nas = client(Mode::Append, NoToken::Reject);
    let app_default = TotpParams { digits: 8, ..TotpParams::default() };
    let wrong = app_default.code_at_step(enrollment.secret.expose(), app_default.step_at(now) + 2);
    let d = f.decide(&nas, "bob", &with_code("pw", wrong.expose()), None).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Reject, Reason::WrongCode), "a SHA-1/30 s code is not this token's");
    let right = configured.code_at_step(enrollment.secret.expose(), configured.step_at(now) + 1);
    let d = f.decide(&nas, "bob", &with_code("pw", right.expose()), None).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Accept, Reason::Authenticated), "a SHA-256/60 s code of the next step is");
}

/// The fixture over the in-memory store (the backend every store test runs against too).
async fn memory_fixture() -> (Authenticator, Arc<crate::store::memory::MemoryStore>) {
    let keys = Arc::new(Keys::fixed(KeyRing::generate("k1")));
    let store = Arc::new(crate::store::memory::MemoryStore::in_memory(Arc::clone(&keys)));
    let services =
        Services { directory: Arc::new(FakeDirectory::default()), store: store.clone(), sms: Arc::new(RecordingGateway::default()), keys };
    (Authenticator::new(services, settings()), store)
}

fn helpdesk() -> helpdesk::Actor {
    helpdesk::Actor { name: "hanna".into(), via: "helpdesk", from: Some("192.0.2.7".into()) }
}

#[tokio::test]
async fn a_temporary_code_logs_in_appended_or_at_the_challenge_for_its_uses_only() {
    let (auth, store) = memory_fixture().await;
    let now = crate::clock::now();
    let append = client(Mode::Append, NoToken::Reject);
    // bob has no token: without a code he is refused; with one, asked for it or it is appended.
    assert_eq!(auth.decide(&request(&append, "bob", b"pw", None)).await.reason, Reason::NoToken);
    let issued = auth.issue_temporary_code(&helpdesk(), "bob", Duration::from_secs(3600), 2, now).await.unwrap();
    let code = issued.code.expose().clone();
    assert_eq!(code.len(), 8);
    let d = auth.decide(&request(&append, "bob", with_code("pw", "00000000").as_slice(), None)).await;
    let wrong = if code == "00000000" { Reason::TemporaryCode } else { Reason::WrongCode };
    assert_eq!(d.reason, wrong);
    let d = auth.decide(&request(&append, "BOB", &with_code("pw", &code), None)).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Accept, Reason::TemporaryCode));
    let challenge = client(Mode::Challenge, NoToken::Reject);
    let first = auth.decide(&request(&challenge, "bob", b"pw", None)).await;
    assert_eq!(first.reason, Reason::TotpChallenge, "a temporary code is asked for as an app's code");
    let d = auth.decide(&request(&challenge, "bob", code.as_bytes(), first.into_state())).await;
    assert_eq!((d.outcome(), d.reason), (Outcome::Accept, Reason::TemporaryCode));
    // Two uses, both taken.
    let d = auth.decide(&request(&append, "bob", &with_code("pw", &code), None)).await;
    assert_eq!(d.outcome(), Outcome::Reject);
    assert!(store.list_temporary_codes(Some("bob"), now).await.unwrap().is_empty());
    // A revoked code no longer logs in; an expired one neither.
    let issued = auth.issue_temporary_code(&helpdesk(), "bob", Duration::from_secs(3600), 5, now).await.unwrap();
    assert_eq!(auth.revoke_temporary_codes(&helpdesk(), "bob", now).await.unwrap(), 1);
    let d = auth.decide(&request(&append, "bob", &with_code("pw", issued.code.expose()), None)).await;
    assert_eq!(d.outcome(), Outcome::Reject);
    let issued = auth.issue_temporary_code(&helpdesk(), "bob", Duration::from_secs(60), 5, now - 120).await.unwrap();
    let d = auth.decide(&request(&append, "bob", &with_code("pw", issued.code.expose()), None)).await;
    assert_eq!(d.outcome(), Outcome::Reject, "expired");
}

#[tokio::test]
async fn a_temporary_code_works_beside_an_app_and_a_password_that_ends_in_digits() {
    let (auth, store) = memory_fixture().await;
    let now = crate::clock::now();
    let secret = b"alice-seed-0123456789".to_vec();
    let token = NewToken {
        username: "alice".into(),
        name: "phone".into(),
        params: TotpParams::default(),
        secret: Secret::new(secret.clone()),
        confirmed: true,
        created_at: now,
    };
    store.add_token(token).await.unwrap();
    let issued = auth.issue_temporary_code(&helpdesk(), "alice", Duration::from_secs(3600), 3, now).await.unwrap();
    let append = client(Mode::Append, NoToken::Reject);
    let d = auth.decide(&request(&append, "alice", &with_code("pw", issued.code.expose()), None)).await;
    assert_eq!(d.reason, Reason::TemporaryCode);
    let p = TotpParams::default();
    let code = p.code_at_step(&secret, p.step_at(now as u64)).expose().clone();
    let d = auth.decide(&request(&append, "alice", &with_code("pw", &code), None)).await;
    assert_eq!(d.reason, Reason::Authenticated, "the app's code still splits at six digits");
    // The wrong password with the right temporary code: refused at the password, code kept.
    let d = auth.decide(&request(&append, "alice", &with_code("pw12", issued.code.expose()), None)).await;
    assert_eq!(d.reason, Reason::Directory(Denial::WrongPassword));
    assert_eq!(store.list_temporary_codes(Some("alice"), now).await.unwrap()[0].uses_left, 2);
}

#[tokio::test]
async fn decisions_and_actions_land_in_the_audit_trail_with_their_actor() {
    let (auth, store) = memory_fixture().await;
    let now = crate::clock::now();
    let append = client(Mode::Append, NoToken::Reject);
    for _ in 0..5 {
        auth.decide(&request(&append, "alice", b"pw", None)).await;
    }
    auth.decide(&request(&append, "nobody", b"pw", None)).await;
    auth.flush_audit().await.unwrap();
    let events = store.events("alice", 10).await.unwrap();
    assert_eq!(events.len(), 5);
    assert!(events.iter().all(|e| e.action == "radius" && e.client == "nas" && e.result == "reject" && e.actor.is_none()));
    assert!(store.events("nobody", 10).await.unwrap().is_empty(), "names that are no account are not kept");
    // Locked after wrong codes; the view shows it; an unlock clears it, and says who did it.
    for _ in 0..5 {
        auth.decide(&request(&append, "bob", b"pw", None)).await;
    }
    let token = NewToken {
        username: "alice".into(),
        name: "phone".into(),
        params: TotpParams::default(),
        secret: Secret::new(vec![7; 20]),
        confirmed: true,
        created_at: now,
    };
    let token = store.add_token(token).await.unwrap();
    for _ in 0..6 {
        auth.decide(&request(&append, "alice", b"pw000000", None)).await;
    }
    let view = auth.user_view("ALICE", &[], crate::clock::now()).await.unwrap();
    assert_eq!(view.account.id, "alice");
    assert!(view.code_lock.locked_until.is_some());
    assert_eq!(view.tokens.len(), 1);
    assert_eq!(view.events[0].reason, "second_factor_locked", "newest first: {:?}", view.events[0]);
    assert!(view.events.iter().any(|e| e.reason == "wrong_code"));
    assert!(auth.unlock_user(&helpdesk(), "alice", now).await.unwrap());
    assert!(auth.remove_user_token(&helpdesk(), "alice", token, now).await.unwrap());
    assert!(!auth.remove_user_token(&helpdesk(), "alice", token, now).await.unwrap(), "gone");
    let view = auth.user_view("alice", &[], crate::clock::now()).await.unwrap();
    assert!(view.code_lock.locked_until.is_none() && view.tokens.is_empty());
    let actions: Vec<_> = view.events.iter().filter(|e| e.actor.is_some()).collect();
    assert_eq!(actions.len(), 2);
    assert!(
        actions.iter().all(|e| e.actor.as_deref() == Some("hanna") && e.client == "helpdesk" && e.from.as_deref() == Some("192.0.2.7"))
    );
    assert_eq!(actions[0].action, "remove_token");
    assert!(actions[0].detail.as_deref().unwrap().contains("\"phone\""));
    assert_eq!(actions[1].action, "unlock");
}

#[tokio::test]
async fn temporary_codes_are_issued_within_the_limits_only_and_one_at_a_time() {
    let (auth, store) = memory_fixture().await;
    let now = crate::clock::now();
    let too_long = auth.issue_temporary_code(&helpdesk(), "bob", Duration::from_secs(4 * 86_400), 1, now).await;
    assert!(matches!(too_long, Err(helpdesk::HelpdeskError::Invalid(_))));
    assert!(matches!(
        auth.issue_temporary_code(&helpdesk(), "bob", Duration::from_secs(60), 0, now).await,
        Err(helpdesk::HelpdeskError::Invalid(_))
    ));
    assert!(matches!(
        auth.issue_temporary_code(&helpdesk(), "bob", Duration::from_secs(60), 21, now).await,
        Err(helpdesk::HelpdeskError::Invalid(_))
    ));
    let first = auth.issue_temporary_code(&helpdesk(), "bob", Duration::from_secs(3 * 86_400), 20, now).await.unwrap();
    let second = auth.issue_temporary_code(&helpdesk(), "bob", Duration::from_secs(600), 1, now).await.unwrap();
    let live = store.list_temporary_codes(Some("bob"), now).await.unwrap();
    assert_eq!(live.len(), 1, "a new code replaces the old");
    assert_eq!((live[0].id, live[0].uses_left, live[0].issued_by.as_str()), (second.id, 1, "hanna"));
    assert_ne!(first.id, second.id);
    auth.flush_audit().await.unwrap();
    let events = store.events("bob", 10).await.unwrap();
    let issued: Vec<_> = events.iter().filter(|e| e.action == "issue_temporary_code").collect();
    assert_eq!(issued.len(), 2);
    for e in &issued {
        let detail = e.detail.as_deref().unwrap();
        assert!(!detail.contains(first.code.expose()) && !detail.contains(second.code.expose()), "no code in the trail: {detail}");
    }
    assert!(matches!(auth.user_view("nobody", &[], now).await, Err(helpdesk::HelpdeskError::NoSuchUser)));
    assert!(matches!(auth.find_users("a").await, Err(helpdesk::HelpdeskError::Invalid(_))));
}

#[tokio::test]
async fn a_copy_of_a_request_that_used_a_temporary_code_takes_no_second_use() {
    let (auth, store) = memory_fixture().await;
    // One node on its own database: no Accept kept for other nodes.
    auth.reload(
        AuthSettings { retry_window: Duration::ZERO, ..settings() },
        Arc::new(FakeDirectory::default()),
        Arc::new(RecordingGateway::default()),
    );
    let now = crate::clock::now();
    let issued = auth.issue_temporary_code(&helpdesk(), "bob", Duration::from_secs(3600), 5, now).await.unwrap();
    let append = client(Mode::Append, NoToken::Reject);
    let first = request(&append, "bob", &with_code("pw", issued.code.expose()), None);
    assert_eq!(auth.decide(&first).await.reason, Reason::TemporaryCode);
    // The same datagram again (from another port of the NAS, or replayed): one node, no kept
    // Accept, so refused — and no use taken, no failure counted.
    let copy = Request { arrived: std::time::Instant::now(), ..request(&append, "bob", &with_code("pw", issued.code.expose()), None) };
    let copy = Request { authenticator: first.authenticator, ..copy };
    assert_eq!(auth.decide(&copy).await.reason, Reason::CodeReplayed);
    assert_eq!(store.list_temporary_codes(Some("bob"), now).await.unwrap()[0].uses_left, 4);
    assert_eq!(store.lockout_state("bob", Factor::Code, now, settings().lockout).await.unwrap().failures, 0);
    // Where Accepts are kept for other nodes, the copy gets the same Accept.
    auth.reload(
        AuthSettings { retry_window: Duration::from_secs(30), ..settings() },
        Arc::new(FakeDirectory::default()),
        Arc::new(RecordingGateway::default()),
    );
    let kept = request(&append, "bob", &with_code("pw", issued.code.expose()), None);
    assert_eq!(auth.decide(&kept).await.reason, Reason::TemporaryCode);
    assert_eq!(auth.decide(&kept).await.reason, Reason::RetryOfAccepted);
    assert_eq!(store.list_temporary_codes(Some("bob"), now).await.unwrap()[0].uses_left, 3);
}

#[tokio::test]
async fn a_password_ending_in_eight_digits_is_challenged_not_cut_where_the_field_may_be_the_password() {
    let (auth, store) = memory_fixture().await;
    let now = crate::clock::now();
    // bob's password is "pw"; a field "pw12345678" that is no code of his stays whole in auto
    // mode (a wrong password), and is cut in append mode (where a code must follow).
    let issued = auth.issue_temporary_code(&helpdesk(), "bob", Duration::from_secs(3600), 5, now).await.unwrap();
    let wrong = if issued.code.expose() == "12345678" { "87654321" } else { "12345678" };
    let auto = client(Mode::Auto, NoToken::Reject);
    assert_eq!(auth.decide(&request(&auto, "bob", b"pw", None)).await.reason, Reason::TotpChallenge);
    assert_eq!(auth.decide(&request(&auto, "bob", &with_code("pw", wrong), None)).await.reason, Reason::Directory(Denial::WrongPassword));
    assert_eq!(auth.decide(&request(&auto, "bob", &with_code("pw", issued.code.expose()), None)).await.reason, Reason::TemporaryCode);
    let append = client(Mode::Append, NoToken::Reject);
    assert_eq!(auth.decide(&request(&append, "bob", &with_code("pw", wrong), None)).await.reason, Reason::WrongCode, "counted as a code");
    assert_eq!(store.lockout_state("bob", Factor::Code, now, settings().lockout).await.unwrap().failures, 1);
}

#[tokio::test]
async fn a_disabled_account_gets_no_temporary_code_and_replacing_one_ends_its_sessions() {
    let (auth, store) = memory_fixture().await;
    let now = crate::clock::now();
    auth.issue_temporary_code(&helpdesk(), "bob", Duration::from_secs(3600), 1, now).await.unwrap();
    let caps = crate::store::SessionCaps { per_account: 10, total: 100 };
    let session = |key: u8| crate::store::NewSession {
        key: [key; 32],
        account: "bob".into(),
        ends_at: now + 600,
        expires_at: now + 600,
        data: Secret::new(vec![1]),
    };
    store.create_session(session(1), caps).await.unwrap();
    let again = auth.issue_temporary_code(&helpdesk(), "bob", Duration::from_secs(59), 1, now).await;
    assert!(matches!(again, Err(helpdesk::HelpdeskError::Invalid(_))), "under a minute");
    auth.issue_temporary_code(&helpdesk(), "bob", Duration::from_secs(3600), 1, now).await.unwrap();
    assert_eq!(store.session_count().await.unwrap(), 0, "the replaced code's session ended");
    store.create_session(session(2), caps).await.unwrap();
    assert_eq!(auth.revoke_temporary_codes(&helpdesk(), "bob", now).await.unwrap(), 1);
    assert_eq!(store.session_count().await.unwrap(), 0, "and a revoked one's");
}
