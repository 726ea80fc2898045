//! A fresh, uniquely named database per test, dropped when the guard goes.

use sqlx::{Connection, PgConnection, PgPool};

pub struct TestDb {
    pub pool: PgPool,
    name: String,
    admin_url: String,
}

fn admin_url() -> String {
    std::env::var("CARACAL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl TestDb {
    pub async fn new() -> TestDb {
        let admin_url = admin_url();
        let name = format!("caracal_test_{}", uuid::Uuid::now_v7().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("connect to the test PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(&admin_url);
        let pool = PgPool::connect(&format!("{base}/{name}"))
            .await
            .expect("connect to the test database");
        TestDb {
            pool,
            name,
            admin_url,
        }
    }

    pub async fn drop_now(self) {
        self.pool.close().await;
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .expect("connect");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await
        .expect("drop test database");
    }
}
