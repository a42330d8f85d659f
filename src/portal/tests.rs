//! The portal's handlers in-process: a cookie-keeping client drives the router as a browser
//! would, against an in-memory store, the fake directory (alice has a mobile, bob has none) and a
//! recording SMS gateway.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use super::limiter::LimitKey;
use super::pages::date;
use super::*;
use crate::auth::tests::{FakeDirectory, RecordingGateway};
use crate::auth::{ClientPolicy, Method, Mode, NoToken, Outcome, Services};
use crate::keys::{KeyRing, Keys};
use crate::otp::TotpParams;
use crate::secret::Secret;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

const SESSION: &str = "__Host-radmfa_session";

struct Browser {
    app: Router,
    portal: Arc<Portal>,
    /// The browser's cookies, by name.
    cookies: BTreeMap<String, String>,
    language: &'static str,
    /// The TCP peer the portal sees, and an X-Forwarded-For header to send.
    peer: SocketAddr,
    forwarded_for: Option<String>,
    sms: Arc<RecordingGateway>,
    auth: Arc<Authenticator>,
    store: Arc<dyn Store>,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
    headers: HeaderMap,
}

impl Page {
    fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + 19;
        self.body[at..].split('"').next().unwrap().to_owned()
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    }
}

pub(crate) fn portal_settings() -> PortalSettings {
    PortalSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        public_url: url::Url::parse("https://portal.example.test").unwrap(),
        issuer: "Example Region".into(),
        max_tokens: 2,
        session_idle: Duration::from_secs(900),
        session_max: Duration::from_secs(3600),
        max_sessions: 10_000,
        enrollment_timeout: Duration::from_secs(600),
        trusted_proxies: Vec::new(),
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(30),
        max_connections: 512,
        max_connections_per_address: 32,
        reject_delay: Duration::ZERO,
        brand: Arc::default(),
        helpdesk_groups: Vec::new(),
        required_groups: Vec::new(),
    }
}

fn browser_with(settings: PortalSettings) -> Browser {
    let keys = Arc::new(Keys::fixed(KeyRing::generate("k1")));
    let store = Arc::new(SqliteStore::in_memory(Arc::clone(&keys)).unwrap());
    browser_over(settings, Arc::new(FakeDirectory::default()), store, keys)
}

/// A browser on a portal over `directory` and `store` (sealed with `keys`).
fn browser_over(
    settings: PortalSettings,
    directory: Arc<dyn crate::directory::Directory>,
    store: Arc<dyn Store>,
    keys: Arc<Keys>,
) -> Browser {
    let sms = Arc::new(RecordingGateway::default());
    let services = Services { directory, store: store.clone(), sms: sms.clone(), keys: Arc::clone(&keys) };
    let auth = Arc::new(Authenticator::new(services, crate::auth::tests::settings()));
    let portal = Portal::new(Arc::clone(&auth), store.clone(), keys, settings);
    let app = router(Arc::clone(&portal));
    let peer = SocketAddr::from(([192, 0, 2, 1], 40000));
    Browser { app, portal, cookies: BTreeMap::new(), language: "en", peer, forwarded_for: None, sms, auth, store }
}

fn browser() -> Browser {
    browser_with(portal_settings())
}

impl Browser {
    /// Another browser on the same portal (its own cookies).
    fn another(&self) -> Browser {
        Browser {
            app: self.app.clone(),
            portal: Arc::clone(&self.portal),
            cookies: BTreeMap::new(),
            language: self.language,
            peer: self.peer,
            forwarded_for: None,
            sms: Arc::clone(&self.sms),
            auth: Arc::clone(&self.auth),
            store: Arc::clone(&self.store),
        }
    }

    /// Sends a request with the browser's cookies, without taking in the cookies it sets.
    async fn request(&self, method: &str, path: &str, form: Option<&[(&str, &str)]>) -> Page {
        let mut request = Request::builder().method(method).uri(path).header("accept-language", self.language);
        if !self.cookies.is_empty() {
            let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
            request = request.header("cookie", cookie);
        }
        if let Some(forwarded) = &self.forwarded_for {
            request = request.header("x-forwarded-for", forwarded.clone());
        }
        let body = match form {
            Some(fields) => {
                request = request.header("content-type", "application/x-www-form-urlencoded");
                Body::from(form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish())
            }
            None => Body::empty(),
        };
        let mut request = request.body(body).unwrap();
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let response = self.app.clone().oneshot(request).await.unwrap();
        // What the listener does with a response held back.
        if let Some(super::listener::NotBefore(at)) = response.extensions().get().copied() {
            tokio::time::sleep_until(at).await;
        }
        let status = response.status();
        let headers = response.headers().clone();
        let location = headers.get("location").map(|l| l.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        Page { status, location, body: String::from_utf8_lossy(&bytes).into_owned(), headers }
    }

    async fn send(&mut self, method: &str, path: &str, form: Option<&[(&str, &str)]>) -> Page {
        let page = self.request(method, path, form).await;
        for set in page.set_cookies() {
            let (pair, attributes) = set.split_once(';').unwrap_or((&set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        page
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send("GET", path, None).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.send("POST", path, Some(fields)).await
    }

    fn session_id(&self) -> Option<String> {
        self.cookies.get(SESSION).cloned()
    }

    async fn try_password(&mut self, user: &str, password: &str) -> Page {
        let csrf = self.get("/signin").await.csrf();
        self.post("/signin", &[("csrf", &csrf), ("username", user), ("password", password)]).await
    }

    /// Signs alice in with her password and the SMS code.
    /// A session exists from the password step on, and gets a new id when the code is right.
    async fn sign_in_alice(&mut self) {
        let page = self.try_password("alice", "pw").await;
        assert_eq!(page.location.as_deref(), Some("/otp"), "{}", page.body);
        let half_way = self.session_id().expect("a session once the password is right");
        let otp = self.get("/otp").await;
        assert!(otp.body.contains("+46 70*** **67"), "{}", otp.body);
        let code = self.sms.last_code();
        let page = self.post("/otp", &[("csrf", &otp.csrf()), ("code", &code)]).await;
        assert_eq!(page.location.as_deref(), Some("/general"), "{}", page.body);
        assert_ne!(self.session_id(), Some(half_way), "a new session id after sign-in");
    }

    /// Adds a token named `name` and returns its seed (from the secret shown on the scan page).
    async fn enroll(&mut self, name: &str) -> Vec<u8> {
        let csrf = self.get("/tokens/new").await.csrf();
        let page = self.post("/tokens/new", &[("csrf", &csrf), ("name", name)]).await;
        assert_eq!(page.location.as_deref(), Some("/tokens/new/scan"), "{}", page.body);
        let scan = self.get("/tokens/new/scan").await;
        assert!(scan.body.contains("<svg"), "the QR code is inline SVG");
        let at = scan.body.find("<code id=\"secret\">").unwrap() + 18;
        let grouped = scan.body[at..].split('<').next().unwrap();
        assert!(grouped.split(' ').all(|g| g.len() <= 4), "the secret in groups of four: {grouped}");
        totp_rs::Secret::Encoded(grouped.replace(' ', "")).to_bytes().unwrap()
    }

    async fn confirm(&mut self, code: &str) -> Page {
        let csrf = self.get("/tokens/new/confirm").await.csrf();
        self.post("/tokens/new/confirm", &[("csrf", &csrf), ("code", code)]).await
    }

    async fn radius_login(&self, user: &str, password: &str) -> Outcome {
        let client = Arc::new(ClientPolicy { mode: Mode::Append, no_token: NoToken::Reject, ..ClientPolicy::named("nas") });
        let request = crate::auth::Request {
            user_name: Some(user.as_bytes().to_vec()),
            password: Some(Secret::new(password.as_bytes().to_vec())),
            method: Method::Pap,
            state: None,
            client,
            authenticator: rand::random(),
            hidden_password: Vec::new(),
            nas_ip: None,
            nas_identifier: None,
            calling_station: None,
            arrived: std::time::Instant::now(),
            answer_room: 4096 - 38,
        };
        self.auth.decide(&request).await.outcome()
    }
}

fn code(seed: &[u8], offset: i64) -> String {
    let p = TotpParams::default();
    let step = (p.step_at(crate::clock::now() as u64) as i64 + offset) as u64;
    p.code_at_step(seed, step).expose().clone()
}

#[tokio::test]
async fn sign_in_profile_enroll_and_the_token_works_over_radius() {
    let mut b = browser();
    assert_eq!(b.get("/").await.location.as_deref(), Some("/signin"));
    assert_eq!(b.session_id(), None, "no session before sign-in");
    b.sign_in_alice().await;
    let general = b.get("/general").await;
    for shown in ["alice", "070-123 45 67"] {
        assert!(general.body.contains(shown), "GENERAL shows {shown}: {}", general.body);
    }
    let tokens = b.get("/tokens").await;
    assert!(tokens.body.contains("No device registered"));

    let seed = b.enroll("My phone").await;
    // Not usable before it is confirmed, and a wrong code does not confirm it.
    assert_eq!(b.radius_login("alice", &format!("pw{}", code(&seed, 0))).await, Outcome::Reject);
    let wrong = b.confirm("000000").await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(wrong.body.contains("That code is not right"));
    assert_eq!(b.radius_login("alice", &format!("pw{}", code(&seed, 0))).await, Outcome::Reject);
    let done = b.confirm(&code(&seed, 0)).await;
    assert_eq!(done.location.as_deref(), Some("/tokens"), "{}", done.body);
    let tokens = b.get("/tokens").await;
    assert!(tokens.body.contains("My phone") && tokens.body.contains("Your authenticator is ready"), "{}", tokens.body);
    assert!(!tokens.body.contains("No device registered"));
    // The confirming code is used up; the next one logs in over RADIUS.
    assert_eq!(b.radius_login("alice", &format!("pw{}", code(&seed, 0))).await, Outcome::Reject);
    assert_eq!(b.radius_login("alice", &format!("pw{}", code(&seed, 1))).await, Outcome::Accept);
    // The seed is shown during enrollment only.
    let again = b.get("/tokens/new/scan").await;
    assert_eq!(again.location.as_deref(), Some("/tokens"));
}

#[tokio::test]
async fn the_navigation_marks_the_page_s_own_tab() {
    let mut b = browser();
    b.sign_in_alice().await;
    let general = b.get("/general").await.body;
    assert!(
        general.contains("<a href=\"/general\" aria-current=\"page\">") && !general.contains("<a href=\"/tokens\" aria-current"),
        "{general}"
    );
    let tokens = b.get("/tokens/new").await.body;
    assert!(
        tokens.contains("<a href=\"/tokens\" aria-current=\"page\">") && !tokens.contains("<a href=\"/general\" aria-current"),
        "{tokens}"
    );
}

#[tokio::test]
async fn a_post_without_the_csrf_token_is_refused() {
    let mut b = browser();
    b.get("/signin").await;
    let page = b.post("/signin", &[("username", "alice"), ("password", "pw")]).await;
    assert_ne!(page.status, StatusCode::SEE_OTHER);
    let page = b.post("/signin", &[("csrf", "forged"), ("username", "alice"), ("password", "pw")]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(b.sms.count(), 0, "nothing happened");
    b.sign_in_alice().await;
    let page = b.post("/tokens/new", &[("csrf", "forged"), ("name", "x")]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn swedish_from_accept_language_and_switchable_on_every_page() {
    let mut b = browser();
    b.language = "sv-SE,sv;q=0.9,en;q=0.5";
    let page = b.get("/signin").await;
    assert!(page.body.contains("Logga in") && page.body.contains("Användarnamn") && page.body.contains("lang=\"sv\""), "{}", page.body);
    let page = b.get("/signin?lang=en").await;
    assert!(page.body.contains("Sign in") && page.body.contains("User name"));
    let page = b.get("/signin").await;
    assert!(page.body.contains("Sign in"), "the choice sticks (in a cookie)");
    assert!(b.store.session_count().await.unwrap() == 0, "and needs no session");
}

#[tokio::test]
async fn a_user_with_neither_app_nor_phone_is_sent_to_the_help_desk() {
    let mut b = browser();
    let csrf = b.get("/signin").await.csrf();
    let page = b.post("/signin", &[("csrf", &csrf), ("username", "bob"), ("password", "pw")]).await;
    assert!(page.body.contains("Contact the help desk"), "{}", page.body);
    assert_eq!(b.get("/general").await.location.as_deref(), Some("/signin"), "never signed in");
}

#[tokio::test]
async fn wrong_passwords_fail_and_the_user_limit_stops_guessing() {
    let mut b = browser();
    for _ in 0..5 {
        let csrf = b.get("/signin").await.csrf();
        let page = b.post("/signin", &[("csrf", &csrf), ("username", "alice"), ("password", "guess")]).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
        assert!(page.body.contains("Sign-in failed"));
    }
    let csrf = b.get("/signin").await.csrf();
    let page = b.post("/signin", &[("csrf", &csrf), ("username", "alice"), ("password", "pw")]).await;
    assert!(page.body.contains("Too many attempts"), "{}", page.body);
}

#[tokio::test]
async fn a_locked_account_reads_like_any_failure_and_every_failure_leaves_at_one_time() {
    let delay = Duration::from_millis(400);
    let mut b = browser_with(PortalSettings { reject_delay: delay, ..portal_settings() });
    let timed = async |b: &mut Browser, user: &str, password: &str| {
        let csrf = b.get("/signin").await.csrf();
        let started = std::time::Instant::now();
        let page = b.post("/signin", &[("csrf", &csrf), ("username", user), ("password", password)]).await;
        (started.elapsed(), page)
    };
    let mut times = Vec::new();
    for _ in 0..5 {
        let (t, page) = timed(&mut b, "alice", "guess").await;
        assert!(page.body.contains("Sign-in failed"));
        times.push(t);
    }
    // Locked now (five wrong passwords). Under another name (its own rate limit), with the right
    // password: the words of any failure, not "too many attempts", which would tell it exists.
    let (t, page) = timed(&mut b, "a.andersson", "pw").await;
    assert!(page.body.contains("Sign-in failed") && !page.body.contains("Too many"), "{}", page.body);
    times.push(t);
    let (t, page) = timed(&mut b, "nobody-at-all", "pw").await;
    assert!(page.body.contains("Sign-in failed"));
    times.push(t);
    assert!(times.iter().all(|t| *t >= delay), "{times:?}");
    assert!(times.iter().max().unwrap().saturating_sub(*times.iter().min().unwrap()) < Duration::from_millis(150), "{times:?}");
}

#[tokio::test]
async fn pages_carry_security_headers_and_a_strict_cookie() {
    let mut b = browser();
    let page = b.get("/signin").await;
    let csp = page.headers.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(page.headers.get("x-frame-options").unwrap(), "DENY");
    let cookie = page.headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Secure"), "{cookie}");
    assert!(cookie.starts_with("__Host-radmfa_csrf=") && cookie.contains("Path=/") && cookie.contains("Max-Age=3600"), "{cookie}");
    assert!(!page.body.contains("<script"), "no JavaScript");
    assert_eq!(page.headers.get("strict-transport-security").unwrap(), "max-age=31536000", "public_url is https");
    b.sign_in_alice().await;
    let general = b.get("/general").await;
    assert!(general.headers.contains_key("strict-transport-security"));

    let mut plain = browser_with(PortalSettings { public_url: url::Url::parse("http://127.0.0.1:8080").unwrap(), ..portal_settings() });
    let page = plain.get("/signin").await;
    assert!(!page.headers.contains_key("strict-transport-security"), "no HSTS over plain http");
    let cookie = page.headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(cookie.starts_with("radmfa_csrf=") && !cookie.contains("Secure"), "no __Host- prefix without https: {cookie}");
}

#[tokio::test]
async fn tokens_can_be_removed_after_confirmation_and_are_capped() {
    let mut b = browser();
    b.sign_in_alice().await;
    for (i, name) in ["Phone", "Tablet"].iter().enumerate() {
        let seed = b.enroll(name).await;
        assert!(b.confirm(&code(&seed, i as i64 - 1)).await.location.is_some());
    }
    let csrf = b.get("/tokens/new").await.csrf();
    let full = b.post("/tokens/new", &[("csrf", &csrf), ("name", "Third")]).await;
    assert_eq!(full.status, StatusCode::CONFLICT, "max_tokens = 2");
    let tokens = b.get("/tokens").await;
    let at = tokens.body.find("/remove\"").unwrap();
    let href_start = tokens.body[..at].rfind("href=\"").unwrap() + 6;
    let href = format!("{}/remove", &tokens.body[href_start..at]);
    let confirm = b.get(&href).await;
    assert!(confirm.body.contains("Its codes will stop working"));
    let done = b.post(&href, &[("csrf", &confirm.csrf())]).await;
    assert_eq!(done.location.as_deref(), Some("/tokens"));
    assert!(b.get("/tokens").await.body.contains("The authenticator was removed"));
}

#[tokio::test]
async fn an_enrollment_left_too_long_expires() {
    let mut b = browser_with(PortalSettings { enrollment_timeout: Duration::ZERO, ..portal_settings() });
    b.sign_in_alice().await;
    let seed = b.enroll("Slow phone").await;
    std::thread::sleep(Duration::from_millis(1100));
    let page = b.confirm(&code(&seed, 0)).await;
    assert_eq!(page.status, StatusCode::GONE);
    assert!(page.body.contains("took too long"));
    assert!(b.get("/tokens").await.body.contains("No device registered"));
}

#[test]
fn dates_render_in_utc() {
    assert_eq!(date(Some(0), "never"), "1970-01-01 00:00 UTC");
    assert_eq!(date(Some(1_700_000_000), "never"), "2023-11-14 22:13 UTC");
    assert_eq!(date(None, "aldrig"), "aldrig");
}

#[tokio::test]
async fn page_loads_before_sign_in_store_nothing() {
    let mut b = browser();
    for n in 0..5_000 {
        let path = match n % 4 {
            0 => "/",
            1 => "/signin?lang=sv",
            _ => "/signin",
        };
        let page = b.request("GET", path, None).await;
        assert!(page.status.is_success() || page.status.is_redirection(), "{}", page.status);
    }
    assert_eq!(b.store.session_count().await.unwrap(), 0, "no cookie-less page load creates a session");
    // A new user meanwhile signs in as ever: the form's token is accepted, and only then is
    // there a session.
    b.sign_in_alice().await;
    assert_eq!(b.store.session_count().await.unwrap(), 1);
    assert!(b.get("/general").await.body.contains("alice"));
}

#[tokio::test]
async fn the_sign_in_form_token_belongs_to_its_own_browser() {
    let mut mallory = browser();
    let mut victim = mallory.another();
    let theirs = mallory.get("/signin").await.csrf();
    victim.get("/signin").await;
    async fn post(b: &mut Browser, csrf: &str) -> Page {
        b.post("/signin", &[("csrf", csrf), ("username", "alice"), ("password", "pw")]).await
    }
    assert_eq!(post(&mut victim, &theirs).await.status, StatusCode::FORBIDDEN, "another browser's token");
    let (issued, mac) = theirs.split_once('.').unwrap();
    assert_eq!(post(&mut mallory, &format!("{}.{mac}", issued.parse::<u64>().unwrap() + 1)).await.status, StatusCode::FORBIDDEN);
    let mut cookieless = mallory.another();
    assert_eq!(post(&mut cookieless, &theirs).await.status, StatusCode::FORBIDDEN, "a token without its cookie");
    assert_eq!(mallory.sms.count(), 0, "nothing happened");
    assert!(mallory.store.session_count().await.unwrap() == 0);
    let page = post(&mut mallory, &theirs).await;
    assert_eq!(page.location.as_deref(), Some("/otp"), "its own browser's token passes");
    assert!(page.set_cookies().iter().any(|c| c.starts_with("__Host-radmfa_csrf=;")), "the nonce is done with: {:?}", page.set_cookies());
}

#[tokio::test]
async fn concurrent_requests_with_one_cookie_keep_the_session() {
    let mut b = browser();
    b.sign_in_alice().await;
    for round in 0..50 {
        let (one, two) = tokio::join!(b.request("GET", "/tokens", None), b.request("GET", "/tokens", None));
        for page in [one, two] {
            assert_eq!((page.status, page.location.as_deref()), (StatusCode::OK, None), "round {round}: still signed in");
        }
    }
    assert_eq!(b.get("/general").await.status, StatusCode::OK);
}

#[tokio::test]
async fn parallel_guesses_cannot_share_the_sms_code_tries() {
    let mut b = browser();
    assert_eq!(b.try_password("alice", "pw").await.location.as_deref(), Some("/otp"));
    let csrf = b.get("/otp").await.csrf();
    let wrong = [("csrf", csrf.as_str()), ("code", "000000")];
    let guess = || b.request("POST", "/otp", Some(&wrong));
    let (one, two, three) = tokio::join!(guess(), guess(), guess());
    assert!([one, two, three].iter().all(|p| p.location.as_deref() != Some("/general")), "wrong codes never sign in");
    let right = b.sms.last_code();
    let page = b.post("/otp", &[("csrf", &csrf), ("code", &right)]).await;
    assert_ne!(page.location.as_deref(), Some("/general"), "three tries were spent, however parallel: {}", page.body);
}

#[tokio::test]
async fn signing_out_ends_the_session_for_good() {
    let mut b = browser();
    b.sign_in_alice().await;
    let old = b.cookies.clone();
    let csrf = b.get("/general").await.csrf();
    let page = b.post("/signout", &[("csrf", &csrf)]).await;
    assert_eq!(page.location.as_deref(), Some("/signin?signed_out=1"));
    assert_eq!(b.session_id(), None, "the browser is told to forget the id");
    assert!(b.get("/signin?signed_out=1").await.body.contains("You are signed out."));
    assert!(b.store.session_count().await.unwrap() == 0);
    let mut replay = b.another();
    replay.cookies = old;
    assert_eq!(replay.get("/general").await.location.as_deref(), Some("/signin"), "the old cookie is dead");
}

#[tokio::test]
async fn a_forged_forwarded_for_counts_only_from_a_trusted_proxy() {
    // Not trusted (trusted_proxies is empty by default), even on loopback, where any local user
    // can connect: X-Forwarded-For is ignored, so the per-address limit (20 in 5 minutes) keys
    // on the peer however it varies the header.
    let mut b = browser();
    b.peer = "127.0.0.1:50000".parse().unwrap();
    for n in 0..20 {
        b.forwarded_for = Some(format!("203.0.113.{n}"));
        let page = b.try_password(&format!("nobody{n}"), "guess").await;
        assert!(page.body.contains("Sign-in failed"), "attempt {n}: {}", page.body);
    }
    b.forwarded_for = Some("198.51.100.99".into());
    assert!(b.try_password("nobody-else", "guess").await.body.contains("Too many attempts"), "the peer's limit");

    // Behind a trusted proxy: the right-most entry it did not add is the client, each with its
    // own limit; what the client wrote left of it does not matter.
    let mut b = browser_with(PortalSettings { trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()], ..portal_settings() });
    b.peer = "127.0.0.1:50000".parse().unwrap();
    for n in 0..25 {
        b.forwarded_for = Some(format!("6.6.6.6, 203.0.113.{n}"));
        assert!(b.try_password(&format!("nobody{n}"), "guess").await.body.contains("Sign-in failed"), "client {n} has its own limit");
    }
    for n in 0..21 {
        b.forwarded_for = Some(format!("10.0.0.{n}, 198.51.100.7"));
        let page = b.try_password(&format!("someone{n}"), "guess").await;
        assert_eq!(page.body.contains("Too many attempts"), n == 20, "attempt {n} of one client behind the proxy");
    }
}

#[test]
fn the_address_limiter_stays_at_its_cap_under_forged_keys() {
    let portal = browser().portal;
    let t0 = Instant::now();
    for n in 0..120_000u32 {
        let forged = IpAddr::from([10, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
        portal.address_limits.allow_at(&LimitKey::signin_from(forged), 20, LIMIT_WINDOW, t0);
    }
    assert_eq!(portal.address_limits.len(), LIMITER_KEYS, "bounded: the oldest keys went, no scan ever needed");
    assert!(portal.user_limits.is_empty(), "user keys live apart");
}

#[tokio::test]
async fn an_enrollment_started_in_another_tab_never_takes_a_confirmed_token_away() {
    let mut b = browser_with(PortalSettings { max_tokens: 50, ..portal_settings() });
    b.sign_in_alice().await;
    let mut confirmed = 0;
    for round in 0..10 {
        let seed = b.enroll(&format!("Phone {round}")).await;
        let csrf = b.get("/tokens/new/confirm").await.csrf();
        let right = code(&seed, 0);
        let confirm = [("csrf", csrf.as_str()), ("code", right.as_str())];
        let restart = [("csrf", csrf.as_str()), ("name", "Tablet")];
        let (done, _) =
            tokio::join!(b.request("POST", "/tokens/new/confirm", Some(&confirm)), b.request("POST", "/tokens/new", Some(&restart)));
        if done.location.as_deref() == Some("/tokens") {
            confirmed += 1;
        }
        let tokens = b.auth.portal_tokens("alice").await.unwrap();
        assert_eq!(tokens.len(), confirmed, "round {round}: every confirmation the user was told of holds");
    }
    assert!(confirmed > 0, "some confirmations won their race");
    let rows = b.store.list_tokens(Some("alice")).await.unwrap();
    let unconfirmed = rows.iter().filter(|t| !t.confirmed).count();
    assert!(unconfirmed <= 1, "at most the enrollment the session holds is unconfirmed: {rows:?}");
}

#[tokio::test]
async fn two_sms_requests_at_once_send_one_sms() {
    let mut b = browser();
    b.sign_in_alice().await;
    let seed = b.enroll("Phone").await;
    assert_eq!(b.confirm(&code(&seed, 0)).await.location.as_deref(), Some("/tokens"));
    let csrf = b.get("/general").await.csrf();
    b.post("/signout", &[("csrf", &csrf)]).await;
    assert_eq!(b.try_password("alice", "pw").await.location.as_deref(), Some("/otp"));
    let csrf = b.get("/otp").await.csrf();
    let sent_before = b.sms.sent.lock().unwrap().len();
    let ask = [("csrf", csrf.as_str())];
    let (one, two) = tokio::join!(b.request("POST", "/otp/sms", Some(&ask)), b.request("POST", "/otp/sms", Some(&ask)));
    assert_eq!((one.location.as_deref(), two.location.as_deref()), (Some("/otp"), Some("/otp")));
    assert_eq!(b.sms.sent.lock().unwrap().len(), sent_before + 1, "one SMS for two clicks");
    let page = b.post("/otp", &[("csrf", &csrf), ("code", &b.sms.last_code())]).await;
    assert_eq!(page.location.as_deref(), Some("/general"), "{}", page.body);
}

#[tokio::test]
async fn every_page_carries_the_organisations_title_help_text_logo_and_colour() {
    use super::brand::{Brand, Localized};
    let dir = tempfile::tempdir().unwrap();
    let logo = dir.path().join("logo.svg");
    std::fs::write(&logo, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"/>").unwrap();
    let brand = Brand::build(
        Some(Localized::PerLanguage { en: "Region Example sign-in".into(), sv: "Region Exempel inloggning".into() }),
        Some(Localized::PerLanguage {
            en: "Help desk <24/7>: 010-123 45 67".into(),
            sv: "Servicedesk <dygnet runt>: 010-123 45 67".into(),
        }),
        Some(&logo),
        Some("#7a1f5c"),
    )
    .unwrap();
    let mut b = browser_with(PortalSettings { brand: Arc::new(brand), ..portal_settings() });
    let page = b.get("/signin").await;
    assert!(page.body.contains("<title>Region Example sign-in</title>"), "{}", page.body);
    assert!(page.body.contains("<img class=\"logo\" src=\"/static/logo\" alt=\"\">Region Example sign-in</h1>"));
    assert!(
        page.body.contains("Help desk &#60;24/7&#62;: 010-123 45 67") || page.body.contains("Help desk &lt;24/7&gt;: 010-123 45 67"),
        "escaped: {}",
        page.body
    );
    assert!(page.body.contains("<link rel=\"stylesheet\" href=\"/static/brand.css\">"));
    let swedish = b.get("/signin?lang=sv").await;
    assert!(swedish.body.contains("<title>Region Exempel inloggning</title>") && swedish.body.contains("Servicedesk"), "{}", swedish.body);
    let css = b.get("/static/brand.css").await;
    assert_eq!((css.status, css.body.as_str()), (StatusCode::OK, ":root { --accent: #7a1f5c; }\n"));
    let served = b.get("/static/logo").await;
    assert_eq!(served.headers.get("content-type").unwrap(), "image/svg+xml");
    assert!(served.body.starts_with("<svg"));
    // Without branding: radmfa's own title, no logo, no brand stylesheet.
    let mut plain = browser();
    let page = plain.get("/signin").await;
    assert!(!page.body.contains("/static/logo") && !page.body.contains("brand.css") && !page.body.contains("<footer>"));
    assert_eq!(plain.get("/static/logo").await.status, StatusCode::NOT_FOUND);
}

mod helpdesk;
