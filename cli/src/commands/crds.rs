//! `caracal crds`: print the CRD manifests generated from the Rust types, so a
//! user can `caracal crds | kubectl apply -f -` with exactly what this binary
//! enforces.

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    for (_, yaml) in caracal_api::crd::generated_manifests()? {
        print!("---\n{yaml}");
    }
    Ok(())
}
