//! Components: helm charts rendered with `helm template` and applied by tidemark itself
//! (DESIGN.md "Components"). This module holds what a component *is*; executing component
//! steps against the cluster is `converge`'s.
//!
//! - Pure: [`credentials`] (which repository gets which credentials files), [`kube_yaml`] (YAML read as Kubernetes and helm read it, YAML 1.1 scalars
//!   included), [`values`] (merging values layers), [`manifest`] (parsing and ordering the
//!   rendered objects), [`health`] (an object's rollout state), [`diff`] (does a live
//!   object still hold what was applied), [`hooks`] (helm's lifecycle annotations).
//! - Read through a tree: [`inputs`] (chart and values read from the fleet repo, their
//!   digest).
//! - A process: [`helm`] (`helm template`, and the private configuration through which it
//!   reaches charts with [`credentials`]).

pub mod credentials;
pub mod diff;
pub mod health;
pub mod helm;
pub mod hooks;
pub mod inputs;
pub mod kube_yaml;
pub mod manifest;
pub mod values;
