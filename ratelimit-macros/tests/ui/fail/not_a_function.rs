use ratelimit_axum::rate_limit;

#[rate_limit(rate = "100/h")]
struct Api;

fn main() {
    let _ = Api;
}
