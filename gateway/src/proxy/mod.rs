//! The request path. `handle` routes a request to a provider and turns any
//! refusal into the provider SDK's error shape; the provider-specific flows
//! live in `model` (completions, responses, embeddings, messages), `mcp`,
//! and `free` (endpoints that cost nothing, passed on unmetered).

mod authorize;
mod deny;
mod detach;
mod free;
mod mcp;
mod model;
mod record;
mod stream;

use std::{collections::HashMap, panic::AssertUnwindSafe, sync::Arc, time::Instant};

use bytes::Bytes;
use caracal_api::snapshot::ConfigSnapshot;
use caracal_ledger::event::Outcome;
use caracal_policy::{Budgets, Denial, DenyReason};
use futures::FutureExt;
use http_body_util::{BodyExt, Limited};
use hyper::{
    HeaderMap, Request, Response, StatusCode,
    body::Incoming,
    header::{HeaderName, HeaderValue, RETRY_AFTER},
};
use tracing::Instrument;

pub use deny::refusal_for;
pub use record::Record;

use crate::{
    config::{Limits, Provider, ProviderKind},
    identity,
    jwt::{self, JwtConfig, JwtVerifier},
    live::{Live, LiveReceiver},
    metrics::Metrics,
    mtls::ClientCert,
    readiness::{self, BudgetProbe, Observed},
    refusal::{ErrorStyle, Refusal, error_body},
    spool::{Spool, SpoolError},
    upstream::{Body, UpstreamClient, full},
};

/// Everything the request path shares across connections.
#[derive(Debug)]
pub struct Gateway {
    pub(crate) providers: HashMap<String, Provider>,
    pub(crate) live: LiveReceiver,
    pub(crate) budgets: Budgets,
    pub(crate) spool: Spool,
    pub(crate) upstream: UpstreamClient,
    pub(crate) limits: Limits,
    pub(crate) gateway_id: String,
    pub(crate) metrics: Metrics,
    pub(crate) jwt: Option<Arc<JwtVerifier>>,
    budget_probe: BudgetProbe,
}

impl Gateway {
    pub fn new(
        providers: Vec<Provider>,
        live: LiveReceiver,
        budgets: Budgets,
        spool: Spool,
        limits: Limits,
        gateway_id: impl Into<String>,
    ) -> Result<Gateway, rustls::Error> {
        let upstream = UpstreamClient::new(
            limits.upstream_timeout.min(limits.max_call_duration),
            limits.upstream_connect_timeout,
            &providers,
        )?;
        Ok(Gateway {
            providers: providers.into_iter().map(|p| (p.name.clone(), p)).collect(),
            live,
            budgets,
            upstream,
            spool,
            limits,
            gateway_id: gateway_id.into(),
            metrics: Metrics::new(),
            jwt: None,
            budget_probe: BudgetProbe::default(),
        })
    }

    /// Also accept service-account tokens verified with `config`.
    pub fn with_jwt(mut self, config: JwtConfig) -> Self {
        self.jwt = Some(Arc::new(JwtVerifier::new(config)));
        self
    }

    /// Where the token settings live, to replace them while serving (`None`
    /// when the gateway takes no tokens).
    pub fn jwt_verifier(&self) -> Option<Arc<JwtVerifier>> {
        self.jwt.clone()
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    pub fn metrics_text(&self) -> String {
        self.metrics.render(self.spool.status())
    }

    /// What keeps this gateway from serving a metered request now (empty
    /// when ready): no snapshot, a spool without room, a ledger store that
    /// refused or missed the last batch, or a budget store that does not
    /// answer a ping (cached for a second, see [`crate::readiness`]).
    pub async fn readiness(&self) -> Vec<&'static str> {
        let config_loaded = self.live.borrow().snapshot.is_some();
        let budget_store_answering = self.budget_probe.answering(&self.budgets).await;
        readiness::missing(Observed {
            config_loaded,
            spool_has_room: self.spool.check_room().is_ok(),
            ledger_store_accepting: self.spool.status().sink_healthy,
            budget_store_answering,
        })
    }

    /// Append the request's event to the spool (waiting for fsync) and count
    /// it. An error means the event is not durable.
    pub(crate) async fn finish(
        &self,
        record: &Record,
        snapshot: Option<&ConfigSnapshot>,
    ) -> Result<(), SpoolError> {
        let event = record::event(record, snapshot, &self.gateway_id);
        let result = match event.encode() {
            Ok(bytes) => self.spool.append(bytes).await,
            Err(e) => Err(SpoolError::Io {
                path: self.spool.dir().to_owned(),
                source: std::io::Error::other(e.to_string()),
            }),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "could not record the metering event");
        }
        let outcome = if result.is_ok() {
            record.outcome.as_str()
        } else {
            "unrecorded"
        };
        self.metrics.record(
            &record.provider,
            outcome,
            &record.reason,
            record.cost.get(),
            &record.tokens_by_kind(),
            record.started.elapsed().as_secs_f64(),
        );
        result
    }

    /// Record a refusal decided before anything was forwarded; returns it,
    /// marked as counted.
    pub(crate) async fn finish_denied(
        &self,
        mut record: Record,
        refusal: Refusal,
        snapshot: Option<&ConfigSnapshot>,
    ) -> Refusal {
        record.finish(Outcome::Denied, refusal.reason.clone());
        // The refusal stands whether or not the event could be written.
        let _ = self.finish(&record, snapshot).await;
        refusal.counted()
    }

    /// Count a request that ends without going through [`Self::finish`]: a
    /// refusal before any agent was known or before its record was kept (a
    /// bad key, no config, an unsupported endpoint), or an MCP message
    /// passed on unmetered.
    pub(crate) fn count_unrecorded(
        &self,
        provider: &str,
        outcome: &str,
        reason: &str,
        started: Instant,
    ) {
        self.metrics.record(
            provider,
            outcome,
            reason,
            0,
            &[],
            started.elapsed().as_secs_f64(),
        );
    }
}

/// Serve one request.
pub async fn handle(gw: Arc<Gateway>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let request_id = uuid::Uuid::now_v7().to_string();
    let span = tracing::info_span!("request", request_id = %request_id, method = %req.method(), path = %req.uri().path());
    async move {
        // Polled here, on the connection's task; if the client hangs up
        // first, the request finishes on a task of its own (see `detach`).
        let task = {
            let (gw, request_id) = (gw.clone(), request_id.clone());
            let route = async move { route(&gw, req, &request_id, started).await };
            detach::Detachable::new(AssertUnwindSafe(route.in_current_span()).catch_unwind())
        };
        let mut response = match task.await {
            Ok(response) => response,
            Err(_) => {
                tracing::error!("the request panicked");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
            }
        };
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            // Named by constants: a name given as a string is copied into a
            // new allocation for every response.
            const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
            const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
            response.headers_mut().insert(X_REQUEST_ID, v.clone());
            response.headers_mut().insert(REQUEST_ID, v);
        }
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "done"
        );
        response
    }
    .instrument(span)
    .await
}

async fn route(
    gw: &Arc<Gateway>,
    req: Request<Incoming>,
    request_id: &str,
    started: Instant,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/healthz" => return plain(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let missing = gw.readiness().await;
            let status = if missing.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let mut r = plain(status, &readiness::body(&missing));
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            return r;
        }
        "/metrics" => {
            let mut r = plain(StatusCode::OK, &gw.metrics_text());
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            return r;
        }
        _ => {}
    }
    let trimmed = path.trim_start_matches('/');
    let (name, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    let Some(provider) = gw.providers.get(name) else {
        let refusal = Refusal::new(
            StatusCode::NOT_FOUND,
            "unknown_provider",
            format!("no provider named {name:?} is configured; use /PROVIDER/v1/..."),
        );
        // No provider label: the name is the client's, and any name would
        // add a series.
        gw.metrics.decision(&refusal.reason);
        return refusal_response(ErrorStyle::OpenAi, &refusal, request_id);
    };
    let mut rest = format!("/{rest}");
    if let Some(q) = req.uri().query() {
        rest.push('?');
        rest.push_str(q);
    }
    let style = match provider.kind {
        ProviderKind::Anthropic => ErrorStyle::Anthropic,
        ProviderKind::Mcp => ErrorStyle::Plain,
        // The mock answers both shapes; its errors follow the endpoint.
        ProviderKind::Mock if rest.starts_with("/v1/messages") => ErrorStyle::Anthropic,
        _ => ErrorStyle::OpenAi,
    };
    let free = free::free_endpoint(provider.kind, req.method(), &rest);
    let result = match (provider.kind, free) {
        (ProviderKind::Mcp, _) => mcp::handle(gw, provider, req, &rest, request_id, started).await,
        (_, Some(free)) => free::handle(gw, provider, free, req, &rest, request_id, started).await,
        _ => model::handle(gw, provider, req, &rest, request_id, started).await,
    };
    result.unwrap_or_else(|refusal| {
        if !refusal.counted {
            gw.count_unrecorded(&provider.name, "denied", &refusal.reason, started);
        }
        refusal_response(style, &refusal, request_id)
    })
}

/// The path of `rest` (the part of the request after the provider's name,
/// query included), without its query.
pub(crate) fn path_of(rest: &str) -> &str {
    rest.split('?').next().unwrap_or(rest)
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(full(text.to_owned()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A refusal as an HTTP response in the SDK's error shape.
pub fn refusal_response(style: ErrorStyle, refusal: &Refusal, request_id: &str) -> Response<Body> {
    let body = error_body(style, refusal, request_id).to_string();
    let mut r = Response::new(full(body));
    *r.status_mut() = refusal.status;
    let headers = r.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert(
        "x-caracal-reason",
        HeaderValue::from_str(&refusal.reason).unwrap_or(HeaderValue::from_static("unknown")),
    );
    if let Some(seconds) = refusal.retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    // The official SDKs retry 429 and 5xx by themselves; a budget or policy
    // refusal will not change in the next second, so tell them not to.
    if refusal.status != StatusCode::SERVICE_UNAVAILABLE {
        headers.insert("x-should-retry", HeaderValue::from_static("false"));
    }
    r
}

/// How every metered call (model or MCP) starts: the current snapshot, and
/// a record for the agent the request's credential names. Without a
/// snapshot there are no agents to authenticate against either, so the
/// refusal says `no_config` plainly instead of calling every key invalid.
pub(crate) fn admit(
    gw: &Gateway,
    req: &Request<Incoming>,
    provider: &Provider,
    request_id: &str,
    started: Instant,
) -> Result<(Arc<ConfigSnapshot>, Record), Refusal> {
    let live = gw.live.borrow().clone();
    let Some(snapshot) = live.snapshot.clone() else {
        let no_config = Denial::new(DenyReason::NoConfig, None);
        return Err(refusal_for(
            &no_config,
            gw.limits.budget_denial_status,
            chrono::Utc::now(),
        ));
    };
    let agent = authenticate(
        req.headers(),
        req.extensions().get(),
        &live,
        gw.jwt.as_deref(),
    )?;
    let record = Record::new(request_id, started, &agent, &provider.name);
    Ok((snapshot, record))
}

/// The agent a request's credential names. A verified client certificate
/// on the connection is the credential, whatever the headers say.
pub(crate) fn authenticate(
    headers: &HeaderMap,
    cert: Option<&ClientCert>,
    live: &Live,
    jwt: Option<&JwtVerifier>,
) -> Result<String, Refusal> {
    if let Some(cert) = cert {
        return cert.agent(live);
    }
    let key = identity::presented_key(headers).ok_or_else(|| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "missing_credentials",
            "send your Caracal key or service-account token as `Authorization: Bearer ...` (or a key as `x-api-key`)",
        )
    })?;
    if let Some(verifier) = jwt.filter(|_| jwt::looks_like_jwt(key)) {
        let now = chrono::Utc::now().timestamp();
        let subject = verifier
            .verify(key, now)
            .map_err(|e| Refusal::new(StatusCode::UNAUTHORIZED, "invalid_token", e.to_string()))?;
        return live
            .agent_for_service_account(&subject)
            .map(str::to_owned)
            .ok_or_else(|| {
                Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "unknown_service_account",
                    format!("no Agent runs as {subject}"),
                )
            });
    }
    live.keys.agent_for(key).map(str::to_owned).ok_or_else(|| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "the key is not a known Caracal agent key",
        )
    })
}

/// Read a request body, refusing one over `limit` bytes or one not finished
/// by `deadline` (a client trickling its body would otherwise hold the
/// request, and its task, open without end).
pub(crate) async fn read_body(
    body: Incoming,
    limit: usize,
    deadline: Instant,
) -> Result<Bytes, Refusal> {
    let read = tokio::time::timeout_at(deadline.into(), Limited::new(body, limit).collect());
    let Ok(read) = read.await else {
        return Err(Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_read_timeout",
            "the request body did not arrive within the gateway's call deadline",
        ));
    };
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than the gateway's limit of {limit} bytes"),
        )),
        Err(e) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "body_read_failed",
            format!("could not read the request body: {e}"),
        )),
    }
}

pub(crate) fn spool_refusal(e: &SpoolError) -> Refusal {
    let reason = if matches!(e, SpoolError::Full { .. }) {
        "spool_full"
    } else {
        "spool_unavailable"
    };
    Refusal::new(StatusCode::SERVICE_UNAVAILABLE, reason, e.to_string())
}
