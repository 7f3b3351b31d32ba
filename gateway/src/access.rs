//! Who may use the management API and what they see: API keys, kept only as SHA-256 hashes,
//! each beside the namespaces it may see (its [`Scope`]).
//!
//! Keys come from `HOOKSTREAM_API_KEYS` (every namespace) and from Secrets labelled
//! `hookstream.io/api-key=true` (in a cluster, those in the gateway's namespace; standalone,
//! those in the manifests folder). Every value of such a Secret that is a well-formed key is
//! a key; the annotation `hookstream.io/namespaces: "shop,billing"` limits the Secret's keys
//! to those namespaces. Keys and their values never reach a log, a metric or an answer.
//!
//! In a cluster a caller may instead present a Kubernetes ServiceAccount token: a
//! [`TokenAuthority`] says who it is (TokenReview) and, per [`Action`], in which namespaces it
//! may act (SubjectAccessReview on the hookstream resources of each namespace), so ordinary
//! RBAC decides what in-cluster services and people see. Either way a handler gets a
//! [`Scope`] for what it does, and anything outside it is answered as if it did not exist.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::warn;

/// The label that marks a Secret as holding API keys.
pub const LABEL: &str = "hookstream.io/api-key";

/// The annotation that limits a key Secret's keys to some namespaces (comma-separated).
pub const NAMESPACES_ANNOTATION: &str = "hookstream.io/namespaces";

/// The namespaces a caller may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace.
    All,
    /// Only these (possibly none).
    Namespaces(Arc<BTreeSet<String>>),
}

impl Scope {
    /// The scope the namespaces annotation gives: every namespace without it, else the
    /// namespaces it lists (an annotation that lists none gives none).
    pub fn from_annotation(value: Option<&str>) -> Scope {
        match value {
            None => Scope::All,
            Some(list) => Scope::Namespaces(Arc::new(
                list.split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )),
        }
    }

    /// Whether objects of `namespace` are visible.
    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Namespaces(set) => set.contains(namespace),
        }
    }

    /// The visible namespaces as a store filter: `None` for every namespace.
    pub fn namespaces(&self) -> Option<Vec<String>> {
        match self {
            Scope::All => None,
            Scope::Namespaces(set) => Some(set.iter().cloned().collect()),
        }
    }

    /// What either scope sees (a key given twice sees what each listing gives it).
    fn union(&self, other: &Scope) -> Scope {
        match (self, other) {
            (Scope::Namespaces(a), Scope::Namespaces(b)) => {
                Scope::Namespaces(Arc::new(a.union(b).cloned().collect()))
            }
            _ => Scope::All,
        }
    }
}

/// What a request does, in Kubernetes RBAC terms: a verb on a resource of `hookstream.io`,
/// checked in the namespace of each object it touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Action {
    /// RBAC verb.
    pub verb: &'static str,
    /// Resource (plural) of the `hookstream.io` group.
    pub resource: &'static str,
}

impl Action {
    /// Reading events (lists, details, search): `get` on `sources`.
    pub const READ_EVENTS: Action = Action {
        verb: "get",
        resource: "sources",
    };
    /// Reading delivery attempts and circuits, and hearing deliveries on `/v1/ws`: `get` on
    /// `destinations`.
    pub const READ_DELIVERIES: Action = Action {
        verb: "get",
        resource: "destinations",
    };
    /// Retrying an event or an attempt, resetting a circuit: `update` on `destinations`.
    pub const OPERATE_DELIVERIES: Action = Action {
        verb: "update",
        resource: "destinations",
    };
    /// Publishing to a topic: `create` on `topics`.
    pub const PUBLISH: Action = Action {
        verb: "create",
        resource: "topics",
    };
}

/// Who a ServiceAccount (or other) token belongs to, as TokenReview tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User name (`system:serviceaccount:NS:NAME` for a ServiceAccount).
    pub username: String,
    /// User id.
    pub uid: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes, passed on to SubjectAccessReview as they came.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The Kubernetes API could not be asked (unreachable, or the gateway lacks the RBAC to create
/// reviews); the message says which, never the token.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Checks bearer tokens: who they are, and where they may do what.
pub trait TokenAuthority: Send + Sync + 'static {
    /// The identity of `token`, or `None` when the token is not valid (expired, forged,
    /// revoked, or for another audience).
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Identity>>, Unavailable>>;

    /// The namespaces in which `identity` may do `action` (every namespace when a cluster-wide
    /// binding allows it).
    fn scope<'a>(
        &'a self,
        identity: &'a Identity,
        action: Action,
    ) -> BoxFuture<'a, Result<Scope, Unavailable>>;
}

/// An authenticated caller of the management API.
#[derive(Clone)]
pub enum Caller {
    /// An API key, with the namespaces it sees whatever it does.
    Key(Scope),
    /// A token's identity, authorized per action by its authority.
    Account {
        /// Who.
        identity: Arc<Identity>,
        /// Who decides.
        authority: Arc<dyn TokenAuthority>,
    },
}

impl Caller {
    /// Where this caller may do `action`.
    pub async fn scope(&self, action: Action) -> Result<Scope, Unavailable> {
        match self {
            Caller::Key(scope) => Ok(scope.clone()),
            Caller::Account {
                identity,
                authority,
            } => authority.scope(identity, action).await,
        }
    }
}

/// An accepted key: its hash and what it may see.
#[derive(Clone, PartialEq, Eq)]
pub struct ScopedKey {
    /// SHA-256 of the key.
    pub hash: [u8; 32],
    /// The namespaces it may see.
    pub scope: Scope,
}

/// A key that is not of the documented form.
#[derive(Debug, thiserror::Error)]
#[error("API key number {index} is not of the form hs_live_<64 hex> or hs_test_<64 hex>")]
pub struct BadKey {
    /// 1-based position in the list.
    pub index: usize,
}

/// The accepted keys, as hashes with scopes. Replaceable at run time (keys from Secrets).
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Arc<RwLock<Vec<ScopedKey>>>,
}

impl ApiKeys {
    /// Parses a comma-separated list of keys, each seeing every namespace.
    pub fn parse(list: &str) -> Result<ApiKeys, BadKey> {
        let mut keys = Vec::new();
        for (i, key) in list
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .enumerate()
        {
            let hash = hash_if_valid(key).ok_or(BadKey { index: i + 1 })?;
            keys.push(ScopedKey {
                hash,
                scope: Scope::All,
            });
        }
        let accepted = ApiKeys::default();
        accepted.replace(keys);
        Ok(accepted)
    }

    /// Replaces the accepted keys.
    pub fn replace(&self, keys: Vec<ScopedKey>) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
    }

    /// The accepted keys.
    pub fn keys(&self) -> Vec<ScopedKey> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// What `key` may see, or `None` when it is not accepted. Every accepted hash is compared
    /// in constant time, whichever matches.
    pub fn scope_of(&self, key: &str) -> Option<Scope> {
        let candidate = hash(key);
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let mut found: Option<Scope> = None;
        for k in keys.iter() {
            if bool::from(k.hash.ct_eq(&candidate)) {
                found = Some(match found {
                    None => k.scope.clone(),
                    Some(s) => s.union(&k.scope),
                });
            }
        }
        found
    }
}

/// The hash of `key` when it is of the documented form.
pub fn hash_if_valid(key: &str) -> Option<[u8; 32]> {
    well_formed(key).then(|| hash(key))
}

/// Whether `value` has the form of an API key (rather than a token).
pub fn well_formed(key: &str) -> bool {
    let rest = key
        .strip_prefix("hs_live_")
        .or_else(|| key.strip_prefix("hs_test_"));
    rest.is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// SHA-256 of `value` (how keys and tokens are remembered).
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Whether `secret` carries the label `hookstream.io/api-key=true`.
pub fn is_key_secret(secret: &Secret) -> bool {
    secret.labels().get(LABEL).is_some_and(|v| v == "true")
}

/// The keys of a key Secret (its `data` and `stringData` values that are well-formed keys),
/// scoped by its namespaces annotation. Other values are skipped with a warning that names
/// where they are, never what they hold.
pub fn keys_of_secret(secret: &Secret) -> Vec<ScopedKey> {
    let scope = Scope::from_annotation(
        secret
            .annotations()
            .get(NAMESPACES_ANNOTATION)
            .map(String::as_str),
    );
    let data = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k, v.0.as_slice()));
    let string_data = secret
        .string_data
        .iter()
        .flatten()
        .map(|(k, v)| (k, v.as_bytes()));
    let mut out = Vec::new();
    for (key, value) in data.chain(string_data) {
        match std::str::from_utf8(value)
            .ok()
            .and_then(|v| hash_if_valid(v.trim()))
        {
            Some(hash) => out.push(ScopedKey {
                hash,
                scope: scope.clone(),
            }),
            None => warn!(
                secret = %secret.name_any(),
                key = %key,
                "ignoring a value that is not an API key (hs_live_ or hs_test_ and 64 hex digits)"
            ),
        }
    }
    out
}

/// The keys of every labelled Secret among `secrets`.
pub fn keys_of_secrets(secrets: &[Secret]) -> Vec<ScopedKey> {
    secrets
        .iter()
        .filter(|s| is_key_secret(s))
        .flat_map(keys_of_secret)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_keys_of_the_right_form() {
        let good = format!("hs_test_{}", "ab".repeat(32));
        let keys = ApiKeys::parse(&format!(" {good} ,")).unwrap();
        assert_eq!(keys.scope_of(&good), Some(Scope::All));
        assert_eq!(keys.scope_of(&format!("hs_live_{}", "ab".repeat(32))), None);
        assert!(matches!(
            ApiKeys::parse("hs_test_123"),
            Err(BadKey { index: 1 })
        ));
        assert!(ApiKeys::parse("").unwrap().is_empty());
    }

    #[test]
    fn the_annotation_scopes_and_a_repeated_key_sees_every_listing() {
        let shop = Scope::from_annotation(Some(" shop, billing ,"));
        assert!(shop.allows("shop") && shop.allows("billing") && !shop.allows("ops"));
        assert!(!Scope::from_annotation(Some("")).allows("shop"));
        assert!(Scope::from_annotation(None).allows("anything"));
        let key = format!("hs_test_{}", "cd".repeat(32));
        let keys = ApiKeys::default();
        keys.replace(vec![
            ScopedKey {
                hash: hash(&key),
                scope: shop,
            },
            ScopedKey {
                hash: hash(&key),
                scope: Scope::from_annotation(Some("ops")),
            },
        ]);
        let scope = keys.scope_of(&key).unwrap();
        assert!(scope.allows("ops") && scope.allows("shop") && !scope.allows("other"));
    }
}
