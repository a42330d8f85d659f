//! Two radmfa processes on one PostgreSQL, over real UDP, as a NAS with two RADIUS servers uses
//! them: a token enrolled through one works through the other, a code used on one is a replay
//! on the other, a challenge started on one is finished on the other, wrong codes count on both,
//! SMS limits count on both, a portal session made on one is used on the other (a load balancer
//! with no stickiness) and outlives a restart, and a database that goes away leaves requests
//! unanswered (the NAS fails over) until it is back, with no restart.

use std::time::Duration;

use crate::harness::{ALICE_PASSWORD, CAROL_PASSWORD, Options, SECRET, SmsSink, TestServer, enroll, totp_code};
use crate::http::Http;
use crate::oracle::{self, ACCESS_ACCEPT, ACCESS_CHALLENGE, ACCESS_REJECT};
use crate::postgres::{self, PASSWORD};
use radius::core::code::Code;
use radius::core::packet::Packet;

const WAIT: Duration = Duration::from_secs(5);

fn store_section(url: &str) -> String {
    format!("[store]\nkind = \"postgres\"\nurl = \"{url}\"\npassword = \"{PASSWORD}\"\nkey_file = \"master.key\"\ntimeout = \"1s\"\n")
}

fn options(url: &str, mode: &'static str) -> Options {
    Options { mode, no_token: "reject", store: Some(store_section(url)), ..Options::default() }
}

/// Node A and node B on one fresh database.
fn two_nodes(mode: &'static str) -> Option<(TestServer, TestServer)> {
    let url = postgres::server()?.fresh_database();
    let a = TestServer::start(options(&url, mode));
    let b = TestServer::start_beside(&a, options(&url, mode));
    Some((a, b))
}

fn send(server: &TestServer, request: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    let response = oracle::exchange(&socket, request, wait)?;
    oracle::assert_authentic(&response, request);
    Some(response)
}

fn ask(server: &TestServer, user: &str, password: &str, state: Option<&[u8]>) -> Vec<u8> {
    let packet = match state {
        Some(state) => oracle::access_request_with_state(user, password, state),
        None => oracle::access_request(user, password),
    };
    send(server, &oracle::encode_signed(packet), WAIT).expect("an answer")
}

fn last_reason(server: &TestServer, n: usize) -> String {
    server.wait_for_audit(n)[n - 1]["reason"].as_str().unwrap().to_owned()
}

#[test]
fn enrolled_through_a_logs_in_through_b_and_a_code_used_on_b_is_a_replay_on_a() {
    let Some((a, b)) = two_nodes("append") else { return };
    let seed = enroll(&a.config, "alice");
    let login = format!("{ALICE_PASSWORD}{}", totp_code(&seed, 0));
    assert_eq!(oracle::code(&ask(&b, "alice", &login, None)), ACCESS_ACCEPT, "the token enrolled through A");
    assert_eq!(oracle::code(&ask(&a, "alice", &login, None)), ACCESS_REJECT, "the same code on the other node");
    assert_eq!(last_reason(&a, 1), "code_replayed");
    let listed = crate::harness::admin(&b.config, &["token", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("Test phone"), "B's CLI sees A's token");
}

#[test]
fn a_challenge_started_on_a_is_answered_on_b() {
    let Some((a, b)) = two_nodes("challenge") else { return };
    let seed = enroll(&a.config, "alice");
    let challenge = ask(&a, "alice", ALICE_PASSWORD, None);
    assert_eq!(oracle::code(&challenge), ACCESS_CHALLENGE);
    let state = oracle::state_of(&challenge).expect("a State");
    let answer = ask(&b, "alice", &totp_code(&seed, 0), Some(&state));
    assert_eq!(oracle::code(&answer), ACCESS_ACCEPT, "B resumes A's challenge");
    let again = ask(&a, "alice", &totp_code(&seed, 1), Some(&state));
    assert_eq!(oracle::code(&again), ACCESS_REJECT, "the State, used on B, is used on A");
}

#[test]
fn wrong_codes_spread_over_both_nodes_lock_on_both() {
    let Some((a, b)) = two_nodes("append") else { return };
    let seed = enroll(&a.config, "alice");
    for i in 0..5 {
        let node = if i % 2 == 0 { &a } else { &b };
        assert_eq!(oracle::code(&ask(node, "alice", &format!("{ALICE_PASSWORD}000000"), None)), ACCESS_REJECT);
    }
    let right = format!("{ALICE_PASSWORD}{}", totp_code(&seed, 0));
    assert_eq!(oracle::code(&ask(&b, "alice", &right, None)), ACCESS_REJECT);
    assert_eq!(last_reason(&b, 3), "second_factor_locked", "three wrong on A, two on B: five in all");
    assert_eq!(oracle::code(&ask(&a, "alice", &right, None)), ACCESS_REJECT);
    assert_eq!(last_reason(&a, 4), "second_factor_locked");
    let unlock = crate::harness::admin(&b.config, &["user", "unlock", "alice"]);
    assert!(unlock.status.success());
    assert_eq!(oracle::code(&ask(&a, "alice", &right, None)), ACCESS_ACCEPT, "unlocked through B's CLI, on A too");
}

#[test]
fn the_same_request_sent_to_a_and_then_to_b_gets_the_same_answer() {
    let Some((a, b)) = two_nodes("append") else { return };
    let seed = enroll(&a.config, "alice");
    // One code for the whole test, so a time step ending midway changes nothing.
    let login = format!("{ALICE_PASSWORD}{}", totp_code(&seed, 0));
    let request = oracle::encode_signed(oracle::access_request("alice", &login));
    let from_a = send(&a, &request, WAIT).expect("A answers");
    assert_eq!(oracle::code(&from_a), ACCESS_ACCEPT);
    // A's answer was lost; the NAS fails over and sends the very same request to B.
    let from_b = send(&b, &request, WAIT).expect("B answers");
    assert_eq!(from_b, from_a, "the same Accept, octet for octet");
    assert_eq!(last_reason(&b, 1), "retry_of_accepted");
    // A new request with that code is still a replay, on either node.
    let replay = oracle::encode_signed(oracle::access_request("alice", &login));
    assert_eq!(oracle::code(&send(&b, &replay, WAIT).unwrap()), ACCESS_REJECT);
    assert_eq!(last_reason(&b, 2), "code_replayed");
}

/// Users `user01`... with the test's cheap password hash, for bursts of logins.
fn many_users(n: usize) -> String {
    let hash = crate::harness::cheap_hash(ALICE_PASSWORD);
    (1..=n).map(|i| format!("\n[[user]]\nusername = \"user{i:02}\"\npassword_hash = \"{hash}\"\n")).collect()
}

#[test]
fn a_killed_node_s_logins_are_answered_by_the_other_and_no_code_works_twice() {
    const USERS: usize = 24;
    let Some(pg) = postgres::server() else { return };
    let url = pg.fresh_database();
    let options = || Options { extra_users: many_users(USERS), ..options(&url, "append") };
    let mut a = TestServer::start(options());
    let b = TestServer::start_beside(&a, options());
    let seeds: Vec<String> = (1..=USERS).map(|i| enroll(&b.config, &format!("user{i:02}"))).collect();
    // The codes computed once: a time step ending midway must not make the replays below fresh.
    let logins: Vec<String> = seeds.iter().map(|seed| format!("{ALICE_PASSWORD}{}", totp_code(seed, 0))).collect();
    let requests: Vec<Vec<u8>> = logins
        .iter()
        .enumerate()
        .map(|(i, login)| oracle::encode_signed(oracle::access_request(&format!("user{:02}", i + 1), login)))
        .collect();
    // The burst reaches A, which dies in the middle of it: some answered, some not.
    let to_a = oracle::socket("127.0.0.1:0", a.auth);
    for request in &requests {
        to_a.send(request).unwrap();
    }
    let mut answered_by_a = 0;
    while answered_by_a < USERS / 3 {
        oracle::receive(&to_a, WAIT).expect("A answers some before it dies");
        answered_by_a += 1;
    }
    a.kill();
    // The NAS retries each on B: every one is accepted, whether A used its code or not.
    for (i, request) in requests.iter().enumerate() {
        let answer = send(&b, request, WAIT).unwrap_or_else(|| panic!("user{:02}: B answers", i + 1));
        assert_eq!(oracle::code(&answer), ACCESS_ACCEPT, "user{:02}", i + 1);
    }
    let retried = b.wait_for_audit(USERS).iter().filter(|v| v["reason"] == "retry_of_accepted").count();
    eprintln!("A answered {answered_by_a} before it died; B answered {retried} of them again");
    assert!(retried >= answered_by_a, "at least those A had answered were A's Accepts, given again");
    // And no code works for a new login: every one was used, on A or on B.
    for (i, login) in logins.iter().enumerate() {
        let replay = oracle::access_request(&format!("user{:02}", i + 1), login);
        assert_eq!(oracle::code(&send(&b, &oracle::encode_signed(replay), WAIT).unwrap()), ACCESS_REJECT);
    }
    let listed = crate::harness::admin(&b.config, &["token", "list"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).matches("Test phone").count(), USERS, "no enrollment lost");
}

#[test]
fn a_database_that_stops_leaves_requests_unanswered_until_it_is_back() {
    let Some(pg) = postgres::private_server() else { return };
    let server = TestServer::start(options(&pg.fresh_database(), "append"));
    let seed = enroll(&server.config, "alice");
    pg.stop();
    let login = format!("{ALICE_PASSWORD}{}", totp_code(&seed, 0));
    let request = oracle::encode_signed(oracle::access_request("alice", &login));
    assert_eq!(send(&server, &request, Duration::from_secs(3)), None, "no Reject: the NAS asks its other server");
    assert_eq!(last_reason(&server, 1), "store_unavailable");
    assert!(server.wait_for(|v| v["message"].as_str().is_some_and(|m| m.starts_with("the database cannot be reached")), WAIT).is_some());
    // Nothing else is answered either: a Reject for an unknown name (which needs no database)
    // beside silence for an account would tell accounts apart; a Status-Server answered would
    // keep the NAS sending logins here.
    let nobody = || oracle::encode_signed(oracle::access_request("nobody", "whatever"));
    assert_eq!(send(&server, &nobody(), Duration::from_secs(2)), None, "no Reject for an unknown name");
    assert_eq!(last_reason(&server, 2), "store_unavailable");
    let status = || oracle::encode_signed(Packet::new(Code::StatusServer, SECRET.as_bytes()));
    assert_eq!(send(&server, &status(), Duration::from_secs(1)), None, "Status-Server unanswered while the database is down");
    pg.start_again();
    // The NAS's retry of the same request, and a new login: both answered, no restart.
    let retry = send(&server, &request, WAIT).expect("answered once the database is back");
    assert_eq!(oracle::code(&retry), ACCESS_ACCEPT);
    assert!(server.wait_for(|v| v["message"] == "the database answers again", Duration::from_secs(15)).is_some());
    assert!(send(&server, &status(), WAIT).is_some(), "Status-Server answered again");
    assert_eq!(oracle::code(&send(&server, &nobody(), WAIT).unwrap()), ACCESS_REJECT);
    let said =
        server.logs().iter().filter(|v| v["message"].as_str().is_some_and(|m| m.starts_with("the database cannot be reached"))).count();
    assert_eq!(said, 1, "one line for the outage");
}

#[test]
fn the_portal_says_try_later_to_every_name_while_the_database_is_down() {
    let Some(pg) = postgres::private_server() else { return };
    let server = TestServer::start(portal_options(&pg.fresh_database()));
    let mut web = Http::new(server.portal.unwrap());
    let csrf = web.get("/signin").csrf();
    pg.stop();
    for (user, password) in [("alice", ALICE_PASSWORD), ("nobody", "whatever"), ("alice", "wrong")] {
        let page = web.post("/signin", &[("csrf", &csrf), ("username", user), ("password", password)]);
        assert_eq!(page.status, 503, "{user}: {}", page.body);
        assert!(page.body.contains("cannot be reached right now"), "{}", page.body);
    }
    pg.start_again();
    assert!(server.wait_for(|v| v["message"] == "the database answers again", Duration::from_secs(15)).is_some());
    let page = web.post("/signin", &[("csrf", &csrf), ("username", "nobody"), ("password", "whatever")]);
    assert_eq!(page.status, 401, "back to the usual failure");
}

#[test]
fn a_node_started_while_the_database_is_down_waits_for_it() {
    let Some(pg) = postgres::private_server() else { return };
    let server = TestServer::start(options(&pg.fresh_database(), "append"));
    let seed = enroll(&server.config, "alice");
    let (dir, config) = server.into_parts();
    pg.stop();
    let mut server = TestServer::launch(dir, config, None, &[]);
    let waiting = |v: &serde_json::Value| v["message"].as_str().is_some_and(|m| m.starts_with("the database cannot be reached: not ready"));
    assert!(server.wait_for(waiting, WAIT).is_some(), "{:?}", server.logs());
    assert!(!server.logs().iter().any(|v| v["message"] == "listening"), "no port is open while it waits");
    pg.start_again();
    server.wait_listening(Duration::from_secs(20));
    let login = format!("{ALICE_PASSWORD}{}", totp_code(&seed, 0));
    assert_eq!(oracle::code(&ask(&server, "alice", &login, None)), ACCESS_ACCEPT, "no restart needed");
}

/// Users `sms01`... with a mobile number and no token.
fn users_with_phones(n: usize) -> String {
    let hash = crate::harness::cheap_hash(ALICE_PASSWORD);
    (1..=n).map(|i| format!("\n[[user]]\nusername = \"sms{i:02}\"\npassword_hash = \"{hash}\"\nmobile = \"+4670555{i:04}\"\n")).collect()
}

#[test]
fn the_global_sms_limit_counts_the_sends_of_both_nodes() {
    let Some(pg) = postgres::server() else { return };
    let url = pg.fresh_database();
    let options = || Options {
        no_token: "sms",
        extra_users: users_with_phones(4),
        extra: "[sms]\nglobal_per_minute = 3\n".into(),
        ..options(&url, "challenge")
    };
    let a = TestServer::start(options());
    let b = TestServer::start_beside(&a, options());
    let nodes = [&a, &b, &a, &b];
    for (i, node) in nodes.iter().enumerate() {
        let answer = oracle::code(&ask(node, &format!("sms{:02}", i + 1), ALICE_PASSWORD, None));
        let expected = if i < 3 { ACCESS_CHALLENGE } else { ACCESS_REJECT };
        assert_eq!(answer, expected, "sms{:02}", i + 1);
    }
    assert_eq!(last_reason(&b, 2), "sms_rate_limited", "two sent by A and one by B make three: the fourth is over the limit");
}

fn portal_options(url: &str) -> Options {
    Options { extra: "[portal]\nenabled = true\nlisten = \"127.0.0.1:0\"\n".into(), ..options(url, "append") }
}

/// The code the app would show now for a base32 secret as the portal shows it (in groups of 4).
fn code_for(shown_secret: &str) -> String {
    totp_code(&shown_secret.replace(' ', ""), 0)
}

#[test]
fn a_portal_session_made_on_one_node_is_used_on_the_other_and_outlives_a_restart() {
    let Some(pg) = postgres::server() else { return };
    let url = pg.fresh_database();
    let a = TestServer::start(portal_options(&url));
    let b = TestServer::start_beside(&a, portal_options(&url));
    let seed = enroll(&a.config, "alice");
    let (to_a, to_b) = (a.portal.unwrap(), b.portal.unwrap());
    // One browser behind a load balancer that sends each request to either node.
    let mut web = Http::new(to_a);
    let csrf = web.get("/signin").csrf();
    web.base = to_b;
    let signed = web.post("/signin", &[("csrf", &csrf), ("username", "alice"), ("password", ALICE_PASSWORD)]);
    assert_eq!(signed.status, 303, "the sign-in form A made is taken by B: {}", signed.body);
    web.base = to_a;
    let csrf = web.get("/otp").csrf();
    web.base = to_b;
    let coded = web.post("/otp", &[("csrf", &csrf), ("code", &totp_code(&seed, 0))]);
    assert_eq!(coded.status, 303, "{}", coded.body);
    web.base = to_a;
    let general = web.get("/general");
    assert!(general.status == 200 && general.body.contains("Andersson"), "signed in on B, seen on A: {}", general.body);

    // Adding an app: named on A, scanned on B, confirmed on A, then used over RADIUS on B.
    let csrf = web.get("/tokens/new").csrf();
    assert_eq!(web.post("/tokens/new", &[("csrf", &csrf), ("name", "Work phone")]).status, 303);
    web.base = to_b;
    let scan = web.get("/tokens/new/scan");
    let at = scan.body.find("id=\"secret\">").expect("the secret to type by hand") + 12;
    let shown = scan.body[at..].split('<').next().unwrap().to_owned();
    web.base = to_a;
    let csrf = web.get("/tokens/new/confirm").csrf();
    let confirmed = web.post("/tokens/new/confirm", &[("csrf", &csrf), ("code", &code_for(&shown))]);
    assert_eq!(confirmed.status, 303, "{}", confirmed.body);
    let tokens = web.get("/tokens");
    assert!(tokens.body.contains("Work phone") && tokens.body.contains("Your authenticator is ready"), "{}", tokens.body);
    let login = format!("{ALICE_PASSWORD}{}", totp_code(&shown.replace(' ', ""), 1));
    assert_eq!(oracle::code(&ask(&b, "alice", &login, None)), ACCESS_ACCEPT, "the app added through the portal, on B");

    // A restart of the node signs nobody out.
    let b = b.restart();
    web.base = b.portal.unwrap();
    assert_eq!(web.get("/general").status, 200, "still signed in after B restarted");
    // Signing out on one node ends the session on both.
    let csrf = web.get("/general").csrf();
    assert_eq!(web.post("/signout", &[("csrf", &csrf)]).status, 303);
    web.base = to_a;
    assert_eq!(web.get("/general").status, 303, "signed out on B: A sends the browser to sign in");
}

#[test]
fn a_right_answer_whose_node_stalled_after_using_the_state_is_accepted_when_the_nas_retries() {
    let Some(pg) = postgres::server() else { return };
    let url = pg.fresh_database();
    let a = TestServer::start(options(&url, "challenge"));
    let b = TestServer::start_beside(&a, options(&url, "challenge"));
    let seed = enroll(&a.config, "alice");
    let state = oracle::state_of(&ask(&a, "alice", ALICE_PASSWORD, None)).expect("a State");
    let request = oracle::encode_signed(oracle::access_request_with_state("alice", &totp_code(&seed, 0), &state));
    // The database stalls after A has used the State, before it reads the tokens.
    let lock = pg.hold_lock(postgres::database_of(&url), "tokens", 3);
    assert_eq!(send(&a, &request, Duration::from_secs(2)), None, "A cannot finish: no answer");
    assert_eq!(last_reason(&a, 2), "store_unavailable");
    let mut lock = lock;
    lock.wait().unwrap();
    // The NAS retries the same request on B: the State was used by this very request.
    let from_b = send(&b, &request, WAIT).expect("B answers");
    assert_eq!(oracle::code(&from_b), ACCESS_ACCEPT, "{}", last_reason(&b, 1));
    let from_a = send(&a, &request, WAIT).expect("A answers");
    assert_eq!(from_a, from_b, "and A, asked again, gives the Accept B gave");
    assert_eq!(last_reason(&a, 3), "retry_of_accepted");
    // Another request with that State is still a replay.
    let other = oracle::encode_signed(oracle::access_request_with_state("alice", &totp_code(&seed, 0), &state));
    assert_eq!(oracle::code(&send(&b, &other, WAIT).unwrap()), ACCESS_REJECT);
    assert_eq!(last_reason(&b, 2), "state_reused");
}

#[test]
fn a_password_step_that_stalled_before_its_sms_sends_one_sms_however_often_the_nas_retries() {
    let Some(pg) = postgres::server() else { return };
    let url = pg.fresh_database();
    let sink = SmsSink::start();
    let options = || Options { no_token: "sms", sms_url: Some(sink.url.clone()), ..options(&url, "challenge") };
    let a = TestServer::start(options());
    let b = TestServer::start_beside(&a, options());
    let request = oracle::encode_signed(oracle::access_request("carol", CAROL_PASSWORD));
    let mut lock = pg.hold_lock(postgres::database_of(&url), "challenge_contexts", 4);
    assert_eq!(send(&a, &request, Duration::from_millis(1500)), None, "A cannot keep the challenge: no answer");
    assert_eq!(send(&b, &request, Duration::from_millis(1500)), None, "nor B");
    lock.wait().unwrap();
    assert!(sink.messages().is_empty(), "no SMS for a challenge that could not be kept");
    let from_b = send(&b, &request, WAIT).expect("B answers once the database does");
    assert_eq!(oracle::code(&from_b), ACCESS_CHALLENGE, "{}", last_reason(&b, 2));
    let from_a = send(&a, &request, WAIT).expect("A answers");
    assert_eq!(from_a, from_b, "the same Challenge, octet for octet");
    assert_eq!(last_reason(&a, 2), "retry_of_challenge");
    assert_eq!(sink.messages().len(), 1, "one SMS, for four tries of one request");
    let state = oracle::state_of(&from_a).unwrap();
    let answer = ask(&a, "carol", &sink.last_code(), Some(&state));
    assert_eq!(oracle::code(&answer), ACCESS_ACCEPT, "the code sent logs carol in");
}

#[test]
fn a_table_locked_for_seconds_keeps_the_node_silent_for_every_name_and_is_said_once() {
    let Some(pg) = postgres::server() else { return };
    let url = pg.fresh_database();
    let server = TestServer::start(options(&url, "append"));
    let seed = enroll(&server.config, "alice");
    let mut lock = pg.hold_lock(postgres::database_of(&url), "password_lockouts", 10);
    let login = oracle::encode_signed(oracle::access_request("alice", &format!("{ALICE_PASSWORD}{}", totp_code(&seed, 0))));
    assert_eq!(send(&server, &login, Duration::from_secs(2)), None, "alice's login stalls");
    // The probe reads every table a login needs: the node stays unavailable while one is
    // locked, and no unknown name is told apart by a Reject in the meantime.
    for _ in 0..8 {
        let nobody = oracle::encode_signed(oracle::access_request("nobody", "whatever"));
        assert_eq!(send(&server, &nobody, Duration::from_millis(900)), None, "an unknown name, while the table is locked");
    }
    lock.wait().unwrap();
    assert!(server.wait_for(|v| v["message"] == "the database answers again", Duration::from_secs(15)).is_some());
    assert_eq!(oracle::code(&send(&server, &login, WAIT).expect("answered")), ACCESS_ACCEPT, "the NAS's retry, once it is back");
    let outages =
        server.logs().iter().filter(|v| v["message"].as_str().is_some_and(|m| m.starts_with("the database cannot be reached"))).count();
    assert_eq!(outages, 1, "one stall, one line");
}
