//! `--help`, `crds` and `dev` with no arguments, run as processes.

use std::{
    fs,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

const CARACAL: &str = env!("CARGO_BIN_EXE_caracal");
const KUBECTL_CARACAL: &str = env!("CARGO_BIN_EXE_kubectl-caracal");

fn run(bin: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin).args(args).output().expect("run binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_every_command_under_both_names() {
    for bin in [CARACAL, KUBECTL_CARACAL] {
        let (ok, help, _) = run(bin, &["--help"]);
        assert!(ok, "{bin} --help failed");
        for command in ["dev", "merkle", "ledger", "crds"] {
            assert!(
                help.contains(command),
                "{bin} --help does not mention {command}:\n{help}"
            );
        }
    }
    let (ok, _, err) = run(CARACAL, &["no-such-command"]);
    assert!(!ok);
    assert!(err.contains("unrecognized subcommand"), "{err}");
}

/// A `--manifests` directory that is not there stops `caracal dev` at once;
/// one that goes away while it runs is reported once, not every second, and
/// its return is noticed.
#[test]
fn dev_says_when_the_manifest_directory_is_missing() {
    let dir = std::env::temp_dir().join(format!("caracal-cli-manifests-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state");
    let state_arg = state.to_str().unwrap();
    let dev = |manifests: &Path| {
        let mut command = Command::new(CARACAL);
        command
            .args(["dev", "--listen", "127.0.0.1:0", "--state-dir", state_arg])
            .arg("--manifests")
            .arg(manifests)
            .env_remove("CARACAL_DATABASE_URL")
            .env_remove("CARACAL_REDIS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    };
    let mut refused = dev(&dir.join("missing"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("start caracal dev");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = refused.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = refused.kill();
            panic!("caracal dev served a missing manifest directory");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    refused
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(err.contains("no such directory"), "{err}");

    let manifests = dir.join("manifests");
    fs::create_dir_all(&manifests).unwrap();
    let log = dir.join("dev.log");
    let child = dev(&manifests)
        .env("RUST_LOG", "info")
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("start caracal dev");
    let _guard = Killed(child);
    let logged = |what: &str| {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .matches(what)
            .count()
    };
    let wait_for = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while logged(what) == 0 {
            assert!(Instant::now() < deadline, "never logged {what:?}");
            thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("configuration loaded");
    fs::remove_dir_all(&manifests).unwrap();
    wait_for("cannot read the manifest directory");
    // The directory is looked at every second: three more looks.
    thread::sleep(Duration::from_millis(3200));
    assert_eq!(logged("cannot read the manifest directory"), 1);
    fs::create_dir_all(&manifests).unwrap();
    wait_for("readable again");
    let _ = fs::remove_dir_all(&dir);
}

/// A ledger that cannot be opened is named in the error (never with its
/// password), and an unreachable Postgres is reported at once.
#[test]
fn a_ledger_that_cannot_be_opened_is_named() {
    let cases = [
        (
            "sqlite:/nonexistent/caracal/ledger.db",
            "opening the ledger database sqlite:/nonexistent/caracal/ledger.db",
        ),
        (
            "postgres://caracal:hunter2@127.0.0.1:1/ledger",
            "opening the ledger database postgres://caracal:***@127.0.0.1:1/ledger",
        ),
    ];
    for (url, says) in cases {
        let started = Instant::now();
        let (ok, _, err) = run(CARACAL, &["merkle", "status", "--database-url", url]);
        assert!(!ok, "{url} opened");
        assert!(err.contains(says), "{url}: {err}");
        assert!(!err.contains("hunter2"), "{url}: {err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{url}: {err}");
    }
}

#[test]
fn crds_prints_exactly_the_committed_manifests() {
    let (ok, out, err) = run(CARACAL, &["crds"]);
    assert!(ok, "{err}");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in ["agent.yaml", "policy.yaml", "delegation.yaml"] {
        let committed = fs::read_to_string(repo.join("crds").join(file)).unwrap();
        assert!(out.contains(&committed), "`caracal crds` lacks crds/{file}");
    }
    assert_eq!(out.matches("kind: CustomResourceDefinition").count(), 3);
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(port: u16, request: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// The README's run command: `caracal dev` with no arguments seeds the demo
/// agents, issues their keys, and meters a call to the mock provider.
#[test]
fn dev_with_no_arguments_serves_the_demo_agents() {
    let dir = std::env::temp_dir().join(format!("caracal-cli-dev-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CARACAL)
        .args([
            "dev",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--state-dir",
        ])
        .arg(dir.join("state"))
        .env_remove("CARACAL_DATABASE_URL")
        .env_remove("CARACAL_REDIS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start caracal dev");
    let _guard = Killed(child);

    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    while !http(port, ready).is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        assert!(Instant::now() < deadline, "caracal dev never became ready");
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        dir.join("state/manifests/demo.yaml").exists(),
        "demo manifests were not seeded"
    );

    let env = fs::read_to_string(dir.join("state/credentials/demo/assistant.env")).unwrap();
    let key = env
        .lines()
        .find_map(|l| l.strip_prefix("OPENAI_API_KEY="))
        .expect("OPENAI_API_KEY in the credentials file");
    let body = r#"{"model":"mock-small","messages":[{"role":"user","content":"hello there"}]}"#;
    let request = format!(
        "POST /mock/v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = http(port, &request).expect("chat completion answered");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""prompt_tokens":2"#), "{response}");

    // The free model list names the mock's priced models.
    let request = format!(
        "GET /mock/v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: Bearer {key}\r\n\r\n"
    );
    let response = http(port, &request).expect("model list answered");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains(r#""id":"mock-small""#) && response.contains(r#""id":"mock-large""#),
        "{response}"
    );

    // The helper may not use the large model: its delegation narrows it.
    let helper_env = fs::read_to_string(dir.join("state/credentials/demo/helper.env")).unwrap();
    let helper_key = helper_env
        .lines()
        .find_map(|l| l.strip_prefix("OPENAI_API_KEY="))
        .unwrap();
    let body = r#"{"model":"mock-large","messages":[{"role":"user","content":"hi"}]}"#;
    let request = format!(
        "POST /mock/v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: Bearer {helper_key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = http(port, &request).expect("denial answered");
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(response.contains("model_not_allowed"), "{response}");

    // Both calls reach the ledger, and its tables give every amount with
    // all six decimal places, so that the column lines up.
    let database = format!("sqlite:{}", dir.join("state/ledger.db").display());
    let deadline = Instant::now() + Duration::from_secs(10);
    let summary = loop {
        let (ok, out, err) = run(CARACAL, &["ledger", "summary", "--database-url", &database]);
        assert!(ok, "ledger summary failed: {err}");
        if out
            .lines()
            .any(|l| l.starts_with("TOTAL") && l.split_whitespace().nth(1) == Some("2"))
        {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "the ledger never held both calls:\n{out}"
        );
        thread::sleep(Duration::from_millis(100));
    };
    let costs: Vec<&str> = summary
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(costs.len(), 3, "{summary}");
    for cost in &costs {
        let (whole, frac) = cost.split_once('.').expect("a decimal amount");
        assert!(
            !whole.is_empty() && frac.len() == 6 && frac.bytes().all(|b| b.is_ascii_digit()),
            "{cost} in\n{summary}"
        );
    }
    let (ok, query, err) = run(
        CARACAL,
        &[
            "ledger",
            "query",
            "--database-url",
            &database,
            "--agent",
            "demo/helper",
        ],
    );
    assert!(ok, "ledger query failed: {err}");
    assert!(
        query
            .lines()
            .any(|l| l.contains("denied") && l.ends_with(" 0.000000")),
        "{query}"
    );
    let _ = fs::remove_dir_all(&dir);
}
