//! Why an LDAP operation failed, sorted by what it means for the server and the request: a
//! server that refuses connections is skipped for a while, one that is slow or broke a
//! connection is busy (the request is left unanswered), and an answer radmfa cannot use refuses
//! the login with the reason logged.

use crate::directory::DirectoryError;

/// Why an LDAP operation failed (not the user's fault).
#[derive(Debug)]
pub(super) struct Failure {
    pub message: String,
    pub kind: FailureKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FailureKind {
    /// No connection could be made: refused, unreachable, TLS, or the service account's bind
    /// refused.
    Refused,
    /// Sent, and no answer in time. The server may still carry it out, so a bind is not sent
    /// again (AD would count a wrong password twice).
    TimedOut,
    /// The connection broke, or the server said it is busy or unavailable.
    Broken,
    /// The server answered, with something radmfa cannot use (an unexpected result code, data
    /// to fix in the directory or the configuration): the same every time, so neither retried
    /// nor left unanswered — the server is fine, the login is refused and the reason logged.
    Unusable,
}

impl Failure {
    pub(super) fn broken(message: String) -> Self {
        Self { message, kind: FailureKind::Broken }
    }

    pub(super) fn refused(message: String) -> Self {
        Self { message, kind: FailureKind::Refused }
    }

    pub(super) fn unusable(message: String) -> Self {
        Self { message, kind: FailureKind::Unusable }
    }

    /// For an operation (`doing`) that answered result `rc` (not success): busy, unavailable
    /// and time limits may pass; anything else will not.
    pub(super) fn answered(doing: &str, result: &ldap3::LdapResult) -> Self {
        let message = format!("{doing} answered result {}: {}", result.rc, result.text);
        match result.rc {
            3 | 51 | 52 => Self::broken(message),
            _ => Self::unusable(message),
        }
    }
}

impl From<ldap3::LdapError> for Failure {
    fn from(e: ldap3::LdapError) -> Self {
        Self::broken(e.to_string())
    }
}

impl From<Failure> for DirectoryError {
    fn from(f: Failure) -> Self {
        match f.kind {
            FailureKind::Refused | FailureKind::Unusable => DirectoryError::Unavailable(f.message),
            FailureKind::TimedOut | FailureKind::Broken => DirectoryError::Busy(f.message),
        }
    }
}
