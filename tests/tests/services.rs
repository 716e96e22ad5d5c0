//! Service discovery finds the shared servers, and private servers start, answer, and are gone
//! once killed or dropped.

use std::collections::HashSet;
use std::error::Error;
use std::time::Duration;

use ratelimit_tests::services::{
    self, Kind, Origin, PrivateMysql, PrivatePostgres, PrivateRedis, ServerError,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

type TestResult = Result<(), Box<dyn Error>>;

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends a raw `PING` and returns the first reply line.
async fn ping(address: &str) -> Result<String, Box<dyn Error>> {
    let mut stream = timeout(IO_TIMEOUT, TcpStream::connect(address)).await??;
    stream.write_all(b"PING\r\n").await?;
    let mut reply = [0; 64];
    let read = timeout(IO_TIMEOUT, stream.read(&mut reply)).await??;
    Ok(String::from_utf8_lossy(&reply[..read])
        .trim_end()
        .to_owned())
}

/// Asks a PostgreSQL server whether it speaks TLS; any PostgreSQL answers `N` or `S`.
async fn postgres_ssl_answer(address: &str) -> Result<u8, Box<dyn Error>> {
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let mut stream = timeout(IO_TIMEOUT, TcpStream::connect(address)).await??;
    stream.write_all(&SSL_REQUEST).await?;
    Ok(timeout(IO_TIMEOUT, stream.read_u8()).await??)
}

/// The protocol version byte of a MySQL server's greeting (10 for every current server).
async fn mysql_greeting_protocol(address: &str) -> Result<u8, Box<dyn Error>> {
    let mut stream = timeout(IO_TIMEOUT, TcpStream::connect(address)).await??;
    let mut header_and_version = [0; 5];
    timeout(IO_TIMEOUT, stream.read_exact(&mut header_and_version)).await??;
    Ok(header_and_version[4])
}

/// Waits until nothing accepts connections on the loopback `port` any more.
async fn assert_refused_soon(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => return,
            _ if Instant::now() >= deadline => panic!("port {port} still accepts connections"),
            _ => sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The started server, or `None` (a skip, or a failure when services are required) when its
/// programs are not installed.
fn installed<T>(started: Result<T, ServerError>) -> Result<Option<T>, ServerError> {
    match started {
        Err(error @ ServerError::NotInstalled { .. }) => Ok(services::skip_or_fail(error)),
        other => other.map(Some),
    }
}

fn address_of(service: &services::Service) -> Result<String, String> {
    service
        .address()
        .map(str::to_owned)
        .ok_or_else(|| format!("no host:port in {}", service.url()))
}

#[tokio::test]
async fn finds_a_redis_that_answers_ping() -> TestResult {
    let Some(redis) = services::redis().await else {
        return Ok(());
    };
    assert_eq!(redis.kind(), Kind::Redis);
    assert!(redis.url().starts_with("redis"), "{}", redis.url());
    assert_eq!(ping(&address_of(&redis)?).await?, "+PONG");
    if std::env::var_os("REDIS_URL").is_none() {
        assert_ne!(redis.origin(), Origin::Env);
    }
    Ok(())
}

#[tokio::test]
async fn finds_a_postgres_that_accepts_the_test_login() -> TestResult {
    let Some(postgres) = services::postgres().await else {
        return Ok(());
    };
    assert!(postgres.url().starts_with("postgres"), "{}", postgres.url());
    let address = address_of(&postgres)?;
    assert!(matches!(postgres_ssl_answer(&address).await?, b'N' | b'S'));
    if postgres.origin() != Origin::Env {
        assert!(postgres.url().ends_with("/test"), "{}", postgres.url());
        Kind::Postgres.probe(&address).await?;
    }
    Ok(())
}

#[tokio::test]
async fn finds_a_mysql_that_accepts_the_test_login() -> TestResult {
    let Some(mysql) = services::mysql().await else {
        return Ok(());
    };
    assert!(mysql.url().starts_with("mysql"), "{}", mysql.url());
    let address = address_of(&mysql)?;
    assert_eq!(mysql_greeting_protocol(&address).await?, 10);
    if mysql.origin() != Origin::Env {
        assert!(mysql.url().ends_with("/test"), "{}", mysql.url());
        Kind::Mysql.probe(&address).await?;
    }
    Ok(())
}

#[tokio::test]
async fn the_default_ports_of_this_machine_are_used_when_no_url_is_set() -> TestResult {
    for kind in Kind::ALL {
        if std::env::var_os(kind.env_var()).is_some() {
            continue;
        }
        let port = kind.default_port();
        if kind.probe(&format!("127.0.0.1:{port}")).await.is_err() {
            continue;
        }
        let service = services::discover(kind).await?;
        assert_eq!(service.origin(), Origin::DefaultPort, "{kind}");
        assert_eq!(service.url(), kind.loopback_url(port));
    }
    Ok(())
}

#[tokio::test]
async fn discovery_runs_once_per_binary() -> TestResult {
    let (first, second) = tokio::join!(
        services::discover(Kind::Redis),
        services::discover(Kind::Redis)
    );
    match (first, second) {
        (Ok(first), Ok(second)) => assert_eq!(first.url(), second.url()),
        (Err(first), Err(second)) => assert_eq!(first.to_string(), second.to_string()),
        (first, second) => panic!("two lookups disagree: {first:?} vs {second:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn probes_reject_a_server_of_another_kind() {
    let Some(redis) = services::redis().await else {
        return;
    };
    let Some(address) = redis.address() else {
        return;
    };
    assert!(Kind::Postgres.probe(address).await.is_err());
    assert!(Kind::Mysql.probe(address).await.is_err());
}

#[test]
fn unique_prefixes_never_repeat() {
    let prefixes: HashSet<String> = (0..10_000)
        .map(|_| services::unique_prefix("some::module::a test"))
        .collect();
    assert_eq!(prefixes.len(), 10_000);
    for prefix in &prefixes {
        assert!(prefix.starts_with("some__module__a_test:"), "{prefix}");
        assert!(prefix.ends_with(':'), "{prefix}");
    }
    assert_ne!(
        services::unique_prefix("a"),
        services::unique_prefix("a"),
        "same test name twice"
    );
}

#[tokio::test]
async fn a_private_redis_answers_and_refuses_connections_once_killed() -> TestResult {
    let Some(mut redis) = installed(PrivateRedis::start().await)? else {
        return Ok(());
    };
    let port = redis.port();
    assert_ne!(port, Kind::Redis.default_port());
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(ping(&format!("127.0.0.1:{port}")).await?, "+PONG");

    redis.kill().await?;
    let refused = TcpStream::connect(("127.0.0.1", port)).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|error| error.kind() == std::io::ErrorKind::ConnectionRefused),
        "{refused:?}"
    );
    // Killing twice is harmless.
    redis.kill().await?;
    Ok(())
}

#[tokio::test]
async fn a_dropped_private_redis_goes_away() -> TestResult {
    let Some(redis) = installed(PrivateRedis::start().await)? else {
        return Ok(());
    };
    let port = redis.port();
    assert_eq!(ping(&format!("127.0.0.1:{port}")).await?, "+PONG");
    drop(redis);
    assert_refused_soon(port).await;
    Ok(())
}

#[tokio::test]
async fn private_redis_servers_are_independent() -> TestResult {
    let (first, second) = tokio::join!(PrivateRedis::start(), PrivateRedis::start());
    let (Some(mut first), Some(second)) = (installed(first)?, installed(second)?) else {
        return Ok(());
    };
    assert_ne!(first.port(), second.port());
    first.kill().await?;
    assert_eq!(
        ping(&format!("127.0.0.1:{}", second.port())).await?,
        "+PONG"
    );
    Ok(())
}

#[tokio::test]
async fn a_private_postgres_accepts_the_test_login_until_killed() -> TestResult {
    let Some(mut postgres) = installed(PrivatePostgres::start().await)? else {
        return Ok(());
    };
    let port = postgres.port();
    assert_eq!(
        postgres.url(),
        format!("postgres://postgres@127.0.0.1:{port}/test")
    );
    let address = format!("127.0.0.1:{port}");
    assert!(matches!(postgres_ssl_answer(&address).await?, b'N' | b'S'));
    Kind::Postgres.probe(&address).await?;

    postgres.kill().await?;
    assert_refused_soon(port).await;
    Ok(())
}

#[tokio::test]
async fn a_private_mysql_accepts_the_test_login_until_killed() -> TestResult {
    let Some(mut mysql) = installed(PrivateMysql::start().await)? else {
        return Ok(());
    };
    let port = mysql.port();
    assert_eq!(mysql.url(), format!("mysql://root@127.0.0.1:{port}/test"));
    let address = format!("127.0.0.1:{port}");
    assert_eq!(mysql_greeting_protocol(&address).await?, 10);
    Kind::Mysql.probe(&address).await?;

    mysql.kill().await?;
    assert_refused_soon(port).await;
    Ok(())
}
