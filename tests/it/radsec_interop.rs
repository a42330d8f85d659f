//! RadSec with the real clients put in front of radmfa: radsecproxy 1.9 as
//! docs/nas/radsecproxy.md configures it, and FreeRADIUS 3.2 with radmfa as a TLS home server.
//! FreeRADIUS's `radclient` plays the NAS, over UDP to the proxy; the proxy speaks RADIUS/TLS
//! (RFC 6614) to the real radmfa binary. Every process is started here, on free loopback ports,
//! under the harness's watchdog (so it dies with the test process however that ends).
//!
//! The radsecproxy tests take the guide's blocks marked `<!-- test: ... -->` and replace only
//! addresses, ports and file paths, each replacement written out below (see `nas_guides`).
//! radsecproxy sends its Status-Server only after 25 s without hearing from the server (fixed
//! in its source), so the watchdog test alone runs about half a minute; the others take seconds.
//! On CI (CI=true) a missing radsecproxy, freeradius or radclient fails the test; elsewhere the
//! test is skipped with a note.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    ALICE_PASSWORD, CAROL_PASSWORD, ClientCertificate, Options, RadclientOutput, RadsecPki, TestServer, enroll, radclient, system_tool,
    totp_code, watchdog,
};
use crate::nas_guides::{Guide, state_in};

/// The proxy's client in radmfa, and the name in its certificate, as the guide has them.
const PROXY_CLIENT: &str = "site-b-radsecproxy";
const PROXY_CERTIFICATE_NAME: &str = "radsecproxy.site-b.example.test";
/// The NAS-to-radsecproxy secret of the guide's `client vpn-gw-1`.
const NAS_SECRET: &str = "Nas-to-radsecproxy-secret-change-me-4";

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Whether radclient and `tool` are here (on CI their absence fails the test).
fn tools_ready(tool: &str, package: &str) -> bool {
    system_tool("radclient", "freeradius-utils").is_some() && system_tool(tool, package).is_some()
}

/// A TOML string holding `path`.
fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// A free UDP port on 127.0.0.1 (another process may take it before it is used: the starters
/// below try again with another).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// radmfa with the guide's RadSec listener (on a free port, with `pki`'s files) and `client`
/// (a `[[client]]` block), whose users without a token log in with their password alone (carol
/// has none); `server_extra` adds `[server]` keys.
fn start_radmfa(pki: &RadsecPki, client: &str, server_extra: &str, reject_delay: &'static str) -> TestServer {
    let listener = Guide::read("radsecproxy.md")
        .block("radmfa server")
        .replace("\"0.0.0.0:2083\"", "\"127.0.0.1:0\"")
        .replace("\"/etc/radmfa/radsec/radmfa1.pem\"", &toml_path(&pki.server_cert))
        .replace("\"/etc/radmfa/radsec/radmfa1.key\"", &toml_path(&pki.server_key))
        .replace("\"/etc/radmfa/radsec/ca.pem\"", &toml_path(&pki.ca_file))
        .text();
    TestServer::start(Options {
        server_extra: Box::leak(format!("{listener}{server_extra}").into_boxed_str()),
        reject_delay,
        extra: format!("{client}no_token = \"password_only\"\n"),
        ..Options::default()
    })
}

/// The guide's drop-in for the proxy, from 127.0.0.1.
fn guide_client() -> String {
    Guide::read("radsecproxy.md").block("radmfa client").replace("\"192.0.2.20\"", "\"127.0.0.1\"").text()
}

/// The "RadSec: connection open" lines of `server`'s log.
fn connections_opened(server: &TestServer) -> Vec<Value> {
    server.logs().into_iter().filter(|l| l["message"] == "RadSec: connection open").collect()
}

/// Waits until `server` has logged `n` opened connections; they all name `client`.
fn wait_for_connections(server: &TestServer, n: usize, client: &str, timeout: Duration) {
    let until = Instant::now() + timeout;
    while connections_opened(server).len() < n && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let opened = connections_opened(server);
    assert_eq!(opened.len(), n, "connections opened: {opened:?}\nradmfa: {:?}", server.logs());
    assert!(opened.iter().all(|l| l["client"] == client), "every connection is the [[client]] {client}: {opened:?}");
}

/// The audit lines' `field`s, in order, once there are `n`.
fn audit_field(server: &TestServer, n: usize, field: &str) -> Vec<String> {
    server.wait_for_audit(n).iter().map(|v| v[field].as_str().unwrap_or_default().to_owned()).collect()
}

/// What radclient received ("Access-Accept", ...), or "no answer".
fn received(out: &RadclientOutput) -> &'static str {
    ["Access-Accept", "Access-Reject", "Access-Challenge"]
        .into_iter()
        .find(|code| out.stdout.contains(&format!("Received {code}")))
        .unwrap_or("no answer")
}

/// A login through the proxy at `nas_to_proxy` (radclient's one try, 4 s).
fn login(nas_to_proxy: SocketAddr, user: &str, password: &str, state: Option<&str>) -> RadclientOutput {
    let state = state.map(|s| format!("State = {s}\n")).unwrap_or_default();
    let input = format!("User-Name = {user}\nUser-Password = \"{password}\"\nNAS-Identifier = vpn-gw-1\n{state}");
    radclient(nas_to_proxy, "auth", NAS_SECRET, &input).expect("radclient is installed (checked first)")
}

/// A program's log file, read as it is now.
fn read_log(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// Waits for the first of `needles` in the log file at `path`.
fn wait_in_log(path: &Path, needles: &[&str], timeout: Duration) -> Option<String> {
    let until = Instant::now() + timeout;
    loop {
        let log = read_log(path);
        if let Some(found) = needles.iter().find(|n| log.contains(**n)) {
            return Some((*found).to_owned());
        }
        if Instant::now() > until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- radsecproxy ------------------------------------------------------------------------------

/// radsecproxy in the foreground (`-f`, its log on stderr into a file), as the guide configures
/// it; stopped by its watchdog when dropped, or killed at once by [`Radsecproxy::kill`].
struct Radsecproxy {
    /// Its UDP listener: where the NAS sends.
    udp: SocketAddr,
    log: PathBuf,
    pid_file: PathBuf,
    _watchdog: (Child, ChildStdin),
}

impl Radsecproxy {
    /// The guide's radsecproxy.conf in `dir`, with `certificate` as the proxy's, talking to
    /// radmfa's RadSec listener at `radsec` (whose certificate is for localhost).
    fn start(dir: &Path, pki: &RadsecPki, certificate: &ClientCertificate, radsec: SocketAddr) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let (conf, log, pid_file) = (dir.join("radsecproxy.conf"), dir.join("radsecproxy.log"), dir.join("radsecproxy.pid"));
        // A port taken between choosing it and radsecproxy binding it: once more, with another.
        for _ in 0..3 {
            let port = free_udp_port();
            let text = Guide::read("radsecproxy.md")
                .block("radsecproxy.conf")
                .replace("ListenUDP *:1812", &format!("ListenUDP 127.0.0.1:{port}"))
                // Everything, for the assertions below and for whoever reads a failure.
                .replace("LogLevel 3", "LogLevel 5")
                .replace("/etc/radsecproxy/radmfa-ca.pem", &pki.ca_file.display().to_string())
                .replace("/etc/radsecproxy/radsecproxy.pem", &certificate.cert_file.display().to_string())
                .replace("/etc/radsecproxy/radsecproxy.key", &certificate.key_file.display().to_string())
                // The NAS is radclient, here.
                .replace("host 192.0.2.40", "host 127.0.0.1")
                .replace("host radmfa1.example.test", "host localhost")
                .replace("port 2083", &format!("port {}", radsec.port()))
                .text();
            std::fs::write(&conf, text).unwrap();
            let _ = std::fs::remove_file(&pid_file);
            let started = watchdog(
                "exec radsecproxy -f -c \"$1\" -i \"$2\" > \"$3\" 2>&1",
                &[conf.as_os_str(), pid_file.as_os_str(), log.as_os_str()],
            )
            .unwrap_or_else(|e| panic!("starting radsecproxy: {e}"));
            let proxy =
                Self { udp: SocketAddr::from(([127, 0, 0, 1], port)), log: log.clone(), pid_file: pid_file.clone(), _watchdog: started };
            let listening = wait_in_log(&log, &["listening for udp", "bind failed", "configuration error"], Duration::from_secs(10));
            match listening.as_deref() {
                Some("listening for udp") => return proxy,
                Some("bind failed") => continue,
                _ => panic!("radsecproxy did not start:\n{}", proxy.log()),
            }
        }
        panic!("radsecproxy found no free UDP port in three tries:\n{}", read_log(&log));
    }

    fn log(&self) -> String {
        read_log(&self.log)
    }

    /// SIGKILL, as a crash or `kill -9` ends it: no TLS close_notify, nothing flushed.
    fn kill(&self) {
        let pid = std::fs::read_to_string(&self.pid_file).unwrap_or_else(|e| panic!("{}: {e}", self.pid_file.display()));
        let pid = pid.trim();
        assert!(!pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()), "pid file: {pid:?}");
        let status = Command::new("kill").args(["-KILL", pid]).status().unwrap();
        assert!(status.success(), "kill -KILL {pid}");
    }
}

/// radmfa with the guide's client, and radsecproxy connected to it with a certificate of the
/// PKI (both in the returned folder).
fn relay_through_radsecproxy() -> (tempfile::TempDir, TestServer, Radsecproxy) {
    let dir = tempfile::tempdir().unwrap();
    let pki = RadsecPki::new(dir.path());
    let certificate = pki.certificate("radsecproxy", &[PROXY_CERTIFICATE_NAME], false);
    let radmfa = start_radmfa(&pki, &guide_client(), "", "0s");
    let proxy = Radsecproxy::start(&dir.path().join("proxy"), &pki, &certificate, radmfa.radsec.unwrap());
    wait_for_connections(&radmfa, 1, PROXY_CLIENT, Duration::from_secs(10));
    (dir, radmfa, proxy)
}

/// radclient → radsecproxy → radmfa: a user without a token with her password (and a wrong
/// one), a user with the code appended (and the same code again), and a challenge round whose
/// State goes back through the proxy. One TLS connection carries it all, opened as the guide's
/// client.
#[test]
fn radsecproxy_relays_logins_replays_and_challenge_rounds_over_one_connection() {
    if !tools_ready("radsecproxy", "radsecproxy") {
        return;
    }
    let (_dir, radmfa, proxy) = relay_through_radsecproxy();
    let alice = enroll(&radmfa.config, "alice");
    let why = |out: &RadclientOutput| format!("{}{}\nradsecproxy:\n{}", out.stdout, out.stderr, proxy.log());

    let out = login(proxy.udp, "carol", CAROL_PASSWORD, None);
    assert_eq!(received(&out), "Access-Accept", "{}", why(&out));
    let out = login(proxy.udp, "carol", "not-carols-password", None);
    assert_eq!(received(&out), "Access-Reject", "{}", why(&out));
    let code = totp_code(&alice, 0);
    let out = login(proxy.udp, "alice", &format!("{ALICE_PASSWORD}{code}"), None);
    assert_eq!(received(&out), "Access-Accept", "{}", why(&out));
    let out = login(proxy.udp, "alice", &format!("{ALICE_PASSWORD}{code}"), None);
    assert_eq!(received(&out), "Access-Reject", "the same code again: {}", why(&out));
    let out = login(proxy.udp, "alice", ALICE_PASSWORD, None);
    assert_eq!(received(&out), "Access-Challenge", "{}", why(&out));
    let state = state_in(&out.stdout).unwrap_or_else(|| panic!("no State in the challenge: {}", why(&out)));
    let out = login(proxy.udp, "alice", &totp_code(&alice, 1), Some(&state));
    assert_eq!(received(&out), "Access-Accept", "the challenge answered: {}", why(&out));

    assert_eq!(
        audit_field(&radmfa, 6, "reason"),
        ["password_only", "wrong_password", "authenticated", "code_replayed", "totp_challenge", "authenticated"]
    );
    assert!(audit_field(&radmfa, 6, "client").iter().all(|c| c == PROXY_CLIENT));
    assert!(audit_field(&radmfa, 6, "nas_identifier").iter().all(|n| n == "vpn-gw-1"), "the NAS's NAS-Identifier is relayed");
    let opened = connections_opened(&radmfa);
    assert_eq!(opened[0]["certificate"], PROXY_CERTIFICATE_NAME);
    assert_eq!(opened[0]["radius"], "radius/1.0", "radsecproxy 1.9 offers no ALPN: historic RadSec");
    let (status, stats) = radmfa.stop();
    assert!(status.success());
    assert_eq!(stats.get("tls_connections"), 1, "every login on the one connection radsecproxy opened at start");
    assert_eq!(stats.get("tls_handshake_failures"), 0);
}

/// radsecproxy's watchdog (`StatusServer on`): after 25 to 32 s without hearing from radmfa it
/// sends a Status-Server, radmfa answers it on the same connection, which stays open and
/// carries the next login.
#[test]
fn radsecproxy_status_server_is_answered_and_keeps_the_connection() {
    if !tools_ready("radsecproxy", "radsecproxy") {
        return;
    }
    let (_dir, radmfa, proxy) = relay_through_radsecproxy();

    let answered = wait_in_log(&proxy.log, &["got status server response"], Duration::from_secs(40));
    assert!(answered.is_some(), "no answered Status-Server within 40 s:\n{}", proxy.log());
    let out = login(proxy.udp, "carol", CAROL_PASSWORD, None);
    assert_eq!(received(&out), "Access-Accept", "{}{}\nradsecproxy:\n{}", out.stdout, out.stderr, proxy.log());

    let (_, stats, logs) = radmfa.stop_with_logs();
    assert!(stats.get("status_server") >= 1, "radmfa counted the Status-Server it answered");
    assert_eq!(stats.get("tls_connections"), 1, "the watched connection stayed open");
    let closed_early = logs.iter().any(|l| l["message"] == "RadSec: connection closed" && l["end"] != "Shutdown");
    assert!(!closed_early, "open until radmfa stopped: {logs:?}");
}

/// radsecproxy with a certificate from a CA radmfa does not trust — under the very name of the
/// configured client — gets no connection: the NAS gets no answer, radmfa logs the failed
/// handshake and decides nothing.
#[test]
fn radsecproxy_with_a_certificate_of_another_ca_gets_no_answer() {
    if !tools_ready("radsecproxy", "radsecproxy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = RadsecPki::new(dir.path());
    let foreign = pki.foreign_certificate("radsecproxy-foreign", PROXY_CERTIFICATE_NAME);
    let radmfa = start_radmfa(&pki, &guide_client(), "", "0s");
    let proxy = Radsecproxy::start(&dir.path().join("proxy"), &pki, &foreign, radmfa.radsec.unwrap());

    let out = login(proxy.udp, "carol", CAROL_PASSWORD, None);
    assert_eq!(received(&out), "no answer", "{}{}\nradsecproxy:\n{}", out.stdout, out.stderr, proxy.log());
    let failed = radmfa.wait_for(|l| l["message"] == "RadSec: TLS handshake failed", Duration::from_secs(5));
    let failed = failed.unwrap_or_else(|| panic!("no failed handshake in radmfa's log: {:?}", radmfa.logs()));
    assert!(failed["error"].as_str().unwrap_or_default().contains("UnknownIssuer"), "{failed}");
    assert!(failed["peer"].as_str().unwrap_or_default().starts_with("127.0.0.1:"), "{failed}");
    // What the guide's pitfalls quote from radsecproxy's side.
    assert!(proxy.log().contains("alert unknown ca"), "radsecproxy:\n{}", proxy.log());
    assert!(radmfa.audit().is_empty(), "nothing decided: {:?}", radmfa.audit());
    let (_, stats) = radmfa.stop();
    assert_eq!(stats.get("tls_connections"), 0);
    assert!(stats.get("tls_handshake_failures") >= 1);
}

/// radsecproxy killed (SIGKILL) while radmfa holds back a Reject (`reject_delay`): radmfa logs
/// the connection as lost, keeps running, and — with `tls_connections_per_client = 1` — takes
/// the new radsecproxy's connection at once, before the old request's answer is even due.
#[test]
fn radsecproxy_killed_mid_request_is_replaced_at_once() {
    if !tools_ready("radsecproxy", "radsecproxy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = RadsecPki::new(dir.path());
    let certificate = pki.certificate("radsecproxy", &[PROXY_CERTIFICATE_NAME], false);
    let mut radmfa = start_radmfa(&pki, &guide_client(), "tls_connections_per_client = 1\n", "5s");
    let radsec = radmfa.radsec.unwrap();
    let first = Radsecproxy::start(&dir.path().join("first"), &pki, &certificate, radsec);
    wait_for_connections(&radmfa, 1, PROXY_CLIENT, Duration::from_secs(10));

    let nas = first.udp;
    let cut_login = std::thread::spawn(move || login(nas, "carol", "not-carols-password", None));
    // Decided (the audit line comes before reject_delay): the Reject is now being held back.
    assert_eq!(audit_field(&radmfa, 1, "reason"), ["wrong_password"]);
    first.kill();
    let killed_at = Instant::now();
    let lost = radmfa.wait_for(|l| l["message"] == "RadSec: connection lost", Duration::from_secs(5));
    assert!(lost.is_some_and(|l| l["client"] == PROXY_CLIENT), "radmfa: {:?}", radmfa.logs());

    let second = Radsecproxy::start(&dir.path().join("second"), &pki, &certificate, radsec);
    wait_for_connections(&radmfa, 2, PROXY_CLIENT, Duration::from_secs(5));
    assert!(killed_at.elapsed() < Duration::from_secs(5), "the new connection came before the old Reject was due");
    let out = login(second.udp, "carol", CAROL_PASSWORD, None);
    assert_eq!(received(&out), "Access-Accept", "{}{}\nradsecproxy:\n{}", out.stdout, out.stderr, second.log());
    let out = cut_login.join().unwrap();
    assert_eq!(received(&out), "no answer", "the first radsecproxy died with the request");

    assert!(radmfa.is_running());
    let (status, stats, logs) = radmfa.stop_with_logs();
    assert!(status.success());
    assert_eq!(stats.get("tls_connections"), 2);
    assert_eq!(stats.get("tls_over_connection_limit"), 0, "{logs:?}");
    assert_eq!(stats.get("tls_closed_bad_packet"), 0, "a killed client sent no bad packet");
}

// ---- FreeRADIUS 3.2 as a TLS client -------------------------------------------------------------

/// FreeRADIUS in the foreground (`-X`), its output in a file; stopped by its watchdog when dropped.
struct FreeRadius {
    udp: SocketAddr,
    log: PathBuf,
    _watchdog: (Child, ChildStdin),
}

/// The home server, pool and realm for radmfa over TLS, appended to proxy.conf.
fn freeradius_home_server(radsec: SocketAddr, certificate: &ClientCertificate, ca_file: &Path) -> String {
    format!(
        r#"
home_server radmfa1-tls {{
	ipaddr = {ip}
	port = {port}
	type = auth
	proto = tcp
	# RFC 6614's secret for RADIUS over TLS, which radmfa assumes.
	secret = radsec
	status_check = status-server
	tls {{
		certificate_file = {cert}
		private_key_file = {key}
		ca_file = {ca}
	}}
}}

home_server_pool radmfa-tls {{
	type = fail-over
	home_server = radmfa1-tls
}}

realm radmfa {{
	auth_pool = radmfa-tls
	nostrip
}}
"#,
        ip = radsec.ip(),
        port = radsec.port(),
        cert = certificate.cert_file.display(),
        key = certificate.key_file.display(),
        ca = ca_file.display(),
    )
}

impl FreeRadius {
    /// A private copy of the package's /etc/freeradius/3.0 in `dir`: no stock sites, no eap
    /// module, running as whoever runs the test, and a virtual server on a free UDP port that
    /// proxies every request to the realm of `proxy_conf`. `None` (a skip, or a failure on CI)
    /// when the package's configuration cannot be copied.
    fn start(dir: &Path, proxy_conf: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let raddb = dir.join("raddb");
        let copied = crate::harness::private_freeradius_config(&raddb);
        match copied {
            Ok(()) => {}
            // Parts of the package's configuration are readable by root and freerad only.
            Err(why) if why.contains("Permission denied") && !ci() => {
                eprintln!("SKIPPED: cannot read all of FreeRADIUS's configuration (root can): {why}");
                return None;
            }
            Err(why) => panic!("{why}"),
        }
        let mut proxy = std::fs::read_to_string(raddb.join("proxy.conf")).unwrap();
        proxy.push_str(proxy_conf);
        std::fs::write(raddb.join("proxy.conf"), proxy).unwrap();
        std::fs::write(raddb.join("clients.conf"), format!("client nas {{\n\tipaddr = 127.0.0.1\n\tsecret = {NAS_SECRET}\n}}\n")).unwrap();

        let log = dir.join("freeradius.log");
        for _ in 0..3 {
            let port = free_udp_port();
            let site = format!(
                "server radmfa-tls-proxy {{\n\tlisten {{\n\t\ttype = auth\n\t\tipaddr = 127.0.0.1\n\t\tport = {port}\n\t}}\n\tauthorize {{\n\t\tupdate control {{\n\t\t\t&Proxy-To-Realm := \"radmfa\"\n\t\t}}\n\t}}\n\tauthenticate {{\n\t}}\n}}\n"
            );
            std::fs::write(raddb.join("sites-enabled/radmfa-tls-proxy"), site).unwrap();
            let started = watchdog("exec freeradius -X -d \"$1\" > \"$2\" 2>&1", &[raddb.as_os_str(), log.as_os_str()])
                .unwrap_or_else(|e| panic!("starting freeradius: {e}"));
            let server = Self { udp: SocketAddr::from(([127, 0, 0, 1], port)), log: log.clone(), _watchdog: started };
            match wait_in_log(&log, &["Ready to process requests", "Failed binding"], Duration::from_secs(20)).as_deref() {
                Some("Ready to process requests") => return Some(server),
                Some("Failed binding") => continue,
                _ => panic!("FreeRADIUS did not start:\n{}", server.log()),
            }
        }
        panic!("FreeRADIUS found no free UDP port in three tries:\n{}", read_log(&log));
    }

    fn log(&self) -> String {
        read_log(&self.log)
    }
}

/// radclient → FreeRADIUS 3.2 (UDP) → radmfa as a TLS home server (`proto = tcp` with a `tls`
/// section): Access-Accept for a right password and for a code appended, Access-Reject for a
/// wrong password, all on one connection opened as radmfa's TLS client for FreeRADIUS.
#[test]
fn freeradius_proxies_to_radmfa_as_a_tls_home_server() {
    if !tools_ready("freeradius", "freeradius") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = RadsecPki::new(dir.path());
    let certificate = pki.certificate("freeradius", &["freeradius.site-c.example.test"], false);
    let client = "[[client]]\nname = \"site-c-freeradius\"\ntransport = \"tls\"\ncertificate_name = \"freeradius.site-c.example.test\"\n";
    let radmfa = start_radmfa(&pki, client, "", "0s");
    let alice = enroll(&radmfa.config, "alice");
    let proxy_conf = freeradius_home_server(radmfa.radsec.unwrap(), &certificate, &pki.ca_file);
    let Some(freeradius) = FreeRadius::start(&dir.path().join("freeradius"), &proxy_conf) else { return };
    let why = |out: &RadclientOutput| format!("{}{}\nFreeRADIUS:\n{}", out.stdout, out.stderr, freeradius.log());

    let out = login(freeradius.udp, "carol", CAROL_PASSWORD, None);
    assert_eq!(received(&out), "Access-Accept", "{}", why(&out));
    let out = login(freeradius.udp, "carol", "not-carols-password", None);
    assert_eq!(received(&out), "Access-Reject", "{}", why(&out));
    let out = login(freeradius.udp, "alice", &format!("{ALICE_PASSWORD}{}", totp_code(&alice, 0)), None);
    assert_eq!(received(&out), "Access-Accept", "{}", why(&out));

    assert_eq!(audit_field(&radmfa, 3, "reason"), ["password_only", "wrong_password", "authenticated"]);
    assert!(audit_field(&radmfa, 3, "client").iter().all(|c| c == "site-c-freeradius"));
    wait_for_connections(&radmfa, 1, "site-c-freeradius", Duration::from_secs(1));
    assert!(freeradius.log().contains("(TLS)"), "FreeRADIUS proxied over TLS:\n{}", freeradius.log());
    let (status, stats) = radmfa.stop();
    assert!(status.success());
    assert_eq!(stats.get("tls_connections"), 1);
}
