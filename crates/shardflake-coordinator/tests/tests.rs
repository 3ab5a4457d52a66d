//! Integration tests of the coordinator, gathered into one binary.

mod disk;
#[cfg(feature = "etcd")]
mod etcd;
mod housekeeping;
mod http;
mod restore;
mod returns;
mod routing;
mod store;
