//! SIGKILL under load loses no event for a response the gateway delivered.

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::{
    dev::{Dev, agent_with_budget, config_yaml},
    harness::{FakeUpstream, scratch_dir},
};

/// One keep-alive HTTP/1.1 client; true for each complete 200 response.
fn client_loop(port: u16, key: String, stop: Arc<AtomicBool>, delivered: Arc<AtomicUsize>) {
    let body = r#"{"model":"gpt-4o-mini","max_tokens":20,"messages":[{"role":"user","content":"usage=10/20"}]}"#;
    let request = format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    'connect: while !stop.load(Ordering::SeqCst) {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        loop {
            if stop.load(Ordering::SeqCst) || stream.write_all(request.as_bytes()).is_err() {
                continue 'connect;
            }
            // Read the head, then exactly content-length bytes.
            let mut buf = Vec::new();
            let mut byte = [0u8; 1];
            while !buf.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => buf.push(byte[0]),
                    _ => return,
                }
            }
            let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
            let Some(len) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
            else {
                return;
            };
            let mut body = vec![0u8; len];
            if stream.read_exact(&mut body).is_err() {
                return;
            }
            if head.starts_with("http/1.1 200") {
                delivered.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

#[test]
fn sigkill_under_load_loses_no_delivered_event() {
    sigkill_under_load("crash", "");
}

/// The same with `spoolAck: write`, where `caracal dev` stores batches from
/// its idle-priority ledger thread with a second connection to the SQLite
/// file whenever it can (gateway/src/ledger_sink/calm.rs).
#[test]
fn sigkill_under_load_loses_no_delivered_event_with_write_acks() {
    sigkill_under_load("crash-write", "spoolAck: write\n");
}

fn sigkill_under_load(name: &str, extra_config: &str) {
    let dir = scratch_dir(name);
    let upstream = FakeUpstream::start(&dir);
    let mut dev = Dev::start(
        &dir,
        &agent_with_budget("team", "bot", "100.00", ""),
        &format!("{}{extra_config}", config_yaml(&upstream)),
        &[],
        true,
    );
    let key = dev.key("team", "bot");
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (key, stop, delivered) = (key.clone(), stop.clone(), delivered.clone());
            let port = dev.port;
            thread::spawn(move || client_loop(port, key, stop, delivered))
        })
        .collect();
    let started = Instant::now();
    while delivered.load(Ordering::SeqCst) < 200 && started.elapsed() < Duration::from_secs(20) {
        thread::sleep(Duration::from_millis(10));
    }
    dev.process.kill_hard();
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.join();
    }
    let delivered = delivered.load(Ordering::SeqCst);
    assert!(delivered >= 200, "load did not get going: {delivered}");

    // Restart on the same state: the spool is replayed into the ledger.
    dev.restart();
    let served = upstream.served().len();
    let events = dev.ledger_at_least("team/bot", delivered, Duration::from_secs(30));
    let allowed = events.iter().filter(|e| e["outcome"] == "allowed").count();
    eprintln!(
        "SIGKILL test: clients received {delivered} responses, upstream served {served}, ledger has {allowed} allowed events"
    );
    assert!(
        allowed >= delivered,
        "ledger has {allowed} allowed events, clients received {delivered} responses"
    );
    assert!(
        allowed <= served,
        "ledger has {allowed} allowed events, upstream served only {served}"
    );
    let (ok, report) = dev.merkle_verify();
    assert!(ok, "{report}");
}
