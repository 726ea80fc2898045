//! From a policy denial to what the client sees: status, reason, retry time.

use caracal_policy::{Denial, DenyReason};
use chrono::{DateTime, Utc};
use hyper::StatusCode;

use crate::refusal::Refusal;

/// The refusal for `denial`. Budget denials use `budget_status` (429 by
/// default, 402 where configured) and say when the window resets.
pub fn refusal_for(denial: &Denial, budget_status: StatusCode, now: DateTime<Utc>) -> Refusal {
    let status = match &denial.reason {
        DenyReason::BudgetExhausted { .. } => budget_status,
        DenyReason::NoConfig
        | DenyReason::BudgetStoreUnavailable { .. }
        | DenyReason::InvalidWindow { .. } => StatusCode::SERVICE_UNAVAILABLE,
        DenyReason::UnpricedModel { .. } | DenyReason::UnpricedTool { .. } => {
            StatusCode::BAD_REQUEST
        }
        DenyReason::UnknownAgent
        | DenyReason::NoPolicy
        | DenyReason::AgentSuspended
        | DenyReason::AgentNotReady { .. }
        | DenyReason::DelegationExpired
        | DenyReason::ProviderNotAllowed { .. }
        | DenyReason::ModelNotAllowed { .. }
        | DenyReason::ToolNotAllowed { .. }
        | DenyReason::RequestCostCap { .. } => StatusCode::FORBIDDEN,
    };
    let refusal = Refusal::new(status, denial.reason.code(), denial.message.clone());
    match &denial.reason {
        DenyReason::BudgetExhausted {
            resets_at: Some(at),
            ..
        } => {
            let seconds = ((*at - now).num_milliseconds().max(0) as u64)
                .div_ceil(1000)
                .max(1);
            refusal.with_retry_after(seconds)
        }
        _ => refusal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_retry_after() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let later = |ms: i64| Some(now + chrono::Duration::milliseconds(ms));
        let budget = |resets_at| DenyReason::BudgetExhausted {
            budget: "policy a/b (agent a/c)".into(),
            resets_at,
        };
        let cases: Vec<(DenyReason, StatusCode, StatusCode, Option<u64>)> = vec![
            (
                budget(later(90_500)),
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::TOO_MANY_REQUESTS,
                Some(91),
            ),
            (
                budget(later(0)),
                StatusCode::PAYMENT_REQUIRED,
                StatusCode::PAYMENT_REQUIRED,
                Some(1),
            ),
            (
                budget(None),
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::TOO_MANY_REQUESTS,
                None,
            ),
            (
                DenyReason::NoConfig,
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::SERVICE_UNAVAILABLE,
                None,
            ),
            (
                DenyReason::BudgetStoreUnavailable {
                    detail: "down".into(),
                },
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::SERVICE_UNAVAILABLE,
                None,
            ),
            (
                DenyReason::ToolNotAllowed { tool: "rm".into() },
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::FORBIDDEN,
                None,
            ),
            (
                DenyReason::UnpricedModel { model: "x".into() },
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::BAD_REQUEST,
                None,
            ),
        ];
        for (reason, budget_status, want_status, want_retry) in cases {
            let code = reason.code();
            let refusal = refusal_for(&Denial::new(reason, None), budget_status, now);
            assert_eq!(refusal.status, want_status, "{code}");
            assert_eq!(refusal.reason, code);
            assert_eq!(refusal.retry_after, want_retry, "{code}");
        }
    }
}
