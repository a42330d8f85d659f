//! The command line: `serve`, `check-config`, `user hash`, `bench`. This is where concrete
//! implementations are chosen from the config and wired together; the modules below stay
//! unaware of each other's implementations.

mod admin;
mod serve;

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use std::sync::Arc;

use crate::auth::{Authenticator, Services};
use crate::bench::{BenchKind, BenchOptions};
use crate::config::{Config, DirectorySettings, GatewaySettings};
use crate::directory::file::UsersFile;
use crate::keys::{KeyRing, Keys};
use crate::secret::Secret;
use crate::sms::http::{HttpGateway, HttpSettings};
use crate::sms::{ExecGateway, Gateway, LogGateway};
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

/// Errors a command reports to the admin, already worded for them.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Parser)]
#[command(name = "radmfa", version, about = "RADIUS two-factor authentication server")]
pub struct Cli {
    /// Log format: text for people, json for log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "RADMFA_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the RADIUS server.
    Serve(ConfigArg),
    /// Load the configuration, the users file and dictionaries, report problems, and exit.
    CheckConfig(ConfigArg),
    /// Manage local users and their second-factor lockout.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage users' authenticator tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Create the key file that seals TOTP seeds and challenge States.
    Keygen(ConfigArg),
    /// Manage the key file.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Load-test a RADIUS server.
    Bench(Box<BenchArgs>),
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The configuration file.
    #[arg(long, short, env = "RADMFA_CONFIG", default_value = "/etc/radmfa/radmfa.toml")]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Read a password on standard input and print an argon2id hash for the users file.
    Hash,
    /// Lift a second-factor lockout.
    Unlock {
        user: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its otpauth:// URI and a QR code to scan.
    Add {
        user: String,
        /// The token's name, as the user will see it listed.
        #[arg(long, default_value = "Authenticator")]
        name: String,
        /// Add it even if the directory does not know the user.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List tokens (all, or one user's).
    List {
        user: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Delete a token.
    Remove {
        user: String,
        id: i64,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Check a code against a user's tokens without using it up (for troubleshooting).
    Verify {
        user: String,
        code: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new key, reseal every seed with it, and drop the old key.
    Rotate(ConfigArg),
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The server to load, IP:port.
    #[arg(long, default_value = "127.0.0.1:1812")]
    pub server: SocketAddr,
    /// The shared secret (or set RADMFA_BENCH_SECRET); not for --kind ldap-bind.
    #[arg(long, env = "RADMFA_BENCH_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    #[arg(long, default_value = "alice")]
    pub user: String,
    /// The password (or set RADMFA_BENCH_PASSWORD).
    #[arg(long, env = "RADMFA_BENCH_PASSWORD", hide_env_values = true, default_value = "")]
    pub password: String,
    /// What to send.
    #[arg(long, value_enum, default_value_t = KindArg::Access)]
    pub kind: KindArg,
    /// Requests kept outstanding at once.
    #[arg(long, short = 'n', default_value_t = 32)]
    pub concurrency: usize,
    /// How long to run, e.g. 10s.
    #[arg(long, short = 'd', value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// How many requests to send in all.
    #[arg(long, short = 'c')]
    pub count: Option<u64>,
    /// How long to wait for each answer.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub timeout: Duration,
    /// Sign requests with Message-Authenticator.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub message_authenticator: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// For --kind append|challenge|ldap-bind: a file of `user password base32-seed` lines.
    #[arg(long)]
    pub seeds: Option<PathBuf>,
    /// For --kind append|challenge: the time steps codes come from. `window`: now-1, now and
    /// now+1 (a TOTP window of ±1); `current`: the current step only (FreeRADIUS's rlm_totp).
    #[arg(long, value_enum, default_value_t = StepsArg::Window)]
    pub steps: StepsArg,
    /// For --kind append|challenge: users may use a step again (for a server without replay
    /// protection, such as rlm_totp); users are then taken in turn whatever their steps.
    #[arg(long)]
    pub reuse_steps: bool,
    /// For --kind append|challenge: no code is sent whose step ends within this plus 1.25 × the
    /// mean login latency so far (the server would check it too late).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "250ms")]
    pub step_margin: Duration,
    /// For --kind append|challenge: a file of the steps each user has used, read before the run
    /// and written after it, so runs one after another against one server send no replays.
    #[arg(long)]
    pub step_state: Option<PathBuf>,
    /// For --kind ldap-bind: the directory, ldaps://host[:port].
    #[arg(long)]
    pub ldap_url: Option<String>,
    /// For --kind ldap-bind: the CA certificate(s), PEM, the directory's certificate is verified with.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// For --kind ldap-bind: the name to bind as, {user} replaced by the user name from --seeds,
    /// e.g. 'CN={user},CN=Users,DC=example,DC=test' or '{user}@example.test'.
    #[arg(long, default_value = "{user}")]
    pub bind_dn_template: String,
    /// For --kind access: a file of user names, one per line, used in turn (a spray over many
    /// accounts) instead of --user.
    #[arg(long)]
    pub users: Option<PathBuf>,
    /// Send open-loop at this many requests per second, whatever the answers (a flood), instead
    /// of keeping --concurrency outstanding.
    #[arg(long)]
    pub rate: Option<u32>,
    /// The local address to send from, e.g. 127.0.0.2:0 to be another NAS client.
    #[arg(long)]
    pub bind: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Access-Request with --user/--password.
    Access,
    /// Status-Server.
    StatusServer,
    /// Logins from --seeds: password and TOTP code in one request.
    Append,
    /// Logins from --seeds: password, then the code with the challenge's State.
    Challenge,
    /// LDAP simple binds as the users of --seeds on --concurrency kept connections to
    /// --ldap-url: the directory's own bind rate, no RADIUS.
    LdapBind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StepsArg {
    /// now-1, now, now+1.
    Window,
    /// The current step only.
    Current,
}

pub fn run(cli: Cli) -> Result<(), CliError> {
    // One TLS crypto provider for the whole process (LDAP, SMS over HTTPS), chosen here rather
    // than left to rustls's feature detection, which fails when a build enables two providers.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Serve(args) => {
            init_logging(cli.log_format);
            serve::serve(&args.config)
        }
        Command::CheckConfig(args) => check_config(&args.config),
        Command::User(UserCommand::Hash) => user_hash(),
        Command::User(UserCommand::Unlock { user, config }) => admin::unlock(&config.config, &user),
        Command::Token(command) => admin::token(command),
        Command::Keygen(args) => admin::keygen(&args.config),
        Command::Keys(KeysCommand::Rotate(args)) => admin::rotate(&args.config),
        Command::Bench(args) => bench(*args),
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).init(),
    }
}

/// The directory named by the config, opened.
pub(crate) fn open_directory(config: &Config) -> Result<Arc<dyn crate::directory::Directory>, CliError> {
    match &config.directory {
        DirectorySettings::File { path } => Ok(Arc::new(UsersFile::load(path)?)),
        DirectorySettings::Ldap(settings) => Ok(Arc::new(crate::directory::ldap::LdapDirectory::new((**settings).clone())?)),
    }
}

/// The key file named by the config.
pub(crate) fn open_keys(config: &Config) -> Result<Arc<Keys>, CliError> {
    Ok(Arc::new(Keys::load(&config.store.key_file)?))
}

/// On a fresh install (no key file and no database yet) the server makes both, so the embedded
/// defaults run with no setup. Anything else is left alone: a missing key beside an existing
/// database, or a missing database beside an existing key, is refused by `open_store`.
pub(crate) fn create_key_on_first_start(config: &Config) -> Result<(), CliError> {
    let (key, db) = (&config.store.key_file, &config.store.path);
    if key.exists() || db.exists() {
        return Ok(());
    }
    KeyRing::generate("k1").save(key)?;
    tracing::warn!(
        key_file = %key.display(),
        "first start: created a new key file; back it up apart from the database, without it the TOTP seeds are lost"
    );
    SqliteStore::create(db, open_keys(config)?).map_err(|e| format!("{}: {e}", db.display()))?;
    Ok(())
}

/// The store, opened. A database missing beside an existing key file is refused: it was
/// deleted or moved, and an empty one would let every enrolled user fall under `no_token`.
pub(crate) fn open_store(config: &Config, keys: Arc<Keys>) -> Result<Arc<dyn Store>, CliError> {
    let (path, key) = (&config.store.path, &config.store.key_file);
    if !path.exists() && key.exists() {
        return Err(missing_database(config).into());
    }
    Ok(Arc::new(SqliteStore::open(path, keys).map_err(|e| format!("{}: {e}", path.display()))?))
}

pub(crate) fn missing_database(config: &Config) -> String {
    let (path, key) = (config.store.path.display(), config.store.key_file.display());
    format!(
        "the database {path} does not exist, but the key file {key} does: the database was deleted or moved. \
         Starting with an empty one would let every enrolled user in without their authenticator (no_token). \
         Restore {path} from a backup; to start over with no tokens at all, move {key} away and start again"
    )
}

pub(crate) fn open_gateway(config: &Config) -> Result<Arc<dyn Gateway>, CliError> {
    Ok(match &config.sms {
        GatewaySettings::Log => Arc::new(LogGateway),
        GatewaySettings::Http { url, method, body, content_type, headers, basic_auth, timeout } => {
            Arc::new(HttpGateway::generic(HttpSettings {
                url: url.clone(),
                method: method.clone(),
                headers: headers.clone(),
                basic_auth: basic_auth.clone(),
                body: body.clone(),
                content_type: content_type.clone(),
                timeout: *timeout,
            })?)
        }
        GatewaySettings::Elks46 { url, username, password, from, timeout } => {
            Arc::new(HttpGateway::elks46(url.clone(), username.clone(), password.clone(), from.clone(), *timeout)?)
        }
        GatewaySettings::Twilio { url, account_sid, auth_token, from, timeout } => {
            Arc::new(HttpGateway::twilio(url.clone(), account_sid.clone(), auth_token.clone(), from.clone(), *timeout)?)
        }
        GatewaySettings::Exec { command, timeout } => Arc::new(ExecGateway { command: command.clone(), timeout: *timeout }),
    })
}

/// Everything `auth` needs, opened from the config.
pub(crate) fn open_services(config: &Config) -> Result<(Services, Arc<dyn Store>), CliError> {
    let keys = open_keys(config)?;
    let store = open_store(config, Arc::clone(&keys))?;
    let services = Services { directory: open_directory(config)?, store: store.clone(), sms: open_gateway(config)?, keys };
    Ok((services, store))
}

/// The decision core, for admin commands that resolve names the way logins do.
pub(crate) fn open_authenticator(config: &Config) -> Result<(Authenticator, Arc<dyn Store>), CliError> {
    let (services, store) = open_services(config)?;
    Ok((Authenticator::new(services, config.auth.clone()), store))
}

fn check_config(path: &std::path::Path) -> Result<(), CliError> {
    let config = Config::load(path)?;
    let directory = match &config.directory {
        DirectorySettings::File { path } => format!("users file with {} user(s)", UsersFile::load(path)?.len()),
        DirectorySettings::Ldap(settings) => {
            crate::directory::ldap::LdapDirectory::new((**settings).clone())?;
            format!("LDAP directory at {}", settings.urls.join(", "))
        }
    };
    open_gateway(&config)?;
    let mut out = std::io::stdout().lock();
    let (key, db) = (&config.store.key_file, &config.store.path);
    if !key.exists() && !db.exists() {
        writeln!(
            out,
            "note: no key file and no database yet: `radmfa serve` creates {} and {} at first start",
            key.display(),
            db.display()
        )?;
    } else if let Err(e) = KeyRing::load(key) {
        return Err(format!("{e}\n(create the key file with: radmfa keygen --config {})", path.display()).into());
    } else if !db.exists() {
        return Err(missing_database(&config).into());
    }
    writeln!(
        out,
        "{}: OK — {} listen address(es), {} client(s), {directory}",
        path.display(),
        config.server.listen.len() + config.server.accounting_listen.len(),
        config.clients.len(),
    )?;
    for warning in config.warnings.iter().chain(&file_mode_warnings(&config)) {
        writeln!(out, "warning: {warning}")?;
    }
    if config.clients.is_empty() {
        writeln!(out, "warning: no [[client]] is configured, so every request will be dropped")?;
    }
    for client in &config.clients {
        if client.secret.expose().len() < 16 {
            writeln!(out, "warning: client {:?} has a shared secret shorter than 16 characters", client.policy.name)?;
        }
        if !client.require_message_authenticator {
            writeln!(
                out,
                "warning: client {:?} does not require Message-Authenticator (BlastRADIUS, CVE-2024-3596); enable it once the NAS sends one",
                client.policy.name
            )?;
        }
    }
    Ok(())
}

/// Files holding secrets (the config, secret files, the users file's hashes) that others may
/// read. Group-readable is fine for the service's own group (`root:radmfa 0640`, as the unit's
/// install steps make them).
pub(crate) fn file_mode_warnings(config: &Config) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let own_group = std::fs::metadata("/proc/self").map(|m| m.gid()).ok();
    let mut warnings = Vec::new();
    for file in &config.secret_files {
        let Ok(meta) = std::fs::metadata(file) else { continue };
        let mode = meta.mode() & 0o777;
        let shown = file.display();
        if mode & 0o007 != 0 {
            warnings.push(format!("{shown} holds secrets and is accessible to everyone (mode {mode:o}): chmod o-rwx {shown}"));
        } else if mode & 0o070 != 0 && Some(meta.gid()) != own_group && group_name(meta.gid()).as_deref() != Some("radmfa") {
            let group = group_name(meta.gid()).unwrap_or_else(|| meta.gid().to_string());
            warnings.push(format!(
                "{shown} holds secrets and is accessible to group {group} (mode {mode:o}): make it 0600, or 0640 with the radmfa group"
            ));
        }
    }
    warnings
}

fn group_name(gid: u32) -> Option<String> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<u32>().ok()? == gid).then(|| name.to_owned())
    })
}

fn user_hash() -> Result<(), CliError> {
    let password = if std::io::stdin().is_terminal() {
        let first = Secret::new(rpassword::prompt_password("Password: ")?);
        let again = Secret::new(rpassword::prompt_password("Again: ")?);
        if first != again {
            return Err("the passwords differ".into());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let trimmed = line.trim_end_matches(['\r', '\n']).to_owned();
        zeroize::Zeroize::zeroize(&mut line);
        Secret::new(trimmed)
    };
    if password.expose().is_empty() {
        return Err("the password is empty".into());
    }
    let hash = crate::directory::file::hash_password(password.expose().as_bytes()).map_err(|e| format!("hashing failed: {e}"))?;
    writeln!(std::io::stdout(), "{hash}")?;
    Ok(())
}

fn bench(args: BenchArgs) -> Result<(), CliError> {
    if args.duration.is_none() && args.count.is_none() {
        return Err("give --duration or --count".into());
    }
    let kind = match args.kind {
        KindArg::Access => BenchKind::Access,
        KindArg::StatusServer => BenchKind::StatusServer,
        KindArg::Append => BenchKind::Append,
        KindArg::Challenge => BenchKind::Challenge,
        KindArg::LdapBind => BenchKind::LdapBind,
    };
    let users = match (&args.seeds, kind) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            crate::bench::read_seeds(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        (None, BenchKind::Append | BenchKind::Challenge | BenchKind::LdapBind) => {
            return Err("--kind append, challenge and ldap-bind need --seeds FILE".into());
        }
        (None, _) => Vec::new(),
    };
    let names = match &args.users {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect()
        }
        None => Vec::new(),
    };
    if args.rate.is_some() && !matches!(kind, BenchKind::Access | BenchKind::StatusServer) {
        return Err("--rate goes with --kind access or status-server".into());
    }
    let ldap = match (kind, args.ldap_url, args.ca_file) {
        (BenchKind::LdapBind, Some(url), Some(ca_file)) => {
            Some(crate::bench::LdapBindOptions { url, ca_file, dn_template: args.bind_dn_template })
        }
        (BenchKind::LdapBind, _, _) => return Err("--kind ldap-bind needs --ldap-url and --ca-file".into()),
        (_, None, None) => None,
        _ => return Err("--ldap-url and --ca-file go with --kind ldap-bind".into()),
    };
    let secret = match (args.secret, kind) {
        (Some(secret), _) => secret,
        (None, BenchKind::LdapBind) => String::new(),
        (None, _) => return Err("give --secret (or set RADMFA_BENCH_SECRET)".into()),
    };
    let totp = crate::otp::TotpParams::default();
    let steps = crate::bench::StepOptions {
        policy: match args.steps {
            StepsArg::Window => crate::bench::StepPolicy::Window,
            StepsArg::Current => crate::bench::StepPolicy::Current,
        },
        reuse: args.reuse_steps,
        margin: args.step_margin,
        period: totp.period,
    };
    let options = BenchOptions {
        server: args.server,
        secret: Secret::new(secret.into_bytes()),
        user: args.user,
        password: Secret::new(args.password.into_bytes()),
        kind,
        concurrency: args.concurrency,
        duration: args.duration,
        count: args.count,
        timeout: args.timeout,
        message_authenticator: args.message_authenticator,
        users,
        names,
        rate: args.rate,
        bind: args.bind,
        totp,
        steps,
        step_state: args.step_state,
        ldap,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let summary = match (&options.ldap, options.rate) {
        (Some(ldap), _) => format!("{} → simple binds, {} kept connections", ldap.url, options.concurrency),
        (None, Some(rate)) => format!("{} → {:?}, {rate}/s open-loop", options.server, options.kind),
        (None, None) => format!("{} → {:?}, {} outstanding", options.server, options.kind, options.concurrency),
    };
    let report = runtime.block_on(crate::bench::run(options))?;
    if args.json {
        writeln!(std::io::stdout(), "{}", report.to_json())?;
    } else {
        writeln!(std::io::stdout(), "radmfa bench: {summary}\n{report}")?;
    }
    Ok(())
}
