//! A bad edit never stops traffic: an object that was valid keeps being served in its last
//! valid version while an edit breaks it, until the edit is fixed or the object is deleted.
//! Valid edits to other objects take effect meanwhile; an object that was never valid is not
//! served.
//!
//! [`compile_serving`] compiles the current objects, puts back the last valid version of each
//! object whose own spec or references are now broken (same uid: a deleted and re-created
//! object starts afresh), compiles again, and remembers which version of each object is
//! valid for the next round ([`LastValid`], serializable so that it survives a restart of the
//! operator). A Connection that only fails because a Destination or Source it references is
//! broken is not broken itself: it is served with the referenced object's last valid version.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use super::{compile, key_of, Compilation, ConfigError, Objects, Reason};
use crate::config::ObjectKey;
use crate::v1alpha1::{AlertRule, Connection, Destination, Source, Topic};

/// The last valid version of each object, by `namespace/name`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastValid {
    /// Sources.
    #[serde(default)]
    pub sources: BTreeMap<String, Source>,
    /// Destinations.
    #[serde(default)]
    pub destinations: BTreeMap<String, Destination>,
    /// Connections.
    #[serde(default)]
    pub connections: BTreeMap<String, Connection>,
    /// Topics.
    #[serde(default)]
    pub topics: BTreeMap<String, Topic>,
    /// Alert rules.
    #[serde(default)]
    pub alert_rules: BTreeMap<String, AlertRule>,
}

/// What is served, and why.
#[derive(Clone, Debug, Default)]
pub struct Served {
    /// The config to serve, and each object's own current problems (an object served in an
    /// earlier version has errors here too: its current version's).
    pub compilation: Compilation,
    /// Objects served in an earlier version: kind and key to the generation served.
    pub from_last_valid: BTreeMap<(String, ObjectKey), Option<i64>>,
    /// The last valid versions, for the next round.
    pub last_valid: LastValid,
}

impl Served {
    /// The generation of `kind` `key` being served: its own when valid, an earlier one when
    /// its current version is broken, `None` when it is not served at all.
    pub fn serving_generation(
        &self,
        kind: &str,
        key: &ObjectKey,
        generation: Option<i64>,
    ) -> Option<Option<i64>> {
        if let Some(served) = self.from_last_valid.get(&(kind.to_owned(), key.clone())) {
            return Some(*served);
        }
        let broken = self.compilation.errors_for(kind, key).next().is_some();
        (!broken && kind != "AlertRule").then_some(generation)
    }
}

/// A problem that lies in another object (it would go away if that object were served).
fn elsewhere(e: &ConfigError) -> bool {
    matches!(
        e.reason,
        Reason::SourceNotReady | Reason::DestinationNotReady
    )
}

/// Compiles `objects`, serving the last valid version of each broken object from `last`.
pub fn compile_serving(objects: &Objects, last: &LastValid) -> Served {
    let first = compile(objects);
    let broken: BTreeSet<(String, ObjectKey)> = first
        .errors
        .iter()
        .filter(|e| !elsewhere(e))
        .map(|e| (e.kind.clone(), e.object.clone()))
        .collect();
    let mut serving = objects.clone();
    let mut from_last = BTreeMap::new();
    restore(
        "Source",
        &mut serving.sources,
        &last.sources,
        &broken,
        &mut from_last,
    );
    restore(
        "Destination",
        &mut serving.destinations,
        &last.destinations,
        &broken,
        &mut from_last,
    );
    restore(
        "Connection",
        &mut serving.connections,
        &last.connections,
        &broken,
        &mut from_last,
    );
    restore(
        "Topic",
        &mut serving.topics,
        &last.topics,
        &broken,
        &mut from_last,
    );
    restore(
        "AlertRule",
        &mut serving.alert_rules,
        &last.alert_rules,
        &broken,
        &mut from_last,
    );
    let last_round = if from_last.is_empty() {
        first.clone()
    } else {
        compile(&serving)
    };
    // An earlier version that no longer compiles (its Secret is gone) is not served either.
    from_last.retain(|(kind, key), _| last_round.errors_for(kind, key).next().is_none());
    let mut errors: Vec<ConfigError> = first
        .errors
        .iter()
        .filter(|e| broken.contains(&(e.kind.clone(), e.object.clone())))
        .cloned()
        .collect();
    errors.extend(
        last_round
            .errors
            .iter()
            .filter(|e| !broken.contains(&(e.kind.clone(), e.object.clone())))
            .cloned(),
    );
    let valid = |kind: &str, key: &ObjectKey| {
        let id = (kind.to_owned(), key.clone());
        !broken.contains(&id) && last_round.errors_for(kind, key).next().is_none()
    };
    let next = LastValid {
        sources: remember(
            "Source",
            &objects.sources,
            &last.sources,
            &valid,
            &from_last,
        ),
        destinations: remember(
            "Destination",
            &objects.destinations,
            &last.destinations,
            &valid,
            &from_last,
        ),
        connections: remember(
            "Connection",
            &objects.connections,
            &last.connections,
            &valid,
            &from_last,
        ),
        topics: remember("Topic", &objects.topics, &last.topics, &valid, &from_last),
        alert_rules: remember(
            "AlertRule",
            &objects.alert_rules,
            &last.alert_rules,
            &valid,
            &from_last,
        ),
    };
    Served {
        compilation: Compilation {
            config: last_round.config,
            errors,
        },
        from_last_valid: from_last,
        last_valid: next,
    }
}

/// Puts the last valid version in place of each broken object that has one (the same
/// object: same uid).
fn restore<K: ResourceExt + Clone>(
    kind: &str,
    items: &mut [K],
    last: &BTreeMap<String, K>,
    broken: &BTreeSet<(String, ObjectKey)>,
    from_last: &mut BTreeMap<(String, ObjectKey), Option<i64>>,
) {
    for item in items.iter_mut() {
        let key = key_of(item);
        let id = (kind.to_owned(), key);
        if !broken.contains(&id) {
            continue;
        }
        let Some(previous) = last.get(&id.1.to_string()) else {
            continue;
        };
        if previous.uid() != item.uid() {
            continue;
        }
        from_last.insert(id, previous.meta().generation);
        *item = previous.clone();
    }
}

/// The last valid versions after this round: current versions that are valid, and earlier
/// ones still served.
fn remember<K: ResourceExt + Clone>(
    kind: &str,
    items: &[K],
    last: &BTreeMap<String, K>,
    valid: &impl Fn(&str, &ObjectKey) -> bool,
    from_last: &BTreeMap<(String, ObjectKey), Option<i64>>,
) -> BTreeMap<String, K> {
    let mut out = BTreeMap::new();
    for item in items {
        let key = key_of(item);
        if valid(kind, &key) {
            out.insert(key.to_string(), strip(item.clone()));
        } else if from_last.contains_key(&(kind.to_owned(), key.clone())) {
            if let Some(previous) = last.get(&key.to_string()) {
                out.insert(key.to_string(), previous.clone());
            }
        }
    }
    out
}

/// Only what compiling needs is kept: no status or managed fields.
fn strip<K: ResourceExt>(mut item: K) -> K {
    let meta = item.meta_mut();
    meta.managed_fields = None;
    meta.resource_version = None;
    item
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_into;

    fn objects(yaml: &str) -> Objects {
        let mut objects = Objects::default();
        let errors = parse_into(&mut objects, "test.yaml", yaml);
        assert!(errors.is_empty(), "{errors:?}");
        objects
    }

    fn route(url: &str, transform: &str) -> String {
        format!(
            "apiVersion: hookstream.io/v1alpha1\nkind: Source\nmetadata: {{name: in, namespace: a}}\nspec: {{}}\n---\napiVersion: hookstream.io/v1alpha1\nkind: Destination\nmetadata: {{name: out, namespace: a}}\nspec: {{type: http, http: {{url: \"{url}\"}}}}\n---\napiVersion: hookstream.io/v1alpha1\nkind: Connection\nmetadata: {{name: c, namespace: a}}\nspec: {{source: in, destination: out, transform: {{jsonata: '{transform}'}}}}\n"
        )
    }

    #[test]
    fn a_broken_edit_keeps_the_last_valid_version_and_a_fix_replaces_it() {
        let first = compile_serving(
            &objects(&route("http://x:1/", "body")),
            &LastValid::default(),
        );
        assert!(first.compilation.errors.is_empty());
        assert_eq!(first.compilation.config.connections.len(), 1);

        // Break the Destination's URL and the Connection's transform.
        let broken = compile_serving(&objects(&route("not a url", "(((")), &first.last_valid);
        let kinds: BTreeSet<&str> = broken
            .compilation
            .errors
            .iter()
            .map(|e| e.kind.as_str())
            .collect();
        assert_eq!(kinds, BTreeSet::from(["Connection", "Destination"]));
        assert_eq!(
            broken.compilation.config.destinations[0]
                .http
                .as_ref()
                .unwrap()
                .url,
            "http://x:1/"
        );
        assert_eq!(
            broken.compilation.config.connections.len(),
            1,
            "still routed"
        );
        assert_eq!(broken.from_last_valid.len(), 2);
        assert_eq!(
            serde_json::to_value(&broken.last_valid).unwrap(),
            serde_json::to_value(&first.last_valid).unwrap(),
            "the valid versions are kept"
        );

        let fixed = compile_serving(&objects(&route("http://y:2/", "body")), &broken.last_valid);
        assert!(fixed.compilation.errors.is_empty());
        assert!(fixed.from_last_valid.is_empty());
        assert_eq!(
            fixed.compilation.config.destinations[0]
                .http
                .as_ref()
                .unwrap()
                .url,
            "http://y:2/"
        );
    }

    #[test]
    fn an_object_that_was_never_valid_is_not_served() {
        let served = compile_serving(&objects(&route("not a url", "body")), &LastValid::default());
        assert!(served.compilation.config.destinations.is_empty());
        assert!(served.compilation.config.connections.is_empty());
        assert!(served.from_last_valid.is_empty());
        let key = ObjectKey::new("a", "out");
        assert_eq!(
            served.serving_generation("Destination", &key, Some(3)),
            None
        );
        let source = ObjectKey::new("a", "in");
        assert_eq!(
            served.serving_generation("Source", &source, Some(2)),
            Some(Some(2))
        );
    }
}
