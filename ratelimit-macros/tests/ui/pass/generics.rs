//! Generic handlers: type and const parameters, a where clause, `impl Trait` in both positions.

use std::fmt::Display;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use ratelimit_axum::rate_limit;

#[rate_limit(rate = "100/h")]
async fn show<T>(State(value): State<T>) -> impl IntoResponse
where
    T: Display + Clone + Send + Sync + 'static,
{
    value.to_string()
}

#[rate_limit(rate = "100/h")]
async fn repeat<const N: usize>() -> String {
    "ab".repeat(N)
}

// A type parameter only the return type names: needs the turbofish inside the expansion.
#[rate_limit(rate = "100/h")]
async fn default_of<T: Default + Display>() -> String {
    T::default().to_string()
}

#[rate_limit(rate = "100/h")]
async fn lifetimes<'a>(State(value): State<u32>) -> String
where
    'a: 'a,
{
    value.to_string()
}

// Not a handler axum can call, but the expansion must still compile: `impl Trait` arguments
// beside explicit generics, forwarded with a turbofish of the explicit ones.
#[rate_limit(rate = "100/h")]
#[allow(dead_code)]
async fn describe<T: Display>(label: impl Display, value: T) -> String {
    format!("{label}: {value}")
}

fn main() {
    let _app: Router = Router::new()
        .route("/show", get(show::<u32>))
        .route("/repeat", get(repeat::<3>))
        .route("/default", get(default_of::<u8>))
        .route("/lifetimes", get(lifetimes))
        .with_state(7_u32);
}
