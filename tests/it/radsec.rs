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
    let server_extra: &'static str = Box::leak(format!("{}{extra_server}", pki.server_keys()).into_boxed_str());
    TestServer::start(Options {
        server_extra,
        extra: format!(
            r#"
[[client]]
name = "radsec-nas1"
transport = "tls"
certificate_name = "nas1.example.test"
no_token = "password_only"

[[client]]
name = "radsec-pinned"
transport = "tls"
address = "127.0.0.1"
certificate_fingerprint = "{}"
no_token = "password_only"
"#,
            pinned.fingerprint
        ),
        ..Options::default()
    })
}

fn client_config(pki: &RadsecPki, cert: &ClientCertificate, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut std::fs::read(&pki.ca_file).unwrap().as_slice()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let chain = rustls_pemfile::certs(&mut std::fs::read(&cert.cert_file).unwrap().as_slice()).collect::<Result<Vec<_>, _>>().unwrap();
    let key = rustls_pemfile::private_key(&mut std::fs::read(&cert.key_file).unwrap().as_slice()).unwrap().unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(config)
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
    let dir = tempfile::tempdir().unwrap();
    let pki = RadsecPki::new(dir.path());
    let nas1 = pki.certificate("nas1", &["nas1.example.test"], false);
    let pinned = pki.certificate("pinned", &["fw.example.test"], false);
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
