//! Integration tests for caracal-operator against the real PostgreSQL on
//! 127.0.0.1 (a fresh database per test).

mod db;
mod registry;
