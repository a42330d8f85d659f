//! Admin commands on tokens, lockouts and keys: `token add|list|remove|verify`, `user unlock`,
//! `keygen`, `keys rotate`. Each opens the store from the config, does one thing, and says what.

use std::path::Path;
use std::sync::Arc;

use super::{CliError, TokenCommand, open_directory, open_keys, open_store};
use crate::config::Config;
use crate::otp::totp;
use crate::store::seal::KeyRing;
use crate::store::{NewToken, Store};

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn format_time(t: Option<i64>) -> String {
    match t {
        Some(t) => {
            let ago = crate::store::now() - t;
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
    }
}

fn add(config_path: &Path, user: &str, name: &str, force: bool) -> Result<(), CliError> {
    let config = Config::load(config_path)?;
    let user = config.auth.usernames.normalise(user);
    let store = open_store(&config, open_keys(&config)?)?;
    let directory = open_directory(&config)?;
    runtime()?.block_on(async {
        let profile = directory.profile(&user).await?;
        if profile.is_none() && !force {
            return Err(format!("the directory has no user {user:?} (add --force to enroll anyway)").into());
        }
        let secret = totp::new_secret();
        let params = config.totp.params;
        let id = store
            .add_token(NewToken { username: user.clone(), name: name.to_owned(), params, secret: secret.clone(), confirmed: true })
            .await?;
        let uri = params.otpauth_uri(secret.expose(), &config.totp.issuer, &user);
        let qr = qrcode::QrCode::new(uri.expose().as_bytes()).map_err(|e| format!("QR code: {e}"))?;
        let picture = qr.render::<qrcode::render::unicode::Dense1x2>().quiet_zone(true).build();
        println!("Token {id} ({name:?}) added for {user}. Scan this with the authenticator app:\n\n{picture}\n");
        println!("otpauth URI: {}", uri.expose());
        println!("secret (base32, to type by hand): {}", totp::base32(secret.expose()).expose());
        Ok(())
    })
}

fn list(config_path: &Path, user: Option<&str>) -> Result<(), CliError> {
    let config = Config::load(config_path)?;
    let store = open_store(&config, open_keys(&config)?)?;
    let tokens = runtime()?.block_on(async {
        match user {
            Some(user) => store.tokens(&config.auth.usernames.normalise(user)).await,
            None => store.all_tokens().await,
        }
    })?;
    if tokens.is_empty() {
        println!("no tokens");
        return Ok(());
    }
    println!("{:>5}  {:<20}  {:<24}  {:<10}  {:<14}  LAST USED", "ID", "USER", "NAME", "STATUS", "CREATED");
    for t in tokens {
        let status = if t.confirmed { "active" } else { "unconfirmed" };
        println!(
            "{:>5}  {:<20}  {:<24}  {:<10}  {:<14}  {}",
            t.id,
            t.username,
            t.name,
            status,
            format_time(Some(t.created_at)),
            format_time(t.last_used_at)
        );
    }
    Ok(())
}

fn remove(config_path: &Path, user: &str, id: i64) -> Result<(), CliError> {
    let config = Config::load(config_path)?;
    let user = config.auth.usernames.normalise(user);
    let store = open_store(&config, open_keys(&config)?)?;
    if runtime()?.block_on(store.remove_token(&user, id))? {
        println!("token {id} of {user} removed");
        Ok(())
    } else {
        Err(format!("{user} has no token {id}").into())
    }
}

fn verify(config_path: &Path, user: &str, code: &str) -> Result<(), CliError> {
    let config = Config::load(config_path)?;
    let user = config.auth.usernames.normalise(user);
    let store = open_store(&config, open_keys(&config)?)?;
    let tokens = runtime()?.block_on(store.tokens(&user))?;
    let now = crate::store::now().max(0) as u64;
    for t in &tokens {
        if let Some(step) = t.params.matching_step(t.secret.expose(), code.trim(), now, config.auth.totp_window) {
            let offset = step as i64 - t.params.step_at(now) as i64;
            let used = t.last_step.is_some_and(|last| step <= last);
            let note = if used { " — but already used: a login with it would be refused as a replay" } else { "" };
            let unconfirmed = if t.confirmed { "" } else { " (unconfirmed: not accepted at login)" };
            println!("valid for token {} ({:?}){unconfirmed}, time step offset {offset:+}{note}", t.id, t.name);
            return if used || !t.confirmed { Err("not usable".into()) } else { Ok(()) };
        }
    }
    Err(format!("no token of {user} accepts that code now ({} token(s) checked; is the phone's clock right?)", tokens.len()).into())
}

pub fn unlock(config_path: &Path, user: &str) -> Result<(), CliError> {
    let config = Config::load(config_path)?;
    let user = config.auth.usernames.normalise(user);
    let store = open_store(&config, open_keys(&config)?)?;
    if runtime()?.block_on(store.unlock(&user))? {
        println!("{user}: failure count and lockout cleared");
    } else {
        println!("{user} was not locked");
    }
    Ok(())
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
    println!("{}: new key written (mode 0600). Back it up apart from the database: without it the seeds are lost.", path.display());
    Ok(())
}

pub fn rotate(config_path: &Path) -> Result<(), CliError> {
    let config = Config::load(config_path)?;
    let path = &config.store.key_file;
    let rotated = Arc::new(open_keys(&config)?.with_new_key());
    // The file holds old and new keys before anything is resealed, so a crash midway loses nothing.
    rotated.save(path)?;
    let store = open_store(&config, Arc::clone(&rotated))?;
    let count = runtime()?.block_on(store.reseal_all(Arc::clone(&rotated)))?;
    rotated.current_only().save(path)?;
    println!("{}: sealed {count} seed(s) with new key {}; the old key is removed", path.display(), rotated.current_id());
    Ok(())
}
