//! Writes the files generated from the CRD types: the manifests (`crds/*.yaml`,
//! copied into the Helm chart's `charts/caracal/crds/`) and the reference
//! (`docs/reference/crds.md`). With a directory argument,
//! writes all of them flat into that directory instead (used by the check
//! that the committed copies are current).

use std::{env, fs, path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let out = env::args().nth(1).map(PathBuf::from);
    let (crd_dir, doc_dir) = match &out {
        Some(dir) => (dir.clone(), dir.clone()),
        None => (PathBuf::from("crds"), PathBuf::from("docs/reference")),
    };
    let manifests = match caracal_api::crd::generated_manifests() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    for (file, yaml) in manifests {
        if out.is_none() {
            files.push((
                PathBuf::from("charts/caracal/crds").join(file),
                yaml.clone(),
            ));
        }
        files.push((crd_dir.join(file), yaml));
    }
    files.push((
        doc_dir.join("crds.md"),
        caracal_api::crd::generated_reference(),
    ));
    for (path, text) in files {
        if let Some(parent) = path.parent() {
            let _ = fs::create_dir_all(parent);
        }
        if let Err(e) = fs::write(&path, text) {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
