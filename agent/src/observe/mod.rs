//! What the cluster looks like now. The planner sees only [`model`]: domain types with
//! versions parsed once, never Kubernetes API types. (Reading them from the API server and
//! the provider comes with the agent's control loop.)

pub mod cluster;
pub mod model;

pub use cluster::observe;
