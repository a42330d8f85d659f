//! The HELPDESK tab's handlers, over a users file and the in-memory store (which keeps the audit
//! trail and temporary codes): the role is the directory's word only, and everyone else gets 403
//! everywhere; every form needs the session's CSRF token; what is shown is escaped; searches are
//! limited; and unlock, remove, issue and revoke do what they say, audited with their actor.
//!
//! The users (password `pw`, all of example.test): hanna and henrik are in the helpdesk group,
//! dave and carol are not; eve's first name is a script; olle is disabled; "åsa öberg" needs
//! percent-encoding in a URL.

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use super::*;
use crate::auth::helpdesk::Actor;
use crate::directory::file::UsersFile;
use crate::directory::{Account, AccountStatus, Directory, DirectoryError, LoginName, PasswordCheck};
use crate::store::memory::MemoryStore;
use crate::store::{AuditEvent, Factor, NewToken};

fn cheap_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(1024, 1, 1, None).unwrap();
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

fn users_toml() -> String {
    let users = [
        r#"username = "hanna"
given_name = "Hanna"
surname = "Helpdesk"
email = "hanna@example.test"
mobile = "+46701000001"
groups = ["Helpdesk", "VPN-Users"]"#,
        r#"username = "henrik"
given_name = "Henrik"
email = "henrik@example.test"
mobile = "+46701000002"
groups = ["HELPDESK"]"#,
        r#"username = "dave"
given_name = "Dave"
email = "dave@example.test"
mobile = "+46701000003"
groups = ["VPN-Users"]"#,
        r#"username = "carol"
given_name = "Carol"
surname = "Example"
email = "carol@example.test"
mobile = "+46701000004"
groups = ["VPN-Users"]"#,
        r#"username = "eve"
given_name = "<script>alert(1)</script>"
email = "eve@example.test""#,
        r#"username = "olle"
given_name = "Olle"
disabled = true"#,
        r#"username = "åsa öberg"
given_name = "Åsa"
surname = "Öberg""#,
    ];
    let hash = cheap_hash("pw");
    users.iter().map(|u| format!("[[user]]\n{u}\npassword_hash = \"{hash}\"\n\n")).collect()
}

/// The users file, with a switch for hanna leaving the helpdesk group and one for the directory
/// failing to answer group questions.
struct Switchable {
    users: UsersFile,
    hanna_left: AtomicBool,
    /// hanna's account disabled in the directory (offboarded), her session still open.
    hanna_disabled: AtomicBool,
    down: AtomicBool,
}

#[async_trait]
impl Directory for Switchable {
    async fn find(&self, login: &LoginName) -> Result<Option<Account>, DirectoryError> {
        self.users.find(login).await
    }

    async fn check_password(&self, account: &Account, password: &[u8], with_groups: bool) -> Result<PasswordCheck, DirectoryError> {
        self.users.check_password(account, password, with_groups).await
    }

    async fn groups(&self, account: &Account) -> Result<Vec<String>, DirectoryError> {
        self.users.groups(account).await
    }

    async fn search(&self, text: &str, limit: usize) -> Result<Vec<Account>, DirectoryError> {
        self.users.search(text, limit).await
    }

    async fn member_of(&self, account: &Account, groups: &[String]) -> Result<Vec<String>, DirectoryError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(DirectoryError::Unavailable("down".into()));
        }
        if account.id == "hanna" && self.hanna_left.load(Ordering::SeqCst) {
            return Ok(Vec::new());
        }
        self.users.member_of(account, groups).await
    }

    async fn account_status(&self, account: &Account) -> Result<AccountStatus, DirectoryError> {
        if account.id == "hanna" && self.hanna_disabled.load(Ordering::SeqCst) {
            return Ok(AccountStatus { disabled: true, ..AccountStatus::default() });
        }
        self.users.account_status(account).await
    }
}

struct Desk {
    b: Browser,
    store: Arc<MemoryStore>,
    directory: Arc<Switchable>,
}

fn helpdesk_settings() -> PortalSettings {
    PortalSettings { helpdesk_groups: vec!["Helpdesk".into()], required_groups: vec!["VPN-Users".into()], ..portal_settings() }
}

fn desk_with(settings: PortalSettings) -> Desk {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    std::fs::write(&path, users_toml()).unwrap();
    let directory = Arc::new(Switchable {
        users: UsersFile::load(&path).unwrap(),
        hanna_left: AtomicBool::new(false),
        hanna_disabled: AtomicBool::new(false),
        down: AtomicBool::new(false),
    });
    let keys = Arc::new(Keys::fixed(KeyRing::generate("k1")));
    let store = Arc::new(MemoryStore::in_memory(Arc::clone(&keys)));
    let b = browser_over(settings, directory.clone(), store.clone(), keys);
    Desk { b, store, directory }
}

fn desk() -> Desk {
    desk_with(helpdesk_settings())
}

impl Browser {
    /// Signs `user` in with the password and the SMS code.
    async fn sign_in_as(&mut self, user: &str) {
        let page = self.try_password(user, "pw").await;
        assert_eq!(page.location.as_deref(), Some("/otp"), "{user}: {}", page.body);
        let otp = self.get("/otp").await;
        let code = self.sms.last_code();
        let page = self.post("/otp", &[("csrf", &otp.csrf()), ("code", &code)]).await;
        assert_eq!(page.location.as_deref(), Some("/general"), "{user}: {}", page.body);
    }

    /// The session's CSRF token, from a page with a form (the sign-out button).
    async fn csrf(&mut self) -> String {
        self.get("/general").await.csrf()
    }
}

fn search_path(text: &str) -> String {
    format!("/helpdesk?q={}", form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>())
}

fn now() -> crate::store::UnixTime {
    crate::clock::now()
}

/// Gives carol a token and locks her second factor with five wrong codes over RADIUS. Returns
/// the token's seed.
async fn lock_carol(d: &Desk) -> Vec<u8> {
    let seed = b"carol-seed-0123456789".to_vec();
    let token = NewToken {
        username: "carol".into(),
        name: "Phone of Carol".into(),
        params: TotpParams::default(),
        secret: Secret::new(seed.clone()),
        confirmed: true,
        created_at: now(),
    };
    d.store.add_token(token).await.unwrap();
    let right: Vec<String> = (-1..=1).map(|offset| code(&seed, offset)).collect();
    let wrong = (0..10).map(|n| format!("{n:06}")).find(|c| !right.contains(c)).unwrap();
    for _ in 0..5 {
        assert_eq!(d.b.radius_login("carol", &format!("pw{wrong}")).await, Outcome::Reject);
    }
    assert!(code_lock(d, "carol").await.locked_until.is_some(), "five wrong codes lock");
    seed
}

async fn code_lock(d: &Desk, user: &str) -> crate::store::LockoutState {
    d.store.lockout_state(user, Factor::Code, now(), crate::auth::tests::settings().lockout).await.unwrap()
}

/// What the help desk's actions could change of carol's: her lock, her tokens, her temporary
/// codes and her events.
async fn carol_as_is(d: &Desk) -> (Option<i64>, u32, usize, Vec<i64>, usize) {
    d.b.auth.flush_audit().await.unwrap();
    let lock = code_lock(d, "carol").await;
    let tokens = d.store.list_tokens(Some("carol")).await.unwrap().len();
    let codes = d.store.list_temporary_codes(Some("carol"), now()).await.unwrap().into_iter().map(|c| c.id).collect();
    let events = d.store.events("carol", 1000).await.unwrap().len();
    (lock.locked_until, lock.failures, tokens, codes, events)
}

async fn carol_token(d: &Desk) -> i64 {
    d.store.list_tokens(Some("carol")).await.unwrap()[0].id
}

/// Every helpdesk POST, for carol, with the fields a real form sends besides its token.
fn helpdesk_posts(token: i64) -> Vec<(String, Vec<(&'static str, &'static str)>)> {
    vec![
        ("/helpdesk/users/carol/unlock".into(), vec![]),
        (format!("/helpdesk/users/carol/tokens/{token}/remove"), vec![]),
        ("/helpdesk/users/carol/temporary-code".into(), vec![("validity", "3600"), ("uses", "1")]),
        ("/helpdesk/users/carol/temporary-code/revoke".into(), vec![]),
    ]
}

#[tokio::test]
async fn only_helpdesk_members_get_the_tab_and_everyone_else_gets_403_on_every_helpdesk_url() {
    let d = desk();
    lock_carol(&d).await;
    let token = carol_token(&d).await;
    d.b.auth
        .issue_temporary_code(&Actor { name: "setup".into(), via: "cli", from: None }, "carol", Duration::from_secs(3600), 2, now())
        .await
        .unwrap();
    let before = carol_as_is(&d).await;

    // Not signed in: sent to sign in, like any page.
    let mut visitor = d.b.another();
    assert_eq!(visitor.get("/helpdesk").await.location.as_deref(), Some("/signin"));
    assert_eq!(visitor.get("/helpdesk/users/carol").await.location.as_deref(), Some("/signin"));
    assert_eq!(visitor.post("/helpdesk/users/carol/unlock", &[("csrf", "x")]).await.location.as_deref(), Some("/signin"));

    let mut dave = d.b.another();
    dave.sign_in_as("dave").await;
    assert!(!dave.get("/general").await.body.contains("href=\"/helpdesk\""), "no HELPDESK tab");
    let gets = [
        "/helpdesk".to_owned(),
        "/helpdesk?q=carol".into(),
        "/helpdesk?q=carol&role=helpdesk&helpdesk=true&groups=Helpdesk".into(),
        "/helpdesk/users/carol".into(),
        "/helpdesk/users/carol?helpdesk=1".into(),
        "/helpdesk/users/nobody-at-all".into(),
        "/helpdesk/users/dave".into(),
        "/helpdesk/users/carol/unlock".into(),
        format!("/helpdesk/users/carol/tokens/{token}/remove"),
        "/helpdesk/users/carol/tokens/not-a-number/remove".into(),
        "/helpdesk/users/carol/temporary-code".into(),
        "/helpdesk/users/carol/temporary-code/revoke".into(),
        "/helpdesk/no-such-page".into(),
        "/helpdesk/users/%FF".into(),
    ];
    for path in &gets {
        let page = dave.get(path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "GET {path}");
        assert!(page.body.contains("for the help desk only") && !page.body.contains("carol@example.test"), "GET {path}: {}", page.body);
    }
    let csrf = dave.csrf().await;
    let forged = [("role", "helpdesk"), ("helpdesk", "true"), ("groups", "Helpdesk"), ("member_of", "Helpdesk")];
    let mut posts = helpdesk_posts(token);
    posts.push(("/helpdesk".into(), vec![]));
    posts.push(("/helpdesk/users/carol".into(), vec![]));
    posts.push(("/helpdesk/users/carol/unlock?helpdesk=true&role=helpdesk".into(), vec![]));
    for (path, fields) in &posts {
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend(fields.iter().copied());
        form.extend(forged);
        let page = dave.post(path, &form).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "POST {path}");
        assert!(page.body.contains("for the help desk only"), "POST {path}: {}", page.body);
    }
    assert_eq!(carol_as_is(&d).await, before, "nothing happened to carol");
    let events = d.store.events("carol", 1000).await.unwrap();
    assert!(events.iter().all(|e| e.actor.as_deref() != Some("dave")), "{events:?}");

    // A member: the tab, the pages; a helpdesk URL with no page is a 404 to members only.
    let mut hanna = d.b.another();
    hanna.sign_in_as("hanna").await;
    let general = hanna.get("/general").await.body;
    assert!(general.contains("<a href=\"/helpdesk\">Helpdesk</a>"), "{general}");
    let search = hanna.get("/helpdesk").await;
    assert_eq!(search.status, StatusCode::OK);
    assert!(search.body.contains("<a href=\"/helpdesk\" aria-current=\"page\">"), "{}", search.body);
    assert_eq!(hanna.get("/helpdesk/no-such-page").await.status, StatusCode::NOT_FOUND);
    let csrf = hanna.csrf().await;
    assert_eq!(hanna.post("/helpdesk", &[("csrf", &csrf)]).await.status, StatusCode::METHOD_NOT_ALLOWED);

    // No helpdesk groups configured: no help desk at all.
    let mut none = desk_with(PortalSettings { helpdesk_groups: Vec::new(), ..helpdesk_settings() });
    none.b.sign_in_as("hanna").await;
    assert!(!none.b.get("/general").await.body.contains("href=\"/helpdesk\""));
    assert_eq!(none.b.get("/helpdesk").await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_role_is_asked_of_the_directory_on_every_helpdesk_request() {
    let mut d = desk();
    d.b.sign_in_as("hanna").await;
    assert_eq!(d.b.get("/helpdesk").await.status, StatusCode::OK);
    d.directory.hanna_left.store(true, Ordering::SeqCst);
    let page = d.b.get("/helpdesk?q=carol").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "left the group: the role ends at the next request, whatever the session says");
    assert!(!page.body.contains("carol@example.test"));
    assert!(!d.b.get("/general").await.body.contains("href=\"/helpdesk\""), "and the tab goes");
    d.directory.hanna_left.store(false, Ordering::SeqCst);
    assert_eq!(d.b.get("/helpdesk").await.status, StatusCode::OK);
    assert!(d.b.get("/general").await.body.contains("href=\"/helpdesk\""), "back in the group, the tab is back");
    // Disabled in the directory (offboarded) with a session still open: no role either.
    d.directory.hanna_disabled.store(true, Ordering::SeqCst);
    let page = d.b.get("/helpdesk/users/carol").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "a disabled account holds no role");
    let csrf = d.b.csrf().await;
    let post = d.b.post("/helpdesk/users/carol/temporary-code", &[("csrf", &csrf), ("validity", "3600"), ("uses", "1")]).await;
    assert_eq!(post.status, StatusCode::FORBIDDEN);
    assert!(d.store.list_temporary_codes(Some("carol"), now()).await.unwrap().is_empty());
    d.directory.hanna_disabled.store(false, Ordering::SeqCst);
    d.directory.down.store(true, Ordering::SeqCst);
    let page = d.b.get("/helpdesk?q=carol").await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE, "the directory cannot say: neither access nor a 403");
    assert!(!page.body.contains("carol@example.test"));
}

#[tokio::test]
async fn every_helpdesk_form_needs_the_session_s_own_csrf_token() {
    let mut d = desk();
    lock_carol(&d).await;
    let token = carol_token(&d).await;
    d.b.auth
        .issue_temporary_code(&Actor { name: "setup".into(), via: "cli", from: None }, "carol", Duration::from_secs(3600), 2, now())
        .await
        .unwrap();
    let mut henrik = d.b.another();
    henrik.sign_in_as("henrik").await;
    let henriks = henrik.csrf().await;
    d.b.sign_in_as("hanna").await;
    let before = carol_as_is(&d).await;
    for (path, fields) in helpdesk_posts(token) {
        for csrf in [None, Some("forged"), Some(""), Some(henriks.as_str())] {
            let mut form: Vec<(&str, &str)> = fields.clone();
            if let Some(csrf) = csrf {
                form.push(("csrf", csrf));
            }
            let page = d.b.post(&path, &form).await;
            assert_eq!(page.status, StatusCode::FORBIDDEN, "POST {path} with {csrf:?}");
            assert!(page.body.contains("The form expired"), "POST {path} with {csrf:?}: {}", page.body);
        }
    }
    assert_eq!(carol_as_is(&d).await, before, "nothing happened to carol");
    // With the session's own token each one goes through.
    let csrf = d.b.csrf().await;
    for (path, fields) in helpdesk_posts(token) {
        let mut form = fields.clone();
        form.push(("csrf", csrf.as_str()));
        let page = d.b.post(&path, &form).await;
        assert!(page.status == StatusCode::SEE_OTHER || page.status == StatusCode::OK, "POST {path}: {} {}", page.status, page.body);
    }
    let after = carol_as_is(&d).await;
    assert_eq!((after.0, after.2, after.3.len()), (None, 0, 0), "unlocked, token removed, the code issued then revoked");
}

#[tokio::test]
async fn search_shows_what_it_finds_escaped_and_ldap_specials_find_nothing_odd() {
    let mut d = desk();
    d.b.sign_in_as("hanna").await;
    let page = d.b.get(&search_path("carol")).await;
    assert_eq!(page.status, StatusCode::OK);
    for shown in ["<a href=\"/helpdesk/users/carol\">carol</a>", "Carol Example", "carol@example.test"] {
        assert!(page.body.contains(shown), "{shown}: {}", page.body);
    }
    let all = d.b.get(&search_path("EXAMPLE.TEST")).await.body;
    assert!(["hanna", "henrik", "dave", "carol", "eve"].iter().all(|u| all.contains(&format!("/helpdesk/users/{u}\""))), "{all}");
    assert!(!all.contains("More users match"), "far under the cap");

    // HTML in the search text and in a user's name comes back escaped.
    let script = "<script>alert(1)</script>";
    let page = d.b.get(&search_path(script)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains(script) && !page.body.contains("<script"), "{}", page.body);
    assert!(page.body.contains("/helpdesk/users/eve") && page.body.contains("alert(1)"), "eve is found by her name: {}", page.body);
    let eve = d.b.get("/helpdesk/users/eve").await;
    assert_eq!(eve.status, StatusCode::OK);
    assert!(!eve.body.contains("<script") && eve.body.contains("alert(1)"), "{}", eve.body);

    // LDAP's specials are only text: they match nothing here, and break nothing.
    for text in ["*)(|(cn=*", "*", "\\2a", "(objectClass=*)"] {
        let page = d.b.get(&search_path(text)).await;
        if text == "*" {
            assert_eq!(page.status, StatusCode::BAD_REQUEST, "one character is too short");
            continue;
        }
        assert_eq!(page.status, StatusCode::OK, "{text}");
        assert!(page.body.contains("No user found.") && !page.body.contains("/helpdesk/users/"), "{text}: {}", page.body);
    }
    for bad in ["a", " a ", &"x".repeat(65), "ca\u{7}rol"] {
        let page = d.b.get(&search_path(bad)).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(page.body.contains("Type 2 to 64 characters"), "{bad:?}: {}", page.body);
    }

    // A name that needs percent-encoding in its link, followed.
    let page = d.b.get(&search_path("Öberg")).await.body;
    let href = "/helpdesk/users/%C3%A5sa%20%C3%B6berg";
    assert!(page.contains(href), "{page}");
    let asa = d.b.get(href).await;
    assert_eq!(asa.status, StatusCode::OK);
    assert!(asa.body.contains("åsa öberg") && asa.body.contains(&format!("{href}/unlock")), "{}", asa.body);

    // Swedish, as every page.
    let sv = d.b.get(&format!("{}&lang=sv", search_path("carol"))).await.body;
    assert!(sv.contains("Sök användare") && sv.contains("Användarnamn"), "{sv}");
}

#[tokio::test]
async fn searches_are_limited_per_member() {
    let mut d = desk();
    d.b.sign_in_as("hanna").await;
    let started = Instant::now();
    for n in 0..30 {
        assert_eq!(d.b.get(&search_path("carol")).await.status, StatusCode::OK, "search {n}");
    }
    // One search more per two seconds is allowed after the burst: however slow this machine.
    let mut extra = 0;
    loop {
        let page = d.b.get(&search_path("carol")).await;
        if page.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(page.body.contains("Too many searches") && !page.body.contains("carol@example.test"), "{}", page.body);
            break;
        }
        extra += 1;
        assert!(extra <= started.elapsed().as_secs() / 2 + 1, "search {} was not limited", 30 + extra);
    }
    let mut henrik = d.b.another();
    henrik.sign_in_as("henrik").await;
    assert_eq!(henrik.get(&search_path("carol")).await.status, StatusCode::OK, "each member has their own limit");
}

#[tokio::test]
async fn the_user_view_tells_why_a_user_cannot_log_in() {
    let mut d = desk();
    lock_carol(&d).await;
    let sms = |reason: &str, at| AuditEvent {
        at,
        account: "carol".into(),
        action: "portal_sign_in_sms".into(),
        client: "portal".into(),
        from: Some("198.51.100.7".into()),
        result: "challenge".into(),
        reason: reason.into(),
        actor: None,
        detail: None,
    };
    d.store.record_events(vec![sms("sms_sent", now() - 60), sms("sms_rate_limited", now() - 30)]).await.unwrap();
    d.b.sign_in_as("hanna").await;
    let page = d.b.get("/helpdesk/users/CAROL").await;
    assert_eq!(page.status, StatusCode::OK, "any spelling finds the account");
    let body = &page.body;
    let section = |id: &str| {
        let at = body.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("#{id} in {body}"));
        body[at..].split("</table>").next().unwrap().to_owned()
    };
    assert!(body.contains("<dd id=\"status\">Enabled</dd>") && body.contains("Carol Example"), "{body}");
    let groups = section("groups");
    assert!(groups.contains("<td>VPN-Users</td><td>yes</td>") && groups.contains("<td>Helpdesk</td><td>no</td>"), "{groups}");
    assert!(section("tokens").contains("Phone of Carol"));
    let locks = section("lockouts");
    // The lock took the five failures in (the count starts again while it runs).
    assert!(locks.contains("<td>Codes</td><td>0</td><td>20") && locks.contains("UTC</td>"), "locked until a time: {locks}");
    assert!(locks.contains("<td>Password</td><td>0</td><td>not locked</td>"), "{locks}");
    let sms = section("sms");
    assert!(sms.contains("sms_rate_limited") && sms.contains("sms_sent") && !sms.contains("wrong_code"), "{sms}");
    let events = section("events");
    assert!(events.contains("radius") && events.contains("wrong_code") && events.contains("198.51.100.7"), "{events}");
    assert!(body.contains("/helpdesk/users/carol/temporary-code\""), "a code may be issued to carol");

    let olle = d.b.get("/helpdesk/users/olle").await.body;
    assert!(olle.contains("<dd id=\"status\">Disabled</dd>") && olle.contains("No device registered"), "{olle}");
    let missing = d.b.get("/helpdesk/users/nobody-at-all").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("There is no such user."));

    let sv = d.b.get("/helpdesk/users/carol?lang=sv").await.body;
    assert!(sv.contains("Spärrar") && sv.contains("<dd id=\"status\">Aktivt</dd>") && sv.contains("Senaste händelser"), "{sv}");
}

#[tokio::test]
async fn unlock_remove_issue_and_revoke_do_what_they_say_and_are_audited_with_the_actor() {
    let mut d = desk();
    let seed = lock_carol(&d).await;
    d.b.sign_in_as("hanna").await;
    let actions_by_hanna = |d: &Desk| {
        let store = Arc::clone(&d.store);
        async move {
            let events = store.events("carol", 1000).await.unwrap();
            // What she did (her looks at the user are in the trail too: see below).
            events.into_iter().filter(|e| e.actor.as_deref() == Some("hanna") && e.action != "helpdesk_view").collect::<Vec<_>>()
        }
    };

    // Unlock.
    let confirm = d.b.get("/helpdesk/users/carol/unlock").await;
    assert!(
        confirm.body.contains("Clear this user's failed attempts") || confirm.body.contains("Clear this user&#39;s failed attempts"),
        "{}",
        confirm.body
    );
    let done = d.b.post("/helpdesk/users/carol/unlock", &[("csrf", &confirm.csrf())]).await;
    assert_eq!(done.location.as_deref(), Some("/helpdesk/users/carol"));
    assert!(d.b.get("/helpdesk/users/carol").await.body.contains("The user was unlocked."));
    let lock = code_lock(&d, "carol").await;
    assert_eq!((lock.locked_until, lock.failures), (None, 0));
    assert_eq!(d.b.radius_login("carol", &format!("pw{}", code(&seed, 0))).await, Outcome::Accept, "carol logs in again");
    let csrf = d.b.csrf().await;
    d.b.post("/helpdesk/users/carol/unlock", &[("csrf", &csrf)]).await;
    assert!(d.b.get("/helpdesk/users/carol").await.body.contains("There was nothing to unlock."));
    let unlocks = actions_by_hanna(&d).await;
    let [again, first] = &unlocks[..] else { panic!("{unlocks:?}") };
    assert_eq!(
        (first.action.as_str(), first.client.as_str(), first.from.as_deref(), first.result.as_str(), first.reason.as_str()),
        ("unlock", "helpdesk", Some("192.0.2.1"), "ok", "unlocked")
    );
    assert_eq!((again.action.as_str(), again.reason.as_str()), ("unlock", "nothing_to_unlock"));

    // Remove a token.
    let token = carol_token(&d).await;
    let path = format!("/helpdesk/users/carol/tokens/{token}/remove");
    let confirm = d.b.get(&path).await;
    assert!(confirm.body.contains("Phone of Carol") && confirm.body.contains("Its codes will stop working"), "{}", confirm.body);
    let done = d.b.post(&path, &[("csrf", &confirm.csrf())]).await;
    assert_eq!(done.location.as_deref(), Some("/helpdesk/users/carol"));
    assert!(d.b.get("/helpdesk/users/carol").await.body.contains("The authenticator was removed."));
    assert!(d.store.list_tokens(Some("carol")).await.unwrap().is_empty());
    d.b.post(&path, &[("csrf", &csrf)]).await;
    assert!(d.b.get("/helpdesk/users/carol").await.body.contains("no such authenticator"));
    let removed = actions_by_hanna(&d).await;
    assert_eq!(removed[0].action, "remove_token");
    assert!(removed[0].detail.as_deref().unwrap_or_default().contains("Phone of Carol"), "{:?}", removed[0]);

    // Issue a temporary code: the form offers what the limits allow.
    let form = d.b.get("/helpdesk/users/carol/temporary-code").await;
    for offered in [
        "<option value=\"3600\">1 hour</option>",
        "<option value=\"86400\" selected>1 day</option>",
        "<option value=\"259200\">3 days</option>",
        "max=\"20\"",
    ] {
        assert!(form.body.contains(offered), "{offered}: {}", form.body);
    }
    assert!(!form.body.contains("value=\"604800\""), "nothing past [helpdesk] max_temporary_code_validity (3 days)");
    let refused = [("2592000", "1"), ("1800", "1"), ("3600", "0"), ("3600", "21"), ("3600", "x"), ("", "")];
    for (validity, uses) in refused {
        let page = d.b.post("/helpdesk/users/carol/temporary-code", &[("csrf", &csrf), ("validity", validity), ("uses", uses)]).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{validity} {uses}");
        assert!(page.body.contains("Choose a validity") && !page.body.contains("temporary-code\" class"), "{}", page.body);
    }
    assert!(d.store.list_temporary_codes(Some("carol"), now()).await.unwrap().is_empty(), "nothing issued");
    let issued_at = now();
    let shown = d.b.post("/helpdesk/users/carol/temporary-code", &[("csrf", &csrf), ("validity", "28800"), ("uses", "2")]).await;
    assert_eq!((shown.status, shown.location.as_deref()), (StatusCode::OK, None), "shown in the answer, not redirected: {}", shown.body);
    let marker = "<code id=\"temporary-code\" class=\"code\">";
    let at = shown.body.find(marker).unwrap() + marker.len();
    let code = shown.body[at..].split('<').next().unwrap().to_owned();
    assert!(code.len() == 8 && code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    let live = d.store.temporary_codes("carol", now()).await.unwrap();
    let [kept] = &live[..] else { panic!("one code: {live:?}") };
    assert_eq!(kept.code.expose(), &code, "the code shown is the one kept");
    assert_eq!((kept.info.issued_by.as_str(), kept.info.uses_left), ("hanna", 2));
    assert!((kept.info.expires_at - issued_at - 28800).abs() <= 2, "valid for 8 hours");
    // In exactly that one response: not in its headers, the session, the trail, or any page after.
    assert!(shown.set_cookies().iter().all(|c| !c.contains(&code)));
    let session = d.b.portal.sessions.get(&d.b.session_id().unwrap(), now()).await.unwrap().unwrap();
    assert!(!serde_json::to_string(&session).unwrap().contains(&code), "not in the session");
    let issued = actions_by_hanna(&d).await;
    assert_eq!((issued[0].action.as_str(), issued[0].reason.as_str()), ("issue_temporary_code", "issued"));
    assert!(d.store.events("carol", 1000).await.unwrap().iter().all(|e| !format!("{e:?}").contains(&code)), "not in the trail");
    for path in ["/helpdesk/users/carol", "/helpdesk/users/carol/temporary-code", "/helpdesk?q=carol", "/general", "/tokens"] {
        let page = d.b.get(path).await;
        assert!(!page.body.contains(&code) && page.headers.iter().all(|(_, v)| !v.to_str().unwrap_or_default().contains(&code)), "{path}");
    }
    let view = d.b.get("/helpdesk/users/carol").await.body;
    assert!(view.contains("<td>hanna</td>") && view.contains("<td>2</td>"), "the live code, without the code: {view}");

    // Looks are in the trail too, with who looked.
    let looks = d.store.events("carol", 1000).await.unwrap();
    assert!(looks.iter().any(|e| e.action == "helpdesk_view" && e.actor.as_deref() == Some("hanna")), "{looks:?}");

    // carol signs in with the code; a revocation ends that session (the code may have gone to
    // the wrong caller, who must not be left a session to enroll their own phone in).
    let mut carol = d.b.another();
    let page = carol.try_password("carol", "pw").await;
    assert_eq!(page.location.as_deref(), Some("/otp"), "{}", page.body);
    let otp = carol.get("/otp").await;
    let page = carol.post("/otp", &[("csrf", &otp.csrf()), ("code", &code)]).await;
    assert_eq!(page.location.as_deref(), Some("/general"), "the temporary code signs carol in: {}", page.body);
    assert_eq!(carol.get("/general").await.status, StatusCode::OK);

    // Revoke.
    let confirm = d.b.get("/helpdesk/users/carol/temporary-code/revoke").await;
    assert!(confirm.body.contains("They stop working at once"));
    let done = d.b.post("/helpdesk/users/carol/temporary-code/revoke", &[("csrf", &confirm.csrf())]).await;
    assert_eq!(done.location.as_deref(), Some("/helpdesk/users/carol"));
    assert!(d.b.get("/helpdesk/users/carol").await.body.contains("The temporary codes were revoked."));
    assert!(d.store.list_temporary_codes(Some("carol"), now()).await.unwrap().is_empty());
    let ended = carol.get("/general").await;
    assert_ne!(ended.status, StatusCode::OK, "carol's session ended with the code: {:?}", ended.location);
    d.b.post("/helpdesk/users/carol/temporary-code/revoke", &[("csrf", &csrf)]).await;
    assert!(d.b.get("/helpdesk/users/carol").await.body.contains("There was no temporary code to revoke."));
    let trail: Vec<(String, String)> = actions_by_hanna(&d).await.into_iter().rev().map(|e| (e.action, e.reason)).collect();
    let expected = [
        ("unlock", "unlocked"),
        ("unlock", "nothing_to_unlock"),
        ("remove_token", "removed"),
        ("issue_temporary_code", "issued"),
        ("revoke_temporary_code", "revoked"),
        ("revoke_temporary_code", "none_live"),
    ];
    assert_eq!(trail, expected.map(|(a, r)| (a.to_owned(), r.to_owned())), "every action, in order, with hanna as the actor");
}

#[tokio::test]
async fn a_member_may_see_their_own_account_but_not_issue_themselves_a_code() {
    let mut d = desk();
    d.b.sign_in_as("hanna").await;
    let own = d.b.get("/helpdesk/users/hanna").await;
    assert_eq!(own.status, StatusCode::OK);
    assert!(own.body.contains("<td>Helpdesk</td><td>yes</td>") && !own.body.contains("/temporary-code\""), "{}", own.body);
    let csrf = d.b.csrf().await;
    for name in ["hanna", "HANNA", "EXAMPLE%5Channa"] {
        let path = format!("/helpdesk/users/{name}/temporary-code");
        let form = d.b.get(&path).await;
        assert_eq!(form.status, StatusCode::FORBIDDEN, "{name}");
        assert!(form.body.contains("You cannot issue a temporary code to yourself"), "{}", form.body);
        let post = d.b.post(&path, &[("csrf", &csrf), ("validity", "3600"), ("uses", "1")]).await;
        assert_eq!(post.status, StatusCode::FORBIDDEN, "{name}");
    }
    assert!(d.store.list_temporary_codes(Some("hanna"), now()).await.unwrap().is_empty());
    // Nor may a colleague: a member's code comes from an admin (the CLI).
    let mut henrik = d.b.another();
    henrik.sign_in_as("henrik").await;
    let csrf = henrik.csrf().await;
    let form = henrik.get("/helpdesk/users/hanna/temporary-code").await;
    assert_eq!(form.status, StatusCode::FORBIDDEN);
    assert!(form.body.contains("Help desk members get temporary codes from an administrator"), "{}", form.body);
    let page = henrik.post("/helpdesk/users/hanna/temporary-code", &[("csrf", &csrf), ("validity", "3600"), ("uses", "1")]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(d.store.list_temporary_codes(Some("hanna"), now()).await.unwrap().is_empty());
}

#[tokio::test]
async fn changes_are_limited_per_member() {
    let mut d = desk();
    d.b.sign_in_as("hanna").await;
    let csrf = d.b.csrf().await;
    for n in 0..30 {
        let page = d.b.post("/helpdesk/users/carol/unlock", &[("csrf", &csrf)]).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "change {n}");
    }
    let page = d.b.post("/helpdesk/users/carol/unlock", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(page.body.contains("Too many changes"));
    assert_eq!(d.store.events("carol", 1000).await.unwrap().len(), 30, "the refused one did nothing");
}
