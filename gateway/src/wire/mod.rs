//! Provider wire formats: pure functions over request and response bodies.
//!
//! Nothing in this module does I/O; the proxy calls it with bytes it already
//! holds. Each submodule is table-tested against the providers' real shapes.

mod body;
mod free;
pub mod mcp;
mod meter;
mod request;
mod sse;
mod usage;

pub use body::{BodyError, JsonObject};
pub use free::{Dialect, FreeEndpoint};
pub use meter::{StreamMeter, usage_from_json};
pub use request::{Endpoint, RequestFacts, inspect, prepare};
pub use sse::{SseEvent, SseScanner};
pub use usage::{Usage, anthropic_usage, openai_usage};

/// Longest model or tool name a request may give, in bytes. Names are
/// recorded in the ledger, which keeps every event for good, and echoed in
/// refusals and logs; real names are far shorter (a fine-tuned OpenAI model
/// or a Bedrock ARN is under 150 bytes).
pub const MAX_NAME_BYTES: usize = 256;

/// Why a body could not be read or a stream could not be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the body is not valid JSON")]
    NotJson,
    #[error("the body must be a JSON object")]
    NotObject,
    #[error("the request names no model")]
    MissingModel,
    #[error("field `{0}` is longer than {MAX_NAME_BYTES} bytes")]
    TooLong(&'static str),
    #[error("field `{0}` has the wrong type or an out-of-range value")]
    BadField(&'static str),
    #[error("the response carries no usage report")]
    MissingUsage,
    #[error("the upstream sent an event that is not valid for its stream format")]
    InvalidSse,
    #[error("the upstream sent a stream event that is not UTF-8")]
    SseNotUtf8,
    #[error("the upstream sent a stream event larger than {0} bytes")]
    SseEventTooLarge(usize),
    #[error("the upstream reported an error inside the stream")]
    UpstreamStreamError,
    #[error("not a JSON-RPC request: {0}")]
    NotJsonRpc(&'static str),
}
