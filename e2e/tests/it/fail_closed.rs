//! Dependencies failing: each denies fast with its reason, and recovers.

use std::{
    fs,
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    dev::{Dev, agent_with_budget, config_yaml},
    harness::{FakeUpstream, Process, curl, free_port, scratch_dir, wait_for_status},
};

fn chat(dev: &Dev, key: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let (status, body) = curl(
        &format!("{}/openai/v1/chat/completions", dev.url()),
        &[
            "-H",
            &format!("authorization: Bearer {key}"),
            "-d",
            r#"{"model":"gpt-4o-mini","max_tokens":10}"#,
        ],
    );
    (status, body, started.elapsed())
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
    assert!(
        took < Duration::from_millis(100) + Duration::from_millis(50),
        "denial took {took:?} (including curl start-up)"
    );

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
    let started = Instant::now();
    let (status, body) = curl(
        &format!("{}/openai/v1/chat/completions", dev.url()),
        &["-H", "authorization: Bearer ck_unknown", "-d", "{}"],
    );
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "{:?} (including curl start-up)",
        started.elapsed()
    );
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
