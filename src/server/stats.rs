//! Counters of what the server did with every datagram: the silent discards above all, which
//! an admin otherwise cannot see. Logged at shutdown; cheap enough to bump per packet.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[doc = $doc])* pub $name: Counter,)*
        }

        impl Stats {
            /// Every counter by name, for logs and metrics.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.get()),)*]
            }
        }
    };
}

counters! {
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
    /// Request handlers that panicked (a bug; the server carries on).
    handler_panics,
    accepts,
    rejects,
    challenges,
    status_server,
    accounting,
}

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
