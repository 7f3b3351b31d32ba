//! Client addresses: which address a request comes from, and whether a Source's allow and deny
//! lists let it in.
//!
//! The client is the socket peer, unless the peer is one of the gateway's trusted proxies; then
//! `X-Forwarded-For` is read from the right, past further trusted proxies, to the first address
//! no trusted proxy vouches for. Entries left of that are written by the client and could be
//! forged, so they are never used. IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are treated as
//! the IPv4 address they carry, in addresses and in configured networks alike.

use std::net::{IpAddr, SocketAddr};

use hookstream_crds::config::IpFilterConfig;
use http::HeaderMap;
use ipnet::{IpNet, Ipv4Net};

/// The name of the header proxies append client addresses to.
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The address of the client that sent a request received from `peer`. `X-Forwarded-For` is
/// only believed when `peer` is in `trusted_proxies`; an unparsable entry ends the walk at the
/// last address read before it (or at the peer).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !in_any(trusted_proxies, peer) {
        return peer;
    }
    let mut entries = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        match value.to_str() {
            Ok(text) => entries.extend(text.split(',').map(parse_entry)),
            Err(_) => entries.push(None),
        }
    }
    let mut client = peer;
    for entry in entries.into_iter().rev() {
        let Some(ip) = entry else { break };
        client = ip;
        if !in_any(trusted_proxies, ip) {
            break;
        }
    }
    client
}

/// Whether `filter` lets `ip` send: never when a deny network contains it; otherwise when the
/// allow list is empty or one of its networks contains it.
pub fn is_allowed(filter: &IpFilterConfig, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    !in_any(&filter.deny, ip) && (filter.allow.is_empty() || in_any(&filter.allow, ip))
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:80`, `[::1]:80`)
/// or in brackets (`[::1]`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let unbracketed = entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(entry);
    unbracketed
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|socket| socket.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// Whether any of `nets` contains `ip` (already canonical).
fn in_any(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|net| contains(net, ip))
}

/// Whether `net` contains `ip`, reading a network inside `::ffff:0:0/96` as the IPv4 network it
/// maps.
fn contains(net: &IpNet, ip: IpAddr) -> bool {
    if let IpNet::V6(v6) = net {
        if let (Some(v4), Some(len)) = (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96))
        {
            return Ipv4Net::new(v4, len).is_ok_and(|v4net| IpNet::V4(v4net).contains(&ip));
        }
    }
    net.contains(&ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|n| n.parse().expect("test network"))
            .collect()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(
                X_FORWARDED_FOR,
                HeaderValue::from_str(value).expect("test header value"),
            );
        }
        map
    }

    fn filter(allow: &[&str], deny: &[&str]) -> IpFilterConfig {
        IpFilterConfig {
            allow: nets(allow),
            deny: nets(deny),
        }
    }

    #[test]
    fn untrusted_peer_ignores_forwarded_for() {
        let trusted = nets(&["10.0.0.0/8"]);
        let headers = xff(&["1.1.1.1, 10.0.0.5"]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), &headers, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("203.0.113.9"), &headers, &[]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn trusted_peer_without_header_is_the_client() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn trusted_peer_yields_rightmost_untrusted_entry() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The client forged the first entry; the proxy appended the real address.
        let headers = xff(&["6.6.6.6, 198.51.100.7"]);
        assert_eq!(
            client_ip(ip("10.1.2.3"), &headers, &trusted),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn chain_of_two_trusted_proxies_is_skipped() {
        let trusted = nets(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        let headers = xff(&["6.6.6.6, 198.51.100.7, 10.9.9.9"]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &headers, &trusted),
            ip("198.51.100.7")
        );
        let headers = xff(&["2001:db8::1", "2001:db8:ffff::2"]);
        assert_eq!(
            client_ip(ip("2001:db8:ffff::1"), &headers, &trusted),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn header_instances_are_read_as_one_list() {
        let trusted = nets(&["10.0.0.0/8"]);
        let headers = xff(&["6.6.6.6", "198.51.100.7, 10.0.0.3", "10.0.0.4"]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &headers, &trusted),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn only_trusted_entries_yield_the_leftmost() {
        let trusted = nets(&["10.0.0.0/8"]);
        let headers = xff(&["10.0.0.7, 10.0.0.8"]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &headers, &trusted),
            ip("10.0.0.7")
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_good_address() {
        let trusted = nets(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        for (value, expected) in [
            ("garbage", "10.0.0.1"),
            ("", "10.0.0.1"),
            ("1.2.3.4, ", "10.0.0.1"),
            ("1.2.3.4, unknown", "10.0.0.1"),
            ("1.2.3.4, not-an-ip, 10.0.0.9", "10.0.0.9"),
            ("unknown, 10.0.0.9, 10.0.0.8", "10.0.0.9"),
            ("999.1.1.1, 198.51.100.7", "198.51.100.7"),
        ] {
            assert_eq!(
                client_ip(peer, &xff(&[value]), &trusted),
                ip(expected),
                "{value:?}"
            );
        }
        let mut headers = xff(&["1.2.3.4"]);
        headers.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"\xff").expect("opaque bytes"),
        );
        assert_eq!(client_ip(peer, &headers, &trusted), peer);
    }

    #[test]
    fn entries_may_carry_ports_brackets_and_spaces() {
        let trusted = nets(&["10.0.0.0/8"]);
        for (value, expected) in [
            ("  198.51.100.7  ", "198.51.100.7"),
            ("198.51.100.7:4431", "198.51.100.7"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
        ] {
            assert_eq!(
                client_ip(ip("10.0.0.1"), &xff(&[value]), &trusted),
                ip(expected),
                "{value:?}"
            );
        }
    }

    #[test]
    fn mapped_addresses_are_normalised() {
        let trusted = nets(&["10.0.0.0/8"]);
        // A mapped peer is recognised as a trusted IPv4 proxy.
        let headers = xff(&["::ffff:198.51.100.7"]);
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &headers, &trusted),
            ip("198.51.100.7")
        );
        // A mapped untrusted peer is returned as IPv4.
        assert_eq!(
            client_ip(ip("::ffff:203.0.113.9"), &headers, &trusted),
            ip("203.0.113.9")
        );
        // Mapped trusted proxies in the chain are skipped.
        let headers = xff(&["198.51.100.7, ::ffff:10.2.2.2"]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &headers, &trusted),
            ip("198.51.100.7")
        );
        // Networks written in mapped form match IPv4 addresses.
        let trusted = nets(&["::ffff:10.0.0.0/104"]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &xff(&["198.51.100.7"]), &trusted),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn empty_filter_allows_everything() {
        let f = filter(&[], &[]);
        for addr in ["1.2.3.4", "::1", "2001:db8::1"] {
            assert!(is_allowed(&f, ip(addr)), "{addr}");
        }
    }

    #[test]
    fn allow_list_admits_only_members() {
        let f = filter(
            &[
                "192.0.2.0/24",
                "198.51.100.7/32",
                "2001:db8::/32",
                "::1/128",
            ],
            &[],
        );
        for (addr, allowed) in [
            ("192.0.2.0", true),
            ("192.0.2.255", true),
            ("192.0.3.0", false),
            ("198.51.100.7", true),
            ("198.51.100.8", false),
            ("2001:db8:1234::5", true),
            ("2001:db9::1", false),
            ("::1", true),
            ("::2", false),
            ("::ffff:192.0.2.9", true),
            ("::ffff:192.0.3.9", false),
        ] {
            assert_eq!(is_allowed(&f, ip(addr)), allowed, "{addr}");
        }
    }

    #[test]
    fn deny_list_refuses_members_and_wins_over_allow() {
        let f = filter(&[], &["203.0.113.0/24", "2001:db8:bad::/48"]);
        for (addr, allowed) in [
            ("203.0.113.50", false),
            ("::ffff:203.0.113.50", false),
            ("203.0.114.1", true),
            ("2001:db8:bad::1", false),
            ("2001:db8:bad1::1", true),
        ] {
            assert_eq!(is_allowed(&f, ip(addr)), allowed, "{addr}");
        }
        let f = filter(
            &["10.0.0.0/8", "2001:db8::/32"],
            &["10.6.6.6/32", "2001:db8::666/128"],
        );
        for (addr, allowed) in [
            ("10.1.1.1", true),
            ("10.6.6.6", false),
            ("10.6.6.7", true),
            ("2001:db8::666", false),
            ("2001:db8::667", true),
            ("11.0.0.1", false),
        ] {
            assert_eq!(is_allowed(&f, ip(addr)), allowed, "{addr}");
        }
    }

    #[test]
    fn address_families_do_not_mix() {
        let f = filter(&["::/0"], &[]);
        assert!(is_allowed(&f, ip("2001:db8::1")));
        assert!(!is_allowed(&f, ip("1.2.3.4")));
        let f = filter(&["0.0.0.0/0"], &[]);
        assert!(is_allowed(&f, ip("::ffff:1.2.3.4")));
        assert!(!is_allowed(&f, ip("::1")));
    }

    #[test]
    fn mapped_networks_match_ipv4_addresses() {
        let f = filter(&[], &["::ffff:203.0.113.0/120"]);
        assert!(!is_allowed(&f, ip("203.0.113.1")));
        assert!(is_allowed(&f, ip("203.0.114.1")));
        let f = filter(&["::ffff:0:0/96"], &[]);
        assert!(is_allowed(&f, ip("8.8.8.8")));
        assert!(!is_allowed(&f, ip("2001:db8::1")));
    }
}
