//! Which address a portal request comes from, for rate limits and audit lines: the TCP peer,
//! unless the peer is one of `[portal] trusted_proxies`. Only then does X-Forwarded-For count,
//! read from the right: each proxy appends the address it got the request from, so entries
//! added by our proxies are trusted up to the first one that is not a proxy of ours — that is
//! the client. Everything left of it is the client's to forge.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use ipnet::IpNet;

use super::Portal;

/// The client's address, as `client_ip` works it out (an extractor for the handlers).
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<Arc<Portal>> for ClientAddr {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, portal: &Arc<Portal>) -> Result<Self, Self::Rejection> {
        // The accept loop inserts the peer address into every request; its absence is our bug.
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Err((StatusCode::INTERNAL_SERVER_ERROR, "no peer address"));
        };
        Ok(Self(client_ip(peer.ip(), &parts.headers, &portal.settings.trusted_proxies)))
    }
}

/// One client as the limits see it: an IPv4 address, or an IPv6 /64 (one host holds a whole /64).
pub fn host_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|net| net.contains(&ip))
}

/// See the module header. A proxy's entry that is not an address ends the walk at the last
/// address a trusted proxy vouched for.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    let mut client = peer.to_canonical();
    if !trusted(client, proxies) {
        return client;
    }
    // Several X-Forwarded-For headers read as one list, in order.
    let entries = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(','));
    let entries: Vec<&str> = entries.collect();
    for entry in entries.into_iter().rev() {
        let Some(ip) = parse_entry(entry) else { break };
        client = ip;
        if !trusted(ip, proxies) {
            break;
        }
    }
    client
}

/// An X-Forwarded-For entry: an address, perhaps with a port (`[2001:db8::1]:443`,
/// `192.0.2.1:443`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = entry.parse::<IpAddr>().or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip())).ok()?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn forwarded(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_static(v));
        }
        headers
    }

    #[test]
    fn only_trusted_proxies_may_name_the_client() {
        let proxies: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        let headers = forwarded(&["6.6.6.6, 203.0.113.9"]);
        assert_eq!(client_ip(ip("127.0.0.1"), &headers, &proxies), ip("203.0.113.9"), "the entry our proxy added");
        assert_eq!(client_ip(ip("198.51.100.7"), &headers, &proxies), ip("198.51.100.7"), "not a proxy of ours");
        assert_eq!(client_ip(ip("127.0.0.1"), &headers, &[]), ip("127.0.0.1"), "no trusted proxies: nobody's header counts");
        assert_eq!(client_ip(ip("127.0.0.1"), &HeaderMap::new(), &proxies), ip("127.0.0.1"));
        let chain = forwarded(&["6.6.6.6, 203.0.113.9", "10.1.2.3"]);
        assert_eq!(client_ip(ip("127.0.0.1"), &chain, &proxies), ip("203.0.113.9"), "our inner proxy is skipped");
        let junk = forwarded(&["203.0.113.9, junk, 10.1.2.3"]);
        assert_eq!(client_ip(ip("127.0.0.1"), &junk, &proxies), ip("10.1.2.3"), "the walk stops at junk");
        let ported = forwarded(&["[2001:db8::1]:443"]);
        assert_eq!(client_ip(ip("::ffff:127.0.0.1"), &ported, &proxies), ip("2001:db8::1"), "v4-mapped peers and ports");
        let all_ours = forwarded(&["10.9.9.9, 10.1.1.1"]);
        assert_eq!(client_ip(ip("127.0.0.1"), &all_ours, &proxies), ip("10.9.9.9"));
    }
}
