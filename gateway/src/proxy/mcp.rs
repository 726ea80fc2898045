//! MCP over streamable HTTP.
//!
//! `tools/call` is evaluated (allowlists, per-call price, budgets) and
//! charged its per-call price when the server accepts it (2xx). Every other
//! message passes once the agent may reach this server (see `free`); such
//! messages cost nothing and produce no ledger event. Responses,
//! including SSE streams, are relayed as they come. The tool call's event is
//! spooled before the response starts, since its cost is known by then.

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use caracal_ledger::event::Outcome;
use caracal_policy::{Call, Pricing, Request as PolicyRequest};
use hyper::{Method, Request, Response, StatusCode, body::Incoming};

use super::{
    Gateway, admit,
    authorize::{Authorized, authorize},
    free,
    model::settle,
    spool_refusal,
};
use crate::{
    config::Provider,
    refusal::Refusal,
    upstream::Body,
    wire::mcp::{McpMessage, classify_canonical},
};

pub(super) async fn handle(
    gw: &Arc<Gateway>,
    provider: &Provider,
    req: Request<Incoming>,
    rest: &str,
    request_id: &str,
    started: Instant,
) -> Result<Response<Body>, Refusal> {
    // Streamable HTTP has one endpoint, the configured URL. Any other path
    // would reach whatever else that server hosts (another MCP server's
    // endpoint, its admin pages) under this server's name and allowlist.
    if super::path_of(rest) != "/" {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "unsupported_endpoint",
            format!(
                "MCP server {:?} is served at /{} itself, not at sub-paths",
                provider.name, provider.name
            ),
        ));
    }
    let now = chrono::Utc::now();
    let (snapshot, mut record) = admit(gw, &req, provider, request_id, started)?;
    let agent = record.agent.clone();
    let (parts, body) = req.into_parts();
    let bytes = free::posted_body(gw, &parts.method, body, started).await?;
    let (message, bytes) = if parts.method == Method::POST {
        let (message, canonical) = classify_canonical(&bytes).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "invalid_mcp_message",
                e.to_string(),
            )
        })?;
        (message, Bytes::from(canonical))
    } else {
        (McpMessage::Other, bytes)
    };

    let McpMessage::ToolCall { tool } = message else {
        // Not metered, but still only for agents that may use this server.
        free::may_pass(gw, &snapshot, &agent, provider)?;
        return free::pass_on(gw, provider, parts, rest, bytes, started).await;
    };

    record.tool = Some(tool.clone());
    if let Err(e) = gw.spool.check_room() {
        return Err(gw
            .finish_denied(record, spool_refusal(&e), Some(&snapshot))
            .await);
    }
    let request = PolicyRequest {
        agent: &agent,
        provider: &provider.name,
        call: Call::Tool { tool: &tool },
    };
    let Authorized {
        allowed,
        reservation,
        mut record,
    } = authorize(gw, record, &snapshot, &request, now).await?;
    let per_call = match allowed.pricing {
        Pricing::Tool { per_call } => per_call,
        // `authorize` refuses a tool call priced as a model.
        Pricing::Model(_) => reservation.amount,
    };
    let response = match gw
        .upstream
        .send(provider, parts.method, rest, &parts.headers, bytes)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            // The server may have run the tool if it got the call.
            if e.may_have_reached_provider() {
                record.cost = per_call;
            }
            settle(gw, &reservation, record.cost).await;
            record.finish(Outcome::UpstreamError, "upstream_unreachable");
            let _ = gw.finish(&record, Some(&snapshot)).await;
            return Err(Refusal::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                e.to_string(),
            )
            .counted());
        }
    };
    if response.status().is_success() {
        record.cost = per_call;
        record.finish(Outcome::Allowed, "");
    } else {
        record.finish(
            Outcome::UpstreamError,
            format!("upstream_status_{}", response.status().as_u16()),
        );
    }
    settle(gw, &reservation, record.cost).await;
    gw.finish(&record, Some(&snapshot))
        .await
        .map_err(|e| spool_refusal(&e).counted())?;
    Ok(free::relay(response))
}
