//! The committed `crds/*.yaml` must be exactly what the types generate.

use std::{fs, path::Path};

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let mut stale = Vec::new();
    for (file, generated) in caracal_api::crd::generated_manifests().expect("CRDs render") {
        let committed = fs::read_to_string(dir.join(file)).unwrap_or_default();
        if committed != generated {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "crds/{stale:?} are stale; run `cargo run -p caracal-api --bin crdgen` and commit the result"
    );
}

#[test]
fn every_kind_is_namespaced_with_status_and_short_names() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    for file in ["agent.yaml", "policy.yaml", "delegation.yaml"] {
        let text = fs::read_to_string(dir.join(file)).expect("CRD file exists");
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
