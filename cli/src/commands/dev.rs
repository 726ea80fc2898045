//! `caracal dev`: the whole data path on one machine, no cluster needed.
//!
//! Reads Agent/Policy/Delegation YAML from a directory (and reloads it when
//! files change), compiles it with the same compile step the operator uses,
//! issues each agent a virtual key into the state directory, and serves the
//! gateway with an in-process ledger sequencer and signer. Budgets live in
//! memory unless `--redis-url` is given; the ledger is SQLite in the state
//! directory unless `--database-url` is given.

use std::{
    collections::BTreeMap,
    io::IsTerminal,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use caracal_gateway::{
    config::Provider,
    ledger_sink::{SequencingSink, calm_lane_suits},
    live::{Live, LiveSender},
    mtls::TlsServer,
    proxy::Gateway,
    server,
    spool::Spool,
    standalone::{credentials, file_config::GatewayFile, manifests, token_keys},
};
use caracal_ledger::{
    batch::BatchSigner,
    keys::KeyPair,
    store::{Ledger, LedgerStore, shown_url},
};
use caracal_policy::{
    Budgets, MemoryBudgetStore, RedisBudgetStore,
    compile::{CompileInput, compile},
};

/// The gateway id on events and the name of its batch-signing key.
const GATEWAY_ID: &str = "caracal-dev";
/// The log's origin line and checkpoint key name.
const LOG_ORIGIN: &str = "caracal-dev-log";

#[derive(Debug, clap::Args)]
#[command(about = "Run the gateway, policy engine and ledger on this machine (no cluster)")]
pub struct Args {
    /// Directory of Agent, Policy and Delegation YAML files (reloaded on
    /// change). Default: STATE_DIR/manifests, seeded on first start with demo
    /// agents that use the built-in `mock` provider.
    #[arg(long, value_name = "DIR")]
    manifests: Option<PathBuf>,
    /// Providers and prices (YAML); default: a built-in `mock` provider.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: SocketAddr,
    /// Address of the TLS (mTLS) listener, overriding `tls.listen` of the
    /// config file; needs a `tls` section there.
    #[arg(long, value_name = "ADDR")]
    tls_listen: Option<SocketAddr>,
    /// Ledger database (`postgres://...` or `sqlite:PATH`); default: SQLite in the state dir.
    #[arg(long, env = "CARACAL_DATABASE_URL", value_name = "URL")]
    database_url: Option<String>,
    /// Redis for budget counters; default: in memory (lost on restart).
    #[arg(long, env = "CARACAL_REDIS_URL", value_name = "URL")]
    redis_url: Option<String>,
    /// Keys, credentials, spool and the default ledger live here.
    #[arg(long, default_value = ".state", value_name = "DIR")]
    state_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colour codes only for a terminal: a log file or pipe gets plain text.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // One JSON object per line (request id included) for log pipelines.
    if std::env::var("CARACAL_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(args))
}

/// The demo agents used when no `--manifests` directory is given.
const DEMO_MANIFESTS: &str = include_str!("../../../examples/dev/demo.yaml");

/// The manifests directory to serve: the one given, or `STATE_DIR/manifests`,
/// seeded with the demo agents when it does not exist yet (so a user can edit
/// them and watch the change reload).
fn manifests_dir(given: Option<&Path>, state_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = match given {
        // A directory that is not there is a typo more often than a plan:
        // say so now rather than serve with no agents.
        Some(dir) if !dir.is_dir() => {
            anyhow::bail!("--manifests {}: no such directory", dir.display())
        }
        Some(dir) => dir.to_path_buf(),
        None => seeded_manifests_dir(state_dir)?,
    };
    eprintln!(
        "caracal dev: serving the manifests in {} (edit them; changes reload)",
        dir.display()
    );
    Ok(dir)
}

/// `STATE_DIR/manifests`, seeded with the demo agents when it does not exist.
fn seeded_manifests_dir(state_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = state_dir.join("manifests");
    if !dir.exists() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = dir.join("demo.yaml");
        std::fs::write(&file, DEMO_MANIFESTS)
            .with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(dir)
}

/// Load the signing key `name` from `path`, creating it on first start.
fn load_or_create_key(path: &Path, name: &str) -> anyhow::Result<KeyPair> {
    match std::fs::read_to_string(path) {
        Ok(pem) => {
            return KeyPair::from_pem(name, &pem)
                .with_context(|| format!("reading key {}", path.display()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading key {}", path.display())),
    }
    let key = KeyPair::generate(name)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_private(path, key.to_pem().as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    std::fs::write(
        path.with_extension("vkey"),
        format!("{}\n", key.public().to_vkey()),
    )?;
    Ok(key)
}

/// Create `path` readable by its owner only, from the first byte (a private
/// key written with the default umask would be readable by every local
/// user), whole or not at all: written to a temporary file beside it and
/// renamed into place, so a full disk or a kill mid-write leaves no empty
/// key that would stop every later start. A `path` that exists is an error.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let temp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    // Renamed only where nothing is yet: a key made by another start
    // meanwhile is kept, and this one is an error.
    let placed = written.and_then(|()| std::fs::hard_link(&temp, path));
    let _ = std::fs::remove_file(&temp);
    placed
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => GatewayFile::load(path)?,
        None => GatewayFile::mock(),
    };
    let config_path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("<built-in mock config>"));
    let providers = file.resolve_providers(&config_path, |k| std::env::var(k).ok())?;
    let limits = file.limits(&config_path)?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    let state_dir = std::fs::canonicalize(&args.state_dir)?;

    let gateway_key = load_or_create_key(&state_dir.join("keys/gateway.pem"), GATEWAY_ID)?;
    let log_key = load_or_create_key(&state_dir.join("keys/log.pem"), LOG_ORIGIN)?;
    let database_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite:{}", state_dir.join("ledger.db").display()));
    let ledger =
        Arc::new(Ledger::open(&database_url).await.with_context(|| {
            format!("opening the ledger database {}", shown_url(&database_url))
        })?);
    ledger
        .register_submitter(gateway_key.public())
        .await
        .context("registering the gateway key")?;

    let budgets = match &args.redis_url {
        Some(url) => Budgets::new(Arc::new(
            RedisBudgetStore::connect(url, "caracal")
                .await
                .context("connecting to Redis")?,
        )),
        None => Budgets::new(Arc::new(MemoryBudgetStore::new())),
    };

    // This process is its own sequencer: each shipped batch lands in the log
    // under a signed checkpoint at once. With a SQLite ledger and
    // `spoolAck: write` that work runs at idle CPU priority while there is
    // idle CPU (docs/gateway.md, `caracal dev`).
    let spool_config = file.spool_config(state_dir.join("spool"));
    let mut sink = SequencingSink::new(
        ledger.clone(),
        BatchSigner::new(gateway_key),
        log_key.clone(),
    );
    if calm_lane_suits(&database_url, spool_config.ack_after) {
        sink = sink.with_calm_lane(&database_url).await;
    }
    let sink = Arc::new(sink);
    let spool = Spool::open(spool_config, sink.clone())?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let url = format!("http://{}", loopback_if_unspecified(listener.local_addr()?));
    let tls = tls_listener(&file, &config_path, args.tls_listen).await?;

    let (live_tx, live_rx) = caracal_gateway::live::channel();
    let jwt = file.jwt_config(&config_path)?;
    let token_file = file.clone();
    let reloader = Reloader {
        dir: manifests_dir(args.manifests.as_deref(), &state_dir)?,
        state_dir: state_dir.clone(),
        url: url.clone(),
        file,
        providers: providers.clone(),
        live: live_tx,
        version: 0,
        key_files: Vec::new(),
    };
    let mut gateway = Gateway::new(
        providers,
        live_rx,
        budgets,
        spool.clone(),
        limits,
        GATEWAY_ID,
    )?;
    if let Some(jwt) = jwt {
        gateway = gateway.with_jwt(jwt);
    }
    let gateway = Arc::new(gateway);
    if let Some(verifier) = gateway.jwt_verifier() {
        // The issuer's keys rotate; saved key files are replaced with them.
        token_keys::watch(token_file, config_path.clone(), verifier, FILES_CHECK_EVERY)?;
    }

    tokio::spawn(reloader.run());
    tokio::spawn(sequence_forever(ledger.clone(), log_key.clone()));
    println!("caracal dev: gateway listening on {url}");
    if let Some((_, _, listening)) = &tls {
        println!("caracal dev: {listening}");
    }
    println!(
        "caracal dev: agent credentials in {}/credentials/NAMESPACE/AGENT.env",
        state_dir.display()
    );
    println!("caracal dev: ledger at {database_url}");

    let drain = Duration::from_secs(10);
    // The first SIGTERM or Ctrl-C drains (below); a second one, as a user
    // who does not want to wait gives, ends the process at once. Nothing
    // acknowledged is lost: the spool is on disk and replayed on the next
    // start.
    tokio::spawn(async {
        server::shutdown_signal().await;
        server::shutdown_signal().await;
        tracing::warn!(
            "second signal: exiting without waiting for the drain; the spool is replayed on the next start"
        );
        std::process::exit(130);
    });
    let plain = server::serve(listener, gateway.clone(), server::shutdown_signal(), drain);
    let tls = async {
        match tls {
            Some((listener, tls, _)) => {
                server::serve_tls(listener, tls, gateway, server::shutdown_signal(), drain).await
            }
            None => Ok(()),
        }
    };
    let (plain, tls) = tokio::join!(plain, tls);
    plain?;
    tls?;
    tracing::info!("stopped serving; shipping the spool");
    match tokio::time::timeout(Duration::from_secs(5), spool.flush_now(sink.as_ref())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(
            error = %e,
            "the spool could not be shipped; it will be replayed on the next start"
        ),
        Err(_) => tracing::warn!(
            "the spool could not be shipped in time; it will be replayed on the next start"
        ),
    }
    if let Err(e) = ledger.sequence_pending(&log_key).await {
        tracing::warn!(error = %e, "final sequencing failed; events stay pending until the next start");
    }
    Ok(())
}

fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new([127, 0, 0, 1].into(), addr.port())
    } else {
        addr
    }
}

/// How often files that may be replaced while serving (TLS certificates,
/// CRLs, token keys) are checked for changes.
const FILES_CHECK_EVERY: Duration = Duration::from_secs(10);

/// The TLS listener of the config file's `tls` section, bound (at
/// `override_addr` if given) and ready to serve, with a line saying so.
async fn tls_listener(
    file: &GatewayFile,
    config_path: &Path,
    override_addr: Option<SocketAddr>,
) -> anyhow::Result<Option<(tokio::net::TcpListener, TlsServer, String)>> {
    let Some((listen, settings)) = file.tls_settings(config_path) else {
        anyhow::ensure!(
            override_addr.is_none(),
            "--tls-listen needs a `tls` section in the config file (certFile, keyFile, ...)"
        );
        return Ok(None);
    };
    let tls = TlsServer::new(&settings).context("setting up the TLS listener")?;
    // Certificates and CRLs are replaced on disk; pick the new ones up.
    tls.watch(FILES_CHECK_EVERY);
    let addr = override_addr.unwrap_or(listen);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr} (TLS)"))?;
    let bound = loopback_if_unspecified(listener.local_addr()?);
    let clients = match (&settings.client_ca_file, settings.require_client_cert) {
        (None, _) => "no client certificates".to_owned(),
        (Some(_), true) => format!(
            "client certificates required, trust domain {}",
            settings.trust_domain
        ),
        (Some(_), false) => format!(
            "client certificates optional, trust domain {}",
            settings.trust_domain
        ),
    };
    let crls = match settings.client_crl_files.len() {
        0 => String::new(),
        n => format!(", revocation checked against {n} CRL file(s)"),
    };
    Ok(Some((
        listener,
        tls,
        format!("TLS listening on https://{bound} ({clients}{crls})"),
    )))
}

/// The in-process sequencer's safety net. Batches from this gateway are
/// sequenced as they are shipped (`SequencingSink`); this gives log indexes
/// to anything else still queued (an earlier version's leftovers, or another
/// submitter sharing a `--database-url`), a few times a second.
async fn sequence_forever(ledger: Arc<Ledger>, key: KeyPair) {
    loop {
        // Nearly always nothing waits: one read then, instead of a
        // sequencing transaction holding the write lock four times a second.
        // A failed read sequences anyway, which reports the trouble.
        if ledger.has_pending().await.unwrap_or(true)
            && let Err(e) = ledger.sequence_pending(&key).await
        {
            tracing::warn!(error = %e, "sequencing failed; will retry");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Watches the manifest directory and publishes a new snapshot on change.
struct Reloader {
    dir: PathBuf,
    state_dir: PathBuf,
    url: String,
    file: GatewayFile,
    providers: Vec<Provider>,
    live: LiveSender,
    version: u64,
    /// Credentials files of the agents holding keys as of the last reload.
    key_files: Vec<PathBuf>,
}

impl Reloader {
    /// Polls the manifest directory every second. A change is loaded once
    /// two polls in a row agree (an editor's save or a file being written is
    /// not loaded half-done); the first poll loads at once. A reload that
    /// failed is tried again every poll (its error logged once), and a
    /// deleted credentials file of a current agent also reloads, which
    /// issues the agent a new key.
    async fn run(mut self) {
        let mut loaded = None;
        let mut seen = None;
        let mut failing: Option<String> = None;
        // The directory's last read error, logged once rather than every second.
        let mut unreadable: Option<String> = None;
        loop {
            let fingerprint = manifests::fingerprint(&self.dir);
            match (&fingerprint, unreadable.take()) {
                (Err(e), before) => {
                    let now = e.to_string();
                    if before.as_ref() != Some(&now) {
                        tracing::error!(error = %now, "cannot read the manifest directory; keeping the previous configuration");
                    }
                    unreadable = Some(now);
                }
                (Ok(_), Some(_)) => tracing::info!("the manifest directory is readable again"),
                (Ok(_), None) => {}
            }
            if let Ok(fp) = fingerprint {
                let settled = seen.as_ref() == Some(&fp) || (loaded.is_none() && seen.is_none());
                let due = loaded.as_ref() != Some(&fp) || self.a_credentials_file_is_missing();
                if settled && due {
                    match self.reload() {
                        Ok(()) => {
                            loaded = Some(fp.clone());
                            failing = None;
                        }
                        // Keep serving the last good snapshot (or none).
                        Err(e) => {
                            let now = format!("{e:#}");
                            if failing.as_ref() != Some(&now) {
                                tracing::error!(error = %now, "manifests not loaded; keeping the previous configuration (tried again every second)");
                            }
                            failing = Some(now);
                        }
                    }
                }
                seen = Some(fp);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Whether an agent of the current snapshot has no credentials file
    /// (deleted to rotate its key).
    fn a_credentials_file_is_missing(&self) -> bool {
        self.key_files.iter().any(|f| !f.exists())
    }

    fn reload(&mut self) -> anyhow::Result<()> {
        let objects = manifests::load_dir(&self.dir)?;
        let provider_names: Vec<String> = self.providers.iter().map(|p| p.name.clone()).collect();
        self.version += 1;
        let compiled = compile(&CompileInput {
            agents: &objects.agents,
            policies: &objects.policies,
            delegations: &objects.delegations,
            providers: &provider_names,
            prices: &self.file.prices,
            version: self.version,
            now: chrono::Utc::now(),
        });
        for p in &compiled.problems {
            tracing::warn!(kind = ?p.kind, object = %format!("{}/{}", p.namespace, p.name), reason = %p.reason, "{}", p.message);
        }
        // Keys only for agents that ask for one (`identity.apiKey.issue`),
        // as the operator issues them: an agent meant to use its service
        // account's token or certificate gets no key that would also work.
        let keyed: std::collections::HashSet<String> = objects
            .agents
            .iter()
            .filter(|a| a.spec.identity.api_key.as_ref().is_some_and(|k| k.issue))
            .map(|a| {
                caracal_api::snapshot::agent_id(
                    a.metadata.namespace.as_deref().unwrap_or("default"),
                    a.metadata.name.as_deref().unwrap_or_default(),
                )
            })
            .collect();
        let agents: BTreeMap<String, Vec<String>> = compiled
            .snapshot
            .agents
            .iter()
            .filter(|(id, _)| keyed.contains(*id))
            .map(|(id, e)| (id.clone(), e.providers.clone()))
            .collect();
        let keys = credentials::ensure(&self.state_dir, &self.url, &agents, &self.providers)?;
        self.key_files = agents
            .keys()
            .map(|id| credentials::file_of(&self.state_dir, id))
            .collect();
        tracing::info!(
            version = self.version,
            agents = agents.len(),
            problems = compiled.problems.len(),
            "configuration loaded"
        );
        self.live.send_replace(Arc::new(Live {
            snapshot: Some(Arc::new(compiled.snapshot)),
            keys: Arc::new(keys),
            service_accounts: Arc::new(service_accounts(&objects.agents)),
        }));
        Ok(())
    }
}

/// Token subjects of the agents that name a service account. A service
/// account named by two Agents identifies neither: which one a token or
/// certificate meant cannot be told (and suspending one must not leave its
/// pods served as the other), so it is left out and logged.
fn service_accounts(
    agents: &[caracal_api::crd::Agent],
) -> std::collections::HashMap<String, String> {
    let mut by_subject: std::collections::HashMap<String, Vec<String>> = Default::default();
    for a in agents {
        let namespace = a.metadata.namespace.as_deref().unwrap_or("default");
        let (Some(name), Some(account)) = (
            a.metadata.name.as_deref(),
            a.spec.identity.service_account_name.as_deref(),
        ) else {
            continue;
        };
        by_subject
            .entry(caracal_gateway::jwt::service_account_subject(
                namespace, account,
            ))
            .or_default()
            .push(caracal_api::snapshot::agent_id(namespace, name));
    }
    by_subject
        .into_iter()
        .filter_map(|(subject, mut agents)| {
            if agents.len() > 1 {
                tracing::warn!(
                    %subject,
                    agents = %agents.join(", "),
                    "a service account is named by more than one Agent; it identifies none of them"
                );
                return None;
            }
            agents.pop().map(|agent| (subject, agent))
        })
        .collect()
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_service_account_named_by_two_agents_identifies_neither() {
        let agent = |name: &str, account: &str| {
            let spec = caracal_api::crd::AgentSpec {
                owner: "platform".into(),
                description: None,
                identity: caracal_api::crd::Identity {
                    service_account_name: Some(account.into()),
                    api_key: None,
                },
                providers: None,
                suspended: false,
            };
            let mut a = caracal_api::crd::Agent::new(name, spec);
            a.metadata.namespace = Some("team".into());
            a
        };
        let map = service_accounts(&[
            agent("bot", "bot-sa"),
            agent("bot-canary", "bot-sa"),
            agent("helper", "helper-sa"),
        ]);
        assert_eq!(
            map.into_iter().collect::<Vec<_>>(),
            [(
                "system:serviceaccount:team:helper-sa".to_owned(),
                "team/helper".to_owned()
            )]
        );
    }

    /// The signing keys are secrets: whoever reads them can sign batches as
    /// this gateway. They must not be readable by other users.
    #[test]
    fn generated_signing_keys_are_private() {
        let dir = std::env::temp_dir().join(format!("caracal-dev-key-{}", uuid::Uuid::now_v7()));
        let path = dir.join("keys").join("gateway.pem");
        let key = load_or_create_key(&path, "gw").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "key file mode {mode:o}");
        // Reading it back gives the same key.
        let again = load_or_create_key(&path, "gw").unwrap();
        assert_eq!(again.public().to_vkey(), key.public().to_vkey());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
