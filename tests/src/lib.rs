//! Test support shared by every backend test: the conformance suite, service discovery, the
//! fault proxy, the expiry audit and the SQL test databases.

pub mod conformance;
pub mod contention;
pub mod expiry_audit;
pub mod extreme_values;
pub mod fault_proxy;
pub mod redis_cluster;
pub mod separate_limits;
pub mod services;
pub mod sql_database;
