//! The simulated cluster (issue 3).
