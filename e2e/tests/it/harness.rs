//! Starting and stopping the processes an end-to-end test needs, and talking
//! to them the way users do (curl, the Python SDKs).

#![allow(dead_code)]

use std::{
    fs,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repo root")
}

/// A binary built by this `cargo test` run (`target/<profile>/NAME`).
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p caracal-cli` (scripts/test does)",
        path.display()
    );
    path
}

/// The Python with the official SDKs (`.venv`, made by scripts/tools.sh).
pub fn python() -> PathBuf {
    let venv = repo_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/tools.sh",
        venv.display()
    );
    venv
}

/// A fresh scratch directory under the system temp dir.
pub fn scratch_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "caracal-e2e-{label}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (SIGKILL) when dropped, with its output in a file.
pub struct Process {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Process {
        let out = fs::File::create(&log).expect("log file");
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Process {
            child,
            name: name.into(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a node failure or OOM kill would.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait up to `timeout` for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// Plain HTTP/1.1 GET on loopback; the status code, or None if nothing answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Wait until GET `path` answers `want`, or panic with the process log.
pub fn wait_for_status(process: &mut Process, port: u16, path: &str, want: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if http_status(port, path) == Some(want) {
            return;
        }
        if let Ok(Some(status)) = process.child.try_wait() {
            panic!(
                "{} exited with {status} before {path} answered {want}:\n{}",
                process.name,
                process.output()
            );
        }
        if Instant::now() > deadline {
            panic!(
                "{} did not answer {want} on {path} within {timeout:?}:\n{}",
                process.name,
                process.output()
            );
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// The fake provider (`py/fake_upstream.py`), logging what it served.
pub struct FakeUpstream {
    pub port: u16,
    pub served_log: PathBuf,
    _process: Process,
}

impl FakeUpstream {
    pub fn start(dir: &Path) -> FakeUpstream {
        let port = free_port();
        let served_log = dir.join("served.jsonl");
        let mut cmd = Command::new(python());
        cmd.arg(repo_root().join("e2e/py/fake_upstream.py"))
            .arg("--port")
            .arg(port.to_string())
            .arg("--served-log")
            .arg(&served_log);
        let mut process = Process::spawn("fake upstream", cmd, dir.join("fake-upstream.log"));
        wait_for_status(&mut process, port, "/", 404, Duration::from_secs(10));
        FakeUpstream {
            port,
            served_log,
            _process: process,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every response the fake finished serving, in order.
    pub fn served(&self) -> Vec<Value> {
        fs::read_to_string(&self.served_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("served log line"))
            .collect()
    }
}

/// Run `py/sdk_call.py` with the given environment; its one JSON line.
pub fn sdk_call(env: &[(String, String)], args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(repo_root().join("e2e/py/sdk_call.py"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run sdk_call.py");
    parse_json_line(&out, "sdk_call.py")
}

fn parse_json_line(out: &Output, what: &str) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{what}: {e}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `curl` a URL: (status, body). `args` are extra curl arguments.
pub fn curl(url: &str, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Like [`curl`], also returning curl's own measure of the exchange
/// (`time_total`: connect to last byte), which leaves out the time to start
/// the curl process, so a bound on it is a bound on the server.
pub fn curl_timed(url: &str, args: &[&str]) -> (u16, String, Duration) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "-",
            "-w",
            "\n%{http_code} %{time_total}",
            "--max-time",
            "10",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", "0 0"));
    let (code, seconds) = tail.trim().split_once(' ').unwrap_or(("0", "0"));
    let took = Duration::from_secs_f64(seconds.parse().unwrap_or(f64::MAX));
    (code.parse().unwrap_or(0), body.to_string(), took)
}

/// Parse a `KEY=VALUE` env file (as `caracal dev` writes per agent).
pub fn read_env_file(path: &Path) -> Vec<(String, String)> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}
