//! The NAS guides in docs/nas/ that a Debian package can play, run as written. Each test takes
//! the blocks marked `<!-- test: NAME -->` out of its guide, replaces only what must differ here
//! — addresses, ports and file paths, each replacement written out below and each required to
//! find its text, so a guide edited out from under its test fails it — and logs in through the
//! real client software against the real radmfa binary:
//!
//! - `pam_radius.md`: the guide's PAM line as a service in /etc/pam.d (a name of its own per run,
//!   removed after), its server file given by `conf=`, driven by `pamtester`;
//! - `freeradius-proxy.md`: a private copy of /etc/freeradius/3.0 with the guide's proxy.conf,
//!   virtual server and clients.conf, run in a network namespace of its own beside radmfa;
//!   `radclient` → FreeRADIUS → radmfa;
//! - `openvpn.md`: an OpenVPN server with radiusplugin (and radmfa) in one network namespace, a
//!   client in another, joined by a veth pair.
//!
//! The guides use documentation addresses: radmfa at 192.0.2.10:1812 (accounting :1813), the NAS
//! at other 192.0.2.x addresses. Here radmfa listens on 127.0.0.1 — port 0, or the guide's 1812
//! and 1813 inside the OpenVPN test's own namespace (radiusplugin cannot reach a port above
//! 32767) — with the users file of the harness (alice, carol) and no client in its config but
//! the guide's drop-in in conf.d.
//! The tests need root and the packages `scripts/test` installs: on CI (CI=true) a missing one
//! fails the test, elsewhere the test is skipped with a note. Namespaces, processes and PAM
//! services are removed when a test ends, also when it fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{ALICE_PASSWORD, CAROL_PASSWORD, TestServer, admin, enroll, system_tool, totp_code, write_users};

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Says why the test cannot run: a failure on CI, a skip elsewhere (returns false).
fn cannot_run(why: &str) -> bool {
    assert!(!ci(), "{why} (CI=true, so this fails rather than skips)");
    eprintln!("SKIPPED: {why}");
    false
}

/// Whether the tools, the Debian packages and root are here.
fn ready(tools: &[(&str, &str)], packages: &[&str]) -> bool {
    if tools.iter().any(|(tool, package)| system_tool(tool, package).is_none()) {
        return false;
    }
    for package in packages {
        let status = Command::new("dpkg-query").args(["-W", "-f=${Status}", package]).output();
        if !status.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed")) {
            return cannot_run(&format!("the package {package} is not installed (apt-get install {package})"));
        }
    }
    let uid = Command::new("id").arg("-u").output().map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned()).unwrap_or_default();
    if uid != "0" {
        return cannot_run("this guide's test needs root (network namespaces, /etc/pam.d, daemons)");
    }
    true
}

/// A guide in docs/nas/ (also read by `radsec_interop`).
pub(crate) struct Guide {
    name: &'static str,
    text: String,
}

impl Guide {
    pub(crate) fn read(name: &'static str) -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/nas").join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self { name, text }
    }

    /// The fenced block right after the line `<!-- test: TAG -->`, which must be there once.
    pub(crate) fn block(&self, tag: &str) -> Block {
        let marker = format!("<!-- test: {tag} -->");
        let lines: Vec<&str> = self.text.lines().collect();
        let at: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| l.trim() == marker).map(|(i, _)| i).collect();
        assert_eq!(at.len(), 1, "{}: {marker} must be there exactly once", self.name);
        let fence = lines.get(at[0] + 1).copied().unwrap_or_default();
        assert!(fence.starts_with("```"), "{}: {marker} must be followed at once by a ``` block", self.name);
        let body: Vec<&str> = lines[at[0] + 2..].iter().take_while(|l| !l.starts_with("```")).copied().collect();
        assert!(at[0] + 2 + body.len() < lines.len(), "{}: the block after {marker} is not closed", self.name);
        Block { place: format!("{} {marker}", self.name), text: body.join("\n") + "\n" }
    }
}

/// A block taken out of a guide, with what must differ here replaced.
pub(crate) struct Block {
    place: String,
    text: String,
}

impl Block {
    /// Every `from` replaced by `to`; `from` must be in the block.
    pub(crate) fn replace(mut self, from: &str, to: &str) -> Self {
        assert!(self.text.contains(from), "{}: no {from:?} to replace in\n{}", self.place, self.text);
        self.text = self.text.replace(from, to);
        self
    }

    pub(crate) fn text(self) -> String {
        self.text
    }
}

/// radmfa as an admin sets it up for a NAS: no client in radmfa.toml, the guide's `drop_in` as
/// conf.d/`file_name`. It listens on 127.0.0.1 port 0, or on `ports` (authentication,
/// accounting) where no other test's radmfa can be: in a network namespace, which `wrapper`
/// (`ip netns exec NAME`) runs it in.
fn start_radmfa(file_name: &str, drop_in: &str, ports: (u16, u16), wrapper: &[&str]) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    write_users(dir.path());
    let config = dir.path().join("radmfa.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = ["127.0.0.1:{}"]
accounting_listen = ["127.0.0.1:{}"]

[directory]
kind = "file"
path = "users.toml"

[store]
path = "radmfa.db"
key_file = "master.key"

[totp]
issuer = "Example Region"
"#,
            ports.0, ports.1
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    std::fs::write(dir.path().join("conf.d").join(file_name), drop_in).unwrap();
    let keygen = admin(&config, &["keygen"]);
    assert!(keygen.status.success(), "keygen: {}", String::from_utf8_lossy(&keygen.stderr));
    let mut server = TestServer::launch(dir, config, None, wrapper);
    server.wait_listening(Duration::from_secs(20));
    let loaded = server.wait_for(|v| v["message"].as_str().is_some_and(|m| m.starts_with("configuration loaded")), Duration::from_secs(5));
    assert!(loaded.is_some_and(|v| v["clients"] == 1), "the drop-in's client was not loaded: {:?}", server.logs());
    server
}

/// The audit lines' `field`s, in order.
fn audit_field(server: &TestServer, n: usize, field: &str) -> Vec<String> {
    server.wait_for_audit(n).iter().map(|v| v[field].as_str().unwrap_or_default().to_owned()).collect()
}

fn run(command: &mut Command) {
    crate::harness::run(command).unwrap_or_else(|e| panic!("{e}"));
}

/// A name no other test run uses at the same time.
fn unique(role: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("rmfa-{}-{}-{role}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A network namespace of this test's own, loopback up. When dropped, every process in it is
/// killed (they are this test's: nobody else knows its name) and it is deleted.
struct Netns {
    name: String,
}

impl Netns {
    fn new(role: &str) -> Self {
        let name = unique(role);
        run(Command::new("ip").args(["netns", "add", &name]));
        let netns = Self { name };
        run(Command::new("ip").args(["-n", &netns.name, "link", "set", "lo", "up"]));
        netns
    }

    /// The prefix that runs a program in here.
    fn exec(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A daemon or client whose output goes to a log file; killed when dropped.
struct Background {
    child: Child,
    log: PathBuf,
}

impl Background {
    fn start(mut command: Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The first of `needles` to appear in the log within `timeout`.
    fn wait_for_any(&mut self, needles: &[&str], timeout: Duration) -> Option<String> {
        let until = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(found) = needles.iter().find(|n| log.contains(**n)) {
                return Some((*found).to_owned());
            }
            if Instant::now() > until || self.child.try_wait().ok().flatten().is_some() {
                let log = self.log();
                return needles.iter().find(|n| log.contains(**n)).map(|n| (*n).to_owned());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- pam_radius -------------------------------------------------------------------------------

/// A PAM service in /etc/pam.d named for this run, removed when dropped.
struct PamService {
    name: String,
}

impl PamService {
    fn create(text: &str) -> Self {
        let service = Self { name: unique("pam") };
        std::fs::write(Path::new("/etc/pam.d").join(&service.name), text).unwrap();
        service
    }

    /// `pamtester SERVICE USER authenticate` with `answers` (one per prompt) on its stdin.
    fn authenticate(&self, user: &str, answers: &str) -> (bool, String) {
        let out = crate::harness::run_with_input(Command::new("pamtester").args([&self.name, user, "authenticate"]), answers);
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(Path::new("/etc/pam.d").join(&self.name));
    }
}

#[test]
fn pam_radius_guide_logs_in_with_the_code_appended_or_asked_for() {
    if !ready(&[("pamtester", "pamtester")], &["libpam-radius-auth"]) {
        return;
    }
    let guide = Guide::read("pam_radius.md");
    // The Linux servers' network is this machine.
    let drop_in = guide.block("radmfa").replace("\"192.0.2.0/24\"", "\"127.0.0.1/32\"").text();
    let radmfa = start_radmfa("ssh-hosts.toml", &drop_in, (0, 0), &[]);
    let (alice, carol) = (enroll(&radmfa.config, "alice"), enroll(&radmfa.config, "carol"));

    let work = tempfile::tempdir().unwrap();
    let servers = work.path().join("pam_radius_auth.conf");
    let servers_text = guide.block("pam_radius_auth.conf").replace("192.0.2.10:1812", &radmfa.auth.to_string()).text();
    std::fs::write(&servers, servers_text).unwrap();
    run(Command::new("chmod").arg("0600").arg(&servers));
    let service =
        PamService::create(&guide.block("pam.d").replace("conf=/etc/pam_radius_auth.conf", &format!("conf={}", servers.display())).text());

    // Password and code in one answer.
    let (ok, out) = service.authenticate("alice", &format!("{ALICE_PASSWORD}{}\n", totp_code(&alice, 0)));
    assert!(ok && out.contains("successfully authenticated"), "{out}");
    // A wrong code (ten time steps ahead: outside the window).
    let (ok, out) = service.authenticate("alice", &format!("{ALICE_PASSWORD}{}\n", totp_code(&alice, 10)));
    assert!(!ok && out.contains("Authentication failure"), "{out}");
    // The password alone: pam_radius shows radmfa's challenge as a prompt and sends the answer.
    let (ok, out) = service.authenticate("carol", &format!("{CAROL_PASSWORD}\n{}\n", totp_code(&carol, 0)));
    assert!(ok && out.contains("Enter the code from your authenticator app"), "{out}");

    assert_eq!(audit_field(&radmfa, 4, "reason"), ["authenticated", "wrong_code", "totp_challenge", "authenticated"]);
    assert!(audit_field(&radmfa, 4, "client").iter().all(|c| c == "ssh-hosts"));
    assert!(audit_field(&radmfa, 4, "nas_identifier").iter().all(|n| *n == service.name), "the PAM service is the NAS-Identifier");
}

// ---- FreeRADIUS as a proxy --------------------------------------------------------------------

/// radclient in `netns`: one try, its output.
fn radclient_in(netns: &Netns, secret: &str, input: &str) -> String {
    let mut child = netns
        .command("radclient")
        .args(["-x", "-r", "1", "-t", "8", "127.0.0.1:1812", "auth", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The State of an Access-Challenge in radclient's output, as it prints it (0x...).
pub(crate) fn state_in(radclient_output: &str) -> Option<String> {
    radclient_output.lines().find_map(|l| l.trim().strip_prefix("State = ")).map(str::to_owned)
}

#[test]
fn freeradius_proxy_guide_relays_appended_codes_and_challenge_rounds() {
    if !ready(&[("freeradius", "freeradius"), ("radclient", "freeradius-utils"), ("ip", "iproute2")], &[]) {
        return;
    }
    let guide = Guide::read("freeradius-proxy.md");
    let netns = Netns::new("fr");
    let drop_in = guide.block("radmfa").replace("\"192.0.2.5\"", "\"127.0.0.1\"").text();
    let radmfa = start_radmfa("freeradius-proxy.toml", &drop_in, (0, 0), &netns.exec());
    let (alice, carol) = (enroll(&radmfa.config, "alice"), enroll(&radmfa.config, "carol"));

    // A private FreeRADIUS: the package's config copied, never the system's own. As the guide
    // says for a FreeRADIUS that only proxies: no stock sites, no eap module. Around the guide,
    // it runs as root (no switch to freerad, who cannot read this temp dir) with its pid file in
    // the copy.
    let work = tempfile::tempdir().unwrap();
    let raddb = work.path().join("raddb");
    crate::harness::private_freeradius_config(&raddb).unwrap();

    // The guide's three files: radmfa's address and port; the NAS is radclient, here.
    let home_server = guide
        .block("proxy.conf")
        .replace("ipaddr = 192.0.2.10", "ipaddr = 127.0.0.1")
        .replace("port = 1812", &format!("port = {}", radmfa.auth.port()))
        .text();
    let mut proxy_conf = std::fs::OpenOptions::new().append(true).open(raddb.join("proxy.conf")).unwrap();
    proxy_conf.write_all(format!("\n{home_server}").as_bytes()).unwrap();
    std::fs::write(raddb.join("sites-available/radmfa-proxy"), guide.block("radmfa-proxy site").text()).unwrap();
    std::os::unix::fs::symlink("../sites-available/radmfa-proxy", raddb.join("sites-enabled/radmfa-proxy")).unwrap();
    // The stock clients.conf is replaced: its localhost client would claim 127.0.0.1 too.
    let clients = guide.block("clients.conf").replace("ipaddr = 192.0.2.40", "ipaddr = 127.0.0.1").text();
    std::fs::write(raddb.join("clients.conf"), clients).unwrap();

    let check = netns.command("freeradius").arg("-CX").arg("-d").arg(&raddb).output().unwrap();
    let check_log = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "freeradius -CX:\n{}", check_log.lines().rev().take(30).collect::<Vec<_>>().join("\n"));
    let mut freeradius_command = netns.command("freeradius");
    freeradius_command.arg("-X").arg("-d").arg(&raddb);
    let mut freeradius = Background::start(freeradius_command, work.path().join("freeradius.log"));
    let ready = freeradius.wait_for_any(&["Ready to process requests"], Duration::from_secs(15));
    assert!(ready.is_some(), "FreeRADIUS did not start:\n{}", freeradius.log());

    let nas_secret = "Nas-to-proxy-secret-change-me-3";
    let signed = "Message-Authenticator = 0x00\nNAS-Identifier = vpn-gw-1\n";
    // The code appended.
    let out = radclient_in(
        &netns,
        nas_secret,
        &format!("User-Name = alice\nUser-Password = \"{ALICE_PASSWORD}{}\"\n{signed}", totp_code(&alice, 0)),
    );
    assert!(out.contains("Received Access-Accept"), "{out}\nFreeRADIUS:\n{}", freeradius.log());
    // A challenge round: the State goes back to radclient and comes through again.
    let out = radclient_in(&netns, nas_secret, &format!("User-Name = carol\nUser-Password = \"{CAROL_PASSWORD}\"\n{signed}"));
    assert!(out.contains("Received Access-Challenge"), "{out}\nFreeRADIUS:\n{}", freeradius.log());
    let state = state_in(&out).unwrap_or_else(|| panic!("no State in the challenge: {out}"));
    let answer = format!("User-Name = carol\nUser-Password = \"{}\"\nState = {state}\n{signed}", totp_code(&carol, 0));
    let out = radclient_in(&netns, nas_secret, &answer);
    assert!(out.contains("Received Access-Accept"), "{out}\nFreeRADIUS:\n{}", freeradius.log());

    assert_eq!(audit_field(&radmfa, 3, "reason"), ["authenticated", "totp_challenge", "authenticated"]);
    assert!(audit_field(&radmfa, 3, "client").iter().all(|c| c == "freeradius-proxy"));
    assert!(audit_field(&radmfa, 3, "nas_identifier").iter().all(|n| n == "vpn-gw-1"), "the NAS's own NAS-Identifier is relayed");
    let proxied = freeradius.log();
    assert!(proxied.contains("Proxy-State = ") && proxied.contains("Message-Authenticator"), "{proxied}");
}

// ---- OpenVPN with radiusplugin ----------------------------------------------------------------

/// A CA, and a certificate for the OpenVPN server signed by it (as `remote-cert-tls server`
/// wants: TLS server use), written as ca.crt, server.crt and server.key in `dir`.
fn openvpn_certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "Example Region test VPN CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["vpn.example.test".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "vpn.example.test");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyAgreement];
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

#[test]
fn openvpn_guide_connects_with_the_code_appended_and_refuses_a_wrong_or_missing_code() {
    if !ready(&[("openvpn", "openvpn"), ("ip", "iproute2")], &["openvpn-auth-radius"]) {
        return;
    }
    if !Path::new("/dev/net/tun").exists() {
        cannot_run("/dev/net/tun is missing: OpenVPN needs TUN");
        return;
    }
    let guide = Guide::read("openvpn.md");
    // The server's side (OpenVPN and radmfa) at 192.0.2.1, the user's at 192.0.2.2.
    let server_ns = Netns::new("vpn-srv");
    let client_ns = Netns::new("vpn-cli");
    run(Command::new("ip").args([
        "link",
        "add",
        "vpn0",
        "netns",
        &server_ns.name,
        "type",
        "veth",
        "peer",
        "name",
        "vpn1",
        "netns",
        &client_ns.name,
    ]));
    for (netns, device, address) in [(&server_ns, "vpn0", "192.0.2.1/24"), (&client_ns, "vpn1", "192.0.2.2/24")] {
        run(Command::new("ip").args(["-n", &netns.name, "addr", "add", address, "dev", device]));
        run(Command::new("ip").args(["-n", &netns.name, "link", "set", device, "up"]));
    }

    // radmfa beside OpenVPN, which asks it from 127.0.0.1. On the guide's ports: radiusplugin
    // cannot reach a port above 32767 (port 0 may give one).
    let drop_in = guide.block("radmfa").replace("\"192.0.2.20\"", "\"127.0.0.1\"").text();
    let radmfa = start_radmfa("openvpn.toml", &drop_in, (1812, 1813), &server_ns.exec());
    let alice = enroll(&radmfa.config, "alice");

    let work = tempfile::tempdir().unwrap();
    let dir = format!("{}/", work.path().display());
    openvpn_certificates(work.path());
    let plugin = guide
        .block("radiusplugin.cnf")
        .replace("NAS-IP-Address=192.0.2.20", "NAS-IP-Address=127.0.0.1")
        .replace("/etc/openvpn/server/", &dir)
        .replace("name=192.0.2.10", "name=127.0.0.1")
        .text();
    std::fs::write(work.path().join("radiusplugin.cnf"), plugin).unwrap();
    // The tunnel's network: another documentation range, inside these namespaces only.
    let server_conf = guide
        .block("server.conf")
        .replace("/etc/openvpn/server/", &dir)
        .replace("/var/log/openvpn/", &dir)
        .replace("10.8.0.0", "198.51.100.0")
        .text();
    let server_config = work.path().join("server.conf");
    std::fs::write(&server_config, server_conf).unwrap();
    let credentials = work.path().join("alice.creds");
    let client_conf = guide
        .block("client.ovpn")
        .replace("remote vpn.example.test 1194", "remote 192.0.2.1 1194")
        .replace("\nca ca.crt\n", &format!("\nca {dir}ca.crt\n"))
        .replace("\nauth-user-pass\n", &format!("\nauth-user-pass {}\n", credentials.display()))
        .text();
    let client_config = work.path().join("alice.ovpn");
    std::fs::write(&client_config, client_conf).unwrap();

    let mut server_command = server_ns.command("openvpn");
    server_command.arg("--config").arg(&server_config);
    let mut server = Background::start(server_command, work.path().join("server.log"));
    let started = server.wait_for_any(&["Initialization Sequence Completed"], Duration::from_secs(15));
    assert!(started.is_some(), "the OpenVPN server did not start:\n{}", server.log());

    // The user's client logging in as `user` with `password`; what it ended with.
    let connect = |user: &str, password: String, log: &str| {
        std::fs::write(&credentials, format!("{user}\n{password}\n")).unwrap();
        let mut command = client_ns.command("openvpn");
        command.arg("--config").arg(&client_config);
        let mut client = Background::start(command, work.path().join(log));
        let outcome = client.wait_for_any(&["Initialization Sequence Completed", "AUTH_FAILED"], Duration::from_secs(20));
        (outcome, client.log())
    };
    let (outcome, log) = connect("alice", format!("{ALICE_PASSWORD}{}", totp_code(&alice, 0)), "client-right.log");
    assert_eq!(outcome.as_deref(), Some("Initialization Sequence Completed"), "client:\n{log}\nserver:\n{}", server.log());
    let (outcome, log) = connect("alice", format!("{ALICE_PASSWORD}{}", totp_code(&alice, 10)), "client-wrong.log");
    assert_eq!(outcome.as_deref(), Some("AUTH_FAILED"), "client:\n{log}\nserver:\n{}", server.log());
    // Carol has no authenticator app: with challenges = false she is rejected outright, where
    // the default would have sent her an SMS code in a challenge radiusplugin cannot answer.
    let (outcome, log) = connect("carol", CAROL_PASSWORD.to_owned(), "client-no-token.log");
    assert_eq!(outcome.as_deref(), Some("AUTH_FAILED"), "client:\n{log}\nserver:\n{}", server.log());

    assert_eq!(audit_field(&radmfa, 3, "reason"), ["authenticated", "wrong_code", "no_token"]);
    assert!(audit_field(&radmfa, 3, "client").iter().all(|c| c == "openvpn"));
    let accounting = radmfa.wait_for(|v| v["target"] == "radmfa::accounting" && v["status"] == "start", Duration::from_secs(5));
    assert!(accounting.is_some_and(|v| v["user"] == "alice"), "radiusplugin's accounting Start: {:?}", radmfa.logs());
}
