//! Writes the CRD manifests generated from the Rust types into a directory
//! (default `crds/`). A test in this crate fails when the committed files
//! differ from what the types generate.

use std::{env, fs, path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let dir = PathBuf::from(env::args().nth(1).unwrap_or_else(|| "crds".into()));
    let manifests = match caracal_api::crd::generated_manifests() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (file, yaml) in manifests {
        let path = dir.join(file);
        if let Err(e) = fs::write(&path, yaml) {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
