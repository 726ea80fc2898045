//! Dependencies failing: each denies fast with its reason, and recovers.

use std::{
    fs,
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    dev::{Dev, agent_with_budget, config_yaml},
    harness::{FakeUpstream, Process, curl_timed, free_port, scratch_dir, wait_for_status},
};

/// One chat call; the duration is curl's own `time_total` (see
/// [`curl_timed`]), so the 100 ms bounds below are on the gateway.
fn chat(dev: &Dev, key: &str) -> (u16, String, Duration) {
    curl_timed(
        &format!("{}/openai/v1/chat/completions", dev.url()),
        &[
            "-H",
            &format!("authorization: Bearer {key}"),
            "-d",
            r#"{"model":"gpt-4o-mini","max_tokens":10}"#,
        ],
    )
}

fn start_redis(dir: &std::path::Path, port: u16) -> Process {
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .current_dir(dir);
    let process = Process::spawn(
        "redis",
        cmd,
        dir.join(format!("redis-{}.log", uuid::Uuid::now_v7().simple())),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    process
}

#[test]
fn redis_down_denies_fast_and_recovers() {
    let dir = scratch_dir("redis-down");
    let upstream = FakeUpstream::start(&dir);
    let redis_port = free_port();
    let mut redis = start_redis(&dir, redis_port);
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    let dev = Dev::start(
        &dir,
        &agent_with_budget("team", "bot", "10.00", ""),
        &config_yaml(&upstream),
        &["--redis-url", &redis_url],
        true,
    );
    let key = dev.key("team", "bot");
    assert_eq!(chat(&dev, &key).0, 200);

    redis.kill_hard();
    let (status, body, took) = chat(&dev, &key);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("budget_store_unavailable"), "{body}");
    assert!(took < Duration::from_millis(100), "denial took {took:?}");

    let _redis = start_redis(&dir, redis_port);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body, _) = chat(&dev, &key);
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not recover: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn no_config_denies_until_valid_manifests_arrive() {
    let dir = scratch_dir("no-config");
    let upstream = FakeUpstream::start(&dir);
    let mut dev = Dev::start(
        &dir,
        "apiVersion: caracal.dev/v1alpha1\nkind: Nonsense\n",
        &config_yaml(&upstream),
        &[],
        false,
    );
    assert_eq!(crate::harness::http_status(dev.port, "/readyz"), Some(503));
    let (status, body, took) = curl_timed(
        &format!("{}/openai/v1/chat/completions", dev.url()),
        &["-H", "authorization: Bearer ck_unknown", "-d", "{}"],
    );
    assert!(took < Duration::from_millis(100), "denial took {took:?}");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no_config"), "{body}");

    fs::write(
        dir.join("manifests/agents.yaml"),
        agent_with_budget("team", "bot", "10.00", ""),
    )
    .unwrap();
    wait_for_status(
        &mut dev.process,
        dev.port,
        "/readyz",
        200,
        Duration::from_secs(10),
    );
    let key = dev.key("team", "bot");
    let (status, body, _) = chat(&dev, &key);
    assert_eq!(status, 200, "{body}");
}

/// A private PostgreSQL cluster on its own port, run as the `postgres` OS
/// user (initdb refuses root). Stopped and removed on drop.
struct PrivatePostgres {
    dir: std::path::PathBuf,
    port: u16,
}

fn pg_tool(name: &str) -> String {
    let debian = std::path::Path::new("/usr/lib/postgresql");
    let newest = fs::read_dir(debian).ok().and_then(|d| {
        d.filter_map(|e| e.ok())
            .map(|e| e.path().join("bin").join(name))
            .filter(|p| p.exists())
            .max()
    });
    newest
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| name.to_owned())
}

fn as_postgres(command: &str) -> bool {
    let as_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    let status = if as_root {
        Command::new("runuser")
            .args(["-u", "postgres", "--", "sh", "-c", command])
            .status()
    } else {
        Command::new("sh").args(["-c", command]).status()
    };
    status.map(|s| s.success()).unwrap_or(false)
}

impl PrivatePostgres {
    fn start(port: u16) -> PrivatePostgres {
        let dir =
            std::env::temp_dir().join(format!("caracal-e2e-pg-{}", uuid::Uuid::now_v7().simple()));
        fs::create_dir_all(&dir).unwrap();
        let _ = Command::new("chown")
            .args(["postgres:postgres", &dir.display().to_string()])
            .status();
        let pg = PrivatePostgres { dir, port };
        let init = format!(
            "{} -D {}/data -A trust -U postgres >/dev/null",
            pg_tool("initdb"),
            pg.dir.display()
        );
        assert!(as_postgres(&init), "initdb failed");
        pg.up();
        pg
    }

    fn up(&self) {
        let start = format!(
            "{} -D {d}/data -o '-p {p} -k {d} -c listen_addresses=127.0.0.1' -l {d}/log -w start >/dev/null",
            pg_tool("pg_ctl"),
            d = self.dir.display(),
            p = self.port
        );
        assert!(as_postgres(&start), "pg_ctl start failed");
    }

    fn down(&self) {
        let stop = format!(
            "{} -D {}/data -m immediate -w stop >/dev/null",
            pg_tool("pg_ctl"),
            self.dir.display()
        );
        assert!(as_postgres(&stop), "pg_ctl stop failed");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let stop = format!(
            "{} -D {}/data -m immediate stop >/dev/null 2>&1",
            pg_tool("pg_ctl"),
            self.dir.display()
        );
        as_postgres(&stop);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn an_unreachable_ledger_with_a_full_spool_denies_and_recovers() {
    let dir = scratch_dir("ledger-down");
    let upstream = FakeUpstream::start(&dir);
    let pg = PrivatePostgres::start(free_port());
    // Room for a handful of events only.
    let config = format!("{}spoolMaxPendingBytes: 3000\n", config_yaml(&upstream));
    let dev = Dev::start(
        &dir,
        &agent_with_budget("team", "bot", "10.00", ""),
        &config,
        &["--database-url", &pg.url()],
        true,
    );
    let key = dev.key("team", "bot");
    assert_eq!(chat(&dev, &key).0, 200);

    pg.down();
    let mut refused = None;
    for _ in 0..50 {
        let (status, body, took) = chat(&dev, &key);
        if status == 503 {
            refused = Some((body, took));
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    let (body, took) = refused.expect("the spool never filled");
    assert!(body.contains("spool_full"), "{body}");
    assert!(took < Duration::from_millis(100), "denial took {took:?}");
    assert_eq!(crate::harness::http_status(dev.port, "/readyz"), Some(503));

    pg.up();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body, _) = chat(&dev, &key);
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not recover: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut dev = dev;
    wait_for_status(
        &mut dev.process,
        dev.port,
        "/readyz",
        200,
        Duration::from_secs(10),
    );
}
