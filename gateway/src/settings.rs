//! Startup settings (restart to change), from flags or `HOOKSTREAM_*` environment variables.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use hookstream_crds::config::ObjectKey;
use hookstream_crds::egress::{parse_net, EgressPolicy};
use hookstream_transform::sandbox::{worker_program, SandboxLimits};
use ipnet::IpNet;

/// hookstream gateway: receives webhooks, stores them, routes and delivers them with retries
/// and circuit breaking, and serves the management API and metrics.
#[derive(Parser, Debug, Clone)]
#[command(name = "hookstream-gateway", version)]
pub struct Settings {
    /// Folder of manifests (Source, Destination, Connection, Topic, AlertRule, Secret; YAML
    /// or JSON, sub-folders included), reloaded when it changes. Standalone mode.
    #[arg(
        long,
        env = "HOOKSTREAM_MANIFESTS",
        required_unless_present = "config_secret",
        conflicts_with = "config_secret"
    )]
    pub manifests: Option<PathBuf>,
    /// In a cluster: the Secret (NAMESPACE/NAME) the operator writes the compiled config to,
    /// watched through the Kubernetes API (kubeconfig from KUBECONFIG or in-cluster).
    #[arg(long, env = "HOOKSTREAM_CONFIG_SECRET")]
    pub config_secret: Option<ObjectKey>,
    /// In a cluster: namespace of the API key Secrets (labelled hookstream.io/api-key=true)
    /// and of the status Lease. Default: the config Secret's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// In a cluster: this replica's name in the status Lease. Default: host name and pid.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "HOOKSTREAM_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Database URL: sqlite://PATH (embedded, one replica) or postgres://USER@HOST/DB
    /// (several replicas share it; the password from the URL or PGPASSWORD).
    #[arg(
        long,
        env = "HOOKSTREAM_DATABASE_URL",
        default_value = "sqlite://hookstream.db"
    )]
    pub database: String,
    /// Peers allowed to set the client address with X-Forwarded-For (CIDRs, comma-separated).
    #[arg(long, env = "HOOKSTREAM_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<IpNet>,
    /// Largest request body accepted by ingest, in bytes (a Source may set a lower limit).
    #[arg(long, env = "HOOKSTREAM_MAX_BODY_BYTES", default_value_t = 25 * 1024 * 1024)]
    pub max_body_bytes: u64,
    /// Most HTTP connections open at once. When all are taken the gateway stops accepting:
    /// new connections wait in the listen backlog (their clients see a slow connect) until an
    /// open one closes.
    #[arg(long, env = "HOOKSTREAM_MAX_CONNECTIONS", default_value = "10000")]
    pub max_connections: NonZeroUsize,
    /// How long a client may take to send a request's head (request line and headers): from
    /// the connection opening for its first request, from the first byte for later ones.
    /// Slower clients are disconnected, like 10s.
    #[arg(long, env = "HOOKSTREAM_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may sit with no request in progress after a response
    /// before it is closed, like 60s. Independent of --header-read-timeout, which starts once
    /// the next request's first byte arrives.
    #[arg(long, env = "HOOKSTREAM_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_timeout)]
    pub idle_timeout: Duration,
    /// How long a request body may take to arrive whole, like 30s. An ingest or publish body
    /// that is late is answered 408 (no other route reads a body).
    #[arg(long, env = "HOOKSTREAM_BODY_READ_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
    pub body_read_timeout: Duration,
    /// When a SQLite commit counts as done: `full` fsyncs before the sender hears 200 (safe
    /// across power loss); `normal` leaves it to the OS cache (safe across the gateway being
    /// killed, not across a machine crash).
    #[arg(
        long,
        env = "HOOKSTREAM_SQLITE_SYNC",
        value_enum,
        default_value = "full"
    )]
    pub sqlite_sync: crate::store::sqlite::SqliteSync,
    /// How long events and attempts are kept, like 30d or 12h.
    #[arg(long, env = "HOOKSTREAM_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub retention: Duration,
    /// How long shutdown (SIGTERM) waits for deliveries in flight before leaving them to
    /// their leases, like 30s. Keep it below the pod's termination grace period.
    #[arg(long, env = "HOOKSTREAM_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Most delivery attempts in flight at once.
    #[arg(long, env = "HOOKSTREAM_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Ranges (CIDRs or addresses, comma-separated) deliveries may not connect to, checked
    /// on the resolved address at connect time. The Helm chart and the kustomize install
    /// pass 127.0.0.0/8,::1/128 (inside a pod, loopback reaches the pod itself); the
    /// binary's default denies none of these, so local receivers work. Link-local and cloud
    /// metadata addresses, "this host" and the gateway's own listen address are always
    /// denied.
    #[arg(long, env = "HOOKSTREAM_EGRESS_DENY", value_delimiter = ',', value_parser = parse_net)]
    pub egress_deny: Vec<IpNet>,
    /// When given, the only ranges deliveries may connect to; an address in them is allowed
    /// even when also in --egress-deny.
    #[arg(long, env = "HOOKSTREAM_EGRESS_ALLOW", value_delimiter = ',', value_parser = parse_net)]
    pub egress_allow: Vec<IpNet>,
    /// Most hops an event may have made through gateways (the X-Hookstream-Hops header of
    /// the request): a request over it is answered 508, so a Connection that points back at
    /// a gateway cannot loop.
    #[arg(long, env = "HOOKSTREAM_MAX_HOPS", default_value_t = 5)]
    pub max_hops: u32,
    /// Worker processes that evaluate JSONata transforms, and so evaluations at once.
    /// Default: the number of CPUs, at least 2.
    #[arg(long, env = "HOOKSTREAM_TRANSFORM_WORKERS")]
    pub transform_workers: Option<usize>,
    /// Memory one transform evaluation may take, in MiB; past it the worker is stopped and
    /// the delivery fails with "memory limit".
    #[arg(long, env = "HOOKSTREAM_TRANSFORM_MEMORY_MIB", default_value_t = 64)]
    pub transform_memory_mib: u64,
    /// Time one transform evaluation may take, like 100ms; past it the worker is killed and
    /// the delivery fails with "time limit".
    #[arg(long, env = "HOOKSTREAM_TRANSFORM_TIMEOUT", default_value = "100ms", value_parser = parse_duration)]
    pub transform_timeout: Duration,
    /// The transform worker program. Default: hookstream-transform-worker beside this
    /// executable.
    #[arg(long, env = "HOOKSTREAM_TRANSFORM_WORKER")]
    pub transform_worker: Option<PathBuf>,
    /// Log as JSON lines (the default in containers) instead of text.
    #[arg(long, env = "HOOKSTREAM_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    hookstream_crds::duration::parse(text)
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    parse_duration(text).and_then(|d| {
        if d.is_zero() {
            Err("a timeout must be longer than zero".to_owned())
        } else {
            Ok(d)
        }
    })
}

impl Settings {
    /// The transform sandbox's limits, from the --transform-* flags.
    pub fn sandbox_limits(&self) -> SandboxLimits {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        SandboxLimits {
            memory_bytes: self.transform_memory_mib.saturating_mul(1024 * 1024),
            timeout: self.transform_timeout,
            workers: self.transform_workers.unwrap_or(cpus).max(1),
            ..SandboxLimits::default()
        }
    }

    /// The transform worker program: --transform-worker, else beside this executable.
    pub fn transform_worker(&self) -> anyhow::Result<PathBuf> {
        match &self.transform_worker {
            Some(path) => Ok(path.clone()),
            None => Ok(worker_program(&std::env::current_exe()?)),
        }
    }

    /// Where deliveries may connect, from --egress-deny and --egress-allow.
    pub fn egress_policy(&self) -> EgressPolicy {
        EgressPolicy::new(self.egress_deny.clone(), self.egress_allow.clone())
    }
}
