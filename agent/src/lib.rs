//! tidemark: a GitOps pull agent that upgrades the Kubernetes cluster it runs in.
//!
//! ```text
//! runner (time, Lease, triggers) -> pass:
//!   status::read -> desired (source: git, select) -> observe (cluster, provider)
//!   -> plan (pure) -> converge (provider steps, components) -> status::compose -> write
//! ```
//!
//! See `docs/architecture.md` for the module map and the rules of dependency.
#![forbid(unsafe_code)]

pub mod bounded;
pub mod cli;
pub mod commands;
pub mod component;
pub mod config;
pub mod converge;
pub mod crash;
#[cfg(feature = "sim")]
pub mod demo;
pub mod desired;
#[cfg(test)]
mod fixtures;
pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
pub mod k8s;
pub mod keys;
pub mod observe;
pub mod pass;
pub mod plan;
pub mod process;
pub mod provider;
pub mod runner;
pub mod select;
pub mod source;
pub mod status;
pub mod telemetry;
pub mod trust;
