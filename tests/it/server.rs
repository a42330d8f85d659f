//! The daemon over real UDP: answers, silent discards, the retransmission cache, Status-Server,
//! accounting, large and hostile input, Proxy-State, reject_delay, IPv6, graceful shutdown.

use std::time::{Duration, Instant};

use radius::core::code::Code;
use radius::core::packet::Packet;
use radius::core::{rfc2865, rfc2869};

use crate::harness::{ALICE_PASSWORD, Options, SECRET, TestServer, radclient};
use crate::oracle::{self, ACCESS_ACCEPT, ACCESS_REJECT, ACCOUNTING_RESPONSE};

const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be sure no answer comes.
const SILENCE: Duration = Duration::from_millis(1000);

fn relaxed() -> Options {
    Options { require_message_authenticator: false, ..Options::default() }
}

#[test]
fn radclient_gets_accept_with_message_authenticator_first_and_filtered_groups() {
    let server = TestServer::start(Options::default());
    // Debian's radclient puts the Message-Authenticator last; the server must accept it there.
    let input =
        format!("User-Name = alice\nUser-Password = \"{ALICE_PASSWORD}\"\nMessage-Authenticator = 0x00\nNAS-IP-Address = 192.0.2.10\n");
    let Some(out) = radclient(server.auth, "auth", SECRET, &input) else {
        return;
    };
    assert!(out.success, "radclient failed: {}\n{}", out.stdout, out.stderr);
    let received = out.stdout.split("Received Access-Accept").nth(1).unwrap_or_else(|| panic!("no Access-Accept: {}", out.stdout));
    let first = received.lines().nth(1).unwrap_or_default().trim();
    assert!(first.starts_with("Message-Authenticator = 0x"), "first attribute: {first:?}\n{}", out.stdout);
    assert!(received.contains("Citrix-User-Groups = \"VPN-Users\""), "{received}");
    assert!(!received.contains("Staff"), "group_filter ^VPN- must hold back Staff: {received}");
    let audit = server.wait_for_audit(1);
    assert_eq!(audit[0]["result"], "accept");
    assert_eq!(audit[0]["user"], "alice");
    assert_eq!(audit[0]["client"], "loopback");
    assert_eq!(audit[0]["nas_ip"], "192.0.2.10");
    let (status, _) = server.stop();
    assert!(status.success(), "SIGTERM must end the server with exit 0: {status:?}");
}

#[test]
fn radclient_wrong_password_and_disabled_account_get_reject() {
    let server = TestServer::start(Options::default());
    let Some(out) = radclient(server.auth, "auth", SECRET, "User-Name = alice\nUser-Password = nope\nMessage-Authenticator = 0x00\n")
    else {
        return;
    };
    assert!(out.stdout.contains("Received Access-Reject"), "{}", out.stdout);
    let out = radclient(server.auth, "auth", SECRET, "User-Name = dave\nUser-Password = dave-pw\nMessage-Authenticator = 0x00\n").unwrap();
    assert!(out.stdout.contains("Received Access-Reject"), "{}", out.stdout);
    let reasons: Vec<String> = server.wait_for_audit(2).iter().map(|v| v["reason"].as_str().unwrap().to_owned()).collect();
    assert_eq!(reasons, ["wrong_password", "account_disabled"]);
    let logs = format!("{:?}", server.logs());
    assert!(!logs.contains("nope") && !logs.contains("dave-pw"), "passwords must never be logged");
}

#[test]
fn radius_crate_client_gets_accept_and_reject() {
    let server = TestServer::start(relaxed());
    let client = radius::client::Client::new(Some(WAIT), Some(WAIT));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let accept = runtime.block_on(client.send_packet(&server.auth, &oracle::access_request("alice", ALICE_PASSWORD))).unwrap();
    assert_eq!(accept.get_code(), Code::AccessAccept);
    let reject = runtime.block_on(client.send_packet(&server.auth, &oracle::access_request("alice", "bad"))).unwrap();
    assert_eq!(reject.get_code(), Code::AccessReject);
    assert!(rfc2869::lookup_message_authenticator(&reject).is_some(), "every response carries a Message-Authenticator");
}

#[test]
fn responses_verify_with_an_independent_implementation() {
    let server = TestServer::start(Options::default());
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    let request = oracle::encode_signed(oracle::access_request("alice", ALICE_PASSWORD));
    let response = oracle::exchange(&socket, &request, WAIT).expect("an answer");
    assert_eq!(oracle::code(&response), ACCESS_ACCEPT);
    oracle::assert_authentic(&response, &request);
    // Vendor-Specific: type 26, length, vendor id 66, sub-type 16, sub-length, value.
    let groups: Vec<String> = oracle::attribute_offsets(&response)
        .into_iter()
        .filter(|(typ, _)| *typ == 26)
        .map(|(_, at)| {
            let len = response[at + 1] as usize;
            assert_eq!(&response[at + 2..at + 8], &[0, 0, 0, 66, 16, (len - 6) as u8]);
            String::from_utf8_lossy(&response[at + 8..at + len]).into_owned()
        })
        .collect();
    assert_eq!(groups, ["VPN-Users"], "Citrix-User-Groups (vendor 66, type 16), one per group");
}

#[test]
fn unknown_client_bad_secret_and_missing_message_authenticator_get_no_answer() {
    let server = TestServer::start(Options::default());
    // Unknown client: 127.0.0.3 is no configured client.
    let stranger = oracle::socket("127.0.0.3:0", server.auth);
    let request = oracle::encode_signed(oracle::access_request("alice", ALICE_PASSWORD));
    assert!(oracle::exchange(&stranger, &request, SILENCE).is_none(), "unknown client answered");
    // Bad secret: the Message-Authenticator does not verify.
    if let Some(out) =
        radclient(server.auth, "auth", "not-the-secret", "User-Name = alice\nUser-Password = x\nMessage-Authenticator = 0x00\n")
    {
        assert!(!out.stdout.contains("Received"), "bad secret answered: {}", out.stdout);
    }
    // Missing Message-Authenticator where the client requires one.
    let known = oracle::socket("127.0.0.1:0", server.auth);
    let unsigned = oracle::access_request("alice", ALICE_PASSWORD).encode().unwrap();
    assert!(oracle::exchange(&known, &unsigned, SILENCE).is_none(), "unsigned request answered");
    // The admin is told at the default level, naming the client and the setting; a second
    // drop within the minute is held back.
    let unsigned_again = oracle::access_request("alice", ALICE_PASSWORD).encode().unwrap();
    assert!(oracle::exchange(&known, &unsigned_again, SILENCE).is_none());
    let told = |needle: &'static str| {
        move |v: &serde_json::Value| {
            v["level"] == "WARN" && v["client"] == "loopback" && v["message"].as_str().is_some_and(|m| m.contains(needle))
        }
    };
    assert!(server.wait_for(told("require_message_authenticator = false"), WAIT).is_some(), "{:?}", server.logs());
    if crate::harness::system_tool("radclient", "freeradius-utils").is_some() {
        assert!(server.wait_for(told("wrong shared secret?"), WAIT).is_some(), "{:?}", server.logs());
    }
    let warned = server.logs().iter().filter(|v| told("require_message_authenticator")(v)).count();
    assert_eq!(warned, 1, "one line a minute per client and kind");
    // Still serving.
    let request = oracle::encode_signed(oracle::access_request("alice", ALICE_PASSWORD));
    assert_eq!(oracle::exchange(&known, &request, WAIT).map(|r| oracle::code(&r)), Some(ACCESS_ACCEPT));
    // The log is read asynchronously: wait for the one decision, then check no other came.
    assert_eq!(server.wait_for_audit(1).len(), 1, "only the good request reached a decision");
    let (status, stats) = server.stop();
    assert!(status.success());
    assert_eq!(stats.get("unknown_client"), 1);
    assert_eq!(stats.get("missing_message_authenticator"), 2);
    if crate::harness::system_tool("radclient", "freeradius-utils").is_some() {
        assert_eq!(stats.get("bad_message_authenticator"), 1);
    }
}

#[test]
fn retransmissions_get_the_cached_answer_and_are_decided_once() {
    let server = TestServer::start(Options { reject_delay: "1s", ..Options::default() });
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    // A rejected request: its answer is held for reject_delay, so the copies below arrive in flight.
    let request = oracle::encode_signed(oracle::access_request("alice", "wrong"));
    socket.send(&request).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    socket.send(&request).unwrap(); // during the delay: gets nothing new
    let first = oracle::receive(&socket, WAIT).expect("the delayed reject");
    assert_eq!(oracle::code(&first), ACCESS_REJECT);
    assert!(oracle::receive(&socket, Duration::from_millis(300)).is_none(), "the in-flight copy must not get its own answer");
    // After the answer: a retransmit gets the identical bytes.
    let again = oracle::exchange(&socket, &request, WAIT).expect("the cached answer");
    assert_eq!(again, first, "a retransmission gets the identical cached response");
    // The same for an accepted request.
    let request = oracle::encode_signed(oracle::access_request("alice", ALICE_PASSWORD));
    let accept = oracle::exchange(&socket, &request, WAIT).unwrap();
    assert_eq!(oracle::exchange(&socket, &request, WAIT).unwrap(), accept);
    assert_eq!(server.wait_for_audit(2).len(), 2);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.audit().len(), 2, "four requests on the wire, two decisions");
    let (_, stats) = server.stop();
    assert_eq!(stats.get("duplicates_in_flight"), 1);
    assert_eq!(stats.get("duplicates_answered"), 2);
}

#[test]
fn reject_delay_holds_no_worker_and_delays_no_other_request() {
    // One worker, a long delay: the accept sent after the reject must still come back first.
    let server = TestServer::start(Options { reject_delay: "2s", max_in_flight: 1, ..Options::default() });
    let rejected = oracle::socket("127.0.0.1:0", server.auth);
    let accepted = oracle::socket("127.0.0.1:0", server.auth);
    let sent = Instant::now();
    rejected.send(&oracle::encode_signed(oracle::access_request("alice", "wrong"))).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let accept =
        oracle::exchange(&accepted, &oracle::encode_signed(oracle::access_request("alice", ALICE_PASSWORD)), WAIT).expect("accept");
    assert_eq!(oracle::code(&accept), ACCESS_ACCEPT);
    assert!(oracle::receive(&rejected, Duration::ZERO.max(Duration::from_millis(1))).is_none(), "the reject came before its delay");
    let reject = oracle::receive(&rejected, WAIT).expect("reject");
    assert_eq!(oracle::code(&reject), ACCESS_REJECT);
    assert!(sent.elapsed() >= Duration::from_millis(1900), "the reject was held for reject_delay");
}

#[test]
fn status_server_and_accounting_are_answered() {
    let server = TestServer::start(Options::default());
    if let Some(out) = radclient(server.auth, "status", SECRET, "Message-Authenticator = 0x00\n") {
        assert!(out.stdout.contains("Received Access-Accept"), "{}", out.stdout);
        let out = radclient(server.accounting, "status", SECRET, "Message-Authenticator = 0x00\n").unwrap();
        assert!(out.stdout.contains("Received Accounting-Response"), "{}", out.stdout);
        let out = radclient(server.accounting, "acct", SECRET, "User-Name = alice\nAcct-Status-Type = Start\nAcct-Session-Id = \"s-1\"\n")
            .unwrap();
        assert!(out.stdout.contains("Received Accounting-Response"), "{}", out.stdout);
        let line = server.wait_for(|v| v["target"] == "radmfa::accounting", WAIT).expect("accounting logged");
        assert_eq!(
            (line["user"].as_str(), line["status"].as_str(), line["session_id"].as_str()),
            (Some("alice"), Some("start"), Some("s-1"))
        );
    }
    // Status-Server without Message-Authenticator is dropped (RFC 5997 §3).
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    let bare = Packet::new(Code::StatusServer, SECRET.as_bytes()).encode().unwrap();
    assert!(oracle::exchange(&socket, &bare, SILENCE).is_none());
    // An Accounting-Request with a wrong authenticator is dropped.
    let acct = oracle::socket("127.0.0.1:0", server.accounting);
    let mut forged = Packet::new(Code::AccountingRequest, b"wrong-secret");
    rfc2865::add_user_name(&mut forged, "alice");
    assert!(oracle::exchange(&acct, &forged.encode().unwrap(), SILENCE).is_none());
    let mut good = Packet::new(Code::AccountingRequest, SECRET.as_bytes());
    rfc2865::add_user_name(&mut good, "alice");
    let answer = oracle::exchange(&acct, &good.encode().unwrap(), WAIT).expect("accounting answered");
    assert_eq!(oracle::code(&answer), ACCOUNTING_RESPONSE);
    assert!(Packet::is_authentic_response(&answer, &good.encode().unwrap(), SECRET.as_bytes()), "Response Authenticator verifies");
}

#[test]
fn a_valid_4000_byte_request_is_answered() {
    let server = TestServer::start(relaxed());
    let mut request = oracle::access_request("alice", ALICE_PASSWORD);
    for _ in 0..15 {
        rfc2865::add_class(&mut request, &[b'c'; 253]);
    }
    rfc2865::add_class(&mut request, &[b'c'; 128]);
    let bytes = request.encode().unwrap();
    assert_eq!(bytes.len(), 4000);
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    let response = oracle::exchange(&socket, &bytes, WAIT).expect("a 4000-byte request is answered");
    assert_eq!(oracle::code(&response), ACCESS_ACCEPT);
    // Over the RFC maximum: silently dropped.
    let mut huge = bytes.clone();
    huge.extend_from_slice(&[25, 255]);
    huge.extend_from_slice(&[b'c'; 253]);
    let len = (huge.len() as u16).to_be_bytes();
    huge[2..4].copy_from_slice(&len);
    assert!(oracle::exchange(&socket, &huge, SILENCE).is_none());
}

#[test]
fn proxy_state_is_echoed_in_order_and_requires_message_authenticator() {
    let server = TestServer::start(relaxed());
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    let mut request = oracle::access_request("alice", ALICE_PASSWORD);
    rfc2865::add_proxy_state(&mut request, b"first");
    rfc2865::add_proxy_state(&mut request, b"second");
    let signed = oracle::encode_signed(request.clone());
    let response = oracle::exchange(&socket, &signed, WAIT).expect("answer");
    oracle::assert_authentic(&response, &signed);
    let states = rfc2865::lookup_all_proxy_state(&oracle::decode(&response));
    assert_eq!(states, vec![b"first".to_vec(), b"second".to_vec()]);
    // Proxy-State without Message-Authenticator: dropped even where MA is not required.
    let mut unsigned = oracle::access_request("alice", ALICE_PASSWORD);
    rfc2865::add_proxy_state(&mut unsigned, b"x");
    assert!(oracle::exchange(&socket, &unsigned.encode().unwrap(), SILENCE).is_none());
    // An Accounting-Request through a proxy (FreeRADIUS adds Proxy-State, no Message-Authenticator):
    // its Request Authenticator signs it, so it is answered, Proxy-State echoed.
    let acct = oracle::socket("127.0.0.1:0", server.accounting);
    let mut proxied = Packet::new(Code::AccountingRequest, SECRET.as_bytes());
    rfc2865::add_user_name(&mut proxied, "alice");
    rfc2865::add_proxy_state(&mut proxied, b"proxy-1");
    let bytes = proxied.encode().unwrap();
    let answer = oracle::exchange(&acct, &bytes, WAIT).expect("proxied accounting is answered");
    assert_eq!(oracle::code(&answer), ACCOUNTING_RESPONSE);
    assert!(Packet::is_authentic_response(&answer, &bytes, SECRET.as_bytes()));
    assert_eq!(rfc2865::lookup_all_proxy_state(&oracle::decode(&answer)), vec![b"proxy-1".to_vec()]);
}

#[test]
fn chap_is_refused_with_a_clear_log_line_and_nothing_is_reflected() {
    let server = TestServer::start(relaxed());
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    let mut chap = Packet::new(Code::AccessRequest, SECRET.as_bytes());
    rfc2865::add_user_name(&mut chap, "alice");
    rfc2865::add_chap_password(&mut chap, &[1; 17]);
    let response = oracle::exchange(&socket, &chap.encode().unwrap(), WAIT).expect("answer");
    assert_eq!(oracle::code(&response), ACCESS_REJECT);
    assert!(server.wait_for(|v| v["message"].as_str().unwrap_or_default().contains("only PAP is supported"), WAIT).is_some());
    assert_eq!(server.wait_for_audit(1)[0]["reason"], "chap_not_supported");
    // The user name never comes back in the answer (BlastRADIUS smuggles collision blocks so).
    let name = "alice-with-a-distinctive-name";
    let reject = oracle::exchange(&socket, &oracle::access_request(name, "x").encode().unwrap(), WAIT).unwrap();
    assert!(!reject.windows(name.len()).any(|w| w == name.as_bytes()));
}

#[test]
fn ipv6_listen_address_works() {
    let server = TestServer::start(Options { listen: "[::1]:0", ..relaxed() });
    assert!(server.auth.is_ipv6());
    let socket = oracle::socket("[::1]:0", server.auth);
    let request = oracle::access_request("alice", ALICE_PASSWORD).encode().unwrap();
    assert_eq!(oracle::exchange(&socket, &request, WAIT).map(|r| oracle::code(&r)), Some(ACCESS_ACCEPT));
}

/// A small deterministic generator, so a failure reproduces.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn a_hundred_thousand_random_packets_do_not_stop_the_server() {
    let mut server = TestServer::start(relaxed());
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for i in 0..100_000u32 {
        let packet = match i % 4 {
            // Anything at all, up to past the maximum size.
            0 => {
                let n = (rng.next() % 4200) as usize;
                rng.bytes(n)
            }
            // A plausible header whose length field tells the truth, random attributes behind it.
            1 | 2 => {
                let n = 20 + (rng.next() % 300) as usize;
                let mut p = rng.bytes(n);
                p[0] = [1, 12, 4, 2][(rng.next() % 4) as usize];
                p[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                p
            }
            // Well-formed attributes with random types and values, sometimes a Message-Authenticator.
            _ => {
                let mut p = vec![1, rng.next() as u8, 0, 0];
                p.extend(rng.bytes(16));
                for _ in 0..(rng.next() % 8) {
                    let len = 2 + (rng.next() % 40) as usize;
                    p.push(if rng.next().is_multiple_of(5) { 80 } else { rng.next() as u8 });
                    p.push(len as u8);
                    p.extend(rng.bytes(len - 2));
                }
                let n = p.len() as u16;
                p[2..4].copy_from_slice(&n.to_be_bytes());
                p
            }
        };
        let _ = socket.send(&packet);
        if i % 2000 == 0 {
            std::thread::sleep(Duration::from_millis(5)); // let the receive buffer drain a little
        }
    }
    assert!(server.is_running(), "the server died under random input");
    let probe = oracle::socket("127.0.0.1:0", server.auth);
    let request = oracle::access_request("alice", ALICE_PASSWORD).encode().unwrap();
    let answer = (0..10).find_map(|_| oracle::exchange(&probe, &request, Duration::from_secs(2)));
    assert_eq!(answer.map(|r| oracle::code(&r)), Some(ACCESS_ACCEPT), "a valid request is answered after the flood");
    let (status, stats) = server.stop();
    assert!(status.success());
    assert_eq!(stats.get("handler_panics"), 0);
    assert!(stats.get("malformed") > 10_000, "the flood was seen and discarded");
}

#[test]
fn sigterm_finishes_requests_in_flight_and_exits_zero() {
    let server = TestServer::start(Options { reject_delay: "5s", ..Options::default() });
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    socket.send(&oracle::encode_signed(oracle::access_request("alice", "wrong"))).unwrap();
    server.wait_for_audit(1);
    let asked = Instant::now();
    server.terminate();
    // The reject held for reject_delay is sent at shutdown rather than lost.
    let reject = oracle::receive(&socket, WAIT).expect("the in-flight request is answered before exit");
    assert_eq!(oracle::code(&reject), ACCESS_REJECT);
    assert!(asked.elapsed() < Duration::from_secs(4), "shutdown cuts the reject delay short");
    let (status, stats) = server.stop();
    assert!(status.success());
    assert_eq!(stats.get("rejects"), 1);
    // Stopped: nothing answers any more.
    assert!(oracle::exchange(&socket, &oracle::encode_signed(oracle::access_request("alice", ALICE_PASSWORD)), SILENCE).is_none());
}

#[test]
fn systemd_is_told_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    notify.set_read_timeout(Some(WAIT)).unwrap();
    let server = TestServer::start(Options { notify_socket: Some(path), ..Options::default() });
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).expect("READY=1 after binding");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    // READY comes after the sockets are bound: the server answers right away.
    let socket = oracle::socket("127.0.0.1:0", server.auth);
    let request = oracle::encode_signed(oracle::access_request("alice", ALICE_PASSWORD));
    assert_eq!(oracle::exchange(&socket, &request, WAIT).map(|r| oracle::code(&r)), Some(ACCESS_ACCEPT));
    let (status, _) = server.stop();
    assert!(status.success());
    let n = notify.recv(&mut buf).expect("STOPPING=1 on SIGTERM");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
}
