//! The Prometheus endpoint scraped over HTTP during a run of logins: its numbers must be what
//! the audit log and the SMS gateway saw.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::harness::{ALICE_PASSWORD, CAROL_PASSWORD, Options, SmsSink, TestServer, enroll, totp_code};
use crate::oracle::{self, ACCESS_ACCEPT, ACCESS_CHALLENGE, ACCESS_REJECT};

const WAIT: Duration = Duration::from_secs(5);

fn ask(server: &TestServer, user: &str, password: &str, state: Option<&[u8]>) -> Vec<u8> {
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    let packet = match state {
        Some(state) => oracle::access_request_with_state(user, password, state),
        None => oracle::access_request(user, password),
    };
    oracle::exchange(&socket, &oracle::encode_signed(packet), WAIT).expect("an answer")
}

/// The status line, headers and body of one plain HTTP request.
fn http(address: SocketAddr, request_line: &str) -> (String, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "{request_line} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// Every sample of the page: series (name and labels as written) → value.
fn samples(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn metrics_address(server: &TestServer) -> SocketAddr {
    let line = server.wait_for(|v| v["message"] == "listening" && v["kind"] == "metrics", WAIT).expect("a metrics listening line");
    line["address"].as_str().unwrap().parse().unwrap()
}

#[test]
fn a_scrape_during_logins_counts_what_the_audit_and_the_gateway_saw() {
    let sink = SmsSink::start();
    let server = TestServer::start(Options {
        mode: "challenge",
        no_token: "sms",
        sms_url: Some(sink.url.clone()),
        extra: "[metrics]\nlisten = \"127.0.0.1:0\"\n".into(),
        ..Options::default()
    });
    let metrics = metrics_address(&server);
    let seed = enroll(&server.config, "alice");

    // alice: a challenge, then her code; twice a wrong password.
    let challenge = ask(&server, "alice", ALICE_PASSWORD, None);
    assert_eq!(oracle::code(&challenge), ACCESS_CHALLENGE);
    let accept = ask(&server, "alice", &totp_code(&seed, 0), Some(&oracle::state_of(&challenge).unwrap()));
    assert_eq!(oracle::code(&accept), ACCESS_ACCEPT);
    for _ in 0..2 {
        assert_eq!(oracle::code(&ask(&server, "alice", "wrong", None)), ACCESS_REJECT);
    }
    // carol has no token: an SMS, then its code.
    let challenge = ask(&server, "carol", CAROL_PASSWORD, None);
    assert_eq!(oracle::code(&challenge), ACCESS_CHALLENGE);
    let accept = ask(&server, "carol", &sink.last_code(), Some(&oracle::state_of(&challenge).unwrap()));
    assert_eq!(oracle::code(&accept), ACCESS_ACCEPT);
    // A request without a Message-Authenticator, which this client requires: dropped.
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    let unsigned = oracle::access_request("alice", ALICE_PASSWORD).encode().unwrap();
    assert_eq!(oracle::exchange(&socket, &unsigned, Duration::from_millis(500)), None);

    let audit = server.wait_for_audit(6);
    let (head, page) = http(metrics, "GET /metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text; version=1.0.0"), "{head}");
    assert!(page.ends_with("# EOF\n"), "{page}");
    let samples = samples(&page);

    // Each audited decision is one count of its client, result and reason.
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    for line in &audit {
        let series = format!(
            "radmfa_radius_requests_total{{client=\"{}\",code=\"Access-Request\",result=\"{}\",reason=\"{}\"}}",
            line["client"].as_str().unwrap(),
            line["result"].as_str().unwrap(),
            line["reason"].as_str().unwrap()
        );
        *expected.entry(series).or_default() += 1.0;
    }
    let counted: BTreeMap<String, f64> =
        samples.iter().filter(|(k, _)| k.starts_with("radmfa_radius_requests_total{")).map(|(k, v)| (k.clone(), *v)).collect();
    assert_eq!(counted, expected, "the requests counted are those audited");
    assert_eq!(expected.values().sum::<f64>(), 6.0);

    let get = |series: &str| samples.get(series).copied().unwrap_or_else(|| panic!("no {series} in:\n{page}"));
    assert_eq!(get("radmfa_radius_decision_seconds_count{step=\"first\"}"), 4.0);
    assert_eq!(get("radmfa_radius_decision_seconds_count{step=\"code\"}"), 2.0);
    assert_eq!(get("radmfa_radius_missing_message_authenticator_total"), 1.0);
    assert_eq!(get("radmfa_radius_accepts_total"), 2.0);
    assert_eq!(get("radmfa_radius_rejects_total"), 2.0);
    assert_eq!(get("radmfa_radius_challenges_total"), 2.0);
    assert_eq!(get("radmfa_radius_received_total"), 7.0);
    assert_eq!(get("radmfa_sms_sent_total"), sink.messages().len() as f64);
    assert_eq!(get("radmfa_sms_send_seconds_count{gateway=\"http\",outcome=\"sent\"}"), 1.0);
    assert_eq!(get("radmfa_store_available"), 1.0);
    assert_eq!(get("radmfa_audit_events_dropped_total"), 0.0);
    assert!(get("radmfa_audit_events_pending") >= 0.0);
    // Two code uses (alice's TOTP step); every store call timed, none failed.
    assert!(get("radmfa_store_operation_seconds_count{operation=\"use_step\",outcome=\"ok\"}") >= 1.0);
    assert!(!samples.keys().any(|k| k.starts_with("radmfa_store_operation_seconds_count") && k.contains("outcome=\"error\"")), "{page}");
    assert!(get("radmfa_directory_operation_seconds_count{operation=\"check_password\",outcome=\"ok\"}") >= 4.0);
    assert_eq!(get("radmfa_build_info{version=\"0.1.0\"}"), 1.0);
    for secret in [ALICE_PASSWORD, CAROL_PASSWORD, seed.as_str(), "alice", "carol"] {
        assert!(!page.contains(secret), "no user name or secret in metrics: {secret}");
    }

    assert!(http(metrics, "POST /metrics").0.starts_with("HTTP/1.1 405"));
    assert!(http(metrics, "GET /").0.starts_with("HTTP/1.1 404"));
}

#[test]
fn a_scraper_outside_allow_gets_nothing() {
    // Only 192.0.2.0/24 may scrape: the test's loopback connection is closed unread.
    let server = TestServer::start(Options {
        extra: "[metrics]\nlisten = \"127.0.0.1:0\"\nallow = [\"192.0.2.0/24\"]\n".into(),
        ..Options::default()
    });
    let metrics = metrics_address(&server);
    let mut stream = TcpStream::connect(metrics).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let mut text = Vec::new();
    let _ = stream.read_to_end(&mut text);
    assert!(text.is_empty(), "{}", String::from_utf8_lossy(&text));
    assert!(server.wait_for(|v| v["message"].as_str().is_some_and(|m| m.contains("[metrics] allow")), WAIT).is_some());
}

#[test]
fn connections_held_open_without_a_request_cannot_keep_a_scraper_out() {
    let server = TestServer::start(Options { extra: "[metrics]\nlisten = \"127.0.0.1:0\"\n".into(), ..Options::default() });
    let metrics = metrics_address(&server);
    // Any local user can do this to a loopback endpoint: more half-sent requests than it keeps.
    let held: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut s = TcpStream::connect(metrics).unwrap();
            s.write_all(b"GET /met").unwrap();
            s
        })
        .collect();
    let (head, page) = http(metrics, "GET /metrics");
    assert!(head.starts_with("HTTP/1.1 200") && page.ends_with("# EOF\n"), "{head}");
    drop(held);
}
