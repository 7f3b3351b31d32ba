//! ServiceAccount tokens for the management API: TokenReview says who a token is,
//! SubjectAccessReview says where that identity may do an [`Action`] on the hookstream
//! resources. A cluster-wide grant (a ClusterRoleBinding) gives every namespace; otherwise each
//! namespace the routing config knows is asked about, a few at a time. Answers are remembered
//! for [`REMEMBER`], so a revoked token or a removed RoleBinding stops working within that
//! time, and a burst of requests costs the API server one review. Tokens are remembered only
//! as SHA-256 hashes and never logged.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};
use tracing::warn;

use crate::access::{self, Action, Identity, Scope, TokenAuthority, Unavailable};
use crate::config::ConfigHandle;

/// How long a review's answer is used before asking again.
pub const REMEMBER: Duration = Duration::from_secs(30);
/// Answers remembered at most (beyond that the expired ones go, else all of them).
const CAPACITY: usize = 10_000;
/// SubjectAccessReviews in flight at once for one caller.
const REVIEWS_AT_ONCE: usize = 8;
/// The API group of the hookstream resources.
const GROUP: &str = "hookstream.io";

/// The [`TokenAuthority`] of a gateway in a cluster.
pub struct Reviewer {
    client: Client,
    config: ConfigHandle,
    identities: Remembered<[u8; 32], Option<Arc<Identity>>>,
    decisions: Remembered<(String, Action, Option<String>), bool>,
}

impl Reviewer {
    /// A reviewer asking the API server of `client`, about the namespaces of `config`.
    pub fn new(client: Client, config: ConfigHandle) -> Reviewer {
        Reviewer {
            client,
            config,
            identities: Remembered::default(),
            decisions: Remembered::default(),
        }
    }

    async fn review_token(&self, token: &str) -> Result<Option<Arc<Identity>>, Unavailable> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: None,
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| unavailable("tokenreviews.authentication.k8s.io", &e))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Ok(None);
        }
        let Some(user) = status.user else {
            return Ok(None);
        };
        Ok(Some(Arc::new(Identity {
            username: user.username.unwrap_or_default(),
            uid: user.uid,
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default().into_iter().collect(),
        })))
    }

    /// Whether `identity` may do `action` in `namespace` (`None`: in every namespace).
    async fn allowed(
        &self,
        identity: &Identity,
        action: Action,
        namespace: Option<String>,
    ) -> Result<bool, Unavailable> {
        let key = (identity_key(identity), action, namespace.clone());
        if let Some(known) = self.decisions.get(&key) {
            return Ok(known);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(identity.username.clone()),
                uid: identity.uid.clone(),
                groups: Some(identity.groups.clone()),
                extra: (!identity.extra.is_empty())
                    .then(|| identity.extra.clone().into_iter().collect()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(GROUP.to_owned()),
                    resource: Some(action.resource.to_owned()),
                    verb: Some(action.verb.to_owned()),
                    namespace,
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| unavailable("subjectaccessreviews.authorization.k8s.io", &e))?;
        let allowed = answer
            .status
            .is_some_and(|s| s.allowed && s.denied != Some(true));
        self.decisions.put(key, allowed);
        Ok(allowed)
    }

    /// The namespaces of every Source, Destination and Topic the gateway routes.
    fn known_namespaces(&self) -> BTreeSet<String> {
        let config = self.config.borrow();
        config
            .sources
            .keys()
            .chain(config.destinations.keys())
            .chain(config.topics.keys())
            .map(|k| k.namespace.clone())
            .collect()
    }
}

impl TokenAuthority for Reviewer {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Identity>>, Unavailable>> {
        async move {
            let hash = access::hash(token);
            if let Some(known) = self.identities.get(&hash) {
                return Ok(known);
            }
            let identity = self.review_token(token).await?;
            self.identities.put(hash, identity.clone());
            Ok(identity)
        }
        .boxed()
    }

    fn scope<'a>(
        &'a self,
        identity: &'a Identity,
        action: Action,
    ) -> BoxFuture<'a, Result<Scope, Unavailable>> {
        async move {
            if self.allowed(identity, action, None).await? {
                return Ok(Scope::All);
            }
            let answers: Vec<(String, Result<bool, Unavailable>)> =
                futures::stream::iter(self.known_namespaces())
                    .map(|ns| async move {
                        let answer = self.allowed(identity, action, Some(ns.clone())).await;
                        (ns, answer)
                    })
                    .buffer_unordered(REVIEWS_AT_ONCE)
                    .collect()
                    .await;
            let mut visible = BTreeSet::new();
            for (ns, answer) in answers {
                if answer? {
                    visible.insert(ns);
                }
            }
            Ok(Scope::Namespaces(Arc::new(visible)))
        }
        .boxed()
    }
}

/// What identifies a reviewed identity in the decision cache: every field a
/// SubjectAccessReview is asked with.
fn identity_key(identity: &Identity) -> String {
    format!(
        "{}\u{0}{}\u{0}{}\u{0}{:?}",
        identity.username,
        identity.uid.as_deref().unwrap_or_default(),
        identity.groups.join("\u{1}"),
        identity.extra
    )
}

fn unavailable(resource: &str, e: &kube::Error) -> Unavailable {
    let message = match e {
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => format!(
            "the gateway may not create {resource} (its RBAC needs create on tokenreviews.authentication.k8s.io and subjectaccessreviews.authorization.k8s.io)"
        ),
        kube::Error::Api(status) => format!(
            "the Kubernetes API refused a review of {resource} ({}): {}",
            status.code, status.message
        ),
        other => format!("the Kubernetes API cannot be reached: {other}"),
    };
    warn!(error = %message, "checking a bearer token failed");
    Unavailable(message)
}

/// Answers kept for [`REMEMBER`], at most [`CAPACITY`] of them.
struct Remembered<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K, V> Default for Remembered<K, V> {
    fn default() -> Self {
        Remembered {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V: Clone> Remembered<K, V> {
    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < REMEMBER)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CAPACITY {
            entries.retain(|_, (at, _)| at.elapsed() < REMEMBER);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_expire_and_the_cache_stays_bounded() {
        let cache: Remembered<u32, bool> = Remembered::default();
        cache.put(1, true);
        assert_eq!(cache.get(&1), Some(true));
        assert_eq!(cache.get(&2), None);
        for i in 0..(CAPACITY as u32 + 5) {
            cache.put(i, false);
        }
        assert!(cache.entries.lock().unwrap().len() <= CAPACITY);
        let old = Instant::now() - REMEMBER - Duration::from_secs(1);
        cache.entries.lock().unwrap().insert(7, (old, true));
        assert_eq!(cache.get(&7), None);
    }
}
