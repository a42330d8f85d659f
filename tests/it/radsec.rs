//! RadSec (RFC 6614) and RADIUS/1.1 (RFC 9765) against the real binary: a rustls client of the
//! test's own, with and without ALPN, certificates right and wrong.

use std::sync::Arc;
use std::time::Duration;

use radmfa::radius::{self, Attribute, Code, Packet, attr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{ALICE_PASSWORD, ClientCertificate, Options, RadsecPki, TestServer};

/// A server with a RadSec listener and TLS clients: `nas1.example.test` by name, and
/// `pinned`'s certificate by fingerprint (from 127.0.0.1 only); their users need no token.
fn radsec_server(pki: &RadsecPki, pinned: &ClientCertificate, extra_server: &str) -> TestServer {
    radsec_server_with(pki, pinned, extra_server, "password_only", "", "0s")
}

fn radsec_server_with(
    pki: &RadsecPki,
    pinned: &ClientCertificate,
    extra_server: &str,
    no_token: &str,
    extra: &str,
    reject_delay: &'static str,
) -> TestServer {
    let server_extra: &'static str = Box::leak(format!("{}{extra_server}", pki.server_keys()).into_boxed_str());
    TestServer::start(Options {
        server_extra,
        extra: format!(
            r#"
[[client]]
name = "radsec-nas1"
transport = "tls"
certificate_name = "nas1.example.test"
no_token = "{no_token}"

[[client]]
name = "radsec-pinned"
transport = "tls"
address = "127.0.0.1"
certificate_fingerprint = "{}"
no_token = "password_only"
{extra}
"#,
            pinned.fingerprint
        ),
        reject_delay,
        ..Options::default()
    })
}

/// A PKI in a temp dir with the certificates of the two clients of [`radsec_server`].
fn pki_of_two_clients() -> (tempfile::TempDir, RadsecPki, ClientCertificate, ClientCertificate) {
    let dir = tempfile::tempdir().unwrap();
    let pki = RadsecPki::new(dir.path());
    let nas1 = pki.certificate("nas1", &["nas1.example.test"], false);
    let pinned = pki.certificate("pinned", &["fw.example.test"], false);
    (dir, pki, nas1, pinned)
}

fn client_config(pki: &RadsecPki, cert: &ClientCertificate, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    pki.client_config(cert, alpn, rustls::DEFAULT_VERSIONS)
}

async fn connect(server: &TestServer, config: Arc<rustls::ClientConfig>) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(server.radsec.unwrap()).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

async fn read_packet(stream: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await?;
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut packet = header.to_vec();
    packet.resize(len, 0);
    stream.read_exact(&mut packet[4..]).await?;
    Ok(packet)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn radsec_without_alpn_and_radius_1_1_answer_status_server_and_logins() {
    let (_dir, pki, nas1, pinned) = pki_of_two_clients();
    let server = radsec_server(&pki, &pinned, "");
    runtime().block_on(async {
        // RFC 6614: no ALPN, MD5 with the secret "radsec".
        let mut tls = connect(&server, client_config(&pki, &nas1, &[])).await.unwrap();
        let status = radius::encode_request(&Packet::new(Code::StatusServer, 0, [3; 16]), b"radsec", true).unwrap();
        tls.write_all(&status).await.unwrap();
        let answer = read_packet(&mut tls).await.unwrap();
        assert!(radius::verify_response(&answer, &[3; 16], b"radsec").unwrap());
        assert_eq!(Packet::decode(&answer).unwrap().code, Code::AccessAccept);
        let mut login = Packet::new(Code::AccessRequest, 7, [5; 16]);
        login.push(Attribute::standard(attr::USER_NAME, *b"alice"));
        login
            .push(Attribute::standard(attr::USER_PASSWORD, radius::hide_password(ALICE_PASSWORD.as_bytes(), b"radsec", &[5; 16]).unwrap()));
        tls.write_all(&radius::encode_request(&login, b"radsec", true).unwrap()).await.unwrap();
        let answer = read_packet(&mut tls).await.unwrap();
        assert!(radius::verify_response(&answer, &[5; 16], b"radsec").unwrap());
        assert_eq!(Packet::decode(&answer).unwrap().code, Code::AccessAccept);

        // RFC 9765: ALPN radius/1.1, a Token, the password in the clear, no Message-Authenticator.
        let mut tls = connect(&server, client_config(&pki, &nas1, &[b"radius/1.1"])).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"radius/1.1"[..]));
        let mut login = Packet::new(Code::AccessRequest, 0, [0; 16]);
        login.push(Attribute::standard(attr::USER_NAME, *b"alice"));
        login.push(Attribute::standard(attr::USER_PASSWORD, ALICE_PASSWORD.as_bytes()));
        tls.write_all(&radius::v11::encode(&login, [0xde, 0xad, 0xbe, 0xef]).unwrap()).await.unwrap();
        let answer = read_packet(&mut tls).await.unwrap();
        assert_eq!(answer[0], u8::from(Code::AccessAccept));
        assert_eq!(answer[1], 0, "Reserved-1");
        assert_eq!(&answer[4..8], &[0xde, 0xad, 0xbe, 0xef], "the request's Token");
        assert_eq!(&answer[8..20], &[0; 12], "Reserved-2");
        let decoded = Packet::decode(&answer).unwrap();
        assert!(decoded.get(attr::MESSAGE_AUTHENTICATOR).is_none(), "no Message-Authenticator in RADIUS/1.1");

        // A client known by its certificate's fingerprint.
        let mut tls = connect(&server, client_config(&pki, &pinned, &[b"radius/1.0"])).await.unwrap();
        tls.write_all(&status).await.unwrap();
        let answer = read_packet(&mut tls).await.unwrap();
        assert!(radius::verify_response(&answer, &[3; 16], b"radsec").unwrap());
    });
    let open = server.logs().into_iter().filter(|l| l["message"] == "RadSec: connection open").collect::<Vec<_>>();
    let clients: Vec<_> =
        open.iter().map(|l| (l["client"].as_str().unwrap().to_owned(), l["radius"].as_str().unwrap().to_owned())).collect();
    assert_eq!(
        clients,
        [("radsec-nas1", "radius/1.0"), ("radsec-nas1", "radius/1.1"), ("radsec-pinned", "radius/1.0")]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    drop(server);
}

#[test]
fn a_certificate_of_another_ca_or_of_no_client_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = RadsecPki::new(dir.path());
    let stranger = pki.certificate("nas9", &["nas9.example.test"], false);
    let foreign = pki.foreign_certificate("nas1-foreign", "nas1.example.test");
    let pinned = pki.certificate("pinned", &["fw.example.test"], false);
    let server = radsec_server(&pki, &pinned, "");
    runtime().block_on(async {
        for cert in [&stranger, &foreign] {
            let refused = async {
                let mut tls = connect(&server, client_config(&pki, cert, &[])).await?;
                let status = radius::encode_request(&Packet::new(Code::StatusServer, 0, [3; 16]), b"radsec", true).unwrap();
                tls.write_all(&status).await?;
                tokio::time::timeout(Duration::from_secs(5), read_packet(&mut tls)).await.map_err(std::io::Error::other)?
            };
            assert!(refused.await.is_err(), "no answer for {}", cert.cert_file.display());
        }
    });
    let logs = server.logs();
    assert!(logs.iter().any(|l| l["message"].as_str().unwrap_or("").contains("no TLS client") && l["certificate"] == "nas9.example.test"));
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// An Access-Request over RADIUS/TLS 1.0 (secret `radsec`), signed.
fn login_1_0(id: u8, authenticator: [u8; 16], user: &str, password: &str) -> Vec<u8> {
    let mut login = Packet::new(Code::AccessRequest, id, authenticator);
    login.push(Attribute::standard(attr::USER_NAME, user.as_bytes()));
    login.push(Attribute::standard(attr::USER_PASSWORD, radius::hide_password(password.as_bytes(), b"radsec", &authenticator).unwrap()));
    radius::encode_request(&login, b"radsec", true).unwrap()
}

/// An Access-Request over RADIUS/1.1.
fn login_1_1(token: [u8; 4], user: &str, password: &str) -> Vec<u8> {
    let mut login = Packet::new(Code::AccessRequest, 0, [0; 16]);
    login.push(Attribute::standard(attr::USER_NAME, user.as_bytes()));
    login.push(Attribute::standard(attr::USER_PASSWORD, password.as_bytes()));
    radius::v11::encode(&login, token).unwrap()
}

async fn ask(tls: &mut Tls, request: &[u8]) -> Code {
    tls.write_all(request).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), read_packet(tls)).await.unwrap().unwrap();
    Packet::decode(&answer).unwrap().code
}

/// Whether the server has closed the connection (a read ends) within `within`.
async fn closed_within(tls: &mut Tls, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(within, tls.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
}

#[test]
fn a_login_whose_connection_was_cut_gets_its_accept_when_retried_on_a_new_connection() {
    let (_dir, pki, nas1, pinned) = pki_of_two_clients();
    let server = radsec_server_with(&pki, &pinned, "", "reject", "", "0s");
    let seed = crate::harness::enroll(&server.config, "alice");
    let carol_seed = crate::harness::enroll(&server.config, "carol");
    runtime().block_on(async {
        // RADIUS/TLS: the same request (identifier, authenticator, password+code) resent on a
        // new connection after the first was cut before its answer was read.
        let password = format!("{ALICE_PASSWORD}{}", crate::harness::totp_code(&seed, 0));
        let request = login_1_0(9, [0x42; 16], "alice", &password);
        let mut first = connect(&server, client_config(&pki, &nas1, &[])).await.unwrap();
        first.write_all(&request).await.unwrap();
        first.flush().await.unwrap();
        drop(first);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut second = connect(&server, client_config(&pki, &nas1, &[])).await.unwrap();
        assert_eq!(ask(&mut second, &request).await, Code::AccessAccept, "the retry finds the Accept its code was used for");
        // A new request with that code is a replay, whatever connection it comes on.
        assert_eq!(ask(&mut second, &login_1_0(10, [0x43; 16], "alice", &password)).await, Code::AccessReject);

        // RADIUS/1.1: the packet sent again unchanged, its Token too (RFC 9765 §4.2.1).
        let password = format!("{}{}", crate::harness::CAROL_PASSWORD, crate::harness::totp_code(&carol_seed, 0));
        let mut first = connect(&server, client_config(&pki, &nas1, &[b"radius/1.1"])).await.unwrap();
        first.write_all(&login_1_1([0, 0, 0, 1], "carol", &password)).await.unwrap();
        first.flush().await.unwrap();
        drop(first);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut second = connect(&server, client_config(&pki, &nas1, &[b"radius/1.1"])).await.unwrap();
        assert_eq!(ask(&mut second, &login_1_1([0, 0, 0, 1], "carol", &password)).await, Code::AccessAccept);
        // The same password and code with another Token is a new login: a replay, on this
        // connection or another (the Token is no random number: it cannot stand alone).
        assert_eq!(ask(&mut second, &login_1_1([7, 7, 7, 7], "carol", &password)).await, Code::AccessReject, "a new Token is a new login");
        let mut third = connect(&server, client_config(&pki, &nas1, &[b"radius/1.1"])).await.unwrap();
        assert_eq!(ask(&mut third, &login_1_1([0, 0, 0, 2], "carol", &password)).await, Code::AccessReject);
        let wrong = format!("wrong-password{}", crate::harness::totp_code(&carol_seed, 0));
        assert_eq!(ask(&mut third, &login_1_1([0, 0, 0, 1], "carol", &wrong)).await, Code::AccessReject, "another answer is no retry");

        // A Token used again once its request was answered is a new request, decided afresh:
        // never the answer of the request it was used for before.
        let mut fourth = connect(&server, client_config(&pki, &nas1, &[b"radius/1.1"])).await.unwrap();
        assert_eq!(ask(&mut fourth, &login_1_1([5, 5, 5, 5], "alice", "wrong-password")).await, Code::AccessReject);
        assert_eq!(ask(&mut fourth, &login_1_1([5, 5, 5, 5], "carol", crate::harness::CAROL_PASSWORD)).await, Code::AccessChallenge);
        assert_eq!(ask(&mut fourth, &login_1_1([5, 5, 5, 5], "mallory", "x")).await, Code::AccessReject);
    });
    let (_, stats) = server.stop();
    assert!(stats.get("accepts") >= 2, "the cut connections' own decisions were made too");
}

#[test]
fn bad_packets_close_the_connection_and_a_code_not_served_does_not() {
    let (_dir, pki, nas1, pinned) = pki_of_two_clients();
    let server = radsec_server(&pki, &pinned, "");
    runtime().block_on(async {
        let status = radius::encode_request(&Packet::new(Code::StatusServer, 0, [3; 16]), b"radsec", true).unwrap();
        // An Access-Accept sent to us: dropped, the connection goes on.
        let mut tls = connect(&server, client_config(&pki, &nas1, &[])).await.unwrap();
        let mut accept = radius::encode_request(&Packet::new(Code::AccessRequest, 1, [1; 16]), b"radsec", true).unwrap();
        accept[0] = u8::from(Code::AccessAccept);
        tls.write_all(&accept).await.unwrap();
        assert_eq!(ask(&mut tls, &status).await, Code::AccessAccept);
        // A Length under 20: the stream has no packet boundary left.
        tls.write_all(&[1, 0, 0, 19]).await.unwrap();
        assert!(closed_within(&mut tls, Duration::from_secs(5)).await);
        // A Message-Authenticator of another secret.
        let mut tls = connect(&server, client_config(&pki, &nas1, &[])).await.unwrap();
        let forged = radius::encode_request(&Packet::new(Code::StatusServer, 0, [3; 16]), b"not-radsec", true).unwrap();
        tls.write_all(&forged).await.unwrap();
        assert!(closed_within(&mut tls, Duration::from_secs(5)).await);
        // Not TLS at all.
        let mut plain = TcpStream::connect(server.radsec.unwrap()).await.unwrap();
        plain.write_all(&status).await.unwrap();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf)).await.unwrap();
        assert!(!matches!(read, Ok(n) if n >= 20), "no RADIUS answer to plain TCP");
    });
    let (_, stats) = server.stop();
    assert_eq!(stats.get("tls_closed_bad_packet"), 2);
    assert_eq!(stats.get("unexpected_code"), 1);
    assert_eq!(stats.get("bad_message_authenticator"), 1);
    assert!(stats.get("tls_handshake_failures") >= 1);
}

#[test]
fn limits_per_client_per_connection_and_idle_connections() {
    let (_dir, pki, nas1, pinned) = pki_of_two_clients();
    let server = radsec_server_with(
        &pki,
        &pinned,
        "tls_connections_per_client = 2\ntls_outstanding_per_connection = 2\ntls_idle_timeout = \"2s\"\n",
        "password_only",
        "[metrics]\nlisten = \"127.0.0.1:0\"\n",
        "1s",
    );
    runtime().block_on(async {
        let config = client_config(&pki, &nas1, &[]);
        let status = radius::encode_request(&Packet::new(Code::StatusServer, 0, [3; 16]), b"radsec", true).unwrap();
        let mut one = connect(&server, Arc::clone(&config)).await.unwrap();
        let mut two = connect(&server, Arc::clone(&config)).await.unwrap();
        assert_eq!(ask(&mut one, &status).await, Code::AccessAccept);
        assert_eq!(ask(&mut two, &status).await, Code::AccessAccept);
        let mut three = connect(&server, Arc::clone(&config)).await.unwrap();
        assert!(closed_within(&mut three, Duration::from_secs(5)).await, "a third connection of the client is closed");
        // Another client has its own connections.
        let mut other = connect(&server, client_config(&pki, &pinned, &[])).await.unwrap();
        assert_eq!(ask(&mut other, &status).await, Code::AccessAccept);
        drop(two);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut again = connect(&server, Arc::clone(&config)).await.unwrap();
        assert_eq!(ask(&mut again, &status).await, Code::AccessAccept, "a closed connection gives its place back");
        let page = scrape(&server);
        assert!(page.contains("radmfa_radsec_connections_open{client=\"radsec-nas1\"} 2"), "{page}");
        assert!(page.contains("radmfa_radsec_connections_open{client=\"radsec-pinned\"} 1"), "{page}");
        assert!(page.contains("radmfa_radius_tls_over_connection_limit_total 1"), "{page}");

        // Six wrong passwords at once, two outstanding at most: each waits its turn (the
        // server reads no further), none is lost. Each Reject takes reject_delay, so three turns.
        let started = std::time::Instant::now();
        let mut all = Vec::new();
        for id in 0..6u8 {
            all.extend(login_1_0(id, [id; 16], "alice", "wrong-password"));
        }
        one.write_all(&all).await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..6 {
            let answer = tokio::time::timeout(Duration::from_secs(10), read_packet(&mut one)).await.unwrap().unwrap();
            let answer = Packet::decode(&answer).unwrap();
            assert_eq!(answer.code, Code::AccessReject);
            ids.push(answer.identifier);
        }
        ids.sort_unstable();
        assert_eq!(ids, [0, 1, 2, 3, 4, 5]);
        assert!(started.elapsed() >= Duration::from_millis(2900), "two at a time: {:?}", started.elapsed());

        // Idle: nothing for tls_idle_timeout closes the connection.
        assert!(closed_within(&mut again, Duration::from_secs(6)).await, "idle connection closed");
    });
    let (_, stats) = server.stop();
    assert_eq!(stats.get("tls_over_connection_limit"), 1);
    assert!(stats.get("tls_closed_idle") >= 1);
}

#[test]
fn radius_1_1_alone_refuses_clients_without_it() {
    let (_dir, pki, nas1, pinned) = pki_of_two_clients();
    let server = radsec_server(&pki, &pinned, "tls_radius_versions = [\"1.1\"]\n");
    runtime().block_on(async {
        let status = radius::encode_request(&Packet::new(Code::StatusServer, 0, [3; 16]), b"radsec", true).unwrap();
        // No ALPN: historic RADIUS/TLS, which is not allowed here (RFC 9765 §3.3 "Close-S").
        let mut tls = connect(&server, client_config(&pki, &nas1, &[])).await.unwrap();
        let _ = tls.write_all(&status).await;
        assert!(closed_within(&mut tls, Duration::from_secs(5)).await);
        // radius/1.0 only: no protocol in common, a TLS alert.
        assert!(
            connect(&server, client_config(&pki, &nas1, &[b"radius/1.0"])).await.is_err() || {
                let mut tls = connect(&server, client_config(&pki, &nas1, &[b"radius/1.0"])).await.unwrap();
                closed_within(&mut tls, Duration::from_secs(5)).await
            }
        );
        // RADIUS/1.1 over TLS 1.2: RFC 9765 §3.4 asks for 1.3.
        let tls12 = pki.client_config(&nas1, &[b"radius/1.1"], &[&rustls::version::TLS12]);
        let mut tls = connect(&server, tls12).await.unwrap();
        let _ = tls.write_all(&login_1_1([1, 2, 3, 4], "alice", ALICE_PASSWORD)).await;
        assert!(closed_within(&mut tls, Duration::from_secs(5)).await);
        // RADIUS/1.1 over TLS 1.3 is served.
        let mut tls = connect(&server, client_config(&pki, &nas1, &[b"radius/1.1", b"radius/1.0"])).await.unwrap();
        assert_eq!(ask(&mut tls, &login_1_1([1, 2, 3, 4], "alice", ALICE_PASSWORD)).await, Code::AccessAccept);
    });
    let (_, stats) = server.stop();
    assert_eq!(stats.get("tls_version_refused"), 2);
}

#[test]
fn a_reload_adds_removes_and_changes_tls_clients_open_connections_included() {
    let (_dir, pki, nas1, pinned) = pki_of_two_clients();
    let branch = pki.certificate("branch", &["branch.example.test"], false);
    let server = radsec_server(&pki, &pinned, "");
    let status = radius::encode_request(&Packet::new(Code::StatusServer, 0, [3; 16]), b"radsec", true).unwrap();
    runtime().block_on(async {
        let mut refused = connect(&server, client_config(&pki, &branch, &[])).await.unwrap();
        let _ = refused.write_all(&status).await;
        assert!(closed_within(&mut refused, Duration::from_secs(5)).await, "not a client yet");
        let mut open = connect(&server, client_config(&pki, &nas1, &[])).await.unwrap();
        assert_eq!(ask(&mut open, &status).await, Code::AccessAccept);

        // The branch is added, nas1 removed.
        let text = std::fs::read_to_string(&server.config).unwrap();
        let text = text
            .replace("certificate_name = \"nas1.example.test\"", "certificate_name = \"branch.example.test\"")
            .replace("radsec-nas1", "radsec-branch");
        std::fs::write(&server.config, text).unwrap();
        server.hangup();
        assert!(
            server
                .wait_for(|v| v["message"].as_str().unwrap_or("").starts_with("configuration reloaded"), Duration::from_secs(10))
                .is_some(),
            "{:?}",
            server.logs()
        );

        let mut branch_tls = connect(&server, client_config(&pki, &branch, &[])).await.unwrap();
        assert_eq!(ask(&mut branch_tls, &status).await, Code::AccessAccept, "added by the reload");
        let mut removed = connect(&server, client_config(&pki, &nas1, &[])).await.unwrap();
        let _ = removed.write_all(&status).await;
        assert!(closed_within(&mut removed, Duration::from_secs(5)).await, "removed by the reload");
        // A connection open before the reload is closed at its next packet: its client is gone.
        let _ = open.write_all(&login_1_0(1, [9; 16], "alice", ALICE_PASSWORD)).await;
        assert!(closed_within(&mut open, Duration::from_secs(5)).await, "an open connection of a removed client");

        // A change to a client applies to its open connections: the branch's users now need
        // a second factor, so a password alone is refused where it was let in.
        let login = login_1_0(2, [8; 16], "alice", ALICE_PASSWORD);
        assert_eq!(ask(&mut branch_tls, &login).await, Code::AccessAccept);
        let text = std::fs::read_to_string(&server.config).unwrap();
        let branch_section = text.find("name = \"radsec-branch\"").unwrap();
        let (head, tail) = text.split_at(branch_section);
        std::fs::write(&server.config, format!("{head}{}", tail.replacen("no_token = \"password_only\"", "no_token = \"reject\"", 1)))
            .unwrap();
        server.hangup();
        let reloaded = |v: &serde_json::Value| {
            v["message"].as_str().unwrap_or("").starts_with("configuration reloaded") && v["changed"] == "[\"radsec-branch\"]"
        };
        assert!(server.wait_for(reloaded, Duration::from_secs(10)).is_some(), "{:?}", server.logs());
        assert_eq!(ask(&mut branch_tls, &login_1_0(3, [7; 16], "alice", ALICE_PASSWORD)).await, Code::AccessReject);
    });
    assert!(server.logs().iter().any(|l| l["message"].as_str().unwrap_or("").contains("a reload removed its client")));
}

/// The metrics page, by a plain HTTP/1.0 GET.
fn scrape(server: &TestServer) -> String {
    use std::io::{Read, Write};
    let line = server.wait_for(|v| v["message"] == "listening" && v["kind"] == "metrics", Duration::from_secs(10)).unwrap();
    let address: std::net::SocketAddr = line["address"].as_str().unwrap().parse().unwrap();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    page
}

/// A client whose connection is cut while a request is outstanding (its Access-Reject held back
/// by `reject_delay`) gets its connection slot back at once: with `tls_connections_per_client
/// = 1` its new connection is served while the old request is still being answered. The cut
/// (no close_notify) is logged as a lost connection, not as a bad packet.
#[test]
fn a_connection_cut_mid_request_gives_its_slot_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let pki = RadsecPki::new(dir.path());
    let nas1 = pki.certificate("nas1", &["nas1.example.test"], false);
    let server_extra: &'static str = Box::leak(format!("{}tls_connections_per_client = 1\n", pki.server_keys()).into_boxed_str());
    let server = TestServer::start(Options {
        server_extra,
        reject_delay: "3s",
        extra: "[[client]]\nname = \"radsec-nas1\"\ntransport = \"tls\"\ncertificate_name = \"nas1.example.test\"\nno_token = \"password_only\"\n".into(),
        ..Options::default()
    });
    runtime().block_on(async {
        let mut first = connect(&server, client_config(&pki, &nas1, &[])).await.unwrap();
        let mut login = Packet::new(Code::AccessRequest, 1, [6; 16]);
        login.push(Attribute::standard(attr::USER_NAME, *b"alice"));
        login.push(Attribute::standard(attr::USER_PASSWORD, radius::hide_password(b"wrong", b"radsec", &[6; 16]).unwrap()));
        first.write_all(&radius::encode_request(&login, b"radsec", true).unwrap()).await.unwrap();
        first.flush().await.unwrap();
        // Decided, and now waiting out reject_delay: the request is outstanding.
        // (A blocking wait is fine here: nothing else runs on this runtime meanwhile.)
        assert_eq!(server.wait_for_audit(1).len(), 1);
        let cut_at = std::time::Instant::now();
        // A reset, as a killed client's kernel sends: no close_notify.
        socket2::SockRef::from(first.get_ref().0).set_linger(Some(Duration::ZERO)).unwrap();
        drop(first);

        let mut second = connect(&server, client_config(&pki, &nas1, &[])).await.unwrap();
        let status = radius::encode_request(&Packet::new(Code::StatusServer, 0, [3; 16]), b"radsec", true).unwrap();
        second.write_all(&status).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(2), read_packet(&mut second)).await;
        let answer = answer.expect("the new connection is served while the cut one's Reject waits").unwrap();
        assert!(radius::verify_response(&answer, &[3; 16], b"radsec").unwrap());
        assert!(cut_at.elapsed() < Duration::from_secs(3), "answered before the old request's reject_delay ran out");
    });
    let (_, stats, logs) = server.stop_with_logs();
    assert!(logs.iter().any(|l| l["message"] == "RadSec: connection lost" && l["client"] == "radsec-nas1"), "{logs:?}");
    assert_eq!(stats.get("tls_connections"), 2);
    assert_eq!(stats.get("tls_over_connection_limit"), 0);
    assert_eq!(stats.get("tls_closed_bad_packet"), 0, "a cut is no bad packet");
}

#[test]
fn handshakes_that_never_finish_cannot_keep_a_nas_out() {
    let (_dir, pki, nas1, pinned) = pki_of_two_clients();
    let server = radsec_server(&pki, &pinned, "tls_handshake_timeout = \"30s\"\n");
    let status = radius::encode_request(&Packet::new(Code::StatusServer, 0, [3; 16]), b"radsec", true).unwrap();
    runtime().block_on(async {
        // 8 silent connections (the most one address may have) from each of 40 addresses: more
        // than all the places for handshakes.
        let mut silent = Vec::new();
        for host in 1..=40u8 {
            for _ in 0..8 {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(std::net::SocketAddr::from(([127, 0, 1, host], 0))).unwrap();
                silent.push(socket.connect(server.radsec.unwrap()).await.unwrap());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The NAS gets in at once, and again.
        for id in 0..3 {
            let started = std::time::Instant::now();
            let mut tls = connect(&server, client_config(&pki, &nas1, &[])).await.unwrap();
            let mut status = status.clone();
            status[1] = id;
            assert_eq!(
                ask(&mut tls, &radius::encode_request(&Packet::new(Code::StatusServer, id, [3; 16]), b"radsec", true).unwrap()).await,
                Code::AccessAccept
            );
            assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        }
        drop(silent);
    });
    let (_, stats) = server.stop();
    assert!(stats.get("tls_handshakes_refused") >= 64, "the oldest silent ones made room: {}", stats.get("tls_handshakes_refused"));
}

#[test]
fn an_openssl_tls_1_2_nas_offering_both_versions_gets_radius_1_0_and_none_is_dropped_at_max_in_flight() {
    let (_dir, pki, nas1, pinned) = pki_of_two_clients();
    let server_extra: &'static str = Box::leak(pki.server_keys().into_boxed_str());
    let server = TestServer::start(Options {
        server_extra,
        max_in_flight: 2,
        reject_delay: "200ms",
        extra: format!(
            "[[client]]\nname = \"radsec-nas1\"\ntransport = \"tls\"\ncertificate_name = \"nas1.example.test\"\nno_token = \"password_only\"\n\n[[client]]\nname = \"radsec-pinned\"\ntransport = \"tls\"\ncertificate_fingerprint = \"{}\"\n",
            pinned.fingerprint
        ),
        ..Options::default()
    });
    runtime().block_on(async {
        // OpenSSL limited to TLS 1.2 (as a NAS built on it is) offers no TLS 1.3 cipher suite:
        // RADIUS/1.1 is then not offered to it either.
        if let Some(openssl) = crate::harness::system_tool("openssl", "openssl") {
            let out = crate::harness::run_with_input(
                std::process::Command::new(openssl)
                    .args(["s_client", "-tls1_2", "-alpn", "radius/1.0,radius/1.1", "-connect"])
                    .arg(server.radsec.unwrap().to_string())
                    .arg("-cert")
                    .arg(&nas1.cert_file)
                    .arg("-key")
                    .arg(&nas1.key_file)
                    .arg("-CAfile")
                    .arg(&pki.ca_file),
                "",
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("ALPN protocol: radius/1.0"), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
            assert!(stdout.contains("TLSv1.2"), "{stdout}");
        }
        let tls12 = pki.client_config(&nas1, &[b"radius/1.0"], &[&rustls::version::TLS12]);
        let mut tls = connect(&server, tls12).await.unwrap();
        // 20 logins at once where only 2 may be decided at a time: each waits its turn.
        let mut all = Vec::new();
        for id in 0..20u8 {
            // Every other one a name that is no account (a wrong password would lock alice).
            let (user, password) = if id % 2 == 0 { ("alice", ALICE_PASSWORD) } else { ("nobody", "wrong") };
            all.extend(login_1_0(id, [id; 16], user, password));
        }
        tls.write_all(&all).await.unwrap();
        let mut codes = Vec::new();
        for _ in 0..20 {
            let answer = tokio::time::timeout(Duration::from_secs(20), read_packet(&mut tls)).await.unwrap().unwrap();
            let answer = Packet::decode(&answer).unwrap();
            codes.push((answer.identifier, answer.code));
        }
        codes.sort_by_key(|(id, _)| *id);
        let expected: Vec<_> = (0..20u8).map(|id| (id, if id % 2 == 0 { Code::AccessAccept } else { Code::AccessReject })).collect();
        assert_eq!(codes, expected);
    });
    let (_, stats) = server.stop();
    assert_eq!(stats.get("overloaded"), 0, "nothing dropped over TLS");
}

#[test]
fn a_token_used_again_at_once_after_its_answer_is_a_new_request() {
    let (_dir, pki, nas1, pinned) = pki_of_two_clients();
    let server = radsec_server(&pki, &pinned, "");
    runtime().block_on(async {
        let mut tls = connect(&server, client_config(&pki, &nas1, &[b"radius/1.1"])).await.unwrap();
        // A NAS that always takes the lowest free Token: the same one, the moment it is free.
        for _ in 0..1000 {
            assert_eq!(ask(&mut tls, &login_1_1([0, 0, 0, 1], "nobody", "wrong")).await, Code::AccessReject);
        }
    });
    let (_, stats) = server.stop();
    assert_eq!(stats.get("tls_closed_token_reused"), 0);
}

#[test]
fn a_peer_that_reads_nothing_does_not_hold_the_stop() {
    let (_dir, pki, nas1, pinned) = pki_of_two_clients();
    let mut server = radsec_server(&pki, &pinned, "tls_idle_timeout = \"120s\"\n");
    runtime().block_on(async {
        let mut tls = connect(&server, client_config(&pki, &nas1, &[])).await.unwrap();
        // Status-Servers whose answers echo 3.8 KB of Proxy-State, never read, until the
        // server's queue and both socket buffers are full.
        let mut status = Packet::new(Code::StatusServer, 0, [3; 16]);
        for _ in 0..15 {
            status.push(Attribute::standard(attr::PROXY_STATE, vec![b'p'; 250]));
        }
        let status = radius::encode_request(&status, b"radsec", true).unwrap();
        let flood = async {
            loop {
                if tls.write_all(&status).await.is_err() {
                    break;
                }
            }
        };
        assert!(tokio::time::timeout(Duration::from_secs(5), flood).await.is_err(), "the server stopped reading");
        server.terminate();
        let stopped = std::time::Instant::now();
        assert!(server.wait_exit(Duration::from_secs(20)).is_some(), "stopped within the grace period, not the idle timeout");
        assert!(stopped.elapsed() < Duration::from_secs(15), "{:?}", stopped.elapsed());
    });
}

#[test]
fn a_client_renamed_by_a_reload_keeps_its_connection_limit() {
    let (_dir, pki, nas1, pinned) = pki_of_two_clients();
    let server = radsec_server(&pki, &pinned, "tls_connections_per_client = 1\n");
    let status = radius::encode_request(&Packet::new(Code::StatusServer, 0, [3; 16]), b"radsec", true).unwrap();
    runtime().block_on(async {
        let mut first = connect(&server, client_config(&pki, &nas1, &[])).await.unwrap();
        assert_eq!(ask(&mut first, &status).await, Code::AccessAccept);
        let text = std::fs::read_to_string(&server.config).unwrap().replace("radsec-nas1", "radsec-nas1-renamed");
        std::fs::write(&server.config, text).unwrap();
        server.hangup();
        let reloaded = |v: &serde_json::Value| v["message"].as_str().unwrap_or("").starts_with("configuration reloaded");
        assert!(server.wait_for(reloaded, Duration::from_secs(10)).is_some());
        // The open connection goes on as the renamed client, and counts as its one.
        assert_eq!(ask(&mut first, &status).await, Code::AccessAccept);
        let mut second = connect(&server, client_config(&pki, &nas1, &[])).await.unwrap();
        let _ = second.write_all(&status).await;
        assert!(closed_within(&mut second, Duration::from_secs(5)).await, "over the renamed client's limit");
    });
}
