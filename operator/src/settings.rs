//! Startup settings, from flags or `HOOKSTREAM_*` environment variables.

use std::net::SocketAddr;

use clap::Parser;
use hookstream_crds::config::ObjectKey;

/// hookstream operator: validates hookstream objects, writes their status, and writes the
/// compiled routing config for the gateway into a Secret.
#[derive(Parser, Debug, Clone)]
#[command(name = "hookstream-operator", version)]
pub struct Settings {
    /// The Secret (NAMESPACE/NAME) the compiled gateway config is written to.
    #[arg(long, env = "HOOKSTREAM_GATEWAY_CONFIG_SECRET")]
    pub gateway_config_secret: ObjectKey,
    /// Base URL of the gateway as webhook senders reach it, like
    /// http://hookstream-gateway.hookstream-system.svc; Sources show
    /// {base}/v1/ingest/{namespace}/{name} in status.ingestUrl.
    #[arg(long, env = "HOOKSTREAM_INGEST_BASE_URL", value_parser = parse_base_url)]
    pub ingest_base_url: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "HOOKSTREAM_METRICS_LISTEN",
        default_value = "0.0.0.0:8081"
    )]
    pub metrics_listen: SocketAddr,
    /// Watch only these namespaces (comma-separated), for installs without cluster-wide
    /// permissions: their objects, and the Secrets those reference. Default: all namespaces.
    #[arg(long, env = "HOOKSTREAM_WATCH_NAMESPACE", value_delimiter = ',', value_parser = parse_namespace)]
    pub watch_namespace: Vec<String>,
    /// Namespace of the leader Lease. Default: the config Secret's namespace.
    #[arg(long, env = "HOOKSTREAM_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "HOOKSTREAM_LEASE_NAME",
        default_value = "hookstream-operator"
    )]
    pub lease_name: String,
    /// Name of this replica in the Lease and in Events. Default: POD_NAME, else host name
    /// and process id.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Ranges (CIDRs or addresses, comma-separated) the gateway's deliveries may not reach;
    /// a Destination whose URL is a literal address in them is refused with reason
    /// EgressDenied. Give the gateway the same list. Link-local and metadata addresses are
    /// always denied.
    #[arg(long, env = "HOOKSTREAM_EGRESS_DENY", value_delimiter = ',', value_parser = hookstream_crds::egress::parse_net)]
    pub egress_deny: Vec<ipnet::IpNet>,
    /// When given, the only ranges deliveries may reach (an address in them is allowed even
    /// when also in --egress-deny). Give the gateway the same list.
    #[arg(long, env = "HOOKSTREAM_EGRESS_ALLOW", value_delimiter = ',', value_parser = hookstream_crds::egress::parse_net)]
    pub egress_allow: Vec<ipnet::IpNet>,
    /// Log as JSON lines (the default in containers) instead of text.
    #[arg(long, env = "HOOKSTREAM_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

impl Settings {
    /// The watched namespaces, each once and sorted; empty for all namespaces.
    pub fn watch_namespaces(&self) -> Vec<String> {
        let set: std::collections::BTreeSet<&String> = self.watch_namespace.iter().collect();
        set.into_iter().cloned().collect()
    }
}

/// A namespace name: a DNS label (lowercase letters, digits and `-`, at most 63 characters,
/// starting and ending with a letter or digit).
fn parse_namespace(text: &str) -> Result<String, String> {
    let name = text.trim();
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a namespace name (a DNS label, like team-a)"
        ))
    }
}

fn parse_base_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "{text:?} must be an http:// or https:// URL with a host"
        ));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_and_urls_are_checked() {
        assert_eq!(
            "hookstream-system/gw".parse::<ObjectKey>().unwrap(),
            ObjectKey::new("hookstream-system", "gw")
        );
        assert!("gw"
            .parse::<ObjectKey>()
            .unwrap_err()
            .contains("NAMESPACE/NAME"));
        assert!("a/b/c".parse::<ObjectKey>().is_err());
        assert_eq!(
            parse_base_url("http://gw.svc:8080/").unwrap(),
            "http://gw.svc:8080"
        );
        assert!(parse_base_url("gw.svc").is_err());
    }

    #[test]
    fn several_namespaces_are_watched_each_once() {
        let parse = |args: &[&str]| {
            let base = [
                "op",
                "--gateway-config-secret",
                "ns/gw",
                "--ingest-base-url",
                "http://gw",
            ];
            Settings::try_parse_from(base.iter().chain(args))
        };
        assert!(parse(&[]).unwrap().watch_namespaces().is_empty());
        let settings = parse(&["--watch-namespace", "team-b, team-a,team-b"]).unwrap();
        assert_eq!(settings.watch_namespaces(), ["team-a", "team-b"]);
        let settings = parse(&["--watch-namespace", "a", "--watch-namespace", "b"]).unwrap();
        assert_eq!(settings.watch_namespaces(), ["a", "b"]);
        for bad in ["Team", "a_b", "-a", "", "a/b"] {
            assert!(parse(&["--watch-namespace", bad]).is_err(), "{bad:?}");
        }
    }
}
