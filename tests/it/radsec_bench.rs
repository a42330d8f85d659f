//! `radmfa bench --tls` against the real server: logins (one request and two), Status-Server,
//! RADIUS/1.1 and RADIUS/TLS, many requests outstanding on one connection; a certificate the
//! server does not know is an error, not a report of nothing. And a RADIUS/1.1 cross-check
//! that uses none of radmfa's codec: requests written and answers read octet by octet against
//! RFC 9765 (Token echoed, reserved octets zero, no Message-Authenticator; a junk
//! Message-Authenticator ignored; a Token reused while outstanding closes the connection).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{ALICE_PASSWORD, ClientCertificate, Options, RadsecPki, TestServer, binary, cheap_hash, enroll};

const USERS: usize = 64;
const PASSWORD: &str = "bench-pw";

/// A server with a RadSec listener, USERS users of PASSWORD, and two TLS clients: one that
/// takes the code appended to the password, one that challenges for it.
fn bench_server(pki: &RadsecPki) -> TestServer {
    let hash = cheap_hash(PASSWORD);
    let users: String = (1..=USERS).map(|i| format!("\n[[user]]\nusername = \"user{i:02}\"\npassword_hash = \"{hash}\"\n")).collect();
    TestServer::start(Options {
        server_extra: Box::leak(pki.server_keys().into_boxed_str()),
        // Room for every login of `-n 64` at once: past it the server drops (rightly).
        max_in_flight: 256,
        extra_users: users,
        extra: r#"
[[client]]
name = "radsec-append"
transport = "tls"
certificate_name = "nas-append.example.test"
mode = "append"
no_token = "reject"

[[client]]
name = "radsec-challenge"
transport = "tls"
certificate_name = "nas-challenge.example.test"
mode = "challenge"
no_token = "reject"
"#
        .into(),
        ..Options::default()
    })
}

/// `radmfa bench --tls ... --json` with `args`: its report, or its exit status and stderr.
fn bench(server: &TestServer, pki: &RadsecPki, cert: &ClientCertificate, args: &[&str]) -> Result<Value, String> {
    let out = Command::new(binary())
        .args(["bench", "--tls", "--json", "--server", &server.radsec.unwrap().to_string()])
        .arg("--cert")
        .arg(&cert.cert_file)
        .arg("--key")
        .arg(&cert.key_file)
        .arg("--ca-file")
        .arg(&pki.ca_file)
        .args(args)
        .env_remove("RADMFA_BENCH_SECRET")
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

/// Every request answered with an accept: none rejected, invalid, timed out or cut off.
fn assert_all_accepted(report: &Value, requests: u64, transport: &str) {
    assert_eq!(report["transport"], transport, "{report}");
    assert_eq!(report["requests"], requests, "{report}");
    assert_eq!(report["accepts"], requests, "{report}");
    for none in ["rejects", "challenges", "invalid", "timeouts", "closed", "connections_reopened", "unmatched_answers"] {
        assert_eq!(report[none], 0, "{none}: {report}");
    }
    assert_eq!(report["connections_closed_because"], serde_json::json!([]), "{report}");
}

fn write_seeds(server: &TestServer, path: &Path) {
    let seeds: String = (1..=USERS)
        .map(|i| {
            let user = format!("user{i:02}");
            format!("{user} {PASSWORD} {}\n", enroll(&server.config, &user))
        })
        .collect();
    std::fs::write(path, seeds).unwrap();
}

#[test]
fn bench_over_radius_1_1_and_radsec_logs_in_many_at_once_on_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pki = RadsecPki::new(&dir.path().join("pki"));
    let append_nas = pki.certificate("nas-append", &["nas-append.example.test"], false);
    let challenge_nas = pki.certificate("nas-challenge", &["nas-challenge.example.test"], false);
    let server = bench_server(&pki);
    let seeds = dir.path().join("seeds");
    write_seeds(&server, &seeds);
    let seeds = seeds.to_str().unwrap();
    // The runs share the users' used time steps: no run sends a code another has used.
    let steps = dir.path().join("steps");
    let steps = steps.to_str().unwrap();
    let flow = |kind| ["--kind", kind, "--seeds", seeds, "--step-state", steps];

    // 64 logins at once, all on one RADIUS/1.1 connection.
    let report = bench(
        &server,
        &pki,
        &append_nas,
        &[&flow("append")[..], &["--radius-version", "1.1", "--connections", "1", "-n", "64", "--count", "64"]].concat(),
    )
    .unwrap();
    assert_all_accepted(&report, 64, "radius/1.1");
    // The same over RADIUS/TLS (the default secret "radsec", MD5 and Message-Authenticator).
    let report = bench(
        &server,
        &pki,
        &append_nas,
        &[&flow("append")[..], &["--radius-version", "1.0", "--connections", "1", "-n", "64", "--count", "64"]].concat(),
    )
    .unwrap();
    assert_all_accepted(&report, 64, "radius/1.0");
    // Two requests a login, the second with the challenge's State, over two connections.
    let report =
        bench(&server, &pki, &challenge_nas, &[&flow("challenge")[..], &["--connections", "2", "-n", "16", "--count", "24"]].concat())
            .unwrap();
    assert_all_accepted(&report, 24, "radius/1.1");
    assert_eq!(report["password_step"]["challenges"], 24, "{report}");
    assert_eq!(report["code_step"]["accepts"], 24, "{report}");
    for version in ["1.1", "1.0"] {
        let report =
            bench(&server, &pki, &append_nas, &["--kind", "status-server", "--radius-version", version, "-n", "32", "--count", "300"])
                .unwrap();
        assert_all_accepted(&report, 300, &format!("radius/{version}"));
    }

    // Each run held the connections it was given, no more: the logins went many to one.
    let opened: Vec<(String, String)> = server
        .logs()
        .iter()
        .filter(|l| l["message"] == "RadSec: connection open")
        .map(|l| (l["client"].as_str().unwrap().to_owned(), l["radius"].as_str().unwrap().to_owned()))
        .collect();
    let expected: Vec<(String, String)> = [
        ("radsec-append", "radius/1.1"),
        ("radsec-append", "radius/1.0"),
        ("radsec-challenge", "radius/1.1"),
        ("radsec-challenge", "radius/1.1"),
        ("radsec-append", "radius/1.1"),
        ("radsec-append", "radius/1.0"),
    ]
    .iter()
    .map(|(c, r)| (c.to_string(), r.to_string()))
    .collect();
    assert_eq!(opened, expected);
    let accepted = server.wait_for_audit(64 + 64 + 24 * 2).iter().filter(|d| d["result"] == "accept").count();
    assert_eq!(accepted, 64 + 64 + 24);

    // A certificate of another CA: the server will not talk to it, and the run says so.
    let stranger = pki.foreign_certificate("nas-foreign", "nas-append.example.test");
    let refused = bench(&server, &pki, &stranger, &["--kind", "status-server", "-n", "2", "--count", "4", "--timeout", "3s"]).unwrap_err();
    assert!(refused.contains("no request was answered") || refused.contains("TLS handshake"), "{refused}");
}

// --- RADIUS/1.1 by hand ---------------------------------------------------------------------

const USER_NAME: u8 = 1;
const USER_PASSWORD: u8 = 2;
const MESSAGE_AUTHENTICATOR: u8 = 80;

/// A RADIUS/1.1 request as RFC 9765 §4.1 lays it out: Code, Reserved-1 (0), Length, Token,
/// Reserved-2 (12 zeros), then the attributes as they are (no hiding, nothing signed).
fn request_1_1(code: u8, token: [u8; 4], attributes: &[(u8, &[u8])]) -> Vec<u8> {
    let mut packet = vec![code, 0, 0, 0];
    packet.extend_from_slice(&token);
    packet.extend_from_slice(&[0; 12]);
    for (typ, value) in attributes {
        packet.push(*typ);
        packet.push(u8::try_from(value.len() + 2).unwrap());
        packet.extend_from_slice(value);
    }
    let length = u16::try_from(packet.len()).unwrap().to_be_bytes();
    packet[2..4].copy_from_slice(&length);
    packet
}

/// Checks an answer against RFC 9765 octet by octet; its Code.
fn check_answer_1_1(answer: &[u8], token: [u8; 4]) -> u8 {
    assert!(answer.len() >= 20, "{answer:?}");
    assert_eq!(usize::from(u16::from_be_bytes([answer[2], answer[3]])), answer.len(), "Length");
    assert_eq!(answer[1], 0, "Reserved-1 is zero");
    assert_eq!(answer[4..8], token, "the request's Token");
    assert_eq!(answer[8..20], [0; 12], "Reserved-2 is zero: no Response Authenticator");
    let mut at = 20;
    while at < answer.len() {
        let (typ, len) = (answer[at], usize::from(answer[at + 1]));
        assert!(len >= 2 && at + len <= answer.len(), "attribute at {at} has a bad length");
        assert_ne!(typ, MESSAGE_AUTHENTICATOR, "no Message-Authenticator in RADIUS/1.1");
        at += len;
    }
    assert_eq!(at, answer.len(), "the attributes fill the packet");
    answer[0]
}

fn tls_client(pki: &RadsecPki, cert: &ClientCertificate) -> Arc<rustls::ClientConfig> {
    pki.client_config(cert, &[b"radius/1.1"], &[&rustls::version::TLS13])
}

async fn read_packet(stream: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut packet = vec![0u8; 4];
    stream.read_exact(&mut packet).await?;
    let len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    packet.resize(len.max(4), 0);
    stream.read_exact(&mut packet[4..]).await?;
    Ok(packet)
}

#[test]
fn radius_1_1_by_hand_token_echoed_junk_message_authenticator_ignored_reused_token_closes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = RadsecPki::new(dir.path());
    let nas = pki.certificate("nas1", &["nas1.example.test"], false);
    let server = TestServer::start(Options {
        server_extra: Box::leak(pki.server_keys().into_boxed_str()),
        // A wrong password's Reject waits: its Token stays outstanding meanwhile.
        reject_delay: "2s",
        extra: "\n[[client]]\nname = \"radsec-nas1\"\ntransport = \"tls\"\ncertificate_name = \"nas1.example.test\"\nno_token = \"password_only\"\n"
            .into(),
        ..Options::default()
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let tcp = TcpStream::connect(server.radsec.unwrap()).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(tls_client(&pki, &nas)).connect(name, tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"radius/1.1"[..]));
        let login = |token, extra: &[(u8, &[u8])]| {
            let mut attributes: Vec<(u8, &[u8])> = vec![(USER_NAME, b"alice"), (USER_PASSWORD, ALICE_PASSWORD.as_bytes())];
            attributes.extend_from_slice(extra);
            request_1_1(1, token, &attributes)
        };

        // The password in the clear; an Access-Accept carrying the Token back.
        let token = [0xfe, 0xed, 0x00, 0x01];
        tls.write_all(&login(token, &[])).await.unwrap();
        assert_eq!(check_answer_1_1(&read_packet(&mut tls).await.unwrap(), token), 2, "Access-Accept");

        // A junk Message-Authenticator is an invalid attribute (RFC 9765 §5.2): dropped, the
        // request still answered.
        let token = [0xfe, 0xed, 0x00, 0x02];
        tls.write_all(&login(token, &[(MESSAGE_AUTHENTICATOR, &[0x5a; 16])])).await.unwrap();
        assert_eq!(check_answer_1_1(&read_packet(&mut tls).await.unwrap(), token), 2, "Access-Accept despite the junk");

        // Status-Server takes the next Token like any packet (RFC 9765 §6.2).
        let token = [0xfe, 0xed, 0x00, 0x03];
        tls.write_all(&request_1_1(12, token, &[])).await.unwrap();
        assert_eq!(check_answer_1_1(&read_packet(&mut tls).await.unwrap(), token), 2, "Status-Server answered");

        // A wrong password, its Reject held 2 s; then another request under the same Token
        // while it is outstanding: the server closes the connection (RFC 9765 §4.2.2).
        let token = [0xfe, 0xed, 0x00, 0x04];
        let wrong: Vec<(u8, &[u8])> = vec![(USER_NAME, b"alice"), (USER_PASSWORD, b"not-alices-password")];
        tls.write_all(&request_1_1(1, token, &wrong)).await.unwrap();
        tls.flush().await.unwrap();
        tls.write_all(&login(token, &[])).await.unwrap();
        tls.flush().await.unwrap();
        let after = tokio::time::timeout(Duration::from_secs(10), read_packet(&mut tls)).await.expect("the connection closes");
        assert!(after.is_err(), "closed without answering either: {after:?}");
    });
    let closed = server.wait_for(|l| l["message"].as_str().is_some_and(|m| m.contains("Token was reused")), Duration::from_secs(5));
    assert!(closed.is_some(), "the server says why it closed");
}
