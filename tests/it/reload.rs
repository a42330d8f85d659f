//! Live reload (SIGHUP): clients added and removed, through the config file and conf.d, while a
//! challenge is in flight; messages changed; a broken configuration keeps the running one; a
//! change only a restart applies is said.

use std::process::Command;
use std::time::Duration;

use radius::core::code::Code;
use radius::core::packet::Packet;
use radius::core::rfc2865;

use crate::harness::{ALICE_PASSWORD, Options, SECRET, TestServer, enroll, totp_code};
use crate::oracle::{self, ACCESS_ACCEPT, ACCESS_CHALLENGE, ACCESS_REJECT};

const WAIT: Duration = Duration::from_secs(5);
const SILENCE: Duration = Duration::from_millis(700);
const NEW_SECRET: &str = "a-new-nas-secret-16";

/// A signed Access-Request from `local` with `secret`; the answer, if any within `WAIT`.
fn ask(server: &TestServer, local: &str, secret: &str, user: &str, password: &str, state: Option<&[u8]>) -> Option<Vec<u8>> {
    ask_within(server, local, secret, user, password, state, WAIT)
}

/// Whether a request from `local` goes unanswered (for `SILENCE`).
fn unanswered(server: &TestServer, local: &str, secret: &str) -> bool {
    ask_within(server, local, secret, "alice", ALICE_PASSWORD, None, SILENCE).is_none()
}

fn ask_within(
    server: &TestServer,
    local: &str,
    secret: &str,
    user: &str,
    password: &str,
    state: Option<&[u8]>,
    wait: Duration,
) -> Option<Vec<u8>> {
    let socket = oracle::socket(local, server.auth);
    let mut packet = Packet::new(Code::AccessRequest, secret.as_bytes());
    rfc2865::add_user_name(&mut packet, user);
    rfc2865::add_user_password(&mut packet, password.as_bytes()).unwrap();
    if let Some(state) = state {
        rfc2865::add_state(&mut packet, state);
    }
    rfc2869_sign(&mut packet, secret).and_then(|request| oracle::exchange(&socket, &request, wait))
}

fn rfc2869_sign(packet: &mut Packet, secret: &str) -> Option<Vec<u8>> {
    radius::core::rfc2869::add_message_authenticator(packet, &[0; 16]);
    let mut bytes = packet.encode().ok()?;
    let offset = oracle::attribute_offsets(&bytes).into_iter().find(|(t, _)| *t == oracle::MESSAGE_AUTHENTICATOR)?.1;
    let mac = oracle::hmac_md5(secret.as_bytes(), &bytes);
    bytes[offset + 2..offset + 18].copy_from_slice(&mac);
    Some(bytes)
}

/// Waits for the `n`th log line saying `message` (a reload's outcome).
fn wait_for_nth(server: &TestServer, message: &str, n: usize) -> serde_json::Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let lines: Vec<serde_json::Value> =
            server.logs().into_iter().filter(|v| v["message"].as_str().is_some_and(|m| m.starts_with(message))).collect();
        if lines.len() >= n {
            return lines[n - 1].clone();
        }
        assert!(std::time::Instant::now() < deadline, "no {message:?} #{n}: {:?}", server.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_reload_adds_and_removes_clients_while_a_challenge_is_in_flight() {
    let server = TestServer::start(Options { mode: "challenge", no_token: "reject", ..Options::default() });
    let seed = enroll(&server.config, "alice");
    // Before: 127.0.0.2 is no client; the challenge begins.
    assert!(unanswered(&server, "127.0.0.2:0", NEW_SECRET));
    let challenge = ask(&server, "127.0.0.1:0", SECRET, "alice", ALICE_PASSWORD, None).unwrap();
    assert_eq!(oracle::code(&challenge), ACCESS_CHALLENGE);
    let state = oracle::state_of(&challenge).unwrap();

    // A client added in conf.d, another removed from the file, the reject message changed.
    let conf_d = server.dir().join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    std::fs::write(
        conf_d.join("10-branch.toml"),
        format!("[[client]]\nname = \"branch-vpn\"\naddress = \"127.0.0.2\"\nsecret = \"{NEW_SECRET}\"\nno_token = \"password_only\"\n"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&server.config).unwrap();
    let v6 = text.find("[[client]]\nname = \"loopback-v6\"").unwrap();
    let v6_end = v6 + text[v6..].find("\n\n").unwrap();
    let text = format!("{}{}\n[messages]\nrejected = \"Denied, call the help desk\"\n", &text[..v6], &text[v6_end..]);
    std::fs::write(&server.config, text).unwrap();
    server.hangup();
    let reloaded = wait_for_nth(&server, "configuration reloaded", 1);
    assert_eq!(reloaded["added"], "[\"branch-vpn\"]", "{reloaded}");
    assert_eq!(reloaded["removed"], "[\"loopback-v6\"]", "{reloaded}");
    assert_eq!(reloaded["drop_ins"], 1);

    // The challenge begun before the reload ends in an Accept.
    let accept = ask(&server, "127.0.0.1:0", SECRET, "alice", &totp_code(&seed, 0), Some(&state)).unwrap();
    assert_eq!(oracle::code(&accept), ACCESS_ACCEPT, "{:?}", server.audit());
    // The new client is served, with its own policy (password only for users without a token).
    let accept = ask(&server, "127.0.0.2:0", NEW_SECRET, "carol", crate::harness::CAROL_PASSWORD, None).unwrap();
    assert_eq!(oracle::code(&accept), ACCESS_ACCEPT, "{:?}", server.audit());
    // The new message.
    let reject = ask(&server, "127.0.0.1:0", SECRET, "alice", "wrong", None).unwrap();
    assert_eq!(oracle::code(&reject), ACCESS_REJECT);
    assert_eq!(oracle::reply_message(&reject).as_deref(), Some("Denied, call the help desk"));

    // A broken configuration: the running one goes on, and the log says why.
    std::fs::write(conf_d.join("20-broken.toml"), "[[client]]\nname = \"half\"\naddress = \"127.0.0.3\"\n").unwrap();
    server.hangup();
    let failed = wait_for_nth(&server, "reload failed", 1);
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("20-broken.toml") && error.contains("secret"), "{failed}");
    let accept = ask(&server, "127.0.0.2:0", NEW_SECRET, "carol", crate::harness::CAROL_PASSWORD, None).unwrap();
    assert_eq!(oracle::code(&accept), ACCESS_ACCEPT, "the configuration before the broken one still runs");
    assert!(unanswered(&server, "127.0.0.3:0", SECRET));

    // The branch's drop-in removed: its client is gone. A change of [server] is not applied,
    // and said.
    std::fs::remove_file(conf_d.join("20-broken.toml")).unwrap();
    std::fs::remove_file(conf_d.join("10-branch.toml")).unwrap();
    let text =
        std::fs::read_to_string(&server.config).unwrap().replace("reject_delay = \"0s\"", "reject_delay = \"0s\"\ncache_ttl = \"20s\"");
    std::fs::write(&server.config, text).unwrap();
    server.hangup();
    let reloaded = wait_for_nth(&server, "configuration reloaded", 2);
    assert_eq!(reloaded["removed"], "[\"branch-vpn\"]", "{reloaded}");
    assert!(unanswered(&server, "127.0.0.2:0", NEW_SECRET), "a removed client is not answered");
    let restart = wait_for_nth(&server, "these sections changed", 1);
    assert_eq!(restart["sections"], "[\"[server]\"]", "{restart}");
    assert_eq!(
        server.logs().iter().filter(|v| v["level"] == "ERROR").count(),
        1,
        "only the broken reload is an error: {:?}",
        server.logs()
    );
    let (status, _) = server.stop();
    assert!(status.success());
}

#[test]
fn a_fifo_or_a_device_in_conf_d_is_refused_not_waited_on() {
    let server = TestServer::start(Options::default());
    let conf_d = server.dir().join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    // A FIFO (opening it would wait for a writer for ever) and a link to /dev/zero (endless).
    let made = Command::new("mkfifo").arg(conf_d.join("20-fifo.toml")).status().unwrap();
    assert!(made.success());
    std::os::unix::fs::symlink("/dev/zero", conf_d.join("30-zero.toml")).unwrap();
    server.hangup();
    let failed = wait_for_nth(&server, "reload failed", 1);
    assert!(failed["error"].as_str().unwrap().contains("not a regular file"), "{failed}");
    std::fs::remove_file(conf_d.join("20-fifo.toml")).unwrap();
    server.hangup();
    let failed = wait_for_nth(&server, "reload failed", 2);
    assert!(failed["error"].as_str().unwrap().contains("30-zero.toml: cannot read: not a regular file"), "{failed}");
    std::fs::remove_file(conf_d.join("30-zero.toml")).unwrap();
    server.hangup();
    wait_for_nth(&server, "configuration reloaded", 1);
    let accept = ask(&server, "127.0.0.1:0", SECRET, "alice", ALICE_PASSWORD, None).unwrap();
    assert_eq!(oracle::code(&accept), ACCESS_ACCEPT);
    let (status, _) = server.stop();
    assert!(status.success());
}

#[test]
fn a_sighup_while_the_database_is_awaited_does_not_end_the_server() {
    let dir = tempfile::tempdir().unwrap();
    crate::harness::write_users(dir.path());
    // A database nobody listens for: the server waits for it, not ready.
    let store = "[store]\nkind = \"postgres\"\nurl = \"postgresql://radmfa@127.0.0.1:1/radmfa?sslmode=disable\"\npassword = \"x\"\nkey_file = \"master.key\"\n";
    let config = crate::harness::write_config(dir.path(), &Options { store: Some(store.into()), ..Options::default() });
    radmfa::keys::KeyRing::generate("k1").save(&dir.path().join("master.key")).unwrap();
    let mut server = TestServer::launch(dir, config, None, &[]);
    assert!(
        server.wait_for(|v| v["message"].as_str().is_some_and(|m| m.contains("cannot be reached")), WAIT).is_some(),
        "{:?}",
        server.logs()
    );
    server.hangup();
    std::thread::sleep(Duration::from_millis(500));
    assert!(server.is_running(), "a SIGHUP before the server runs must not end it: {:?}", server.logs());
}
