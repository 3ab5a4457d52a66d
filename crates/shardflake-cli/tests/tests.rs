//! Integration tests of the `shardflake` binary, gathered into one test binary.

mod cli;
mod cluster;
mod node;
mod process;
