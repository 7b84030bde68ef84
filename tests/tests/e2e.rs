//! End-to-end tests: the real `tidemark` binary against real git repositories served by
//! `git daemon` on 127.0.0.1. One test binary; one module per behaviour of DESIGN.md.

mod agent;
mod api_faults;
mod chaos;
mod clusterapi;
mod components;
mod crash;
mod deploy;
mod desired;
mod drain;
mod fleet;
mod fuzz_corpus;
mod git_faults;
mod helm;
mod helm_compat;
mod image;
mod inventory;
mod kube_yaml;
mod lease;
mod plan;
mod polling;
mod preflight;
mod private_charts;
mod secrets;
mod signed_tags;
mod validate;
