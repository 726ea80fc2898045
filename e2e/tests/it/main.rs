//! End-to-end tests: processes as users run them, on loopback.

mod budgets;
mod crash;
mod dev;
mod fail_closed;
mod harness;
mod logs;
mod reload;
mod sdk;
