//! The extractor `#[rate_limit]` puts first in a handler's arguments.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use crate::enforce::{Admitted, Context, enforce};
use crate::headers;
use crate::rejection::GuardRejection;
use crate::settings::Scope;
use crate::spec::HandlerSpec;

/// Every handler's limits by id, collected once from the link-time registrations.
static HANDLERS: LazyLock<HashMap<u64, &'static HandlerSpec>> = LazyLock::new(|| {
    inventory::iter::<HandlerSpec>
        .into_iter()
        .map(|spec| (spec.id, spec))
        .collect()
});

/// Runs a handler's limits before any other extractor (so a blocked request never has its
/// body read) and, after the handler, adds the rate-limit headers to its response.
///
/// `ID` names the handler's registered [`HandlerSpec`]; the macro writes it.
#[derive(Debug)]
#[must_use = "call `finish` with the handler's response to add the rate-limit headers"]
pub struct Guard<const ID: u64> {
    admitted: Admitted,
}

impl<const ID: u64> Guard<ID> {
    /// Adds the rate-limit headers (no `Retry-After`: the request was admitted) to `response`.
    pub fn finish(self, response: impl IntoResponse) -> Response {
        let mut response = response.into_response();
        if let Some(decision) = &self.admitted.reported {
            headers::insert(response.headers_mut(), decision, false);
        }
        response
    }
}

impl<const ID: u64, S: Send + Sync> FromRequestParts<S> for Guard<ID> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let scope = parts.extensions.get::<Scope>().cloned();
        let context = Context::of(scope.as_ref());
        let Some(spec) = HANDLERS.get(&ID) else {
            return Err(GuardRejection::UnregisteredHandler.into_response());
        };
        match enforce(&context, spec.handler, spec.limits, parts).await {
            Ok(admitted) => Ok(Self { admitted }),
            Err(rejection) => Err(rejection.into_response_with(context.settings.blocked_response)),
        }
    }
}
