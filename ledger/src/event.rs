//! The metering event and its canonical encoding (DESIGN section 5).
//!
//! An event is encoded once, by the gateway, into canonical bytes; those exact
//! bytes are hashed into the log, stored and exported, and never re-serialised.
//! Canonical form, version 1: UTF-8 JSON with no whitespace, object keys in the
//! fixed order of the struct fields below, integers as JSON numbers (no floats
//! anywhere), absent optional values as `null`, times in UTC as
//! `YYYY-MM-DDTHH:MM:SS.ffffffZ`, strings escaped the way `serde_json` does.
//! [`MeteringEvent::decode`] re-encodes what it parsed and refuses the input
//! unless the bytes are identical, so two different byte strings can never
//! stand for the same event.

use std::borrow::Cow;

use caracal_api::Micros;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The only encoding version this build writes and reads.
pub const EVENT_VERSION: u32 = 1;

/// Why event bytes were refused.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event is not valid JSON for version {EVENT_VERSION}: {0}")]
    Parse(String),
    #[error("event version {0} is not supported (this build reads {EVENT_VERSION})")]
    Version(u32),
    #[error("event bytes are not in canonical form")]
    NotCanonical,
    #[error("event id {0} is not a UUIDv7")]
    NotUuidV7(Uuid),
    #[error("a token count or amount is negative")]
    Negative,
}

/// What happened to the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Forwarded and completed; `cost` is what it used.
    Allowed,
    /// Refused before forwarding; `cost` is zero.
    Denied,
    /// Stopped mid-stream because it would pass its reservation.
    CutOff,
    /// Forwarded, but the provider failed.
    UpstreamError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::CutOff => "cut_off",
            Outcome::UpstreamError => "upstream_error",
        }
    }
}

/// An agent named by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRef {
    pub namespace: String,
    pub name: String,
}

impl AgentRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for AgentRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Token counts by kind, as the provider reported them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

/// One request decision. Field order here is the canonical key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeteringEvent {
    /// UUIDv7: unique, and roughly time-ordered.
    pub id: Uuid,
    pub time: DateTime<Utc>,
    pub agent: AgentRef,
    /// Ancestors the charge also applied to, nearest parent first.
    pub delegation_chain: Vec<AgentRef>,
    /// Policies charged, as `namespace/name`.
    pub policies: Vec<String>,
    pub provider: String,
    /// The model called, for model requests.
    pub model: Option<String>,
    /// The MCP tool called, for tool requests.
    pub tool: Option<String>,
    pub tokens: Tokens,
    /// What the request cost (rounded up to the micro-dollar).
    pub cost: Micros,
    /// What was reserved before forwarding.
    pub reserved: Micros,
    pub price_catalog_version: String,
    pub outcome: Outcome,
    /// Why (a machine-readable reason; empty when allowed).
    pub reason: String,
    pub gateway_id: String,
    pub request_id: String,
}

/// The wire form, in the canonical layout (fields in this order). Encoding
/// borrows from the event; decoding owns what it reads (field order does not
/// matter when reading). Kept private so the layout cannot drift by accident.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    v: u32,
    id: Uuid,
    time: Cow<'a, str>,
    agent: Cow<'a, AgentRef>,
    delegation_chain: Cow<'a, [AgentRef]>,
    policies: Cow<'a, [String]>,
    provider: Cow<'a, str>,
    model: Option<Cow<'a, str>>,
    tool: Option<Cow<'a, str>>,
    tokens: Tokens,
    cost_micros: i64,
    reserved_micros: i64,
    price_catalog_version: Cow<'a, str>,
    outcome: Outcome,
    reason: Cow<'a, str>,
    gateway_id: Cow<'a, str>,
    request_id: Cow<'a, str>,
}

impl MeteringEvent {
    /// The canonical bytes. Refuses what could not be decoded again.
    pub fn encode(&self) -> Result<Vec<u8>, EventError> {
        if self.id.get_version_num() != 7 {
            return Err(EventError::NotUuidV7(self.id));
        }
        if self.cost.get() < 0 || self.reserved.get() < 0 {
            return Err(EventError::Negative);
        }
        let wire = Wire {
            v: EVENT_VERSION,
            id: self.id,
            time: Cow::Owned(self.time.to_rfc3339_opts(SecondsFormat::Micros, true)),
            agent: Cow::Borrowed(&self.agent),
            delegation_chain: Cow::Borrowed(&self.delegation_chain),
            policies: Cow::Borrowed(&self.policies),
            provider: Cow::Borrowed(&self.provider),
            model: self.model.as_deref().map(Cow::Borrowed),
            tool: self.tool.as_deref().map(Cow::Borrowed),
            tokens: self.tokens,
            cost_micros: self.cost.get(),
            reserved_micros: self.reserved.get(),
            price_catalog_version: Cow::Borrowed(&self.price_catalog_version),
            outcome: self.outcome,
            reason: Cow::Borrowed(&self.reason),
            gateway_id: Cow::Borrowed(&self.gateway_id),
            request_id: Cow::Borrowed(&self.request_id),
        };
        // Sized for a typical event (about 500 bytes), so that the buffer is
        // not grown several times over while the event is written.
        let mut bytes = Vec::with_capacity(768);
        serde_json::to_writer(&mut bytes, &wire).map_err(|e| EventError::Parse(e.to_string()))?;
        Ok(bytes)
    }

    /// Parses canonical bytes, refusing anything that is not byte-for-byte canonical.
    pub fn decode(bytes: &[u8]) -> Result<Self, EventError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            v: u32,
        }
        // One parse on the common path; a second only to say why one failed.
        let wire: Wire<'_> = match serde_json::from_slice(bytes) {
            Ok(wire) => wire,
            Err(e) => {
                return Err(match serde_json::from_slice::<VersionOnly>(bytes) {
                    Ok(version) if version.v != EVENT_VERSION => EventError::Version(version.v),
                    _ => EventError::Parse(e.to_string()),
                });
            }
        };
        if wire.v != EVENT_VERSION {
            return Err(EventError::Version(wire.v));
        }
        let time = DateTime::parse_from_rfc3339(&wire.time)
            .map_err(|e| EventError::Parse(format!("time: {e}")))?
            .with_timezone(&Utc);
        let event = Self {
            id: wire.id,
            time,
            agent: wire.agent.into_owned(),
            delegation_chain: wire.delegation_chain.into_owned(),
            policies: wire.policies.into_owned(),
            provider: wire.provider.into_owned(),
            model: wire.model.map(Cow::into_owned),
            tool: wire.tool.map(Cow::into_owned),
            tokens: wire.tokens,
            cost: Micros(wire.cost_micros),
            reserved: Micros(wire.reserved_micros),
            price_catalog_version: wire.price_catalog_version.into_owned(),
            outcome: wire.outcome,
            reason: wire.reason.into_owned(),
            gateway_id: wire.gateway_id.into_owned(),
            request_id: wire.request_id.into_owned(),
        };
        if event.encode()? != bytes {
            return Err(EventError::NotCanonical);
        }
        Ok(event)
    }

    /// An event for tests and benchmarks, with every field filled in.
    pub fn example(n: u64) -> Self {
        let time = DateTime::from_timestamp(
            1_767_225_600 + (n / 1000) as i64,
            ((n % 1000) * 1_000_000) as u32,
        )
        .expect("in range");
        // A deterministic UUIDv7: 48-bit Unix milliseconds, version 7, then n.
        let ms = time.timestamp_millis() as u64;
        let mut id = [0u8; 16];
        id[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        id[6] = 0x70;
        id[8..16].copy_from_slice(&n.to_be_bytes());
        id[8] = (id[8] & 0x3f) | 0x80;
        Self {
            id: Uuid::from_bytes(id),
            time,
            agent: AgentRef::new("team-a", format!("agent-{}", n % 7)),
            delegation_chain: vec![AgentRef::new("team-a", "orchestrator")],
            policies: vec!["team-a/monthly".into()],
            provider: if n.is_multiple_of(2) {
                "openai".into()
            } else {
                "anthropic".into()
            },
            model: Some(if n.is_multiple_of(2) {
                "gpt-4o-mini".into()
            } else {
                "claude-sonnet-4".into()
            }),
            tool: None,
            tokens: Tokens {
                input: 100 + n % 50,
                output: 20 + n % 30,
                ..Tokens::default()
            },
            cost: Micros(150 + (n % 100) as i64),
            reserved: Micros(900),
            price_catalog_version: "2026-01".into(),
            outcome: if n % 10 == 9 {
                Outcome::Denied
            } else {
                Outcome::Allowed
            },
            reason: String::new(),
            gateway_id: "gw-node-1".into(),
            request_id: format!("req-{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        for n in [0, 1, 9, 12_345] {
            let event = MeteringEvent::example(n);
            let bytes = event.encode().unwrap();
            assert_eq!(MeteringEvent::decode(&bytes).unwrap(), event);
        }
    }

    #[test]
    fn canonical_layout_is_fixed() {
        let mut e = MeteringEvent::example(3);
        e.id = Uuid::parse_str("01941f29-7c00-7000-8000-000000000003").unwrap();
        let text = String::from_utf8(e.encode().unwrap()).unwrap();
        assert_eq!(
            text,
            r#"{"v":1,"id":"01941f29-7c00-7000-8000-000000000003","time":"2026-01-01T00:00:00.003000Z","agent":{"namespace":"team-a","name":"agent-3"},"delegation_chain":[{"namespace":"team-a","name":"orchestrator"}],"policies":["team-a/monthly"],"provider":"anthropic","model":"claude-sonnet-4","tool":null,"tokens":{"input":103,"output":23,"cached_input":0,"cache_write":0,"reasoning":0},"cost_micros":153,"reserved_micros":900,"price_catalog_version":"2026-01","outcome":"allowed","reason":"","gateway_id":"gw-node-1","request_id":"req-3"}"#
        );
    }

    #[test]
    fn non_canonical_bytes_are_refused() {
        let bytes = MeteringEvent::example(1).encode().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let cases = [
            text.replacen("{\"v\":1,", "{ \"v\":1,", 1),
            text.replacen("\"cost_micros\":151", "\"cost_micros\":151.0", 1),
            text.replacen("Z\"", "+00:00\"", 1),
            text.replacen("\"reason\":\"\"", "\"reason\":\"\",\"extra\":1", 1),
            text.replacen("{\"v\":1,", "{\"v\":2,", 1),
        ];
        for case in cases {
            assert_ne!(case, text);
            assert!(MeteringEvent::decode(case.as_bytes()).is_err(), "{case}");
        }
        let mut swapped = MeteringEvent::example(1);
        swapped.cost = Micros(-1);
        assert!(swapped.encode().is_err());
    }
}
