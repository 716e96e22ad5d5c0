//! Associated functions without `self`: one in a generic impl that never names `Self` (the
//! body moves into a nested fn), two that do (the body moves into a hidden sibling).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use ratelimit_axum::rate_limit;

#[derive(Clone)]
struct Api {
    greeting: &'static str,
}

impl Api {
    #[rate_limit(rate = "100/h")]
    async fn plain() -> &'static str {
        "plain"
    }

    #[rate_limit(rate = "100/h")]
    async fn in_signature(State(api): State<Self>) -> String {
        api.greeting.to_owned()
    }

    #[rate_limit(rate = "100/h", algorithm = "sliding_window_counter")]
    async fn in_body() -> String {
        Self::helper()
    }

    fn helper() -> String {
        "helper".to_owned()
    }
}

struct Generic<T>(T);

impl<T: Default + ToString + Send + 'static> Generic<T> {
    #[rate_limit(rate = "100/h")]
    async fn generic_self() -> String {
        Self(T::default()).0.to_string()
    }
}

fn main() {
    let _app: Router = Router::new()
        .route("/plain", get(Api::plain))
        .route("/signature", get(Api::in_signature))
        .route("/body", get(Api::in_body))
        .route("/generic", get(Generic::<u8>::generic_self))
        .with_state(Api { greeting: "hi" });
}
