//! The flows with in-memory stand-ins: a directory with two users that counts its binds, an
//! in-memory SQLite store, and a gateway that records what it was asked to send.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use super::*;
use crate::directory::DirectoryError;
use crate::otp::TotpParams;
use crate::sms::SmsError;
use crate::store::NewToken;
use crate::store::sqlite::SqliteStore;

/// `alice` / `pw` with a mobile number; `bob` / `pw` without one.
#[derive(Default)]
pub(crate) struct FakeDirectory {
    pub(crate) binds: AtomicUsize,
    pub(crate) down: bool,
}

#[async_trait]
impl Directory for FakeDirectory {
    async fn check_password(&self, username: &str, password: &[u8]) -> Result<PasswordCheck, DirectoryError> {
        self.binds.fetch_add(1, Ordering::SeqCst);
        if self.down {
            return Err(DirectoryError::Unavailable("down".into()));
        }
        Ok(match (username, password) {
            ("alice" | "bob", b"pw") => PasswordCheck::Valid(self.profile(username).await?.unwrap_or_default()),
            ("alice" | "bob", _) => PasswordCheck::Denied(Denial::WrongPassword),
            _ => PasswordCheck::Denied(Denial::NoSuchUser),
        })
    }

    async fn profile(&self, username: &str) -> Result<Option<UserProfile>, DirectoryError> {
        Ok(match username {
            "alice" => Some(UserProfile {
                username: "alice".into(),
                mobile: Some("070-123 45 67".into()),
                groups: vec!["VPN-Users".into()],
                ..Default::default()
            }),
            "bob" => Some(UserProfile { username: "bob".into(), ..Default::default() }),
            _ => None,
        })
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
        totp_digits: 6,
        totp_window: 1,
        lockout: LockoutPolicy { max_failures: 5, duration: Duration::from_secs(300), max_duration: Duration::from_secs(3600) },
        challenge_ttl: Duration::from_secs(120),
        sms_validity: Duration::from_secs(300),
        sms_tries: 3,
        sms_limits: SmsLimits { per_user: 3, per_user_window: Duration::from_secs(900), global_per_minute: 100 },
        default_country_code: "46".into(),
        messages: Messages::for_language(messages::Language::En),
        usernames: UsernameRules { domains: vec!["EXAMPLE".into()], realms: vec![] },
    }
}

async fn fixture_with(directory: FakeDirectory, sms: RecordingGateway, settings: AuthSettings) -> Fixture {
    let keys = Arc::new(KeyRing::generate("k1"));
    let store = Arc::new(SqliteStore::in_memory(Arc::clone(&keys)).unwrap());
    let secret = b"alice-seed-0123456789".to_vec();
    store
        .add_token(NewToken {
            username: "alice".into(),
            name: "phone".into(),
            params: TotpParams::default(),
            secret: Secret::new(secret.clone()),
            confirmed: true,
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
        nas_ip: None,
        nas_identifier: None,
        calling_station: None,
    }
}

impl Fixture {
    /// The code of the step `offset` steps from now.
    fn code(&self, offset: i64) -> String {
        let p = TotpParams::default();
        let step = (p.step_at(crate::store::now() as u64) as i64 + offset) as u64;
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
    assert_eq!((d.outcome, d.reason), (Outcome::Accept, Reason::Authenticated));
    let d = f.decide(&nas, "alice", &with_code("pw", &code), None).await;
    assert_eq!((d.outcome, d.reason), (Outcome::Reject, Reason::CodeReplayed), "the same code twice");
    let d = f.decide(&nas, "alice", &with_code("pw", &f.code(-1)), None).await;
    assert_eq!(d.reason, Reason::CodeReplayed, "an earlier step after a later one");
    let d = f.decide(&nas, "alice", &with_code("pw", &f.code(1)), None).await;
    assert_eq!(d.outcome, Outcome::Accept, "the next step, within the window");
    let d = f.decide(&nas, "alice", &with_code("nope", &f.code(0)), None).await;
    assert_eq!(d.reason, Reason::Directory(Denial::WrongPassword));
    assert_eq!(d.reply_message.as_deref(), Some("Authentication failed"));
    let d = f.decide(&nas, "alice", b"pw", None).await;
    assert_eq!(d.reason, Reason::MissingCode, "append mode needs the code");
    assert_eq!(f.directory.binds.load(Ordering::SeqCst), 5, "one bind per request, none without a code");
}

#[tokio::test]
async fn challenge_round_trip_and_state_rules() {
    let f = fixture().await;
    let nas = client(Mode::Challenge, NoToken::Reject);
    let first = f.decide(&nas, "EXAMPLE\\Alice", b"pw", None).await;
    assert_eq!((first.outcome, first.reason), (Outcome::Challenge, Reason::TotpChallenge));
    assert_eq!(first.reply_message.as_deref(), Some("Enter the code from your authenticator app, or type sms"));
    let state = first.state.clone().unwrap();
    // The State belongs to alice on this client: not to bob, not to another NAS.
    let d = f.decide(&nas, "bob", f.code(0).as_bytes(), Some(state.clone())).await;
    assert_eq!(d.reason, Reason::StateMismatch);
    let other_nas = Arc::new(ClientPolicy { mode: Mode::Challenge, ..ClientPolicy::named("asa") });
    let d = f.decide(&other_nas, "alice", f.code(0).as_bytes(), Some(state.clone())).await;
    assert_eq!(d.reason, Reason::StateMismatch);
    let d = f.decide(&nas, "alice", f.code(0).as_bytes(), Some(state.clone())).await;
    assert_eq!((d.outcome, d.reason), (Outcome::Accept, Reason::Authenticated));
    assert_eq!(d.attributes, Vec::<Attribute>::new());
    let d = f.decide(&nas, "alice", f.code(1).as_bytes(), Some(state)).await;
    assert_eq!(d.reason, Reason::StateReused, "a State works once");
    let d = f.decide(&nas, "alice", b"x", Some(b"forged state".to_vec())).await;
    assert_eq!(d.reason, Reason::InvalidState);
    assert_eq!(f.directory.binds.load(Ordering::SeqCst), 1, "only the first step binds");
}

#[tokio::test]
async fn an_expired_state_is_rejected() {
    let f =
        fixture_with(FakeDirectory::default(), RecordingGateway::default(), AuthSettings { challenge_ttl: Duration::ZERO, ..settings() })
            .await;
    let nas = client(Mode::Challenge, NoToken::Reject);
    let state = f.decide(&nas, "alice", b"pw", None).await.state.unwrap();
    let d = f.decide(&nas, "alice", f.code(0).as_bytes(), Some(state)).await;
    assert_eq!(d.reason, Reason::StateExpired);
}

#[tokio::test]
async fn sms_at_the_challenge_sends_one_code_that_logs_in() {
    let f = fixture().await;
    let nas = client(Mode::Challenge, NoToken::Reject);
    let state = f.decide(&nas, "alice", b"pw", None).await.state.unwrap();
    let d = f.decide(&nas, "alice", b"SMS", Some(state)).await;
    assert_eq!((d.outcome, d.reason), (Outcome::Challenge, Reason::SmsSent));
    assert_eq!(d.reply_message.as_deref(), Some("Enter the code sent to +46 70*** **67"));
    assert_eq!(f.sms.count(), 1);
    assert_eq!(f.sms.sent.lock().unwrap()[0].0, "+46701234567", "E.164 from the directory's 070-123 45 67");
    let code = f.sms.last_code();
    assert_eq!(code.len(), 6);
    let d = f.decide(&nas, "alice", code.as_bytes(), d.state).await;
    assert_eq!((d.outcome, d.reason), (Outcome::Accept, Reason::Authenticated));
}

#[tokio::test]
async fn no_token_means_sms_and_wrong_sms_codes_get_three_tries() {
    let f = fixture().await;
    let nas = client(Mode::Auto, NoToken::Sms);
    f.store.remove_token("alice", 1).await.unwrap();
    let d = f.decide(&nas, "alice", b"pw", None).await;
    assert_eq!(d.reason, Reason::SmsSent);
    let d = f.decide(&nas, "alice", b"000000x", d.state).await;
    assert_eq!((d.outcome, d.reason), (Outcome::Challenge, Reason::SmsRetry));
    assert_eq!(d.reply_message.as_deref(), Some("Wrong code, try again"));
    let d = f.decide(&nas, "alice", b"000000x", d.state).await;
    assert_eq!(d.reason, Reason::SmsRetry);
    let d = f.decide(&nas, "alice", f.sms.last_code().as_bytes(), d.state).await;
    assert_eq!(d.outcome, Outcome::Accept, "the third try may still be right");

    let d = f.decide(&nas, "alice", b"pw", None).await;
    let mut state = d.state;
    for _ in 0..2 {
        state = f.decide(&nas, "alice", b"wrong", state).await.state;
    }
    let d = f.decide(&nas, "alice", f.sms.last_code().as_bytes(), None).await;
    assert_ne!(d.outcome, Outcome::Accept, "a code is no password");
    let d = f.decide(&nas, "alice", b"wrong", state).await;
    assert_eq!((d.outcome, d.reason), (Outcome::Reject, Reason::WrongCode), "three wrong tries end it");
}

#[tokio::test]
async fn users_without_a_mobile_or_over_the_limit_are_told_so() {
    let f = fixture().await;
    let nas = client(Mode::Auto, NoToken::Sms);
    let d = f.decide(&nas, "bob", b"pw", None).await;
    assert_eq!((d.outcome, d.reason), (Outcome::Reject, Reason::NoMobile));
    assert!(d.reply_message.unwrap().contains("help desk"));
    f.store.remove_token("alice", 1).await.unwrap();
    for _ in 0..3 {
        assert_eq!(f.decide(&nas, "alice", b"pw", None).await.reason, Reason::SmsSent);
    }
    assert_eq!(f.decide(&nas, "alice", b"pw", None).await.reason, Reason::SmsRateLimited);
    assert_eq!(f.sms.count(), 3);
    let d = f.decide(&client(Mode::Auto, NoToken::Reject), "bob", b"pw", None).await;
    assert_eq!(d.reason, Reason::NoToken);
    let d = f.decide(&client(Mode::Auto, NoToken::PasswordOnly), "bob", b"pw", None).await;
    assert_eq!((d.outcome, d.reason), (Outcome::Accept, Reason::PasswordOnly));
}

#[tokio::test]
async fn a_failing_gateway_rejects_with_a_clear_message() {
    let f = fixture_with(FakeDirectory::default(), RecordingGateway { broken: true, ..Default::default() }, settings()).await;
    f.store.remove_token("alice", 1).await.unwrap();
    let d = f.decide(&client(Mode::Auto, NoToken::Sms), "alice", b"pw", None).await;
    assert_eq!((d.outcome, d.reason), (Outcome::Reject, Reason::SmsFailed));
    assert_eq!(d.reply_message.as_deref(), Some("The SMS could not be sent; try again later"));
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
    assert_eq!((d.outcome, d.reason), (Outcome::Reject, Reason::SecondFactorLocked), "even the right code");
    assert_eq!(d.reply_message.as_deref(), Some("Authentication failed"), "the lock does not reveal itself");
    assert_eq!(f.directory.binds.load(Ordering::SeqCst), binds, "no bind while locked");
    f.store.unlock("alice").await.unwrap();
    assert_eq!(f.decide(&nas, "alice", &with_code("pw", &f.code(0)), None).await.outcome, Outcome::Accept);
}

#[tokio::test]
async fn auto_appends_only_for_token_users_with_trailing_digits() {
    let f = fixture().await;
    let nas = client(Mode::Auto, NoToken::Sms);
    assert_eq!(f.decide(&nas, "alice", &with_code("pw", &f.code(0)), None).await.outcome, Outcome::Accept);
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
    let f = fixture_with(FakeDirectory { down: true, ..Default::default() }, RecordingGateway::default(), settings()).await;
    let d = f.decide(&client(Mode::Auto, NoToken::Sms), "alice", b"pw", None).await;
    assert_eq!((d.outcome, d.reason), (Outcome::Reject, Reason::DirectoryUnavailable));
}

#[test]
fn printable_escapes_control_characters_only() {
    assert_eq!(printable("alice"), "alice");
    assert_eq!(printable("å\"ä"), "å\"ä");
    assert_eq!(printable("a\nINFO forged"), "a\\nINFO forged");
    assert_eq!(printable("\u{1b}[31m"), "\\u{1b}[31m");
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
        })
        .await
        .unwrap();
    let p = TotpParams::default();
    let step = p.step_at(crate::store::now() as u64);
    let nas = client(Mode::Append, NoToken::Reject);
    let spare_code = p.code_at_step(&spare, step);
    assert_eq!(
        f.decide(&nas, "alice", &with_code("pw", spare_code.expose()), None).await.outcome,
        Outcome::Accept,
        "the spare phone's code"
    );
    assert_eq!(f.decide(&nas, "alice", &with_code("pw", &f.code(0)), None).await.outcome, Outcome::Accept, "and the main phone's");
    let pending = p.code_at_step(&unconfirmed, step);
    assert_eq!(
        f.decide(&nas, "alice", &with_code("pw", pending.expose()), None).await.reason,
        Reason::WrongCode,
        "never an unconfirmed token"
    );
}
