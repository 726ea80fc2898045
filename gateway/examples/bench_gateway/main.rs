//! Gateway benchmark: added latency, stream time-to-first-byte, saturation
//! throughput and memory, against a direct call and a plain hyper
//! pass-through proxy to the same fake upstream, all in one run.
//!
//! Each server runs in its own process (this binary with `--role`), so the
//! gateway's memory can be read from /proc and no server shares a runtime
//! with the load generator. The machine has 2 cores shared by everything.
//!
//! Run: `cargo run --release -p caracal-gateway --example bench_gateway`
//!      options: `--rates 1000,3000` `--seconds 10` `--rounds N` (repeat
//!      the latency, stream and saturation runs N times and give the median
//!      added p99s and the median ratio to the proxy's rate)
//!      `--redis redis://127.0.0.1:6379` (Redis budgets instead of memory),
//!      `--postgres postgres://postgres@127.0.0.1:5432/postgres` (cluster
//!      shape: a fresh Postgres ledger database, dropped afterwards, with
//!      the sequencer in its own process instead of SQLite in the gateway's),
//!      `--parts latency,ttfb,saturation` (which measurements to run; all by
//!      default). Diagnosis only: `BENCH_NULL_LEDGER=1` drops shipped
//!      batches (with `BENCH_BURN_US=N`, spins N µs per batch instead; see
//!      `roles::NullSink`), `BENCH_WORKERS=N` sets every role's worker
//!      threads (2), `BENCH_SHIP_RECORDS` and `BENCH_SHIP_DELAY_MS` set when
//!      the spool ships (32 events, 50 ms), `BENCH_NORMAL_PRIORITY_LEDGER=1`
//!      stores every batch at normal CPU priority (no idle-priority lane,
//!      see `caracal_gateway::ledger_sink`), `BENCH_LOG=text|json` has the
//!      gateways log every request as `caracal dev` does (to stderr).

mod load;
mod roles;

/// Every role runs on the allocator `caracal` uses (jemalloc), the plain
/// proxy too, so the ratios compare request paths rather than allocators.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use load::{Latency, open_loop, wrk};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
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

/// Two clock-tick fields of a `/proc/.../stat` file, added, in µs.
/// `first` counts from 1 as in proc(5).
fn stat_ticks_us(path: &str, first: usize) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ",
    // which is field 3.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |field: usize| {
        fields
            .get(field - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(first) + ticks(first + 1)) * 1e6 / 100.0
}

/// CPU time (user + system) a process has used, in µs: `utime` and `stime`
/// are fields 14 and 15. Unlike latency on a shared machine, this does not
/// depend on what else runs.
fn cpu_us(pid: u32) -> f64 {
    stat_ticks_us(&format!("/proc/{pid}/stat"), 14)
}

/// CPU time of this process's children that have been waited for, in µs
/// (`cutime` and `cstime`, fields 16 and 17): its change across one `wrk`
/// run is what `wrk` used, since the server roles keep running.
fn waited_children_cpu_us() -> f64 {
    stat_ticks_us("/proc/self/stat", 16)
}

fn psql(admin_url: &str, sql: &str) {
    let status = Command::new("psql")
        .args([admin_url, "-q", "-c", sql])
        .status()
        .expect("psql (the PostgreSQL client)");
    assert!(status.success(), "psql failed: {sql}");
}

/// `admin_url` with its database replaced by `db`.
fn database_url(admin_url: &str, db: &str) -> String {
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url, |(base, _)| base);
    format!("{base}/{db}")
}

/// CPU time the hypervisor gave to other guests (`steal` in /proc/stat)
/// and the total, in clock ticks since boot. On a shared virtual machine
/// stolen time delays every process at random and swamps a latency tail,
/// so each latency run reports how much there was.
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user).
    (
        fields.get(7).copied().unwrap_or(0),
        fields.iter().take(8).sum(),
    )
}

/// Percent of CPU time stolen between two [`cpu_ticks`] readings.
fn steal_percent(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1).max(1);
    after.0.saturating_sub(before.0) as f64 * 100.0 / total as f64
}

fn show(name: &str, l: &Latency) {
    println!(
        "  {name:<22} p50 {:>8.0} µs   p99 {:>8.0} µs   p99.9 {:>8.0} µs   ({} ok, {} errors)",
        l.p50, l.p99, l.p999, l.count, l.errors
    );
}

/// With `BENCH_LOG=text` (or `json`), the gateway role logs as `caracal
/// dev` does by default: every request's line at `info`, to stderr (the
/// benchmark's own stderr). Without it the role installs no subscriber, so
/// the figures leave out what logging costs.
fn log_like_caracal_dev() {
    let Ok(format) = std::env::var("BENCH_LOG") else {
        return;
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format.as_str() {
        "json" => logs.json().init(),
        "text" => logs.init(),
        other => panic!("BENCH_LOG is text or json, not {other:?}"),
    }
}

fn main() {
    if let Some(role) = arg("--role") {
        let port: u16 = arg("--port").unwrap().parse().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::env::var("BENCH_WORKERS").map_or(2, |w| {
                w.parse()
                    .expect("BENCH_WORKERS must be a number of worker threads")
            }))
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            match role.as_str() {
                "upstream" => roles::upstream(port).await,
                "proxy" => roles::plain_proxy(port, arg("--upstream").unwrap()).await,
                "sequencer" => roles::sequencer(arg("--ledger-url").unwrap()).await,
                "gateway" => {
                    log_like_caracal_dev();
                    let redis = arg("--redis").map(|url| {
                        (
                            url,
                            arg("--redis-prefix").unwrap_or_else(|| "caracal-bench".into()),
                        )
                    });
                    let ack_on_write = std::env::args().any(|a| a == "--ack-on-write");
                    roles::gateway(
                        port,
                        arg("--upstream").unwrap(),
                        PathBuf::from(arg("--state").unwrap()),
                        redis,
                        ack_on_write,
                        arg("--ledger-url"),
                    )
                    .await
                }
                other => panic!("unknown role {other}"),
            }
        });
        return;
    }

    let rates: Vec<u64> = arg("--rates")
        .unwrap_or_else(|| "1000,3000".into())
        .split(',')
        .map(|r| r.parse().unwrap())
        .collect();
    let seconds: u64 = arg("--seconds").map_or(10, |s| s.parse().unwrap());
    let parts = arg("--parts").unwrap_or_else(|| "latency,ttfb,saturation".into());
    let part = |name: &str| parts.split(',').any(|p| p == name);
    let state =
        std::env::temp_dir().join(format!("caracal-bench-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&state).unwrap();
    let (up_port, proxy_port, gw_port) = (free_port(), free_port(), free_port());
    let upstream_url = format!("http://127.0.0.1:{up_port}");
    let upstream = spawn_role("upstream", up_port, &[]);
    let proxy = spawn_role(
        "proxy",
        proxy_port,
        &["--upstream".into(), upstream_url.clone()],
    );
    let mut gw_args = vec![
        "--upstream".into(),
        upstream_url.clone(),
        "--state".into(),
        state.display().to_string(),
    ];
    let redis = arg("--redis");
    let redis_prefix = format!("caracal-bench-{}", uuid::Uuid::now_v7().simple());
    if let Some(r) = &redis {
        gw_args.extend([
            "--redis".into(),
            r.clone(),
            "--redis-prefix".into(),
            redis_prefix.clone(),
        ]);
    }
    // Cluster shape: a Postgres ledger and the sequencer in its own process.
    let postgres = arg("--postgres");
    let bench_db = format!("caracal_bench_gw_{}", uuid::Uuid::now_v7().simple());
    let _sequencer = postgres.as_ref().map(|admin| {
        psql(admin, &format!("CREATE DATABASE {bench_db}"));
        let url = database_url(admin, &bench_db);
        let sequencer = spawn_role("sequencer", 0, &["--ledger-url".into(), url.clone()]);
        gw_args.extend(["--ledger-url".into(), url]);
        sequencer
    });
    let gateway = spawn_role("gateway", gw_port, &gw_args);
    let gw_pid = gateway.0.id();
    // The same gateway acknowledging spool appends after write(2) instead of fsync.
    let gw_write_port = free_port();
    let mut write_args = gw_args.clone();
    write_args[3] = state.join("ack-on-write").display().to_string();
    write_args.push("--ack-on-write".into());
    let gateway_write = spawn_role("gateway", gw_write_port, &write_args);
    let idle_rss = rss_kb(gw_pid, "VmRSS:");

    let targets = [
        ("direct", format!("{upstream_url}/v1/chat/completions")),
        (
            "plain hyper proxy",
            format!("http://127.0.0.1:{proxy_port}/openai/v1/chat/completions"),
        ),
        (
            "caracal gateway",
            format!("http://127.0.0.1:{gw_port}/openai/v1/chat/completions"),
        ),
        (
            "gateway, ack on write",
            format!("http://127.0.0.1:{gw_write_port}/openai/v1/chat/completions"),
        ),
    ];
    let key = roles::BENCH_KEY;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "caracal gateway benchmark: 1 KB JSON bodies, 2-core machine, budgets in {}, ledger in {}",
        if redis.is_some() { "Redis" } else { "memory" },
        if postgres.is_some() {
            "Postgres (sequencer in its own process)"
        } else {
            "SQLite (sequencer in the gateway process, as caracal dev)"
        }
    );

    // Warm up connection pools and the ledger file.
    for (_, url) in &targets {
        rt.block_on(open_loop(
            url,
            key,
            false,
            500,
            Duration::from_secs(1),
            false,
        ));
    }
    // The process serving each target (none for the direct call), whose CPU
    // time each run reads.
    let servers = [
        None,
        Some(proxy.0.id()),
        Some(gw_pid),
        Some(gateway_write.0.id()),
    ];
    let rounds: usize = arg("--rounds").map_or(1, |r| {
        r.parse()
            .ok()
            .filter(|&n| n > 0)
            .expect("--rounds takes a whole number of rounds, at least 1")
    });
    for rate in rates.iter().filter(|_| part("latency")) {
        // Added p99 vs direct per round: (fsync gateway, ack-on-write gateway).
        let mut added = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            let of = round_label(round, rounds);
            println!(
                "\nlatency at {rate} req/s for {seconds} s (open loop, from scheduled send to last byte{of}):"
            );
            let lat = latency_round(&rt, &targets, servers, key, *rate, seconds);
            added.0.push(lat[2].p99 - lat[0].p99);
            added.1.push(lat[3].p99 - lat[0].p99);
            println!(
                "  gateway peak RSS so far: {} MB",
                rss_kb(gw_pid, "VmHWM:") / 1024
            );
        }
        if rounds > 1 {
            println!(
                "  added p99 vs direct over {rounds} rounds at {rate} req/s: gateway {}; ack on write {}",
                spread(&mut added.0),
                spread(&mut added.1)
            );
        }
    }
    let load_rss = rss_kb(gw_pid, "VmHWM:");

    if part("ttfb") {
        stream_ttfb(&rt, &targets, key, seconds, rounds);
    }
    if part("saturation") {
        saturation(&targets, key, seconds, rounds, &state, &upstream, servers);
    }
    println!(
        "\ngateway memory: idle RSS {} MB, peak RSS after latency runs {} MB, after all runs {} MB",
        idle_rss / 1024,
        load_rss / 1024,
        rss_kb(gw_pid, "VmHWM:") / 1024
    );
    drop(gateway);
    drop(gateway_write);
    drop(_sequencer);
    if let Some(admin) = &postgres {
        psql(admin, &format!("DROP DATABASE {bench_db}"));
    }
    let _ = std::fs::remove_dir_all(&state);
    if let Some(url) = &redis {
        // Remove this run's budget counters from the shared Redis.
        let script = format!(
            "redis-cli -u {url} --scan --pattern '{redis_prefix}*' | xargs -r redis-cli -u {url} del > /dev/null"
        );
        let _ = Command::new("sh").arg("-c").arg(script).status();
    }
}

/// One latency run of each target in turn at `rate`, with what the gateways
/// added; returns the runs in `targets` order.
fn latency_round(
    rt: &tokio::runtime::Runtime,
    targets: &[(&str, String)],
    servers: [Option<u32>; 4],
    key: &str,
    rate: u64,
    seconds: u64,
) -> Vec<Latency> {
    let mut lat = Vec::new();
    for ((name, url), server) in targets.iter().zip(servers) {
        let ticks = cpu_ticks();
        let cpu_before = server.map_or(0.0, cpu_us);
        let l = rt.block_on(open_loop(
            url,
            key,
            false,
            rate,
            Duration::from_secs(seconds),
            false,
        ));
        show(name, &l);
        if let Some(pid) = server {
            println!(
                "    this server's CPU per request at this rate: {:.0} µs",
                (cpu_us(pid) - cpu_before) / l.count.max(1) as f64
            );
        }
        let steal = steal_percent(ticks, cpu_ticks());
        if steal >= 0.5 {
            println!("    ({steal:.1} % of CPU time was stolen by the hypervisor during this run)");
        }
        lat.push(l);
    }
    println!(
        "  added by the gateway vs direct:       p50 {:+.0} µs, p99 {:+.0} µs",
        lat[2].p50 - lat[0].p50,
        lat[2].p99 - lat[0].p99
    );
    println!(
        "  added by the gateway vs plain proxy:  p50 {:+.0} µs, p99 {:+.0} µs",
        lat[2].p50 - lat[1].p50,
        lat[2].p99 - lat[1].p99
    );
    println!(
        "  added by the gateway (ack on write) vs direct: p50 {:+.0} µs, p99 {:+.0} µs",
        lat[3].p50 - lat[0].p50,
        lat[3].p99 - lat[0].p99
    );
    lat
}

/// Median, lowest and highest of per-round figures. A single run on a
/// shared 2-core machine moves with what else the machine does; the median
/// of several rounds, each measuring every target, is what decides whether
/// a change helped.
fn median_and_range(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

/// ", round R of N" for a heading, or nothing when there is one round.
fn round_label(round: usize, rounds: usize) -> String {
    if rounds > 1 {
        format!(", round {round} of {rounds}")
    } else {
        String::new()
    }
}

/// "median +X µs (+A to +B)" of per-round added latencies.
fn spread(values: &mut [f64]) -> String {
    let (median, lo, hi) = median_and_range(values);
    format!("median {median:+.0} µs ({lo:+.0} to {hi:+.0})")
}

/// Stream time to first byte at 200 req/s, direct, through the proxy and
/// through both gateways, in `rounds` rounds (each measuring every target);
/// with several rounds, the median and range of each gateway's added p99.
fn stream_ttfb(
    rt: &tokio::runtime::Runtime,
    targets: &[(&str, String)],
    key: &str,
    seconds: u64,
    rounds: usize,
) {
    // Added p99 vs direct per round: (fsync gateway, ack-on-write gateway).
    let mut added = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let of = round_label(round, rounds);
        println!("\nstream time to first byte at 200 req/s for {seconds} s{of}:");
        let ttfb: Vec<_> = targets
            .iter()
            .map(|(name, url)| {
                let l = rt.block_on(open_loop(
                    url,
                    key,
                    true,
                    200,
                    Duration::from_secs(seconds),
                    true,
                ));
                show(name, &l);
                l
            })
            .collect();
        let (direct, proxy) = (&ttfb[0], &ttfb[1]);
        for (i, label) in [(2, "the gateway"), (3, "the gateway (ack on write)")] {
            println!(
                "  TTFB added by {label}: p50 {:+.0} µs, p99 {:+.0} µs vs direct; p50 {:+.0} µs, p99 {:+.0} µs vs plain proxy",
                ttfb[i].p50 - direct.p50,
                ttfb[i].p99 - direct.p99,
                ttfb[i].p50 - proxy.p50,
                ttfb[i].p99 - proxy.p99
            );
        }
        added.0.push(ttfb[2].p99 - direct.p99);
        added.1.push(ttfb[3].p99 - direct.p99);
    }
    if rounds > 1 {
        println!(
            "  TTFB p99 added vs direct over {rounds} rounds: gateway {}; ack on write {}",
            spread(&mut added.0),
            spread(&mut added.1)
        );
    }
}

/// Saturation throughput and CPU per request under `wrk`, in `rounds`
/// rounds that each run every target in turn. This machine's speed drifts
/// by a third for tens of seconds at a time (the fake provider's own CPU per
/// request moves with it), so each gateway is compared with the proxy run
/// of its own round, and the median of those ratios is the result.
fn saturation(
    targets: &[(&str, String)],
    key: &str,
    seconds: u64,
    rounds: usize,
    state: &std::path::Path,
    upstream: &Role,
    servers: [Option<u32>; 4],
) {
    println!("\nsaturation throughput (wrk -t1 -c64, {seconds} s per target, {rounds} round(s)):");
    // Per round: (gateway / proxy, ack-on-write gateway / proxy).
    let mut ratios = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        if rounds > 1 {
            println!("  round {round} of {rounds}:");
        }
        let mut rps = Vec::new();
        for ((name, url), server) in targets.iter().zip(servers) {
            let before = (cpu_us(upstream.0.id()), server.map_or(0.0, cpu_us));
            let (r, wrk_cpu) = wrk(url, key, 64, seconds as u32, state);
            let requests = r * seconds as f64;
            let upstream_cpu = (cpu_us(upstream.0.id()) - before.0) / requests;
            let server_cpu = server.map_or(0.0, |pid| (cpu_us(pid) - before.1) / requests);
            let wrk_cpu = wrk_cpu / requests;
            println!(
                "  {name:<22} {r:>9.0} req/s   CPU per request: this server {server_cpu:>5.0} µs, fake provider {upstream_cpu:>4.0} µs, wrk {wrk_cpu:>4.1} µs"
            );
            rps.push(r);
        }
        println!(
            "  gateway / plain proxy: {:.2}   gateway / direct: {:.2}   gateway (ack on write) / plain proxy: {:.2}",
            rps[2] / rps[1],
            rps[2] / rps[0],
            rps[3] / rps[1]
        );
        ratios.0.push(rps[2] / rps[1]);
        ratios.1.push(rps[3] / rps[1]);
    }
    if rounds > 1 {
        let (m, lo, hi) = median_and_range(&mut ratios.0);
        let (mw, low, hiw) = median_and_range(&mut ratios.1);
        println!(
            "  over {rounds} rounds, of the proxy's rate: gateway median {m:.2} ({lo:.2} to {hi:.2}); ack on write median {mw:.2} ({low:.2} to {hiw:.2})"
        );
    }
}
