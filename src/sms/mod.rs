//! SMS gateways: how a one-time code reaches the user's phone.
//!
//! `auth` sees the [`Gateway`] trait. Implementations: `log` (the embedded default: writes the
//! message to the log, for trying radmfa without a provider), `http` (any HTTP API, by template),
//! `46elks` and `twilio` (their APIs, by preset), and `exec` (a program of the admin's, given
//! number and message as arguments, never through a shell). Credentials are never logged.

pub mod delivery;
pub mod http;
pub mod settings;

use std::time::Duration;

use async_trait::async_trait;

use crate::counters::counters;
use crate::secret::Secret;

counters! {
    /// What became of the SMS codes radmfa sent (RADIUS and portal alike).
    pub struct SmsStats {
        /// Taken by the gateway before the answer went out.
        sent,
        /// Refused by the gateway, or it could not be reached, before the answer went out.
        failed,
        /// Still with the gateway when `answer_within` ran out: the challenge went out anyway.
        pending,
        /// Of those pending, taken by the gateway later.
        late_sent,
        /// Of those pending, failed later: the user was asked for a code that never came.
        late_failed,
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmsError {
    /// The provider answered with an error status (its body is not logged: it may echo the code).
    #[error("the gateway answered HTTP {0}")]
    Status(u16),
    /// The provider could not be reached, or did not answer in time.
    #[error("the gateway could not be reached: {0}")]
    Transport(String),
    /// The command failed to start, exited non-zero, or ran too long.
    #[error("the SMS command failed: {0}")]
    Command(String),
}

impl SmsError {
    /// Worth one more try: the network or the provider hiccupped, not our request.
    fn is_transient(&self) -> bool {
        match self {
            Self::Status(code) => *code >= 500 || *code == 429,
            Self::Transport(_) => true,
            Self::Command(_) => false,
        }
    }
}

#[async_trait]
pub trait Gateway: Send + Sync {
    /// For logs: which kind of gateway this is.
    fn kind(&self) -> &'static str;

    /// Sends `message` to `to` (E.164). One attempt; see [`send_with_retry`].
    async fn send_once(&self, to: &str, message: &Secret<String>) -> Result<(), SmsError>;
}

/// Sends with one retry after a transient failure.
pub async fn send_with_retry(gateway: &dyn Gateway, to: &str, message: &Secret<String>) -> Result<(), SmsError> {
    match gateway.send_once(to, message).await {
        Err(e) if e.is_transient() => {
            tracing::warn!(gateway = gateway.kind(), error = %e, "SMS send failed; retrying once");
            tokio::time::sleep(Duration::from_millis(500)).await;
            gateway.send_once(to, message).await
        }
        other => other,
    }
}

/// Writes the message to the log instead of sending it: for trying radmfa, and for labs.
pub struct LogGateway;

#[async_trait]
impl Gateway for LogGateway {
    fn kind(&self) -> &'static str {
        "log"
    }

    async fn send_once(&self, to: &str, message: &Secret<String>) -> Result<(), SmsError> {
        // Showing the code is this gateway's whole purpose; configure a real one in production.
        tracing::warn!(target: "radmfa::sms", to, text = %message.expose(), "SMS not sent: [sms] gateway = \"log\" writes it here instead");
        Ok(())
    }
}

/// Runs `program args... <to> <message>` directly (no shell, so nothing in the message is
/// interpreted), and treats exit status 0 as sent.
pub struct ExecGateway {
    pub command: Vec<String>,
    pub timeout: Duration,
}

#[async_trait]
impl Gateway for ExecGateway {
    fn kind(&self) -> &'static str {
        "exec"
    }

    async fn send_once(&self, to: &str, message: &Secret<String>) -> Result<(), SmsError> {
        let (program, args) = self.command.split_first().ok_or_else(|| SmsError::Command("no command configured".into()))?;
        let child = tokio::process::Command::new(program)
            .args(args)
            .arg(to)
            .arg(message.expose())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| SmsError::Command(format!("{program}: {e}")))?;
        let status = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| SmsError::Command(format!("{program}: no exit within {:?}", self.timeout)))?
            .map_err(|e| SmsError::Command(format!("{program}: {e}")))?
            .status;
        if status.success() { Ok(()) } else { Err(SmsError::Command(format!("{program}: {status}"))) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exec_passes_number_and_message_as_plain_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!("printf '%s|%s' \"$1\" \"$2\" > {}", out.display());
        let gateway = ExecGateway { command: vec!["sh".into(), "-c".into(), script, "sh".into()], timeout: Duration::from_secs(5) };
        let message = Secret::new("Code 123456; $(touch pwned) `id`".to_owned());
        send_with_retry(&gateway, "+46701234567", &message).await.unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "+46701234567|Code 123456; $(touch pwned) `id`");
        assert!(!dir.path().join("pwned").exists() && !std::path::Path::new("pwned").exists());
        let failing = ExecGateway { command: vec!["false".into()], timeout: Duration::from_secs(5) };
        assert!(matches!(failing.send_once("+4670", &message).await, Err(SmsError::Command(_))));
        let missing = ExecGateway { command: vec!["/nonexistent/send-sms".into()], timeout: Duration::from_secs(5) };
        assert!(missing.send_once("+4670", &message).await.is_err());
    }
}
