//! The NAS client table: which source addresses may talk to us over UDP, which certificates
//! (from which addresses) over TLS, and with which secret.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::settings::{ClientSettings, Transport};
use super::tls::settings::PeerCertificate;

/// Looks UDP clients up by source address: an exact host entry first, then the most specific
/// network. TLS clients by certificate and address: the most specific match first.
#[derive(Debug, Default)]
pub struct ClientTable {
    hosts: HashMap<IpAddr, Arc<ClientSettings>>,
    /// Longest prefix first, so the most specific network wins.
    networks: Vec<Arc<ClientSettings>>,
    /// A fingerprint before a name before an address alone; then the longest prefix; then the
    /// order of the configuration.
    tls: Vec<Arc<ClientSettings>>,
}

impl ClientTable {
    pub fn new(clients: Vec<ClientSettings>) -> Self {
        let mut table = Self::default();
        for client in clients.into_iter().map(Arc::new) {
            if client.transport == Transport::Tls {
                table.tls.push(client);
            } else if client.network.prefix_len() == client.network.max_prefix_len() {
                table.hosts.insert(client.network.addr(), client);
            } else {
                table.networks.push(client);
            }
        }
        table.networks.sort_by_key(|c| std::cmp::Reverse(c.network.prefix_len()));
        table.tls.sort_by_key(|c| std::cmp::Reverse((c.certificate.specificity(), c.network.prefix_len())));
        table
    }

    /// The TLS client a connection from `source` with `certificate` is, if any.
    pub fn lookup_tls(&self, source: IpAddr, certificate: &PeerCertificate) -> Option<&Arc<ClientSettings>> {
        let source = source.to_canonical();
        self.tls.iter().find(|c| (c.network.prefix_len() == 0 || c.network.contains(&source)) && c.certificate.matches(certificate))
    }

    /// Whether any client may connect over TLS.
    pub fn has_tls_clients(&self) -> bool {
        !self.tls.is_empty()
    }

    pub fn lookup(&self, source: IpAddr) -> Option<&Arc<ClientSettings>> {
        // An IPv4 client reaching a dual-stack socket shows up as ::ffff:a.b.c.d.
        let source = source.to_canonical();
        self.hosts.get(&source).or_else(|| self.networks.iter().find(|c| c.network.contains(&source)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ClientPolicy;
    use crate::secret::Secret;

    fn client(name: &str, net: &str) -> ClientSettings {
        ClientSettings {
            network: net.parse().unwrap(),
            transport: Transport::Udp,
            certificate: Default::default(),
            secret: Secret::new(b"s".to_vec()),
            require_message_authenticator: true,
            policy: Arc::new(ClientPolicy::named(name)),
        }
    }

    #[test]
    fn most_specific_match_wins() {
        let t = ClientTable::new(vec![
            client("lan", "10.0.0.0/8"),
            client("dc", "10.1.0.0/16"),
            client("one", "10.1.2.3/32"),
            client("v6", "::1/128"),
        ]);
        let name = |ip: &str| t.lookup(ip.parse().unwrap()).map(|c| c.policy.name.clone());
        assert_eq!(name("10.1.2.3").as_deref(), Some("one"));
        assert_eq!(name("10.1.9.9").as_deref(), Some("dc"));
        assert_eq!(name("10.200.0.1").as_deref(), Some("lan"));
        assert_eq!(name("::ffff:10.1.2.3").as_deref(), Some("one"));
        assert_eq!(name("::1").as_deref(), Some("v6"));
        assert_eq!(name("192.0.2.1"), None);
    }
}
