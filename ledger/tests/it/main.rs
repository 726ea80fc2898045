//! Integration tests for caracal-ledger (one binary, one module per concern).
//! Postgres tests use a fresh database per test (CARACAL_TEST_DATABASE_URL).

mod common;
mod hashtiles;
mod offline;
mod scene;
mod store;
mod tamper;
mod tiles;
mod vectors;
mod verify_records;
