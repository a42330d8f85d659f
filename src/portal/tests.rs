//! The portal's handlers in-process: a cookie-keeping client drives the router as a browser
//! would, against an in-memory store, the fake directory (alice has a mobile, bob has none) and a
//! recording SMS gateway.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use super::*;
use crate::auth::tests::{FakeDirectory, RecordingGateway, settings};
use crate::auth::{ClientPolicy, Method, Mode, NoToken, Outcome, Services};
use crate::otp::TotpParams;
use crate::secret::Secret;
use crate::store::seal::{KeyRing, Keys};
use crate::store::sqlite::SqliteStore;

struct Browser {
    app: Router,
    cookie: Option<String>,
    language: &'static str,
    sms: Arc<RecordingGateway>,
    auth: Arc<Authenticator>,
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
}

fn portal_settings() -> PortalSettings {
    PortalSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        public_url: "https://portal.example.test".into(),
        issuer: "Example Region".into(),
        max_tokens: 2,
        session_idle: Duration::from_secs(900),
        session_max: Duration::from_secs(3600),
        enrollment_timeout: Duration::from_secs(600),
    }
}

fn browser_with(settings: PortalSettings) -> Browser {
    let keys = Arc::new(Keys::fixed(KeyRing::generate("k1")));
    let store = Arc::new(SqliteStore::in_memory(Arc::clone(&keys)).unwrap());
    let sms = Arc::new(RecordingGateway::default());
    let services = Services { directory: Arc::new(FakeDirectory::default()), store, sms: sms.clone(), keys };
    let auth = Arc::new(Authenticator::new(services, crate::auth::tests::settings()));
    let app = router(Portal::new(Arc::clone(&auth), settings)).layer(MockConnectInfo(SocketAddr::from(([192, 0, 2, 1], 40000))));
    Browser { app, cookie: None, language: "en", sms, auth }
}

fn browser() -> Browser {
    let _ = settings;
    browser_with(portal_settings())
}

impl Browser {
    async fn send(&mut self, method: &str, path: &str, form: Option<&[(&str, &str)]>) -> Page {
        let mut request = Request::builder().method(method).uri(path).header("accept-language", self.language);
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie.clone());
        }
        let body = match form {
            Some(fields) => {
                request = request.header("content-type", "application/x-www-form-urlencoded");
                Body::from(form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish())
            }
            None => Body::empty(),
        };
        let response = self.app.clone().oneshot(request.body(body).unwrap()).await.unwrap();
        if let Some(set) = response.headers().get("set-cookie") {
            self.cookie = Some(set.to_str().unwrap().split(';').next().unwrap().to_owned());
        }
        let status = response.status();
        let headers = response.headers().clone();
        let location = headers.get("location").map(|l| l.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        Page { status, location, body: String::from_utf8_lossy(&bytes).into_owned(), headers }
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send("GET", path, None).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.send("POST", path, Some(fields)).await
    }

    /// Signs alice in with her password and the SMS code.
    async fn sign_in_alice(&mut self) {
        let csrf = self.get("/signin").await.csrf();
        let page = self.post("/signin", &[("csrf", &csrf), ("username", "alice"), ("password", "pw")]).await;
        assert_eq!(page.location.as_deref(), Some("/otp"), "{}", page.body);
        let otp = self.get("/otp").await;
        assert!(otp.body.contains("+46 70*** **67"), "{}", otp.body);
        let code = self.sms.last_code();
        let page = self.post("/otp", &[("csrf", &otp.csrf()), ("code", &code)]).await;
        assert_eq!(page.location.as_deref(), Some("/general"), "{}", page.body);
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
            nas_ip: None,
            nas_identifier: None,
            calling_station: None,
        };
        self.auth.decide(&request).await.outcome
    }
}

fn code(seed: &[u8], offset: i64) -> String {
    let p = TotpParams::default();
    let step = (p.step_at(crate::store::now() as u64) as i64 + offset) as u64;
    p.code_at_step(seed, step).expose().clone()
}

#[tokio::test]
async fn sign_in_profile_enroll_and_the_token_works_over_radius() {
    let mut b = browser();
    assert_eq!(b.get("/").await.location.as_deref(), Some("/signin"));
    let before = b.cookie.clone();
    b.sign_in_alice().await;
    assert_ne!(b.cookie, before, "a new session id after sign-in");
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
    assert!(page.body.contains("Sign in"), "the choice sticks for the session");
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
async fn pages_carry_security_headers_and_a_strict_cookie() {
    let mut b = browser();
    let page = b.get("/signin").await;
    let csp = page.headers.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(page.headers.get("x-frame-options").unwrap(), "DENY");
    let cookie = page.headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Secure"), "{cookie}");
    assert!(!page.body.contains("<script"), "no JavaScript");
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
fn behind_the_proxy_the_forwarded_address_counts_and_is_not_forgeable() {
    let keys = Arc::new(Keys::fixed(KeyRing::generate("k1")));
    let store = Arc::new(SqliteStore::in_memory(Arc::clone(&keys)).unwrap());
    let services = Services { directory: Arc::new(FakeDirectory::default()), store, sms: Arc::new(RecordingGateway::default()), keys };
    let auth = Arc::new(Authenticator::new(services, crate::auth::tests::settings()));
    let portal = Portal::new(auth, portal_settings());
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6, 203.0.113.9"));
    let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    assert_eq!(client_ip(&portal, proxy, &headers), "203.0.113.9".parse::<IpAddr>().unwrap(), "the entry our proxy added");
    let direct: SocketAddr = "198.51.100.7:5000".parse().unwrap();
    assert_eq!(client_ip(&portal, direct, &headers), direct.ip(), "a direct client cannot claim another address");
    assert_eq!(client_ip(&portal, proxy, &HeaderMap::new()), proxy.ip());
}

#[test]
fn dates_render_in_utc() {
    assert_eq!(date(Some(0), "never"), "1970-01-01 00:00 UTC");
    assert_eq!(date(Some(1_700_000_000), "never"), "2023-11-14 22:13 UTC");
    assert_eq!(date(None, "aldrig"), "aldrig");
}
