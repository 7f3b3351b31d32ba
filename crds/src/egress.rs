//! The egress policy: which addresses deliveries may connect to. The operator checks a
//! Destination's literal address with it (`Accepted=False`, reason `EgressDenied`); the
//! gateway checks every address it connects to, after name resolution.
//!
//! An address is looked at in its canonical form (an IPv4-mapped IPv6 address is its IPv4
//! address; `2130706433` and `0x7f.1` are 127.0.0.1 once a URL parser has read them), then:
//!
//! 1. always denied: link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10,
//!    fd00:ec2::254), "this host" (0.0.0.0/8, `::`), multicast and broadcast;
//! 2. allowed when it is in an `allow` range (an exception carved out of `deny`);
//! 3. denied when `allow` is not empty (only the allowed ranges are reachable);
//! 4. denied when it is in a `deny` range;
//! 5. allowed otherwise.

use std::fmt;
use std::net::IpAddr;
use std::sync::LazyLock;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Ranges no delivery may reach, whatever the flags say.
pub const ALWAYS_DENIED: &[(&str, &str)] = &[
    ("169.254.0.0/16", "link-local and cloud metadata addresses"),
    ("fe80::/10", "IPv6 link-local addresses"),
    ("fd00:ec2::254/128", "the cloud metadata address"),
    ("0.0.0.0/8", "\"this host\" addresses"),
    ("::/128", "the unspecified address"),
    ("224.0.0.0/4", "multicast addresses"),
    ("ff00::/8", "IPv6 multicast addresses"),
    ("255.255.255.255/32", "the broadcast address"),
];

/// The ranges a Helm or kustomize install denies by default: loopback, which inside a pod
/// reaches the pod itself.
pub const INSTALL_DEFAULT_DENY: &str = "127.0.0.0/8,::1/128";

/// Where deliveries may connect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Ranges denied (unless also allowed).
    pub deny: Vec<IpNet>,
    /// When not empty, the only ranges allowed.
    pub allow: Vec<IpNet>,
}

/// Why an address is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("address {address} is denied by the egress policy ({why})")]
pub struct EgressDenied {
    /// The address, canonical.
    pub address: IpAddr,
    /// The rule that refused it, in words.
    pub why: String,
}

impl EgressPolicy {
    /// A policy from lists of CIDRs (or single addresses).
    pub fn new(deny: Vec<IpNet>, allow: Vec<IpNet>) -> EgressPolicy {
        EgressPolicy { deny, allow }
    }

    /// Whether a delivery may connect to `address`.
    pub fn check(&self, address: IpAddr) -> Result<(), EgressDenied> {
        let address = canonical(address);
        let denied = |why: String| Err(EgressDenied { address, why });
        if let Some((range, what)) = always_denied(address) {
            return denied(format!("{what}, {range}, are always denied"));
        }
        if self.allow.iter().any(|n| n.contains(&address)) {
            return Ok(());
        }
        if !self.allow.is_empty() {
            return denied(format!("not in the allowed ranges {}", list(&self.allow)));
        }
        if let Some(range) = self.deny.iter().find(|n| n.contains(&address)) {
            return denied(format!("in the denied range {range}"));
        }
        Ok(())
    }
}

/// `address` with an IPv4-mapped IPv6 address read as its IPv4 address.
pub fn canonical(address: IpAddr) -> IpAddr {
    address.to_canonical()
}

/// [`ALWAYS_DENIED`] parsed once: every connection is checked against it.
static ALWAYS_DENIED_NETS: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| {
    ALWAYS_DENIED
        .iter()
        .filter_map(|(range, what)| Some((range.parse().ok()?, *what)))
        .collect()
});

fn always_denied(address: IpAddr) -> Option<(IpNet, &'static str)> {
    ALWAYS_DENIED_NETS
        .iter()
        .find(|(net, _)| net.contains(&address))
        .copied()
}

fn list(nets: &[IpNet]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a CIDR or a single address (as a /32 or /128).
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| {
            text.parse::<IpAddr>().map(|a| match a {
                IpAddr::V4(v4) => IpNet::V4(Ipv4Net::from(v4)),
                IpAddr::V6(v6) => IpNet::V6(Ipv6Net::from(v6)),
            })
        })
        .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))
}

/// The literal address of an http(s) URL's host, if it is one (after the URL parser's
/// normalisation, so `http://2130706433/` is 127.0.0.1).
pub fn literal_host(url: &str) -> Option<IpAddr> {
    match url::Url::parse(url).ok()?.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

impl fmt::Display for EgressPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "deny [{}], allow [{}]",
            list(&self.deny),
            list(&self.allow)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &str) -> Vec<IpNet> {
        list.split(',').map(|n| parse_net(n).unwrap()).collect()
    }

    #[test]
    fn every_always_denied_range_parses() {
        assert_eq!(ALWAYS_DENIED_NETS.len(), ALWAYS_DENIED.len());
    }

    #[test]
    fn metadata_link_local_and_this_host_are_always_denied() {
        let open = EgressPolicy::default();
        for a in [
            "169.254.169.254",
            "fe80::1",
            "fd00:ec2::254",
            "0.0.0.0",
            "::",
            "::ffff:169.254.169.254",
        ] {
            let err = open.check(a.parse().unwrap()).unwrap_err();
            assert!(err.to_string().contains("always denied"), "{a}: {err}");
        }
        assert!(open.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(open.check("10.1.2.3".parse().unwrap()).is_ok());
    }

    #[test]
    fn every_spelling_of_loopback_is_denied_by_the_install_default() {
        let install = EgressPolicy::new(nets(INSTALL_DEFAULT_DENY), Vec::new());
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://127.1/",
        ] {
            let host = literal_host(url).unwrap();
            let err = install.check(host).unwrap_err();
            assert!(
                err.to_string().contains("127.0.0.0/8") || err.to_string().contains("::1/128"),
                "{url}: {err}"
            );
        }
        assert_eq!(literal_host("http://example.com/"), None);
    }

    #[test]
    fn allow_carves_exceptions_and_limits_when_given() {
        let p = EgressPolicy::new(nets("10.0.0.0/8"), nets("10.1.0.0/16"));
        assert!(p.check("10.1.2.3".parse().unwrap()).is_ok());
        let err = p.check("10.2.0.1".parse().unwrap()).unwrap_err();
        assert!(err.why.contains("not in the allowed ranges 10.1.0.0/16"));
        assert!(
            p.check("8.8.8.8".parse().unwrap()).is_err(),
            "allow list given: only it"
        );
        let deny_only = EgressPolicy::new(nets("10.0.0.0/8"), Vec::new());
        assert!(deny_only.check("10.9.9.9".parse().unwrap()).is_err());
        assert!(deny_only.check("8.8.8.8".parse().unwrap()).is_ok());
        assert!(
            EgressPolicy::new(Vec::new(), nets("169.254.0.0/16"))
                .check("169.254.169.254".parse().unwrap())
                .is_err(),
            "always denied beats allow"
        );
    }

    #[test]
    fn single_addresses_parse_as_host_ranges() {
        assert_eq!(parse_net(" 10.0.0.1 ").unwrap().to_string(), "10.0.0.1/32");
        assert_eq!(parse_net("::1").unwrap().to_string(), "::1/128");
        assert!(parse_net("nope").unwrap_err().contains("not an IP address"));
    }
}
