//! The log lines that tell an admin why a configured NAS gets no answers. A NAS whose requests
//! are dropped by the RFC checks sees only timeouts, and a counter at debug level helps nobody:
//! so a drop the admin can act on (a missing Message-Authenticator, a wrong shared secret) is a
//! WARN naming the client and the setting to change — at once the first time, then at most once
//! a minute per client and kind, with how many were held back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::verify::Discard;

const PERIOD: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(super) struct DiscardLog {
    /// Per client name, then kind of drop: when it was last said, and how many since. Bounded
    /// by the configured clients times the kinds below. Keyed by name first so that a flood's
    /// packets are looked up without allocating.
    said: Mutex<HashMap<String, ByKind>>,
}

/// Per kind of drop: when it was last said, and how many were held back since.
type ByKind = HashMap<&'static str, (Instant, u64)>;

impl DiscardLog {
    /// Says why `client`'s packet from `peer` was dropped, if the admin can do something about
    /// it and it was not said in the last minute; otherwise a debug line.
    pub(super) fn note(&self, client: &str, peer: SocketAddr, discard: &Discard, now: Instant) {
        let Some((kind, advice)) = advice(discard) else {
            tracing::debug!(%peer, client, why = %discard, "packet dropped");
            return;
        };
        let suppressed = {
            let mut said = self.said.lock().unwrap_or_else(|p| p.into_inner());
            if !said.contains_key(client) {
                said.insert(client.to_owned(), HashMap::new());
            }
            let Some(kinds) = said.get_mut(client) else { return };
            match kinds.get_mut(kind) {
                Some((at, held)) if now.duration_since(*at) < PERIOD => {
                    *held += 1;
                    None
                }
                Some((at, held)) => {
                    *at = now;
                    Some(std::mem::take(held))
                }
                None => {
                    kinds.insert(kind, (now, 0));
                    Some(0)
                }
            }
        };
        match suppressed {
            Some(suppressed) => tracing::warn!(%peer, client, why = %discard, suppressed, "packet dropped: {advice}"),
            None => tracing::debug!(%peer, client, why = %discard, "packet dropped"),
        }
    }
}

/// The kind of drop and what to change, for drops a setting explains.
fn advice(discard: &Discard) -> Option<(&'static str, &'static str)> {
    Some(match discard {
        Discard::MissingMessageAuthenticator => (
            "missing_message_authenticator",
            "this client's Access-Requests carry no Message-Authenticator, which its [[client]] requires; configure the NAS to send one (see docs/nas/), or set require_message_authenticator = false for this client (it then stays open to BlastRADIUS, CVE-2024-3596)",
        ),
        Discard::StatusServerWithoutMessageAuthenticator => (
            "status_server_without_message_authenticator",
            "a Status-Server without Message-Authenticator (RFC 5997 requires one); configure the NAS's server monitoring to sign it",
        ),
        Discard::BadMessageAuthenticator => (
            "bad_message_authenticator",
            "its Message-Authenticator does not verify: wrong shared secret? the [[client]] secret must be the one set on the NAS",
        ),
        Discard::BadAccountingAuthenticator => (
            "bad_accounting_authenticator",
            "its Accounting-Request authenticator does not verify: wrong shared secret? the [[client]] secret must be the one set on the NAS",
        ),
        Discard::ProxyStateWithoutMessageAuthenticator => (
            "proxy_state_without_message_authenticator",
            "a relayed Access-Request (Proxy-State) without Message-Authenticator (the BlastRADIUS rule); configure the proxy to send Message-Authenticator",
        ),
        Discard::TooLong(_) | Discard::Malformed(_) | Discard::UnexpectedCode { .. } => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn said_once_a_minute_per_client_and_kind() {
        let log = DiscardLog::default();
        let peer: SocketAddr = "192.0.2.1:1812".parse().unwrap();
        let t0 = Instant::now();
        let said = |log: &DiscardLog| -> HashMap<(String, &'static str), (Instant, u64)> {
            let said = log.said.lock().unwrap();
            said.iter().flat_map(|(client, kinds)| kinds.iter().map(move |(kind, v)| ((client.clone(), *kind), *v))).collect()
        };
        log.note("vpn", peer, &Discard::MissingMessageAuthenticator, t0);
        log.note("vpn", peer, &Discard::MissingMessageAuthenticator, t0 + Duration::from_secs(1));
        log.note("vpn", peer, &Discard::MissingMessageAuthenticator, t0 + Duration::from_secs(2));
        log.note("vpn", peer, &Discard::BadMessageAuthenticator, t0 + Duration::from_secs(2));
        log.note("citrix", peer, &Discard::MissingMessageAuthenticator, t0 + Duration::from_secs(2));
        let now = said(&log);
        assert_eq!(now[&("vpn".to_owned(), "missing_message_authenticator")], (t0, 2), "held back after the first");
        assert_eq!(now[&("vpn".to_owned(), "bad_message_authenticator")].1, 0);
        assert_eq!(now[&("citrix".to_owned(), "missing_message_authenticator")].1, 0);
        log.note("vpn", peer, &Discard::MissingMessageAuthenticator, t0 + PERIOD);
        assert_eq!(said(&log)[&("vpn".to_owned(), "missing_message_authenticator")], (t0 + PERIOD, 0), "said again after a minute");
    }

    #[test]
    fn malformed_packets_are_not_advised_on() {
        let log = DiscardLog::default();
        log.note("vpn", "192.0.2.1:1812".parse().unwrap(), &Discard::TooLong(5000), Instant::now());
        assert!(log.said.lock().unwrap().is_empty());
    }
}
