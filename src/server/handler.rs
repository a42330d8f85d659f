//! What a verified request gets, whatever transport carried it: the counterpart of
//! hickory-dns's `RequestHandler` (the UDP transport is `udp`). Status-Server and
//! Accounting-Request are answered by the server itself; an Access-Request is decided by `auth`,
//! and its decision becomes a signed response. Nothing here knows of sockets, the retransmission
//! cache or admission permits: a transport calls [`Handler::decide`], lets go of what bounds
//! decisions in progress, then calls [`Handler::answer`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::settings::{ClientSettings, ServerSettings};
use super::stats::Stats;
use super::{Carrier, PortKind};
use crate::auth::{Authenticator, Decision, Method, Outcome, Reason, Request, Verdict};
use crate::fairness;
use crate::metrics::Metrics;
use crate::radius::{self, Attribute, Code, Dictionary, Packet, attr};
use crate::secret::Secret;

/// The request code's name in metrics.
const ACCESS_REQUEST: &str = "Access-Request";

/// What every transport's requests share once verified.
pub(super) struct Handler {
    authenticator: Arc<Authenticator>,
    /// Replaced whole by a reload.
    dictionary: ArcSwap<Dictionary>,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    request_timeout: Duration,
    reject_delay: Duration,
}

/// Where a verified request came from, as any transport can tell.
pub(super) struct Origin<'a> {
    /// The NAS's address: for the log, and the NAS that fair shares are kept for.
    pub peer: SocketAddr,
    pub client: &'a ClientSettings,
    /// When the request was read: a Reject goes out `reject_delay` after this, whatever the
    /// decision took, so the time to answer tells nothing of the reason.
    pub arrived: Instant,
    /// How the request came, and so how its password is read and its answer encoded.
    pub carrier: Carrier,
}

impl Handler {
    pub(super) fn new(
        authenticator: Arc<Authenticator>,
        dictionary: Arc<Dictionary>,
        stats: Arc<Stats>,
        metrics: Arc<Metrics>,
        settings: &ServerSettings,
    ) -> Self {
        Self {
            authenticator,
            dictionary: ArcSwap::new(dictionary),
            stats,
            metrics,
            request_timeout: settings.request_timeout,
            reject_delay: settings.reject_delay,
        }
    }

    /// Names attributes in the debug log with `dictionary` from now on.
    pub(super) fn reload_dictionary(&self, dictionary: Arc<Dictionary>) {
        self.dictionary.store(dictionary);
    }

    /// The dictionaries: names for the log, and each vendor's Vendor-Specific layout.
    pub(super) fn dictionary(&self) -> arc_swap::Guard<Arc<Dictionary>> {
        self.dictionary.load()
    }

    /// The debug line of a verified request, its attributes named by the dictionary.
    pub(super) fn log_received(&self, packet: &Packet, origin: &Origin<'_>) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let dictionary = self.dictionary.load();
            let attributes: Vec<String> = packet.attributes.iter().map(|a| dictionary.describe(a)).collect();
            let client = origin.client.policy.name.as_str();
            tracing::debug!(peer = %origin.peer, client, code = %packet.code, id = packet.identifier, ?attributes, "received");
        }
    }

    /// The answer to a Status-Server (RFC 5997 §3): side-effect free and cheap, so a transport
    /// gives it at once, without its cache. `None` if it cannot be encoded.
    /// Unanswered while the store cannot be used: a NAS that watches its servers with
    /// Status-Server then sends its logins to one that can answer them.
    pub(super) fn status_server(&self, packet: &Packet, client: &ClientSettings, port: PortKind, carrier: Carrier) -> Option<Vec<u8>> {
        let client_name = client.policy.name.as_str();
        let serves_logins = port != PortKind::Accounting;
        if serves_logins && !self.authenticator.store_available() {
            self.stats.status_server_unanswered.inc();
            self.metrics.request(client_name, "Status-Server", "none", "store_unavailable");
            return None;
        }
        self.stats.status_server.inc();
        self.metrics.request(client_name, "Status-Server", "answered", "status_server");
        let code = if serves_logins { Code::AccessAccept } else { Code::AccountingResponse };
        let reply = with_proxy_state(Packet::new(code, packet.identifier, [0; 16]), packet);
        encode_reply(&reply, packet, client, carrier).ok()
    }

    /// An Accounting-Request: logged, counted and acknowledged.
    pub(super) fn accounting(&self, packet: &Packet, origin: &Origin<'_>) -> Option<Arc<[u8]>> {
        log_accounting(packet, origin.client);
        self.stats.accounting.inc();
        self.metrics.request(origin.client.policy.name.as_str(), "Accounting-Request", "answered", "accounting");
        let reply = with_proxy_state(Packet::new(Code::AccountingResponse, packet.identifier, [0; 16]), packet);
        let bytes = encode_reply(&reply, packet, origin.client, origin.carrier).ok()?;
        Some(self.sent(&reply, bytes, origin))
    }

    /// What a transport's request task does with an admitted request: an Accounting-Request
    /// acknowledged, an Access-Request decided (`permit`, its share of the decisions in flight,
    /// let go once decided: encoding, a Reject's delay and sending need none) and answered.
    /// `None`: no answer to send.
    pub(super) async fn respond(
        &self,
        packet: &Packet,
        origin: &Origin<'_>,
        permit: super::fair::Permit,
        shutdown: &CancellationToken,
    ) -> Option<Arc<[u8]>> {
        if packet.code == Code::AccountingRequest {
            return self.accounting(packet, origin);
        }
        let decision = self.decide(packet, origin).await?;
        drop(permit);
        self.answer(packet, origin, &decision, shutdown).await
    }

    /// Decides an Access-Request within `request_timeout` of its arrival. `None` leaves it
    /// unanswered: undecided in time, or the directory busy.
    pub(super) async fn decide(&self, packet: &Packet, origin: &Origin<'_>) -> Option<Decision> {
        let request = auth_request(packet, origin);
        let limit = self.request_timeout.saturating_sub(origin.arrived.elapsed());
        let client = origin.client.policy.name.as_str();
        // The NAS travels with the decision, so the shared queues (hashing, the directory's
        // connections) serve NAS in turn.
        let deciding = self.authenticator.decide_within(&request, limit);
        let decided = fairness::on_behalf_of(fairness::key_of(origin.peer.ip()), deciding).await;
        self.metrics.decision(request.state.is_some(), origin.arrived.elapsed());
        let Some(decision) = decided else {
            self.stats.timed_out.inc();
            self.metrics.request(client, ACCESS_REQUEST, "none", Reason::TimedOut.as_str());
            tracing::error!(peer = %origin.peer, client, "no decision within request_timeout; request dropped");
            return None;
        };
        if decision.verdict == Verdict::NoAnswer {
            self.metrics.request(client, ACCESS_REQUEST, "none", decision.reason.as_str());
            // Silence makes the NAS retry or ask its other server, where a Reject would tell it
            // the user's credentials were wrong.
            if decision.reason == Reason::StoreUnavailable {
                self.stats.store_unavailable.inc();
                let n = self.stats.store_unavailable.get();
                if n.is_power_of_two() {
                    tracing::warn!(peer = %origin.peer, client, store_unavailable = n, "the database could not be used: request left unanswered (said at the 1st, 2nd, 4th... time)");
                }
            } else {
                self.stats.directory_busy.inc();
                let n = self.stats.directory_busy.get();
                if n.is_power_of_two() {
                    tracing::warn!(peer = %origin.peer, client, directory_busy = n, "the directory did not answer in time: request left unanswered (said at the 1st, 2nd, 4th... time)");
                }
            }
            return None;
        }
        Some(decision)
    }

    /// The signed response to `request` for `decision`, counted. A Reject is held until
    /// `reject_delay` after the request's arrival (or the server stopping).
    pub(super) async fn answer(
        &self,
        request: &Packet,
        origin: &Origin<'_>,
        decision: &Decision,
        shutdown: &CancellationToken,
    ) -> Option<Arc<[u8]>> {
        let (reply, bytes, outcome) = self.sign(request, origin, decision)?;
        self.metrics.request(origin.client.policy.name.as_str(), ACCESS_REQUEST, outcome.as_str(), decision.reason.as_str());
        match outcome {
            Outcome::Accept => self.stats.accepts.inc(),
            Outcome::Reject => self.stats.rejects.inc(),
            Outcome::Challenge => self.stats.challenges.inc(),
            Outcome::NoAnswer => {}
        }
        if outcome == Outcome::Reject && !self.reject_delay.is_zero() {
            self.hold_reject(origin.arrived, shutdown).await;
        }
        Some(self.sent(&reply, bytes, origin))
    }

    /// The response packet and its bytes. One too big to send (many groups?) fails closed as
    /// an Access-Reject rather than leaving the NAS unanswered.
    fn sign(&self, request: &Packet, origin: &Origin<'_>, decision: &Decision) -> Option<(Packet, Vec<u8>, Outcome)> {
        let reply = response_packet(request, &decision.verdict);
        match encode_reply(&reply, request, origin.client, origin.carrier) {
            Ok(bytes) => Some((reply, bytes, decision.outcome())),
            Err(e) => {
                self.stats.unencodable_answers.inc();
                let client = origin.client.policy.name.as_str();
                tracing::error!(peer = %origin.peer, client, error = %e, "response could not be encoded; sending Access-Reject instead");
                let reply = with_proxy_state(Packet::new(Code::AccessReject, request.identifier, [0; 16]), request);
                let bytes = encode_reply(&reply, request, origin.client, origin.carrier).ok()?;
                Some((reply, bytes, Outcome::Reject))
            }
        }
    }

    /// Every Reject leaves at arrival + reject_delay, however long its reason took to find (an
    /// unknown user, a locked one, a wrong password): timing tells nothing, guessing is slowed,
    /// and no worker is held (a transport lets go of its admission before answering).
    async fn hold_reject(&self, arrived: Instant, shutdown: &CancellationToken) {
        let at = tokio::time::Instant::from_std(arrived + self.reject_delay);
        if at < tokio::time::Instant::now() {
            self.stats.late_rejects.inc();
            let late = self.stats.late_rejects.get();
            // Said at the first and then ever more rarely (2nd, 4th, 8th...): a slow
            // directory must not also flood the log.
            if late.is_power_of_two() {
                tracing::warn!(late_rejects = late, reject_delay = ?self.reject_delay, "a Reject was decided after reject_delay had passed, so its timing may tell why: is the directory slow? raise reject_delay above its slowest answers");
            }
        }
        tokio::select! {
            () = tokio::time::sleep_until(at) => {}
            () = shutdown.cancelled() => {}
        }
    }

    /// The response as it goes out, with its debug line.
    fn sent(&self, reply: &Packet, bytes: Vec<u8>, origin: &Origin<'_>) -> Arc<[u8]> {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let dictionary = self.dictionary.load();
            let attributes: Vec<String> = reply.attributes.iter().map(|a| dictionary.describe(a)).collect();
            tracing::debug!(peer = %origin.peer, code = %reply.code, id = reply.identifier, ?attributes, "sent");
        }
        bytes.into()
    }
}

/// A response on the wire: signed with the client's secret (RFC 2865, over UDP and RadSec), or
/// with its request's Token and nothing else (RADIUS/1.1).
fn encode_reply(reply: &Packet, request: &Packet, client: &ClientSettings, carrier: Carrier) -> Result<Vec<u8>, radius::EncodeError> {
    match carrier {
        Carrier::Radius11 => radius::v11::encode(reply, radius::v11::token(request)),
        Carrier::Udp | Carrier::Tls => radius::encode_response(reply, request.code, &request.authenticator, client.secret.expose()),
    }
}

/// The facts `auth` needs, taken out of a verified Access-Request.
fn auth_request(packet: &Packet, origin: &Origin<'_>) -> Request {
    let client = origin.client;
    let secret = client.secret.expose();
    let method = if packet.get(attr::CHAP_PASSWORD).is_some() {
        Method::Chap
    } else if packet.get_vendor(attr::VENDOR_MICROSOFT, attr::MS_CHAP_RESPONSE).is_some()
        || packet.get_vendor(attr::VENDOR_MICROSOFT, attr::MS_CHAP2_RESPONSE).is_some()
    {
        Method::MsChap
    } else if packet.get(attr::EAP_MESSAGE).is_some() {
        Method::Eap
    } else if packet.get(attr::USER_PASSWORD).is_some() {
        Method::Pap
    } else {
        Method::None
    };
    let user_password = packet.get(attr::USER_PASSWORD);
    let (password, authenticator, hidden_password) = if origin.carrier == Carrier::Radius11 {
        // No MD5 to unhide, and no random authenticator: the request is named among its
        // retries by its other attributes (the retry key adds the password under a key).
        let password = user_password.and_then(radius::v11::user_password).map(|clear| Secret::new(clear.to_vec()));
        (password, retry_digest(packet), Vec::new())
    } else {
        let password = user_password
            .and_then(|hidden| radius::unhide_password(hidden, secret, &packet.authenticator).ok())
            .map(|clear| Secret::new(clear.to_vec()));
        (password, packet.authenticator, user_password.map(<[u8]>::to_vec).unwrap_or_default())
    };
    let nas_ip =
        packet.get(attr::NAS_IP_ADDRESS).and_then(|v| <[u8; 4]>::try_from(v).ok()).map(|o| IpAddr::V4(Ipv4Addr::from(o))).or_else(|| {
            packet.get(attr::NAS_IPV6_ADDRESS).and_then(|v| <[u8; 16]>::try_from(v).ok()).map(|o| IpAddr::V6(Ipv6Addr::from(o)))
        });
    let text = |typ| packet.get(typ).map(|v| String::from_utf8_lossy(v).into_owned());
    Request {
        user_name: packet.get(attr::USER_NAME).map(<[u8]>::to_vec),
        password,
        method,
        state: packet.get(attr::STATE).map(<[u8]>::to_vec),
        client: Arc::clone(&client.policy),
        authenticator,
        hidden_password,
        nas_ip,
        nas_identifier: text(attr::NAS_IDENTIFIER),
        calling_station: text(attr::CALLING_STATION_ID),
        arrived: origin.arrived,
        answer_room: answer_room(packet, origin.carrier),
    }
}

/// What names a RADIUS/1.1 request among its retries on a new connection: its Token (kept by
/// a NAS that sends a packet again unchanged, RFC 9765 §4.2.1), code and attributes but the
/// password, hashed. Without the Token, a new login repeating an accepted one's password, code
/// and NAS attributes within the retry window would pass as its retry.
fn retry_digest(packet: &Packet) -> [u8; 16] {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(b"radmfa/radius-1.1-request");
    hash.update(radius::v11::token(packet));
    hash.update([u8::from(packet.code)]);
    // Each attribute as it is encoded (type and length included, so no two lists hash alike);
    // one that could not be (never, for a decoded packet) only makes the retry unfindable.
    let mut encoded = Vec::new();
    for attribute in packet.attributes.iter().filter(|a| !matches!(a, Attribute::Standard { typ: attr::USER_PASSWORD, .. })) {
        let _ = attribute.encode(&mut encoded);
    }
    hash.update(&encoded);
    let digest = hash.finalize();
    let mut out = [0; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// Octets left for an answer's own attributes once the header, the Message-Authenticator (not
/// in RADIUS/1.1) and the request's Proxy-State (copied back) are in.
fn answer_room(request: &Packet, carrier: Carrier) -> usize {
    let proxy_state: usize = request.get_all(attr::PROXY_STATE).map(|v| v.len() + 2).sum();
    let message_authenticator = if carrier == Carrier::Radius11 { 0 } else { 18 };
    radius::MAX_PACKET_LEN.saturating_sub(radius::packet::HEADER_LEN + message_authenticator + proxy_state)
}

/// The unsigned response for a verdict.
fn response_packet(request: &Packet, verdict: &Verdict) -> Packet {
    let code = match verdict {
        Verdict::Accept { .. } => Code::AccessAccept,
        // NoAnswer never gets here (nothing is sent); were it to, it fails closed.
        Verdict::Reject { .. } | Verdict::NoAnswer => Code::AccessReject,
        Verdict::Challenge { .. } => Code::AccessChallenge,
    };
    let mut reply = Packet::new(code, request.identifier, [0; 16]);
    match verdict {
        Verdict::Accept { attributes } => reply.attributes.extend(attributes.iter().cloned()),
        Verdict::Reject { message } => push_reply_message(&mut reply, message),
        Verdict::Challenge { message, state } => {
            push_reply_message(&mut reply, message);
            reply.push(Attribute::standard(attr::STATE, state.clone()));
        }
        Verdict::NoAnswer => {}
    }
    with_proxy_state(reply, request)
}

/// Reply-Message, in as many attributes as the text needs.
fn push_reply_message(reply: &mut Packet, message: &str) {
    for chunk in split_text(message, radius::packet::MAX_VALUE_LEN) {
        reply.push(Attribute::standard(attr::REPLY_MESSAGE, chunk.as_bytes()));
    }
}

/// RFC 2865 §5.33: Proxy-State attributes are copied unchanged, in order, into the response.
fn with_proxy_state(mut reply: Packet, request: &Packet) -> Packet {
    for value in request.get_all(attr::PROXY_STATE) {
        reply.push(Attribute::standard(attr::PROXY_STATE, value));
    }
    reply
}

/// Splits text into pieces of at most `max` bytes without cutting a UTF-8 character.
fn split_text(text: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        pieces.push(head);
        rest = tail;
    }
    if !rest.is_empty() {
        pieces.push(rest);
    }
    pieces
}

fn log_accounting(packet: &Packet, client: &ClientSettings) {
    let status = packet.get(attr::ACCT_STATUS_TYPE).and_then(|v| <[u8; 4]>::try_from(v).ok()).map(u32::from_be_bytes);
    let status = match status {
        Some(1) => "start",
        Some(2) => "stop",
        Some(3) => "interim-update",
        Some(7) => "accounting-on",
        Some(8) => "accounting-off",
        Some(_) => "other",
        None => "missing",
    };
    // Client-supplied text goes in as strings: quoted and escaped in the text log.
    let text = |typ| packet.get(typ).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
    tracing::info!(
        target: "radmfa::accounting",
        client = client.policy.name.as_str(),
        user = text(attr::USER_NAME).as_str(),
        status,
        session_id = text(attr::ACCT_SESSION_ID).as_str(),
        calling_station = text(attr::CALLING_STATION_ID).as_str(),
        "accounting"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reply_messages_split_on_character_boundaries() {
        let text = "å".repeat(200); // 400 bytes
        let pieces = split_text(&text, 253);
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|p| p.len() <= 253));
        assert_eq!(pieces.concat(), text);
        assert!(split_text("", 253).is_empty());
    }
}
