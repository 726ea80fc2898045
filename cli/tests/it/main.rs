//! Integration tests of the `caracal` binary as a user runs it.

mod commands;
