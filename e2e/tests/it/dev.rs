//! `caracal dev` as a process, with a config pointing at the fake upstream.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::harness::{
    FakeUpstream, Process, built_binary, free_port, read_env_file, scratch_dir, wait_for_status,
};

/// The `caracal` binary, built once per test run so `cargo test -p
/// caracal-e2e` never runs a stale one. `scripts/test` sets
/// `CARACAL_E2E_PREBUILT=1`: its `cargo test --workspace` has just built the
/// binary (caracal-cli's own integration tests need it), and building it
/// again from here, with `-p caracal-cli`'s different feature set, would
/// recompile part of the dependency tree.
pub fn caracal_binary() -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        if std::env::var_os("CARACAL_E2E_PREBUILT").is_some() {
            return;
        }
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "caracal-cli", "--bin", "caracal"])
            .current_dir(crate::harness::repo_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p caracal-cli failed");
    });
    built_binary("caracal")
}

/// Providers and prices for the fake upstream: `openai`, `anthropic` and an
/// MCP server `search`.
pub fn config_yaml(upstream: &FakeUpstream) -> String {
    format!(
        r#"providers:
  - {{name: openai, kind: openai, baseUrl: "{base}", apiKeyEnv: FAKE_OPENAI_KEY}}
  - {{name: anthropic, kind: anthropic, baseUrl: "{base}", apiKeyEnv: FAKE_ANTHROPIC_KEY}}
  - {{name: search, kind: mcp, baseUrl: "{base}/mcp"}}
prices:
  version: e2e-1
  models:
    - {{provider: openai, model: gpt-4o-mini, input: "0.15", output: "0.60", maxOutputTokens: 16384}}
    - {{provider: anthropic, model: claude-haiku-4-5, input: "1.00", output: "5.00", maxOutputTokens: 8192}}
  tools:
    - {{provider: search, tool: web_search, perCall: "0.01"}}
    - {{provider: search, tool: delete_repo, perCall: "0.01"}}
"#,
        base = upstream.base_url()
    )
}

/// A running `caracal dev`.
pub struct Dev {
    pub port: u16,
    pub dir: PathBuf,
    pub process: Process,
    pub extra: Vec<String>,
    /// `RUST_LOG` for the process (`warn` unless started with
    /// [`Dev::start_logging`]).
    pub log_filter: String,
}

impl Dev {
    /// Start with `manifests` (YAML text) and `config` in `dir`; waits for
    /// `/readyz` when `expect_ready`.
    pub fn start(
        dir: &Path,
        manifests: &str,
        config: &str,
        extra: &[&str],
        expect_ready: bool,
    ) -> Dev {
        Dev::start_logging(dir, manifests, config, extra, expect_ready, "warn")
    }

    /// [`Dev::start`] with `RUST_LOG` set to `log_filter`.
    pub fn start_logging(
        dir: &Path,
        manifests: &str,
        config: &str,
        extra: &[&str],
        expect_ready: bool,
        log_filter: &str,
    ) -> Dev {
        fs::create_dir_all(dir.join("manifests")).unwrap();
        fs::write(dir.join("manifests/agents.yaml"), manifests).unwrap();
        fs::write(dir.join("gateway.yaml"), config).unwrap();
        let port = free_port();
        let mut dev = Dev {
            port,
            dir: dir.to_owned(),
            process: Dev::spawn_at(dir, port, extra, log_filter),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log_filter: log_filter.to_owned(),
        };
        if expect_ready {
            wait_for_status(
                &mut dev.process,
                dev.port,
                "/readyz",
                200,
                Duration::from_secs(30),
            );
        } else {
            wait_for_status(
                &mut dev.process,
                dev.port,
                "/healthz",
                200,
                Duration::from_secs(30),
            );
        }
        dev
    }

    fn spawn_at(dir: &Path, port: u16, extra: &[&str], log_filter: &str) -> Process {
        let mut cmd = Command::new(caracal_binary());
        cmd.arg("dev")
            .arg("--manifests")
            .arg(dir.join("manifests"))
            .arg("--config")
            .arg(dir.join("gateway.yaml"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(extra)
            .env("FAKE_OPENAI_KEY", "sk-fake-openai")
            .env("FAKE_ANTHROPIC_KEY", "sk-fake-anthropic")
            .env("RUST_LOG", log_filter);
        Process::spawn(
            "caracal dev",
            cmd,
            dir.join(format!("dev-{}.log", uuid::Uuid::now_v7().simple())),
        )
    }

    /// Start again on the same port and state (after a crash or stop).
    pub fn restart(&mut self) {
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.process = Dev::spawn_at(&self.dir, self.port, &extra, &self.log_filter);
        wait_for_status(
            &mut self.process,
            self.port,
            "/healthz",
            200,
            Duration::from_secs(30),
        );
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The credentials `caracal dev` wrote for `namespace/name`.
    pub fn env(&self, namespace: &str, name: &str) -> Vec<(String, String)> {
        read_env_file(
            &self
                .dir
                .join(format!("state/credentials/{namespace}/{name}.env")),
        )
    }

    pub fn key(&self, namespace: &str, name: &str) -> String {
        self.env(namespace, name)
            .into_iter()
            .find(|(k, _)| k == "CARACAL_API_KEY")
            .map(|(_, v)| v)
            .expect("key in env file")
    }

    pub fn database_url(&self) -> String {
        format!("sqlite:{}", self.dir.join("state/ledger.db").display())
    }

    /// The agent's ledger events (sequenced), via `caracal ledger query`.
    pub fn ledger(&self, agent: &str) -> Vec<Value> {
        let out = Command::new(caracal_binary())
            .args([
                "ledger",
                "query",
                "--database-url",
                &self.database_url(),
                "--agent",
                agent,
                "-o",
                "json",
            ])
            .output()
            .expect("caracal ledger query");
        assert!(
            out.status.success(),
            "ledger query: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all: Vec<Value> = serde_json::from_slice(&out.stdout).expect("ledger query json");
        all.into_iter().map(|e| e["event"].clone()).collect()
    }

    /// Wait until the agent has at least `n` ledger events.
    pub fn ledger_at_least(&self, agent: &str, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.ledger(agent);
            if events.len() >= n || Instant::now() > deadline {
                return events;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `caracal merkle verify` on the ledger; (success, output).
    pub fn merkle_verify(&self) -> (bool, String) {
        let out = Command::new(caracal_binary())
            .args(["merkle", "verify", "--database-url", &self.database_url()])
            .output()
            .expect("caracal merkle verify");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

/// A fake provider and `caracal dev` serving `team/bot` with $10 a day,
/// and the agent's SDK environment.
pub fn bot_with_ten_dollars(scratch: &str) -> (FakeUpstream, Dev, Vec<(String, String)>) {
    let dir = scratch_dir(scratch);
    let upstream = FakeUpstream::start(&dir);
    let dev = Dev::start(
        &dir,
        &agent_with_budget("team", "bot", "10.00", ""),
        &config_yaml(&upstream),
        &[],
        true,
    );
    let env = dev.env("team", "bot");
    (upstream, dev, env)
}

/// An agent with an API key and a daily budget of `limit` dollars.
pub fn agent_with_budget(namespace: &str, name: &str, limit: &str, extra_allow: &str) -> String {
    format!(
        r#"---
apiVersion: caracal.dev/v1alpha1
kind: Agent
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  owner: e2e
  identity: {{apiKey: {{issue: true}}}}
---
apiVersion: caracal.dev/v1alpha1
kind: Policy
metadata: {{name: {name}-daily, namespace: {namespace}}}
spec:
  targetRefs: [{{name: {name}}}]
  budget: {{limit: "{limit}", window: {{period: Daily, timeZone: UTC}}}}
{extra_allow}"#
    )
}

/// Cost in micro-dollars of `input`/`output` tokens at per-million prices
/// given in micro-dollars, rounded up once.
pub fn cost(input: u64, input_price: u64, output: u64, output_price: u64) -> i64 {
    ((input * input_price + output * output_price).div_ceil(1_000_000)) as i64
}
