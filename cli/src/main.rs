//! `caracal`: the Caracal command line (see `caracal --help`).

/// jemalloc rather than glibc's allocator: the gateway's request tasks move
/// between worker threads, so buffers are often freed on another thread
/// than the one that allocated them, and glibc then takes the other arena's
/// lock: half of the gateway's futex calls at saturation. See
/// docs/gateway.md, "Memory and the allocator", for the measurements.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    caracal_cli::main()
}
