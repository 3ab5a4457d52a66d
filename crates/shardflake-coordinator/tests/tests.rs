//! Integration tests of the coordinator, gathered into one binary.

mod http;
mod store;
