//! Test support shared by every backend test: the conformance suite and service discovery.

pub mod conformance;
pub mod contention;
pub mod extreme_values;
pub mod fault_proxy;
pub mod redis_cluster;
pub mod separate_limits;
pub mod services;
