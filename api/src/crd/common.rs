//! Pieces shared by the three resources: budgets, windows, allowlists,
//! references and status conditions.
//!
//! Every rule the API server can check lives here as a schema constraint or a
//! CEL `x-kubernetes-validations` rule, so bad YAML is refused at
//! `kubectl apply` with a field path. What the schema cannot see (cycles,
//! narrowing across a delegation chain) is reported as a `Ready=False`
//! condition by the compile step instead.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::money::Micros;

/// A reference to an Agent in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentRef {
    /// Name of the Agent (same namespace as the referring object).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

impl AgentRef {
    pub fn new(name: impl Into<String>) -> Self {
        AgentRef { name: name.into() }
    }
}

/// How much may be spent, and over which window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Budget {
    /// Spending limit per window in US dollars, e.g. "100.00" (at most 6
    /// decimal places; must be greater than zero).
    #[x_kube(validation = Rule::new("!self.matches('^0+(\\\\.0+)?$')").message("limit must be greater than 0"))]
    pub limit: Micros,
    /// The window the limit applies to.
    pub window: Window,
}

/// The length of a calendar window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

/// Calendar windows reset at fixed instants in a time zone; rolling windows
/// cover the last `duration` before each request.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum WindowType {
    #[default]
    Calendar,
    Rolling,
}

/// The time window a budget limit applies to.
///
/// * `type: Calendar` (the default) needs `period`; the window starts at the
///   top of the hour, midnight, Monday 00:00 or the 1st of the month in
///   `timeZone` (default `UTC`).
/// * `type: Rolling` needs `duration` (e.g. `"90m"`, `"24h"`, `"7d"`) and
///   counts spend in the last `duration` before each request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(
    validation = Rule::new("self.type != 'Calendar' || (has(self.period) && !has(self.duration))").message("a Calendar window needs period (Hourly, Daily, Weekly or Monthly) and no duration"),
    validation = Rule::new("self.type != 'Rolling' || (has(self.duration) && !has(self.period))").message("a Rolling window needs duration (e.g. \"24h\") and no period"),
    validation = Rule::new("self.type != 'Rolling' || !has(self.timeZone)").message("timeZone applies only to Calendar windows")
)]
pub struct Window {
    /// Calendar period: Hourly, Daily, Weekly (weeks start Monday) or Monthly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
    /// Calendar (default) or Rolling.
    #[serde(default, rename = "type")]
    pub window_type: WindowType,
    /// IANA time zone for calendar windows, e.g. "Europe/Berlin"; default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self == 'UTC' || self.matches('^[A-Z][A-Za-z_+-]*(/[A-Za-z0-9_+-]+){1,2}$')").message("timeZone must be an IANA zone name such as \"UTC\" or \"America/New_York\""))]
    pub time_zone: Option<String>,
    /// Length of a rolling window: one or more number+unit pairs with units
    /// s, m, h, d (e.g. "30m", "24h", "7d", "1d12h"). At least one minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+[smhd])+$"))]
    pub duration: Option<String>,
}

impl Window {
    pub fn calendar(period: Period) -> Self {
        Window {
            period: Some(period),
            window_type: WindowType::Calendar,
            time_zone: None,
            duration: None,
        }
    }
    pub fn rolling(duration: impl Into<String>) -> Self {
        Window {
            period: None,
            window_type: WindowType::Rolling,
            time_zone: None,
            duration: Some(duration.into()),
        }
    }
}

/// Allowlists of glob patterns (`*` any run of characters, `?` one
/// character). An absent list places no restriction; an empty list allows
/// nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Allow {
    /// Provider names (as configured on the gateway), e.g. "openai".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 128)))]
    pub providers: Option<Vec<String>>,
    /// Model names, e.g. "gpt-4o-mini" or "claude-*".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    pub models: Option<Vec<String>>,
    /// MCP tools as "server/tool", e.g. "github/search_*".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    pub tools: Option<Vec<String>>,
}

/// The standard Kubernetes condition, re-exported so users of this crate need
/// not name k8s-openapi.
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
