//! Every sample manifest parses and compiles without a single error.

use std::path::Path;

use hookstream_crds::compiler::{compile, Objects};
use hookstream_crds::manifest::parse_into;

#[test]
fn samples_compile_cleanly() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/samples"));
    let mut objects = Objects::default();
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            files += 1;
            let errors = parse_into(
                &mut objects,
                &path.display().to_string(),
                &std::fs::read_to_string(&path).unwrap(),
            );
            assert!(errors.is_empty(), "{errors:#?}");
        }
    }
    assert!(files >= 3, "samples folder has only {files} files");
    let compiled = compile(&objects);
    assert!(compiled.errors.is_empty(), "{:#?}", compiled.errors);
    assert!(!compiled.config.sources.is_empty());
    assert_eq!(compiled.config.destinations.len(), 2);
    assert!(compiled
        .config
        .connections
        .iter()
        .any(|c| !c.filters.is_empty()));
    assert!(compiled
        .config
        .connections
        .iter()
        .any(|c| c.transform.is_some()));
    assert!(compiled
        .config
        .sources
        .iter()
        .any(|s| s.verification.is_some()));
}

/// Every example in `config/examples`, loaded beside the samples (they name the samples'
/// Source), compiles without an error.
#[test]
fn examples_compile_beside_the_samples() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut objects = Objects::default();
    let mut examples = 0;
    for folder in ["config/samples", "config/examples"] {
        for entry in std::fs::read_dir(root.join(folder)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                examples += usize::from(folder.ends_with("examples"));
                let errors = parse_into(
                    &mut objects,
                    &path.display().to_string(),
                    &std::fs::read_to_string(&path).unwrap(),
                );
                assert!(errors.is_empty(), "{errors:#?}");
            }
        }
    }
    assert!(examples >= 1, "no examples");
    let compiled = compile(&objects);
    assert!(compiled.errors.is_empty(), "{:#?}", compiled.errors);
}
