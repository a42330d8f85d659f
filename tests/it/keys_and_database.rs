//! Keys and database under a running server: `keys rotate` while it serves (logins and
//! enrollments keep working, no restart), a database deleted under it (noticed and logged; a
//! restart refused rather than starting empty), and a database that is not writable at start
//! (not READY until it is, then serving without a restart).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{ALICE_PASSWORD, CAROL_PASSWORD, Options, SmsSink, TestServer, admin, binary, enroll, totp_code};
use crate::http::Http;
use crate::oracle::{self, ACCESS_ACCEPT};

const WAIT: Duration = Duration::from_secs(10);
const PORTAL: &str = "[portal]\nenabled = true\nlisten = \"127.0.0.1:0\"\n";

fn login(server: &TestServer, user: &str, password: &str) -> u8 {
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    let answer = oracle::exchange(&socket, &oracle::encode_signed(oracle::access_request(user, password)), WAIT).expect("an answer");
    oracle::code(&answer)
}

/// carol signs in to the portal with her password and an SMS code, and adds an authenticator:
/// the running server seals its seed. Returns the seed (base32) as the page showed it.
fn enroll_through_the_portal(server: &TestServer, sms: &SmsSink) -> String {
    let mut web = Http::new(server.portal.expect("the portal is enabled"));
    let csrf = web.get("/signin").csrf();
    let signed = web.post("/signin", &[("csrf", &csrf), ("username", "carol"), ("password", CAROL_PASSWORD)]);
    assert_eq!(signed.status, 303, "{}", signed.body);
    let csrf = web.get("/otp").csrf();
    assert_eq!(web.post("/otp", &[("csrf", &csrf), ("code", &sms.last_code())]).status, 303);
    let csrf = web.get("/tokens/new").csrf();
    assert_eq!(web.post("/tokens/new", &[("csrf", &csrf), ("name", "Rotation phone")]).status, 303);
    let scan = web.get("/tokens/new/scan");
    let at = scan.body.find("<code id=\"secret\">").expect("the key is shown") + 18;
    let seed: String = scan.body[at..].split('<').next().unwrap().split_whitespace().collect();
    let csrf = web.get("/tokens/new/confirm").csrf();
    let done = web.post("/tokens/new/confirm", &[("csrf", &csrf), ("code", &totp_code(&seed, 0))]);
    assert_eq!(done.status, 303, "confirmed: {}", done.body);
    seed
}

#[test]
fn rotating_keys_under_a_running_server_keeps_every_login_and_enrollment_working() {
    let sms = SmsSink::start();
    let server = TestServer::start(Options {
        mode: "append",
        no_token: "sms",
        sms_url: Some(sms.url.clone()),
        extra: PORTAL.into(),
        ..Options::default()
    });
    let alice = enroll(&server.config, "alice");
    let key_file = server.dir().join("master.key");
    let rotation = Command::new(binary())
        .args(["keys", "rotate", "--config"])
        .arg(&server.config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + WAIT;
    while !std::fs::read_to_string(&key_file).unwrap_or_default().contains("\nk2 ") {
        assert!(Instant::now() < until, "the rotation never wrote the new key");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Mid-rotation, before the server has necessarily seen the new key, it seals a new seed.
    let carol = enroll_through_the_portal(&server, &sms);
    let done = rotation.wait_with_output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(String::from_utf8_lossy(&done.stdout).contains("the old key is removed"), "{}", String::from_utf8_lossy(&done.stdout));
    let keys = std::fs::read_to_string(&key_file).unwrap();
    assert!(keys.contains("\nk2 ") && !keys.contains("\nk1 "), "only the new key remains: {keys}");
    // No restart: the server took up the new key and every seed opens with it.
    assert_eq!(
        login(&server, "alice", &format!("{ALICE_PASSWORD}{}", totp_code(&alice, 0))),
        ACCESS_ACCEPT,
        "a seed resealed by the rotation"
    );
    assert_eq!(login(&server, "carol", &format!("{CAROL_PASSWORD}{}", totp_code(&carol, 1))), ACCESS_ACCEPT, "a seed enrolled during it");
    let list = String::from_utf8(admin(&server.config, &["token", "list"]).stdout).unwrap();
    assert_eq!(list.matches("active").count(), 2, "{list}");
    assert!(server.wait_for(|v| v["message"] == "key file changed: reloaded", WAIT).is_some());
}

#[test]
fn a_database_deleted_under_the_server_is_noticed_and_a_restart_without_it_refused() {
    let server = TestServer::start(Options { mode: "append", no_token: "password_only", ..Options::default() });
    let seed = enroll(&server.config, "alice");
    for file in ["radmfa.db", "radmfa.db-wal", "radmfa.db-shm"] {
        let _ = std::fs::remove_file(server.dir().join(file));
    }
    let noticed = server.wait_for(|v| v["message"].as_str().is_some_and(|m| m.starts_with("the database file is gone")), WAIT);
    assert!(noticed.is_some_and(|v| v["problem"].as_str().unwrap().contains("deleted")), "an error line within seconds");
    // Still serving from the open file meanwhile: the enrolled user still needs her code.
    assert_eq!(login(&server, "alice", ALICE_PASSWORD), oracle::ACCESS_REJECT);
    assert_eq!(login(&server, "alice", &format!("{ALICE_PASSWORD}{}", totp_code(&seed, 0))), ACCESS_ACCEPT);
    let (dir, config) = server.into_parts();
    // A restart would find the key and no database: refused, not started empty (where alice
    // would be let in with her password alone).
    let mut restarted = TestServer::launch(dir, config.clone(), None, &[]);
    let status = restarted.wait_exit(WAIT).expect("it exits instead of serving");
    assert!(!status.success());
    let said = restarted.logs().iter().filter_map(|v| v["raw"].as_str().map(str::to_owned)).collect::<Vec<_>>().join("\n");
    assert!(said.contains("radmfa.db does not exist, but the key file") && said.contains("no_token"), "{said}");
    assert!(!restarted.dir().join("radmfa.db").exists(), "no empty database was made");
    let check = admin(&config, &["check-config"]);
    assert!(!check.status.success() && String::from_utf8_lossy(&check.stderr).contains("does not exist"));
}

#[test]
fn portal_audit_lines_name_the_client_behind_a_trusted_proxy_only() {
    let sms = SmsSink::start();
    let portal = format!("{PORTAL}trusted_proxies = [\"127.0.0.1\"]\n");
    let server = TestServer::start(Options { no_token: "sms", sms_url: Some(sms.url.clone()), extra: portal, ..Options::default() });
    let mut web = Http::new(server.portal.unwrap());
    web.headers.push(("X-Forwarded-For".into(), "203.0.113.66, 198.51.100.7".into()));
    let csrf = web.get("/signin").csrf();
    web.post("/signin", &[("csrf", &csrf), ("username", "carol"), ("password", "not-her-password")]);
    let line = server.wait_for(|v| v["client"] == "portal" && v["step"] == "sign_in_password", WAIT).expect("an audit line");
    assert_eq!(line["from"], "198.51.100.7", "the right-most address the trusted proxy added: {line}");
    drop(server);
    let server = TestServer::start(Options { no_token: "sms", sms_url: Some(sms.url.clone()), extra: PORTAL.into(), ..Options::default() });
    let mut web = Http::new(server.portal.unwrap());
    web.headers.push(("X-Forwarded-For".into(), "198.51.100.7".into()));
    let csrf = web.get("/signin").csrf();
    web.post("/signin", &[("csrf", &csrf), ("username", "carol"), ("password", "not-her-password")]);
    let line = server.wait_for(|v| v["client"] == "portal" && v["step"] == "sign_in_password", WAIT).expect("an audit line");
    assert_eq!(line["from"], "127.0.0.1", "no trusted proxy: the header is the client's to forge, so it is ignored: {line}");
}

#[test]
fn an_empty_database_file_is_refused_and_a_stopped_server_leaves_a_complete_one() {
    let server = TestServer::start(Options { mode: "append", no_token: "password_only", ..Options::default() });
    let seed = enroll(&server.config, "alice");
    assert_eq!(login(&server, "alice", &format!("{ALICE_PASSWORD}{}", totp_code(&seed, 0))), ACCESS_ACCEPT);
    let (dir, config) = server.into_parts();
    // Stopped cleanly: radmfa.db alone (what a backup copies) holds the token.
    assert!(!dir.path().join("radmfa.db-wal").exists() || std::fs::metadata(dir.path().join("radmfa.db-wal")).unwrap().len() == 0);
    let list = String::from_utf8(admin(&config, &["token", "list"]).stdout).unwrap();
    assert!(list.contains("alice"), "{list}");
    // An empty file where the database was: refused, not taken for a store with no tokens.
    std::fs::write(dir.path().join("radmfa.db"), b"").unwrap();
    for wal in ["radmfa.db-wal", "radmfa.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(wal));
    }
    let mut restarted = TestServer::launch(dir, config, None, &[]);
    assert!(!restarted.wait_exit(WAIT).expect("it exits instead of serving").success());
    let said = restarted.logs().iter().filter_map(|v| v["raw"].as_str().map(str::to_owned)).collect::<Vec<_>>().join("\n");
    assert!(said.contains("holds no radmfa tables"), "{said}");
}

fn uid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn a_database_not_writable_at_start_means_not_ready_until_it_is() {
    let server = TestServer::start(Options { mode: "append", no_token: "reject", ..Options::default() });
    let seed = enroll(&server.config, "alice");
    let (dir, config) = server.into_parts();
    let db = dir.path().join("radmfa.db");
    // root writes whatever the mode says, so as root the server runs as nobody instead.
    let wrapper: Vec<&str> = if uid() == 0 {
        let chown = Command::new("chown").args(["-R", "65534:65534"]).arg(dir.path()).status().unwrap();
        assert!(chown.success());
        vec!["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    } else {
        Vec::new()
    };
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o400)).unwrap();
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o777)).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut server = TestServer::launch(dir, config, Some(notify_path), &wrapper);
    let mut buf = [0u8; 512];
    assert!(notify.recv(&mut buf).is_err(), "not READY while the database is read-only");
    assert!(
        server.wait_for(|v| v["message"].as_str().is_some_and(|m| m.starts_with("the database is not writable")), WAIT).is_some(),
        "{:?}",
        server.logs()
    );
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    notify.set_read_timeout(Some(WAIT)).unwrap();
    let n = notify.recv(&mut buf).expect("READY once the database is writable");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    server.wait_listening(WAIT);
    assert_eq!(login(&server, "alice", &format!("{ALICE_PASSWORD}{}", totp_code(&seed, 0))), ACCESS_ACCEPT, "no restart needed");
}

#[test]
fn keys_made_or_rotated_by_root_stay_the_service_users() {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) != 0 {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "this test needs root on CI");
        eprintln!("SKIPPED: needs root");
        return;
    }
    // A state folder that belongs to the service user (nobody here), as /var/lib/radmfa is radmfa's.
    let dir = tempfile::tempdir().unwrap();
    crate::harness::write_users(dir.path());
    let config = crate::harness::write_config(dir.path(), &Options::default());
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    let owner = |name: &str| std::fs::metadata(dir.path().join(name)).map(|m| (m.uid(), m.gid())).unwrap();
    let keygen = crate::harness::admin(&config, &["keygen"]);
    assert!(keygen.status.success(), "{}", String::from_utf8_lossy(&keygen.stderr));
    assert_eq!(owner("master.key"), (65534, 65534), "keygen run as root");
    assert_eq!(owner("radmfa.db"), (65534, 65534));
    // The service user plants links where root writes (its own folder): root's files stay root's.
    let victim = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(victim.path(), "root's own\n").unwrap();
    for name in ["master.tmp", "master.key.tmp"] {
        std::os::unix::fs::symlink(victim.path(), dir.path().join(name)).unwrap();
    }
    let rotate = crate::harness::admin(&config, &["keys", "rotate"]);
    assert!(rotate.status.success(), "{}", String::from_utf8_lossy(&rotate.stderr));
    assert_eq!(owner("master.key"), (65534, 65534), "keys rotate run as root");
    assert!(!std::fs::symlink_metadata(dir.path().join("master.key")).unwrap().file_type().is_symlink());
    assert_eq!(owner("master.lock"), (65534, 65534), "the lock root made stays openable by the service user");
    let meta = std::fs::metadata(victim.path()).unwrap();
    assert_eq!((meta.uid(), std::fs::read_to_string(victim.path()).unwrap().as_str()), (0, "root's own\n"));
}
