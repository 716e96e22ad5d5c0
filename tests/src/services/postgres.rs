//! PostgreSQL: the startup-message probe and private `postgres` servers.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::probe::{connect, within_deadline};
use super::process::{self, Launch, ServerError, ServerProcess};

/// The role every test connects as, with trust authentication.
const USER: &str = "postgres";
/// The database every test uses.
const DATABASE: &str = "test";
/// Protocol version 3.0 in a startup message.
const PROTOCOL_3_0: u32 = 3 << 16;
/// PostgreSQL refuses to run as root; this OS user runs it instead.
const OS_USER_WHEN_ROOT: &str = "postgres";

/// A PostgreSQL server owned by the caller: a fresh cluster (`initdb`, trust authentication,
/// database `test`) on a free loopback port, with `fsync` off. It is stopped (immediate
/// shutdown) by [`PrivatePostgres::kill`], when dropped, and when the test process exits; its data
/// directory is then deleted.
#[derive(Debug)]
pub struct PrivatePostgres {
    process: ServerProcess,
}

impl PrivatePostgres {
    /// Creates a cluster, starts it and waits until `postgres@127.0.0.1:<port>/test` accepts a
    /// login. When running as root, the server runs as the `postgres` OS user.
    ///
    /// # Errors
    /// When `initdb`/`postgres` are not installed, a setup step fails, or the server does not
    /// accept a login within 30 seconds.
    pub async fn start() -> Result<Self, ServerError> {
        let initdb = process::find_program("initdb", &["initdb"], &install_dirs())?;
        // Use the server of the same installation as initdb: the data format is per version.
        let server = initdb.with_file_name("postgres");
        let run_as = process::running_as_root().then_some(OS_USER_WHEN_ROOT);
        // The OS user must be able to reach the data directory, so not root's own TMPDIR.
        let base = match run_as {
            Some(_) => PathBuf::from("/tmp"),
            None => std::env::temp_dir(),
        };
        let process = process::start_with_retries(async || {
            let dir = process::scratch_path(&base, "postgres");
            let started = start_cluster(&initdb, &server, run_as, &dir).await;
            if started.is_err() {
                // The guard deletes the directory once a server ran; before that it is ours.
                let _ = tokio::fs::remove_dir_all(&dir).await;
            }
            started
        })
        .await?;
        Ok(Self { process })
    }

    /// `postgres://postgres@127.0.0.1:<port>/test`.
    pub fn url(&self) -> &str {
        self.process.url()
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.process.port()
    }

    /// Stops the server (immediate shutdown) and waits until it is gone: afterwards its port
    /// refuses connections.
    ///
    /// # Errors
    /// When the server has not exited 15 seconds after being stopped.
    pub async fn kill(&mut self) -> Result<(), ServerError> {
        self.process.stop().await
    }

    pub(super) fn into_process(self) -> ServerProcess {
        self.process
    }
}

async fn start_cluster(
    initdb: &Path,
    server: &Path,
    run_as: Option<&'static str>,
    dir: &Path,
) -> Result<ServerProcess, ServerError> {
    let mut create_cluster = process::command_as(run_as, initdb)?;
    create_cluster.arg("-D").arg(dir).args([
        "-U",
        USER,
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
    ]);
    process::run_step("initdb", create_cluster, None).await?;

    // Single-user mode creates the database without needing a client program.
    let mut create_database = process::command_as(run_as, server)?;
    create_database.arg("--single").arg("-D").arg(dir).args([
        "-F",
        "-c",
        "listen_addresses=",
        "postgres",
    ]);
    let create = format!("CREATE DATABASE {DATABASE};\n");
    process::run_step(
        "postgres --single (CREATE DATABASE)",
        create_database,
        Some(create.as_bytes()),
    )
    .await?;

    let port = process::free_port()?;
    let port_arg = port.to_string();
    let mut args = process::os_args(&["-h", "127.0.0.1", "-p", &port_arg, "-F"]);
    args.extend(process::os_args(&[
        "-c",
        "max_connections=300",
        "-c",
        "shared_buffers=32MB",
    ]));
    args.extend(["-D".into(), dir.into(), "-k".into(), dir.into()]);
    let launch = Launch {
        program: server.to_path_buf(),
        args,
        dir: dir.to_path_buf(),
        stop_signal: "QUIT",
        run_as,
    };
    let url = format!("postgres://{USER}@127.0.0.1:{port}/{DATABASE}");
    ServerProcess::start(launch, port, url, probe).await
}

/// Where PostgreSQL installs its programs when they are not on `PATH`, newest version first.
fn install_dirs() -> Vec<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    let mut dirs = vec![PathBuf::from("/usr/local/bin")];
    dirs.extend(versions.into_iter().map(|(_, dir)| dir));
    dirs.push(PathBuf::from("/usr/local/pgsql/bin"));
    dirs
}

/// Checks that the server at `address` (`host:port`) lets `postgres` log into `test` without a
/// password, by sending a startup message and expecting `AuthenticationOk`.
pub(super) async fn probe(address: &str) -> Result<(), String> {
    let mut stream = connect(address).await?;
    let (tag, body) = within_deadline(startup(&mut stream)).await?;
    match tag {
        b'R' if body.get(..4) == Some(&[0, 0, 0, 0]) => {
            // Terminate, so the server does not log an unexpected disconnect.
            let _ = stream.write_all(&[b'X', 0, 0, 0, 4]).await;
            Ok(())
        }
        b'R' => Err(format!(
            "the server wants a password for {USER} (authentication request {:?}); \
             tests expect trust authentication",
            body.get(..4)
        )),
        b'E' => Err(format!(
            "login as {USER} to {DATABASE} refused: {}",
            error_message(&body)
        )),
        other => Err(format!(
            "unexpected first reply {:?}; is this PostgreSQL?",
            char::from(other)
        )),
    }
}

/// Sends the startup message and reads the first reply message.
async fn startup(stream: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut message = vec![0; 4];
    message.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    for part in ["user", USER, "database", DATABASE] {
        message.extend_from_slice(part.as_bytes());
        message.push(0);
    }
    message.push(0);
    let length = u32::try_from(message.len()).map_err(std::io::Error::other)?;
    message[..4].copy_from_slice(&length.to_be_bytes());
    stream.write_all(&message).await?;

    let tag = stream.read_u8().await?;
    let length = stream.read_u32().await?;
    if !(4..=65_536).contains(&length) {
        return Err(std::io::Error::other(format!(
            "implausible message length {length}"
        )));
    }
    let mut body = vec![0; usize::try_from(length - 4).map_err(std::io::Error::other)?];
    stream.read_exact(&mut body).await?;
    Ok((tag, body))
}

/// The human-readable message (field `M`) of an `ErrorResponse` body.
fn error_message(body: &[u8]) -> String {
    body.split(|&byte| byte == 0)
        .find_map(|field| field.strip_prefix(b"M"))
        .map_or_else(
            || String::from_utf8_lossy(body).into_owned(),
            |message| String::from_utf8_lossy(message).into_owned(),
        )
}
