//! One datagram's way through the server: admission checks on the receive loop (cheap, no
//! awaiting), then a spawned task that asks `auth` and signs the answer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::cache::{Lookup, Ticket};
use super::fair::Permit;
use super::settings::ClientSettings;
use super::{PortKind, Shared};
use crate::auth::{Decision, Method, Outcome, Request};
use crate::radius::{self, Attribute, Code, MessageAuthenticator, Packet, attr};
use crate::secret::Secret;

pub(super) enum Admission {
    Drop,
    /// Answer at once with these bytes (a cached response, a Status-Server reply).
    Send(Arc<[u8]>),
    Handle(Job),
}

pub(super) struct Job {
    packet: Packet,
    peer: SocketAddr,
    client: Arc<ClientSettings>,
    ticket: Ticket,
    permit: Permit,
    /// When the datagram was read: a Reject goes out `reject_delay` after this, whatever
    /// the decision took, so the time to answer tells nothing of the reason.
    arrived: Instant,
}

impl Shared {
    /// The checks of RFC 2865, RFC 3579 and RFC 5080 that decide whether a datagram deserves work.
    pub(super) fn admit(&self, datagram: &[u8], peer: SocketAddr, kind: PortKind, now: Instant) -> Admission {
        let stats = &self.stats;
        stats.received.inc();
        let Some(client) = self.clients.lookup(peer.ip()) else {
            stats.unknown_client.inc();
            if let Some(suppressed) = self.unknown_client_log.allow(now) {
                tracing::warn!(%peer, suppressed, "packet from an unknown client dropped (add it as a [[client]])");
            }
            return Admission::Drop;
        };
        if datagram.len() > radius::MAX_PACKET_LEN {
            stats.malformed.inc();
            return Admission::Drop;
        }
        let packet = match Packet::decode(datagram) {
            Ok(packet) => packet,
            Err(e) => {
                stats.malformed.inc();
                tracing::debug!(%peer, client = %client.policy.name, error = %e, "malformed packet dropped");
                return Admission::Drop;
            }
        };
        let secret = client.secret.expose().as_slice();
        let expected = matches!(
            (kind, packet.code),
            (PortKind::Auth, Code::AccessRequest) | (PortKind::Accounting, Code::AccountingRequest) | (_, Code::StatusServer)
        );
        if !expected {
            stats.unexpected_code.inc();
            tracing::debug!(%peer, code = %packet.code, port = kind.as_str(), "unexpected packet code dropped");
            return Admission::Drop;
        }
        // An Accounting-Request's Message-Authenticator is computed over a zero authenticator.
        let zero = [0u8; 16];
        let ma_basis = (packet.code == Code::AccountingRequest).then_some(&zero);
        let ma = match radius::check_message_authenticator(datagram, secret, ma_basis) {
            Ok(ma) => ma,
            Err(_) => {
                stats.malformed.inc();
                return Admission::Drop;
            }
        };
        let drop_with = |counter: &super::stats::Counter, why: &str| {
            counter.inc();
            tracing::debug!(%peer, client = %client.policy.name, why, "packet dropped");
            Admission::Drop
        };
        if ma == MessageAuthenticator::Invalid {
            return drop_with(&stats.bad_message_authenticator, "Message-Authenticator does not verify (wrong shared secret?)");
        }
        if ma == MessageAuthenticator::Absent {
            let required = match packet.code {
                Code::StatusServer => true, // RFC 5997 §3
                Code::AccessRequest => client.require_message_authenticator,
                _ => false,
            };
            if required {
                return drop_with(&stats.missing_message_authenticator, "no Message-Authenticator, and this client requires one");
            }
            // The BlastRADIUS rule (FreeRADIUS's limit_proxy_state) guards Access-Requests, whose
            // only integrity check is Message-Authenticator. An Accounting-Request is already
            // signed by its Request Authenticator (checked below), and proxies such as
            // FreeRADIUS add Proxy-State to it without a Message-Authenticator.
            if packet.code == Code::AccessRequest && packet.get(attr::PROXY_STATE).is_some() {
                return drop_with(&stats.proxy_state_without_message_authenticator, "Proxy-State without Message-Authenticator");
            }
        }
        if packet.code == Code::AccountingRequest && !radius::verify_accounting_request(datagram, secret).unwrap_or(false) {
            return drop_with(&stats.bad_accounting_authenticator, "Accounting-Request authenticator does not verify");
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            let attributes: Vec<String> = packet.attributes.iter().map(|a| self.dictionary.describe(a)).collect();
            tracing::debug!(%peer, client = %client.policy.name, code = %packet.code, id = packet.identifier, ?attributes, "received");
        }
        if packet.code == Code::StatusServer {
            // Side-effect free and cheap: answered without the cache (RFC 5997 §3).
            stats.status_server.inc();
            let code = if kind == PortKind::Auth { Code::AccessAccept } else { Code::AccountingResponse };
            let reply = with_proxy_state(Packet::new(code, packet.identifier, [0; 16]), &packet);
            return match radius::encode_response(&reply, packet.code, &packet.authenticator, secret) {
                Ok(bytes) => Admission::Send(bytes.into()),
                Err(_) => Admission::Drop,
            };
        }
        let ticket = match self.cache.begin((peer, packet.identifier), packet.authenticator, now) {
            Lookup::Replay(bytes) => {
                stats.duplicates_answered.inc();
                return Admission::Send(bytes);
            }
            Lookup::InFlight => {
                stats.duplicates_in_flight.inc();
                return Admission::Drop;
            }
            Lookup::New(ticket) => ticket,
        };
        let Some(permit) = self.permits.try_acquire(crate::fairness::key_of(peer.ip())) else {
            // Dropping the ticket forgets the request: the NAS's retransmit gets another chance.
            stats.overloaded.inc();
            if let Some(suppressed) = self.overload_log.allow(now) {
                tracing::warn!(%peer, client = client.policy.name.as_str(), suppressed, "this NAS has its share of max_in_flight requests being decided; request dropped");
            }
            return Admission::Drop;
        };
        Admission::Handle(Job { packet, peer, client: Arc::clone(client), ticket, permit, arrived: now })
    }
}

pub(super) async fn handle(shared: Arc<Shared>, socket: Arc<UdpSocket>, job: Job, shutdown: CancellationToken) {
    let Job { packet, peer, client, ticket, permit, arrived } = job;
    let secret = client.secret.expose().as_slice();
    let (reply, bytes) = match packet.code {
        Code::AccountingRequest => {
            log_accounting(&packet, &client);
            shared.stats.accounting.inc();
            let reply = with_proxy_state(Packet::new(Code::AccountingResponse, packet.identifier, [0; 16]), &packet);
            let Ok(bytes) = radius::encode_response(&reply, packet.code, &packet.authenticator, secret) else { return };
            (reply, bytes)
        }
        _ => {
            let request = auth_request(&packet, &client, arrived);
            let limit = shared.settings.request_timeout.saturating_sub(arrived.elapsed());
            // The NAS travels with the decision, so the shared queues (hashing, the directory's
            // connections) serve NAS in turn.
            let deciding = shared.authenticator.decide_within(&request, limit);
            let Some(decision) = crate::fairness::on_behalf_of(crate::fairness::key_of(peer.ip()), deciding).await else {
                shared.stats.timed_out.inc();
                tracing::error!(%peer, client = client.policy.name.as_str(), "no decision within request_timeout; request dropped");
                return;
            };
            if decision.outcome == Outcome::NoAnswer {
                // The directory is busy: silence makes the NAS retry or ask its other server,
                // where a Reject would tell it the user's credentials were wrong.
                shared.stats.directory_busy.inc();
                let n = shared.stats.directory_busy.get();
                if n.is_power_of_two() {
                    tracing::warn!(%peer, client = client.policy.name.as_str(), directory_busy = n, "the directory did not answer in time: request left unanswered (said at the 1st, 2nd, 4th... time)");
                }
                return;
            }
            // The permit bounds decisions in progress; encoding and sending need none.
            drop(permit);
            let mut reply = response_packet(&packet, &decision);
            let mut outcome = decision.outcome;
            let bytes = match radius::encode_response(&reply, packet.code, &packet.authenticator, secret) {
                Ok(bytes) => bytes,
                Err(e) => {
                    // Too big to send (many groups?): fail closed rather than answer nothing,
                    // and at the time of every other Reject.
                    shared.stats.unencodable_answers.inc();
                    tracing::error!(%peer, client = client.policy.name.as_str(), error = %e, "response could not be encoded; sending Access-Reject instead");
                    reply = with_proxy_state(Packet::new(Code::AccessReject, packet.identifier, [0; 16]), &packet);
                    outcome = Outcome::Reject;
                    match radius::encode_response(&reply, packet.code, &packet.authenticator, secret) {
                        Ok(bytes) => bytes,
                        Err(_) => return,
                    }
                }
            };
            match outcome {
                Outcome::Accept => shared.stats.accepts.inc(),
                Outcome::Reject => shared.stats.rejects.inc(),
                Outcome::Challenge => shared.stats.challenges.inc(),
                Outcome::NoAnswer => {}
            }
            if outcome == Outcome::Reject && !shared.settings.reject_delay.is_zero() {
                // Every Reject leaves at arrival + reject_delay, however long its reason took to
                // find (an unknown user, a locked one, a wrong password): timing tells nothing,
                // guessing is slowed, and no worker is held (the permit is already back).
                let at = tokio::time::Instant::from_std(arrived + shared.settings.reject_delay);
                if at < tokio::time::Instant::now() {
                    shared.stats.late_rejects.inc();
                    let late = shared.stats.late_rejects.get();
                    // Said at the first and then ever more rarely (2nd, 4th, 8th...): a slow
                    // directory must not also flood the log.
                    if late.is_power_of_two() {
                        tracing::warn!(late_rejects = late, reject_delay = ?shared.settings.reject_delay, "a Reject was decided after reject_delay had passed, so its timing may tell why: is the directory slow? raise reject_delay above its slowest answers");
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = shutdown.cancelled() => {}
                }
            }
            (reply, bytes)
        }
    };
    let bytes: Arc<[u8]> = bytes.into();
    if tracing::enabled!(tracing::Level::DEBUG) {
        let attributes: Vec<String> = reply.attributes.iter().map(|a| shared.dictionary.describe(a)).collect();
        tracing::debug!(%peer, code = %reply.code, id = reply.identifier, ?attributes, "sent");
    }
    ticket.complete(Arc::clone(&bytes));
    if let Err(e) = socket.send_to(&bytes, peer).await {
        tracing::warn!(%peer, error = %e, "UDP send failed");
    }
}

/// The facts `auth` needs, taken out of a verified Access-Request.
fn auth_request(packet: &Packet, client: &ClientSettings, arrived: Instant) -> Request {
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
    let password = packet
        .get(attr::USER_PASSWORD)
        .and_then(|hidden| radius::unhide_password(hidden, secret, &packet.authenticator).ok())
        .map(|clear| Secret::new(clear.to_vec()));
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
        nas_ip,
        nas_identifier: text(attr::NAS_IDENTIFIER),
        calling_station: text(attr::CALLING_STATION_ID),
        arrived,
        answer_room: answer_room(packet),
    }
}

/// Octets left for an answer's own attributes once the header, the Message-Authenticator and
/// the request's Proxy-State (copied back) are in.
fn answer_room(request: &Packet) -> usize {
    let proxy_state: usize = request.get_all(attr::PROXY_STATE).map(|v| v.len() + 2).sum();
    radius::MAX_PACKET_LEN.saturating_sub(radius::packet::HEADER_LEN + 18 + proxy_state)
}

/// The unsigned response for a decision.
fn response_packet(request: &Packet, decision: &Decision) -> Packet {
    let code = match decision.outcome {
        Outcome::Accept => Code::AccessAccept,
        // NoAnswer never gets here (nothing is sent); were it to, it fails closed.
        Outcome::Reject | Outcome::NoAnswer => Code::AccessReject,
        Outcome::Challenge => Code::AccessChallenge,
    };
    let mut reply = Packet::new(code, request.identifier, [0; 16]);
    if let Some(message) = &decision.reply_message {
        for chunk in split_text(message, radius::packet::MAX_VALUE_LEN) {
            reply.push(Attribute::standard(attr::REPLY_MESSAGE, chunk.as_bytes()));
        }
    }
    if let Some(state) = &decision.state {
        reply.push(Attribute::standard(attr::STATE, state.clone()));
    }
    reply.attributes.extend(decision.attributes.iter().cloned());
    with_proxy_state(reply, request)
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
