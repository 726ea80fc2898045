//! Converting the user-facing CRD pieces into their compiled forms, with the
//! checks the API server's schema may not have made (a gateway must never
//! trust that a stored object was validated).

use std::collections::BTreeMap;

use caracal_api::crd;
use caracal_api::snapshot::{Allow, WindowSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::window::{MAX_ROLLING_SECONDS, parse_time_zone};

/// Shortest rolling window accepted (the CRD documents "at least one minute").
pub const MIN_ROLLING_SECONDS: u64 = 60;

/// A reason code and a message for a refused object.
pub type Refusal = (&'static str, String);

/// `"30m"`, `"24h"`, `"1d12h"` → seconds.
pub fn parse_duration(text: &str) -> Result<u64, Refusal> {
    let bad = || {
        (
            "invalid_duration",
            format!(
                "duration {text:?} is not number+unit pairs with units s, m, h, d (e.g. \"24h\")"
            ),
        )
    };
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in text.chars() {
        if let Some(d) = c.to_digit(10) {
            let n = number.unwrap_or(0);
            number = Some(
                n.checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d)))
                    .ok_or_else(bad)?,
            );
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n = number.take().ok_or_else(bad)?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if number.is_some() {
        return Err(bad());
    }
    if total > MAX_ROLLING_SECONDS {
        return Err((
            "invalid_duration",
            format!("rolling window {text:?} is longer than 366 days"),
        ));
    }
    if total < MIN_ROLLING_SECONDS {
        return Err((
            "invalid_duration",
            format!("rolling window {text:?} is shorter than one minute"),
        ));
    }
    Ok(total)
}

/// A CRD window → the compiled window, checking the time zone exists.
pub fn window(w: &crd::Window) -> Result<WindowSpec, Refusal> {
    match w.window_type {
        crd::WindowType::Calendar => {
            let period = w.period.ok_or((
                "invalid_window",
                "a Calendar window needs a period".to_owned(),
            ))?;
            if w.duration.is_some() {
                return Err((
                    "invalid_window",
                    "a Calendar window takes no duration".into(),
                ));
            }
            let time_zone = w.time_zone.clone().unwrap_or_else(|| "UTC".into());
            parse_time_zone(&time_zone).map_err(|e| ("invalid_time_zone", e.to_string()))?;
            Ok(WindowSpec::Calendar {
                period: period_of(period),
                time_zone,
            })
        }
        crd::WindowType::Rolling => {
            if w.period.is_some() || w.time_zone.is_some() {
                return Err((
                    "invalid_window",
                    "a Rolling window takes only a duration".into(),
                ));
            }
            let text = w.duration.as_deref().ok_or((
                "invalid_window",
                "a Rolling window needs a duration".to_owned(),
            ))?;
            Ok(WindowSpec::Rolling {
                seconds: parse_duration(text)?,
            })
        }
    }
}

fn period_of(p: crd::Period) -> caracal_api::snapshot::Period {
    use caracal_api::snapshot::Period;
    match p {
        crd::Period::Hourly => Period::Hourly,
        crd::Period::Daily => Period::Daily,
        crd::Period::Weekly => Period::Weekly,
        crd::Period::Monthly => Period::Monthly,
    }
}

pub fn allow(a: Option<&crd::Allow>) -> Allow {
    a.map(|a| Allow {
        providers: a.providers.clone(),
        models: a.models.clone(),
        tools: a.tools.clone(),
    })
    .unwrap_or_default()
}

/// Whether `selector` selects an object with `labels` (Kubernetes
/// semantics: every `matchLabels` entry and every expression must hold; an
/// empty selector selects everything).
pub fn selects(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, Refusal> {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    if !labels_match {
        return Ok(false);
    }
    for expr in selector.match_expressions.iter().flatten() {
        let value = labels.get(&expr.key);
        let values = expr.values.as_deref().unwrap_or(&[]);
        let holds = match expr.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => {
                return Err((
                    "invalid_selector",
                    format!("unknown label selector operator {other:?}"),
                ));
            }
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn durations() {
        let ok = [
            ("1m", 60),
            ("90m", 5400),
            ("24h", 86_400),
            ("7d", 604_800),
            ("1d12h", 129_600),
            ("60s", 60),
            ("366d", 31_622_400),
        ];
        for (text, secs) in ok {
            assert_eq!(parse_duration(text), Ok(secs), "{text}");
        }
        for bad in [
            "",
            "h",
            "10",
            "5x",
            "59s",
            "1.5h",
            "-1h",
            "99999999999999999999d",
            // Fits in u64 seconds, but not in the stores' millisecond maths.
            "18446744073709551s",
            "367d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn windows_check_zone_and_shape() {
        let mut w = crd::Window::calendar(crd::Period::Daily);
        assert!(
            matches!(window(&w), Ok(WindowSpec::Calendar { ref time_zone, .. }) if time_zone == "UTC")
        );
        w.time_zone = Some("Europe/Nowhere".into());
        assert_eq!(window(&w).unwrap_err().0, "invalid_time_zone");
        assert_eq!(
            window(&crd::Window::rolling("2h")),
            Ok(WindowSpec::Rolling { seconds: 7200 })
        );
        let mut r = crd::Window::rolling("2h");
        r.period = Some(crd::Period::Daily);
        assert_eq!(window(&r).unwrap_err().0, "invalid_window");
    }

    #[test]
    fn selectors() {
        let labels: BTreeMap<String, String> = [
            ("team".to_string(), "search".to_string()),
            ("tier".to_string(), "prod".to_string()),
        ]
        .into();
        let req = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        };
        let sel = |labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>| LabelSelector {
            match_labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            match_expressions: Some(exprs),
        };
        let cases = [
            (LabelSelector::default(), true),
            (sel(&[("team", "search")], vec![]), true),
            (sel(&[("team", "ads")], vec![]), false),
            (
                sel(&[], vec![req("tier", "In", &["prod", "staging"])]),
                true,
            ),
            (sel(&[], vec![req("tier", "NotIn", &["prod"])]), false),
            (sel(&[], vec![req("owner", "NotIn", &["x"])]), true),
            (sel(&[], vec![req("team", "Exists", &[])]), true),
            (sel(&[], vec![req("team", "DoesNotExist", &[])]), false),
        ];
        for (selector, want) in cases {
            assert_eq!(selects(&selector, &labels), Ok(want), "{selector:?}");
        }
        assert!(selects(&sel(&[], vec![req("team", "Near", &[])]), &labels).is_err());
    }
}
