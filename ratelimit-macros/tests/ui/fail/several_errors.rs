use ratelimit_axum::rate_limit;

struct Api;

impl Api {
    #[rate_limit(
        rate = "5/M",
        algorithm = "bogus",
        key = "header:",
        block = "no",
        burst = 3,
        cost = 0,
        methods = ["FETCH"],
    )]
    #[rate_limit(key = "user", shadow = "yes")]
    fn handler(&self) -> &'static str {
        "ok"
    }
}

fn main() {
    let _ = Api::handler;
}
