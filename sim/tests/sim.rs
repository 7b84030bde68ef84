//! Integration tests of the sim with real clients: the `kube` crate and `/usr/bin/kubectl`.
//! Every test starts its own sim on 127.0.0.1:0 and is bounded in time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim {
    pub mod capi;
    pub mod client;
    pub mod components;
    pub mod errors;
    pub mod faults;
    pub mod fidelity;
    pub mod kubectl;
    pub mod support;
    pub mod workloads;
}
