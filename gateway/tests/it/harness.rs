//! A real gateway on a loopback port, with a fake upstream, an in-memory
//! budget store and a spool whose ledger sink keeps what it is sent.

use std::{
    convert::Infallible,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use caracal_api::snapshot::ConfigSnapshot;
use caracal_gateway::{
    config::{Limits, Provider, ProviderKind},
    identity::{KeyTable, digest, generate_key},
    jwt::JwtConfig,
    live::{self, Live, LiveSender},
    proxy::Gateway,
    server,
    spool::{LedgerSink, Spool, SpoolConfig},
    upstream::Body,
};
use caracal_ledger::event::MeteringEvent;
use caracal_policy::{Budgets, MemoryBudgetStore};
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::{net::TcpListener, sync::oneshot};

/// Keeps every batch it is sent; can be told to fail.
#[derive(Default)]
pub struct MemorySink {
    pub events: Mutex<Vec<Vec<u8>>>,
    pub failing: std::sync::atomic::AtomicBool,
    /// Batches accepted.
    pub batches: std::sync::atomic::AtomicUsize,
}

impl LedgerSink for MemorySink {
    fn submit<'a>(&'a self, batch: &'a [Vec<u8>]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err("ledger store unreachable (test)".into());
            }
            self.events.lock().unwrap().extend(batch.iter().cloned());
            self.batches
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        })
    }
}

impl MemorySink {
    pub fn decoded(&self) -> Vec<MeteringEvent> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|b| MeteringEvent::decode(b).expect("canonical event"))
            .collect()
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("caracal-gw-test-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a fake upstream was sent.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: hyper::Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

pub type Handler = Arc<dyn Fn(&Seen) -> Response<Body> + Send + Sync>;

/// An HTTP server on loopback answering with `handler`.
pub struct FakeUpstream {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    _stop: oneshot::Sender<()>,
}

impl FakeUpstream {
    pub async fn start(handler: Handler) -> FakeUpstream {
        Self::start_with(handler, None).await
    }

    /// Served over TLS with `tls` (its URL is `https://127.0.0.1:PORT`).
    pub async fn start_tls(handler: Handler, tls: Arc<rustls::ServerConfig>) -> FakeUpstream {
        Self::start_with(handler, Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn start_with(handler: Handler, tls: Option<tokio_rustls::TlsAcceptor>) -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => r.unwrap(),
                    _ = &mut stopped => return,
                };
                let handler = handler.clone();
                let seen = seen2.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let seen = seen.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let s = Seen {
                                method: parts.method,
                                path: parts.uri.path().to_owned(),
                                query: parts.uri.query().map(str::to_owned),
                                headers: parts.headers,
                                body,
                            };
                            seen.lock().unwrap().push(s.clone());
                            Ok::<_, Infallible>(handler(&s))
                        }
                    });
                    let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        None => server.serve_connection(TokioIo::new(stream), service).await,
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => {
                                server.serve_connection(TokioIo::new(stream), service).await
                            }
                            // A client that does not trust the certificate.
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        FakeUpstream {
            url,
            seen,
            _stop: stop,
        }
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw a request")
    }
}

/// A running gateway and its moving parts.
pub struct TestGateway {
    pub url: String,
    pub key: String,
    pub live: LiveSender,
    pub sink: Arc<MemorySink>,
    /// The gateway behind `url`, to serve on further listeners (TLS).
    pub gateway: Arc<Gateway>,
    _spool_dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl TestGateway {
    /// Tell the server to stop accepting and drain (as on SIGTERM).
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub struct Setup {
    pub providers: Vec<Provider>,
    pub snapshot: Option<ConfigSnapshot>,
    pub agent: String,
    pub limits: Limits,
}

pub fn provider(name: &str, kind: ProviderKind, base: Option<&str>) -> Provider {
    Provider {
        name: name.into(),
        kind,
        base_url: base.map(|b| b.parse().unwrap()),
        credential: Some(format!("sk-provider-{name}")),
        tls_roots: None,
    }
}

/// A gateway for `team/bot` alone, under `rule`, with default limits.
pub async fn start_for_bot(
    providers: Vec<Provider>,
    rule: caracal_api::snapshot::Rule,
) -> TestGateway {
    start(Setup {
        providers,
        snapshot: Some(
            caracal_policy::fixtures::SnapshotBuilder::new()
                .agent("team/bot", &[], vec![rule])
                .build(),
        ),
        agent: "team/bot".into(),
        limits: Limits::default(),
    })
    .await
}

pub async fn start(setup: Setup) -> TestGateway {
    start_with_jwt(setup, None, Vec::new()).await
}

/// Like [`start`], also accepting service-account tokens: `accounts` maps
/// token subjects to agents.
pub async fn start_with_jwt(
    setup: Setup,
    jwt: Option<JwtConfig>,
    accounts: Vec<(String, String)>,
) -> TestGateway {
    let budgets = Budgets::new(Arc::new(MemoryBudgetStore::new()));
    start_full(setup, budgets, jwt, accounts).await
}

/// Like [`start`], with the given budget store instead of a memory one.
pub async fn start_with_budgets(setup: Setup, budgets: Budgets) -> TestGateway {
    start_full(setup, budgets, None, Vec::new()).await
}

async fn start_full(
    setup: Setup,
    budgets: Budgets,
    jwt: Option<JwtConfig>,
    accounts: Vec<(String, String)>,
) -> TestGateway {
    let key = generate_key();
    let (live, rx) = live::channel();
    live.send_replace(Arc::new(Live {
        snapshot: setup.snapshot.map(Arc::new),
        keys: Arc::new(KeyTable::new([(digest(&key), setup.agent.clone())])),
        service_accounts: Arc::new(accounts.into_iter().collect()),
    }));
    let sink = Arc::new(MemorySink::default());
    let spool_dir = TempDir::new();
    let mut spool_config = SpoolConfig::new(spool_dir.0.join("spool"));
    spool_config.flush_interval = Duration::from_millis(20);
    let spool = Spool::open(spool_config, sink.clone()).unwrap();
    let mut gateway =
        Gateway::new(setup.providers, rx, budgets, spool, setup.limits, "gw-test").unwrap();
    if let Some(config) = jwt {
        gateway = gateway.with_jwt(config);
    }
    let gateway = Arc::new(gateway);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let gw = gateway.clone();
    tokio::spawn(async move {
        server::serve(
            listener,
            gw,
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    });
    TestGateway {
        url,
        key,
        live,
        sink,
        gateway,
        _spool_dir: spool_dir,
        stop: Some(stop),
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The status and the OpenAI-shaped error's code, for refusals.
    pub fn refusal(&self) -> (u16, String) {
        let code = self.json()["error"]["code"].as_str().unwrap().to_owned();
        (self.status, code)
    }
}

pub async fn post(url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Answer {
    request(hyper::Method::POST, url, headers, body).await
}

/// Any request, read whole.
pub async fn request(
    method: hyper::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => Bytes::from(format!("<<body error: {e}>>")),
    };
    Answer {
        status,
        headers,
        body,
    }
}

pub async fn get(url: &str) -> Answer {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

impl TestGateway {
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.key)
    }

    /// Send a chat completion with `body` on a raw connection of its own and
    /// return the connection, for tests of clients that hang up.
    pub async fn send_raw_chat(&self, body: &str) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt;
        let addr = self.url.trim_start_matches("http://");
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            self.bearer(),
            body.len()
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        conn
    }

    /// Wait until the sink holds `n` events (the flusher runs every 20 ms).
    pub async fn events(&self, n: usize) -> Vec<MeteringEvent> {
        for _ in 0..200 {
            let events = self.sink.decoded();
            if events.len() >= n {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} events, ledger has {:?}", self.sink.decoded());
    }
}

/// `/metrics` holds every line of `needles`.
pub async fn assert_metrics_contain(gw: &TestGateway, needles: &[&str]) {
    let metrics = get(&format!("{}/metrics", gw.url)).await.text();
    for needle in needles {
        assert!(metrics.contains(needle), "missing {needle}:\n{metrics}");
    }
}

/// A JSON response from a handler.
pub fn json_response(v: serde_json::Value) -> Response<Body> {
    Response::builder()
        .header("content-type", "application/json")
        .body(caracal_gateway::upstream::full(v.to_string()))
        .unwrap()
}

/// An SSE response from a handler, one frame per chunk.
pub fn sse_response(chunks: Vec<String>) -> Response<Body> {
    let frames = chunks
        .into_iter()
        .map(|c| Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(c))));
    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(BodyExt::boxed(body))
        .unwrap()
}
