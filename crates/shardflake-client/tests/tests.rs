//! Client tests against in-process coordinators on 127.0.0.1.

mod hygiene;
mod keeper;
mod support;
