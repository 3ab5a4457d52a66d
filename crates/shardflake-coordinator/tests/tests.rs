//! Integration tests of the coordinator, gathered into one binary.

#[cfg(feature = "etcd")]
mod etcd;
mod http;
mod returns;
mod store;
