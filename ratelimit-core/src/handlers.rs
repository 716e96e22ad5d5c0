//! Limits that `#[rate_limit]` handlers declare at link time, so a program can validate its
//! configuration against every limit before serving, and operators can list them.

use crate::algorithm::Algorithm;

/// One `#[rate_limit]` attribute of one handler, registered at link time.
#[derive(Debug)]
pub struct RegisteredLimit {
    /// `module::path::handler`.
    pub handler: &'static str,
    /// The bucket group (defaults to the handler path).
    pub group: &'static str,
    /// The rate as written, or `"<per request>"` for a rate function.
    pub rate: &'static str,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The backend it names, if any (otherwise the registry default).
    pub backend: Option<&'static str>,
}

inventory::collect!(RegisteredLimit);

/// Every limit declared by a handler linked into this program.
pub fn registered_limits() -> impl Iterator<Item = &'static RegisteredLimit> {
    inventory::iter::<RegisteredLimit>.into_iter()
}

#[doc(hidden)]
pub use inventory::submit as __submit;
