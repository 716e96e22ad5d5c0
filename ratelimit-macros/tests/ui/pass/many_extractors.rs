//! Seven extractors plus the guard: the outer fn has eight arguments, which clippy's
//! `too_many_arguments` must not hold against the user.
#![deny(warnings, clippy::all, clippy::pedantic)]

use axum::Router;
use axum::extract::{MatchedPath, OriginalUri};
use axum::http::{HeaderMap, Method, Uri, Version};
use axum::routing::get;
use ratelimit_axum::rate_limit;

#[rate_limit(rate = "100/h")]
async fn seven(
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    version: Version,
    OriginalUri(original): OriginalUri,
    path: MatchedPath,
    body: String,
) -> String {
    format!(
        "{method} {uri} {} {version:?} {original} {} {body}",
        headers.len(),
        path.as_str()
    )
}

fn main() {
    let _app: Router = Router::new().route("/seven", get(seven));
}
