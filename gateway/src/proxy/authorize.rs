//! Evaluate, then reserve: the two steps every metered call (model or MCP
//! tool) takes before anything is forwarded. A denial at either step is
//! recorded in the ledger and returned as the client's refusal.

use caracal_api::snapshot::ConfigSnapshot;
use caracal_policy::{
    Allowed, Call, Decision, Denial, Pricing, Request as PolicyRequest, Reservation, evaluate,
};
use chrono::{DateTime, Utc};
use hyper::StatusCode;

use super::{Gateway, Record, refusal_for};
use crate::refusal::Refusal;

/// What an authorized call carries on: the decision, the hold on every
/// budget, and the record (now holding the reserved amount).
pub(super) struct Authorized {
    pub allowed: Allowed,
    pub reservation: Reservation,
    pub record: Record,
}

pub(super) async fn authorize(
    gw: &Gateway,
    mut record: Record,
    snapshot: &ConfigSnapshot,
    request: &PolicyRequest<'_>,
    now: DateTime<Utc>,
) -> Result<Authorized, Refusal> {
    let deny = |d: Denial| refusal_for(&d, gw.limits.budget_denial_status, now);
    let allowed = match evaluate(snapshot, request, now) {
        Decision::Allow(a) => a,
        Decision::Deny(d) => {
            return Err(gw.finish_denied(record, deny(d), Some(snapshot)).await);
        }
    };
    for would in &allowed.would_deny {
        tracing::info!(reason = would.reason.code(), message = %would.message, "dry-run policy would deny");
    }
    // `evaluate` prices model calls as models and tool calls as tools; should
    // the two ever disagree, refuse rather than charge a price of nothing.
    let priced_as_asked = matches!(
        (&allowed.pricing, &request.call),
        (Pricing::Model(_), Call::Model { .. }) | (Pricing::Tool { .. }, Call::Tool { .. })
    );
    if !priced_as_asked {
        let refusal = Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "pricing_mismatch",
            "the call was priced as a different kind of call",
        );
        return Err(gw.finish_denied(record, refusal, Some(snapshot)).await);
    }
    let reservation_id = uuid::Uuid::now_v7().simple().to_string();
    let reservation = match gw.budgets.reserve(&allowed, &reservation_id, now).await {
        Ok(r) => r,
        Err(d) => {
            return Err(gw.finish_denied(record, deny(d), Some(snapshot)).await);
        }
    };
    record.reserved = reservation.amount;
    Ok(Authorized {
        allowed,
        reservation,
        record,
    })
}
