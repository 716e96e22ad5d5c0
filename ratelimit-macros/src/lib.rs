//! The `#[rate_limit]` attribute of smart-ratelimit. Use it through `ratelimit_axum::rate_limit`:
//! the expansion refers to `::ratelimit_axum::__private` only.
//!
//! The crate links `ratelimit-core` without default features, so the attribute checks rates
//! and settings with the very grammar and rules the runtime uses: a limit that compiles is one
//! the runtime accepts, and it is written into the program already parsed.
//!
//! Parse (`args.rs`) → validate (`validate.rs`) → expand (`expand.rs`); every error of every
//! stage is reported at once (`errors.rs`).

mod args;
mod errors;
mod expand;
mod validate;

use proc_macro::TokenStream;

/// Rate-limits an axum handler.
///
/// ```no_run
/// use axum::extract::{Json, State};
/// use axum::http::request::Parts;
/// use axum::response::IntoResponse;
/// use ratelimit_axum::rate_limit;
/// # #[derive(Clone)]
/// # struct Db;
/// # #[derive(serde::Deserialize)]
/// # struct Query { term: String }
///
/// fn is_staff(parts: &Parts) -> bool {
///     parts.headers.contains_key("x-staff")
/// }
///
/// #[rate_limit(key = "ip", rate = "100/h", algorithm = "token_bucket", skip_if = is_staff)]
/// #[rate_limit(rate = "10/s")]
/// async fn api(State(db): State<Db>, Json(query): Json<Query>) -> impl IntoResponse {
///     query.term
/// }
/// # let _: axum::Router = axum::Router::new().route("/api", axum::routing::post(api)).with_state(Db);
/// ```
///
/// | argument | values | default |
/// | --- | --- | --- |
/// | `key` | `"ip"`, `"user"`, `"user_or_ip"`, `"global"`, `"header:<Name>"`, `"query:<name>"`, `"path:<name>"`, or a path/closure `fn(&Parts) -> Option<String>` | `"ip"` |
/// | `rate` | a rate such as `"100/h"`, `"10/30s"` or `"10/s;1000/h"`, or a path to `fn(&Parts) -> Rate` (per-request rates) | required |
/// | `algorithm` | `"fixed_window"`, `"sliding_window"`, `"sliding_window_counter"`, `"token_bucket"`, `"leaky_bucket"` | `"fixed_window"` |
/// | `algorithm_config` | `{ bucket_size = 200, refill_rate = 2.0, initial_tokens = 0 }` (token bucket), `{ capacity = 50, leak_rate = 0.5 }` (leaky bucket) | the algorithm's defaults |
/// | `backend` | the name of a configured backend | the registry's default |
/// | `block` | `true`: 429 when limited; `false`: the handler runs and sees `RateLimitStatus` | `true` |
/// | `skip_if` | a path/closure `fn(&Parts) -> bool`; `true` skips counting | none |
/// | `group` | handlers with the same group share buckets | `module::path::handler` |
/// | `cost` | a whole number >= 1, or a path/closure `fn(&Parts) -> u32` | `1` |
/// | `methods` | `["POST", ..]` (GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH); other methods pass uncounted | every method |
/// | `on_error` | `"allow"` or `"deny"` (503) when every backend fails | the registry's policy |
/// | `shadow` | `true`: count and log what would be blocked, never block | `false` |
///
/// Several attributes on one handler are independent limits, checked top first. Everything is
/// validated at compile time, and every problem is reported at once, on the offending token.
///
/// The handler must be an `async fn` without `self` (a free function or an associated
/// function). It becomes an outer fn of the same name, visibility, generics and attributes that
/// takes the guard extractor first, then the original extractors, and returns `axum`'s
/// `Response`; the original body moves into an inner fn (lint attributes such as `#[allow]`
/// are copied onto it, so they still reach the body). An associated handler that names `Self`
/// gets its inner fn as a hidden sibling in the `impl` block; one that uses the generic
/// parameters of its `impl` block must name `Self` too (e.g. `State<Self>`), because a nested
/// fn cannot see them. Functions named by `key`, `rate`, `skip_if` and `cost` are stored in a
/// `static`, so they cannot use the handler's generic parameters or `Self`.
#[proc_macro_attribute]
pub fn rate_limit(args: TokenStream, item: TokenStream) -> TokenStream {
    let site = proc_macro::Span::call_site();
    let position = expand::Position {
        line: site.line(),
        column: site.column(),
    };
    expand::rate_limit(args.into(), item.into(), position).into()
}
