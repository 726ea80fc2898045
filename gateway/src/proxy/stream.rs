//! Relaying an SSE stream while metering it.
//!
//! Each upstream chunk is fed to the scanner and then forwarded at once; the
//! gateway never holds more than the unfinished tail of one event. The
//! stream is cut, with an error event in the provider's shape, when the
//! output seen would pass what was reserved. When the upstream ends, the
//! gateway settles and spools the event *before* it ends the client's
//! stream, so a client that saw a complete stream has a durable event.

use std::sync::Arc;

use bytes::Bytes;
use caracal_ledger::event::Outcome;
use futures::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::{Response, StatusCode, body::Frame};
use tokio::sync::mpsc;

use super::{Gateway, Record, model::Metering, model::settle};
use crate::{
    refusal::{ErrorStyle, Refusal, error_body},
    upstream::{Body, relayed_headers},
    wire::{SseScanner, StreamMeter},
};

type Chunk = Result<Frame<Bytes>, std::io::Error>;

/// Start relaying `response`; the returned response streams to the client.
pub(super) fn start(
    gw: Arc<Gateway>,
    response: Response<Body>,
    metering: Metering,
    record: Record,
) -> Response<Body> {
    let (parts, upstream) = response.into_parts();
    let (tx, rx) = mpsc::channel::<Chunk>(16);
    tokio::spawn(pump(gw, upstream, tx, metering, record));
    let body = StreamBody::new(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (c, rx))
    }));
    let mut out = Response::new(body.boxed());
    *out.status_mut() = parts.status;
    *out.headers_mut() = relayed_headers(&parts.headers);
    out
}

/// How a stream ended.
enum End {
    Complete,
    CutOff,
    InvalidSse(String),
    UpstreamReset(String),
    ClientGone,
    /// The call ran past `max_call_duration` (a stalled or endless upstream).
    Deadline,
}

fn error_event(metering: &Metering, refusal: &Refusal, request_id: &str) -> Bytes {
    let anthropic = metering.endpoint.is_anthropic();
    let style = if anthropic {
        ErrorStyle::Anthropic
    } else {
        ErrorStyle::OpenAi
    };
    let body = error_body(style, refusal, request_id);
    let text = if anthropic {
        format!("event: error\ndata: {body}\n\n")
    } else {
        format!("data: {body}\n\n")
    };
    Bytes::from(text)
}

async fn pump(
    gw: Arc<Gateway>,
    mut upstream: Body,
    tx: mpsc::Sender<Chunk>,
    metering: Metering,
    mut record: Record,
) {
    let mut scanner = SseScanner::new(gw.limits.max_sse_event_bytes);
    let mut meter = StreamMeter::new(metering.endpoint);
    let deadline = tokio::time::Instant::from_std(record.started + gw.limits.max_call_duration);
    let end = loop {
        let frame = match tokio::time::timeout_at(deadline, upstream.frame()).await {
            Err(_) => break End::Deadline,
            Ok(None) => break End::Complete,
            Ok(Some(Err(e))) => break End::UpstreamReset(e.to_string()),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let mut problem = None;
            let fed = scanner.feed(data, |event| {
                if problem.is_none()
                    && let Err(e) = meter.observe(&event)
                {
                    problem = Some(e);
                }
            });
            if let Some(e) = fed.err().or(problem) {
                break End::InvalidSse(e.to_string());
            }
            if meter.observed_output() > metering.output_bound {
                break End::CutOff;
            }
        }
        if tx.send(Ok(frame)).await.is_err() {
            break End::ClientGone;
        }
    };
    drop(upstream);

    let reported = meter.usage();
    let observed = meter.observed_output();
    let (outcome, reason, tail) = match &end {
        End::Complete if meter.finished() && reported.is_some() => {
            (Outcome::Allowed, String::new(), None)
        }
        End::Complete => (Outcome::Allowed, "usage_missing".to_owned(), None),
        End::CutOff => {
            let refusal = Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "stream_cut_off",
                "the stream passed the output its reservation pays for",
            );
            (Outcome::CutOff, "stream_cut_off".to_owned(), Some(refusal))
        }
        End::Deadline => {
            let refusal = Refusal::new(
                StatusCode::GATEWAY_TIMEOUT,
                "call_deadline",
                "the provider did not finish within the gateway's call deadline",
            );
            (
                Outcome::UpstreamError,
                "call_deadline".to_owned(),
                Some(refusal),
            )
        }
        End::InvalidSse(detail) => {
            let refusal = Refusal::new(
                StatusCode::BAD_GATEWAY,
                "invalid_upstream_sse",
                detail.clone(),
            );
            (
                Outcome::UpstreamError,
                "invalid_upstream_sse".to_owned(),
                Some(refusal),
            )
        }
        End::UpstreamReset(_) => (Outcome::UpstreamError, "upstream_reset".to_owned(), None),
        End::ClientGone => (Outcome::Allowed, "client_disconnected".to_owned(), None),
    };
    record.cost = match (&end, reported) {
        (End::Complete, Some(usage)) if meter.finished() => {
            record.usage = usage;
            metering.rates.cost(&usage.into())
        }
        _ => {
            if let Some(usage) = reported {
                record.usage = usage;
            }
            record.usage.output_tokens = record
                .usage
                .output_tokens
                .max(observed.saturating_sub(record.usage.reasoning_tokens));
            metering.fallback_cost(observed, reported)
        }
    };
    record.finish(outcome, reason);
    let ((), durable) = tokio::join!(
        settle(&gw, &metering.reservation, record.cost),
        gw.finish(&record, Some(&metering.snapshot))
    );

    match (&end, durable) {
        (_, Err(e)) => {
            // Not recorded: do not let the client take the stream as complete.
            let _ = tx
                .send(Err(std::io::Error::other(format!(
                    "metering event not recorded: {e}"
                ))))
                .await;
        }
        (End::UpstreamReset(detail), Ok(())) => {
            let _ = tx
                .send(Err(std::io::Error::other(format!(
                    "upstream reset: {detail}"
                ))))
                .await;
        }
        (_, Ok(())) => {
            if let Some(refusal) = tail {
                let _ = tx
                    .send(Ok(Frame::data(error_event(
                        &metering,
                        &refusal,
                        &record.request_id,
                    ))))
                    .await;
            }
        }
    }
}
