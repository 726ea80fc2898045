//! `caracal`: the Caracal command line (see `caracal --help`).

/// mimalloc instead of the system allocator: the gateway allocates and frees
/// small buffers on every request, and glibc's malloc was about a tenth of
/// its CPU under load (docs/benchmarks.md, Gateway).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    caracal_cli::main()
}
