//! The service `RateLimitLayer` wraps around an inner service.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::Request;
use tower_service::Service;

use crate::enforce::{Context as LimitContext, enforce};
use crate::future::ResponseFuture;
use crate::headers;
use crate::layer::Rules;
use crate::settings::Scope;

/// Applies a [`crate::RateLimitLayer`]'s rules before calling the inner service. Every clone
/// shares the rules and, through the registry, the same counts.
#[derive(Clone, Debug)]
pub struct RateLimitService<S> {
    inner: S,
    rules: Arc<Rules>,
}

impl<S> RateLimitService<S> {
    pub(crate) fn new(inner: S, rules: Arc<Rules>) -> Self {
        Self { inner, rules }
    }
}

impl<S, B, ResBody> Service<Request<B>> for RateLimitService<S>
where
    S: Service<Request<B>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone that was polled ready is the one that must serve this request.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let rules = Arc::clone(&self.rules);
        ResponseFuture::new(async move {
            let Some(rule) = rules.select(request.uri().path()) else {
                return inner
                    .call(request)
                    .await
                    .map(|response| response.map(Body::new));
            };
            let (mut parts, body) = request.into_parts();
            let extension = parts.extensions.get::<Scope>().cloned();
            let scope = rules.scope.as_ref().or(extension.as_ref());
            let context = LimitContext::of(scope);
            let admitted =
                match enforce(&context, &rule.name, std::slice::from_ref(rule), &mut parts).await {
                    Ok(admitted) => admitted,
                    Err(rejection) => {
                        return Ok(rejection.into_response_with(
                            context.settings.blocked_response,
                            context.settings.header_fields,
                        ));
                    }
                };
            let fields = context.settings.header_fields;
            let response = inner.call(Request::from_parts(parts, body)).await?;
            let mut response = response.map(Body::new);
            if let Some(decision) = &admitted.reported {
                headers::insert_fields_unless_more_restrictive(
                    response.headers_mut(),
                    decision,
                    fields,
                );
            }
            Ok(response)
        })
    }
}
