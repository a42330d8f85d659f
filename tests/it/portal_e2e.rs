//! The self-service portal end to end, as a user does it: headless Chromium (Debian's chromium
//! and chromedriver, driven over WebDriver) signs in with password and SMS code, reads GENERAL,
//! adds "My phone" on TOKENS by scanning the QR code — taken off a screenshot and decoded as an
//! image — confirms a code computed from it, and then logs in over RADIUS with radclient.
//! Screenshots of every step land in target/portal-e2e/.

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
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/portal-e2e");
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
