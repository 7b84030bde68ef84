//! The fleet repository: its document types, loading and validation.
//!
//! ```text
//! fleet.yaml                  kind: Fleet        (waves, tag pattern, defaults)
//! clusters/**/<name>.yaml     kind: Cluster      (one per cluster)
//! components/**/<name>.yaml   kind: ComponentSet (reusable component lists)
//! charts/<chart>/...          charts kept in the repo
//! values/...                  values files referenced by components
//! ```
//!
//! This crate does no I/O beyond reading a [`Tree`]; the agent reads the same types from
//! git objects, `tidemark validate` from a directory.
#![deny(missing_docs)]

pub mod cluster;
pub mod component;
pub mod diagnostic;
pub mod duration;
pub mod fleet;
pub mod freeze;
#[doc(hidden)]
pub mod fuzzing;
pub mod json_schema;
pub mod load;
pub mod meta;
pub mod resolve;
pub mod selector;
pub mod source;
pub mod tree;
pub mod validate;
pub mod version;
pub mod window;

pub use cluster::{Cluster, ClusterSpec, DrainBy, DrainTimeoutAction, NodeGroup, Provider};
pub use component::{ChartRef, Component, ComponentPhase, ComponentSet};
pub use diagnostic::{Diagnostic, Diagnostics};
pub use duration::Duration;
pub use fleet::Fleet;
pub use load::{Document, FleetRepo, load};
pub use resolve::DesiredState;
pub use selector::{LabelSelector, Labels};
pub use source::SourceText;
pub use tree::{FsTree, Tree, TreeError};
pub use validate::validate;
pub use version::KubeVersion;
pub use window::MaintenanceWindow;
