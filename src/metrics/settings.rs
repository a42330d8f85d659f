//! `[metrics]`: where the Prometheus endpoint listens, and who may scrape it. Off unless
//! `listen` is set.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::Deserialize;

use crate::settings::Invalid;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// e.g. "127.0.0.1:9812". Unset: no endpoint.
    listen: Option<String>,
    /// Addresses (CIDR) allowed to scrape; others get 403. Empty: loopback only.
    #[serde(default)]
    allow: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    pub listen: SocketAddr,
    pub allow: Vec<IpNet>,
}

impl MetricsSettings {
    /// Whether `peer` may scrape.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        if self.allow.is_empty() {
            return peer.is_loopback();
        }
        self.allow.iter().any(|net| net.contains(&peer))
    }
}

impl MetricsSection {
    pub fn build(&self) -> Result<Option<MetricsSettings>, Invalid> {
        let Some(listen) = &self.listen else {
            if !self.allow.is_empty() {
                return Err(Invalid::new("allow", "set listen too: without it there is no metrics endpoint"));
            }
            return Ok(None);
        };
        let listen: SocketAddr = listen
            .parse()
            .map_err(|_| Invalid::new("listen", format!("{listen:?} is not an address and port such as \"127.0.0.1:9812\"")))?;
        let allow = self
            .allow
            .iter()
            .map(|a| {
                crate::settings::parse_network(a)
                    .map_err(|_| Invalid::new("allow", format!("{a:?} is not an address or network such as \"10.0.0.0/8\"")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(MetricsSettings { listen, allow }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> MetricsSection {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn off_unless_listen_is_set() {
        assert_eq!(section("").build().unwrap(), None);
        assert_eq!(section("allow = [\"10.0.0.0/8\"]").build().unwrap_err().key, "allow");
    }

    #[test]
    fn loopback_only_by_default() {
        let s = section("listen = \"127.0.0.1:9812\"").build().unwrap().unwrap();
        assert!(s.allows("127.0.0.1".parse().unwrap()));
        assert!(s.allows("::1".parse().unwrap()));
        assert!(s.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!s.allows("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn allow_takes_networks_and_addresses() {
        let s = section("listen = \"0.0.0.0:9812\"\nallow = [\"10.0.0.0/8\", \"192.0.2.7\"]").build().unwrap().unwrap();
        assert!(s.allows("10.1.2.3".parse().unwrap()));
        assert!(s.allows("::ffff:10.1.2.3".parse().unwrap()));
        assert!(s.allows("192.0.2.7".parse().unwrap()));
        let mapped = section("listen = \"0.0.0.0:9812\"\nallow = [\"::ffff:10.0.0.0/104\"]").build().unwrap().unwrap();
        assert!(mapped.allows("10.1.2.3".parse().unwrap()), "an IPv4-mapped network is the IPv4 one");
        assert!(!s.allows("192.0.2.8".parse().unwrap()));
        assert!(!s.allows("127.0.0.1".parse().unwrap()), "an allow list replaces the loopback default");
        assert_eq!(section("listen = \"0.0.0.0:9812\"\nallow = [\"ten\"]").build().unwrap_err().key, "allow");
        assert_eq!(section("listen = \"localhost\"").build().unwrap_err().key, "listen");
    }
}
