//! The three servers the benchmark starts, each in its own process: a fake
//! provider, a plain hyper pass-through proxy (the baseline) and the gateway
//! with auth, reservation, settle and the ledger all on.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use caracal_gateway::{
    config::{Limits, Provider, ProviderKind},
    identity::{KeyTable, digest},
    ledger_sink::{SequencingSink, SignedSink, calm_lane_suits},
    live::{self, Live},
    proxy::Gateway,
    server,
    spool::{AckAfter, Spool, SpoolConfig},
    upstream::{Body, full},
};
use caracal_ledger::{
    batch::BatchSigner,
    keys::KeyPair,
    store::{Ledger, LedgerStore},
};
use caracal_policy::{
    Budgets, MemoryBudgetStore, RedisBudgetStore,
    fixtures::{SnapshotBuilder, daily, policy_rule, with_budget},
};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::net::TcpListener;

/// A sink that drops batches (set `BENCH_NULL_LEDGER` to isolate the
/// ledger store's cost; never used for the recorded figures). With
/// `BENCH_BURN_US=N` each batch instead spins a blocking thread for N µs: a
/// stand-in for the ledger's CPU burst, to see what a burst of a given
/// length does to the requests' latency. `BENCH_BURN_POLICY=idle` or `nice`
/// first moves that thread to `SCHED_IDLE` or nice 19 (with `chrt` or
/// `renice`), to see whether priority alone shields the requests.
struct NullSink;

impl caracal_gateway::spool::LedgerSink for NullSink {
    fn submit<'a>(
        &'a self,
        _batch: &'a [Vec<u8>],
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        let burn = env_number("BENCH_BURN_US").unwrap_or(0);
        Box::pin(async move {
            if burn > 0 {
                let _ = tokio::task::spawn_blocking(move || burn_cpu(burn)).await;
            }
            Ok(())
        })
    }
}

/// A whole-number environment variable (diagnosis settings).
fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number"))
    })
}

/// Spin the calling thread for `micros`, after moving it to the scheduling
/// class `BENCH_BURN_POLICY` names.
fn burn_cpu(micros: u64) {
    let thread = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    let tid = thread
        .file_name()
        .and_then(|t| t.to_str())
        .unwrap_or_default();
    let priority = match std::env::var("BENCH_BURN_POLICY").as_deref() {
        Ok("idle") => Some(("chrt", vec!["-i", "-p", "0", tid])),
        Ok("nice") => Some(("renice", vec!["-n", "19", "-p", tid])),
        _ => None,
    };
    if let Some((tool, args)) = priority {
        let status = std::process::Command::new(tool)
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(status.success(), "{tool} failed");
    }
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_micros(micros) {
        std::hint::spin_loop();
    }
}

/// The agent key the gateway role accepts.
pub const BENCH_KEY: &str = "ck_bench0000000000000000000000000000000000000000000000000000000000";

/// Serve `handler` on `port` forever.
async fn serve_fn<F, Fut>(port: u16, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    println!("ready");
    loop {
        let (stream, _) = listener.accept().await.expect("accept");
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A provider answering chat completions with a ~1 KB JSON body, or an SSE
/// stream (first event at once) when the request asks to stream.
pub async fn upstream(port: u16) {
    let text = "x".repeat(800);
    let json = Bytes::from(
        serde_json::json!({"id": "c", "object": "chat.completion", "model": "gpt-test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 250, "completion_tokens": 16, "total_tokens": 266}})
        .to_string(),
    );
    serve_fn(port, move |req: Request<Incoming>| {
        let json = json.clone();
        async move {
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            if memchr::memmem::find(&body, b"\"stream\":true").is_some() {
                let mut chunks: Vec<String> = (0..16)
                    .map(|_| "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \"}}]}\n\n".to_owned())
                    .collect();
                chunks.push("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":250,\"completion_tokens\":16}}\n\n".into());
                chunks.push("data: [DONE]\n\n".into());
                let frames = chunks.into_iter().map(|c| Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(c))));
                let body = StreamBody::new(futures::stream::iter(frames));
                return Response::builder().header("content-type", "text/event-stream").body(body.boxed()).unwrap();
            }
            Response::builder().header("content-type", "application/json").body(full(json)).unwrap()
        }
    })
    .await
}

/// The baseline: forwards every request to the upstream and streams the
/// answer back, with nothing else.
pub async fn plain_proxy(port: u16, upstream: String) {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http();
    let upstream = Arc::new(upstream);
    serve_fn(port, move |req: Request<Incoming>| {
        let client = client.clone();
        let upstream = upstream.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let uri = format!(
                "{upstream}{}",
                parts.uri.path().trim_start_matches("/openai")
            );
            let mut out = Request::builder().method(parts.method).uri(uri);
            for (k, v) in parts.headers.iter().filter(|(k, _)| *k != "host") {
                out = out.header(k, v);
            }
            match client.request(out.body(Full::new(body)).unwrap()).await {
                Ok(r) => r.map(|b| b.map_err(std::io::Error::other).boxed()),
                Err(e) => Response::builder()
                    .status(502)
                    .body(full(e.to_string()))
                    .unwrap(),
            }
        }
    })
    .await
}

/// The gateway with virtual-key auth, policy evaluation, reservation and
/// settle (in memory, or Redis when given), and its fsync'd spool shipped in
/// signed batches to a ledger store. With no `ledger_url` it runs as
/// `caracal dev` does: a SQLite ledger in the state folder with the
/// sequencer in the same process. With a Postgres URL it runs as in a
/// cluster: the ledger is Postgres and the sequencer is another process
/// (the `sequencer` role, standing in for the operator).
pub async fn gateway(
    port: u16,
    upstream: String,
    state: std::path::PathBuf,
    redis: Option<(String, String)>,
    ack_on_write: bool,
    ledger_url: Option<String>,
) {
    let snapshot = SnapshotBuilder::new()
        .agent(
            "bench/agent",
            &[],
            vec![with_budget(
                policy_rule("bench/policy", "bench/agent"),
                1_000_000_000_000, /* $1M: Redis counts exactly only below 2^53 */
                daily("UTC"),
                "bench/agent",
            )],
        )
        .build();
    let (live_tx, live_rx) = live::channel();
    live_tx.send_replace(Arc::new(Live {
        snapshot: Some(Arc::new(snapshot)),
        keys: Arc::new(KeyTable::new([(
            digest(BENCH_KEY),
            "bench/agent".to_owned(),
        )])),
        ..Live::default()
    }));
    let budgets = match redis {
        Some((url, prefix)) => Budgets::new(Arc::new(
            RedisBudgetStore::connect(&url, &prefix)
                .await
                .expect("redis"),
        )),
        None => Budgets::new(Arc::new(MemoryBudgetStore::new())),
    };
    std::fs::create_dir_all(&state).unwrap();
    let in_process = ledger_url.is_none();
    let url = ledger_url.unwrap_or_else(|| format!("sqlite:{}", state.join("ledger.db").display()));
    let ledger = Arc::new(Ledger::open(&url).await.expect("ledger"));
    let gateway_key = KeyPair::generate("bench-gateway").unwrap();
    ledger
        .register_submitter(gateway_key.public())
        .await
        .unwrap();
    let ack = if ack_on_write {
        AckAfter::Write
    } else {
        AckAfter::Fsync
    };
    let sink: Arc<dyn caracal_gateway::spool::LedgerSink> = if std::env::var("BENCH_NULL_LEDGER")
        .is_ok()
    {
        // Diagnosis only: ship batches nowhere, to see the ledger's share.
        Arc::new(NullSink)
    } else if in_process {
        // As caracal dev: each batch is sequenced as it is shipped, with
        // `spoolAck: write` from an idle-priority thread while there is
        // idle CPU (`BENCH_NORMAL_PRIORITY_LEDGER` turns that off, for
        // comparison).
        let sink = SequencingSink::new(
            ledger.clone(),
            BatchSigner::new(gateway_key),
            KeyPair::generate("bench-log").unwrap(),
        );
        if calm_lane_suits(&url, ack) && std::env::var("BENCH_NORMAL_PRIORITY_LEDGER").is_err() {
            Arc::new(sink.with_calm_lane(&url).await)
        } else {
            Arc::new(sink)
        }
    } else {
        Arc::new(SignedSink::new(
            ledger.clone(),
            BatchSigner::new(gateway_key),
        ))
    };
    let mut spool_config = SpoolConfig::new(state.join("spool"));
    // Diagnosis: when the flusher ships (see `spool::SpoolConfig`).
    if let Some(ms) = env_number("BENCH_SHIP_DELAY_MS") {
        spool_config.ship_delay = Duration::from_millis(ms);
    }
    if let Some(records) = env_number("BENCH_SHIP_RECORDS") {
        spool_config.ship_records = records as usize;
    }
    spool_config.ack_after = ack;
    let spool = Spool::open(spool_config, sink).unwrap();
    let provider = Provider {
        name: "openai".into(),
        kind: ProviderKind::Openai,
        base_url: Some(upstream.parse().unwrap()),
        credential: Some("sk-bench".into()),
        tls_roots: None,
    };
    let gw = Arc::new(
        Gateway::new(
            vec![provider],
            live_rx,
            budgets,
            spool,
            Limits::default(),
            "bench-gateway",
        )
        .unwrap(),
    );
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    println!("ready");
    server::serve(listener, gw, std::future::pending(), Duration::from_secs(1))
        .await
        .unwrap();
}

/// Sequence whatever is pending every 250 ms, signing a checkpoint each time.
async fn sequence_forever(ledger: Arc<Ledger>) {
    let log_key = KeyPair::generate("bench-log").unwrap();
    loop {
        let _ = ledger.sequence_pending(&log_key).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The operator's part in a cluster: the ledger's sequencer, alone.
pub async fn sequencer(ledger_url: String) {
    let ledger = Arc::new(Ledger::open(&ledger_url).await.expect("ledger"));
    println!("ready");
    sequence_forever(ledger).await;
}
