//! Prometheus metrics for `/metrics`.
//!
//! Counters are bumped once per request: when the proxy records the
//! request's outcome (its ledger event), or, for a request that has none (a
//! refusal before the agent is known, an MCP message passed on unmetered),
//! where its response is made. Spool depth is read at scrape time.
//!
//! Looking a labelled series up in its family builds the label set (a
//! vector of owned strings) and hashes it; doing that five or six times per
//! request showed in profiles. So the series a request touches are looked
//! up once per provider, outcome, reason and token kind, and kept as
//! handles (a handle shares its value with the family's series).

use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use crate::spool::SpoolStatus;

type Labels = Vec<(&'static str, String)>;

/// The series of one provider, found in their families once.
#[derive(Debug)]
struct ProviderSeries {
    spend: Counter,
    latency: Histogram,
    /// By outcome; a handful of values.
    requests: RwLock<Vec<(String, Counter)>>,
    /// By token kind; a handful of values.
    tokens: RwLock<Vec<(&'static str, Counter)>>,
}

/// The handle in `list` for `key`, created from `make` the first time.
fn handle<K, M>(list: &RwLock<Vec<(K, M)>>, key: &str, make: impl FnOnce() -> (K, M)) -> M
where
    K: AsRef<str>,
    M: Clone,
{
    let find = |l: &[(K, M)]| {
        l.iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, m)| m.clone())
    };
    if let Some(m) = find(&list.read().unwrap_or_else(|p| p.into_inner())) {
        return m;
    }
    let mut list = list.write().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = find(&list) {
        return m;
    }
    let (k, m) = make();
    list.push((k, m.clone()));
    m
}

/// Every metric the gateway exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    decisions: Family<Labels, Counter>,
    spend: Family<Labels, Counter>,
    tokens: Family<Labels, Counter>,
    latency: Family<Labels, Histogram>,
    spool_pending_records: Gauge,
    spool_pending_bytes: Gauge,
    spool_shipped_records: Gauge,
    by_provider: RwLock<HashMap<String, Arc<ProviderSeries>>>,
    by_reason: RwLock<Vec<(String, Counter)>>,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~54 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("caracal_gateway");
        let requests = Family::<Labels, Counter>::default();
        let decisions = Family::<Labels, Counter>::default();
        let spend = Family::<Labels, Counter>::default();
        let tokens = Family::<Labels, Counter>::default();
        let latency = Family::<Labels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let spool_pending_records = Gauge::default();
        let spool_pending_bytes = Gauge::default();
        let spool_shipped_records = Gauge::default();
        registry.register(
            "requests",
            "Requests by provider and outcome",
            requests.clone(),
        );
        registry.register(
            "decisions",
            "Decisions by reason code (\"allowed\" for allowed requests)",
            decisions.clone(),
        );
        registry.register(
            "spend_micros",
            "Micro-dollars charged, by provider",
            spend.clone(),
        );
        registry.register(
            "tokens",
            "Tokens metered, by provider and kind",
            tokens.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to the end of the response, by provider",
            latency.clone(),
        );
        registry.register(
            "spool_pending_records",
            "Events in the spool not yet in the ledger",
            spool_pending_records.clone(),
        );
        registry.register(
            "spool_pending_bytes",
            "Bytes in the spool not yet in the ledger",
            spool_pending_bytes.clone(),
        );
        registry.register(
            "spool_shipped_records",
            "Events shipped to the ledger since start",
            spool_shipped_records.clone(),
        );
        Metrics {
            registry,
            requests,
            decisions,
            spend,
            tokens,
            latency,
            spool_pending_records,
            spool_pending_bytes,
            spool_shipped_records,
            by_provider: RwLock::default(),
            by_reason: RwLock::default(),
        }
    }

    fn provider(&self, provider: &str) -> Arc<ProviderSeries> {
        if let Some(series) = self
            .by_provider
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(provider)
        {
            return series.clone();
        }
        let label = || vec![("provider", provider.to_owned())];
        let series = Arc::new(ProviderSeries {
            spend: self.spend.get_or_create(&label()).clone(),
            latency: self.latency.get_or_create(&label()).clone(),
            requests: RwLock::default(),
            tokens: RwLock::default(),
        });
        self.by_provider
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(provider.to_owned())
            .or_insert(series)
            .clone()
    }

    /// Count one finished request.
    pub fn record(
        &self,
        provider: &str,
        outcome: &str,
        reason: &str,
        cost_micros: i64,
        tokens: &[(&'static str, u64)],
        seconds: f64,
    ) {
        let series = self.provider(provider);
        handle(&series.requests, outcome, || {
            let labels = vec![
                ("provider", provider.to_owned()),
                ("outcome", outcome.to_owned()),
            ];
            (
                outcome.to_owned(),
                self.requests.get_or_create(&labels).clone(),
            )
        })
        .inc();
        self.decision(reason);
        if cost_micros > 0 {
            series.spend.inc_by(cost_micros as u64);
        }
        for (kind, n) in tokens {
            if *n > 0 {
                handle(&series.tokens, kind, || {
                    let labels = vec![
                        ("provider", provider.to_owned()),
                        ("kind", (*kind).to_owned()),
                    ];
                    (*kind, self.tokens.get_or_create(&labels).clone())
                })
                .inc_by(*n);
            }
        }
        series.latency.observe(seconds);
    }

    /// Count one decision by its reason code (empty: allowed). `record`
    /// counts one for each request; this alone, for a request that names no
    /// configured provider.
    pub fn decision(&self, reason: &str) {
        let reason = if reason.is_empty() { "allowed" } else { reason };
        handle(&self.by_reason, reason, || {
            let labels = vec![("reason", reason.to_owned())];
            (
                reason.to_owned(),
                self.decisions.get_or_create(&labels).clone(),
            )
        })
        .inc();
    }

    /// The text exposition, with spool gauges as of now.
    pub fn render(&self, spool: SpoolStatus) -> String {
        self.spool_pending_records.set(spool.pending_records as i64);
        self.spool_pending_bytes.set(spool.pending_bytes as i64);
        self.spool_shipped_records.set(spool.shipped_records as i64);
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counted_requests() {
        let m = Metrics::new();
        m.record(
            "openai",
            "allowed",
            "",
            125,
            &[("input", 10), ("output", 5)],
            0.002,
        );
        m.record("openai", "denied", "budget_exhausted", 0, &[], 0.0001);
        // A second time through the cached handles: the same series count on.
        m.record("openai", "allowed", "", 5, &[("output", 2)], 0.001);
        m.record("anthropic", "allowed", "", 7, &[("output", 1)], 0.001);
        let text = m.render(SpoolStatus {
            pending_bytes: 10,
            pending_records: 2,
            shipped_records: 7,
            sink_healthy: true,
        });
        for needle in [
            "caracal_gateway_requests_total{provider=\"openai\",outcome=\"allowed\"} 2",
            "caracal_gateway_requests_total{provider=\"openai\",outcome=\"denied\"} 1",
            "caracal_gateway_requests_total{provider=\"anthropic\",outcome=\"allowed\"} 1",
            "caracal_gateway_decisions_total{reason=\"budget_exhausted\"} 1",
            "caracal_gateway_decisions_total{reason=\"allowed\"} 3",
            "caracal_gateway_spend_micros_total{provider=\"openai\"} 130",
            "caracal_gateway_spend_micros_total{provider=\"anthropic\"} 7",
            "caracal_gateway_tokens_total{provider=\"openai\",kind=\"output\"} 7",
            "caracal_gateway_tokens_total{provider=\"openai\",kind=\"input\"} 10",
            "caracal_gateway_spool_pending_records 2",
            "caracal_gateway_request_duration_seconds_count{provider=\"openai\"} 3",
            "caracal_gateway_request_duration_seconds_count{provider=\"anthropic\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
