//! The second factor over real RADIUS: TOTP appended or in a challenge round, SMS through an
//! HTTP gateway, State rules, replay across restarts, lockout, and seeds sealed at rest.

use std::time::Duration;

use crate::harness::{ALICE_PASSWORD, CAROL_PASSWORD, Options, SECRET, SmsSink, TestServer, enroll, radclient, system_tool, totp_code};
use crate::oracle::{self, ACCESS_ACCEPT, ACCESS_CHALLENGE, ACCESS_REJECT};

const WAIT: Duration = Duration::from_secs(5);

fn options(mode: &'static str, no_token: &'static str) -> Options {
    Options { mode, no_token, ..Options::default() }
}

fn reasons(server: &TestServer, n: usize) -> Vec<String> {
    server.wait_for_audit(n).iter().map(|v| v["reason"].as_str().unwrap().to_owned()).collect()
}

/// One signed Access-Request through the oracle; the answer's bytes.
fn ask(server: &TestServer, user: &str, password: &str, state: Option<&[u8]>) -> Vec<u8> {
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    let packet = match state {
        Some(state) => oracle::access_request_with_state(user, password, state),
        None => oracle::access_request(user, password),
    };
    let request = oracle::encode_signed(packet);
    let response = oracle::exchange(&socket, &request, WAIT).expect("an answer");
    oracle::assert_authentic(&response, &request);
    response
}

fn radclient_login(server: &TestServer, user: &str, password: &str) -> Option<String> {
    let input = format!("User-Name = {user}\nUser-Password = \"{password}\"\nMessage-Authenticator = 0x00\n");
    radclient(server.auth, "auth", SECRET, &input).map(|out| out.stdout)
}

#[test]
fn append_accepts_and_a_code_never_works_twice_even_after_a_restart() {
    let server = TestServer::start(options("append", "reject"));
    let seed = enroll(&server.config, "alice");
    let code = totp_code(&seed, 0);
    let Some(out) = radclient_login(&server, "alice", &format!("{ALICE_PASSWORD}{code}")) else { return };
    assert!(out.contains("Received Access-Accept"), "{out}");
    assert!(out.contains("Citrix-User-Groups = \"VPN-Users\""), "groups on the final Accept: {out}");
    let out = radclient_login(&server, "alice", &format!("{ALICE_PASSWORD}{code}")).unwrap();
    assert!(out.contains("Received Access-Reject"), "the same code again: {out}");
    let out = radclient_login(&server, "alice", &format!("{ALICE_PASSWORD}000000")).unwrap();
    assert!(out.contains("Received Access-Reject"), "{out}");
    assert_eq!(reasons(&server, 3), ["authenticated", "code_replayed", "wrong_code"]);

    let server = server.restart();
    let out = radclient_login(&server, "alice", &format!("{ALICE_PASSWORD}{code}")).unwrap();
    assert!(out.contains("Received Access-Reject"), "replay refused after a restart too: {out}");
    let out = radclient_login(&server, "alice", &format!("{ALICE_PASSWORD}{}", totp_code(&seed, 1))).unwrap();
    assert!(out.contains("Received Access-Accept"), "a fresh code works: {out}");
    assert_eq!(reasons(&server, 2), ["code_replayed", "authenticated"]);
}

#[test]
fn a_challenge_round_with_radclient_ends_in_accept() {
    let server = TestServer::start(options("challenge", "reject"));
    let seed = enroll(&server.config, "alice");
    let Some(out) = radclient_login(&server, "alice", ALICE_PASSWORD) else { return };
    assert!(out.contains("Received Access-Challenge"), "{out}");
    assert!(out.contains("Reply-Message = \"Enter the code from your authenticator app, or type sms\""), "{out}");
    let state = out.lines().find_map(|l| l.trim().strip_prefix("State = ")).expect("a State").to_owned();
    let input = format!("User-Name = alice\nUser-Password = \"{}\"\nState = {state}\nMessage-Authenticator = 0x00\n", totp_code(&seed, 0));
    let out = radclient(server.auth, "auth", SECRET, &input).unwrap().stdout;
    assert!(out.contains("Received Access-Accept"), "{out}");
    assert!(out.contains("Citrix-User-Groups = \"VPN-Users\""), "groups also after a challenge round: {out}");
}

#[test]
fn sms_at_the_challenge_sends_one_sms_even_when_the_nas_retransmits() {
    let sink = SmsSink::start();
    let server = TestServer::start(Options { sms_url: Some(sink.url.clone()), ..options("challenge", "reject") });
    enroll(&server.config, "alice");
    let challenge = ask(&server, "alice", ALICE_PASSWORD, None);
    assert_eq!(oracle::code(&challenge), ACCESS_CHALLENGE);
    let state = oracle::state_of(&challenge).unwrap();

    // The answer "sms", sent twice as a NAS retransmits it: one SMS, one identical answer.
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    let request = oracle::encode_signed(oracle::access_request_with_state("alice", "sms", &state));
    let first = oracle::exchange(&socket, &request, WAIT).unwrap();
    let again = oracle::exchange(&socket, &request, WAIT).unwrap();
    assert_eq!(first, again, "the retransmission gets the cached answer");
    assert_eq!(oracle::code(&first), ACCESS_CHALLENGE);
    assert_eq!(oracle::reply_message(&first).as_deref(), Some("Enter the code sent to +46 70*** **67"));
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "one SMS for two copies of the request: {messages:?}");
    assert_eq!(messages[0]["to"], "+46701234567");

    let accept = ask(&server, "alice", &sink.last_code(), Some(&oracle::state_of(&first).unwrap()));
    assert_eq!(oracle::code(&accept), ACCESS_ACCEPT);
    assert_eq!(reasons(&server, 3), ["totp_challenge", "sms_sent", "authenticated"]);
}

#[test]
fn a_user_without_a_token_gets_an_sms_challenge() {
    let sink = SmsSink::start();
    let server = TestServer::start(Options { sms_url: Some(sink.url.clone()), ..options("auto", "sms") });
    let challenge = ask(&server, "carol", CAROL_PASSWORD, None);
    assert_eq!(oracle::code(&challenge), ACCESS_CHALLENGE);
    assert_eq!(oracle::reply_message(&challenge).as_deref(), Some("Enter the code sent to +46 70*** **21"));
    assert_eq!(sink.messages()[0]["to"], "+46707654321");
    let state = oracle::state_of(&challenge).unwrap();
    let wrong = ask(&server, "carol", "000000", Some(&state));
    assert_eq!(oracle::code(&wrong), ACCESS_CHALLENGE, "a wrong SMS code leaves tries");
    let accept = ask(&server, "carol", &sink.last_code(), Some(&oracle::state_of(&wrong).unwrap()));
    assert_eq!(oracle::code(&accept), ACCESS_ACCEPT);
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn expired_reused_and_foreign_states_are_rejected() {
    let server = TestServer::start(Options { challenge_timeout: "3s", ..options("challenge", "password_only") });
    let seed = enroll(&server.config, "alice");
    enroll(&server.config, "carol");
    let state = oracle::state_of(&ask(&server, "alice", ALICE_PASSWORD, None)).unwrap();
    let foreign = ask(&server, "carol", &totp_code(&seed, 0), Some(&state));
    assert_eq!(oracle::code(&foreign), ACCESS_REJECT, "alice's State is not carol's");
    let accept = ask(&server, "alice", &totp_code(&seed, 0), Some(&state));
    assert_eq!(oracle::code(&accept), ACCESS_ACCEPT);
    let reused = ask(&server, "alice", &totp_code(&seed, 1), Some(&state));
    assert_eq!(oracle::code(&reused), ACCESS_REJECT, "a State works once");
    let forged = ask(&server, "alice", &totp_code(&seed, 1), Some(b"not a state of ours"));
    assert_eq!(oracle::code(&forged), ACCESS_REJECT);
    let late = oracle::state_of(&ask(&server, "alice", ALICE_PASSWORD, None)).unwrap();
    std::thread::sleep(Duration::from_millis(3100));
    let expired = ask(&server, "alice", &totp_code(&seed, 1), Some(&late));
    assert_eq!(oracle::code(&expired), ACCESS_REJECT);
    let reasons = reasons(&server, 7);
    assert_eq!(
        reasons,
        ["totp_challenge", "state_mismatch", "authenticated", "state_reused", "invalid_state", "totp_challenge", "state_expired"]
    );
}

#[test]
fn five_wrong_codes_lock_the_second_factor_until_the_lock_lifts() {
    let server = TestServer::start(Options { lockout: "3s", ..options("append", "reject") });
    let seed = enroll(&server.config, "alice");
    for _ in 0..5 {
        assert_eq!(oracle::code(&ask(&server, "alice", &format!("{ALICE_PASSWORD}000000"), None)), ACCESS_REJECT);
    }
    let right = format!("{ALICE_PASSWORD}{}", totp_code(&seed, 0));
    let locked = ask(&server, "alice", &right, None);
    assert_eq!(oracle::code(&locked), ACCESS_REJECT, "locked: even the right code");
    assert_eq!(oracle::reply_message(&locked).as_deref(), Some("Authentication failed"), "and the lock does not announce itself");
    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(oracle::code(&ask(&server, "alice", &right, None)), ACCESS_ACCEPT, "released after the lock");
    let all = reasons(&server, 7);
    assert_eq!(&all[4..], ["wrong_code", "second_factor_locked", "authenticated"]);
    assert!(server.logs().iter().any(|v| v["message"] == "second factor locked after repeated wrong codes"));
}

#[test]
fn the_database_without_the_key_shows_no_seed() {
    let server = TestServer::start(options("append", "reject"));
    let seed = enroll(&server.config, "alice");
    let raw = totp_rs::Secret::Encoded(seed.clone()).to_bytes().unwrap();
    let mut bytes = std::fs::read(server.dir().join("radmfa.db")).unwrap();
    if let Ok(wal) = std::fs::read(server.dir().join("radmfa.db-wal")) {
        bytes.extend(wal);
    }
    assert!(bytes.len() > 1000, "the database holds the token");
    assert!(!bytes.windows(seed.len()).any(|w| w == seed.as_bytes()), "base32 seed in the file");
    assert!(!bytes.windows(raw.len()).any(|w| w == raw.as_slice()), "raw seed in the file");
    std::fs::remove_file(server.dir().join("master.key")).unwrap();
    let list = crate::harness::admin(&server.config, &["token", "list"]);
    assert!(!list.status.success(), "without the key nothing opens");
}

#[test]
fn oathtool_codes_from_token_add_output_are_accepted() {
    let Some(oathtool) = system_tool("oathtool", "oathtool") else { return };
    let server = TestServer::start(options("append", "reject"));
    let out = crate::harness::admin(&server.config, &["token", "add", "alice", "--name", "Phone"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let uri = stdout.lines().find_map(|l| l.strip_prefix("otpauth URI: ")).expect("the URI").trim();
    assert!(uri.starts_with("otpauth://totp/Example%20Region:alice?secret="), "{uri}");
    assert!(stdout.contains('█') || stdout.contains('▀'), "a QR code drawn in the terminal");
    // Take the secret out of the URI, as an app scanning the QR code would, and let oathtool compute the code.
    let secret = uri.split("secret=").nth(1).unwrap().split('&').next().unwrap();
    let code = std::process::Command::new(oathtool).args(["--totp", "-b", secret]).output().unwrap();
    let code = String::from_utf8(code.stdout).unwrap().trim().to_owned();
    assert_eq!(code.len(), 6);
    let answer = ask(&server, "alice", &format!("{ALICE_PASSWORD}{code}"), None);
    assert_eq!(oracle::code(&answer), ACCESS_ACCEPT);
}

/// Sends the same datagram again from a fresh socket (a new source port, so past the server's
/// response cache): what a listener who captured it can do without the shared secret.
fn replay(server: &TestServer, request: &[u8]) -> Option<Vec<u8>> {
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    oracle::exchange(&socket, request, WAIT)
}

#[test]
fn a_captured_challenge_answer_replayed_locks_nobody_out() {
    let server = TestServer::start(options("challenge", "reject"));
    let seed = enroll(&server.config, "alice");
    let state = oracle::state_of(&ask(&server, "alice", ALICE_PASSWORD, None)).unwrap();
    let answer = oracle::encode_signed(oracle::access_request_with_state("alice", &totp_code(&seed, 0), &state));
    assert_eq!(oracle::code(&replay(&server, &answer).unwrap()), ACCESS_ACCEPT);
    for _ in 0..8 {
        assert_eq!(oracle::code(&replay(&server, &answer).expect("answered")), ACCESS_REJECT);
    }
    let said = reasons(&server, 10);
    assert!(said[2..].iter().all(|r| r == "state_reused"), "replays are replays, never wrong codes: {said:?}");
    let fresh = ask(&server, "alice", ALICE_PASSWORD, None);
    let login = ask(&server, "alice", &totp_code(&seed, 1), Some(&oracle::state_of(&fresh).unwrap()));
    assert_eq!(oracle::code(&login), ACCESS_ACCEPT, "alice is not locked out");
}

#[test]
fn a_captured_password_step_replayed_sends_no_more_sms_than_the_limit() {
    let sink = SmsSink::start();
    let server = TestServer::start(Options { sms_url: Some(sink.url.clone()), ..options("challenge", "sms") });
    let step = oracle::encode_signed(oracle::access_request("carol", CAROL_PASSWORD));
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(oracle::code(&replay(&server, &step).expect("answered")));
    }
    assert_eq!(answers, [ACCESS_CHALLENGE, ACCESS_CHALLENGE, ACCESS_CHALLENGE, ACCESS_REJECT, ACCESS_REJECT, ACCESS_REJECT]);
    assert_eq!(sink.messages().len(), 3, "per_user_limit, however the request is replayed");
    assert_eq!(reasons(&server, 6)[5], "sms_rate_limited");
}
