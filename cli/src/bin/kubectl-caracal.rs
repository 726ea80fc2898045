//! `kubectl-caracal`: the same command line as `caracal`, named so kubectl
//! finds it as a plugin (`kubectl caracal ...`).

fn main() -> anyhow::Result<()> {
    caracal_cli::main()
}
