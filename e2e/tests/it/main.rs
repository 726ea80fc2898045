//! End-to-end tests: processes as users run them, on loopback.

mod harness;
