//! The command line: `serve`, `check-config`, `user`, `token`, `keygen`, `keys`, `store`, `bench`. This is where concrete
//! implementations are chosen from the config and wired together; the modules below stay
//! unaware of each other's implementations.

mod admin;
mod bench;
mod check;
mod copy;
mod docs;
mod helpdesk;
mod import;
mod reload;
mod serve;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use std::sync::Arc;

use crate::auth::{Authenticator, Services};
use crate::config::Config;
use crate::directory::file::UsersFile;
use crate::directory::settings::DirectorySettings;
use crate::keys::{KeyRing, Keys};
use crate::secret::Secret;
use crate::sms::Gateway;
use crate::store::postgres::PostgresStore;
use crate::store::settings::BackendSettings;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

pub use bench::{BenchArgs, KindArg, StepsArg};
pub(crate) use check::file_mode_warnings;
pub use import::{ImportArgs, ImportFormat};

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
    CheckConfig(CheckConfigArgs),
    /// Manage local users and their second-factor lockout.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage users' authenticator tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Temporary codes for users who lost their phone (the help desk's "lost token").
    #[command(subcommand)]
    TempCode(TempCodeCommand),
    /// Create the key file that seals TOTP seeds and challenge States.
    Keygen(ConfigArg),
    /// Manage the key file.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage the store as a whole.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Load-test a RADIUS server.
    Bench(Box<BenchArgs>),
    /// Write man pages and shell completions into a folder (for packaging).
    #[command(hide = true)]
    GenerateDocs {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy every token and lockout from one store to another (SQLite to PostgreSQL, or back).
    /// Seeds stay sealed: the destination's key file must be the source's. Safe to run again.
    /// The audit trail, temporary codes, portal sessions and SMS counts are not copied.
    Copy {
        /// The configuration whose [store] is copied from.
        #[arg(long)]
        from: PathBuf,
        /// The configuration whose [store] is copied to (made if it does not exist yet).
        #[arg(long)]
        to: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The configuration file.
    #[arg(long, short, env = "RADMFA_CONFIG", default_value = "/etc/radmfa/radmfa.toml")]
    pub config: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Also connect: bind to each directory server as the service account (reporting TLS,
    /// certificate and bind results) and reach the database. Sends no SMS.
    #[arg(long)]
    pub connect: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Read a password on standard input and print an argon2id hash for the users file.
    Hash,
    /// Lift a user's password and second-factor lockouts (audited, with you as the actor).
    Unlock {
        user: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show what the help desk sees of a user: the directory's view of the account, tokens,
    /// lockouts, temporary codes and the last events of the audit trail.
    Show {
        user: String,
        /// How many of the last events to show.
        #[arg(long, default_value_t = 20)]
        events: usize,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum TempCodeCommand {
    /// Issue a temporary code (8 digits), accepted in place of the app's code by RADIUS and the
    /// portal, and print it once. It replaces any code the user had.
    Issue {
        user: String,
        /// How long it is valid, e.g. 8h, 1d (at most [helpdesk] max_temporary_code_validity).
        #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
        validity: std::time::Duration,
        /// How many logins it is good for (at most [helpdesk] max_temporary_code_uses).
        #[arg(long, default_value_t = 1)]
        uses: u32,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Revoke the user's temporary codes.
    Revoke {
        user: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List live temporary codes (never the codes themselves).
    List {
        user: Option<String>,
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
    /// Import tokens made elsewhere: otpauth URIs, a CSV export, or PSKC (hardware tokens).
    #[command(long_about = IMPORT_ABOUT)]
    Import(Box<ImportArgs>),
}

const IMPORT_ABOUT: &str = "Import tokens made elsewhere — seeds exported from the product being replaced (otpauth URIs, \
a CSV file), or hardware TOTP tokens delivered as PSKC (RFC 6030) — usable at once.

The whole file is checked first: if any entry is refused nothing is written (--skip-invalid imports the others), and \
--dry-run writes nothing at all. Each refusal names its line (or KeyPackage and serial) and why, never the secret. A seed \
the user has already is skipped, so running the same import again adds nothing; a user past --max-tokens usable tokens \
is refused. Tokens are filed 1,000 to a store transaction.

Without --check-users no directory is asked (quick, and fine before the directory knows every name): a token is filed \
under the name lower-cased, our realm dropped, where the user's first login finds it and moves it to the account. With \
--check-users every name is looked up first: names the directory does not know (typos, people who left) are refused \
and tokens are filed under the account at once. Use it with Active Directory once users have logged in (their tokens \
are under the account then), or to catch unknown names.

Delete the file after the import: it holds the seeds.";

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new key, reseal every seed with it, and drop the old key.
    Rotate(ConfigArg),
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
        Command::CheckConfig(args) => check::check_config(&args.config.config, args.connect),
        Command::User(UserCommand::Hash) => user_hash(),
        Command::User(UserCommand::Unlock { user, config }) => helpdesk::unlock(&config.config, &user),
        Command::User(UserCommand::Show { user, events, config }) => helpdesk::show(&config.config, &user, events),
        Command::TempCode(TempCodeCommand::Issue { user, validity, uses, config }) => {
            helpdesk::issue(&config.config, &user, validity, uses)
        }
        Command::TempCode(TempCodeCommand::Revoke { user, config }) => helpdesk::revoke(&config.config, &user),
        Command::TempCode(TempCodeCommand::List { user, config }) => helpdesk::list(&config.config, user.as_deref()),
        Command::Token(command) => admin::token(command),
        Command::Keygen(args) => admin::keygen(&args.config),
        Command::Keys(KeysCommand::Rotate(args)) => admin::rotate(&args.config),
        Command::Store(StoreCommand::Copy { from, to }) => copy::copy(&from, &to),
        Command::Bench(args) => bench::bench(*args),
        Command::GenerateDocs { out } => docs::generate(&out),
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
/// With PostgreSQL every node must use one key file, so none is made here: a node that made its
/// own would seal seeds no other node opens.
pub(crate) fn create_key_on_first_start(config: &Config) -> Result<(), CliError> {
    let key = &config.store.key_file;
    let Some(db) = config.store.sqlite_path() else {
        if !key.exists() {
            return Err(shared_key_missing(config).into());
        }
        return Ok(());
    };
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

/// Why a node on PostgreSQL does not start without its key file, and what to do.
pub(crate) fn shared_key_missing(config: &Config) -> String {
    let key = config.store.key_file.display();
    format!(
        "the key file {key} does not exist. With kind = \"postgres\" every node seals and opens seeds with the same key file: \
         copy it (mode 0600) from a node that has one, or, for a new database, create it once with `radmfa keygen --config {}` \
         and copy it to every node",
        config.path.display()
    )
}

/// The store, opened (SQLite) or connected to (PostgreSQL). A database file missing beside an
/// existing key file is refused: it was deleted or moved, and an empty one would let every
/// enrolled user fall under `no_token`.
pub(crate) async fn open_store(config: &Config, keys: Arc<Keys>) -> Result<Arc<dyn Store>, CliError> {
    connect_store(config, keys, false).await.map_err(|e| match e {
        OpenFailed::Refused(why) => why.into(),
        OpenFailed::Store(e) => format!("{}: {e}", config.store.shown()).into(),
    })
}

/// Why the store did not open: a refusal in words, or the store's own error (which may pass).
pub(crate) enum OpenFailed {
    Refused(String),
    Store(StoreError),
}

/// `may_create`: a shared database with no radmfa tables gets them (`keygen` only).
pub(crate) async fn connect_store(config: &Config, keys: Arc<Keys>, may_create: bool) -> Result<Arc<dyn Store>, OpenFailed> {
    match &config.store.backend {
        BackendSettings::Sqlite { path } => {
            if !path.exists() && config.store.key_file.exists() {
                return Err(OpenFailed::Refused(missing_database(config)));
            }
            Ok(Arc::new(SqliteStore::open(path, keys).map_err(OpenFailed::Store)?))
        }
        BackendSettings::Postgres(settings) => {
            let store = if may_create { PostgresStore::create(settings, keys).await } else { PostgresStore::connect(settings, keys).await };
            Ok(Arc::new(store.map_err(OpenFailed::Store)?))
        }
    }
}

pub(crate) fn missing_database(config: &Config) -> String {
    let (path, key) = (config.store.shown(), config.store.key_file.display());
    format!(
        "the database {path} does not exist, but the key file {key} does: the database was deleted or moved. \
         Starting with an empty one would let every enrolled user in without their authenticator (no_token). \
         Restore {path} from a backup; to start over with no tokens at all, move {key} away and start again"
    )
}

pub(crate) fn open_gateway(config: &Config) -> Result<Arc<dyn Gateway>, CliError> {
    Ok(config.sms.open()?)
}

/// Everything `auth` needs, opened from the config.
pub(crate) async fn open_services(config: &Config) -> Result<(Services, Arc<dyn Store>), CliError> {
    let keys = open_keys(config)?;
    let store = open_store(config, Arc::clone(&keys)).await?;
    let services = Services { directory: open_directory(config)?, store: store.clone(), sms: open_gateway(config)?, keys };
    Ok((services, store))
}

/// The decision core, for admin commands that resolve names the way logins do.
pub(crate) async fn open_authenticator(config: &Config) -> Result<(Authenticator, Arc<dyn Store>), CliError> {
    let (services, store) = open_services(config).await?;
    Ok((Authenticator::new(services, config.auth.clone()), store))
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
