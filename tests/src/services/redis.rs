//! Redis: the `PING` probe and private `redis-server` processes.

use std::path::{Path, PathBuf};

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
        Self::start_with(Mode::Standalone).await
    }

    /// Starts a fresh server on `port` (e.g. the port of a server the test killed, to see a client
    /// reconnect) and waits until it answers `PING`. Unlike [`PrivateRedis::start`] it cannot
    /// retry on another port, so it fails if someone else took the port meanwhile.
    ///
    /// # Errors
    /// When `redis-server` is not installed, exits during startup (the port is taken) or does not
    /// answer within 30 seconds.
    pub async fn start_on(port: u16) -> Result<Self, ServerError> {
        let program = program()?;
        let process = launch(&program, port, Mode::Standalone).await?;
        Ok(Self { process })
    }

    /// Starts a fresh Redis Cluster node (`--cluster-enabled yes`, its `nodes-<port>.conf` in the
    /// scratch directory) that owns no slots and knows no other node yet.
    ///
    /// # Errors
    /// When `redis-server` is not installed or does not answer within 30 seconds.
    pub async fn start_cluster_node() -> Result<Self, ServerError> {
        Self::start_with(Mode::ClusterNode).await
    }

    async fn start_with(mode: Mode) -> Result<Self, ServerError> {
        let program = program()?;
        let process = process::start_with_retries(async || {
            launch(&program, process::free_port()?, mode).await
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

#[derive(Debug, Clone, Copy)]
enum Mode {
    Standalone,
    ClusterNode,
}

fn program() -> Result<PathBuf, ServerError> {
    process::find_program(
        "redis-server",
        &["redis-server"],
        &[PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")],
    )
}

async fn launch(program: &Path, port: u16, mode: Mode) -> Result<ServerProcess, ServerError> {
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
    ]);
    if let Mode::ClusterNode = mode {
        // Relative to `--dir`, which the server changes into.
        let config_file = format!("nodes-{port}.conf");
        args.extend(process::os_args(&[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &config_file,
        ]));
    }
    args.push("--dir".into());
    args.push(dir.clone().into_os_string());
    let launch = Launch {
        program: program.to_owned(),
        args,
        dir,
        stop_signal: "KILL",
        run_as: None,
    };
    ServerProcess::start(launch, port, format!("redis://127.0.0.1:{port}"), probe).await
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
