//! `caracal`: the Caracal command line (see `caracal --help`).

fn main() -> anyhow::Result<()> {
    caracal_cli::main()
}
