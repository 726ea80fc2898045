//! MCP over streamable HTTP: which JSON-RPC messages the gateway meters.
//!
//! Only `tools/call` costs money or touches the outside world on the agent's
//! behalf, so only it is allowlisted and priced per tool; every other
//! message (initialize, tools/list, notifications, responses) passes. A
//! batch that hides a `tools/call` is refused rather than half-metered.

use serde_json::Value;

use crate::wire::WireError;

/// What one POSTed MCP message asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum McpMessage {
    /// `tools/call` for the named tool.
    ToolCall { tool: String },
    /// Anything else; forwarded without a charge.
    Other,
}

fn is_tool_call(v: &Value) -> bool {
    v.get("method").and_then(Value::as_str) == Some("tools/call")
}

/// Classify a POST body sent to an MCP server.
pub fn classify(body: &[u8]) -> Result<McpMessage, WireError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| WireError::NotJson)?;
    classify_value(&v)
}

/// Classify a POST body and return the bytes to forward: the message as the
/// gateway read it, re-serialised. Forwarding the client's own bytes would
/// let a repeated key (`"method"` twice) mean `ping` here and `tools/call`
/// to a server whose parser keeps the first value, an unmetered call.
pub fn classify_canonical(body: &[u8]) -> Result<(McpMessage, Vec<u8>), WireError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| WireError::NotJson)?;
    let message = classify_value(&v)?;
    let canonical = serde_json::to_vec(&v).map_err(|_| WireError::NotJson)?;
    Ok((message, canonical))
}

fn classify_value(v: &Value) -> Result<McpMessage, WireError> {
    match v {
        Value::Array(items) => {
            if items.iter().any(is_tool_call) {
                Err(WireError::NotJsonRpc(
                    "a batch may not contain tools/call; send each call on its own",
                ))
            } else {
                Ok(McpMessage::Other)
            }
        }
        Value::Object(_) if is_tool_call(v) => {
            let tool = v
                .pointer("/params/name")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .ok_or(WireError::NotJsonRpc("tools/call needs params.name"))?;
            if tool.len() > super::MAX_NAME_BYTES {
                return Err(WireError::TooLong("params.name"));
            }
            Ok(McpMessage::ToolCall {
                tool: tool.to_owned(),
            })
        }
        Value::Object(_) => Ok(McpMessage::Other),
        _ => Err(WireError::NotJsonRpc(
            "a message must be a JSON object or a batch",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_messages() {
        let cases: Vec<(&str, Result<McpMessage, WireError>)> = vec![
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{}}}"#,
                Ok(McpMessage::ToolCall {
                    tool: "search".into(),
                }),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
                Ok(McpMessage::Other),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                Ok(McpMessage::Other),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
                Ok(McpMessage::Other),
            ),
            (
                r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
                Ok(McpMessage::Other),
            ),
            (
                r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}]"#,
                Err(WireError::NotJsonRpc(
                    "a batch may not contain tools/call; send each call on its own",
                )),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
                Err(WireError::NotJsonRpc("tools/call needs params.name")),
            ),
            (
                r#""tools/call""#,
                Err(WireError::NotJsonRpc(
                    "a message must be a JSON object or a batch",
                )),
            ),
            ("{", Err(WireError::NotJson)),
        ];
        let long_name = |n: usize| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{}"}}}}"#,
                "t".repeat(n)
            )
        };
        let mut cases = cases
            .into_iter()
            .map(|(body, want)| (body.to_owned(), want))
            .collect::<Vec<_>>();
        cases.push((
            long_name(256),
            Ok(McpMessage::ToolCall {
                tool: "t".repeat(256),
            }),
        ));
        cases.push((long_name(257), Err(WireError::TooLong("params.name"))));
        for (body, want) in cases {
            assert_eq!(classify(body.as_bytes()), want, "{body}");
        }
    }
}
