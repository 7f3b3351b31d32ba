//! The gateway in a Kubernetes cluster: routing config from the operator's Secret, API keys
//! from labelled Secrets, ServiceAccount tokens for the management API, runtime status written
//! back onto Sources and Destinations, and circuit resets through an annotation.

pub mod config;
pub mod keys;
pub mod reset;
pub mod status;
pub mod tokens;

use hookstream_crds::config::ObjectKey;
use kube::Client;

/// Field manager of the status fields the gateway owns.
pub const FIELD_MANAGER: &str = "hookstream-gateway";
/// Name of the Lease that picks the one replica writing status.
pub const STATUS_LEASE: &str = "hookstream-gateway-status";

/// Where the gateway finds its cluster objects.
#[derive(Clone)]
pub struct Cluster {
    /// API client.
    pub client: Client,
    /// The operator's config Secret.
    pub config_secret: ObjectKey,
    /// Namespace of API key Secrets and of the status Lease.
    pub namespace: String,
    /// This replica's name.
    pub identity: String,
}

impl Cluster {
    /// Connects with the kubeconfig from `KUBECONFIG` (or `~/.kube/config`), or in-cluster.
    pub async fn connect(
        config_secret: ObjectKey,
        namespace: Option<String>,
        identity: Option<String>,
    ) -> anyhow::Result<Cluster> {
        let client = Client::try_default().await.map_err(|e| {
            anyhow::anyhow!("cannot build a Kubernetes client (KUBECONFIG or in-cluster): {e}")
        })?;
        let identity = hookstream_common::identity(identity, "hookstream-gateway");
        Ok(Cluster {
            client,
            namespace: namespace.unwrap_or_else(|| config_secret.namespace.clone()),
            config_secret,
            identity,
        })
    }
}
