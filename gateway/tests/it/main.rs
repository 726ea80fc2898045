//! In-process gateway tests: real listeners on loopback, fake upstreams that
//! speak the providers' wire formats, the real policy engine and spool.

mod anthropic;
mod enforcement;
mod free;
mod harness;
mod jwt_rs256;
mod ledger_sink;
mod mcp;
mod mtls;
mod openai;
mod readiness;
mod spool;
mod streams;
mod upstream_tls;
