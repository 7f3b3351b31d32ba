//! Writes the CRD YAML of every hookstream kind to `crds/manifests/` and the chart's copy to
//! `charts/hookstream/templates/crds/`.

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifests = root.join("crds/manifests");
    let chart = root.join("charts/hookstream/templates/crds");
    std::fs::create_dir_all(&manifests)?;
    std::fs::create_dir_all(&chart)?;
    let crds = hookstream_crds::crdgen::crds()?;
    let mut names = Vec::new();
    for (file, yaml) in &crds {
        std::fs::write(manifests.join(file), yaml)?;
        std::fs::write(
            chart.join(file),
            hookstream_crds::crdgen::chart_template(yaml),
        )?;
        names.push(file.clone());
    }
    std::fs::write(
        manifests.join("kustomization.yaml"),
        hookstream_crds::crdgen::kustomization(&names),
    )?;
    println!(
        "wrote {} CRDs to {} and {}",
        crds.len(),
        manifests.display(),
        chart.display()
    );
    Ok(())
}
