//! Fills a ledger with example events, for trying the CLI by hand:
//!
//! ```text
//! cargo run -p caracal-ledger --example demo -- sqlite:/tmp/demo.db 1000 /tmp/demo-keys
//! caracal merkle verify --database-url sqlite:/tmp/demo.db --public-key /tmp/demo-keys/log.vkey
//! ```
//!
//! Writes `log.pem`, `log.vkey`, `gateway.pem` and `gateway.vkey` into the key
//! directory (reusing them if present), registers the gateway, submits the
//! events in batches of 100 and sequences each batch.

use std::path::Path;

use anyhow::Context;
use caracal_ledger::batch::BatchSigner;
use caracal_ledger::event::MeteringEvent;
use caracal_ledger::keys::KeyPair;
use caracal_ledger::store::{Ledger, LedgerStore};

fn load_or_create(dir: &Path, file: &str, name: &str) -> anyhow::Result<KeyPair> {
    let pem_path = dir.join(format!("{file}.pem"));
    let key = if pem_path.exists() {
        KeyPair::from_pem(name, &std::fs::read_to_string(&pem_path)?)?
    } else {
        let key = KeyPair::generate(name)?;
        std::fs::write(&pem_path, key.to_pem())?;
        key
    };
    std::fs::write(
        dir.join(format!("{file}.vkey")),
        format!("{}\n", key.public().to_vkey()),
    )?;
    Ok(key)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, count, dir] = args.as_slice() else {
        anyhow::bail!("usage: demo DATABASE_URL COUNT KEY_DIR");
    };
    let count: u64 = count.parse().context("COUNT")?;
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir)?;
    let log = load_or_create(dir, "log", "caracal.dev/demo")?;
    let gateway = BatchSigner::new(load_or_create(dir, "gateway", "gw-node-1")?);
    let ledger = Ledger::open(url).await?;
    ledger.register_submitter(gateway.public()).await?;
    let start = ledger.entry_bound().await?;
    let mut n = start;
    while n < start + count {
        let end = (n + 100).min(start + count);
        let events: Vec<_> = (n..end).map(MeteringEvent::example).collect();
        ledger.submit(gateway.sign_events(&events)?).await?;
        ledger.sequence_pending(&log).await?;
        n = end;
    }
    let status = ledger.status().await?;
    println!(
        "{} entries; log key in {}",
        status.entries,
        dir.join("log.vkey").display()
    );
    Ok(())
}
