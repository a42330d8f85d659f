//! RADIUS under abuse, over real UDP: one NAS flooding wrong passwords does not take another
//! NAS's capacity; every Reject says the same and leaves at the same time after arrival; a
//! request the server cannot decide in time gets no answer but an audit line; a slow SMS
//! gateway does not hold the challenge past `answer_within`; and client text in the text log
//! is quoted and escaped.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{
    ALICE_PASSWORD, CAROL_PASSWORD, Options, SmsSink, TestServer, admin, binary, costly_hash, enroll, write_config, write_users,
};
use crate::oracle::{self, ACCESS_ACCEPT, ACCESS_CHALLENGE, ACCESS_REJECT};

const WAIT: Duration = Duration::from_secs(10);

fn slowpoke() -> String {
    format!("\n[[user]]\nusername = \"slowpoke\"\npassword_hash = \"{}\"\n", costly_hash("slowpoke-pw"))
}

/// NAS A floods wrong passwords of a user with a costly hash (~300/s, never waiting) from
/// `flood_from` while NAS B makes ten ordinary logins from `login_from`, one try each, as a NAS
/// would. How many of B's were answered within 3 s, what A sent, and the server's counters.
fn logins_answered_during_a_flood(extra: &str, flood_from: &'static str, login_from: &str) -> (usize, u64, crate::harness::Stats) {
    // max_in_flight 64: the flood keeps dozens of costly hashes queued, so B's logins are answered
    // in time only if B is admitted (its share) and served in turn by the hashing threads.
    let server = TestServer::start(Options {
        max_in_flight: 64,
        extra_users: slowpoke(),
        extra: extra.into(),
        // So the flood keeps costing hashing time instead of being refused early by the lock.
        lockout_extra: "password_max_failures = 100000",
        ..Options::default()
    });
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = {
        let (flooding, target) = (Arc::clone(&flooding), server.auth);
        std::thread::spawn(move || {
            let socket = oracle::socket(flood_from, target);
            let mut sent = 0u64;
            while flooding.load(Ordering::Relaxed) {
                let request = oracle::encode_signed(oracle::access_request("slowpoke", &format!("guess-{sent}")));
                let _ = socket.send(&request);
                sent += 1;
                std::thread::sleep(Duration::from_micros(3300));
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let b = oracle::socket(login_from, server.auth);
    let mut answered = 0;
    for _ in 0..10 {
        let request = oracle::encode_signed(oracle::access_request("alice", ALICE_PASSWORD));
        if oracle::exchange(&b, &request, Duration::from_secs(3)).is_some_and(|r| oracle::code(&r) == ACCESS_ACCEPT) {
            answered += 1;
        }
    }
    flooding.store(false, Ordering::Relaxed);
    let sent = flood.join().unwrap();
    let (status, stats) = server.stop();
    assert!(status.success(), "the backlog does not hold the shutdown past its grace period");
    (answered, sent, stats)
}

#[test]
fn a_nas_flooding_wrong_passwords_does_not_take_another_nas_capacity() {
    let nas_b = "[[client]]\nname = \"nas-b\"\naddress = \"127.0.0.2\"\nsecret = \"testing123\"\nno_token = \"password_only\"\n";
    let (answered, sent, stats) = logins_answered_during_a_flood(nas_b, "127.0.0.1:0", "127.0.0.2:0");
    assert_eq!(answered, 10, "every login of NAS B answered within 3 s while NAS A sent {sent}");
    assert!(stats.get("overloaded") > 0, "NAS A's excess was dropped (it had more than its share)");
}

#[test]
fn devices_behind_one_network_client_entry_each_have_their_share() {
    // Two NAS in one `[[client]]` entry (a pool of gateways sharing a secret and a policy).
    let pool = "[[client]]\nname = \"pool\"\naddress = \"127.0.0.16/29\"\nsecret = \"testing123\"\nno_token = \"password_only\"\n";
    let (answered, sent, _) = logins_answered_during_a_flood(pool, "127.0.0.17:0", "127.0.0.18:0");
    assert_eq!(answered, 10, "every login of the second gateway answered within 3 s while the first sent {sent}");
}

/// Sends each (user, password) from its own socket at once; the time to each Reject and its text.
fn timed_rejects(server: &TestServer, logins: &[(&str, String)]) -> Vec<(Duration, Option<String>)> {
    let probes: Vec<_> = logins
        .iter()
        .map(|(user, password)| {
            let (user, password, target) = (user.to_string(), password.clone(), server.auth);
            std::thread::spawn(move || {
                let socket = oracle::socket("127.0.0.1:0", target);
                let sent = Instant::now();
                let answer =
                    oracle::exchange(&socket, &oracle::encode_signed(oracle::access_request(&user, &password)), WAIT).expect("an answer");
                assert_eq!(oracle::code(&answer), ACCESS_REJECT, "{user}");
                (sent.elapsed(), oracle::reply_message(&answer))
            })
        })
        .collect();
    probes.into_iter().map(|p| p.join().unwrap()).collect()
}

#[test]
fn every_reject_says_the_same_and_leaves_at_arrival_plus_reject_delay() {
    // A delay well above what the costliest check takes on a busy test machine.
    let server = TestServer::start(Options {
        reject_delay: "3s",
        mode: "append",
        no_token: "reject",
        extra_users: slowpoke(),
        ..Options::default()
    });
    enroll(&server.config, "alice");
    let wrong_codes: Vec<(&str, String)> = (0..5).map(|_| ("alice", format!("{ALICE_PASSWORD}000000"))).collect();
    timed_rejects(&server, &wrong_codes);
    let cases = [
        ("nobody", "whatever-pw", "no_such_user"),
        ("slowpoke", "wrong-but-costly-to-check", "wrong_password"),
        ("dave", "dave-pw", "account_disabled"),
        ("carol", CAROL_PASSWORD, "no_token"),
        ("alice", ALICE_PASSWORD, "second_factor_locked"),
    ];
    let logins: Vec<(&str, String)> = cases.iter().map(|(user, password, _)| (*user, password.to_string())).collect();
    let answers = timed_rejects(&server, &logins);
    for ((user, ..), (_, message)) in cases.iter().zip(&answers) {
        assert_eq!(message.as_deref(), Some("Authentication failed"), "{user}: one text for every reason");
    }
    let mut reasons: Vec<String> = server.wait_for_audit(10).iter().skip(5).map(|v| v["reason"].as_str().unwrap().to_owned()).collect();
    reasons.sort();
    let mut expected: Vec<String> = cases.iter().map(|c| c.2.to_owned()).collect();
    expected.sort();
    assert_eq!(reasons, expected);
    // The costly wrong password (hundreds of ms of hashing) is not told apart from the rest.
    let times: Vec<Duration> = answers.iter().map(|(t, _)| *t).collect();
    let (fastest, slowest) = (times.iter().min().unwrap(), times.iter().max().unwrap());
    assert!(*fastest >= Duration::from_secs(3), "held for reject_delay: {times:?}");
    assert!(*slowest - *fastest < Duration::from_millis(250), "the time to answer tells nothing: {times:?}");
}

#[test]
fn a_request_not_decided_in_time_gets_no_answer_and_one_audit_line() {
    // A directory that accepts connections and then says nothing.
    let blackhole = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blackhole.local_addr().unwrap().port();
    let directory = format!(
        "[directory]\nkind = \"ldap\"\nurls = [\"ldaps://127.0.0.1:{port}\"]\nbind_dn = \"CN=svc\"\nbind_password = \"x\"\nbase_dn = \"DC=example,DC=test\"\ntls_insecure_skip_verify = true\ntimeout = \"10s\"\n"
    );
    // (request_timeout must exceed [sms] answer_within, 2 s by default.)
    let server =
        TestServer::start(Options { directory: Some(directory), server_extra: "request_timeout = \"2500ms\"", ..Options::default() });
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    let request = oracle::encode_signed(oracle::access_request("alice", ALICE_PASSWORD));
    assert!(oracle::exchange(&socket, &request, Duration::from_secs(4)).is_none(), "no answer: the NAS tries its other server");
    let audit = server.wait_for_audit(1);
    assert_eq!((audit[0]["result"].as_str(), audit[0]["reason"].as_str()), (Some("none"), Some("timed_out")));
    let (_, stats) = server.stop();
    assert_eq!(stats.get("timed_out"), 1);
    drop(blackhole);
}

#[test]
fn a_slow_sms_gateway_does_not_hold_the_challenge_past_answer_within() {
    let sms = SmsSink::start_delayed(Duration::from_secs(4));
    let server = TestServer::start(Options { mode: "auto", no_token: "sms", sms_url: Some(sms.url.clone()), ..Options::default() });
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    let asked = Instant::now();
    let challenge = oracle::exchange(&socket, &oracle::encode_signed(oracle::access_request("carol", CAROL_PASSWORD)), WAIT).unwrap();
    let waited = asked.elapsed();
    assert_eq!(oracle::code(&challenge), ACCESS_CHALLENGE);
    assert!(
        waited < Duration::from_millis(3500),
        "the challenge went out after answer_within (2 s), not after the gateway's 4 s: {waited:?}"
    );
    assert_eq!(server.wait_for_audit(1)[0]["reason"], "sms_pending");
    let state = oracle::state_of(&challenge).unwrap();
    let code = sms.last_code();
    let answer = oracle::encode_signed(oracle::access_request_with_state("carol", &code, &state));
    assert_eq!(oracle::code(&oracle::exchange(&socket, &answer, WAIT).unwrap()), ACCESS_ACCEPT);
    assert!(server.wait_for(|v| v["message"] == "SMS taken by the gateway after the answer went out", WAIT).is_some());
    let (_, stats) = server.stop();
    assert_eq!((stats.get("sms_pending"), stats.get("sms_late_sent"), stats.get("sms_late_failed")), (1, 1, 0));
    assert_eq!(server_audit_count(&stats), 2);
}

fn server_audit_count(stats: &crate::harness::Stats) -> u64 {
    stats.get("accepts") + stats.get("challenges") + stats.get("rejects")
}

#[test]
fn client_text_in_the_text_log_is_quoted_and_escaped() {
    let dir = tempfile::tempdir().unwrap();
    write_users(dir.path());
    let config = write_config(dir.path(), &Options::default());
    assert!(admin(&config, &["keygen"]).status.success());
    let mut child = Command::new(binary())
        .args(["--log-format", "text", "serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, seen) = (Arc::new(std::sync::Mutex::new(Vec::<String>::new())), std::sync::mpsc::channel::<()>());
    let (sink, tick) = (Arc::clone(&lines), seen.0);
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
            let _ = tick.send(());
        }
    });
    let until = Instant::now() + WAIT;
    let port = loop {
        let found = lines.lock().unwrap().iter().find(|l| l.contains("listening") && l.contains("kind=\"auth\"")).cloned();
        if let Some(line) = found {
            break line
                .split("address=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse::<u16>()
                .unwrap();
        }
        assert!(Instant::now() < until, "no listening line: {:?}", lines.lock().unwrap());
        let _ = seen.1.recv_timeout(Duration::from_millis(100));
    };
    let socket = oracle::socket("127.0.0.1:0", ([127, 0, 0, 1], port).into());
    let forged = "mallory\" result=\"accept\u{202e}gnp.exe";
    let newline = "eve\nINFO radmfa::audit: decision user=\"alice\" result=\"accept\"";
    for user in [forged, newline] {
        oracle::exchange(&socket, &oracle::encode_signed(oracle::access_request(user, "x")), WAIT).expect("answered");
    }
    let until = Instant::now() + WAIT;
    while lines.lock().unwrap().iter().filter(|l| l.contains("decision")).count() < 2 {
        assert!(Instant::now() < until, "two audit lines");
        let _ = seen.1.recv_timeout(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = lines.lock().unwrap().join("\n");
    assert!(
        log.contains("login=\"mallory\\\" result=\\\"accept\\u{202e}gnp.exe\""),
        "quoted, inner quotes and the bidi override escaped:\n{log}"
    );
    assert!(log.contains("login=\"eve\\nINFO radmfa::audit: decision"), "the newline escaped:\n{log}");
    assert!(!log.contains('\u{202e}'), "no raw right-to-left override reaches the log");
    assert_eq!(log.lines().filter(|l| l.contains("result=\"accept\"")).count(), 0, "nothing that reads as an accept:\n{log}");
}

#[test]
fn a_failing_sms_gateway_still_gets_a_challenge_not_a_late_reject() {
    // A gateway that fails (500, then 500 again on the retry half a second later).
    let sms = SmsSink::start_answering(Duration::from_millis(200), "500 Internal Server Error");
    let server = TestServer::start(Options { reject_delay: "1s", no_token: "sms", sms_url: Some(sms.url.clone()), ..Options::default() });
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    let answer = oracle::exchange(&socket, &oracle::encode_signed(oracle::access_request("carol", CAROL_PASSWORD)), WAIT).unwrap();
    assert_eq!(oracle::code(&answer), ACCESS_CHALLENGE, "a Reject after 1.4 s would tell the password was right");
    let audit = server.wait_for_audit(1);
    assert_eq!((audit[0]["result"].as_str(), audit[0]["reason"].as_str()), (Some("challenge"), Some("sms_failed")));
    let (_, stats) = server.stop();
    assert_eq!(stats.get("sms_failed"), 1);
}

#[test]
fn a_request_given_up_at_shutdown_still_gets_its_audit_line() {
    // A gateway slower than the shutdown's grace, and the answer allowed to wait for it.
    let sms = SmsSink::start_delayed(Duration::from_secs(20));
    let server = TestServer::start(Options {
        no_token: "sms",
        sms_url: Some(sms.url.clone()),
        sms_extra: "answer_within = \"30s\"",
        server_extra: "request_timeout = \"60s\"",
        ..Options::default()
    });
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    socket.send(&oracle::encode_signed(oracle::access_request("carol", CAROL_PASSWORD))).unwrap();
    let until = Instant::now() + WAIT;
    while sms.messages().is_empty() {
        assert!(Instant::now() < until, "the SMS went to the gateway");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, stats, logs) = server.stop_with_logs();
    assert!(status.success());
    assert_eq!(stats.get("abandoned_at_shutdown"), 1);
    let audit: Vec<_> = logs.iter().filter(|v| v["target"] == "radmfa::audit" && v["message"] == "decision").collect();
    assert_eq!(audit.len(), 1, "exactly one line: {audit:?}");
    assert_eq!(
        (audit[0]["result"].as_str(), audit[0]["reason"].as_str(), audit[0]["user"].as_str()),
        (Some("none"), Some("abandoned"), Some("carol"))
    );
}
