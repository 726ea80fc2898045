//! Errors as the client's SDK expects them.
//!
//! An agent talks to the gateway through an unmodified OpenAI or Anthropic
//! SDK, so every refusal is shaped like that provider's own error body: the
//! SDK raises its usual exception (a 429 becomes `RateLimitError`, a 403
//! `PermissionDeniedError`) and the message says what Caracal decided and
//! why. Each body carries Caracal's machine-readable reason and the request
//! id, which also travels in the response headers.

use hyper::StatusCode;
use serde_json::{Value, json};

/// Which SDK's error shape to answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorStyle {
    OpenAi,
    Anthropic,
    /// MCP clients get a JSON-RPC-free plain JSON error over HTTP.
    Plain,
}

/// A request the gateway will not (or could not) complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    /// Stable machine-readable cause, e.g. `budget_exhausted`.
    pub reason: String,
    pub message: String,
    /// Seconds until retrying could succeed (budget window reset).
    pub retry_after: Option<u64>,
    /// Already in the metrics: the request's outcome went through
    /// `Gateway::finish` (a recorded denial or upstream failure). A refusal
    /// that was not is counted where it turns into a response.
    pub(crate) counted: bool,
}

impl Refusal {
    pub fn new(status: StatusCode, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
            message: message.into(),
            retry_after: None,
            counted: false,
        }
    }

    /// This refusal's request is already counted in the metrics.
    pub(crate) fn counted(mut self) -> Self {
        self.counted = true;
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 | 403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// The JSON body for `refusal` in `style`.
pub fn error_body(style: ErrorStyle, refusal: &Refusal, request_id: &str) -> Value {
    let message = format!("caracal: {} ({})", refusal.message, refusal.reason);
    match style {
        ErrorStyle::OpenAi => json!({
            "error": {
                "message": message,
                "type": error_type(refusal.status),
                "param": null,
                "code": refusal.reason,
                "request_id": request_id,
            }
        }),
        ErrorStyle::Anthropic => json!({
            "type": "error",
            "error": {
                "type": error_type(refusal.status),
                "message": message,
                "caracal_reason": refusal.reason,
            },
            "request_id": request_id,
        }),
        ErrorStyle::Plain => json!({
            "error": {
                "message": message,
                "reason": refusal.reason,
                "request_id": request_id,
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_match_each_sdk_shape() {
        let refusal = Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "budget_exhausted",
            "daily budget spent",
        );
        let openai = error_body(ErrorStyle::OpenAi, &refusal, "req-1");
        assert_eq!(openai["error"]["type"], "rate_limit_error");
        assert_eq!(openai["error"]["code"], "budget_exhausted");
        assert_eq!(openai["error"]["request_id"], "req-1");
        assert_eq!(
            openai["error"]["message"],
            "caracal: daily budget spent (budget_exhausted)"
        );

        let anthropic = error_body(ErrorStyle::Anthropic, &refusal, "req-1");
        assert_eq!(anthropic["type"], "error");
        assert_eq!(anthropic["error"]["type"], "rate_limit_error");
        assert_eq!(anthropic["error"]["caracal_reason"], "budget_exhausted");
        assert_eq!(anthropic["request_id"], "req-1");
    }

    #[test]
    fn error_types_follow_status() {
        let cases = [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (402, "permission_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "invalid_request_error"),
            (429, "rate_limit_error"),
            (502, "api_error"),
            (503, "overloaded_error"),
        ];
        for (code, want) in cases {
            assert_eq!(
                error_type(StatusCode::from_u16(code).unwrap()),
                want,
                "{code}"
            );
        }
    }
}
