//! Load: an open-loop generator for latency at a fixed rate, and wrk for
//! saturation throughput.

use std::{
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

/// Latency percentiles of one run, in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub count: usize,
    pub errors: usize,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64
}

/// A ~1 KB chat completion request body.
pub fn request_body(stream: bool) -> String {
    let content = "y".repeat(900);
    serde_json::json!({"model": "gpt-test", "max_tokens": 16, "stream": stream,
        "messages": [{"role": "user", "content": content}]})
    .to_string()
}

/// Send `rate` requests per second for `duration` to `url`, each at its
/// scheduled time whether or not earlier ones finished (open loop), evenly
/// spaced, and measure from the scheduled time to the first body byte (`ttfb`) or to
/// the end of the response.
pub async fn open_loop(
    url: &str,
    key: &str,
    stream: bool,
    rate: u64,
    duration: Duration,
    ttfb: bool,
) -> Latency {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(512)
        .build_http();
    let body = Bytes::from(request_body(stream));
    let total = rate * duration.as_secs();
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let samples = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let errors = Arc::new(Mutex::new(0usize));
    let start = Instant::now() + Duration::from_millis(50);
    // Pace on a thread of its own: tokio's timer ticks once a millisecond,
    // which would send requests in bursts at each tick and add up to a
    // millisecond of waiting to every measurement. A thread sleeping until
    // each send time is late by tens of microseconds at most.
    let (pace_tx, mut pace_rx) = tokio::sync::mpsc::unbounded_channel();
    let pacer = std::thread::spawn(move || {
        for i in 0..total {
            let scheduled = start + interval * i as u32;
            if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if pace_tx.send(scheduled).is_err() {
                return;
            }
        }
    });
    let mut tasks = Vec::with_capacity(total as usize);
    while let Some(scheduled) = pace_rx.recv().await {
        let (client, body, samples, errors) = (
            client.clone(),
            body.clone(),
            samples.clone(),
            errors.clone(),
        );
        let req = Request::post(url)
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let ok = match client.request(req).await {
                Ok(resp) if resp.status().is_success() => {
                    let mut body = resp.into_body();
                    let mut first = None;
                    let mut ok = true;
                    while let Some(frame) = body.frame().await {
                        match frame {
                            Ok(_) if first.is_none() => first = Some(Instant::now()),
                            Ok(_) => {}
                            Err(_) => ok = false,
                        }
                    }
                    let end = if ttfb {
                        first.unwrap_or_else(Instant::now)
                    } else {
                        Instant::now()
                    };
                    samples
                        .lock()
                        .unwrap()
                        .push((end - scheduled).as_micros() as u64);
                    ok
                }
                _ => false,
            };
            if !ok {
                *errors.lock().unwrap() += 1;
            }
        }));
    }
    let _ = pacer.join();
    for t in tasks {
        let _ = t.await;
    }
    let mut sorted = std::mem::take(&mut *samples.lock().unwrap());
    sorted.sort_unstable();
    let errors = *errors.lock().unwrap();
    Latency {
        p50: percentile(&sorted, 0.50),
        p99: percentile(&sorted, 0.99),
        p999: percentile(&sorted, 0.999),
        count: sorted.len(),
        errors,
    }
}

/// Saturation throughput with wrk (one thread, `connections` connections):
/// requests per second, and the CPU time (µs) `wrk` itself used, since it
/// shares the machine with the servers.
pub fn wrk(
    url: &str,
    key: &str,
    connections: u32,
    seconds: u32,
    script_dir: &std::path::Path,
) -> (f64, f64) {
    let script = script_dir.join("post.lua");
    let lua = format!(
        "wrk.method = \"POST\"\nwrk.body = [[{}]]\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {key}\"\n",
        request_body(false)
    );
    std::fs::write(&script, lua).unwrap();
    let cpu_before = crate::waited_children_cpu_us();
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .expect("wrk (apt-get install wrk)");
    let wrk_cpu = crate::waited_children_cpu_us() - cpu_before;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        eprintln!("wrk saw errors:\n{text}");
    }
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    (rps, wrk_cpu)
}
