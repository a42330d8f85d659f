//! A real PostgreSQL for the tests (issue 11): a cluster `initdb`-ed into a temp dir once per
//! test run, served by `postgres` on a free port of 127.0.0.1 (and a socket in that dir), with a
//! `radmfa` role and database for the store. Debian keeps the server's programs in
//! `/usr/lib/postgresql/<version>/bin`, off the PATH. PostgreSQL refuses to run as root, so as
//! root the cluster belongs to the `postgres` user the package creates. The server dies with the
//! test process (a watchdog shell kills it when its stdin, held by this process, closes).

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::harness::{run, watchdog};

pub const USER: &str = "radmfa";
pub const PASSWORD: &str = "Store-Passw0rd!";
pub const DATABASE: &str = "radmfa";

pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    _watchdog: Mutex<(Child, ChildStdin)>,
    /// Started again by `pg_ctl` after a [`Postgres::stop`]: stopped when dropped.
    restarted: std::sync::atomic::AtomicBool,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.restarted.load(Ordering::Relaxed) {
            let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
        }
    }
}

impl Postgres {
    /// `postgresql://radmfa@127.0.0.1:<port>/radmfa` (the password is given apart).
    pub fn url(&self) -> String {
        format!("postgresql://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// Stops the server (a clean, fast shutdown: connections are cut).
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "fast"]).unwrap();
    }

    /// Starts a stopped server again on the same port and data.
    pub fn start_again(&self) {
        self.restarted.store(true, Ordering::Relaxed);
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.path().display());
        let log = self.dir.path().join("postgres-again.log");
        self.pg_ctl(&["start", "-o", &options, "-l", log.to_str().unwrap()]).unwrap();
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        run(as_owner(&self.bin.join("pg_ctl")).arg("-D").arg(self.dir.path().join("data")).arg("-w").args(args))
    }

    /// A new, empty database owned by the radmfa role, for a test of its own: its URL.
    pub fn fresh_database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        let name = format!("radmfa_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.psql(&format!("CREATE DATABASE {name} OWNER {USER}")).unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        format!("postgresql://{USER}@127.0.0.1:{}/{name}?sslmode=disable", self.port)
    }

    /// Holds `LOCK TABLE <table> IN ACCESS EXCLUSIVE MODE` in `database` for `seconds` (a
    /// stalled database, as a long migration or a vacuum full makes one), from a `psql` in the
    /// background; returns once the lock is taken. Wait on the child for the lock's end.
    pub fn hold_lock(&self, database: &str, table: &str, seconds: u32) -> Child {
        let sql = format!("BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep({seconds}); COMMIT;");
        let child = as_owner(&self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", database, "-c", &sql])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let taken = format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = '{table}' AND l.mode = 'AccessExclusiveLock' AND l.granted"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.psql_in(database, &taken).as_deref() != Ok("1") {
            assert!(Instant::now() < deadline, "the lock on {table} was not taken");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    /// Runs SQL as the superuser through `psql`; its output, or why it failed.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        self.psql_in("postgres", sql)
    }

    /// [`Postgres::psql`] in database `database`.
    pub fn psql_in(&self, database: &str, sql: &str) -> Result<String, String> {
        let out = as_owner(&self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", database, "-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

/// The database a URL of [`Postgres::fresh_database`] names.
pub fn database_of(url: &str) -> &str {
    let path = url.rsplit('/').next().unwrap_or_default();
    path.split('?').next().unwrap_or_default()
}

/// Store settings for a database URL of the test server (TLS off: loopback).
pub fn settings(url: &str) -> radmfa::store::settings::PostgresSettings {
    let text = format!("kind = \"postgres\"\nurl = \"{url}\"\npassword = \"{PASSWORD}\"\nkey_file = \"k\"\ntimeout = \"5s\"");
    let section: radmfa::store::settings::StoreSection = toml::from_str(&text).unwrap();
    let sources = radmfa::settings::Sources { base: Path::new("/"), env: &|_| None };
    match section.build(&sources).unwrap().backend {
        radmfa::store::settings::BackendSettings::Postgres(settings) => *settings,
        other => panic!("not postgres: {other:?}"),
    }
}

static SERVER: OnceLock<Result<Postgres, String>> = OnceLock::new();

/// A server of the test's own, which it may stop and start (the shared one serves every test).
pub fn private_server() -> Option<Postgres> {
    let bin = installed()?;
    Some(start(bin, Durability::Off).unwrap_or_else(|e| panic!("PostgreSQL did not start: {e}")))
}

/// A server of the test's own that syncs its commits to disk as a production one does (the
/// others run with `fsync = off`, for speed): for measurements.
pub fn durable_server() -> Option<Postgres> {
    let bin = installed()?;
    Some(start(bin, Durability::Fsync).unwrap_or_else(|e| panic!("PostgreSQL did not start: {e}")))
}

/// Whether the server syncs its commits to disk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    Off,
    Fsync,
}

/// The shared server, started on first use. `None` (test skipped) when PostgreSQL is not
/// installed and CI is not set; on CI a missing PostgreSQL fails the test.
pub fn server() -> Option<&'static Postgres> {
    let bin = installed()?;
    match SERVER.get_or_init(|| start(bin, Durability::Off)) {
        Ok(server) => Some(server),
        Err(e) => panic!("PostgreSQL did not start: {e}"),
    }
}

/// The server's programs; `None` (test skipped) when PostgreSQL is not installed and CI is not
/// set; on CI a missing PostgreSQL fails the test.
fn installed() -> Option<PathBuf> {
    let Some(bin) = server_programs() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("PostgreSQL is missing: apt-get install postgresql (CI=true, so this fails rather than skips)");
        }
        eprintln!("SKIPPED: PostgreSQL not installed (apt-get install postgresql)");
        return None;
    };
    Some(bin)
}

/// The folder holding `initdb` and `postgres`: Debian's newest version, else the PATH's.
fn server_programs() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> =
        std::fs::read_dir("/usr/lib/postgresql").ok()?.filter_map(Result::ok).map(|e| e.path().join("bin")).collect();
    versions.sort_by_key(|p| p.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()));
    versions.into_iter().rev().find(|bin| bin.join("initdb").is_file() && bin.join("postgres").is_file())
}

fn running_as_root() -> bool {
    // The owner of our /proc entry is our effective uid, which is what PostgreSQL checks.
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

/// A command run as the cluster's owner: this user, or `postgres` when this is root.
fn as_owner(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("setpriv");
        command.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn start(bin: PathBuf, durability: Durability) -> Result<Postgres, String> {
    let started = Instant::now();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let d = dir.path();
    if running_as_root() {
        run(Command::new("chown").arg("postgres:postgres").arg(d))?;
    }
    let data = d.join("data");
    run(as_owner(&bin.join("initdb")).args(["--auth=trust", "--username=postgres", "--encoding=UTF8", "--no-sync", "-D"]).arg(&data))?;
    let port = free_port()?;
    let server = format!(
        "exec {} {} -D \"$1\" -p {port} -k \"$2\" -c listen_addresses=127.0.0.1 -c fsync={} > \"$3\" 2>&1",
        if running_as_root() { "setpriv --reuid=postgres --regid=postgres --init-groups" } else { "" },
        bin.join("postgres").display(),
        if durability == Durability::Fsync { "on" } else { "off" },
    );
    let log = d.join("postgres.log");
    let (watchdog, stdin) = watchdog(&server, &[data.as_os_str(), d.as_os_str(), log.as_os_str()])?;
    let server = Postgres { port, bin, dir, _watchdog: Mutex::new((watchdog, stdin)), restarted: false.into() };
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.psql("SELECT 1").is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(server.dir.path().join("postgres.log")).unwrap_or_default();
            return Err(format!("no answer within 30 s:\n{log}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    server.psql(&format!("CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'"))?;
    server.psql(&format!("CREATE DATABASE {DATABASE} OWNER {USER}"))?;
    eprintln!("postgres: ready on port {port} after {:?}", started.elapsed());
    Ok(server)
}

#[test]
fn the_test_postgresql_serves_the_radmfa_database() {
    let Some(pg) = server() else { return };
    let owner = pg.psql(&format!("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{DATABASE}'")).unwrap();
    assert_eq!(owner, USER);
    assert!(pg.psql("SELECT no_such_column FROM pg_database").is_err(), "errors are errors");
    assert!(pg.url().ends_with(&format!(":{}/{DATABASE}", pg.port)));
}
