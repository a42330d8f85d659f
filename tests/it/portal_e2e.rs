//! The self-service portal end to end, as a user does it: headless Chromium (Debian's chromium
//! and chromedriver, driven over WebDriver) signs in with password and SMS code, reads GENERAL,
//! adds "My phone" on TOKENS by scanning the QR code — taken off a screenshot and decoded as an
//! image — confirms a code computed from it, and then logs in over RADIUS with radclient.
//! Screenshots of every step land in target/portal-e2e/. The help desk's turn (a member finds
//! carol locked out, unlocks her, removes her lost phone and gives her a temporary code, with
//! which she logs in over RADIUS and enrolls a new phone) lands in target/portal-e2e-helpdesk/,
//! every helpdesk page in English and Swedish.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use crate::harness::{CAROL_PASSWORD, Options, SECRET, SmsSink, TestServer, cheap_hash, radclient, system_tool};
use crate::http::Http;

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn browser(chromedriver: &std::path::Path, profile: &std::path::Path) -> (Driver, Client) {
    let port = free_port();
    let driver =
        Driver(Command::new(chromedriver).arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=900,1100", format!("--user-data-dir={}", profile.display())],
        }),
    );
    // chromedriver speaks plain HTTP on loopback: no TLS stack needed for it.
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        match ClientBuilder::new(connector.clone()).capabilities(caps.clone()).connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(client) => return (driver, client),
            Err(e) if Instant::now() > until => panic!("chromedriver did not start: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

struct Shots {
    dir: PathBuf,
    n: usize,
}

impl Shots {
    fn new() -> Self {
        Self::in_dir("target/portal-e2e")
    }

    /// Screenshots into `dir` (under the crate), emptied first.
    fn in_dir(dir: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir, n: 0 }
    }

    async fn take(&mut self, client: &Client, name: &str) -> Vec<u8> {
        self.n += 1;
        let png = client.screenshot().await.unwrap();
        std::fs::write(self.dir.join(format!("{:02}-{name}.png", self.n)), &png).unwrap();
        png
    }
}

async fn fill(client: &Client, css: &str, text: &str) {
    client.find(Locator::Css(css)).await.unwrap().send_keys(text).await.unwrap();
}

async fn click(client: &Client, css: &str) {
    client.find(Locator::Css(css)).await.unwrap().click().await.unwrap();
}

/// Clicks, then waits until the browser is on `path` (a click may return before the page has
/// loaded).
async fn click_to(client: &Client, css: &str, path: &str) {
    click(client, css).await;
    wait(client, |url, _| url == path, path).await;
}

/// Waits until `done(path, page source)` holds, up to 10 s.
async fn wait(client: &Client, done: impl Fn(&str, &str) -> bool, what: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let url = client.current_url().await.unwrap();
        let source = client.source().await.unwrap_or_default();
        if done(url.path(), &source) {
            return;
        }
        assert!(Instant::now() < until, "waited 10 s for {what}; at {url}:\n{source}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn text(client: &Client, css: &str) -> String {
    client.find(Locator::Css(css)).await.unwrap().text().await.unwrap()
}

/// Decodes the QR code in a screenshot, as a phone camera would.
fn decode_qr(png: &[u8]) -> String {
    let image = image::load_from_memory(png).unwrap().to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(image);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code on the page");
    grids[0].decode().unwrap().1
}

#[test]
fn a_user_enrolls_an_app_in_the_portal_and_logs_in_over_radius() {
    let Some(chromedriver) = system_tool("chromedriver", "chromium chromium-driver") else { return };
    let sink = SmsSink::start();
    let portal = "[portal]\nenabled = true\nlisten = \"127.0.0.1:0\"\n";
    let server = TestServer::start(Options {
        sms_url: Some(sink.url.clone()),
        mode: "append",
        no_token: "reject",
        extra: portal.into(),
        ..Options::default()
    });
    let base = format!("http://{}", server.portal.unwrap());
    let profile = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let seed_uri = runtime.block_on(async {
        let (_driver, client) = browser(&chromedriver, profile.path()).await;
        let mut shots = Shots::new();

        client.goto(&format!("{base}/signin?lang=en")).await.unwrap();
        fill(&client, "#username", "carol").await;
        fill(&client, "#password", CAROL_PASSWORD).await;
        shots.take(&client, "sign-in").await;
        click_to(&client, "form[action='/signin'] button", "/otp").await;

        // The code went by SMS to carol's mobile, through the gateway.
        let until = Instant::now() + Duration::from_secs(10);
        while sink.messages().is_empty() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let sent = sink.messages();
        if sent.len() != 1 {
            shots.take(&client, "after-sign-in").await;
            panic!("{sent:?}\n{}\n{:?}", client.source().await.unwrap(), server.logs());
        }
        assert_eq!(sent[0]["to"], "+46707654321");
        assert!(client.source().await.unwrap().contains("+46 70*** **21"));
        fill(&client, "#code", &sink.last_code()).await;
        shots.take(&client, "enter-otp").await;
        click_to(&client, "form[action='/otp'] button", "/general").await;

        assert_eq!(text(&client, "#username").await, "carol");
        assert_eq!(text(&client, "#given-name").await, "Carol");
        assert_eq!(text(&client, "#mobile").await, "070-765 43 21");
        shots.take(&client, "general").await;

        click_to(&client, "nav a[href='/tokens']", "/tokens").await;
        assert_eq!(text(&client, "#no-device").await, "No device registered");
        shots.take(&client, "tokens-empty").await;
        click_to(&client, "a[href='/tokens/new']", "/tokens/new").await;
        fill(&client, "#name", "My phone").await;
        shots.take(&client, "name").await;
        click_to(&client, "form[action='/tokens/new'] button", "/tokens/new/scan").await;

        let qr_page = shots.take(&client, "scan-qr").await;
        let uri = decode_qr(&qr_page);
        assert!(uri.starts_with("otpauth://totp/Example%20Region:carol?secret="), "{uri}");
        let shown = text(&client, "#secret").await.replace(' ', "");
        assert!(uri.contains(&format!("secret={shown}")), "the typed-by-hand key is the QR code's");
        click_to(&client, "a[href='/tokens/new/confirm']", "/tokens/new/confirm").await;

        // A wrong code first: the token stays unusable.
        fill(&client, "#code", "000000").await;
        click(&client, "form[action='/tokens/new/confirm'] button").await;
        wait(&client, |_, source| source.contains("That code is not right"), "the wrong-code message").await;
        shots.take(&client, "wrong-code").await;
        let totp = totp_rs::TOTP::from_url_unchecked(&uri).unwrap();
        fill(&client, "#code", &totp.generate_current().unwrap()).await;
        shots.take(&client, "confirm").await;
        click_to(&client, "form[action='/tokens/new/confirm'] button", "/tokens").await;

        assert_eq!(text(&client, ".token-name").await, "My phone");
        shots.take(&client, "tokens-listed").await;

        client.goto(&format!("{base}/tokens?lang=sv")).await.unwrap();
        wait(&client, |_, source| source.contains("lang=\"sv\""), "the Swedish page").await;
        let swedish = client.source().await.unwrap();
        assert!(swedish.contains("Lägg till autentiseringsapp") && swedish.contains("Logga ut"), "Swedish strings");
        shots.take(&client, "tokens-swedish").await;
        client.close().await.unwrap();
        uri
    });

    // Over RADIUS: carol's password followed by the next code of the seed she just enrolled.
    let totp = totp_rs::TOTP::from_url_unchecked(&seed_uri).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let next = totp.generate(now + 30);
    let input = format!("User-Name = carol\nUser-Password = \"{CAROL_PASSWORD}{next}\"\nMessage-Authenticator = 0x00\n");
    let Some(out) = radclient(server.auth, "auth", SECRET, &input) else { return };
    assert!(out.stdout.contains("Received Access-Accept"), "{}", out.stdout);
    let audit: Vec<String> = server
        .logs()
        .iter()
        .filter(|v| v["target"] == "radmfa::audit")
        .map(|v| v["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(audit.iter().any(|m| m == "portal: token enrolled"), "{audit:?}");
}

#[test]
fn the_portal_serves_https_with_its_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let crate::harness::TestCertificate { ca_pem, cert_file, key_file } = crate::harness::portal_certificate(dir.path());
    let portal = format!(
        "[portal]\nenabled = true\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://127.0.0.1\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert_file.display(),
        key_file.display()
    );
    let server = TestServer::start(Options { extra: portal, ..Options::default() });
    let address = server.portal.unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let trusting =
            reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()).build().unwrap();
        let page = trusting.get(format!("https://{address}/signin")).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let cookie = page.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(cookie.contains("Secure") && cookie.contains("HttpOnly"), "{cookie}");
        assert!(page.text().await.unwrap().contains("Sign in"));
        let plain = reqwest::Client::new().get(format!("https://{address}/signin")).send().await;
        assert!(plain.is_err(), "a client that does not trust the CA is refused");
    });
}

/// A user with neither a confirmed app nor a mobile number is turned away at the password step,
/// and the audit trail says why — as the RADIUS flow audits the same user.
#[test]
fn a_portal_user_with_neither_app_nor_phone_is_audited_as_no_mobile() {
    let erin = format!("\n[[user]]\nusername = \"erin\"\npassword_hash = \"{}\"\ngiven_name = \"Erin\"\n", cheap_hash("erin-pw"));
    let portal = "[portal]\nenabled = true\nlisten = \"127.0.0.1:0\"\n".to_owned();
    let server = TestServer::start(Options { no_token: "sms", extra: portal, extra_users: erin, ..Options::default() });
    let mut web = Http::new(server.portal.unwrap());
    let csrf = web.get("/signin").csrf();
    let page = web.post("/signin", &[("csrf", &csrf), ("username", "erin"), ("password", "erin-pw")]);
    assert!(page.body.contains("Contact the help desk"), "{}", page.body);
    let line = server
        .wait_for(|v| v["target"] == "radmfa::audit" && v["client"] == "portal" && v["user"] == "erin", Duration::from_secs(10))
        .expect("an audit line for erin's sign-in");
    assert_eq!(
        (&line["step"], &line["reason"], &line["result"]),
        (&"sign_in_password".into(), &"no_mobile".into(), &"reject".into()),
        "{line}"
    );
}

const HANNA_PASSWORD: &str = "hanna-pw";

/// One RADIUS login by the raw client: the answer's code.
fn radius_login(server: &TestServer, user: &str, password: &str) -> u8 {
    use crate::oracle::{access_request, code, encode_signed, exchange, socket};
    let answer = exchange(&socket("127.0.0.1:0", server.auth), &encode_signed(access_request(user, password)), Duration::from_secs(5));
    code(&answer.expect("an answer"))
}

/// Signs `user` in with password and the SMS code the sink received (a fresh browser session).
async fn sign_in_by_sms(client: &Client, base: &str, sink: &SmsSink, user: &str, password: &str, lang: &str) {
    client.delete_all_cookies().await.unwrap();
    client.goto(&format!("{base}/signin?lang={lang}")).await.unwrap();
    let before = sink.messages().len();
    fill(client, "#username", user).await;
    fill(client, "#password", password).await;
    click_to(client, "form[action='/signin'] button", "/otp").await;
    let until = Instant::now() + Duration::from_secs(10);
    while sink.messages().len() == before {
        assert!(Instant::now() < until, "no SMS for {user}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fill(client, "#code", &sink.last_code()).await;
    click_to(client, "form[action='/otp'] button", "/general").await;
}

/// Goes to `path` in `lang` and waits for the page.
async fn visit(client: &Client, base: &str, path: &str, lang: &str) {
    let sep = if path.contains('?') { '&' } else { '?' };
    client.goto(&format!("{base}{path}{sep}lang={lang}")).await.unwrap();
    let want = format!("lang=\"{lang}\"");
    wait(client, |_, source| source.contains(&want), path).await;
}

#[test]
fn the_help_desk_unlocks_carol_removes_her_lost_phone_and_gives_her_a_temporary_code() {
    let Some(chromedriver) = system_tool("chromedriver", "chromium chromium-driver") else { return };
    let sink = SmsSink::start();
    let portal = "[portal]\nenabled = true\nlisten = \"127.0.0.1:0\"\nhelpdesk_groups = [\"Helpdesk\"]\n";
    let hanna = format!(
        "\n[[user]]\nusername = \"hanna\"\npassword_hash = \"{}\"\ngiven_name = \"Hanna\"\nsurname = \"Holm\"\nmobile = \"+46701112233\"\ngroups = [\"Helpdesk\"]\n",
        cheap_hash(HANNA_PASSWORD)
    );
    let server = TestServer::start(Options {
        sms_url: Some(sink.url.clone()),
        mode: "append",
        no_token: "reject",
        extra: portal.into(),
        extra_users: hanna,
        ..Options::default()
    });
    let base = format!("http://{}", server.portal.unwrap());
    // carol's phone, then five wrong codes: her second factor locks, and even the right code fails.
    let seed = crate::harness::enroll(&server.config, "carol");
    for _ in 0..5 {
        assert_eq!(radius_login(&server, "carol", &format!("{CAROL_PASSWORD}000000")), crate::oracle::ACCESS_REJECT);
    }
    let right = crate::harness::totp_code(&seed, 0);
    assert_eq!(radius_login(&server, "carol", &format!("{CAROL_PASSWORD}{right}")), crate::oracle::ACCESS_REJECT, "locked");

    let profile = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut shots = Shots::in_dir("target/portal-e2e-helpdesk");
    let temporary = runtime.block_on(async {
        let (_driver, client) = browser(&chromedriver, profile.path()).await;

        // alice is no help desk: no tab, and 403 on every helpdesk address, whatever she adds.
        sign_in_by_sms(&client, &base, &sink, "alice", crate::harness::ALICE_PASSWORD, "en").await;
        assert!(!client.source().await.unwrap().contains("href=\"/helpdesk\""), "no HELPDESK tab for alice");
        for path in
            ["/helpdesk?q=car", "/helpdesk/users/carol", "/helpdesk/users/carol/unlock", "/helpdesk/users/carol/temporary-code?helpdesk=1"]
        {
            client.goto(&format!("{base}{path}")).await.unwrap();
            let source = client.source().await.unwrap();
            assert!(source.contains("This page is for the help desk only."), "{path}: {source}");
            assert!(!source.contains("Carol"), "{path} tells nothing of carol");
        }
        shots.take(&client, "forbidden-en").await;

        // hanna is: HELPDESK, find carol, see why she cannot log in.
        sign_in_by_sms(&client, &base, &sink, "hanna", HANNA_PASSWORD, "en").await;
        click_to(&client, "nav a[href='/helpdesk']", "/helpdesk").await;
        fill(&client, "#q", "car").await;
        click(&client, "form[action='/helpdesk'] button").await;
        wait(&client, |_, source| source.contains("id=\"results\""), "the results").await;
        shots.take(&client, "search-en").await;
        click_to(&client, "#results a[href='/helpdesk/users/carol']", "/helpdesk/users/carol").await;
        let lockouts = text(&client, "#lockouts").await;
        assert!(lockouts.contains("UTC"), "carol's code lock shows its end: {lockouts}");
        let events = text(&client, "#events").await;
        assert!(events.contains("wrong_code") && events.contains("second_factor_locked"), "{events}");
        assert_eq!(text(&client, "#tokens .token-name").await, "Test phone");
        shots.take(&client, "user-locked-en").await;
        visit(&client, &base, "/helpdesk/users/carol", "sv").await;
        shots.take(&client, "user-locked-sv").await;
        visit(&client, &base, "/helpdesk?q=car", "sv").await;
        shots.take(&client, "search-sv").await;
        visit(&client, &base, "/helpdesk/users/carol/unlock", "sv").await;
        shots.take(&client, "unlock-confirm-sv").await;
        let remove = client.find(Locator::Css("a[href^='/helpdesk/users/carol/tokens/']")).await;
        assert!(remove.is_err(), "the confirm page has no token links");
        visit(&client, &base, "/helpdesk/users/carol", "sv").await;
        let remove_path = client.find(Locator::Css("#tokens a")).await.unwrap().attr("href").await.unwrap().unwrap();
        visit(&client, &base, &remove_path, "sv").await;
        shots.take(&client, "remove-confirm-sv").await;

        // Unlock (confirmed), in English.
        visit(&client, &base, "/helpdesk/users/carol/unlock", "en").await;
        shots.take(&client, "unlock-confirm-en").await;
        click_to(&client, "form[action='/helpdesk/users/carol/unlock'] button", "/helpdesk/users/carol").await;
        assert!(!text(&client, "#lockouts").await.contains("UTC"), "unlocked");
        shots.take(&client, "unlocked-en").await;
        // Remove the lost phone (confirmed).
        visit(&client, &base, &remove_path, "en").await;
        shots.take(&client, "remove-confirm-en").await;
        click_to(&client, &format!("form[action='{remove_path}'] button"), "/helpdesk/users/carol").await;
        assert!(client.find(Locator::Css("#no-device")).await.is_ok(), "no token left");
        // A temporary code: one in English first, then one for two logins in Swedish, which
        // replaces it.
        visit(&client, &base, "/helpdesk/users/carol/temporary-code", "en").await;
        shots.take(&client, "issue-en").await;
        click(&client, "form[action='/helpdesk/users/carol/temporary-code'] button").await;
        wait(&client, |_, source| source.contains("id=\"temporary-code\""), "the code").await;
        let first = text(&client, "#temporary-code").await;
        shots.take(&client, "code-en").await;
        visit(&client, &base, "/helpdesk/users/carol/temporary-code", "sv").await;
        shots.take(&client, "issue-sv").await;
        let uses = client.find(Locator::Css("#uses")).await.unwrap();
        uses.clear().await.unwrap();
        uses.send_keys("2").await.unwrap();
        click(&client, "form[action='/helpdesk/users/carol/temporary-code'] button").await;
        wait(&client, |_, source| source.contains("id=\"temporary-code\""), "the second code").await;
        let code = text(&client, "#temporary-code").await;
        assert_eq!(text(&client, "#uses").await, "2");
        shots.take(&client, "code-sv").await;
        assert!(code.len() == 8 && code.bytes().all(|b| b.is_ascii_digit()) && code != first, "{code} {first}");
        visit(&client, &base, "/helpdesk/users/carol", "en").await;
        let listed = text(&client, "#temporary-codes").await;
        assert!(listed.contains("hanna") && !listed.contains(&code), "{listed}");
        shots.take(&client, "user-after-en").await;
        visit(&client, &base, "/helpdesk/users/carol/temporary-code/revoke", "en").await;
        shots.take(&client, "revoke-confirm-en").await;
        visit(&client, &base, "/helpdesk/users/carol/temporary-code/revoke", "sv").await;
        shots.take(&client, "revoke-confirm-sv").await;
        let first_works = radius_login(&server, "carol", &format!("{CAROL_PASSWORD}{first}"));
        assert_eq!(first_works, crate::oracle::ACCESS_REJECT, "the first code was replaced");

        // carol over RADIUS with her password and the temporary code: in.
        let input = format!("User-Name = carol\nUser-Password = \"{CAROL_PASSWORD}{code}\"\nMessage-Authenticator = 0x00\n");
        if let Some(out) = radclient(server.auth, "auth", SECRET, &input) {
            assert!(out.stdout.contains("Received Access-Accept"), "{}", out.stdout);
        }
        // ...and at the portal, in place of an app's code, to enroll her new phone.
        client.delete_all_cookies().await.unwrap();
        client.goto(&format!("{base}/signin?lang=en")).await.unwrap();
        fill(&client, "#username", "carol").await;
        fill(&client, "#password", CAROL_PASSWORD).await;
        click_to(&client, "form[action='/signin'] button", "/otp").await;
        fill(&client, "#code", &code).await;
        shots.take(&client, "carol-temporary-code").await;
        click_to(&client, "form[action='/otp'] button", "/general").await;
        click_to(&client, "nav a[href='/tokens']", "/tokens").await;
        click_to(&client, "a[href='/tokens/new']", "/tokens/new").await;
        fill(&client, "#name", "New phone").await;
        click_to(&client, "form[action='/tokens/new'] button", "/tokens/new/scan").await;
        let uri = decode_qr(&shots.take(&client, "carol-new-phone").await);
        click_to(&client, "a[href='/tokens/new/confirm']", "/tokens/new/confirm").await;
        let totp = totp_rs::TOTP::from_url_unchecked(&uri).unwrap();
        fill(&client, "#code", &totp.generate_current().unwrap()).await;
        click_to(&client, "form[action='/tokens/new/confirm'] button", "/tokens").await;
        assert_eq!(text(&client, ".token-name").await, "New phone");
        assert!(!client.source().await.unwrap().contains("href=\"/helpdesk\""), "carol has no HELPDESK tab");
        client.close().await.unwrap();
        code
    });

    // Two uses, both taken: the code no longer logs in.
    assert_eq!(radius_login(&server, "carol", &format!("{CAROL_PASSWORD}{temporary}")), crate::oracle::ACCESS_REJECT);
    // Every action in the trail, with its actor; the code in none of it.
    // The server writes its queued events about once a second.
    let show = || String::from_utf8(crate::harness::admin(&server.config, &["user", "show", "carol", "--events", "60"]).stdout).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let mut shown = show();
    while !shown.contains("portal_enroll") && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
        shown = show();
    }
    for expected in ["unlock", "remove_token", "issue_temporary_code", "by hanna", "temporary_code", "portal_enroll", "Test phone"] {
        assert!(shown.contains(expected), "{expected} in:\n{shown}");
    }
    assert_eq!(shown.matches("issue_temporary_code").count(), 2, "{shown}");
    assert!(!shown.contains(&temporary), "{shown}");
}
