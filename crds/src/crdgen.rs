//! CRD generation: the YAML of every kind, from the Rust types.
//!
//! The `crdgen` binary writes these files; a test regenerates them in memory and fails when a
//! committed copy is stale.

use kube::CustomResourceExt;

use crate::v1alpha1::{AlertRule, Connection, Destination, Source, Topic};

/// Command that rewrites the committed CRD YAML.
pub const REGENERATE: &str = "cargo run -p hookstream-crds --bin crdgen";

/// `(file name, YAML)` for each kind, named `<group>_<plural>.yaml`.
pub fn crds() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    let all = [
        Source::crd(),
        Destination::crd(),
        Connection::crd(),
        Topic::crd(),
        AlertRule::crd(),
    ];
    all.into_iter()
        .map(|crd| {
            let file = format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural);
            let mut value = serde_json::to_value(&crd)
                .map_err(<serde_yaml::Error as serde::ser::Error>::custom)?;
            signed_integer_formats(&mut value);
            serde_yaml::to_string(&value).map(|yaml| (file, yaml))
        })
        .collect()
}

/// Rewrites the `uint32`/`uint64` formats schemars gives unsigned fields to the `int32`/`int64`
/// formats Kubernetes knows (the `minimum: 0` beside them keeps the range); the API server
/// warns about formats it does not know.
fn signed_integer_formats(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(format)) = map.get_mut("format") {
                match format.as_str() {
                    "uint8" | "uint16" | "uint32" | "int8" | "int16" => *format = "int32".into(),
                    "uint64" | "uint" => *format = "int64".into(),
                    _ => {}
                }
            }
            map.values_mut().for_each(signed_integer_formats);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(signed_integer_formats),
        _ => {}
    }
}

/// The chart's copy of a CRD: the same YAML behind the `crds.install` toggle, kept on
/// uninstall so that deleting the release never deletes users' objects.
pub fn chart_template(yaml: &str) -> String {
    let annotated = yaml.replacen(
        "metadata:\n",
        "metadata:\n  annotations:\n    helm.sh/resource-policy: keep\n",
        1,
    );
    format!("{{{{- if .Values.crds.install }}}}\n{annotated}{{{{- end }}}}\n")
}

/// Folder (from the repository root) of the kustomize copy of the CRDs.
pub const KUSTOMIZE_BASES: &str = "config/crd/bases";

/// `config/crd/kustomization.yaml`: the CRD files under `bases/`.
pub fn kustomization(files: &[String]) -> String {
    let mut out = String::from(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
    );
    for file in files {
        out.push_str("  - bases/");
        out.push_str(file);
        out.push('\n');
    }
    out
}
