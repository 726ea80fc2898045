//! `caracal dev` keeping up with its files: key rotation by deleting a
//! credentials file, edits that keep a manifest's size and time, and keys
//! only for agents that ask for one.

use std::{
    fs,
    time::{Duration, Instant},
};

use crate::{
    dev::{Dev, agent_with_budget, bot_with_ten_dollars, config_yaml},
    harness::{FakeUpstream, curl, scratch_dir},
};

fn chat(dev: &Dev, key: &str) -> (u16, String) {
    curl(
        &format!("{}/openai/v1/chat/completions", dev.url()),
        &[
            "-H",
            &format!("authorization: Bearer {key}"),
            "-d",
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
        ],
    )
}

/// Poll `check` until it holds or `within` passes.
fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn deleting_a_credentials_file_rotates_the_agent_key() {
    let (_upstream, dev, _) = bot_with_ten_dollars("rotate");
    let old = dev.key("team", "bot");
    assert_eq!(chat(&dev, &old).0, 200);
    let file = dev.dir.join("state/credentials/team/bot.env");
    assert!(file.exists(), "{}", file.display());
    fs::remove_file(&file).unwrap();
    eventually(Duration::from_secs(10), "a new key file", || file.exists());
    let new = dev.key("team", "bot");
    assert_ne!(new, old);
    let (status, body) = chat(&dev, &old);
    assert_eq!(status, 401, "the old key is revoked: {body}");
    assert_eq!(chat(&dev, &new).0, 200);
}

#[test]
fn an_edit_that_keeps_size_and_time_is_loaded() {
    let dir = scratch_dir("same-size");
    let upstream = FakeUpstream::start(&dir);
    let manifests = agent_with_budget("team", "bot", "10.00", "")
        .replace("owner: e2e", "owner: e2e\n  suspended: false");
    let dev = Dev::start(&dir, &manifests, &config_yaml(&upstream), &[], true);
    let key = dev.key("team", "bot");
    assert_eq!(chat(&dev, &key).0, 200);
    let path = dir.join("manifests/agents.yaml");
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    let edited = manifests.replace("suspended: false", "suspended: true ");
    assert_eq!(edited.len(), manifests.len());
    fs::write(&path, edited).unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    eventually(Duration::from_secs(10), "the suspension", || {
        let (status, body) = chat(&dev, &key);
        status == 403 && body.contains("agent_suspended")
    });
}

#[test]
fn only_agents_that_ask_for_a_key_get_one() {
    let dir = scratch_dir("keyless");
    let upstream = FakeUpstream::start(&dir);
    let keyless = agent_with_budget("team", "runner", "10.00", "").replace(
        "identity: {apiKey: {issue: true}}",
        "identity: {serviceAccountName: runner}",
    );
    let manifests = format!(
        "{}\n{keyless}",
        agent_with_budget("team", "bot", "10.00", "")
    );
    let dev = Dev::start(&dir, &manifests, &config_yaml(&upstream), &[], true);
    assert!(dir.join("state/credentials/team/bot.env").exists());
    assert!(
        !dir.join("state/credentials/team/runner.env").exists(),
        "an agent that did not ask for a key got one"
    );
    assert_eq!(chat(&dev, &dev.key("team", "bot")).0, 200);
}

/// A first SIGTERM drains (a call still waiting on its provider holds the
/// process); a second one ends it at once.
#[test]
fn a_second_signal_ends_the_drain_at_once() {
    let dir = scratch_dir("second-signal");
    // A provider that accepts and never answers keeps a call in flight.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", silent.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming() {
            held.push(conn);
        }
    });
    let config = format!(
        "providers:\n  - {{name: openai, kind: openai, baseUrl: \"{base}\"}}\nprices:\n  version: t\n  models:\n    - {{provider: openai, model: gpt-4o-mini, input: \"0.15\", output: \"0.60\", maxOutputTokens: 100}}\n"
    );
    let mut dev = Dev::start(
        &dir,
        &agent_with_budget("team", "bot", "10.00", ""),
        &config,
        &[],
        true,
    );
    let key = dev.key("team", "bot");
    let url = dev.url();
    let in_flight = std::thread::spawn(move || {
        curl(
            &format!("{url}/openai/v1/chat/completions"),
            &[
                "-H",
                &format!("authorization: Bearer {key}"),
                "-d",
                r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
            ],
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        dev.process.terminate(Duration::from_secs(1)).is_none(),
        "the first signal drains while a call is in flight"
    );
    let status = dev
        .process
        .terminate(Duration::from_secs(3))
        .expect("the second signal ends the process at once");
    assert_eq!(status.code(), Some(130), "{}", dev.process.output());
    let _ = in_flight.join();
}
