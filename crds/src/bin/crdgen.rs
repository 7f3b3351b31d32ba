//! Writes the CRD YAML of every hookstream kind to `crds/manifests/`, the kustomize copy to
//! `config/crd/bases/` and the chart's copy to `charts/hookstream/templates/crds/`.

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifests = root.join("crds/manifests");
    let chart = root.join("charts/hookstream/templates/crds");
    let bases = root.join(hookstream_crds::crdgen::KUSTOMIZE_BASES);
    for dir in [&manifests, &chart, &bases] {
        std::fs::create_dir_all(dir)?;
    }
    let crds = hookstream_crds::crdgen::crds()?;
    let mut names = Vec::new();
    for (file, yaml) in &crds {
        std::fs::write(manifests.join(file), yaml)?;
        std::fs::write(bases.join(file), yaml)?;
        std::fs::write(
            chart.join(file),
            hookstream_crds::crdgen::chart_template(yaml),
        )?;
        names.push(file.clone());
    }
    std::fs::write(
        root.join("config/crd/kustomization.yaml"),
        hookstream_crds::crdgen::kustomization(&names),
    )?;
    println!(
        "wrote {} CRDs to {}, {} and {}",
        crds.len(),
        manifests.display(),
        bases.display(),
        chart.display()
    );
    Ok(())
}
