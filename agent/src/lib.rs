//! tidemark: a GitOps pull agent that upgrades the Kubernetes cluster it runs in.
//!
//! ```text
//! source (git: list refs, fetch if moved) -> select (manifest by selector, wave tag)
//!   -> desired state (schema::resolve)  -> [observe -> plan -> converge -> status: later]
//! ```
#![forbid(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod component;
pub mod config;
pub mod demo;
pub mod desired;
pub mod k8s;
pub mod keys;
pub mod lease;
pub mod observe;
pub mod pass;
pub mod plan;
pub mod provider;
pub mod select;
pub mod server;
pub mod source;
pub mod status;
pub mod telemetry;
pub mod trust;
