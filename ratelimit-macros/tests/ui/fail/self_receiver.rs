use ratelimit_axum::rate_limit;

struct Api;

impl Api {
    #[rate_limit(rate = "100/h")]
    async fn handler(&self) -> &'static str {
        "ok"
    }
}

fn main() {
    let _ = Api::handler;
}
