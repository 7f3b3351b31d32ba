//! Where deliveries may connect: the egress policy (`--egress-deny`, `--egress-allow`, and
//! the ranges always denied) plus the gateway's own listen address, checked on the address a
//! delivery actually connects to.
//!
//! A host name is checked after it is resolved, by the resolver the delivery client connects
//! with, so a name that resolves to an allowed address when checked and to a denied one when
//! used (DNS rebinding) cannot get around it: there is only one resolution. A literal address
//! in a URL is not resolved; it is checked before the request is sent, in every spelling
//! (decimal, hexadecimal, IPv4-mapped IPv6) once the URL parser has read it.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, OnceLock};

use hookstream_crds::egress::{canonical, EgressDenied, EgressPolicy};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The policy and the address the gateway listens on.
#[derive(Debug)]
pub struct Egress {
    policy: EgressPolicy,
    listen: OnceLock<SocketAddr>,
}

impl Egress {
    /// Deliveries checked against `policy`.
    pub fn new(policy: EgressPolicy) -> Arc<Egress> {
        Arc::new(Egress {
            policy,
            listen: OnceLock::new(),
        })
    }

    /// The address the gateway's listener is bound to (its real port, also when asked for
    /// port 0): deliveries never connect to it.
    pub fn listening_on(&self, address: SocketAddr) {
        let _ = self.listen.set(address);
    }

    /// Whether a delivery may connect to `address`.
    pub fn check(&self, address: SocketAddr) -> Result<(), EgressDenied> {
        self.policy.check(address.ip())?;
        if self.is_own(address) {
            return Err(EgressDenied {
                address: canonical(address.ip()),
                why: format!(
                    "port {} of this host is the gateway's own listen address",
                    address.port()
                ),
            });
        }
        Ok(())
    }

    /// The addresses of `resolved` a delivery may connect to, in order; when none is left,
    /// the first refusal (`None` when nothing was resolved at all).
    pub fn allowed(
        &self,
        resolved: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Option<EgressDenied>> {
        let mut denied = None;
        let allowed: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|address| match self.check(*address) {
                Ok(()) => true,
                Err(e) => {
                    denied.get_or_insert(e);
                    false
                }
            })
            .collect();
        if allowed.is_empty() {
            Err(denied)
        } else {
            Ok(allowed)
        }
    }

    /// Whether `url` names a literal address that may not be reached, or a host name on the
    /// gateway's own port that resolves to this host. Other host names are checked when the
    /// client resolves them ([`Egress::resolver`]).
    pub async fn check_url(&self, url: &url::Url) -> Result<(), EgressDenied> {
        let Some(port) = url.port_or_known_default() else {
            return Ok(());
        };
        match url.host() {
            Some(url::Host::Ipv4(v4)) => self.check(SocketAddr::new(IpAddr::V4(v4), port)),
            Some(url::Host::Ipv6(v6)) => self.check(SocketAddr::new(IpAddr::V6(v6), port)),
            Some(url::Host::Domain(name))
                if self.listen.get().is_some_and(|l| l.port() == port) =>
            {
                let Ok(addresses) = tokio::net::lookup_host((name, port)).await else {
                    // Unresolvable: the request fails on its own, with the resolver's words.
                    return Ok(());
                };
                for address in addresses {
                    self.check(address)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether `address` reaches this gateway's listener.
    fn is_own(&self, address: SocketAddr) -> bool {
        let Some(listen) = self.listen.get() else {
            return false;
        };
        if address.port() != listen.port() {
            return false;
        }
        let ip = canonical(address.ip());
        if listen.ip().is_unspecified() {
            is_local(ip)
        } else {
            ip == canonical(listen.ip())
        }
    }

    /// The resolver deliveries connect with: it keeps only the addresses the policy allows.
    pub fn resolver(self: &Arc<Self>) -> Arc<impl Resolve> {
        Arc::new(PolicyResolver {
            egress: self.clone(),
        })
    }
}

/// An address of this host: loopback, or one a socket can be bound to.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Resolves with the system resolver, then drops every address the policy denies; when none
/// is left the connection fails with the policy's reason.
struct PolicyResolver {
    egress: Arc<Egress>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let egress = self.egress.clone();
        Box::pin(async move {
            // Port 0: the gateway's own address is refused by port where the client
            // connects (`check_url`); here the policy's ranges decide.
            let resolved = tokio::net::lookup_host((name.as_str(), 0)).await?;
            match egress.allowed(resolved) {
                Ok(allowed) => Ok(Box::new(allowed.into_iter()) as Addrs),
                Err(Some(denied)) => {
                    Err(Box::new(denied) as Box<dyn std::error::Error + Send + Sync>)
                }
                Err(None) => Ok(Box::new(Vec::new().into_iter()) as Addrs),
            }
        })
    }
}

/// The policy's refusal somewhere in an error's chain of causes.
pub fn denial<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a EgressDenied> {
    let mut cause: Option<&'a (dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(denied) = e.downcast_ref::<EgressDenied>() {
            return Some(denied);
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(deny: &str, listen: &str) -> Arc<Egress> {
        let deny = deny
            .split(',')
            .filter(|d| !d.is_empty())
            .map(|d| hookstream_crds::egress::parse_net(d).unwrap())
            .collect();
        let egress = Egress::new(EgressPolicy::new(deny, Vec::new()));
        egress.listening_on(listen.parse().unwrap());
        egress
    }

    #[test]
    fn the_gateways_own_port_on_this_host_is_denied() {
        let e = egress("", "0.0.0.0:8080");
        for a in ["127.0.0.1:8080", "[::1]:8080", "[::ffff:127.0.0.1]:8080"] {
            let err = e.check(a.parse().unwrap()).unwrap_err();
            assert!(err.why.contains("own listen address"), "{a}: {err}");
        }
        assert!(e.check("127.0.0.1:9090".parse().unwrap()).is_ok());
        assert!(
            e.check("192.0.2.7:8080".parse().unwrap()).is_ok(),
            "not this host"
        );
        let bound = egress("", "127.0.0.1:8080");
        assert!(bound.check("127.0.0.1:8080".parse().unwrap()).is_err());
    }

    #[tokio::test]
    async fn literal_urls_are_checked_in_every_spelling() {
        let e = egress("127.0.0.0/8,::1/128", "0.0.0.0:8080");
        for url in [
            "http://2130706433:9/",
            "http://0x7f000001:9/",
            "http://[::ffff:127.0.0.1]:9/",
            "http://169.254.169.254/latest/meta-data/",
            "http://0.0.0.0:9/",
        ] {
            let url = url::Url::parse(url).unwrap();
            assert!(e.check_url(&url).await.is_err(), "{url}");
        }
        let url = url::Url::parse("http://localhost:8080/metrics").unwrap();
        assert!(egress("", "0.0.0.0:8080").check_url(&url).await.is_err());
    }

    #[test]
    fn a_denial_is_found_in_a_chain_of_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("connect failed")]
        struct Outer(#[source] EgressDenied);
        let inner = EgressDenied {
            address: "127.0.0.1".parse().unwrap(),
            why: "test".into(),
        };
        assert_eq!(denial(&Outer(inner.clone())), Some(&inner));
    }
}
