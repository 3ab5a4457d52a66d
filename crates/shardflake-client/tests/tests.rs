//! Client tests against in-process coordinators on 127.0.0.1.

mod failover;
mod hygiene;
mod keeper;
mod support;
