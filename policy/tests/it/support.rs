//! Test plumbing: Redis connections with a unique key prefix, budget lines.

use caracal_api::Micros;
use caracal_policy::decision::policy_counter;
use caracal_policy::{BudgetLine, RedisBudgetStore, WindowInstance};
use chrono::{DateTime, Utc};

pub fn redis_url() -> String {
    std::env::var("CARACAL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A unique key prefix for one test; [`TestRedis::cleanup`] deletes it.
pub struct TestRedis {
    pub prefix: String,
}

impl TestRedis {
    pub fn new() -> Self {
        TestRedis {
            prefix: format!("caracal_test_{}", uuid::Uuid::now_v7().simple()),
        }
    }

    /// A store on its own connection, as a separate gateway would have.
    pub async fn store(&self) -> RedisBudgetStore {
        RedisBudgetStore::connect(&redis_url(), &self.prefix)
            .await
            .expect("Redis must be running on CARACAL_TEST_REDIS_URL")
    }

    pub async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// All keys this test created.
    pub async fn keys(&self) -> Vec<String> {
        let mut conn = self.raw().await;
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .unwrap();
            out.extend(batch);
            if next == 0 {
                return out;
            }
            cursor = next;
        }
    }

    pub async fn cleanup(&self) {
        let keys = self.keys().await;
        if !keys.is_empty() {
            let mut conn = self.raw().await;
            let _: i64 = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
}

/// A budget line in tree `tree` for counter `name`.
pub fn line(tree: &str, name: &str, limit: i64, window: WindowInstance) -> BudgetLine {
    let suffix = match &window {
        WindowInstance::Calendar { start, .. } => format!("c{}", start.timestamp()),
        WindowInstance::Rolling { seconds, .. } => format!("r{seconds}"),
    };
    BudgetLine {
        key: format!("{{{tree}}}:{}:{suffix}", policy_counter(name, tree)).into(),
        limit: Micros(limit),
        window,
    }
}

/// The UTC day containing `now`.
pub fn day_of(now: DateTime<Utc>) -> WindowInstance {
    caracal_policy::window_at(&caracal_policy::fixtures::daily("UTC"), now).unwrap()
}
