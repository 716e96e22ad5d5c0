//! Redis: the `PING` probe and private `redis-server` processes.

use std::path::PathBuf;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::probe::connect;
use super::process::{self, Launch, ServerError, ServerProcess};

/// A `redis-server` owned by the caller, on a free loopback port, with no persistence. It is
/// killed (`SIGKILL`, like a crash) by [`PrivateRedis::kill`], when dropped, and when the test
/// process exits.
#[derive(Debug)]
pub struct PrivateRedis {
    process: ServerProcess,
}

impl PrivateRedis {
    /// Starts a fresh server and waits until it answers `PING`.
    ///
    /// # Errors
    /// When `redis-server` is not installed or does not answer within 30 seconds.
    pub async fn start() -> Result<Self, ServerError> {
        let program = process::find_program(
            "redis-server",
            &["redis-server"],
            &[PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")],
        )?;
        let process = process::start_with_retries(async || {
            let port = process::free_port()?;
            let dir = process::scratch_dir(&std::env::temp_dir(), "redis").await?;
            let port_arg = port.to_string();
            let mut args = process::os_args(&[
                "--port",
                &port_arg,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
            ]);
            args.push(dir.clone().into_os_string());
            let launch = Launch {
                program: program.clone(),
                args,
                dir,
                stop_signal: "KILL",
                run_as: None,
            };
            ServerProcess::start(launch, port, format!("redis://127.0.0.1:{port}"), probe).await
        })
        .await?;
        Ok(Self { process })
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        self.process.url()
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.process.port()
    }

    /// Kills the server and waits until it is gone: afterwards its port refuses connections.
    ///
    /// # Errors
    /// When the server has not exited 15 seconds after being killed.
    pub async fn kill(&mut self) -> Result<(), ServerError> {
        self.process.stop().await
    }

    pub(super) fn into_process(self) -> ServerProcess {
        self.process
    }
}

/// Checks that a Redis server at `address` (`host:port`) answers `PING` without a password.
pub(super) async fn probe(address: &str) -> Result<(), String> {
    let mut stream = connect(address).await?;
    let exchange = async {
        stream.write_all(b"PING\r\n").await?;
        let mut reply = Vec::new();
        let mut chunk = [0_u8; 64];
        while !reply.ends_with(b"\r\n") && reply.len() < 512 {
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                break;
            }
            reply.extend_from_slice(&chunk[..read]);
        }
        Ok::<_, std::io::Error>(reply)
    };
    let reply = super::probe::within_deadline(exchange).await?;
    if reply.starts_with(b"+PONG") {
        Ok(())
    } else {
        Err(format!(
            "PING answered {:?} instead of +PONG",
            String::from_utf8_lossy(&reply).trim_end()
        ))
    }
}
