//! `kubectl-caracal`: the same command line as `caracal`, named so kubectl
//! finds it as a plugin (`kubectl caracal ...`).

/// The same allocator as `caracal` (see src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    caracal_cli::main()
}
