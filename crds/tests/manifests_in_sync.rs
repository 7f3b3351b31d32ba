//! The committed CRD YAML (and its kustomize and chart copies) must match what the types
//! generate.

use std::path::Path;

use hookstream_crds::crdgen::{chart_template, crds, kustomization, KUSTOMIZE_BASES, REGENERATE};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn committed_crds_match_the_types() {
    let generated = crds().unwrap();
    assert_eq!(generated.len(), 5, "one CRD per kind");
    let mut stale = Vec::new();
    let mut names = Vec::new();
    for (file, yaml) in &generated {
        names.push(file.clone());
        for copy in [root().join("crds/manifests"), root().join(KUSTOMIZE_BASES)] {
            let manifest = copy.join(file);
            if std::fs::read_to_string(&manifest).ok().as_deref() != Some(yaml.as_str()) {
                stale.push(manifest.display().to_string());
            }
        }
        let chart = root().join("charts/hookstream/templates/crds").join(file);
        if std::fs::read_to_string(&chart).ok() != Some(chart_template(yaml)) {
            stale.push(chart.display().to_string());
        }
    }
    let kustomize = root().join("config/crd/kustomization.yaml");
    if std::fs::read_to_string(&kustomize).ok() != Some(kustomization(&names)) {
        stale.push(kustomize.display().to_string());
    }
    assert!(
        stale.is_empty(),
        "stale generated files (run `{REGENERATE}`):\n{}",
        stale.join("\n")
    );
}

#[test]
fn crds_carry_names_users_type() {
    let all = crds().unwrap();
    let source = &all
        .iter()
        .find(|(f, _)| f.ends_with("sources.yaml"))
        .unwrap()
        .1;
    for expected in [
        "shortNames:",
        "- hsrc",
        "categories:",
        "- hookstream",
        "subresources:",
        "status: {}",
        "x-kubernetes-list-type: map",
    ] {
        assert!(source.contains(expected), "Source CRD lacks {expected:?}");
    }
    // Field docs become `kubectl explain` text.
    assert!(source.contains("Signature verification"));
}
