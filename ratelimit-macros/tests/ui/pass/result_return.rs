//! A handler returning `Result` with its own error type, and one using `?`.

use axum::Router;
use axum::extract::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ratelimit_axum::rate_limit;
use serde::Deserialize;

struct AppError(String);

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, self.0).into_response()
    }
}

#[derive(Deserialize)]
struct Order {
    quantity: String,
}

#[rate_limit(rate = "10/m", algorithm = "sliding_window")]
async fn order(Json(order): Json<Order>) -> Result<Json<u32>, AppError> {
    let quantity = order
        .quantity
        .parse::<u32>()
        .map_err(|error| AppError(error.to_string()))?;
    if quantity == 0 {
        return Err(AppError("quantity must be at least 1".to_owned()));
    }
    Ok(Json(quantity))
}

fn main() {
    let _app: Router = Router::new().route("/order", post(order));
}
