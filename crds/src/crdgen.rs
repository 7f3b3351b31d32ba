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
            serde_yaml::to_string(&crd).map(|yaml| (file, yaml))
        })
        .collect()
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

/// The `kustomization.yaml` listing the CRD files, so `config/crd` can include the folder.
pub fn kustomization(files: &[String]) -> String {
    let mut out = String::from(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
    );
    for file in files {
        out.push_str("  - ");
        out.push_str(file);
        out.push('\n');
    }
    out
}
