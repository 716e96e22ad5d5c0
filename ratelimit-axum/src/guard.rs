//! The extractor `#[rate_limit]` puts first in a handler's arguments.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::LazyLock;

use std::borrow::BorrowMut;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use crate::enforce::{Admitted, Context, Enforcement, Progress};
use crate::guard_future::GuardFuture;
use crate::headers;
use crate::rejection::GuardRejection;
use crate::settings::{HeaderFields, Scope};
use crate::spec::HandlerSpec;

/// Every handler's limits by id, collected once from the link-time registrations.
static HANDLERS: LazyLock<HashMap<u64, &'static HandlerSpec, BuildHasherDefault<IdHasher>>> =
    LazyLock::new(|| {
        inventory::iter::<HandlerSpec>
            .into_iter()
            .map(|spec| (spec.id, spec))
            .collect()
    });

/// Handler ids are FNV-1a hashes already (see `handler_id`); hashing them again per request
/// would only cost time.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }
}

/// Runs a handler's limits before any other extractor (so a blocked request never has its
/// body read) and, after the handler, adds the rate-limit headers to its response.
///
/// `ID` names the handler's registered [`HandlerSpec`]; the macro writes it, and sets
/// `EXPOSE_STATUS` to `false` when the guard is the handler's only argument (nothing after it
/// could read a [`crate::RateLimitStatus`], so it is not inserted). `Guard<ID, true>` is a parts
/// extractor, `Guard<ID, false>` takes the whole request.
#[derive(Debug)]
#[must_use = "call `finish` with the handler's response to add the rate-limit headers"]
pub struct Guard<const ID: u64, const EXPOSE_STATUS: bool = true> {
    admitted: Admitted,
    fields: HeaderFields,
}

impl<const ID: u64, const EXPOSE_STATUS: bool> Guard<ID, EXPOSE_STATUS> {
    /// Adds the rate-limit headers (no `Retry-After`: the request was admitted) to `response`.
    /// A 429 of the handler's own (a limit it checked itself, answered with
    /// [`crate::RateLimited::to_response`]) keeps its headers unless the guard's decision is
    /// more restrictive, as between stacked limits.
    pub fn finish(self, response: impl IntoResponse) -> Response {
        let mut response = response.into_response();
        if let Some(decision) = &self.admitted.reported {
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                headers::insert_fields_unless_more_restrictive(
                    response.headers_mut(),
                    decision,
                    self.fields,
                );
            } else {
                headers::insert_fields(response.headers_mut(), decision, false, self.fields);
            }
        }
        response
    }

    /// Decides synchronously when every store answers without waiting (memory), so the
    /// handler's future holds no guard state; otherwise continues in a boxed future that holds
    /// `parts` (borrowed or owned).
    fn decide<'a, P>(mut parts: P) -> GuardFuture<'a, Result<Self, Response>>
    where
        P: BorrowMut<Parts> + Send + 'a,
    {
        let Some(spec) = HANDLERS.get(&ID) else {
            return GuardFuture::Ready(Some(Err(
                GuardRejection::UnregisteredHandler.into_response()
            )));
        };
        let scope = parts.borrow().extensions.get::<Scope>().cloned();
        let context = Context::of(scope.as_ref());
        let blocked_response = context.settings.blocked_response;
        let fields = context.settings.header_fields;
        // The extractor's rejection type is axum's `Response`, large or not.
        #[allow(clippy::result_large_err)]
        let respond = move |result: Result<Admitted, GuardRejection>| match result {
            Ok(admitted) => Ok(Self { admitted, fields }),
            Err(rejection) => Err(rejection.into_response_with(blocked_response, fields)),
        };
        let mut run = match Enforcement::start(&context, parts.borrow()) {
            Ok(Some(run)) => run,
            Ok(None) => return GuardFuture::Ready(Some(respond(Ok(Admitted::default())))),
            Err(rejection) => return GuardFuture::Ready(Some(respond(Err(rejection)))),
        };
        if !EXPOSE_STATUS {
            run.hide_status();
        }
        let waiting = match run.run_now(&context, spec.handler, spec.limits, parts.borrow_mut()) {
            Progress::Done(result) => return GuardFuture::Ready(Some(respond(result))),
            Progress::Waiting(check) => check.into_owned(),
        };
        GuardFuture::Waiting(Box::pin(async move {
            let context = Context::of(scope.as_ref());
            let result = run
                .run_rest(
                    waiting,
                    &context,
                    spec.handler,
                    spec.limits,
                    parts.borrow_mut(),
                )
                .await;
            respond(result)
        }))
    }
}

/// A guard followed by other arguments: they run after it on the same request parts, so the
/// [`crate::RateLimitStatus`] it inserts is there for them.
impl<const ID: u64, S: Send + Sync> FromRequestParts<S> for Guard<ID, true> {
    type Rejection = Response;

    fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> impl Future<Output = Result<Self, Self::Rejection>> + Send {
        Self::decide(parts)
    }
}

/// A guard that is the handler's only argument takes the whole request, which nothing reads
/// after it: taken directly instead of through axum's adapter for parts extractors, whose
/// future holds a copy of the parts and is polled once more.
impl<const ID: u64, S: Send + Sync> FromRequest<S> for Guard<ID, false> {
    type Rejection = Response;

    fn from_request(
        request: Request,
        _state: &S,
    ) -> impl Future<Output = Result<Self, Self::Rejection>> + Send {
        let (parts, _body) = request.into_parts();
        Self::decide(parts)
    }
}
