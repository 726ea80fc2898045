//! Gateway benchmark: added latency, stream time-to-first-byte, saturation
//! throughput and memory, against a direct call and a plain hyper
//! pass-through proxy to the same fake upstream, all in one run.
//!
//! Each server runs in its own process (this binary with `--role`), so the
//! gateway's memory can be read from /proc and no server shares a runtime
//! with the load generator. The machine has 2 cores shared by everything.
//!
//! Run: `cargo run --release -p caracal-gateway --example bench_gateway`
//!      (add `-- --redis redis://127.0.0.1:6379` for Redis budgets).

mod load;
mod roles;

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use load::{Latency, open_loop, wrk};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server role in a child process, killed on drop.
struct Role(Child);

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_role(role: &str, port: u16, extra: &[String]) -> Role {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--role", role, "--port", &port.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn role");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "ready", "{role} did not start");
    Role(child)
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn show(name: &str, l: &Latency) {
    println!("  {name:<22} p50 {:>8.0} µs   p99 {:>8.0} µs   p99.9 {:>8.0} µs   ({} ok, {} errors)", l.p50, l.p99, l.p999, l.count, l.errors);
}

fn main() {
    if let Some(role) = arg("--role") {
        let port: u16 = arg("--port").unwrap().parse().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            match role.as_str() {
                "upstream" => roles::upstream(port).await,
                "proxy" => roles::plain_proxy(port, arg("--upstream").unwrap()).await,
                "gateway" => roles::gateway(port, arg("--upstream").unwrap(), PathBuf::from(arg("--state").unwrap()), arg("--redis")).await,
                other => panic!("unknown role {other}"),
            }
        });
        return;
    }

    let rate: u64 = arg("--rate").map_or(3000, |r| r.parse().unwrap());
    let seconds: u64 = arg("--seconds").map_or(10, |s| s.parse().unwrap());
    let state = std::env::temp_dir().join(format!("caracal-bench-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&state).unwrap();
    let (up_port, proxy_port, gw_port) = (free_port(), free_port(), free_port());
    let upstream_url = format!("http://127.0.0.1:{up_port}");
    let _upstream = spawn_role("upstream", up_port, &[]);
    let _proxy = spawn_role("proxy", proxy_port, &["--upstream".into(), upstream_url.clone()]);
    let mut gw_args = vec!["--upstream".into(), upstream_url.clone(), "--state".into(), state.display().to_string()];
    let redis = arg("--redis");
    if let Some(r) = &redis {
        gw_args.extend(["--redis".into(), r.clone()]);
    }
    let gateway = spawn_role("gateway", gw_port, &gw_args);
    let gw_pid = gateway.0.id();
    let idle_rss = rss_kb(gw_pid, "VmRSS:");

    let targets = [
        ("direct", format!("{upstream_url}/v1/chat/completions")),
        ("plain hyper proxy", format!("http://127.0.0.1:{proxy_port}/openai/v1/chat/completions")),
        ("caracal gateway", format!("http://127.0.0.1:{gw_port}/openai/v1/chat/completions")),
    ];
    let key = roles::BENCH_KEY;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    println!("caracal gateway benchmark: 1 KB JSON bodies, 2-core machine, budgets in {}", if redis.is_some() { "Redis" } else { "memory" });

    println!("\nlatency at {rate} req/s for {seconds} s (open loop, from scheduled send to last byte):");
    // Warm up connection pools and the ledger file.
    for (_, url) in &targets {
        rt.block_on(open_loop(url, key, false, 500, Duration::from_secs(1), false));
    }
    let mut lat = Vec::new();
    for (name, url) in &targets {
        let l = rt.block_on(open_loop(url, key, false, rate, Duration::from_secs(seconds), false));
        show(name, &l);
        lat.push(l);
    }
    let load_rss = rss_kb(gw_pid, "VmHWM:");
    println!("  added by the gateway vs direct:       p50 {:+.0} µs, p99 {:+.0} µs", lat[2].p50 - lat[0].p50, lat[2].p99 - lat[0].p99);
    println!("  added by the gateway vs plain proxy:  p50 {:+.0} µs, p99 {:+.0} µs", lat[2].p50 - lat[1].p50, lat[2].p99 - lat[1].p99);

    println!("\nstream time to first byte at 200 req/s for {seconds} s:");
    let ttfb_direct = rt.block_on(open_loop(&targets[0].1, key, true, 200, Duration::from_secs(seconds), true));
    show("direct", &ttfb_direct);
    let ttfb_gw = rt.block_on(open_loop(&targets[2].1, key, true, 200, Duration::from_secs(seconds), true));
    show("caracal gateway", &ttfb_gw);
    println!("  TTFB added by the gateway: p50 {:+.0} µs, p99 {:+.0} µs", ttfb_gw.p50 - ttfb_direct.p50, ttfb_gw.p99 - ttfb_direct.p99);

    println!("\nsaturation throughput (wrk -t1 -c64, {seconds} s):");
    let mut rps = Vec::new();
    for (name, url) in &targets {
        let r = wrk(url, key, 64, seconds as u32, &state);
        println!("  {name:<22} {r:>9.0} req/s");
        rps.push(r);
    }
    let peak_rss = rss_kb(gw_pid, "VmHWM:");
    println!("  gateway / plain proxy: {:.2}   gateway / direct: {:.2}", rps[2] / rps[1], rps[2] / rps[0]);
    println!("\ngateway memory: idle RSS {} MB, peak RSS after latency runs {} MB, after saturation {} MB", idle_rss / 1024, load_rss / 1024, peak_rss / 1024);
    drop(gateway);
    let _ = std::fs::remove_dir_all(&state);
}
