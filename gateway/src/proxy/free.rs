//! Requests that cost nothing: a provider's free endpoints (listing models,
//! Anthropic's token count; see [`crate::wire::FreeEndpoint`]) and MCP
//! messages other than `tools/call`.
//!
//! They are passed on only for a known, servable agent that may reach the
//! provider (`caracal_policy::may_reach`: the checks every metered call
//! makes first), with the agent's credential swapped for the provider's as
//! always. They are neither priced nor reserved and write no ledger event;
//! `/metrics` counts them with the outcome `passed`.

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, http::request::Parts};
use serde_json::Value;

use super::{Gateway, admit, path_of, read_body, refusal_for};
use crate::{
    config::{Provider, ProviderKind},
    mock,
    refusal::Refusal,
    upstream::{Body, relayed_headers},
    wire::{Dialect, FreeEndpoint},
};

/// The free endpoint a request to `provider` names, if any.
pub(super) fn free_endpoint(
    kind: ProviderKind,
    method: &Method,
    rest: &str,
) -> Option<FreeEndpoint> {
    let dialect = match kind {
        ProviderKind::Openai | ProviderKind::OpenaiCompatible => Dialect::OpenAi,
        ProviderKind::Anthropic => Dialect::Anthropic,
        ProviderKind::Mock => Dialect::Both,
        ProviderKind::Mcp => return None,
    };
    FreeEndpoint::from_request(dialect, method, path_of(rest))
}

/// Serve a free endpoint of a model provider.
pub(super) async fn handle(
    gw: &Arc<Gateway>,
    provider: &Provider,
    endpoint: FreeEndpoint,
    req: Request<Incoming>,
    rest: &str,
    request_id: &str,
    started: Instant,
) -> Result<Response<Body>, Refusal> {
    let (snapshot, record) = admit(gw, &req, provider, request_id, started)?;
    may_pass(gw, &snapshot, &record.agent, provider)?;
    let (parts, body) = req.into_parts();
    let bytes = posted_body(gw, &parts.method, body, started).await?;
    if provider.kind != ProviderKind::Mock {
        return pass_on(gw, provider, parts, rest, bytes, started).await;
    }
    let models: Vec<&str> = snapshot
        .prices
        .models
        .iter()
        .filter(|m| m.provider == provider.name)
        .map(|m| m.model.as_str())
        .collect();
    let response = match endpoint {
        FreeEndpoint::ListModels => mock::models(&models),
        FreeEndpoint::Model => {
            let id = path_of(rest).rsplit('/').next().unwrap_or_default();
            if !models.contains(&id) {
                return Err(Refusal::new(
                    StatusCode::NOT_FOUND,
                    "model_not_found",
                    format!("the mock provider has no model {id:?}"),
                ));
            }
            mock::model(id)
        }
        FreeEndpoint::CountTokens => {
            let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("the body is not valid JSON: {e}"),
                )
            })?;
            mock::token_count(&body)
        }
    };
    gw.count_unrecorded(&provider.name, "passed", "", started);
    Ok(response)
}

/// The body of a POST, read within the gateway's size limit and call
/// deadline; nothing for other methods (a GET or DELETE carries none).
pub(super) async fn posted_body(
    gw: &Gateway,
    method: &Method,
    body: Incoming,
    started: Instant,
) -> Result<Bytes, Refusal> {
    if *method != Method::POST {
        return Ok(Bytes::new());
    }
    read_body(
        body,
        gw.limits.max_request_bytes,
        started + gw.limits.max_call_duration,
    )
    .await
}

/// Refuse unless the request's agent may reach `provider` now.
pub(super) fn may_pass(
    gw: &Gateway,
    snapshot: &caracal_api::snapshot::ConfigSnapshot,
    agent: &str,
    provider: &Provider,
) -> Result<(), Refusal> {
    let now = chrono::Utc::now();
    caracal_policy::may_reach(snapshot, agent, &provider.name, now)
        .map_err(|d| refusal_for(&d, gw.limits.budget_denial_status, now))
}

/// Forward an unmetered request and relay the answer as it comes.
pub(super) async fn pass_on(
    gw: &Arc<Gateway>,
    provider: &Provider,
    parts: Parts,
    rest: &str,
    bytes: Bytes,
    started: Instant,
) -> Result<Response<Body>, Refusal> {
    let response = gw
        .upstream
        .send(provider, parts.method, rest, &parts.headers, bytes)
        .await
        .map_err(|e| {
            let reason = "upstream_unreachable";
            gw.count_unrecorded(&provider.name, "upstream_error", reason, started);
            Refusal::new(StatusCode::BAD_GATEWAY, reason, e.to_string()).counted()
        })?;
    gw.count_unrecorded(&provider.name, "passed", "", started);
    Ok(relay(response))
}

/// The provider's answer with hop-by-hop headers dropped; the body is
/// relayed as it arrives.
pub(super) fn relay(response: Response<Body>) -> Response<Body> {
    let (parts, body) = response.into_parts();
    let mut out = Response::new(body);
    *out.status_mut() = parts.status;
    *out.headers_mut() = relayed_headers(&parts.headers);
    out
}
