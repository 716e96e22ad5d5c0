//! Two server processes sharing one limit through Redis.
//!
//! Run: `cargo run --example redis` (Redis from `REDIS_URL`, default redis://127.0.0.1:6379).
//! It starts two copies of itself as servers on 127.0.0.1:3001 and 127.0.0.1:3002; both count
//! into the same Redis keys, so `curl` three times on each port and the sixth request of the
//! `5/m` limit answers 429, whichever process serves it. Ctrl-C stops all three.

use std::process::Stdio;

use axum::Router;
use axum::routing::get;
use ratelimit_axum::core::{RedisBackend, Registry};
use ratelimit_axum::rate_limit;

/// Counted in Redis: every process that installs the same backend shares this bucket.
#[rate_limit(key = "ip", rate = "5/m", group = "redis-example")]
async fn shared() -> String {
    format!("served by process {}\n", std::process::id())
}

async fn serve(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    Registry::builder()
        .backend("redis", RedisBackend::connect(&url).await?)
        .install()?;
    let app = Router::new().route("/", get(shared));
    ratelimit_examples::serve(app, addr.parse()?, &[]).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ratelimit_examples::init_logging();
    let mut args = std::env::args().skip(1);
    if let (Some(flag), Some(addr)) = (args.next(), args.next())
        && flag == "--serve"
    {
        return serve(&addr).await;
    }
    let exe = std::env::current_exe()?;
    let mut servers = Vec::new();
    for addr in ["127.0.0.1:3001", "127.0.0.1:3002"] {
        servers.push(
            tokio::process::Command::new(&exe)
                .args(["--serve", addr])
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()?,
        );
    }
    tracing::info!(
        "two servers share one 5/m limit in Redis; try: \
         for port in 3001 3002 3001 3002 3001 3002; do curl -s -w ' %{{http_code}}\\n' http://127.0.0.1:$port/; done"
    );
    tokio::signal::ctrl_c().await?;
    drop(servers);
    Ok(())
}
