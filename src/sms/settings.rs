//! `[sms]`: which gateway sends the codes (with its credentials loaded and checked: keys the
//! chosen gateway does not use are errors), and how SMS codes behave (validity, tries, limits,
//! how long an answer waits for the gateway, the country code of numbers written without one).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::http::HttpGateway;
use super::{ExecGateway, Gateway, LogGateway};
use crate::secret::Secret;
use crate::settings::{Invalid, Sources};
use crate::store::SmsLimits;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum GatewayKind {
    Log,
    Http,
    #[serde(rename = "46elks")]
    Elks46,
    Twilio,
    Exec,
}

/// `[sms]` is flat (one gateway at a time); keys the chosen gateway does not use are errors.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsSection {
    gateway: GatewayKind,
    url: Option<String>,
    method: Option<String>,
    body: Option<String>,
    content_type: Option<String>,
    headers: BTreeMap<String, Secret<String>>,
    username: Option<String>,
    password: Option<Secret<String>>,
    pub(crate) password_file: Option<PathBuf>,
    from: Option<String>,
    account_sid: Option<String>,
    auth_token: Option<Secret<String>>,
    pub(crate) auth_token_file: Option<PathBuf>,
    command: Vec<String>,
    #[serde(with = "humantime_serde")]
    timeout: Duration,
    #[serde(with = "humantime_serde")]
    answer_within: Duration,
    default_country_code: String,
    #[serde(with = "humantime_serde")]
    code_validity: Duration,
    max_tries: u8,
    per_user_limit: u32,
    #[serde(with = "humantime_serde")]
    per_user_window: Duration,
    global_per_minute: u32,
}

// Every missing key comes from here, so each default value is written once.
impl Default for SmsSection {
    fn default() -> Self {
        Self {
            gateway: GatewayKind::Log,
            url: None,
            method: None,
            body: None,
            content_type: None,
            headers: BTreeMap::new(),
            username: None,
            password: None,
            password_file: None,
            from: None,
            account_sid: None,
            auth_token: None,
            auth_token_file: None,
            command: Vec::new(),
            timeout: Duration::from_secs(10),
            answer_within: Duration::from_secs(2),
            default_country_code: "46".into(),
            code_validity: Duration::from_secs(300),
            max_tries: 3,
            per_user_limit: 3,
            per_user_window: Duration::from_secs(900),
            global_per_minute: 30,
        }
    }
}

/// Which SMS gateway, with its credentials loaded.
#[derive(Debug)]
pub enum GatewaySettings {
    /// Writes the message to the log (the embedded default).
    Log,
    Http(HttpSettings),
    Elks46(AccountSettings),
    Twilio(AccountSettings),
    Exec {
        command: Vec<String>,
        timeout: Duration,
    },
}

/// A generic HTTP gateway: any provider's API, by template.
#[derive(Debug)]
pub struct HttpSettings {
    pub url: String,
    pub method: reqwest::Method,
    pub headers: Vec<(String, Secret<String>)>,
    pub basic_auth: Option<(String, Secret<String>)>,
    /// A body template; with `content_type` containing "json", values are JSON-escaped.
    pub body: Option<String>,
    pub content_type: Option<String>,
    pub timeout: Duration,
}

/// A provider with a preset (46elks, Twilio): its account and credential, the sender name.
#[derive(Debug)]
pub struct AccountSettings {
    /// The provider's API address, unless its default.
    pub url: Option<String>,
    /// 46elks' API username, Twilio's account SID.
    pub account: String,
    /// 46elks' API password, Twilio's auth token.
    pub credential: Secret<String>,
    pub from: String,
    pub timeout: Duration,
}

/// How SMS codes behave, whichever gateway sends them.
#[derive(Debug, Clone)]
pub struct SmsCodeSettings {
    /// How long a code is valid, and how many tries it allows.
    pub validity: Duration,
    pub tries: u8,
    pub limits: SmsLimits,
    /// How long an answer waits for the gateway.
    pub answer_within: Duration,
    /// Digits only, without `+`.
    pub default_country_code: String,
}

impl GatewaySettings {
    /// The gateway, ready to send.
    pub fn open(&self) -> Result<Arc<dyn Gateway>, String> {
        Ok(match self {
            Self::Log => Arc::new(LogGateway),
            Self::Http(http) => Arc::new(HttpGateway::generic(http)?),
            Self::Elks46(account) => Arc::new(HttpGateway::elks46(account)?),
            Self::Twilio(account) => Arc::new(HttpGateway::twilio(account)?),
            Self::Exec { command, timeout } => Arc::new(ExecGateway { command: command.clone(), timeout: *timeout }),
        })
    }
}

impl SmsSection {
    /// Files among this section that hold secrets.
    pub fn secret_files(&self, sources: &Sources<'_>) -> Vec<PathBuf> {
        [&self.password_file, &self.auth_token_file].into_iter().flatten().map(|f| sources.path(f)).collect()
    }

    /// How long an answer waits for the gateway (checked against the server's request timeout).
    pub fn answer_within(&self) -> Duration {
        self.answer_within
    }

    /// Checked; errors name the key within the section.
    pub fn build(self, sources: &Sources<'_>) -> Result<(GatewaySettings, SmsCodeSettings), Invalid> {
        let codes = self.code_settings()?;
        let gateway = self.gateway_settings(sources)?;
        Ok((gateway, codes))
    }

    fn code_settings(&self) -> Result<SmsCodeSettings, Invalid> {
        if self.max_tries == 0 {
            return Err(Invalid::new("max_tries", "must be at least 1"));
        }
        let country = self.default_country_code.trim_start_matches('+');
        if country.is_empty() || !country.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Invalid::new("default_country_code", "must be digits, e.g. \"46\""));
        }
        if self.answer_within.is_zero() {
            return Err(Invalid::new("answer_within", "must be more than 0s, e.g. \"2s\""));
        }
        Ok(SmsCodeSettings {
            validity: self.code_validity,
            tries: self.max_tries,
            limits: SmsLimits {
                per_user: self.per_user_limit,
                per_user_window: self.per_user_window,
                global_per_minute: self.global_per_minute,
            },
            answer_within: self.answer_within,
            default_country_code: country.to_owned(),
        })
    }

    /// The keys set in the file that only some gateways use.
    fn gateway_keys_set(&self) -> Vec<&'static str> {
        [
            ("url", self.url.is_some()),
            ("method", self.method.is_some()),
            ("body", self.body.is_some()),
            ("content_type", self.content_type.is_some()),
            ("headers", !self.headers.is_empty()),
            ("username", self.username.is_some()),
            ("password", self.password.is_some() || self.password_file.is_some()),
            ("from", self.from.is_some()),
            ("account_sid", self.account_sid.is_some()),
            ("auth_token", self.auth_token.is_some() || self.auth_token_file.is_some()),
            ("command", !self.command.is_empty()),
        ]
        .into_iter()
        .filter_map(|(key, present)| present.then_some(key))
        .collect()
    }

    fn gateway_settings(self, sources: &Sources<'_>) -> Result<GatewaySettings, Invalid> {
        let (name, allowed): (&str, &[&str]) = match self.gateway {
            GatewayKind::Log => ("log", &[]),
            GatewayKind::Http => ("http", &["url", "method", "body", "content_type", "headers", "username", "password"]),
            GatewayKind::Elks46 => ("46elks", &["url", "username", "password", "from"]),
            GatewayKind::Twilio => ("twilio", &["url", "account_sid", "auth_token", "from"]),
            GatewayKind::Exec => ("exec", &["command"]),
        };
        if let Some(extra) = self.gateway_keys_set().iter().find(|key| !allowed.contains(key)) {
            return Err(Invalid::new("gateway", format!("{extra} is not used by the {name} gateway")));
        }
        let required =
            |key: &'static str, value: Option<String>| value.ok_or_else(|| Invalid::new(key, format!("required by the {name} gateway")));
        let password =
            sources.secret(self.password, self.password_file.as_deref(), "RADMFA_SMS_PASSWORD").map_err(|m| Invalid::new("password", m))?;
        let timeout = self.timeout;
        Ok(match self.gateway {
            GatewayKind::Log => GatewaySettings::Log,
            GatewayKind::Http => {
                let url = required("url", self.url)?;
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(Invalid::new("url", "must start with https:// (or http:// on a trusted network)"));
                }
                let basic_auth = match (self.username, password) {
                    (Some(user), Some(password)) => Some((user, password)),
                    (None, None) => None,
                    _ => return Err(Invalid::new("username", "username and password go together (HTTP basic auth)")),
                };
                let method = self.method.as_deref().unwrap_or("POST");
                let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                    .map_err(|_| Invalid::new("method", format!("{method:?} is not an HTTP method")))?;
                GatewaySettings::Http(HttpSettings {
                    url,
                    method,
                    body: self.body,
                    content_type: self.content_type,
                    headers: self.headers.into_iter().collect(),
                    basic_auth,
                    timeout,
                })
            }
            GatewayKind::Elks46 => GatewaySettings::Elks46(AccountSettings {
                url: self.url,
                account: required("username", self.username)?,
                credential: password.ok_or_else(|| Invalid::new("password", "required by the 46elks gateway (or RADMFA_SMS_PASSWORD)"))?,
                from: required("from", self.from)?,
                timeout,
            }),
            GatewayKind::Twilio => GatewaySettings::Twilio(AccountSettings {
                url: self.url,
                account: required("account_sid", self.account_sid)?,
                credential: sources
                    .secret(self.auth_token, self.auth_token_file.as_deref(), "RADMFA_SMS_AUTH_TOKEN")
                    .map_err(|m| Invalid::new("auth_token", m))?
                    .ok_or_else(|| Invalid::new("auth_token", "required by the twilio gateway (or RADMFA_SMS_AUTH_TOKEN)"))?,
                from: required("from", self.from)?,
                timeout,
            }),
            GatewayKind::Exec => {
                if self.command.is_empty() {
                    return Err(Invalid::new("command", "required by the exec gateway, e.g. [\"/usr/local/bin/send-sms\"]"));
                }
                GatewaySettings::Exec { command: self.command, timeout }
            }
        })
    }
}
