//! Model calls: chat completions, responses, embeddings, messages.
//!
//! Order matters and is the design's: authenticate, evaluate, reserve, cap
//! the output at what was reserved, forward, meter, settle, spool, respond.
//! Every early exit before forwarding is a recorded denial; every exit after
//! reserving settles (committing what was used, releasing the rest).

use std::{sync::Arc, time::Instant};

use caracal_api::{Micros, snapshot::ConfigSnapshot};
use caracal_ledger::event::Outcome;
use caracal_policy::{Call, ModelRates, Pricing, Request as PolicyRequest, Reservation};
use http_body_util::{BodyExt, Limited};
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{HeaderName, HeaderValue},
};
use serde_json::Value;

use super::{
    Gateway, Record, admit,
    authorize::{Authorized, authorize},
    read_body, spool_refusal, stream,
};
use crate::{
    config::{Provider, ProviderKind},
    mock,
    refusal::Refusal,
    upstream::{Body, full, relayed_headers},
    wire::{self, BodyError, Endpoint, JsonObject, RequestFacts, Usage, WireError},
};

fn endpoint_for(kind: ProviderKind, rest: &str) -> Option<Endpoint> {
    let endpoint = Endpoint::from_path(super::path_of(rest))?;
    let fits = match kind {
        ProviderKind::Anthropic => endpoint == Endpoint::Messages,
        ProviderKind::Openai | ProviderKind::OpenaiCompatible => endpoint != Endpoint::Messages,
        ProviderKind::Mock => true,
        ProviderKind::Mcp => false,
    };
    fits.then_some(endpoint)
}

fn bad_request(reason: &str, message: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, reason, message)
}

/// What the stream pump and the JSON path need after the upstream answered.
pub(super) struct Metering {
    pub endpoint: Endpoint,
    pub rates: ModelRates,
    pub reservation: Reservation,
    pub facts: RequestFacts,
    /// Most output tokens the reservation pays for, all choices together.
    pub output_bound: u64,
    pub snapshot: Arc<ConfigSnapshot>,
}

impl Metering {
    /// Cost of a stream the client hung up on before the provider reported
    /// its usage: the output seen (each delta one token at least, so a lower
    /// bound), never more than was reserved.
    pub fn client_gone_cost(&self, observed_output: u64, usage: Option<Usage>) -> Micros {
        let cost = match usage {
            Some(mut u) => {
                let extra = observed_output.saturating_sub(u.total_output());
                u.output_tokens += extra;
                self.rates.cost(&u.into())
            }
            None => self
                .rates
                .worst_case(self.facts.input_bound, observed_output),
        };
        cost.min(self.reservation.amount)
    }
}

pub(super) async fn handle(
    gw: &Arc<Gateway>,
    provider: &Provider,
    req: Request<Incoming>,
    rest: &str,
    request_id: &str,
    started: Instant,
) -> Result<Response<Body>, Refusal> {
    let endpoint = endpoint_for(provider.kind, rest)
        .filter(|_| req.method() == Method::POST)
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                "unsupported_endpoint",
                format!(
                    "{} {rest} is not a metered endpoint of provider {:?}",
                    req.method(),
                    provider.name
                ),
            )
        })?;
    let (snapshot, mut record) = admit(gw, &req, provider, request_id, started)?;
    let agent = record.agent.clone();
    let (parts, body) = req.into_parts();
    let bytes = read_body(
        body,
        gw.limits.max_request_bytes,
        started + gw.limits.max_call_duration,
    )
    .await;
    let early = bytes.as_ref().map_err(Clone::clone).and_then(|bytes| {
        // Checked as JSON whole, but only the top-level members are kept
        // apart; the rest is forwarded as sent (see `wire::JsonObject`).
        let json = JsonObject::parse(bytes).map_err(|e| match e {
            BodyError::Invalid(e) => {
                bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
            }
            BodyError::NotObject => {
                bad_request("invalid_request", WireError::NotObject.to_string())
            }
        })?;
        let facts = wire::inspect(endpoint, &json, bytes.len())
            .map_err(|e| bad_request("invalid_request", e.to_string()))?;
        gw.spool.check_room().map_err(|e| spool_refusal(&e))?;
        Ok::<_, Refusal>((json, facts, bytes.len()))
    });
    let (mut json, facts, bytes_len) = match early {
        Ok(v) => v,
        Err(refusal) => {
            return Err(gw.finish_denied(record, refusal, Some(&snapshot)).await);
        }
    };
    record.model = Some(facts.model.clone());

    let now = chrono::Utc::now();
    let requested_total = facts
        .requested_output
        .map(|o| u32::try_from(facts.output_bound(o)).unwrap_or(u32::MAX));
    let call = Call::Model {
        model: &facts.model,
        input_tokens: facts.input_bound,
        max_tokens: requested_total,
    };
    let policy_request = PolicyRequest {
        agent: &agent,
        provider: &provider.name,
        call,
    };
    let Authorized {
        allowed,
        reservation,
        mut record,
    } = authorize(gw, record, &snapshot, &policy_request, now).await?;
    let Pricing::Model(rates) = allowed.pricing else {
        // `authorize` refuses a model call priced as a tool; release the hold
        // rather than panic should that ever change.
        settle(gw, &reservation, Micros::ZERO).await;
        return Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "pricing_mismatch",
            "a model call was priced as a tool",
        ));
    };

    // Cap output at what the reservation pays for.
    let total_cap = allowed
        .max_tokens_for(reservation.amount)
        .or(requested_total)
        .map(u64::from);
    let per_choice = total_cap.map(|t| t / facts.choices);
    if endpoint != Endpoint::Embeddings && per_choice == Some(0) {
        settle(gw, &reservation, Micros::ZERO).await;
        let refusal = Refusal::new(
            gw.limits.budget_denial_status,
            "budget_exhausted",
            "the remaining budget cannot pay for a single output token",
        );
        return Err(gw.finish_denied(record, refusal, Some(&snapshot)).await);
    }
    let effective = match per_choice {
        Some(cap) => wire::prepare(
            endpoint,
            &mut json,
            cap,
            provider.kind == ProviderKind::OpenaiCompatible,
        ),
        None => 0,
    };
    let metering = Metering {
        endpoint,
        rates,
        reservation,
        output_bound: facts.output_bound(effective),
        facts,
        snapshot: snapshot.clone(),
    };

    // Forward.
    let upstream = if provider.kind == ProviderKind::Mock {
        // The mock reads the whole request (to count words); it is for
        // trying Caracal out, not the hot path.
        let json: Value = serde_json::from_slice(&json.to_vec(bytes_len)).unwrap_or_default();
        Ok(mock::respond(endpoint, &json))
    } else {
        let body = json.to_vec(bytes_len);
        gw.upstream
            .send(provider, parts.method, rest, &parts.headers, body.into())
            .await
    };
    let response = match upstream {
        Ok(r) => r,
        Err(e) => {
            // Waited out or cut after sending: the provider may bill the
            // call, so charge the reservation; never connected: nothing.
            if e.may_have_reached_provider() {
                record.cost = metering.reservation.amount;
            }
            settle(gw, &metering.reservation, record.cost).await;
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

    let status = response.status();
    let streaming = metering.facts.stream
        && status.is_success()
        && response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
    if streaming {
        return Ok(stream::start(gw.clone(), response, metering, record));
    }
    relay_whole(gw, response, metering, record).await
}

/// A non-streamed answer (or any upstream error): read it whole, meter,
/// settle, spool, then respond.
async fn relay_whole(
    gw: &Arc<Gateway>,
    response: Response<Body>,
    metering: Metering,
    mut record: Record,
) -> Result<Response<Body>, Refusal> {
    let (parts, body) = response.into_parts();
    let deadline = tokio::time::Instant::from_std(record.started + gw.limits.max_call_duration);
    let read = tokio::time::timeout_at(
        deadline,
        Limited::new(body, gw.limits.max_response_bytes).collect(),
    )
    .await
    .unwrap_or_else(|_| {
        Err("the provider did not finish within the gateway's call deadline".into())
    });
    let bytes = match read {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            // The provider may have billed this; charge the reservation.
            settle(gw, &metering.reservation, metering.reservation.amount).await;
            record.cost = metering.reservation.amount;
            record.finish(Outcome::UpstreamError, "upstream_body_failed");
            let _ = gw.finish(&record, Some(&metering.snapshot)).await;
            return Err(Refusal::new(
                StatusCode::BAD_GATEWAY,
                "upstream_body_failed",
                format!("reading the provider's response failed: {e}"),
            )
            .counted());
        }
    };
    if parts.status.is_success() {
        match wire::usage_from_json(metering.endpoint, &bytes) {
            Ok(usage) => {
                record.usage = usage;
                record.cost = metering.rates.cost(&usage.into());
                record.finish(Outcome::Allowed, "");
            }
            Err(e) => {
                tracing::warn!(error = %e, "no usage in the provider's answer; charging the reservation");
                record.cost = metering.reservation.amount;
                record.finish(Outcome::Allowed, "usage_missing");
            }
        }
    } else {
        // Providers do not bill refused requests.
        record.finish(
            Outcome::UpstreamError,
            format!("upstream_status_{}", parts.status.as_u16()),
        );
    }
    // Settling and spooling are independent; do them at once.
    let ((), durable) = tokio::join!(
        settle(gw, &metering.reservation, record.cost),
        gw.finish(&record, Some(&metering.snapshot))
    );
    if let Err(e) = durable {
        return Err(spool_refusal(&e).counted());
    }
    let mut out = Response::new(full(bytes));
    *out.status_mut() = parts.status;
    *out.headers_mut() = relayed_headers(&parts.headers);
    const COST: HeaderName = HeaderName::from_static("x-caracal-cost-micros");
    out.headers_mut()
        .insert(COST, HeaderValue::from(record.cost.get()));
    Ok(out)
}

/// Commit `actual` on the reservation. A failure leaves the hold to expire
/// (never an overspend); it is logged, and the event still records the cost.
pub(super) async fn settle(gw: &Gateway, reservation: &Reservation, actual: Micros) {
    if let Err(e) = gw
        .budgets
        .settle(reservation, actual, chrono::Utc::now())
        .await
    {
        tracing::warn!(error = %e, reservation = %reservation.id, "settle failed; the hold will expire on its own");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_fit_the_provider_kind() {
        use ProviderKind::*;
        let cases = [
            (
                Openai,
                "/v1/chat/completions",
                Some(Endpoint::ChatCompletions),
            ),
            (Openai, "/v1/messages", None),
            (
                Anthropic,
                "/v1/messages?beta=true",
                Some(Endpoint::Messages),
            ),
            (Anthropic, "/v1/chat/completions", None),
            (
                OpenaiCompatible,
                "/v1/embeddings",
                Some(Endpoint::Embeddings),
            ),
            (Mock, "/v1/messages", Some(Endpoint::Messages)),
            (Mock, "/v1/files", None),
            (Mcp, "/v1/chat/completions", None),
        ];
        for (kind, rest, want) in cases {
            assert_eq!(endpoint_for(kind, rest), want, "{kind:?} {rest}");
        }
    }
}
