//! The registry keeps one row per object, updates it in place, tombstones
//! deletions, and its constraints refuse what the CRD schema would.

use caracal_api::crd::{Agent, Delegation, Policy};
use caracal_operator::registry::{
    AgentRow, DelegationRow, Kind, PolicyRow, Registry, RegistryError,
};
use serde_json::json;

use crate::db::TestDb;

fn object<T: serde::de::DeserializeOwned>(
    kind: &str,
    name: &str,
    generation: i64,
    spec: serde_json::Value,
) -> T {
    serde_json::from_value(json!({
        "apiVersion": "caracal.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name, "namespace": "team", "uid": "6f1c1b5e-3f0a-4c53-9d62-0d6c1f3b2a10", "generation": generation},
        "spec": spec,
    }))
    .unwrap()
}

#[tokio::test]
async fn upserts_update_in_place_and_deletions_leave_tombstones() {
    let db = TestDb::new().await;
    let registry = Registry::new(db.pool.clone()).await.unwrap();

    let v1: Agent = object(
        "Agent",
        "bot",
        1,
        json!({"owner": "a", "identity": {"serviceAccountName": "bot"}}),
    );
    let v2: Agent = object(
        "Agent",
        "bot",
        2,
        json!({"owner": "b", "identity": {"serviceAccountName": "bot"}, "suspended": true}),
    );
    registry
        .upsert_agent(&AgentRow::from_object(&v1).unwrap())
        .await
        .unwrap();
    registry
        .upsert_agent(&AgentRow::from_object(&v2).unwrap())
        .await
        .unwrap();
    let (count, owner, generation, suspended): (i64, String, i64, bool) =
        sqlx::query_as("SELECT count(*) OVER (), owner, generation, suspended FROM agents")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (count, owner.as_str(), generation, suspended),
        (1, "b", 2, true)
    );

    let policy: Policy = object(
        "Policy",
        "daily",
        3,
        json!({"targetRefs": [{"name": "bot"}],
        "budget": {"limit": "12.345678", "window": {"period": "Daily"}}, "enforcement": "DryRun"}),
    );
    registry
        .upsert_policy(&PolicyRow::from_object(&policy).unwrap())
        .await
        .unwrap();
    let (limit, enforcement): (i64, String) =
        sqlx::query_as("SELECT limit_micros, enforcement FROM policies")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((limit, enforcement.as_str()), (12_345_678, "DryRun"));

    let delegation: Delegation = object(
        "Delegation",
        "grant",
        1,
        json!({"parentRef": {"name": "bot"},
        "childRef": {"name": "helper"}, "budget": {"limit": "1", "window": {"type": "Rolling", "duration": "1h"}},
        "expiresAt": "2026-12-31T00:00:00+01:00", "maxDepth": 2}),
    );
    registry
        .upsert_delegation(&DelegationRow::from_object(&delegation).unwrap())
        .await
        .unwrap();
    let expires: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT expires_at FROM delegations")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(expires.to_rfc3339(), "2026-12-30T23:00:00+00:00");

    assert!(
        registry
            .mark_deleted(Kind::Agent, "team", "bot")
            .await
            .unwrap()
    );
    assert!(
        !registry
            .mark_deleted(Kind::Agent, "team", "bot")
            .await
            .unwrap(),
        "already deleted"
    );
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM agents WHERE deleted_at IS NULL")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM agents")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!((live, all), (0, 1), "the row stays as a tombstone");

    // Re-creating the object revives the row.
    registry
        .upsert_agent(&AgentRow::from_object(&v1).unwrap())
        .await
        .unwrap();
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM agents WHERE deleted_at IS NULL")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(live, 1);
    db.drop_now().await;
}

#[tokio::test]
async fn constraints_refuse_what_the_schema_refuses() {
    let db = TestDb::new().await;
    let registry = Registry::new(db.pool.clone()).await.unwrap();
    let mut self_grant: Delegation = object(
        "Delegation",
        "loop",
        1,
        json!({"parentRef": {"name": "a"},
        "childRef": {"name": "b"}, "budget": {"limit": "1", "window": {"period": "Daily"}}}),
    );
    self_grant.spec.child_ref.name = "a".into();
    let err = registry
        .upsert_delegation(&DelegationRow::from_object(&self_grant).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Database(_)), "{err}");

    let mut zero: Policy = object(
        "Policy",
        "zero",
        1,
        json!({"targetRefs": [{"name": "a"}], "maxRequestCost": "1"}),
    );
    zero.spec.max_request_cost = Some(caracal_api::Micros(0));
    let err = registry
        .upsert_policy(&PolicyRow::from_object(&zero).unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_request_micros"), "{err}");
    db.drop_now().await;
}

#[test]
fn rows_need_api_server_metadata() {
    let mut agent: Agent = object(
        "Agent",
        "bot",
        1,
        json!({"owner": "a", "identity": {"serviceAccountName": "bot"}}),
    );
    agent.metadata.uid = None;
    let err = AgentRow::from_object(&agent).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Agent has no uid in its metadata; objects must come from the API server"
    );
    agent.metadata.uid = Some("not-a-uuid".into());
    assert!(matches!(
        AgentRow::from_object(&agent),
        Err(RegistryError::BadUid { .. })
    ));
    let mut grant: Delegation = object(
        "Delegation",
        "g",
        1,
        json!({"parentRef": {"name": "a"},
        "childRef": {"name": "b"}, "budget": {"limit": "1", "window": {"period": "Daily"}}}),
    );
    grant.spec.expires_at = Some("tomorrow".into());
    assert!(matches!(
        DelegationRow::from_object(&grant),
        Err(RegistryError::BadExpiry(..))
    ));
}
