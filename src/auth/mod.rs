//! The decision: an authenticated, decoded request in, `Accept`, `Reject` or `Challenge` out.
//!
//! Knows nothing of sockets or retransmissions (the server answers those from its cache before
//! calling here) and nothing of how a decision is signed. Everything it needs comes through
//! traits, so it is tested with in-memory fakes. It writes one audit line per decision.

pub mod reply;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::Regex;

use crate::directory::{Denial, Directory, PasswordCheck};
use crate::radius::Attribute;
use crate::secret::Secret;
pub use reply::ReplyTemplate;

/// What a NAS client is allowed and given, from its `[[client]]` section.
#[derive(Debug)]
pub struct ClientPolicy {
    pub name: String,
    /// Attributes added to every Access-Accept for this client.
    pub reply_attributes: Vec<ReplyTemplate>,
    /// Which of the user's groups `{group}` templates expand to (all when unset).
    pub group_filter: Option<Regex>,
}

/// How the NAS carried the credentials. Only PAP hands us a password we can check against a
/// directory bind; the others are recognised so they are refused with a clear log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Pap,
    Chap,
    MsChap,
    Eap,
    /// No credential attribute at all.
    None,
}

/// The facts auth needs, already authenticated and decoded by the server.
#[derive(Debug)]
pub struct Request {
    /// User-Name as sent (raw: it may not be UTF-8; auth validates it).
    pub user_name: Option<Vec<u8>>,
    pub password: Option<Secret<Vec<u8>>>,
    pub method: Method,
    pub state: Option<Vec<u8>>,
    pub client: Arc<ClientPolicy>,
    pub nas_ip: Option<IpAddr>,
    pub nas_identifier: Option<String>,
    pub calling_station: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accept,
    Reject,
    Challenge,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::Challenge => "challenge",
        }
    }
}

/// Why the decision went the way it did: for the audit log, never for the NAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    Authenticated,
    MissingUserName,
    InvalidUserName,
    MissingPassword,
    EmptyPassword,
    UnsupportedMethod(Method),
    Directory(Denial),
    DirectoryUnavailable,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authenticated => "authenticated",
            Self::MissingUserName => "missing_user_name",
            Self::InvalidUserName => "invalid_user_name",
            Self::MissingPassword => "missing_password",
            Self::EmptyPassword => "empty_password",
            Self::UnsupportedMethod(Method::Chap) => "chap_not_supported",
            Self::UnsupportedMethod(Method::MsChap) => "mschap_not_supported",
            Self::UnsupportedMethod(_) => "eap_not_supported",
            Self::Directory(denial) => denial.as_str(),
            Self::DirectoryUnavailable => "directory_unavailable",
        }
    }
}

/// What to answer. The server turns it into a signed packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// Text for the user. Never built from anything the client sent (BlastRADIUS).
    pub reply_message: Option<String>,
    pub state: Option<Vec<u8>>,
    pub attributes: Vec<Attribute>,
    pub reason: Reason,
}

impl Decision {
    fn reject(reason: Reason) -> Self {
        Self {
            outcome: Outcome::Reject,
            reply_message: None,
            state: None,
            attributes: Vec::new(),
            reason,
        }
    }
}

/// Longest User-Name we take: AD's sAMAccountName is 20, a UPN 1024, but RADIUS carries 253.
const MAX_USER_NAME: usize = 253;

pub struct Authenticator {
    directory: Arc<dyn Directory>,
}

impl Authenticator {
    pub fn new(directory: Arc<dyn Directory>) -> Self {
        Self { directory }
    }

    /// Decides one Access-Request and writes its audit line.
    pub async fn decide(&self, request: &Request) -> Decision {
        let started = Instant::now();
        let (user, decision) = self.decide_inner(request).await;
        audit(request, user.as_deref(), &decision, started.elapsed());
        decision
    }

    async fn decide_inner(&self, request: &Request) -> (Option<String>, Decision) {
        let user = match request.user_name.as_deref().map(valid_user_name) {
            None => return (None, Decision::reject(Reason::MissingUserName)),
            Some(None) => return (None, Decision::reject(Reason::InvalidUserName)),
            Some(Some(user)) => user.to_owned(),
        };
        let reject = |reason| (Some(user.clone()), Decision::reject(reason));
        if request.method != Method::Pap {
            tracing::warn!(
                client = %request.client.name,
                method = ?request.method,
                "only PAP is supported: the password must reach the directory in clear; configure the NAS for PAP"
            );
            return reject(match request.method {
                Method::None => Reason::MissingPassword,
                other => Reason::UnsupportedMethod(other),
            });
        }
        let Some(password) = request.password.as_ref() else {
            return reject(Reason::MissingPassword);
        };
        if password.expose().is_empty() {
            return reject(Reason::EmptyPassword);
        }
        match self.directory.check_password(&user, password.expose()).await {
            Ok(PasswordCheck::Valid(profile)) => {
                let attributes = reply::expand_all(&request.client, &profile);
                let decision = Decision {
                    outcome: Outcome::Accept,
                    reply_message: None,
                    state: None,
                    attributes,
                    reason: Reason::Authenticated,
                };
                (Some(profile.username), decision)
            }
            Ok(PasswordCheck::Denied(denial)) => reject(Reason::Directory(denial)),
            Err(e) => {
                tracing::error!(error = %e, "directory could not check a password");
                reject(Reason::DirectoryUnavailable)
            }
        }
    }
}

/// A User-Name we are willing to look up: UTF-8, not blank, no control characters.
fn valid_user_name(raw: &[u8]) -> Option<&str> {
    let name = std::str::from_utf8(raw).ok()?;
    let ok = !name.trim().is_empty() && name.len() <= MAX_USER_NAME && !name.chars().any(char::is_control);
    ok.then_some(name)
}

fn audit(request: &Request, user: Option<&str>, decision: &Decision, elapsed: Duration) {
    // Absent values are logged as empty strings, so every line has every field.
    let raw_user = request.user_name.as_deref().map(String::from_utf8_lossy);
    let user = user.map(str::to_owned).or(raw_user.map(|u| u.into_owned())).unwrap_or_default();
    let nas_ip = request.nas_ip.map(|ip| ip.to_string()).unwrap_or_default();
    tracing::info!(
        target: "radmfa::audit",
        user = %printable(&user),
        client = %request.client.name,
        nas_ip = %nas_ip,
        nas_identifier = %printable(request.nas_identifier.as_deref().unwrap_or_default()),
        calling_station = %printable(request.calling_station.as_deref().unwrap_or_default()),
        result = decision.outcome.as_str(),
        reason = decision.reason.as_str(),
        elapsed_ms = (elapsed.as_secs_f64() * 1e5).round() / 100.0,
        "decision"
    );
}

/// Client-supplied text made safe for a log line: control characters escaped, so a crafted
/// User-Name cannot start a forged line in a text log.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{DirectoryError, UserProfile};
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A directory with one user, `alice` / `pw`, counting calls.
    #[derive(Default)]
    struct FakeDirectory {
        calls: AtomicUsize,
        down: bool,
    }

    #[async_trait]
    impl Directory for FakeDirectory {
        async fn check_password(&self, username: &str, password: &[u8]) -> Result<PasswordCheck, DirectoryError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down {
                return Err(DirectoryError::Unavailable("down".into()));
            }
            Ok(match (username, password) {
                ("alice", b"pw") => PasswordCheck::Valid(UserProfile {
                    username: "alice".into(),
                    groups: vec!["VPN-Users".into(), "Staff".into()],
                    ..Default::default()
                }),
                ("alice", _) => PasswordCheck::Denied(Denial::WrongPassword),
                _ => PasswordCheck::Denied(Denial::NoSuchUser),
            })
        }

        async fn profile(&self, _: &str) -> Result<Option<UserProfile>, DirectoryError> {
            Ok(None)
        }
    }

    fn client() -> Arc<ClientPolicy> {
        Arc::new(ClientPolicy {
            name: "nas".into(),
            reply_attributes: Vec::new(),
            group_filter: None,
        })
    }

    fn request(user: &[u8], password: Option<&[u8]>) -> Request {
        Request {
            user_name: Some(user.to_vec()),
            password: password.map(|p| Secret::new(p.to_vec())),
            method: if password.is_some() { Method::Pap } else { Method::None },
            state: None,
            client: client(),
            nas_ip: None,
            nas_identifier: None,
            calling_station: None,
        }
    }

    #[tokio::test]
    async fn password_decides_accept_or_reject() {
        let dir = Arc::new(FakeDirectory::default());
        let auth = Authenticator::new(dir.clone());
        let d = auth.decide(&request(b"alice", Some(b"pw"))).await;
        assert_eq!((d.outcome, d.reason), (Outcome::Accept, Reason::Authenticated));
        let d = auth.decide(&request(b"alice", Some(b"nope"))).await;
        assert_eq!((d.outcome, d.reason), (Outcome::Reject, Reason::Directory(Denial::WrongPassword)));
        assert!(d.reply_message.is_none());
        let d = auth.decide(&request(b"bob", Some(b"pw"))).await;
        assert_eq!(d.reason, Reason::Directory(Denial::NoSuchUser));
        assert_eq!(dir.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn bad_input_is_rejected_before_the_directory() {
        let dir = Arc::new(FakeDirectory::default());
        let auth = Authenticator::new(dir.clone());
        assert_eq!(auth.decide(&request(b"alice", Some(b""))).await.reason, Reason::EmptyPassword);
        assert_eq!(auth.decide(&request(b"alice", None)).await.reason, Reason::MissingPassword);
        assert_eq!(auth.decide(&request(b"al\nice", Some(b"pw"))).await.reason, Reason::InvalidUserName);
        assert_eq!(
            auth.decide(&request(b"\xff\xfe", Some(b"pw"))).await.reason,
            Reason::InvalidUserName
        );
        assert_eq!(auth.decide(&request(b"   ", Some(b"pw"))).await.reason, Reason::InvalidUserName);
        let mut chap = request(b"alice", None);
        chap.method = Method::Chap;
        assert_eq!(auth.decide(&chap).await.reason, Reason::UnsupportedMethod(Method::Chap));
        let mut none = request(b"alice", None);
        none.user_name = None;
        assert_eq!(auth.decide(&none).await.reason, Reason::MissingUserName);
        assert_eq!(dir.calls.load(Ordering::SeqCst), 0, "no directory call for any of these");
    }

    #[test]
    fn printable_escapes_control_characters_only() {
        assert_eq!(printable("alice"), "alice");
        assert_eq!(printable("å\"ä"), "å\"ä");
        assert_eq!(printable("a\nINFO forged"), "a\\nINFO forged");
        assert_eq!(printable("\u{1b}[31m"), "\\u{1b}[31m");
    }

    #[tokio::test]
    async fn directory_outage_rejects() {
        let auth = Authenticator::new(Arc::new(FakeDirectory {
            down: true,
            ..Default::default()
        }));
        let d = auth.decide(&request(b"alice", Some(b"pw"))).await;
        assert_eq!((d.outcome, d.reason), (Outcome::Reject, Reason::DirectoryUnavailable));
    }
}
