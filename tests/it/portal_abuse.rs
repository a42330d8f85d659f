//! The portal under abuse, against the real binary with small limits: slow-header (slowloris)
//! connections, trickled or silent, are closed by `header_timeout` while others are served; a
//! slow request body is cut off by `request_timeout`; connections over
//! `max_connections_per_address` are closed at once; and a TLS client that never says hello is
//! dropped after the handshake timeout. Floods stay small; only generous upper bounds on time.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::{Options, TestServer};

const LIMITS: &str =
    "header_timeout = \"1s\"\nidle_timeout = \"2s\"\nrequest_timeout = \"2s\"\nmax_connections = 400\nmax_connections_per_address = 8\n";
/// What "within the timeout" allows on a busy two-core machine.
const MARGIN: Duration = Duration::from_secs(4);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A connection from a chosen loopback address (all of 127/8 is this machine), so tests can
/// play many clients.
async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::from(source), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the server closes the connection; what it sent, and when it closed.
async fn until_closed(stream: &mut TcpStream, at_most: Duration) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + at_most;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Instant::now()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open for {at_most:?}; it sent {:?}", String::from_utf8_lossy(&got)),
        }
    }
}

/// One plain GET on its own connection; the status line.
async fn get(portal: SocketAddr, source: [u8; 4], path: &str) -> String {
    let mut stream = connect_from(source, portal).await;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let (response, _) = until_closed(&mut stream, MARGIN).await;
    String::from_utf8_lossy(&response).lines().next().unwrap_or_default().to_owned()
}

fn plain_portal() -> TestServer {
    let extra = format!("[portal]\nenabled = true\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = []\n{LIMITS}");
    TestServer::start(Options { extra, ..Options::default() })
}

#[test]
fn portal_slow_headers_are_cut_off_while_others_are_served() {
    let server = plain_portal();
    let portal = server.portal.unwrap();
    runtime().block_on(async {
        let start = Instant::now();
        // 300 heads that never end, 8 from each of 38 addresses (the per-address cap), and a few
        // that trickle a byte every 300 ms.
        let mut silent = Vec::new();
        for n in 0..300u32 {
            let mut stream = connect_from([127, 0, 1, 10 + (n / 8) as u8], portal).await;
            stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
            silent.push(stream);
        }
        let trickling: Vec<_> = (0..4u8)
            .map(|n| {
                tokio::spawn(async move {
                    let mut stream = connect_from([127, 0, 2, n], portal).await;
                    let opened = Instant::now();
                    for byte in b"GET /signin HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().cycle() {
                        if stream.write_all(&[*byte]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    opened.elapsed()
                })
            })
            .collect();
        assert!(get(portal, [127, 0, 0, 1], "/signin").await.contains("200"), "served during the attack");
        let mut closed = Vec::new();
        for stream in &mut silent {
            closed.push(until_closed(stream, Duration::from_secs(1) + MARGIN).await.1);
        }
        let latest = closed.iter().map(|t| t.duration_since(start)).max().unwrap();
        assert!(latest < Duration::from_secs(1) + MARGIN, "all 300 closed by header_timeout (1 s), the last after {latest:?}");
        assert!(closed.iter().all(|t| t.duration_since(start) >= Duration::from_millis(500)), "closed by the timeout, not refused");
        for trickle in trickling {
            let lasted = tokio::time::timeout(Duration::from_secs(1) + MARGIN * 2, trickle).await.expect("trickler cut off").unwrap();
            assert!(lasted < Duration::from_secs(1) + MARGIN, "a trickled head gets no more time: {lasted:?}");
        }
        assert!(get(portal, [127, 0, 0, 1], "/signin").await.contains("200"), "served after the attack");
    });
}

#[test]
fn portal_connections_over_the_per_address_cap_are_closed_at_once() {
    let server = plain_portal();
    let portal = server.portal.unwrap();
    runtime().block_on(async {
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(connect_from([127, 0, 3, 1], portal).await);
        }
        // The ninth from that address: closed without an answer, even to a complete request.
        let mut ninth = connect_from([127, 0, 3, 1], portal).await;
        let _ = ninth.write_all(b"GET /signin HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let (answer, _) = until_closed(&mut ninth, MARGIN).await;
        assert!(answer.is_empty(), "no answer over the cap: {:?}", String::from_utf8_lossy(&answer));
        // An admitted connection from the same address would have been answered.
        let mut first = held.remove(0);
        first.write_all(b"GET /signin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let (answer, _) = until_closed(&mut first, MARGIN).await;
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&answer));
        assert!(get(portal, [127, 0, 3, 2], "/signin").await.contains("200"), "other addresses are not affected");
    });
    let refused = server.wait_for(|v| v["message"] == "portal: connection refused, over the cap", MARGIN);
    let refused = refused.unwrap_or_else(|| panic!("a log line for the refusal: {:?}", server.logs()));
    assert_eq!(refused["cap"], "max_connections_per_address");
}

#[test]
fn portal_a_slow_request_body_is_cut_off() {
    let server = plain_portal();
    let portal = server.portal.unwrap();
    runtime().block_on(async {
        let mut stream = connect_from([127, 0, 4, 1], portal).await;
        let head = "POST /signin HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        let opened = Instant::now();
        let mut answer = Vec::new();
        // A byte every 300 ms keeps idle_timeout (2 s) from firing; request_timeout (2 s) does.
        for _ in 0..40 {
            if stream.write_all(b"a").await.is_err() {
                break;
            }
            let mut buf = [0u8; 1024];
            match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        let lasted = opened.elapsed();
        assert!(lasted < Duration::from_secs(2) + MARGIN, "the body may take request_timeout (2 s), not {lasted:?}");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    });
}

#[test]
fn portal_tls_needs_a_hello_within_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let crate::harness::TestCertificate { ca_pem, cert_file, key_file } = crate::harness::portal_certificate(dir.path());
    let extra = format!(
        "[portal]\nenabled = true\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://localhost\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n{LIMITS}",
        cert_file.display(),
        key_file.display()
    );
    let server = TestServer::start(Options { extra, ..Options::default() });
    let portal = server.portal.unwrap();
    runtime().block_on(async {
        let mut mute = connect_from([127, 0, 5, 1], portal).await;
        let opened = Instant::now();
        let (sent, _) = until_closed(&mut mute, Duration::from_secs(1) + MARGIN).await;
        assert!(sent.is_empty());
        assert!(opened.elapsed() >= Duration::from_millis(500), "closed by the handshake timeout");

        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
            .resolve("localhost", portal)
            .build()
            .unwrap();
        let page = client.get(format!("https://localhost:{}/signin", portal.port())).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert_eq!(page.headers()["strict-transport-security"], "max-age=31536000");
    });
}

#[test]
fn portal_at_the_connection_cap_idle_connections_make_room_for_real_requests() {
    let extra = "[portal]\nenabled = true\nlisten = \"127.0.0.1:0\"\nheader_timeout = \"30s\"\nmax_connections = 20\nmax_connections_per_address = 8\n";
    let server = TestServer::start(Options { extra: extra.into(), ..Options::default() });
    let portal = server.portal.unwrap();
    runtime().block_on(async {
        // 20 connections that never finish a head fill the portal (from three addresses, within
        // the per-address cap), and would stay for header_timeout (30 s).
        let mut silent = Vec::new();
        for n in 0..20u8 {
            let mut stream = connect_from([127, 0, 6, 1 + n / 8], portal).await;
            stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            silent.push(stream);
        }
        assert!(get(portal, [127, 0, 6, 9], "/signin").await.contains("200"), "a real user still gets in");
        // The oldest silent one made room: closed now, long before its 30 s header_timeout.
        until_closed(&mut silent[0], MARGIN).await;
        let mut buf = [0u8; 16];
        let still_open = tokio::time::timeout(Duration::from_millis(200), silent[19].read(&mut buf)).await.is_err();
        assert!(still_open, "the newest silent connection stays until its own timeout");
    });
    let shed = server.wait_for(|v| v["message"] == "portal: at max_connections; closed the oldest idle connection", MARGIN);
    assert!(shed.is_some(), "logged: {:?}", server.logs());
}

#[test]
fn portal_at_the_connection_cap_slow_bodies_make_room_for_real_requests() {
    let extra = "[portal]\nenabled = true\nlisten = \"127.0.0.1:0\"\nheader_timeout = \"30s\"\nmax_connections = 20\nmax_connections_per_address = 8\n";
    let server = TestServer::start(Options { extra: extra.into(), ..Options::default() });
    let portal = server.portal.unwrap();
    runtime().block_on(async {
        // 20 sign-in POSTs whose bodies trickle in (a byte now and then): their heads are in, but
        // a connection still waiting for its body does not count as busy.
        let mut slow = Vec::new();
        for n in 0..20u8 {
            let mut stream = connect_from([127, 0, 7, 1 + n / 8], portal).await;
            stream.write_all(b"POST /signin HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10000\r\n\r\nc").await.unwrap();
            slow.push(stream);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(get(portal, [127, 0, 7, 9], "/signin").await.contains("200"), "a real user still gets in");
        until_closed(&mut slow[0], MARGIN).await;
    });
}

#[test]
fn portal_an_oversized_request_head_is_refused() {
    let server = plain_portal();
    let portal = server.portal.unwrap();
    runtime().block_on(async {
        let mut stream = connect_from([127, 0, 7, 1], portal).await;
        let head = format!("GET /signin HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
        let _ = stream.write_all(head.as_bytes()).await;
        let (answer, _) = until_closed(&mut stream, MARGIN).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer}");
        assert!(get(portal, [127, 0, 7, 1], "/signin").await.contains("200"), "a normal head still works");
    });
}
