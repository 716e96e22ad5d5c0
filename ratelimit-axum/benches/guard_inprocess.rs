//! What `#[rate_limit]` costs in-process, without sockets: the four routes of `http_overhead`
//! (unguarded, `#[rate_limit]` on the memory backend, tower_governor without and with its
//! headers) in one `Router`, each request built with a `ConnectInfo` and sent through
//! `Service::call` on a current-thread runtime. Steadier than the HTTP bench on a busy machine, and small enough to run under
//! `valgrind --tool=callgrind`, whose instruction counts do not depend on load at all.
//!
//! ```text
//! cargo bench -p ratelimit-axum --bench guard_inprocess
//! GUARD_BENCH_ROUTE=guarded GUARD_BENCH_REQUESTS=20000 valgrind --tool=callgrind \
//!     target/release/deps/guard_inprocess-* --bench
//! ```
//!
//! Settings: `GUARD_BENCH_REQUESTS` per route and repetition (1,000,000), `GUARD_BENCH_REPEAT`
//! (3), `GUARD_BENCH_ROUTE` (`plain`, `guarded`, `governor`, `governor-headers` or `all`).
//! Without `--bench` it sends a handful of requests per route and checks the answers.

// A bench binary reports to the terminal that ran it: printing is its whole output.
#![allow(clippy::print_stdout)]

use std::error::Error;
use std::net::SocketAddr;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{Request, StatusCode};
use tower::Service as _;

type BenchResult<T> = Result<T, Box<dyn Error>>;

#[path = "support/routes.rs"]
mod routes;

/// The routes by name (`GUARD_BENCH_ROUTE`), each served at `/<name>` (see `routes`).
const ROUTES: [&str; 4] = ["plain", "guarded", "governor", "governor-headers"];

fn request(uri: &str, peer: SocketAddr) -> BenchResult<Request<Body>> {
    let mut request = Request::get(uri).body(Body::empty())?;
    request.extensions_mut().insert(ConnectInfo(peer));
    Ok(request)
}

/// Sends `requests` requests to `/<route>`; the nanoseconds each took on average.
async fn run(app: &mut Router, route: &str, requests: u64) -> BenchResult<f64> {
    let uri = format!("/{route}");
    let peer: SocketAddr = "192.0.2.7:40000".parse()?;
    let started = Instant::now();
    for _ in 0..requests {
        let response = app.call(request(&uri, peer)?).await?;
        if response.status() != StatusCode::OK {
            return Err(format!("{uri} answered {}", response.status()).into());
        }
        drop(response);
    }
    Ok(started.elapsed().as_nanos() as f64 / requests.max(1) as f64)
}

fn env_or(name: &str, default: u64) -> BenchResult<u64> {
    std::env::var(name).map_or(Ok(default), |value| {
        value
            .trim()
            .parse()
            .map_err(|error| format!("{name}={value:?}: {error}").into())
    })
}

fn main() -> BenchResult<()> {
    let measuring = std::env::args().any(|arg| arg == "--bench");
    let requests = if measuring {
        env_or("GUARD_BENCH_REQUESTS", 1_000_000)?
    } else {
        10
    };
    let repeat = if measuring {
        env_or("GUARD_BENCH_REPEAT", 3)?
    } else {
        1
    };
    let selected = std::env::var("GUARD_BENCH_ROUTE").unwrap_or_else(|_| "all".to_owned());
    let routes: Vec<&str> = ROUTES
        .into_iter()
        .filter(|route| selected == "all" || selected == *route)
        .collect();
    if routes.is_empty() {
        return Err(
            format!("GUARD_BENCH_ROUTE={selected:?}: expected one of {ROUTES:?} or all").into(),
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime.block_on(async {
        let mut app = routes::app()?;
        for repetition in 1..=repeat {
            let mut line = format!("repetition {repetition}:");
            for route in &routes {
                let nanos = run(&mut app, route, requests).await?;
                line.push_str(&format!("  {route} {nanos:>7.0} ns"));
            }
            println!("{line}");
        }
        Ok(())
    })
}
