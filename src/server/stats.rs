//! Counters of what the server did with every datagram: the silent discards above all, which
//! an admin otherwise cannot see. Logged at shutdown and served by the metrics endpoint; cheap
//! enough to bump per packet.

pub use crate::counters::Counter;
use crate::counters::counters;

counters! {
    /// What the RADIUS edge did with every datagram.
    pub struct Stats {
        /// Datagrams read from any socket.
        received,
        /// From an address that is no configured client.
        unknown_client,
        /// Not a RADIUS packet: bad length field, truncated, broken attribute lengths, over 4096 octets.
        malformed,
        /// A code this port does not serve (an Access-Accept sent to us, say).
        unexpected_code,
        /// No Message-Authenticator where the client requires it (and always for Status-Server).
        missing_message_authenticator,
        /// A Message-Authenticator that does not verify (wrong secret or tampering).
        bad_message_authenticator,
        /// Proxy-State without a valid Message-Authenticator (FreeRADIUS `limit_proxy_state`).
        proxy_state_without_message_authenticator,
        /// An Accounting-Request whose authenticator does not verify.
        bad_accounting_authenticator,
        /// Retransmissions answered from the response cache.
        duplicates_answered,
        /// Retransmissions of a request still being decided, dropped.
        duplicates_in_flight,
        /// Requests dropped because `max_in_flight` requests were already being decided.
        overloaded,
        /// Requests whose decision took longer than `request_timeout` and got no answer.
        timed_out,
        /// Requests left unanswered because the directory did not answer in time.
        directory_busy,
        /// Requests left unanswered because the store (the database) could not be used.
        store_unavailable,
        /// Status-Server left unanswered while the store could not be used (so a NAS that
        /// watches its servers with it moves on).
        status_server_unanswered,
        /// Request handlers that panicked (a bug; the server carries on).
        handler_panics,
        /// Requests still being decided when the shutdown grace period ran out: no answer.
        abandoned_at_shutdown,
        /// Rejects decided after `reject_delay` had passed (a slow directory): they left late, so
        /// their timing could tell why. Raise reject_delay above the directory's slowest answers.
        late_rejects,
        /// Answers too big to encode (many groups in reply attributes?), replaced by an Access-Reject.
        unencodable_answers,
        /// Access-Accepts sent.
        accepts,
        /// Access-Rejects sent.
        rejects,
        /// Access-Challenges sent.
        challenges,
        /// Status-Server requests answered.
        status_server,
        /// Accounting-Requests acknowledged.
        accounting,
        /// RadSec connections that completed their handshake as a known client.
        tls_connections,
        /// TLS handshakes that failed or took longer than tls_handshake_timeout (a certificate
        /// the CA did not issue, a client that offers no version or ALPN we speak, a port scan).
        tls_handshake_failures,
        /// Connections refused or ended before their handshake finished: too many handshakes
        /// under way from one address, or the oldest of all ended to make room for a newcomer.
        tls_handshakes_refused,
        /// Verified certificates that are no configured TLS client (or from another address).
        tls_unknown_client,
        /// Connections refused because their client had tls_connections_per_client open.
        tls_over_connection_limit,
        /// Connections refused for their RADIUS version: no ALPN where only 1.1 is allowed, or
        /// RADIUS/1.1 over TLS 1.2 (RFC 9765 asks for 1.3).
        tls_version_refused,
        /// Connections closed for a malformed or unauthentic packet (RFC 6613 §2.6.4).
        tls_closed_bad_packet,
        /// Connections closed for a RADIUS/1.1 Token reused while its request was outstanding.
        tls_closed_token_reused,
        /// Connections closed after tls_idle_timeout without a packet.
        tls_closed_idle,
    }
}
