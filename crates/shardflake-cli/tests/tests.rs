//! Integration tests of the `shardflake` binary, gathered into one test binary.

mod cli;
mod cluster;
#[cfg(feature = "etcd")]
mod etcd;
mod fetch;
mod maelstrom;
mod namespaces;
mod node;
mod process;
mod scale;
mod security;
