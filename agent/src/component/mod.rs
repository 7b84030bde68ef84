//! Components: helm charts rendered with `helm template` and applied by tidemark itself
//! (DESIGN.md "Components"): render -> server-side apply -> prune -> health.
//!
//! Pure parts: [`values`] (merging values layers), [`manifest`] (parsing and ordering the
//! rendered objects), [`health`] (an object's rollout state), [`drift`] (does a live object
//! still hold what was applied).
//!
//! At the edges: [`inputs`] (chart and values read from git, their digest), [`helm`] (the
//! `helm template` process), [`cluster`] (apply, prune, health through the API server) and
//! [`runner`], which executes the component steps the planner chose.

pub mod cluster;
pub mod drift;
pub mod health;
pub mod helm;
pub mod inputs;
pub mod manifest;
pub mod runner;
pub mod values;

pub use runner::{PassScratch, Runner, Settings, Settle, Target};
