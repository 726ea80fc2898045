//! Integration tests for caracal-ledger (one binary, one module per concern).

mod vectors;
