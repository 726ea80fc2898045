//! The command line's parsing and dispatch, shared by the `caracal` and
//! `kubectl-caracal` binaries (the latter makes `kubectl caracal ...` work as a
//! kubectl plugin).

pub mod commands;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "caracal",
    version,
    about = "Spend control and metering for AI agents",
    long_about = "Caracal enforces spending limits on AI agents' calls to model providers and MCP \
                  servers, and records every decision in a verifiable ledger.\n\n\
                  Also installed as `kubectl-caracal`, so every command works as `kubectl caracal ...`."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the custom resource definitions (Agent, Policy, Delegation) as YAML.
    Crds(commands::crds::Args),
    /// Run the gateway, policy engine and ledger on this machine, with no cluster.
    Dev(commands::dev::Args),
    /// Inspect and verify the ledger's Merkle log: status, verify, prove, consistency.
    Merkle(commands::merkle::Args),
    /// Query, summarise and export metering events from the ledger.
    Ledger(commands::ledger::Args),
}

/// Parse the process arguments and run the chosen command.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds(args) => commands::crds::run(args),
        Command::Dev(args) => commands::dev::run(args),
        Command::Merkle(args) => commands::merkle::run(args),
        Command::Ledger(args) => commands::ledger::run(args),
    }
}
