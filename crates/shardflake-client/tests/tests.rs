//! Client tests against in-process coordinators and stub nodes on 127.0.0.1.

mod failover;
mod hygiene;
mod ids;
mod keeper;
mod stub;
mod support;
