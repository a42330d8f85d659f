//! The directory is a real Active Directory (Samba AD DC, see `samba`): the AD password as
//! first factor over verified LDAPS, AD's refusal reasons, nested required groups, groups back to
//! the NAS, hostile user names, non-ASCII and Latin-1 passwords, failover and outage; and what the
//! help desk asks of it (search, groups, account state).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Options, SECRET, TestServer, enroll, radclient, totp_code};
use crate::oracle::{self, ACCESS_ACCEPT, ACCESS_REJECT};
use crate::samba::{
    self, ALICE, ASA, BOB, DORA_DISABLED, EVE_EXPIRED, HD_AGENT, HD_TO_DISABLE, HD_TO_EXPIRE, HD_TO_LOCK, HENRY_UPN, MIKE_MUST_CHANGE, NINA,
};
use radmfa::directory::ldap::LdapDirectory;
use radmfa::directory::settings::{DirectorySection, DirectorySettings};
use radmfa::directory::{Account, AccountStatus, Directory, LoginName, MAX_SEARCH_RESULTS};

const WAIT: Duration = Duration::from_secs(10);

fn ad_server(dc: &samba::Dc, urls: &[String], extra_directory: &str, no_token: &'static str) -> TestServer {
    ad_server_in(dc, urls, extra_directory, "append", no_token)
}

fn ad_server_in(dc: &samba::Dc, urls: &[String], extra_directory: &str, mode: &'static str, no_token: &'static str) -> TestServer {
    TestServer::start(Options {
        directory: Some(dc.directory_section(urls, extra_directory)),
        mode,
        no_token,
        extra: "[[client]]\nname = \"latin1-nas\"\naddress = \"127.0.0.2\"\nsecret = \"testing123\"\nrequire_message_authenticator = false\nno_token = \"password_only\"\npassword_encoding = \"latin-1\"\n".into(),
        ..Options::default()
    })
}

fn ask_from(local: &str, server: &TestServer, user: &str, password: &[u8]) -> Vec<u8> {
    let socket = oracle::socket(local, server.auth);
    let mut packet = radius::core::packet::Packet::new(radius::core::code::Code::AccessRequest, SECRET.as_bytes());
    radius::core::rfc2865::add_user_name(&mut packet, user);
    radius::core::rfc2865::add_user_password(&mut packet, password).unwrap();
    let request = oracle::encode_signed(packet);
    oracle::exchange(&socket, &request, WAIT).expect("an answer")
}

fn ask(server: &TestServer, user: &str, password: &str) -> Vec<u8> {
    ask_from("127.0.0.1:0", server, user, password.as_bytes())
}

fn last_reason(server: &TestServer, n: usize) -> String {
    server.wait_for_audit(n)[n - 1]["reason"].as_str().unwrap().to_owned()
}

#[test]
fn ad_password_and_totp_accept_with_nested_groups_sent_to_the_nas() {
    let Some(dc) = samba::dc() else { return };
    let server = ad_server(dc, std::slice::from_ref(&dc.url), "", "reject");
    let seed = enroll(&server.config, ALICE.0);
    let input = format!("User-Name = {}\nUser-Password = \"{}{}\"\nMessage-Authenticator = 0x00\n", ALICE.0, ALICE.1, totp_code(&seed, 0));
    let Some(out) = radclient(server.auth, "auth", SECRET, &input) else { return };
    let out = out.stdout;
    assert!(out.contains("Received Access-Accept"), "{out}");
    // alice is in Staff (nested into VPN-Users) and Citrix-Admins; the client's group_filter
    // "^VPN-" lets only VPN-Users through, which she holds only through the nesting.
    assert!(out.contains("Citrix-User-Groups = \"VPN-Users\""), "nested membership: {out}");
    assert!(!out.contains("\"Staff\"") && !out.contains("\"Citrix-Admins\""), "group_filter holds the rest back: {out}");
    // The same user in another spelling of the directory's case is the same account.
    let code = totp_code(&seed, 1);
    assert_eq!(oracle::code(&ask(&server, "ALICE", &format!("{}{code}", ALICE.1))), ACCESS_ACCEPT);
}

#[test]
fn groups_reach_the_nas_on_the_final_accept_of_a_challenge_round() {
    let Some(dc) = samba::dc() else { return };
    let server = ad_server_in(dc, std::slice::from_ref(&dc.url), "", "challenge", "reject");
    let seed = enroll(&server.config, ALICE.0);
    let challenge = ask(&server, ALICE.0, ALICE.1);
    assert_eq!(oracle::code(&challenge), crate::oracle::ACCESS_CHALLENGE);
    let state = oracle::state_of(&challenge).unwrap();
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    let request = oracle::encode_signed(oracle::access_request_with_state(ALICE.0, &totp_code(&seed, 0), &state));
    let accept = oracle::exchange(&socket, &request, WAIT).unwrap();
    assert_eq!(oracle::code(&accept), ACCESS_ACCEPT);
    assert!(accept.windows(b"VPN-Users".len()).any(|w| w == b"VPN-Users"), "Citrix-User-Groups on the final Accept");
}

#[test]
fn ad_refusals_reject_with_their_sub_code_as_the_audit_reason() {
    let Some(dc) = samba::dc() else { return };
    let server = ad_server(dc, std::slice::from_ref(&dc.url), "", "password_only");
    let cases = [
        (ALICE.0, "Not-Her-Passw0rd!", "wrong_password"),                 // 52e
        (DORA_DISABLED.0, DORA_DISABLED.1, "account_disabled"),           // 533
        (MIKE_MUST_CHANGE.0, MIKE_MUST_CHANGE.1, "must_change_password"), // 773
        (EVE_EXPIRED.0, EVE_EXPIRED.1, "account_expired"),                // 701
        (BOB.0, BOB.1, "not_in_required_group"),
        ("nobody", "Whatever-1!", "no_such_user"),
    ];
    for (i, (user, password, reason)) in cases.iter().enumerate() {
        let answer = ask(&server, user, password);
        assert_eq!(oracle::code(&answer), ACCESS_REJECT, "{user}");
        assert_eq!(oracle::reply_message(&answer).as_deref(), Some("Authentication failed"), "one generic message for the NAS");
        assert_eq!(last_reason(&server, i + 1), *reason, "{user}");
    }
}

#[test]
fn ldap_injection_user_names_find_nobody_and_break_nothing() {
    let Some(dc) = samba::dc() else { return };
    let server = ad_server(dc, std::slice::from_ref(&dc.url), "", "password_only");
    for (i, name) in ["*", "*)(cn=*", "alice)(|(sAMAccountName=*", "al*", "\\2a", "*)(objectClass=*))(&(cn=x"].iter().enumerate() {
        assert_eq!(oracle::code(&ask(&server, name, ALICE.1)), ACCESS_REJECT, "{name}");
        assert_eq!(last_reason(&server, i + 1), "no_such_user", "{name}");
    }
    assert!(!server.logs().iter().any(|v| v["level"] == "ERROR"), "no directory error: {:?}", server.logs());
}

#[test]
fn non_ascii_names_and_passwords_work_in_utf8_and_latin1() {
    let Some(dc) = samba::dc() else { return };
    let server = ad_server(dc, std::slice::from_ref(&dc.url), "", "password_only");
    assert_eq!(oracle::code(&ask(&server, ASA.0, ASA.1)), ACCESS_ACCEPT, "UTF-8 name and password");
    // A NAS that sends Latin-1: the password's bytes are ISO-8859-1, not UTF-8.
    let latin1: Vec<u8> = ASA.1.chars().map(|c| c as u32 as u8).collect();
    assert_ne!(latin1, ASA.1.as_bytes());
    assert_eq!(oracle::code(&ask_from("127.0.0.2:0", &server, ASA.0, &latin1)), ACCESS_ACCEPT, "Latin-1 client");
    assert_eq!(oracle::code(&ask_from("127.0.0.1:0", &server, ASA.0, &latin1)), ACCESS_REJECT, "the same bytes from a UTF-8 client");
}

#[test]
fn a_dead_first_server_is_skipped_and_not_retried_per_request() {
    let Some(dc) = samba::dc() else { return };
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("ldaps://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed); // nothing listens there now
    let server = ad_server(dc, &[dead.clone(), dc.url.clone()], "dead_server_backoff = \"60s\"", "password_only");
    for _ in 0..4 {
        assert_eq!(oracle::code(&ask(&server, ASA.0, ASA.1)), ACCESS_ACCEPT);
    }
    let skipped = server
        .logs()
        .iter()
        .filter(|v| v["message"] == "LDAP server failing; the other servers are asked until the back-off has passed")
        .count();
    assert_eq!(skipped, 1, "the dead server cost one attempt, not one per request");
}

#[test]
fn a_skipped_server_is_still_asked_before_anyone_is_rejected() {
    let Some(dc) = samba::dc() else { return };
    let (mut first, second) = (Relay::start(), Relay::start());
    let server = ad_server(dc, &[first.url(), second.url()], "dead_server_backoff = \"60s\"", "password_only");
    first.down();
    assert_eq!(oracle::code(&ask(&server, ASA.0, ASA.1)), ACCESS_ACCEPT, "the second server answers");
    // The first comes back within its back-off while the second goes: the skipped one is asked
    // last, not left out.
    first.up_again();
    second.down();
    assert_eq!(oracle::code(&ask(&server, ASA.0, ASA.1)), ACCESS_ACCEPT, "{:?}", server.audit());
    assert_eq!(oracle::code(&ask(&server, ASA.0, ASA.1)), ACCESS_ACCEPT);
    // One line per change of state: the first skipped; the second failing with no other left
    // (it is never skipped then); the first answering again.
    let said = |m: &str| server.logs().iter().filter(|v| v["message"] == m).count();
    assert_eq!(said("LDAP server failing; the other servers are asked until the back-off has passed"), 1);
    assert_eq!(said("LDAP server failing, and no other server is available: still asking it"), 1);
    assert_eq!(said("LDAP server answers again"), 1);
}

/// A TCP relay to the DC that can be taken down and brought back, to play an outage, and can
/// hold back what the DC sends, to play a DC that answers slowly.
struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
    open: Arc<std::sync::Mutex<Vec<TcpStream>>>,
    /// Milliseconds each chunk from the DC is held back.
    delay_ms: Arc<AtomicU64>,
}

impl Relay {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let relay = Self { port, up: Arc::new(AtomicBool::new(true)), open: Default::default(), delay_ms: Default::default() };
        relay.serve(listener);
        relay
    }

    fn url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.port)
    }

    fn delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    fn serve(&self, listener: TcpListener) {
        let up = Arc::clone(&self.up);
        let open = Arc::clone(&self.open);
        let delay_ms = Arc::clone(&self.delay_ms);
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while up.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(upstream) = TcpStream::connect("127.0.0.1:636") else { continue };
                        open.lock().unwrap().extend([client.try_clone().unwrap(), upstream.try_clone().unwrap()]);
                        let (mut from, mut to) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                        let (mut from, mut to) = (upstream, client);
                        let delay_ms = Arc::clone(&delay_ms);
                        std::thread::spawn(move || {
                            let mut buffer = [0u8; 16384];
                            while let Ok(n @ 1..) = from.read(&mut buffer) {
                                std::thread::sleep(Duration::from_millis(delay_ms.load(Ordering::SeqCst)));
                                if to.write_all(&buffer[..n]).is_err() {
                                    break;
                                }
                            }
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
    }

    /// Stops accepting (the port refuses connections) and cuts the open ones.
    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    fn up_again(&mut self) {
        self.up = Arc::new(AtomicBool::new(true));
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        self.serve(listener);
    }
}

#[test]
fn with_every_server_down_logins_fail_fast_and_resume_when_the_dc_returns() {
    let Some(dc) = samba::dc() else { return };
    let mut relay = Relay::start();
    let server = ad_server(dc, &[relay.url()], "dead_server_backoff = \"1s\"", "password_only");
    assert_eq!(oracle::code(&ask(&server, ASA.0, ASA.1)), ACCESS_ACCEPT);
    relay.down();
    let asked = Instant::now();
    assert_eq!(oracle::code(&ask(&server, ASA.0, ASA.1)), ACCESS_REJECT, "the directory is gone");
    let waited = asked.elapsed();
    assert!(waited < Duration::from_secs(8), "answered within the LDAP timeout (2 s per try), not left hanging: {waited:?}");
    assert_eq!(last_reason(&server, 2), "directory_unavailable");
    relay.up_again();
    std::thread::sleep(Duration::from_millis(1200)); // the back-off
    assert_eq!(oracle::code(&ask(&server, ASA.0, ASA.1)), ACCESS_ACCEPT, "service resumes when the DC is back");
}

#[test]
fn starttls_upn_and_certificate_checking() {
    let Some(dc) = samba::dc() else { return };
    // StartTLS on 389, and a user principal name through upn_filter.
    let server = ad_server(dc, &["ldap://127.0.0.1:389".to_owned()], "starttls = true", "password_only");
    assert_eq!(oracle::code(&ask(&server, &format!("{}@example.test", ASA.0), ASA.1)), ACCESS_ACCEPT);
    drop(server);
    // Without the CA file the DC's certificate is not trusted, and nothing is sent to it.
    let directory =
        dc.directory_section(std::slice::from_ref(&dc.url), "").replace(&format!("ca_file = \"{}\"\n", dc.ca_file.display()), "");
    assert!(!directory.contains("ca_file"));
    let server = TestServer::start(Options { directory: Some(directory), mode: "append", no_token: "password_only", ..Options::default() });
    assert_eq!(oracle::code(&ask(&server, ASA.0, ASA.1)), ACCESS_REJECT);
    assert_eq!(last_reason(&server, 1), "directory_unavailable");
    let complaint = server.logs().iter().any(|v| v["error"].as_str().is_some_and(|e| e.to_lowercase().contains("certificate")));
    assert!(complaint, "the log says why: {:?}", server.logs());
}

#[test]
fn a_nas_flooding_unknown_names_does_not_starve_another_nas_at_the_directory() {
    let Some(dc) = samba::dc() else { return };
    // Every unknown name costs the DC a search: a flood of them from NAS A, as fast as a
    // misbehaving NAS or a spray sends, while NAS B's users log in.
    let server = TestServer::start(Options {
        directory: Some(dc.directory_section(std::slice::from_ref(&dc.url), "")),
        mode: "append",
        no_token: "password_only",
        max_in_flight: 256,
        extra: "[[client]]\nname = \"nas-b\"\naddress = \"127.0.0.2\"\nsecret = \"testing123\"\nno_token = \"password_only\"\n".into(),
        ..Options::default()
    });
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = {
        let (flooding, target) = (Arc::clone(&flooding), server.auth);
        std::thread::spawn(move || {
            let socket = oracle::socket("127.0.0.1:0", target);
            let mut sent = 0u64;
            while flooding.load(Ordering::Relaxed) {
                let _ = socket.send(&oracle::encode_signed(oracle::access_request(&format!("ghost-{sent}"), "Whatever-1!")));
                sent += 1;
                std::thread::sleep(Duration::from_micros(1500));
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let mut answered = 0;
    for _ in 0..15 {
        let b = oracle::socket("127.0.0.2:0", server.auth);
        let mut request = radius::core::packet::Packet::new(radius::core::code::Code::AccessRequest, SECRET.as_bytes());
        radius::core::rfc2865::add_user_name(&mut request, ASA.0);
        radius::core::rfc2865::add_user_password(&mut request, ASA.1.as_bytes()).unwrap();
        if oracle::exchange(&b, &oracle::encode_signed(request), Duration::from_secs(3)).is_some_and(|r| oracle::code(&r) == ACCESS_ACCEPT)
        {
            answered += 1;
        }
    }
    flooding.store(false, Ordering::Relaxed);
    let sent = flood.join().unwrap();
    assert_eq!(answered, 15, "every login of NAS B answered within 3 s while NAS A sent {sent} unknown names");
    let unavailable = server.audit().iter().filter(|v| v["reason"] == "directory_unavailable").count();
    assert_eq!(unavailable, 0, "the DC was never taken for dead");
}

#[test]
fn nested_membership_two_levels_down_and_its_removal() {
    let Some(dc) = samba::dc() else { return };
    let server = ad_server(dc, std::slice::from_ref(&dc.url), "group_cache_ttl = \"1s\"", "password_only");
    // nina is in Remote-Staff, in Staff, in VPN-Users (the required group).
    let accept = ask(&server, NINA.0, NINA.1);
    assert_eq!(oracle::code(&accept), ACCESS_ACCEPT);
    assert!(accept.windows(b"VPN-Users".len()).any(|w| w == b"VPN-Users"), "the group two levels up named to the NAS");
    let nina = format!("CN={},CN=Users,{}", NINA.0, samba::BASE_DN);
    samba::set_member(dc, samba::REMOTE_STAFF, &nina, false).unwrap();
    let refused = ask(&server, NINA.0, NINA.1);
    samba::set_member(dc, samba::REMOTE_STAFF, &nina, true).unwrap();
    assert_eq!(oracle::code(&refused), ACCESS_REJECT, "membership is read at every login, never cached");
    assert_eq!(last_reason(&server, 2), "not_in_required_group");
    assert_eq!(oracle::code(&ask(&server, NINA.0, NINA.1)), ACCESS_ACCEPT);
    // What groups are in is cached for group_cache_ttl: Remote-Staff taken out of Staff refuses
    // nina once that has passed.
    samba::set_member(dc, samba::STAFF, samba::REMOTE_STAFF, false).unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    let refused = ask(&server, NINA.0, NINA.1);
    samba::set_member(dc, samba::STAFF, samba::REMOTE_STAFF, true).unwrap();
    assert_eq!(oracle::code(&refused), ACCESS_REJECT, "a nesting removed is seen after group_cache_ttl");
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(oracle::code(&ask(&server, NINA.0, NINA.1)), ACCESS_ACCEPT, "and a nesting restored");
    // bob is in Finance only.
    assert_eq!(oracle::code(&ask(&server, BOB.0, BOB.1)), ACCESS_REJECT);
    assert_eq!(last_reason(&server, 6), "not_in_required_group");
}

#[test]
fn a_challenge_finishes_with_its_groups_when_the_dc_went_down_between_the_rounds() {
    let Some(dc) = samba::dc() else { return };
    let relay = Relay::start();
    let server = ad_server_in(dc, &[relay.url()], "", "challenge", "reject");
    let seed = enroll(&server.config, ALICE.0);
    let challenge = ask(&server, ALICE.0, ALICE.1);
    assert_eq!(oracle::code(&challenge), crate::oracle::ACCESS_CHALLENGE);
    relay.down();
    let state = oracle::state_of(&challenge).unwrap();
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    let request = oracle::encode_signed(oracle::access_request_with_state(ALICE.0, &totp_code(&seed, 0), &state));
    let accept = oracle::exchange(&socket, &request, WAIT).unwrap();
    assert_eq!(oracle::code(&accept), ACCESS_ACCEPT, "{:?}", server.audit());
    assert!(accept.windows(b"VPN-Users".len()).any(|w| w == b"VPN-Users"), "the first round's groups on the final Accept");
}

/// Sends `n` logins at once, each from its own socket, and returns the answers' codes (0: none
/// within `wait`).
fn burst(server: &TestServer, user: &str, password: &str, n: usize, wait: Duration) -> Vec<u8> {
    let sockets: Vec<_> = (0..n).map(|_| oracle::socket("127.0.0.1:0", server.auth)).collect();
    for socket in &sockets {
        socket.send(&oracle::encode_signed(oracle::access_request(user, password))).unwrap();
    }
    let until = Instant::now() + wait;
    let left = || until.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    sockets.iter().map(|s| oracle::receive(s, left()).map_or(0, |a| oracle::code(&a))).collect()
}

#[test]
fn a_dc_slower_than_the_timeout_under_a_burst_leaves_logins_unanswered_never_rejected() {
    let Some(dc) = samba::dc() else { return };
    let relay = Relay::start();
    let directory = dc.directory_section(&[relay.url()], "").replace("timeout = \"2s\"", "timeout = \"1s\"");
    let server = TestServer::start(Options { directory: Some(directory), mode: "append", no_token: "password_only", ..Options::default() });
    assert_eq!(oracle::code(&ask(&server, ASA.0, ASA.1)), ACCESS_ACCEPT);
    relay.delay(Duration::from_secs(3));
    let answers = burst(&server, ASA.0, ASA.1, 24, Duration::from_secs(6));
    assert!(!answers.contains(&ACCESS_REJECT), "a busy DC rejected a valid user: {answers:?} {:?}", server.audit());
    let audit = server.wait_for_audit(25);
    let reasons: Vec<&str> = audit[1..].iter().map(|v| v["reason"].as_str().unwrap()).collect();
    assert!(reasons.iter().all(|r| *r == "directory_busy"), "{reasons:?}");
    assert!(audit[1..].iter().all(|v| v["result"] == "none"));
    relay.delay(Duration::ZERO);
    assert_eq!(oracle::code(&ask(&server, ASA.0, ASA.1)), ACCESS_ACCEPT, "the NAS's retry gets in once the DC keeps up");
}

#[test]
fn a_code_typed_just_before_its_step_ends_is_accepted_when_the_directory_takes_seconds() {
    let Some(dc) = samba::dc() else { return };
    let relay = Relay::start();
    let directory = dc.directory_section(&[relay.url()], "").replace("timeout = \"2s\"", "timeout = \"5s\"");
    // Five-second steps and no window: only the code of the arrival's step is right.
    let server = TestServer::start(Options {
        directory: Some(directory),
        mode: "append",
        no_token: "reject",
        totp_extra: "period = 5\nwindow = 0",
        ..Options::default()
    });
    let seed = enroll(&server.config, ALICE.0);
    let code_at = |unix: u64| {
        let secret = totp_rs::Secret::Encoded(seed.clone()).to_bytes().unwrap();
        totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 0, 5, secret, None, String::new()).generate(unix)
    };
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    // A first login fills the group caches, so the timed one costs a search, a bind and a read.
    assert_eq!(oracle::code(&ask(&server, ALICE.0, &format!("{}{}", ALICE.1, code_at(now().as_secs())))), ACCESS_ACCEPT);
    relay.delay(Duration::from_millis(1500));
    // One second before the next step ends (this one's code is spent).
    let millis = now().as_millis() as u64;
    std::thread::sleep(Duration::from_millis((millis / 5000 + 1) * 5000 + 4000 - millis));
    let sent_at = now();
    let answer = ask(&server, ALICE.0, &format!("{}{}", ALICE.1, code_at(sent_at.as_secs())));
    let took = now() - sent_at;
    assert!(took >= Duration::from_secs(2), "the directory was slow: {took:?}");
    assert_eq!(oracle::code(&answer), ACCESS_ACCEPT, "{:?}", server.audit());
}

/// The `directory totals` line a server writes at stop: (searches, binds).
fn directory_operations(server: TestServer) -> (u64, u64) {
    let (_, _, logs) = server.stop_with_logs();
    let totals = logs.iter().find(|v| v["message"] == "directory totals").expect("a directory totals line");
    (totals["searches"].as_u64().unwrap(), totals["binds"].as_u64().unwrap())
}

#[test]
fn a_login_costs_the_dc_one_search_and_one_bind_with_groups_or_not_and_a_code_step_nothing() {
    let Some(dc) = samba::dc() else { return };
    // Nothing needs groups (no required_groups; the 127.0.0.2 client names none): no group work.
    let directory =
        dc.directory_section(std::slice::from_ref(&dc.url), "").replace(&format!("required_groups = [\"{}\"]\n", samba::VPN_USERS), "");
    let server = TestServer::start(Options {
        directory: Some(directory),
        mode: "append",
        no_token: "password_only",
        extra: "[[client]]\nname = \"plain-nas\"\naddress = \"127.0.0.2\"\nsecret = \"testing123\"\nno_token = \"password_only\"\n".into(),
        ..Options::default()
    });
    assert_eq!(oracle::code(&ask_from("127.0.0.2:0", &server, ALICE.0, ALICE.1.as_bytes())), ACCESS_ACCEPT);
    assert_eq!(directory_operations(server), (1, 1), "the user search and the bind");
    // Groups required and named, through nesting: the group graph is read once
    // per server (and cache period), so one login more costs one search and one bind more, and
    // the code step of each challenge nothing.
    let challenges = |logins: i64| {
        let server = ad_server_in(dc, std::slice::from_ref(&dc.url), "", "challenge", "reject");
        let seed = enroll(&server.config, ALICE.0);
        for step in (0..logins).map(|n| n - 1) {
            let challenge = ask(&server, ALICE.0, ALICE.1);
            let state = oracle::state_of(&challenge).unwrap();
            let socket = oracle::socket("127.0.0.1:0", server.auth);
            let request = oracle::encode_signed(oracle::access_request_with_state(ALICE.0, &totp_code(&seed, step), &state));
            let accept = oracle::exchange(&socket, &request, WAIT).unwrap();
            assert_eq!(oracle::code(&accept), ACCESS_ACCEPT);
            assert!(accept.windows(b"VPN-Users".len()).any(|w| w == b"VPN-Users"), "the group a level up named");
        }
        directory_operations(server)
    };
    let (one, three) = (challenges(1), challenges(3));
    assert_eq!(one.1, 1, "one bind");
    assert_eq!((three.0 - one.0, three.1 - one.1), (2, 2), "per login one search and one bind, per code step none");
    assert!(one.0 <= 1 + 5, "the user search, the required group, the primary group and a read per level of groups: {one:?}");
}

/// `radmfa check-config --connect` on a config whose `[directory]` is `directory`: exit status
/// and standard output.
fn check_connect(directory: String) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::harness::write_config(dir.path(), &Options { directory: Some(directory), ..Options::default() });
    let out = crate::harness::admin(&config, &["check-config", "--connect"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn check_config_connect_reports_tls_bind_and_reads_for_each_server() {
    let Some(dc) = samba::dc() else { return };
    let (ok, out) = check_connect(dc.directory_section(std::slice::from_ref(&dc.url), ""));
    assert!(ok, "{out}");
    let line = out.lines().find(|l| l.starts_with(&format!("directory {}: OK", dc.url))).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(&format!("LDAPS, certificate verified against {}", dc.ca_file.display())), "{line}");
    assert!(line.contains(&format!("bound as {}", samba::SERVICE_DN)), "{line}");
    assert!(line.contains(&format!("base_dn {} readable", samba::BASE_DN)), "{line}");
    assert!(line.contains(&format!("required group {} readable", samba::VPN_USERS)), "{line}");
    assert!(!out.contains(samba::SERVICE_PASSWORD), "the service password is never printed");

    // A second server where nothing listens: reported, the first still OK, exit status 1.
    let (ok, out) = check_connect(dc.directory_section(&[dc.url.clone(), "ldaps://127.0.0.1:1".into()], ""));
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("directory {}: OK", dc.url)), "{out}");
    assert!(out.contains("directory ldaps://127.0.0.1:1: FAILED") && out.contains("nothing listens there"), "{out}");

    // A wrong service password: AD's sub-code, and what to check.
    let wrong = dc.directory_section(std::slice::from_ref(&dc.url), "").replace(samba::SERVICE_PASSWORD, "Not-The-Passw0rd");
    let (ok, out) = check_connect(wrong);
    assert!(!ok && out.contains("FAILED") && out.contains("check bind_dn and bind_password"), "{out}");
    assert!(!out.contains("Not-The-Passw0rd"), "{out}");

    // A CA file that did not sign the DC's certificate.
    let other = tempfile::tempdir().unwrap();
    let certificate = crate::harness::portal_certificate(other.path());
    let ca = other.path().join("other-ca.pem");
    std::fs::write(&ca, certificate.ca_pem).unwrap();
    let untrusted =
        dc.directory_section(std::slice::from_ref(&dc.url), "").replace(&dc.ca_file.display().to_string(), &ca.display().to_string());
    let (ok, out) = check_connect(untrusted);
    assert!(!ok && out.contains("set ca_file to the CA that issued it"), "{out}");

    // A base DN that is not there.
    let missing = dc.directory_section(std::slice::from_ref(&dc.url), "").replace("base_dn = \"", "base_dn = \"OU=Gone,");
    let (ok, out) = check_connect(missing);
    assert!(!ok && out.contains("does not exist"), "{out}");
}

/// radmfa's own `LdapDirectory` against the DC, configured as `radmfa serve` would be, with a
/// runtime to drive it: the help desk's calls have no command line of their own.
fn library_directory(dc: &samba::Dc) -> (tokio::runtime::Runtime, LdapDirectory) {
    #[derive(serde::Deserialize)]
    struct First {
        directory: radmfa::directory::settings::DirectoryKind,
    }
    let text = dc.directory_section(std::slice::from_ref(&dc.url), "");
    let first: First = toml::from_str(&text).unwrap();
    let section = DirectorySection::read(&text, &first.directory).unwrap();
    let sources = radmfa::settings::Sources { base: std::path::Path::new("/"), env: &|_| None };
    let DirectorySettings::Ldap(settings) = section.build(&sources).unwrap() else { panic!("not LDAP") };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    (runtime, LdapDirectory::new(*settings).unwrap())
}

fn ids(accounts: &[Account]) -> Vec<&str> {
    accounts.iter().map(|a| a.id.as_str()).collect()
}

#[test]
fn helpdesk_search_finds_by_part_of_a_name_or_mail_escapes_the_text_and_is_capped() {
    let Some(dc) = samba::dc() else { return };
    let (runtime, directory) = library_directory(dc);
    let search = |text: &str, limit: usize| runtime.block_on(directory.search(text, limit)).unwrap();

    let found = search(" agath ", 10);
    assert_eq!(ids(&found), [HD_AGENT.0], "by part of the given name");
    let agent = &found[0];
    let by_name = runtime.block_on(directory.find(&LoginName::normalise(HD_AGENT.0, &[], &[]))).unwrap().unwrap();
    assert_eq!(agent, &by_name, "the account as a login finds it");
    assert_eq!(agent.profile.email.as_deref(), Some("hd.agent@example.test"));
    assert_eq!(ids(&search("GENT@EXAMPLE", 10)), [HD_AGENT.0], "by part of the mail, in any case");
    assert_eq!(ids(&search("Agatha Helpwell", 10)), [HD_AGENT.0], "given name and surname, each in its attribute");
    assert_eq!(ids(&search("Helpwell, Agatha", 10)), [HD_AGENT.0], "the display name as AD shows it");
    assert_eq!(ids(&search("öberg", 10)), [ASA.0], "non-ASCII");
    assert_eq!(ids(&search(&format!("{}@corp", HENRY_UPN.split('@').next().unwrap()), 10)), ["henry"], "by the UPN");

    // Filter syntax in the text is text: nothing extra is found, and nothing fails.
    for text in ["*", "*)(|(cn=*", "al*", "*)(objectClass=*))(&(cn=x", "\\", "\\2a", "agatha\0", ")", "("] {
        assert_eq!(ids(&search(text, 10)), Vec::<&str>::new(), "{text:?}");
    }
    assert!(search("", 10).is_empty() && search("   ", 10).is_empty());

    // Every test user's mail is in example.test: the server is asked for no more than the limit,
    // and says there are more (sizeLimitExceeded), which is an answer, not an error.
    let all = search("example.test", MAX_SEARCH_RESULTS);
    assert!(all.len() > 10, "{:?}", ids(&all));
    let capped = search("example.test", 3);
    assert_eq!(capped.len(), 3, "{:?}", ids(&capped));
    assert!(capped.iter().all(|a| all.contains(a)));
    assert!(search("example.test", 10_000).len() <= MAX_SEARCH_RESULTS);
    assert!(search("example.test", 0).is_empty());
}

#[test]
fn helpdesk_member_of_resolves_nesting_and_the_configured_spelling_cheaply() {
    let Some(dc) = samba::dc() else { return };
    let (runtime, directory) = library_directory(dc);
    let find = |name: &str| runtime.block_on(directory.find(&LoginName::normalise(name, &[], &[]))).unwrap().unwrap();
    let (agent, bob) = (find(HD_AGENT.0), find(BOB.0));
    // As an admin may write them: other case, spaces after commas; and a group that is gone.
    let helpdesk = samba::HELPDESK.to_lowercase().replace(',', ", ");
    let asked = [
        "CN=Finance,CN=Users,DC=example,DC=test".to_owned(),
        helpdesk.clone(),
        "CN=Gone,CN=Users,DC=example,DC=test".to_owned(),
        samba::HELPDESK_TIER1.to_owned(),
        "CN=Domain Users,CN=Users,DC=example,DC=test".to_owned(),
    ];
    let member_of = |account: &Account| runtime.block_on(directory.member_of(account, &asked)).unwrap();
    // The agent is in Helpdesk-Tier1, which is in Helpdesk; Domain Users is the primary group.
    assert_eq!(member_of(&agent), [helpdesk.clone(), samba::HELPDESK_TIER1.to_owned(), asked[4].clone()]);
    assert_eq!(member_of(&bob), [asked[0].clone(), asked[4].clone()], "bob is in Finance only");
    assert!(runtime.block_on(directory.member_of(&agent, &[])).unwrap().is_empty());

    // Once read, the group graph and the groups' spellings are cached: another look costs the
    // DC nothing.
    let searches = || directory.status().unwrap().searches;
    let before = searches();
    for _ in 0..5 {
        assert_eq!(member_of(&agent).len(), 3);
    }
    assert_eq!(searches(), before, "no LDAP operation per call");
}

#[test]
fn helpdesk_account_status_shows_disabled_expired_locked_and_must_change() {
    let Some(dc) = samba::dc() else { return };
    let (runtime, directory) = library_directory(dc);
    let status = |name: &str| {
        let account = runtime.block_on(directory.find(&LoginName::normalise(name, &[], &[]))).unwrap().unwrap();
        runtime.block_on(directory.account_status(&account)).unwrap()
    };
    let well = AccountStatus { disabled: false, locked_in_directory: Some(false), expires_at: None, must_change_password: Some(false) };
    for name in [HD_TO_DISABLE.0, HD_TO_EXPIRE.0, HD_TO_LOCK.0, ALICE.0] {
        assert_eq!(status(name), well, "{name}");
    }
    assert!(status(DORA_DISABLED.0).disabled);
    assert_eq!(status(MIKE_MUST_CHANGE.0).must_change_password, Some(true));
    assert!(status(EVE_EXPIRED.0).expires_at.is_some_and(|at| at < 0), "accountExpires = 1: in 1601");

    // As an admin would: samba-tool on the DC; and AD's own lockout, for one account only (a
    // password settings object), after two wrong passwords.
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let before = now();
    std::thread::scope(|s| {
        s.spawn(|| samba::samba_tool(dc, &["user", "disable", HD_TO_DISABLE.0]).unwrap());
        s.spawn(|| samba::samba_tool(dc, &["user", "setexpiry", HD_TO_EXPIRE.0, "--days=-1"]).unwrap());
        s.spawn(|| {
            let pso = ["domain", "passwordsettings", "pso"];
            samba::samba_tool(dc, &[&pso[..], &["create", "hd-lockout", "1", "--account-lockout-threshold=2"]].concat()).unwrap();
            samba::samba_tool(dc, &[&pso[..], &["apply", "hd-lockout", HD_TO_LOCK.0]].concat()).unwrap();
            let dn = format!("CN={},CN=Users,{}", HD_TO_LOCK.0, samba::BASE_DN);
            for _ in 0..2 {
                assert_eq!(samba::bind_as(dc, &dn, "Wrong-Passw0rd!").unwrap(), 49);
            }
        });
    });
    let after = now();
    assert_eq!(status(HD_TO_DISABLE.0), AccountStatus { disabled: true, ..well.clone() });
    let expired = status(HD_TO_EXPIRE.0);
    let day = 86_400;
    assert!(expired.expires_at.is_some_and(|at| (before - day - 1..=after - day + 1).contains(&at)), "{expired:?}");
    assert_eq!(expired, AccountStatus { expires_at: expired.expires_at, ..well.clone() });
    assert_eq!(status(HD_TO_LOCK.0), AccountStatus { locked_in_directory: Some(true), ..well.clone() });
}
