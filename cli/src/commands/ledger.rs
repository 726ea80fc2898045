//! `caracal ledger`: read metering events back out of the ledger (query,
//! summaries, export). Reading does not verify; `caracal merkle verify` does.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use caracal_api::Micros;
use caracal_ledger::event::MeteringEvent;
use caracal_ledger::export::write_export;
use caracal_ledger::store::LedgerStore;
use chrono::{DateTime, Utc};

use super::merkle::{Db, parse_time, runtime};

#[derive(Debug, clap::Args)]
#[command(about = "Query, summarise and export the metering events in the ledger")]
pub struct Args {
    #[command(subcommand)]
    command: LedgerCommand,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GroupBy {
    Agent,
    Model,
    Provider,
    Day,
}

#[derive(Debug, clap::Subcommand)]
enum LedgerCommand {
    /// List one agent's events, oldest first.
    Query {
        #[command(flatten)]
        db: Db,
        /// The agent, as NAMESPACE/NAME.
        #[arg(long, value_name = "NS/NAME", value_parser = parse_agent)]
        agent: String,
        /// Only events at or after this time (RFC 3339 or YYYY-MM-DD, UTC).
        #[arg(long, value_name = "T", value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Only events before this time.
        #[arg(long, value_name = "T", value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Total requests, tokens and cost, grouped.
    Summary {
        #[command(flatten)]
        db: Db,
        /// Only this agent (NAMESPACE/NAME).
        #[arg(long, value_name = "NS/NAME", value_parser = parse_agent)]
        agent: Option<String>,
        /// What to group by.
        #[arg(long, value_enum, default_value = "agent")]
        by: GroupBy,
    },
    /// Write every entry, checkpoint, batch and key to a file for offline verification.
    #[command(
        long_about = "Write the whole log as JSON Lines: entries with their index and exact bytes \
        (base64), every signed checkpoint note, every gateway batch signature, and the public keys. \
        Anyone with the log's public key can then run `caracal merkle verify --export FILE --public-key KEYFILE` \
        without database access."
    )]
    Export {
        #[command(flatten)]
        db: Db,
        /// Output file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

fn parse_agent(s: &str) -> Result<String, String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(s.to_string())
        }
        _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match args.command {
            LedgerCommand::Query {
                db,
                agent,
                since,
                until,
                output,
            } => {
                let ledger = db.open().await?;
                let rows = ledger.entries_matching(Some(&agent), since, until).await?;
                let mut events = Vec::with_capacity(rows.len());
                for r in &rows {
                    let e = MeteringEvent::decode(&r.leaf)
                        .with_context(|| format!("entry {} does not decode", r.index))?;
                    events.push((r.index, e));
                }
                match output {
                    Output::Json => print_json(&rows)?,
                    Output::Table => print_table(&events)?,
                }
                Ok(())
            }
            LedgerCommand::Summary { db, agent, by } => {
                let ledger = db.open().await?;
                let rows = ledger
                    .entries_matching(agent.as_deref(), None, None)
                    .await?;
                let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
                for r in &rows {
                    let e = MeteringEvent::decode(&r.leaf)
                        .with_context(|| format!("entry {} does not decode", r.index))?;
                    groups.entry(group_key(&e, by)).or_default().add(&e)?;
                }
                print_summary(by, &groups)?;
                Ok(())
            }
            LedgerCommand::Export { db, out } => {
                let ledger = db.open().await?;
                let file = std::fs::File::create(&out)
                    .with_context(|| format!("creating {}", out.display()))?;
                let mut writer = std::io::BufWriter::new(file);
                let n = write_export(&ledger, &mut writer).await?;
                eprintln!("wrote {n} entries to {}", out.display());
                Ok(())
            }
        }
    })
}

/// Prints `[{"index":N,"event":<the stored canonical JSON, byte for byte>}, ...]`.
fn print_json(rows: &[caracal_ledger::store::EntryRecord]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "[")?;
    for (n, r) in rows.iter().enumerate() {
        let sep = if n + 1 == rows.len() { "" } else { "," };
        write!(out, "{{\"index\":{},\"event\":", r.index)?;
        out.write_all(&r.leaf)?;
        writeln!(out, "}}{sep}")?;
    }
    writeln!(out, "]")?;
    Ok(())
}

fn print_table(events: &[(u64, MeteringEvent)]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:>8}  {:<27}  {:<10}  {:<24}  {:<14}  {:>9}  {:>9}  {:>12}",
        "INDEX", "TIME", "PROVIDER", "MODEL/TOOL", "OUTCOME", "IN", "OUT", "COST USD"
    )?;
    for (index, e) in events {
        let target = e.model.as_deref().or(e.tool.as_deref()).unwrap_or("-");
        writeln!(
            out,
            "{:>8}  {:<27}  {:<10}  {:<24}  {:<14}  {:>9}  {:>9}  {:>12}",
            index,
            e.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            e.provider,
            target,
            e.outcome.as_str(),
            e.tokens.input,
            e.tokens.output,
            format!("{:#}", e.cost)
        )?;
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Totals {
    requests: u64,
    denied: u64,
    input: u64,
    output: u64,
    cost: Micros,
}

impl Totals {
    /// Count one event. Token counts are whatever the provider reported
    /// (any `u64`), so every sum is checked: a total that does not fit is
    /// an error, never a wrapped number.
    fn add(&mut self, e: &MeteringEvent) -> anyhow::Result<()> {
        let denied = u64::from(e.outcome == caracal_ledger::event::Outcome::Denied);
        self.merge(&Totals {
            requests: 1,
            denied,
            input: e.tokens.input,
            output: e.tokens.output,
            cost: e.cost,
        })
    }

    /// Add another group's totals.
    fn merge(&mut self, other: &Totals) -> anyhow::Result<()> {
        let sum = |a: u64, b: u64, what: &str| {
            a.checked_add(b)
                .with_context(|| format!("the {what} total does not fit in 64 bits"))
        };
        *self = Totals {
            requests: sum(self.requests, other.requests, "request")?,
            denied: sum(self.denied, other.denied, "denied-request")?,
            input: sum(self.input, other.input, "input-token")?,
            output: sum(self.output, other.output, "output-token")?,
            cost: self
                .cost
                .checked_add(other.cost)
                .context("the cost total does not fit in 64 bits of micro-dollars")?,
        };
        Ok(())
    }
}

fn group_key(e: &MeteringEvent, by: GroupBy) -> String {
    match by {
        GroupBy::Agent => e.agent.to_string(),
        GroupBy::Model => e
            .model
            .clone()
            .or_else(|| e.tool.clone().map(|t| format!("tool:{t}")))
            .unwrap_or_else(|| "-".into()),
        GroupBy::Provider => e.provider.clone(),
        GroupBy::Day => e.time.format("%Y-%m-%d").to_string(),
    }
}

fn print_summary(by: GroupBy, groups: &BTreeMap<String, Totals>) -> anyhow::Result<()> {
    // The total first: a total that does not fit fails before any output.
    let mut total = Totals::default();
    for t in groups.values() {
        total.merge(t)?;
    }
    let title = format!("{by:?}").to_uppercase();
    println!(
        "{:<32}  {:>9}  {:>7}  {:>12}  {:>12}  {:>14}",
        title, "REQUESTS", "DENIED", "IN", "OUT", "COST USD"
    );
    for (key, t) in groups.iter().chain([(&"TOTAL".to_owned(), &total)]) {
        println!(
            "{:<32}  {:>9}  {:>7}  {:>12}  {:>12}  {:>14}",
            key,
            t.requests,
            t.denied,
            t.input,
            t.output,
            format!("{:#}", t.cost)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_that_do_not_fit_are_errors_not_wrapped_numbers() {
        let mut huge = MeteringEvent::example(1);
        huge.tokens.input = u64::MAX;
        let mut group = Totals::default();
        group.add(&huge).unwrap();
        let err = group.add(&huge).unwrap_err().to_string();
        assert!(err.contains("input-token total"), "{err}");

        let mut dear = MeteringEvent::example(2);
        dear.cost = Micros(i64::MAX);
        let mut group = Totals::default();
        group.add(&dear).unwrap();
        assert!(group.add(&dear).is_err());

        // Groups that each fit but whose sum does not.
        let groups = BTreeMap::from([
            (
                "a".to_owned(),
                Totals {
                    output: u64::MAX,
                    ..Totals::default()
                },
            ),
            (
                "b".to_owned(),
                Totals {
                    output: 1,
                    ..Totals::default()
                },
            ),
        ]);
        assert!(print_summary(GroupBy::Agent, &groups).is_err());
    }
}
