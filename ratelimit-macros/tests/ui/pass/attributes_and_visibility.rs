//! The handler keeps its docs, lint attributes, visibility and a raw-identifier name.

use axum::Router;
use axum::routing::get;
use ratelimit_axum::rate_limit;

mod handlers {
    use super::rate_limit;

    /// Says hello.
    #[rate_limit(rate = "100/h")]
    #[allow(clippy::needless_return)]
    pub(crate) async fn hello() -> &'static str {
        return "hello";
    }

    #[rate_limit(rate = "100/h")]
    pub async fn r#match() -> &'static str {
        "match"
    }
}

fn main() {
    let _app: Router = Router::new()
        .route("/hello", get(handlers::hello))
        .route("/match", get(handlers::r#match));
}
