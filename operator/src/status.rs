//! What an object's status should say, computed from one compilation. Pure: the controllers
//! compare the result with the object's current status and write only a difference.

use hookstream_crds::compiler::{ConfigError, Served};
use hookstream_crds::config::{ingest_path, publish_path, ObjectKey};
use hookstream_crds::v1alpha1::{
    condition, set_condition, CONDITION_ACCEPTED, CONDITION_READY, CONDITION_RESOLVED_REFS,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition reason of a valid object that the gateway config contains.
pub const REASON_PROGRAMMED: &str = "Programmed";
/// Ready reason of an object whose current generation is broken while the gateway keeps
/// serving its last valid one.
pub const REASON_LAST_VALID: &str = "LastValidGeneration";
/// Condition reason of a kind the gateway validates but does not act on yet.
pub const REASON_NOT_EVALUATED: &str = "NotEvaluated";

/// The operator-owned part of a status.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// Generation the conditions describe.
    pub observed_generation: Option<i64>,
    /// `Accepted`, `ResolvedRefs`, `Ready`.
    pub conditions: Vec<Condition>,
    /// Ingest URL (Sources) or publish URL (Topics).
    pub url: Option<String>,
}

/// What the compiler said about one object.
pub struct Verdict<'a> {
    /// Kind of the object.
    pub kind: &'a str,
    /// Its errors; empty when it is valid and routed.
    pub errors: Vec<&'a ConfigError>,
    /// Served in an earlier, valid generation (this one) while its current one is broken.
    pub last_valid: Option<Option<i64>>,
}

impl<'a> Verdict<'a> {
    /// The verdict on `kind` `key` in `served`.
    pub fn of(served: &'a Served, kind: &'a str, key: &'a ObjectKey) -> Verdict<'a> {
        Verdict {
            kind,
            errors: served.compilation.errors_for(kind, key).collect(),
            last_valid: served
                .from_last_valid
                .get(&(kind.to_owned(), key.clone()))
                .copied(),
        }
    }

    /// The generation the gateway serves, given the object's current `generation`.
    pub fn serving_generation(&self, generation: Option<i64>) -> Option<i64> {
        match self.last_valid {
            Some(served) => served,
            None if self.errors.is_empty() && self.kind != "AlertRule" => generation,
            None => None,
        }
    }
}

/// The conditions for `verdict`, starting from `current` so that transition times of
/// unchanged conditions are kept (an unchanged object yields exactly `current`).
pub fn conditions(
    verdict: &Verdict<'_>,
    generation: Option<i64>,
    current: &[Condition],
    now: &Time,
) -> Vec<Condition> {
    let (refs, spec): (Vec<&ConfigError>, Vec<&ConfigError>) =
        verdict.errors.iter().partition(|e| e.reason.is_reference());
    let mut out = current.to_vec();
    let set = |out: &mut Vec<Condition>, type_: &str, ok: bool, reason: &str, message: String| {
        set_condition(
            out,
            condition(type_, ok, reason, message, generation, now.clone()),
        );
    };
    match spec.first() {
        None => set(
            &mut out,
            CONDITION_ACCEPTED,
            true,
            "Accepted",
            "the spec is valid".to_owned(),
        ),
        Some(first) => set(
            &mut out,
            CONDITION_ACCEPTED,
            false,
            first.reason.as_str(),
            describe(&spec),
        ),
    }
    match refs.first() {
        None => set(
            &mut out,
            CONDITION_RESOLVED_REFS,
            true,
            "ResolvedRefs",
            "every referenced object exists".to_owned(),
        ),
        Some(first) => set(
            &mut out,
            CONDITION_RESOLVED_REFS,
            false,
            first.reason.as_str(),
            describe(&refs),
        ),
    }
    match verdict.errors.first() {
        Some(_) if verdict.last_valid.is_some() => set(
            &mut out,
            CONDITION_READY,
            true,
            REASON_LAST_VALID,
            format!(
                "serving generation {}, the last valid one, until this generation is fixed: {}",
                verdict
                    .last_valid
                    .flatten()
                    .map_or_else(|| "(unknown)".to_owned(), |g| g.to_string()),
                describe(&verdict.errors)
            ),
        ),
        Some(first) => set(
            &mut out,
            CONDITION_READY,
            false,
            first.reason.as_str(),
            describe(&verdict.errors),
        ),
        None if verdict.kind == "AlertRule" => set(
            &mut out,
            CONDITION_READY,
            false,
            REASON_NOT_EVALUATED,
            "the rule is valid; this gateway version validates AlertRules but does not evaluate them"
                .to_owned(),
        ),
        None => set(
            &mut out,
            CONDITION_READY,
            true,
            REASON_PROGRAMMED,
            "programmed into the gateway config".to_owned(),
        ),
    }
    out
}

/// `field: message` of each error, joined; bounded so a status stays small.
fn describe(errors: &[&ConfigError]) -> String {
    const MAX: usize = 2048;
    let mut text = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ");
    if text.len() > MAX {
        let mut cut = MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(" ...");
    }
    text
}

/// `{base}/v1/ingest/{namespace}/{name}`: `base` joined with [`ingest_path`].
pub fn ingest_url(base: &str, key: &ObjectKey) -> String {
    let path = ingest_path(&key.namespace, &key.name);
    format!("{}{path}", base.trim_end_matches('/'))
}

/// `{base}/v1/topics/{namespace}/{name}/publish`: `base` joined with [`publish_path`].
pub fn publish_url(base: &str, key: &ObjectKey) -> String {
    let path = publish_path(&key.namespace, &key.name);
    format!("{}{path}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookstream_crds::compiler::{compile_serving, LastValid, Objects};
    use hookstream_crds::manifest::parse_into;

    fn objects(yaml: &str) -> Objects {
        let mut objects = Objects::default();
        assert!(parse_into(&mut objects, "test.yaml", yaml).is_empty());
        objects
    }

    fn compiled(yaml: &str) -> Served {
        compile_serving(&objects(yaml), &LastValid::default())
    }

    #[test]
    fn a_broken_edit_of_a_served_object_stays_ready_on_its_last_valid_generation() {
        let destination = |url: &str| {
            format!("apiVersion: hookstream.io/v1alpha1\nkind: Destination\nmetadata: {{name: backend, namespace: shop, generation: 4}}\nspec: {{type: http, http: {{url: '{url}'}}}}\n")
        };
        let good = compiled(&destination("http://127.0.0.1:9/"));
        let mut broken_objects = objects(&destination("not a url"));
        broken_objects.destinations[0].metadata.generation = Some(5);
        let broken = compile_serving(&broken_objects, &good.last_valid);
        let key = ObjectKey::new("shop", "backend");
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let verdict = Verdict::of(&broken, "Destination", &key);
        let out = conditions(&verdict, Some(5), &[], &now);
        let ready = find(&out, CONDITION_READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", REASON_LAST_VALID)
        );
        assert!(
            ready.message.contains("serving generation 4"),
            "{}",
            ready.message
        );
        assert_eq!(find(&out, CONDITION_ACCEPTED).status, "False");
        assert_eq!(verdict.serving_generation(Some(5)), Some(4));
        let never = compiled(&destination("not a url"));
        let verdict = Verdict::of(&never, "Destination", &key);
        assert_eq!(
            find(&conditions(&verdict, Some(1), &[], &now), CONDITION_READY).status,
            "False"
        );
        assert_eq!(verdict.serving_generation(Some(1)), None);
    }

    const DESTINATION: &str = "apiVersion: hookstream.io/v1alpha1\nkind: Destination\nmetadata: {name: backend, namespace: shop}\nspec: {type: http, http: {url: 'http://127.0.0.1:9/'}}\n---\n";
    const SOURCE: &str = "apiVersion: hookstream.io/v1alpha1\nkind: Source\nmetadata: {name: orders, namespace: shop}\nspec: {}\n---\n";

    fn find<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn missing_destination_is_not_ready_with_its_reason_and_the_spec_still_accepted() {
        let c = compiled(&format!(
            "{SOURCE}apiVersion: hookstream.io/v1alpha1\nkind: Connection\nmetadata: {{name: c, namespace: shop}}\nspec: {{source: orders, destination: nowhere}}\n"
        ));
        let key = ObjectKey::new("shop", "c");
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let out = conditions(&Verdict::of(&c, "Connection", &key), Some(3), &[], &now);
        let ready = find(&out, CONDITION_READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "DestinationNotFound")
        );
        assert!(ready.message.contains("shop/nowhere"), "{}", ready.message);
        assert_eq!(find(&out, CONDITION_ACCEPTED).status, "True");
        assert_eq!(
            find(&out, CONDITION_RESOLVED_REFS).reason,
            "DestinationNotFound"
        );
        assert!(out.iter().all(|c| c.observed_generation == Some(3)));
    }

    #[test]
    fn valid_object_is_programmed_and_unchanged_conditions_keep_their_time() {
        let c = compiled(&format!(
            "{SOURCE}{DESTINATION}apiVersion: hookstream.io/v1alpha1\nkind: Connection\nmetadata: {{name: c, namespace: shop}}\nspec: {{source: orders, destination: backend, transform: {{jsonata: '$$'}}}}\n"
        ));
        let key = ObjectKey::new("shop", "c");
        let earlier = Time(k8s_openapi::jiff::Timestamp::from_second(1_000_000).unwrap());
        let first = conditions(&Verdict::of(&c, "Connection", &key), Some(1), &[], &earlier);
        assert_eq!(find(&first, CONDITION_READY).reason, REASON_PROGRAMMED);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let again = conditions(&Verdict::of(&c, "Connection", &key), Some(1), &first, &now);
        assert_eq!(
            again, first,
            "re-computing an unchanged object changes nothing"
        );
    }

    #[test]
    fn invalid_transform_is_not_accepted() {
        let c = compiled(&format!(
            "{SOURCE}{DESTINATION}apiVersion: hookstream.io/v1alpha1\nkind: Connection\nmetadata: {{name: c, namespace: shop}}\nspec: {{source: orders, destination: backend, transform: {{jsonata: '{{'}}}}\n"
        ));
        let key = ObjectKey::new("shop", "c");
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let out = conditions(&Verdict::of(&c, "Connection", &key), None, &[], &now);
        assert_eq!(find(&out, CONDITION_ACCEPTED).reason, "InvalidTransform");
        assert!(find(&out, CONDITION_ACCEPTED)
            .message
            .starts_with("spec.transform"));
        assert_eq!(find(&out, CONDITION_READY).status, "False");
    }

    #[test]
    fn urls_join_the_base_without_double_slashes() {
        let key = ObjectKey::new("shop", "orders");
        assert_eq!(
            ingest_url("http://gw.svc/", &key),
            "http://gw.svc/v1/ingest/shop/orders"
        );
        assert_eq!(
            publish_url("http://gw.svc", &key),
            "http://gw.svc/v1/topics/shop/orders/publish"
        );
    }
}
