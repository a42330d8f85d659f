//! Admin commands on tokens and keys: `token add|list|remove|verify`,
//! `keygen`, `keys rotate` (`token import` has a module of its own). Each opens the store from
//! the config, does one thing, and says what.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::{CliError, TokenCommand, open_authenticator, open_keys, open_store};
use crate::auth::{Authenticator, Reason, UsernameRules, shown};
use crate::config::Config;
use crate::directory::Denial;
use crate::keys::{KeyRing, Keys, RELOAD_EVERY};
use crate::otp::totp;
use crate::store::UnixTime;
use crate::store::sqlite::SqliteStore;

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// How long before `now` (the command's start) `t` was.
fn format_time(t: Option<UnixTime>, now: UnixTime) -> String {
    match t {
        Some(t) => {
            let ago = now - t;
            let (n, unit) = match ago {
                s if s < 120 => (s, "s"),
                s if s < 7200 => (s / 60, "min"),
                s if s < 172_800 => (s / 3600, "h"),
                s => (s / 86_400, "days"),
            };
            format!("{n} {unit} ago")
        }
        None => "never".into(),
    }
}

pub fn token(command: TokenCommand) -> Result<(), CliError> {
    match command {
        TokenCommand::Add { user, name, force, config } => add(&config.config, &user, &name, force),
        TokenCommand::List { user, config } => list(&config.config, user.as_deref()),
        TokenCommand::Remove { user, id, config } => remove(&config.config, &user, id),
        TokenCommand::Verify { user, code, config } => verify(&config.config, &user, &code),
        TokenCommand::Import(args) => super::import::import(*args),
    }
}

/// The account a name given on the command line denotes, resolved as a login would be (so
/// `alice@example.test` and `ALICE` are alice). When the directory does not know the name or
/// cannot be asked, the name as given (normalised) is used, and the admin is told so.
async fn account_for(auth: &Authenticator, typed: &str) -> String {
    let login = auth.login_name(typed);
    // Where `token add --force` files a name the directory does not know.
    let filed = UsernameRules::legacy_key(&login);
    match auth.resolve(&login).await {
        Ok(account) => account.id,
        Err(Reason::Directory(Denial::NoSuchUser)) => {
            eprintln!("note: the directory has no user {}; using {}", shown(typed), shown(&filed));
            filed
        }
        Err(reason) => {
            eprintln!("note: the directory could not be asked ({}); using {}", reason.as_str(), shown(&filed));
            filed
        }
    }
}

/// Holds the key file's lock while a command seals with its keys: shared by commands that seal
/// (so they may run together), exclusive for `keys rotate` (which drops a key once it has
/// resealed everything: a token sealed meanwhile with the old key would be lost).
pub(super) fn lock_keys(config: &Config, exclusive: bool) -> Result<std::fs::File, CliError> {
    let lock_path = config.store.key_file.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    // Made by root, it must stay openable by the service user's own commands.
    if let Some(owner) = crate::keys::owner_for(&config.store.key_file) {
        let _ = crate::keys::give_opened(&lock, &lock_path, owner);
    }
    let taken = if exclusive { lock.try_lock() } else { lock.try_lock_shared() };
    if let Err(std::fs::TryLockError::WouldBlock) = taken {
        let what = if exclusive { "`radmfa keys rotate`, `token add` or `token import`" } else { "`radmfa keys rotate`" };
        return Err(format!("{what} is running (it holds {}); try again when it has finished", lock_path.display()).into());
    }
    Ok(lock)
}

fn add(config_path: &Path, user: &str, name: &str, force: bool) -> Result<(), CliError> {
    let config = Config::load(config_path)?;
    let _keys_kept = lock_keys(&config, false)?;
    runtime()?.block_on(async {
        let (auth, store) = open_authenticator(&config).await?;
        let login = auth.login_name(user);
        let user = match auth.resolve(&login).await {
            Ok(account) => account.id,
            // Filed as a version before one identity per account did: once the directory knows
            // the name, the first login moves the token to the account it denotes.
            Err(Reason::Directory(Denial::NoSuchUser)) if force => UsernameRules::legacy_key(&login),
            Err(Reason::Directory(Denial::NoSuchUser)) => {
                return Err(format!("the directory has no user {} (add --force to enroll anyway)", shown(user)).into());
            }
            // A name filed as typed while the directory is down could be another spelling of an
            // account, beside its real tokens: not even with --force.
            Err(reason) => {
                return Err(format!("the directory could not be asked ({}); try again when it answers", reason.as_str()).into());
            }
        };
        // Made as the portal makes them: the [totp] parameters, a fresh seed.
        let crate::auth::MadeToken { id, secret, uri } =
            auth.make_token(&user, name, &config.totp.issuer, true, crate::clock::now()).await?;
        let qr = qrcode::QrCode::new(uri.expose().as_bytes()).map_err(|e| format!("QR code: {e}"))?;
        let picture = qr.render::<qrcode::render::unicode::Dense1x2>().quiet_zone(true).build();
        let shown_to_admin = (|| -> std::io::Result<()> {
            let mut out = std::io::stdout().lock();
            writeln!(out, "Token {id} ({}) added for {}. Scan this with the authenticator app:\n\n{picture}\n", shown(name), shown(&user))?;
            writeln!(out, "otpauth URI: {}", uri.expose())?;
            writeln!(out, "secret (base32, to type by hand): {}", totp::base32(secret.expose()).expose())?;
            out.flush()
        })();
        if let Err(e) = shown_to_admin {
            // Nobody saw the secret: a token kept now would lock its user out (under no_token =
            // "password_only", it would even take away a login that worked).
            store.remove_token(&user, id).await?;
            return Err(format!("the secret could not be shown ({e}); the token was not kept").into());
        }
        Ok(())
    })
}

fn list(config_path: &Path, user: Option<&str>) -> Result<(), CliError> {
    let now = crate::clock::now();
    let config = Config::load(config_path)?;
    let tokens = runtime()?.block_on(async {
        let (auth, store) = open_authenticator(&config).await?;
        let tokens = match user {
            Some(user) => store.list_tokens(Some(&account_for(&auth, user).await)).await,
            None => store.list_tokens(None).await,
        };
        Ok::<_, CliError>(tokens?)
    })?;
    let mut out = std::io::stdout().lock();
    if tokens.is_empty() {
        writeln!(out, "no tokens")?;
        return Ok(());
    }
    let current = auth_keys_current(&config);
    writeln!(out, "{:>5}  {:<20}  {:<24}  {:<10}  {:<14}  LAST USED", "ID", "USER", "NAME", "STATUS", "CREATED")?;
    for t in tokens {
        let status = match (t.confirmed, current.as_deref()) {
            (_, Some(keys)) if !keys.has_key(&t.sealed_with) => "unreadable",
            (true, _) => "active",
            (false, _) => "unconfirmed",
        };
        writeln!(
            out,
            "{:>5}  {:<20}  {:<24}  {:<10}  {:<14}  {}",
            t.id,
            shown(&t.username),
            shown(&t.name),
            status,
            format_time(Some(t.created_at), now),
            format_time(t.last_used_at, now)
        )?;
    }
    Ok(())
}

/// The keys in the key file, to mark tokens whose seed no key opens.
fn auth_keys_current(config: &Config) -> Option<Arc<KeyRing>> {
    Keys::load(&config.store.key_file).ok().map(|keys| keys.current())
}

fn remove(config_path: &Path, user: &str, id: i64) -> Result<(), CliError> {
    let config = Config::load(config_path)?;
    let rt = runtime()?;
    let (auth, store) = rt.block_on(open_authenticator(&config))?;
    let user = rt.block_on(account_for(&auth, user));
    if rt.block_on(store.remove_token(&user, id))? {
        writeln!(std::io::stdout(), "token {id} of {} removed", shown(&user))?;
        Ok(())
    } else {
        Err(format!("{} has no token {id}", shown(&user)).into())
    }
}

fn verify(config_path: &Path, user: &str, code: &str) -> Result<(), CliError> {
    let now = crate::clock::now().max(0) as u64;
    let config = Config::load(config_path)?;
    let rt = runtime()?;
    let (auth, store) = rt.block_on(open_authenticator(&config))?;
    let user = rt.block_on(account_for(&auth, user));
    let tokens = rt.block_on(store.tokens(&user))?;
    for t in &tokens {
        if let Some(step) = t.params.matching_step(t.secret.expose(), code.trim(), now, config.auth.totp_window) {
            let offset = step as i64 - t.params.step_at(now) as i64;
            let used = t.last_step.is_some_and(|last| step <= last);
            let note = if used { " — but already used: a login with it would be refused as a replay" } else { "" };
            let unconfirmed = if t.confirmed { "" } else { " (unconfirmed: not accepted at login)" };
            writeln!(std::io::stdout(), "valid for token {} ({}){unconfirmed}, time step offset {offset:+}{note}", t.id, shown(&t.name))?;
            return if used || !t.confirmed { Err("not usable".into()) } else { Ok(()) };
        }
    }
    Err(format!("no token of {} accepts that code now ({} token(s) checked; is the phone's clock right?)", shown(&user), tokens.len())
        .into())
}

pub fn keygen(config_path: &Path) -> Result<(), CliError> {
    let config = Config::load(config_path)?;
    let path = &config.store.key_file;
    if path.exists() {
        return Err(
            format!("{} exists; it seals existing seeds, so it is not overwritten (see `radmfa keys rotate`)", path.display()).into()
        );
    }
    KeyRing::generate("k1").save(path)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: new key written (mode 0600). Back it up apart from the database: without it the seeds are lost.", path.display())?;
    let Some(db) = config.store.sqlite_path() else {
        // A shared database: made ready now, and checked for seeds this new key cannot open.
        let tokens = runtime()?.block_on(async {
            let store = super::connect_store(&config, open_keys(&config)?, true).await.map_err(|e| match e {
                super::OpenFailed::Refused(why) => why,
                super::OpenFailed::Store(e) => format!("{}: {e}", config.store.shown()),
            })?;
            Ok::<_, CliError>(store.list_tokens(None).await?)
        })?;
        if !tokens.is_empty() {
            let (shown, count) = (config.store.shown(), tokens.len());
            writeln!(out, "warning: {shown} holds {count} token(s) sealed with another key: they will not open with this one")?;
        }
        writeln!(out, "{}: ready. Copy {} (mode 0600) to every node that shares it.", config.store.shown(), path.display())?;
        return Ok(());
    };
    if db.exists() {
        writeln!(out, "warning: {} exists already: seeds sealed with another key will not open with this one", db.display())?;
    } else {
        // The database comes with the key, so a database missing later is known to be lost.
        let owner = crate::keys::owner_for(db);
        SqliteStore::create(db, open_keys(&config)?).map_err(|e| format!("{}: {e}", db.display()))?;
        // Made by root for a server that runs as its folder's owner (radmfa): theirs.
        if let Some(owner) = owner {
            let beside = |suffix: &str| std::path::PathBuf::from([db.as_os_str(), suffix.as_ref()].join(std::ffi::OsStr::new("")));
            for file in [db.to_path_buf(), beside("-wal"), beside("-shm")] {
                if let Ok(opened) = std::fs::File::open(&file)
                    && let Err(e) = crate::keys::give_opened(&opened, &file, owner)
                {
                    writeln!(out, "warning: {} could not be given to uid {}: {e}", file.display(), owner.0)?;
                }
            }
        }
        writeln!(out, "{}: new, empty database", db.display())?;
    }
    Ok(())
}

/// New key first; every seed resealed with it; a pause so running servers (which look at the
/// key file every `RELOAD_EVERY`) start sealing with it too; anything a server sealed with the
/// old key meanwhile resealed; only then is the old key removed.
pub fn rotate(config_path: &Path) -> Result<(), CliError> {
    let config = Config::load(config_path)?;
    let path = &config.store.key_file;
    // One rotation at a time (two would each drop the key the other just resealed with), and
    // none while `token add` seals with the keys it loaded.
    let _lock = lock_keys(&config, true)?;
    let rotated = Arc::new(KeyRing::load(path)?.with_new_key());
    let current = rotated.current_id().to_owned();
    // The file holds old and new keys before anything is resealed, so a crash midway loses nothing.
    rotated.save(path)?;
    let rt = runtime()?;
    let store = rt.block_on(open_store(&config, Arc::new(Keys::load(path)?)))?;
    let count = rt.block_on(store.reseal_all(Arc::clone(&rotated)))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: sealed {count} seed(s) with new key {current}; waiting for running servers to pick it up...", path.display())?;
    let mut stragglers = 0;
    for _ in 0..5 {
        std::thread::sleep(RELOAD_EVERY * 2 + std::time::Duration::from_millis(500));
        let old = rt.block_on(store.list_tokens(None))?.into_iter().filter(|t| t.sealed_with != current).count();
        if old == 0 {
            rotated.current_only().save(path)?;
            writeln!(
                out,
                "{}: the old key is removed (resealed {stragglers} seed(s) sealed meanwhile by a running server); challenges begun before the rotation must be started again",
                path.display()
            )?;
            return Ok(());
        }
        stragglers += rt.block_on(store.reseal_all(Arc::clone(&rotated)))?;
    }
    Err(format!("{}: seeds sealed with the old key keep appearing; the old key is kept (run `radmfa keys rotate` again)", path.display())
        .into())
}
