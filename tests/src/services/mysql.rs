//! MySQL/MariaDB: the handshake probe and private `mariadbd`/`mysqld` servers.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::probe::{connect, within_deadline};
use super::process::{self, Launch, ServerError, ServerProcess};

/// The account every test connects as, without a password.
const USER: &str = "root";
/// The database every test uses.
const DATABASE: &str = "test";

// Client capability flags of the handshake response.
const CLIENT_LONG_PASSWORD: u32 = 0x0000_0001;
const CLIENT_CONNECT_WITH_DB: u32 = 0x0000_0008;
const CLIENT_PROTOCOL_41: u32 = 0x0000_0200;
const CLIENT_SECURE_CONNECTION: u32 = 0x0000_8000;
const CLIENT_PLUGIN_AUTH: u32 = 0x0008_0000;
/// `utf8mb4_general_ci`.
const CHARSET_UTF8MB4: u8 = 45;
const COM_QUIT: u8 = 0x01;
/// Largest packet the probe accepts; handshake packets are far smaller.
const MAX_PACKET: usize = 1 << 16;
/// Largest packet the probe announces it would accept (the protocol's 3-byte length limit).
const MAX_CLIENT_PACKET: u32 = 0x00ff_ffff;

/// A MariaDB (or MySQL) server owned by the caller: a fresh data directory with `root` without a
/// password and database `test`, on a free loopback port. It is killed (`SIGKILL`) by
/// [`PrivateMysql::kill`], when dropped, and when the test process exits; its data directory is
/// then deleted.
#[derive(Debug)]
pub struct PrivateMysql {
    process: ServerProcess,
}

impl PrivateMysql {
    /// Creates a data directory, starts the server and waits until
    /// `root@127.0.0.1:<port>/test` accepts a login.
    ///
    /// # Errors
    /// When the server or its install script is not installed, installing fails, or the server
    /// does not accept a login within 30 seconds.
    pub async fn start() -> Result<Self, ServerError> {
        let server_dirs = [
            PathBuf::from("/usr/sbin"),
            PathBuf::from("/usr/libexec"),
            PathBuf::from("/usr/local/mysql/bin"),
        ];
        let server = process::find_program("mariadbd", &["mariadbd", "mysqld"], &server_dirs)?;
        let install = process::find_program(
            "mariadb-install-db",
            &["mariadb-install-db", "mysql_install_db"],
            &[
                PathBuf::from("/usr/bin"),
                PathBuf::from("/usr/local/mysql/scripts"),
                PathBuf::from("/usr/local/mysql/bin"),
            ],
        )?;
        let process = process::start_with_retries(async || {
            let dir = process::scratch_dir(&std::env::temp_dir(), "mysql").await?;
            let started = start_server(&install, &server, &dir).await;
            if started.is_err() {
                // The guard deletes the directory once a server ran; before that it is ours.
                let _ = tokio::fs::remove_dir_all(&dir).await;
            }
            started
        })
        .await?;
        Ok(Self { process })
    }

    /// `mysql://root@127.0.0.1:<port>/test`.
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

async fn start_server(
    install: &Path,
    server: &Path,
    dir: &Path,
) -> Result<ServerProcess, ServerError> {
    let data = dir.join("data");
    // Small InnoDB files and no flushing at commit: start fast, nothing here must survive.
    let innodb = [
        "--innodb-log-file-size=8M",
        "--innodb-buffer-pool-size=32M",
        "--innodb-flush-log-at-trx-commit=0",
    ];
    // Server options must not come from the machine's my.cnf (port, socket, datadir of the
    // shared server), and root has to be asked for explicitly.
    let user = process::running_as_root().then_some("--user=root");

    let mut install_command = process::command_as(None, install)?;
    install_command
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        // A server deletes stray temporary tables in its tmpdir when it starts, so it must not
        // share one with any other server, including the bootstrap run by the install script.
        .arg(format!("--tmpdir={}", dir.display()))
        .args(user)
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .args(innodb);
    process::run_step("mariadb-install-db", install_command, None).await?;

    let init_file = dir.join("init.sql");
    let init = format!("CREATE DATABASE IF NOT EXISTS {DATABASE};\n");
    tokio::fs::write(&init_file, init)
        .await
        .map_err(|source| ServerError::ScratchDir {
            path: init_file.clone(),
            source,
        })?;

    let port = process::free_port()?;
    let mut args = process::os_args(&["--no-defaults"]);
    args.extend(
        [
            format!("--datadir={}", data.display()),
            format!("--port={port}"),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--socket={}", dir.join("mysqld.sock").display()),
            format!("--pid-file={}", dir.join("mysqld.pid").display()),
            format!("--tmpdir={}", dir.display()),
            format!("--init-file={}", init_file.display()),
            "--skip-log-bin".to_owned(),
            "--max-connections=500".to_owned(),
        ]
        .into_iter()
        .map(Into::into),
    );
    args.extend(user.into_iter().chain(innodb).map(Into::into));
    let launch = Launch {
        program: server.to_path_buf(),
        args,
        dir: dir.to_path_buf(),
        stop_signal: "KILL",
        run_as: None,
    };
    let url = format!("mysql://{USER}@127.0.0.1:{port}/{DATABASE}");
    ServerProcess::start(launch, port, url, probe).await
}

/// Checks that the server at `address` (`host:port`) lets `root` log into `test` without a
/// password: reads the greeting, answers with a handshake response (`mysql_native_password`,
/// empty password), follows one auth switch, and expects OK.
pub(super) async fn probe(address: &str) -> Result<(), String> {
    let mut stream = connect(address).await?;
    within_deadline(log_in(&mut stream)).await?
}

/// The handshake; the outer `Result` is I/O, the inner one the server's verdict.
async fn log_in(stream: &mut TcpStream) -> std::io::Result<Result<(), String>> {
    let (sequence, greeting) = read_packet(stream).await?;
    match greeting.first() {
        Some(10) => {}
        Some(0xff) => {
            return Ok(Err(format!(
                "the server refused the connection: {}",
                error_message(&greeting)
            )));
        }
        other => {
            return Ok(Err(format!(
                "unexpected greeting (protocol {other:?}); is this MySQL?"
            )));
        }
    }

    let capabilities = CLIENT_LONG_PASSWORD
        | CLIENT_CONNECT_WITH_DB
        | CLIENT_PROTOCOL_41
        | CLIENT_SECURE_CONNECTION
        | CLIENT_PLUGIN_AUTH;
    let mut response = Vec::new();
    response.extend_from_slice(&capabilities.to_le_bytes());
    response.extend_from_slice(&MAX_CLIENT_PACKET.to_le_bytes());
    response.push(CHARSET_UTF8MB4);
    response.extend_from_slice(&[0; 23]);
    response.extend_from_slice(USER.as_bytes());
    response.push(0);
    // Length-prefixed authentication data: an empty password sends none.
    response.push(0);
    response.extend_from_slice(DATABASE.as_bytes());
    response.push(0);
    response.extend_from_slice(b"mysql_native_password\0");
    let mut sequence = sequence.wrapping_add(1);
    write_packet(stream, sequence, &response).await?;

    // At most one auth switch (answered with an empty password) and one "fast auth ok".
    for _ in 0..3 {
        let (reply_sequence, reply) = read_packet(stream).await?;
        sequence = reply_sequence.wrapping_add(1);
        match reply.first() {
            Some(0x00) => {
                let _ = write_packet(stream, 0, &[COM_QUIT]).await;
                return Ok(Ok(()));
            }
            Some(0xff) => {
                return Ok(Err(format!(
                    "login as {USER} to {DATABASE} without a password refused: {}",
                    error_message(&reply)
                )));
            }
            Some(0xfe) => write_packet(stream, sequence, &[]).await?,
            Some(0x01) if reply.get(1) == Some(&0x03) => {}
            _ => break,
        }
    }
    Ok(Err(format!(
        "the server wants a password or a plugin this probe does not speak for {USER}"
    )))
}

async fn read_packet(stream: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut header = [0; 4];
    stream.read_exact(&mut header).await?;
    let length =
        usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    if length > MAX_PACKET {
        return Err(std::io::Error::other(format!(
            "implausible packet length {length}"
        )));
    }
    let mut payload = vec![0; length];
    stream.read_exact(&mut payload).await?;
    Ok((header[3], payload))
}

async fn write_packet(stream: &mut TcpStream, sequence: u8, payload: &[u8]) -> std::io::Result<()> {
    let length = u32::try_from(payload.len()).map_err(std::io::Error::other)?;
    let [low, middle, high, _] = length.to_le_bytes();
    let mut packet = vec![low, middle, high, sequence];
    packet.extend_from_slice(payload);
    stream.write_all(&packet).await
}

/// The message of an ERR packet: `0xff`, a 2-byte code, `#` and a 5-byte SQL state, the text.
fn error_message(packet: &[u8]) -> String {
    let code = match packet.get(1..3) {
        Some(&[low, high]) => u16::from_le_bytes([low, high]),
        _ => 0,
    };
    let text = match packet.get(3) {
        Some(b'#') => packet.get(9..),
        _ => packet.get(3..),
    }
    .unwrap_or_default();
    format!("error {code}: {}", String::from_utf8_lossy(text))
}
