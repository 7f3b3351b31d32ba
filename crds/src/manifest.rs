//! Reading manifests: YAML or JSON text with one or more documents, as `kubectl apply` takes.
//!
//! Pure parsing: the caller reads the files. Documents of kinds hookstream does not know are
//! errors (a typo in `kind` must not silently drop routing), except `v1` objects other than
//! Secrets, which are skipped so that a folder shared with other manifests still loads.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::compiler::{ConfigError, Objects, Reason, DEFAULT_NAMESPACE};
use crate::config::ObjectKey;
use crate::v1alpha1::{AlertRule, Connection, Destination, Source, Topic};

const API_VERSION: &str = "hookstream.io/v1alpha1";
/// The name errors give a document whose name cannot be read.
const UNNAMED: &str = "<unnamed>";

/// Parses every document of `text` into `objects`. `origin` (a file path) is put on errors.
/// Returns the errors found; documents without errors are still added.
pub fn parse_into(objects: &mut Objects, origin: &str, text: &str) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let at = format!("{origin} (document {})", index + 1);
        let value = match serde_yaml::Value::deserialize(document) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                errors.push(document_error(
                    &at,
                    "",
                    None,
                    "",
                    format!("is not valid YAML: {e}"),
                ));
                // The parser cannot resynchronise after a syntax error: it would report the
                // same error for every following document, without end.
                break;
            }
        };
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_owned();
        let api_version = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_owned();
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or(UNNAMED)
            .to_owned();
        let namespace = value
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(|n| n.as_str())
            .map(str::to_owned);
        let named = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .is_some_and(|n| !n.is_empty());
        let result = match (api_version.as_str(), kind.as_str()) {
            // Errors and routes are keyed by name: a nameless object could be neither.
            (API_VERSION, "Source" | "Destination" | "Connection" | "Topic" | "AlertRule")
            | ("v1", "Secret")
                if !named =>
            {
                Err("metadata.name is required: every object needs a name".to_owned())
            }
            (API_VERSION, "Source") => decode(value, false).map(|o: Source| {
                objects.sources.push(remember(&mut objects.origins, "Source", origin, o))
            }),
            (API_VERSION, "Destination") => decode(value, false).map(|o: Destination| {
                objects.destinations.push(remember(&mut objects.origins, "Destination", origin, o))
            }),
            (API_VERSION, "Connection") => decode(value, false).map(|o: Connection| {
                objects.connections.push(remember(&mut objects.origins, "Connection", origin, o))
            }),
            (API_VERSION, "Topic") => decode(value, false).map(|o: Topic| {
                objects.topics.push(remember(&mut objects.origins, "Topic", origin, o))
            }),
            (API_VERSION, "AlertRule") => decode(value, false).map(|o: AlertRule| {
                objects.alert_rules.push(remember(&mut objects.origins, "AlertRule", origin, o))
            }),
            ("v1", "Secret") => decode(value, true).map(|o: k8s_openapi::api::core::v1::Secret| {
                objects.secrets.push(remember(&mut objects.origins, "Secret", origin, o))
            }),
            ("v1", _) => Ok(()),
            (API_VERSION, other) => Err(format!(
                "unknown kind {other:?}: hookstream.io/v1alpha1 has Source, Destination, Connection, Topic and AlertRule"
            )),
            ("", _) | (_, "") => Err("is not a Kubernetes object: apiVersion and kind are required".to_owned()),
            (other_version, other_kind) => Err(format!("{other_version} {other_kind} is not a kind hookstream reads")),
        };
        if let Err(message) = result {
            errors.push(document_error(
                &at,
                &kind,
                namespace.as_deref(),
                &name,
                message,
            ));
        }
    }
    errors
}

/// Decodes one document. Unknown fields are errors, as with `kubectl apply`'s strict field
/// validation: a misspelt field must not silently change routing.
fn decode<T: serde::de::DeserializeOwned>(
    value: serde_yaml::Value,
    redact: bool,
) -> Result<T, String> {
    let mut unknown = Vec::new();
    let checked: Result<T, _> = serde_ignored::deserialize(value.clone(), |path| {
        // `?` marks an optional value in serde_ignored's paths; users write no such step.
        let path = path.to_string().replace(".?", "").replace("?.", "");
        // Type information is read before decoding and not kept as a field.
        if path != "apiVersion" && path != "kind" {
            unknown.push(path);
        }
    });
    match checked {
        Ok(object) if unknown.is_empty() => Ok(object),
        Ok(_) => Err(unknown
            .iter()
            .map(|path| format!("{path}: unknown field (check its spelling and nesting)"))
            .collect::<Vec<_>>()
            .join("; ")),
        // Decode again to learn the path of the bad value.
        Err(_) => match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(object) => Ok(object),
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let reason = if redact {
                    // serde's messages quote the offending value: never one of a Secret.
                    "invalid value (not shown: it belongs to a Secret); values go under data (base64) or stringData (text)".to_owned()
                } else {
                    inner.to_string()
                };
                Err(if path == "." {
                    reason
                } else {
                    format!("{path}: {reason}")
                })
            }
        },
    }
}

/// Puts objects without a namespace in `default` and records the file each came from.
fn remember<K: kube::ResourceExt>(
    origins: &mut BTreeMap<(String, ObjectKey), String>,
    kind: &str,
    origin: &str,
    mut object: K,
) -> K {
    let namespace = object
        .meta_mut()
        .namespace
        .get_or_insert_with(|| DEFAULT_NAMESPACE.to_owned())
        .clone();
    origins.insert(
        (
            kind.to_owned(),
            ObjectKey::new(namespace, object.name_any()),
        ),
        origin.to_owned(),
    );
    object
}

fn document_error(
    origin: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    message: String,
) -> ConfigError {
    ConfigError {
        kind: if kind.is_empty() {
            "document".to_owned()
        } else {
            kind.to_owned()
        },
        object: ObjectKey::new(
            namespace.unwrap_or(DEFAULT_NAMESPACE),
            if name.is_empty() { UNNAMED } else { name },
        ),
        field: "(parse)".to_owned(),
        reason: Reason::InvalidSpec,
        message,
        origin: Some(origin.to_owned()),
    }
}
