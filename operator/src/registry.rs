//! The registry: one row per Agent, Policy and Delegation as last reconciled,
//! keyed by namespace/name, with the object's uid and generation so a ledger
//! event can be tied to the exact spec in force. Deletion is a tombstone
//! (`deleted_at`), never a row removal, because the ledger keeps referring to
//! deleted agents.
//!
//! Row building is pure ([`AgentRow::from_object`] and friends); the database
//! calls are thin.

use caracal_api::crd::{Agent, Delegation, ObjectMeta, Policy};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// Why a registry write failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{kind} has no {field} in its metadata; objects must come from the API server")]
    MissingMetadata {
        kind: &'static str,
        field: &'static str,
    },
    #[error("{kind} {namespace}/{name} has uid {uid:?}, which is not a UUID")]
    BadUid {
        kind: &'static str,
        namespace: String,
        name: String,
        uid: String,
    },
    #[error("Delegation {0} has expiresAt {1:?}, which is not an RFC 3339 time")]
    BadExpiry(String, String),
    #[error("registry database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("registry migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Namespace, name, uid and generation of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
    pub uid: Uuid,
    pub generation: i64,
}

impl ObjectKey {
    fn from_meta(kind: &'static str, meta: &ObjectMeta) -> Result<Self, RegistryError> {
        let missing = |field| RegistryError::MissingMetadata { kind, field };
        let namespace = meta.namespace.clone().ok_or_else(|| missing("namespace"))?;
        let name = meta.name.clone().ok_or_else(|| missing("name"))?;
        let uid_text = meta.uid.clone().ok_or_else(|| missing("uid"))?;
        let uid = Uuid::parse_str(&uid_text).map_err(|_| RegistryError::BadUid {
            kind,
            namespace: namespace.clone(),
            name: name.clone(),
            uid: uid_text,
        })?;
        Ok(ObjectKey {
            namespace,
            name,
            uid,
            generation: meta.generation.unwrap_or(0),
        })
    }
}

/// A row of `agents`.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentRow {
    pub key: ObjectKey,
    pub owner: String,
    pub suspended: bool,
    pub spec: serde_json::Value,
}

impl AgentRow {
    pub fn from_object(agent: &Agent) -> Result<Self, RegistryError> {
        Ok(AgentRow {
            key: ObjectKey::from_meta("Agent", &agent.metadata)?,
            owner: agent.spec.owner.clone(),
            suspended: agent.spec.suspended,
            spec: serde_json::to_value(&agent.spec).unwrap_or_default(),
        })
    }
}

/// A row of `policies`.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyRow {
    pub key: ObjectKey,
    pub limit_micros: Option<i64>,
    pub max_request_micros: Option<i64>,
    pub enforcement: &'static str,
    pub spec: serde_json::Value,
}

impl PolicyRow {
    pub fn from_object(policy: &Policy) -> Result<Self, RegistryError> {
        Ok(PolicyRow {
            key: ObjectKey::from_meta("Policy", &policy.metadata)?,
            limit_micros: policy.spec.budget.as_ref().map(|b| b.limit.get()),
            max_request_micros: policy.spec.max_request_cost.map(|m| m.get()),
            enforcement: match policy.spec.enforcement {
                caracal_api::crd::Enforcement::Enforce => "Enforce",
                caracal_api::crd::Enforcement::DryRun => "DryRun",
            },
            spec: serde_json::to_value(&policy.spec).unwrap_or_default(),
        })
    }
}

/// A row of `delegations`.
#[derive(Clone, Debug, PartialEq)]
pub struct DelegationRow {
    pub key: ObjectKey,
    pub parent_name: String,
    pub child_name: String,
    pub limit_micros: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub max_depth: i32,
    pub spec: serde_json::Value,
}

impl DelegationRow {
    pub fn from_object(delegation: &Delegation) -> Result<Self, RegistryError> {
        let key = ObjectKey::from_meta("Delegation", &delegation.metadata)?;
        let spec = &delegation.spec;
        let expires_at = match &spec.expires_at {
            None => None,
            Some(text) => Some(
                DateTime::parse_from_rfc3339(text)
                    .map_err(|_| {
                        RegistryError::BadExpiry(
                            format!("{}/{}", key.namespace, key.name),
                            text.clone(),
                        )
                    })?
                    .with_timezone(&Utc),
            ),
        };
        Ok(DelegationRow {
            key,
            parent_name: spec.parent_ref.name.clone(),
            child_name: spec.child_ref.name.clone(),
            limit_micros: spec.budget.limit.get(),
            expires_at,
            max_depth: i32::try_from(spec.max_depth).unwrap_or(i32::MAX),
            spec: serde_json::to_value(spec).unwrap_or_default(),
        })
    }
}

/// Which table a tombstone goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Agent,
    Policy,
    Delegation,
}

impl Kind {
    fn tombstone_sql(self) -> &'static str {
        match self {
            Kind::Agent => {
                "UPDATE agents SET deleted_at = now() WHERE namespace = $1 AND name = $2 AND deleted_at IS NULL"
            }
            Kind::Policy => {
                "UPDATE policies SET deleted_at = now() WHERE namespace = $1 AND name = $2 AND deleted_at IS NULL"
            }
            Kind::Delegation => {
                "UPDATE delegations SET deleted_at = now() WHERE namespace = $1 AND name = $2 AND deleted_at IS NULL"
            }
        }
    }
}

/// The registry tables in one Postgres database.
#[derive(Clone, Debug)]
pub struct Registry {
    pool: PgPool,
}

impl Registry {
    /// Use `pool`, bringing the schema up to date first (the same migrations
    /// the ledger uses, so either may run first).
    pub async fn new(pool: PgPool) -> Result<Self, RegistryError> {
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(Registry { pool })
    }

    pub async fn upsert_agent(&self, row: &AgentRow) -> Result<(), RegistryError> {
        sqlx::query(
            "INSERT INTO agents (namespace, name, uid, generation, owner, suspended, spec)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (namespace, name) DO UPDATE SET uid = EXCLUDED.uid,
                generation = EXCLUDED.generation, owner = EXCLUDED.owner,
                suspended = EXCLUDED.suspended, spec = EXCLUDED.spec,
                updated_at = now(), deleted_at = NULL",
        )
        .bind(&row.key.namespace)
        .bind(&row.key.name)
        .bind(row.key.uid)
        .bind(row.key.generation)
        .bind(&row.owner)
        .bind(row.suspended)
        .bind(&row.spec)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn upsert_policy(&self, row: &PolicyRow) -> Result<(), RegistryError> {
        sqlx::query(
            "INSERT INTO policies (namespace, name, uid, generation, limit_micros, max_request_micros, enforcement, spec)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (namespace, name) DO UPDATE SET uid = EXCLUDED.uid,
                generation = EXCLUDED.generation, limit_micros = EXCLUDED.limit_micros,
                max_request_micros = EXCLUDED.max_request_micros, enforcement = EXCLUDED.enforcement,
                spec = EXCLUDED.spec, updated_at = now(), deleted_at = NULL",
        )
        .bind(&row.key.namespace)
        .bind(&row.key.name)
        .bind(row.key.uid)
        .bind(row.key.generation)
        .bind(row.limit_micros)
        .bind(row.max_request_micros)
        .bind(row.enforcement)
        .bind(&row.spec)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn upsert_delegation(&self, row: &DelegationRow) -> Result<(), RegistryError> {
        sqlx::query(
            "INSERT INTO delegations (namespace, name, uid, generation, parent_name, child_name,
                                      limit_micros, expires_at, max_depth, spec)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (namespace, name) DO UPDATE SET uid = EXCLUDED.uid,
                generation = EXCLUDED.generation, parent_name = EXCLUDED.parent_name,
                child_name = EXCLUDED.child_name, limit_micros = EXCLUDED.limit_micros,
                expires_at = EXCLUDED.expires_at, max_depth = EXCLUDED.max_depth,
                spec = EXCLUDED.spec, updated_at = now(), deleted_at = NULL",
        )
        .bind(&row.key.namespace)
        .bind(&row.key.name)
        .bind(row.key.uid)
        .bind(row.key.generation)
        .bind(&row.parent_name)
        .bind(&row.child_name)
        .bind(row.limit_micros)
        .bind(row.expires_at)
        .bind(row.max_depth)
        .bind(&row.spec)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Record that an object was deleted; its row stays for the ledger's sake.
    /// Returns whether a live row was found.
    pub async fn mark_deleted(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<bool, RegistryError> {
        let done = sqlx::query(kind.tombstone_sql())
            .bind(namespace)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
