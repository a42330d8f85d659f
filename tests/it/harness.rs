//! Starts the built binary with a config written to a temp dir, reads its JSON log lines, and
//! finds the ports it bound (as hickory-dns's test harness reads them from the log).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SECRET: &str = "testing123";
pub const ALICE_PASSWORD: &str = "alice-pw";
pub const CAROL_PASSWORD: &str = "carol-pw";

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_radmfa")
}

/// Knobs a test may turn; everything else is the standard test config.
pub struct Options {
    /// A datagram socket path given to the server as NOTIFY_SOCKET, as systemd does.
    pub notify_socket: Option<PathBuf>,
    pub listen: &'static str,
    pub require_message_authenticator: bool,
    pub reject_delay: &'static str,
    pub max_in_flight: usize,
    /// The loopback client's second-factor mode and policy for users without a token. The
    /// RADIUS-edge tests use `password_only` so they need no token.
    pub mode: &'static str,
    pub no_token: &'static str,
    pub lockout: &'static str,
    pub challenge_timeout: &'static str,
    /// An HTTP SMS gateway URL (the test's sink); the log gateway when unset.
    pub sms_url: Option<String>,
    /// A `[directory]` section replacing the local users file (Active Directory tests).
    pub directory: Option<String>,
    /// A `[store]` section replacing the SQLite file (PostgreSQL tests).
    pub store: Option<String>,
    /// More config text: further `[[client]]` sections, say.
    pub extra: String,
    /// More `[[user]]` entries for the users file.
    pub extra_users: String,
    /// More keys for the `[server]` section (request_timeout, say).
    pub server_extra: &'static str,
    /// More keys for the `[lockout]` section.
    pub lockout_extra: &'static str,
    /// More keys for the `[sms]` section (with `sms_url`).
    pub sms_extra: &'static str,
    /// More keys for the `[totp]` section.
    pub totp_extra: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            notify_socket: None,
            listen: "127.0.0.1:0",
            require_message_authenticator: true,
            reject_delay: "0s",
            max_in_flight: 64,
            mode: "auto",
            no_token: "password_only",
            lockout: "5m",
            challenge_timeout: "120s",
            sms_url: None,
            directory: None,
            store: None,
            extra: String::new(),
            extra_users: String::new(),
            server_extra: "",
            lockout_extra: "",
            sms_extra: "",
            totp_extra: "",
        }
    }
}

/// An argon2id hash that costs the (debug) server a few hundred milliseconds to verify: a user
/// whose wrong passwords keep the hashing threads busy.
pub fn costly_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(16384, 1, 1, None).unwrap();
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    hasher.hash_password(password.as_bytes(), &salt).unwrap().to_string()
}

/// An argon2id hash with small parameters, so tests against the debug binary stay quick.
pub fn cheap_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(1024, 1, 1, None).unwrap();
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    hasher.hash_password(password.as_bytes(), &salt).unwrap().to_string()
}

pub fn write_users(dir: &Path) {
    write_users_with(dir, "");
}

pub fn write_users_with(dir: &Path, extra: &str) {
    let users = format!(
        r#"
[[user]]
username = "alice"
password_hash = "{}"
given_name = "Alice"
surname = "Andersson"
email = "alice@example.test"
mobile = "+46701234567"
groups = ["VPN-Users", "Staff"]

[[user]]
username = "dave"
password_hash = "{}"
disabled = true

[[user]]
username = "carol"
password_hash = "{}"
given_name = "Carol"
mobile = "070-765 43 21"
groups = ["VPN-Users"]
"#,
        cheap_hash(ALICE_PASSWORD),
        cheap_hash("dave-pw"),
        cheap_hash(CAROL_PASSWORD)
    );
    std::fs::write(dir.join("users.toml"), users + extra).unwrap();
}

pub fn write_config(dir: &Path, o: &Options) -> PathBuf {
    let config = format!(
        r#"
[server]
listen = ["{listen}"]
accounting_listen = ["127.0.0.1:0"]
reject_delay = "{reject_delay}"
max_in_flight = {max_in_flight}
{server_extra}

[[client]]
name = "loopback"
address = "127.0.0.1/32"
secret = "{SECRET}"
require_message_authenticator = {require_ma}
mode = "{mode}"
no_token = "{no_token}"
reply_attributes = [{{ name = "Citrix-User-Groups", value = "{{group}}" }}]
group_filter = "^VPN-"

[[client]]
name = "loopback-v6"
address = "::1"
secret = "{SECRET}"
require_message_authenticator = false
no_token = "password_only"

{directory}

{store}

[totp]
issuer = "Example Region"
challenge_timeout = "{challenge_timeout}"
{totp_extra}

[lockout]
duration = "{lockout}"
{lockout_extra}

{sms}

{extra}
"#,
        extra = o.extra,
        store = o.store.clone().unwrap_or_else(|| "[store]\nkind = \"sqlite\"\npath = \"radmfa.db\"\nkey_file = \"master.key\"\n".into()),
        directory = o.directory.clone().unwrap_or_else(|| "[directory]\nkind = \"file\"\npath = \"users.toml\"\n".into()),
        mode = o.mode,
        no_token = o.no_token,
        lockout = o.lockout,
        challenge_timeout = o.challenge_timeout,
        totp_extra = o.totp_extra,
        sms = match &o.sms_url {
            Some(url) => format!(
                "[sms]\ngateway = \"http\"\nurl = \"{url}\"\nmethod = \"POST\"\nbody = '{{\"to\":\"{{to}}\",\"message\":\"{{message}}\"}}'\ncontent_type = \"application/json\"\n{}\n",
                o.sms_extra
            ),
            None => String::new(),
        },
        listen = o.listen,
        reject_delay = o.reject_delay,
        max_in_flight = o.max_in_flight,
        server_extra = o.server_extra,
        lockout_extra = o.lockout_extra,
        require_ma = o.require_message_authenticator,
    );
    let path = dir.join("radmfa.toml");
    std::fs::write(&path, config).unwrap();
    path
}

pub struct TestServer {
    child: Option<Child>,
    logs: Arc<Mutex<Vec<Value>>>,
    pub auth: SocketAddr,
    pub accounting: SocketAddr,
    /// The portal's address, when the config enables it.
    pub portal: Option<SocketAddr>,
    /// The RadSec listener's address, when the config has `tls_listen`.
    pub radsec: Option<SocketAddr>,
    pub config: PathBuf,
    notify_socket: Option<PathBuf>,
    dir: tempfile::TempDir,
}

/// Runs `radmfa <args> --config <config>` to completion.
pub fn admin(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(binary()).args(args).arg("--config").arg(config).output().unwrap()
}

impl TestServer {
    pub fn start(options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_users_with(dir.path(), &options.extra_users);
        let config = write_config(dir.path(), &options);
        let keygen = admin(&config, &["keygen"]);
        assert!(keygen.status.success(), "keygen: {}", String::from_utf8_lossy(&keygen.stderr));
        Self::spawn(dir, config, options.notify_socket)
    }

    /// A second node beside `first`: its own folder and config, the same users file, options
    /// and key file (with a shared database, the same store).
    pub fn start_beside(first: &TestServer, options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_users_with(dir.path(), &options.extra_users);
        let config = write_config(dir.path(), &options);
        std::fs::copy(first.dir().join("master.key"), dir.path().join("master.key")).unwrap();
        Self::spawn(dir, config, options.notify_socket)
    }

    /// Kills the server at once (SIGKILL): nothing is finished or written on the way out.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (SIGTERM) and starts it again on the same files.
    pub fn restart(mut self) -> Self {
        self.terminate();
        let mut child = self.child.take().unwrap();
        child.wait().unwrap();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Self::spawn(dir, self.config.clone(), self.notify_socket.clone())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(dir: tempfile::TempDir, config: PathBuf, notify_socket: Option<PathBuf>) -> Self {
        let mut server = Self::launch(dir, config, notify_socket, &[]);
        server.wait_listening(Duration::from_secs(20));
        server
    }

    /// Starts `radmfa serve` (behind `wrapper`, e.g. `setpriv ...`, when given) without waiting
    /// for it to listen: for servers that are meant not to be ready yet.
    pub fn launch(dir: tempfile::TempDir, config: PathBuf, notify_socket: Option<PathBuf>, wrapper: &[&str]) -> Self {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        if let Some(path) = &notify_socket {
            command.env("NOTIFY_SOCKET", path);
        }
        let mut child = command
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start radmfa");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => sink.lock().unwrap().push(v),
                    Err(_) => {
                        eprintln!("radmfa (not JSON): {line}");
                        sink.lock().unwrap().push(serde_json::json!({ "raw": line }));
                    }
                }
            }
        });
        Self {
            child: Some(child),
            logs,
            auth: ([0, 0, 0, 0], 0).into(),
            accounting: ([0, 0, 0, 0], 0).into(),
            portal: None,
            radsec: None,
            config,
            notify_socket,
            dir,
        }
    }

    /// Waits for the "listening" lines and records the bound addresses.
    pub fn wait_listening(&mut self, timeout: Duration) {
        let config_text = std::fs::read_to_string(&self.config).unwrap_or_default();
        let portal_enabled = config_text.contains("[portal]");
        let radsec_enabled = config_text.contains("tls_listen");
        let address = |server: &Self, kind: &str| {
            let line = server.wait_for(|v| v["message"] == "listening" && v["kind"] == kind, timeout);
            let line = line.unwrap_or_else(|| panic!("radmfa did not report a {kind} listening address; log: {:?}", server.logs()));
            line["address"].as_str().unwrap().parse::<SocketAddr>().unwrap()
        };
        self.auth = address(self, "auth");
        self.accounting = address(self, "accounting");
        self.portal = portal_enabled.then(|| address(self, "portal"));
        self.radsec = radsec_enabled.then(|| address(self, "radsec"));
    }

    /// Takes the temp dir out (the server keeps running on it until dropped).
    pub fn into_parts(mut self) -> (tempfile::TempDir, PathBuf) {
        self.terminate();
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (dir, self.config.clone())
    }

    /// The exit status, once it exited by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    pub fn audit(&self) -> Vec<Value> {
        self.logs().into_iter().filter(|v| v["target"] == "radmfa::audit" && v["message"] == "decision").collect()
    }

    pub fn wait_for(&self, predicate: impl Fn(&Value) -> bool, timeout: Duration) -> Option<Value> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(v) = self.logs().into_iter().find(|v| predicate(v)) {
                return Some(v);
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `n` audit lines (decisions are logged just before the answer is sent).
    pub fn wait_for_audit(&self, n: usize) -> Vec<Value> {
        let until = Instant::now() + Duration::from_secs(10);
        while self.audit().len() < n && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.audit()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Sends SIGHUP (reload the configuration) and returns at once.
    pub fn hangup(&self) {
        let child = self.child.as_ref().unwrap();
        Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
    }

    /// Sends SIGTERM and returns at once.
    pub fn terminate(&self) {
        let child = self.child.as_ref().unwrap();
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    }

    /// SIGTERM, then the exit status and the counters from the "stopped" line.
    pub fn stop(self) -> (ExitStatus, Stats) {
        let (status, stats, _) = self.stop_with_logs();
        (status, stats)
    }

    /// As `stop`, with every log line the server wrote.
    pub fn stop_with_logs(mut self) -> (ExitStatus, Stats, Vec<Value>) {
        self.terminate();
        let mut child = self.child.take().unwrap();
        let until = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < until, "radmfa did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let stopped = self.wait_for(|v| v["message"] == "stopped", Duration::from_secs(5)).expect("a stopped line with counters");
        (status, Stats(stopped["stats"].as_str().unwrap_or_default().to_owned()), self.logs())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `name=value` counters of the server's "stopped" line.
pub struct Stats(String);

impl Stats {
    pub fn get(&self, name: &str) -> u64 {
        self.0
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
            .unwrap_or_else(|| panic!("no counter {name} in {:?}", self.0))
            .parse()
            .unwrap()
    }
}

/// `radmfa token add` for a user; returns the base32 secret it printed.
pub fn enroll(config: &Path, user: &str) -> String {
    let out = admin(config, &["token", "add", user, "--name", "Test phone"]);
    assert!(out.status.success(), "token add: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout.lines().find_map(|l| l.strip_prefix("secret (base32, to type by hand): ")).expect("the secret line").trim().to_owned()
}

/// The TOTP code `offset` time steps from now, computed by totp-rs (not by radmfa).
pub fn totp_code(base32: &str, offset: i64) -> String {
    let secret = totp_rs::Secret::Encoded(base32.to_owned()).to_bytes().unwrap();
    let totp = totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 0, 30, secret, None, String::new());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    totp.generate((now + offset * 30) as u64)
}

/// An HTTP server standing in for an SMS provider: records each request body, answers 200.
pub struct SmsSink {
    pub url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl SmsSink {
    pub fn start() -> Self {
        Self::start_delayed(Duration::ZERO)
    }

    /// A provider that takes `delay` to answer each request (a slow gateway).
    pub fn start_delayed(delay: Duration) -> Self {
        Self::start_answering(delay, "200 OK")
    }

    /// A provider that answers every request with `status` (e.g. "500 Internal Server Error").
    pub fn start_answering(delay: Duration, status: &'static str) -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/send", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&bodies);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                // Read the head, then as much body as Content-Length says.
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if data.len() >= end + 4 + length {
                            sink.lock().unwrap().push(String::from_utf8_lossy(&data[end + 4..end + 4 + length]).into_owned());
                            break;
                        }
                    }
                }
                std::thread::sleep(delay);
                let _ = stream.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").as_bytes());
            }
        });
        Self { url, bodies }
    }

    pub fn messages(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().iter().map(|b| serde_json::from_str(b).unwrap()).collect()
    }

    /// The code in the last message.
    pub fn last_code(&self) -> String {
        let last = self.messages().last().cloned().expect("an SMS was sent");
        last["message"].as_str().unwrap().chars().filter(char::is_ascii_digit).collect()
    }
}

/// A system tool the tests need. On CI (CI=true) its absence fails the test; elsewhere the test
/// is skipped with a note, so a developer without it can still run the rest.
pub fn system_tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()));
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} is missing: apt-get install {package} (CI=true, so this fails rather than skips)");
        }
        eprintln!("SKIPPED: {name} not installed (apt-get install {package})");
    }
    found
}

pub struct RadclientOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs FreeRADIUS's radclient once (one try, 4 s timeout: a debug build sharing two cores with
/// the other tests may take over a second for a first LDAPS login) with `input` as its attribute list.
pub fn radclient(server: SocketAddr, command: &str, secret: &str, input: &str) -> Option<RadclientOutput> {
    let tool = system_tool("radclient", "freeradius-utils")?;
    let out = run_with_input(Command::new(tool).args(["-x", "-r", "1", "-t", "4"]).arg(server.to_string()).args([command, secret]), input);
    Some(RadclientOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs `command` to its end with `input` on its standard input, capturing both outputs.
pub fn run_with_input(command: &mut Command, input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// A certificate for the portal (localhost and 127.0.0.1) signed by a CA made for the test,
/// written into `dir`.
pub struct TestCertificate {
    pub ca_pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A RadSec PKI made for a test, written into a folder: a CA, the server's certificate
/// (localhost, 127.0.0.1), and client certificates named as asked — each PEM file beside its key.
pub struct RadsecPki {
    pub ca_file: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    dir: PathBuf,
}

/// A client certificate of a [`RadsecPki`] (or of another CA).
pub struct ClientCertificate {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// SHA-256 of the DER, as `AA:BB:...`.
    pub fingerprint: String,
}

impl RadsecPki {
    pub fn new(dir: &Path) -> Self {
        Self::with_ca_named(dir, "Example Test RadSec CA")
    }

    fn with_ca_named(dir: &Path, ca_name: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let ca_file = dir.join("radsec-ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let mut pki = Self { ca_file, server_cert: PathBuf::new(), server_key: PathBuf::new(), ca, ca_key, dir: dir.to_path_buf() };
        let server = pki.certificate("server", &["localhost"], true);
        pki.server_cert = server.cert_file;
        pki.server_key = server.key_file;
        pki
    }

    /// A certificate named `names` (subjectAltName DNS, and CN the first), for a client
    /// (`server` false) or a server, signed by this CA; files `<file>.pem` and `<file>.key`.
    pub fn certificate(&self, file: &str, names: &[&str], server: bool) -> ClientCertificate {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        if let Some(first) = names.first() {
            params.distinguished_name.push(rcgen::DnType::CommonName, *first);
        }
        if server {
            params.subject_alt_names.push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        } else {
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        }
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Self::write(&self.dir, file, &cert, &key)
    }

    /// A client certificate from a CA of its own (named otherwise), which the server does not
    /// trust.
    pub fn foreign_certificate(&self, file: &str, name: &str) -> ClientCertificate {
        Self::with_ca_named(&self.dir.join("foreign"), "Example Test Foreign CA").certificate(file, &[name], false)
    }

    fn write(dir: &Path, file: &str, cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> ClientCertificate {
        use sha2::Digest;
        let (cert_file, key_file) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}.key")));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let digest = sha2::Sha256::digest(cert.der());
        let fingerprint = digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
        ClientCertificate { cert_file, key_file, fingerprint }
    }

    /// The `[server]` keys of a RadSec listener on a free loopback port with this PKI.
    pub fn server_keys(&self) -> String {
        format!(
            "tls_listen = [\"127.0.0.1:0\"]\ncert_file = {:?}\nkey_file = {:?}\nca_file = {:?}\n",
            self.server_cert.display().to_string(),
            self.server_key.display().to_string(),
            self.ca_file.display().to_string()
        )
    }
}

impl RadsecPki {
    /// A rustls client presenting `cert`, trusting this CA, offering `alpn`, speaking `versions`
    /// of TLS.
    pub fn client_config(
        &self,
        cert: &ClientCertificate,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in rustls_pemfile::certs(&mut std::fs::read(&self.ca_file).unwrap().as_slice()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let chain = rustls_pemfile::certs(&mut std::fs::read(&cert.cert_file).unwrap().as_slice()).collect::<Result<Vec<_>, _>>().unwrap();
        let key = rustls_pemfile::private_key(&mut std::fs::read(&cert.key_file).unwrap().as_slice()).unwrap().unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Arc::new(config)
    }
}

/// A private copy of the package's FreeRADIUS configuration (/etc/freeradius/3.0) at `raddb`,
/// as a FreeRADIUS that only proxies wants it: no stock sites, no eap module, running as whoever
/// runs the test (no switch to freerad, who cannot read a temp dir), its pid file in the copy.
pub fn private_freeradius_config(raddb: &Path) -> Result<(), String> {
    run(Command::new("cp").arg("-a").arg("/etc/freeradius/3.0").arg(raddb))?;
    for entry in std::fs::read_dir(raddb.join("sites-enabled")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    std::fs::remove_file(raddb.join("mods-enabled/eap")).unwrap();
    let radiusd = std::fs::read_to_string(raddb.join("radiusd.conf")).unwrap();
    let radiusd: String = radiusd
        .lines()
        .map(|l| match l.trim_start() {
            t if t.starts_with("user = freerad") || t.starts_with("group = freerad") => format!("#{l}"),
            t if t.starts_with("pidfile = ") => format!("pidfile = {}", raddb.join("radiusd.pid").display()),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(raddb.join("radiusd.conf"), radiusd).unwrap();
    Ok(())
}

pub fn portal_certificate(dir: &Path) -> TestCertificate {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let (cert_file, key_file) = (dir.join("portal.pem"), dir.join("portal.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    TestCertificate { ca_pem: ca.pem(), cert_file, key_file }
}

/// Runs a set-up command to its end; its output when it fails.
pub fn run(command: &mut Command) -> Result<(), String> {
    let out = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{command:?}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Starts a server (`script`, a shell command line; `$1`... are `args`) under a watchdog shell
/// that kills it when the returned stdin closes — when this test process ends, however it ends.
pub fn watchdog(script: &str, args: &[&std::ffi::OsStr]) -> Result<(Child, std::process::ChildStdin), String> {
    let mut watchdog = Command::new("sh")
        .arg("-c")
        .arg(format!("( {script} ) & pid=$!; read _; kill $pid; sleep 1; kill -9 $pid 2>/dev/null"))
        .arg("sh")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdin = watchdog.stdin.take().ok_or("no stdin")?;
    Ok((watchdog, stdin))
}
