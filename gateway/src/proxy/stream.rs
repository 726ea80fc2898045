//! Relaying an SSE stream while metering it.
//!
//! The client's response body *is* the relay: each upstream chunk is fed to
//! the scanner and handed to hyper from the same poll, so a chunk crosses no
//! task or channel inside the gateway, and the gateway never holds more than
//! the unfinished tail of one event. The stream is cut, with an error event
//! in the provider's shape, when the output seen would pass what was
//! reserved. When the upstream ends, the gateway settles and spools the
//! event *before* it ends the client's stream, so a client that saw a
//! complete stream has a durable event. That ending runs on a task of its
//! own, which also takes over when the client hangs up (the body is dropped)
//! mid-stream, so every stream is settled and recorded either way.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use caracal_ledger::event::Outcome;
use http_body_util::BodyExt;
use hyper::{Response, StatusCode, body::Frame};
use tokio::sync::oneshot;
use tracing::Instrument;

use super::{Gateway, Record, detach::spawn_outside_async, model::Metering, model::settle};
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
    let deadline = tokio::time::Instant::from_std(record.started + gw.limits.max_call_duration);
    let relay = Relay {
        upstream: Some(upstream),
        deadline: Box::pin(tokio::time::sleep_until(deadline)),
        scanner: SseScanner::new(gw.limits.max_sse_event_bytes),
        meter: StreamMeter::new(metering.endpoint),
        finish: Some(Finish {
            gw,
            metering,
            record,
        }),
        ending: None,
        span: tracing::Span::current(),
    };
    let mut out = Response::new(relay.boxed());
    *out.status_mut() = parts.status;
    *out.headers_mut() = relayed_headers(&parts.headers);
    out
}

/// What settling and recording a stream needs once it has ended.
struct Finish {
    gw: Arc<Gateway>,
    metering: Metering,
    record: Record,
}

/// The client's response body: the upstream's frames, metered as they pass.
struct Relay {
    /// `None` once the stream has ended.
    upstream: Option<Body>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    scanner: SseScanner,
    meter: StreamMeter,
    /// Taken when the stream ends (or the body is dropped before that).
    finish: Option<Finish>,
    /// The ending's task: settles, spools, then sends the stream's last
    /// item (an error event or an error), if any.
    ending: Option<oneshot::Receiver<Option<Chunk>>>,
    /// The request's span, for what the ending logs.
    span: tracing::Span,
}

impl Relay {
    /// The stream ended: stop reading the upstream and settle and record it
    /// on a task of its own.
    fn end(&mut self, end: End) {
        self.upstream = None;
        let Some(finish) = self.finish.take() else {
            return;
        };
        let meter = std::mem::replace(&mut self.meter, StreamMeter::new(finish.metering.endpoint));
        let (tail_tx, tail_rx) = oneshot::channel();
        let task = async move {
            let tail = finish.run(meter, end).await;
            let _ = tail_tx.send(tail);
        };
        spawn_outside_async(
            task.instrument(self.span.clone()),
            "a stream ended outside the runtime; not recorded",
        );
        self.ending = Some(tail_rx);
    }

    /// Feed a chunk to the scanner and meter; `Err` ends the stream.
    fn observe(&mut self, data: &Bytes, output_bound: u64) -> Result<(), End> {
        let mut problem = None;
        let meter = &mut self.meter;
        let fed = self.scanner.feed(data, |event| {
            if problem.is_none()
                && let Err(e) = meter.observe(&event)
            {
                problem = Some(e);
            }
        });
        if let Some(e) = fed.err().or(problem) {
            return Err(End::InvalidSse(e.to_string()));
        }
        if self.meter.observed_output() > output_bound {
            return Err(End::CutOff);
        }
        Ok(())
    }
}

impl hyper::body::Body for Relay {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        let this = self.get_mut();
        loop {
            if let Some(ending) = &mut this.ending {
                // A closed channel means the ending task did not finish (it
                // panicked, or the runtime is shutting down): the event may
                // not be recorded, so the client must not take the stream as
                // complete.
                let tail = ready!(Pin::new(ending).poll(cx)).unwrap_or_else(|_| {
                    Some(Err(std::io::Error::other(
                        "the stream's metering did not finish",
                    )))
                });
                this.ending = None;
                return Poll::Ready(tail);
            }
            let Some(upstream) = &mut this.upstream else {
                return Poll::Ready(None);
            };
            // Also when the provider always has the next chunk ready (the
            // timer below is only polled while it has none).
            if this.deadline.is_elapsed() {
                this.end(End::Deadline);
                continue;
            }
            let frame = match Pin::new(upstream).poll_frame(cx) {
                Poll::Pending => {
                    ready!(this.deadline.as_mut().poll(cx));
                    this.end(End::Deadline);
                    continue;
                }
                Poll::Ready(None) => {
                    this.end(End::Complete);
                    continue;
                }
                Poll::Ready(Some(Err(e))) => {
                    this.end(End::UpstreamReset(e.to_string()));
                    continue;
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            if let Some(data) = frame.data_ref() {
                let bound = this
                    .finish
                    .as_ref()
                    .map_or(u64::MAX, |f| f.metering.output_bound);
                if let Err(end) = this.observe(data, bound) {
                    this.end(end);
                    continue;
                }
            }
            return Poll::Ready(Some(Ok(frame)));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.upstream.is_none() && self.ending.is_none()
    }
}

impl Drop for Relay {
    /// The client went away before the stream ended: record what it got.
    fn drop(&mut self) {
        if self.finish.is_some() {
            self.end(End::ClientGone);
        }
    }
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

impl Finish {
    /// Settle and spool the stream's event; returns what the client's stream
    /// ends with, if anything.
    async fn run(self, meter: StreamMeter, end: End) -> Option<Chunk> {
        let Finish {
            gw,
            metering,
            mut record,
        } = self;
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
                match end {
                    // The client hung up: the provider stops soon after, and
                    // the tokens seen are what it generated, give or take.
                    End::ClientGone => metering.client_gone_cost(observed, reported),
                    // Cut off, stalled, broken or silent about its usage: the
                    // deltas seen bound nothing the provider bills (hidden
                    // reasoning, output after the cut), so, as for a JSON
                    // answer without usage, the whole reservation.
                    _ => metering.reservation.amount,
                }
            }
        };
        record.finish(outcome, reason);
        let ((), durable) = tokio::join!(
            settle(&gw, &metering.reservation, record.cost),
            gw.finish(&record, Some(&metering.snapshot))
        );

        match (&end, durable) {
            // Not recorded: do not let the client take the stream as complete.
            (_, Err(e)) => Some(Err(std::io::Error::other(format!(
                "metering event not recorded: {e}"
            )))),
            (End::UpstreamReset(detail), Ok(())) => Some(Err(std::io::Error::other(format!(
                "upstream reset: {detail}"
            )))),
            (_, Ok(())) => tail.map(|refusal| {
                Ok(Frame::data(error_event(
                    &metering,
                    &refusal,
                    &record.request_id,
                )))
            }),
        }
    }
}
