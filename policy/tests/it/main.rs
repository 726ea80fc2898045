//! Integration tests for caracal-policy: the shared budget-store suite run
//! against the in-memory store and the real Redis, and the concurrency
//! proofs. Redis is taken from `CARACAL_TEST_REDIS_URL`
//! (default `redis://127.0.0.1:6379`); each test uses its own key prefix and
//! deletes its keys afterwards.

mod budgets;
mod catalog;
mod concurrency;
mod flow;
mod redis_layout;
mod store_suite;
mod support;
