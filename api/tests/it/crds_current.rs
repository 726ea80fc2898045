//! The committed generated files — `crds/*.yaml`, their copies in the Helm
//! chart, and `docs/reference/crds.md` — must be exactly what the types
//! generate. Fix a failure with `cargo run -p caracal-api --bin crdgen`.

use std::{fs, path::Path};

fn repo(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

#[test]
fn committed_generated_files_match_the_types() {
    let mut expected = Vec::new();
    for (file, yaml) in caracal_api::crd::generated_manifests().expect("CRDs render") {
        expected.push((format!("crds/{file}"), yaml.clone()));
        expected.push((format!("charts/caracal/crds/{file}"), yaml));
    }
    expected.push((
        "docs/reference/crds.md".into(),
        caracal_api::crd::generated_reference(),
    ));
    let stale: Vec<&str> = expected
        .iter()
        .filter(|(path, text)| fs::read_to_string(repo(path)).ok().as_ref() != Some(text))
        .map(|(path, _)| path.as_str())
        .collect();
    assert!(
        stale.is_empty(),
        "{stale:?} are stale; run `cargo run -p caracal-api --bin crdgen` and commit the result"
    );
}

#[test]
fn every_kind_is_namespaced_with_status_and_short_names() {
    for file in ["agent.yaml", "policy.yaml", "delegation.yaml"] {
        let text = fs::read_to_string(repo("crds").join(file)).expect("CRD file exists");
        let crd: serde_json::Value = serde_saphyr::from_str(&text).expect("CRD parses");
        assert_eq!(crd["spec"]["group"], "caracal.dev", "{file}");
        assert_eq!(crd["spec"]["scope"], "Namespaced", "{file}");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1", "{file}");
        assert!(
            version["subresources"]["status"].is_object(),
            "{file} has a status subresource"
        );
        assert!(
            !crd["spec"]["names"]["shortNames"]
                .as_array()
                .unwrap()
                .is_empty(),
            "{file}"
        );
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert!(
            columns.contains(&"Ready") || columns.contains(&"State"),
            "{file}: {columns:?}"
        );
    }
}
