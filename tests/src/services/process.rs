//! Server processes that stop when their owner goes away, even when the owner is killed.
//!
//! A test binary never runs destructors of statics and the workspace forbids the `unsafe` that
//! `prctl(PR_SET_PDEATHSIG)` would need. So every server runs under a small `sh` guard
//! ([`GUARD_SCRIPT`]) whose stdin is a pipe whose only writer is this process. The guard waits for
//! end-of-file on that pipe, which happens when [`ServerProcess`] is dropped or stopped, or when
//! the test process exits or is killed (the kernel closes the pipe), then signals the server,
//! waits for it and deletes the server's scratch directory. The guard runs in its own process
//! group so a Ctrl-C aimed at `cargo test` reaches it only through the pipe.

use std::ffi::OsString;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt as _;
use tokio::time::{Instant, sleep, timeout};

/// How long a server may take to answer its protocol after being spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one setup step (`initdb`, `mariadb-install-db`, ...) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a stopped server may take to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Attempts to start a server; a retry takes a new port in case another process took ours.
const START_ATTEMPTS: u32 = 3;

/// Runs `"$@"` (the server) in the background and stops it with signal `$2` once stdin reaches
/// end-of-file; removes the scratch directory `$1` when the server has exited, whatever the
/// reason. The server's output goes to `$1/server.log`, whose tail the guard prints on its own
/// stderr so a failed start can be explained.
///
/// Background jobs of a non-interactive shell get `/dev/null` as stdin, so the pipe is passed to
/// the watcher as fd 3. `SIGPIPE` is ignored so that printing the log to a closed stderr (the
/// test process is gone) cannot stop the guard before it cleans up.
const GUARD_SCRIPT: &str = r#"
trap '' PIPE
dir=$1; stop_signal=$2; shift 2
exec 3<&0
"$@" </dev/null >>"$dir/server.log" 2>&1 3<&- &
server=$!
( while read -r _; do :; done; kill -s "$stop_signal" "$server" 2>/dev/null ) <&3 >/dev/null 2>&1 &
watcher=$!
exec 3<&-
wait "$server"
status=$?
kill "$watcher" 2>/dev/null
tail -n 40 "$dir/server.log" >&2
rm -rf "$dir"
exit "$status"
"#;

/// Why a private server could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// None of the program's names was found.
    #[error("{program} is not installed: looked for {names} in PATH and {dirs}")]
    NotInstalled {
        /// What was looked for, e.g. `redis-server`.
        program: &'static str,
        /// Every name tried.
        names: String,
        /// The directories searched besides `PATH`.
        dirs: String,
    },
    /// No free loopback port could be reserved.
    #[error("could not find a free port on 127.0.0.1: {0}")]
    FreePort(#[source] std::io::Error),
    /// The scratch directory could not be created.
    #[error("could not create the scratch directory {}: {source}", path.display())]
    ScratchDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A program could not be started at all.
    #[error("could not run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A setup step ran but failed.
    #[error("{step} failed ({status}):\n{output}")]
    SetupFailed {
        /// The step, e.g. `initdb`.
        step: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// The end of its output.
        output: String,
    },
    /// A setup step did not finish in time and was killed.
    #[error("{step} did not finish within {after:?}")]
    SetupTimedOut {
        /// The step.
        step: &'static str,
        /// The time limit.
        after: Duration,
    },
    /// The server exited while starting.
    #[error("{program} on port {port} exited during startup ({status}); its log ends with:\n{log}")]
    ExitedEarly {
        /// The server program.
        program: String,
        /// The port it was given.
        port: u16,
        /// The guard's exit status (the server's own status when it exited by itself).
        status: ExitStatus,
        /// The end of the server log.
        log: String,
    },
    /// The server kept running but never answered its protocol.
    #[error(
        "{program} on port {port} was not ready after {after:?} (last probe: {last_error}); \
         its log ends with:\n{log}"
    )]
    NotReady {
        /// The server program.
        program: String,
        /// The port it was given.
        port: u16,
        /// The time limit.
        after: Duration,
        /// Why the last protocol probe failed.
        last_error: String,
        /// The end of the server log.
        log: String,
    },
    /// Checking on the guard process failed.
    #[error("could not wait for {program}: {source}")]
    Wait {
        /// The server program.
        program: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The server did not exit after being told to stop.
    #[error("{program} on port {port} did not exit within {after:?} of being stopped")]
    StopTimedOut {
        /// The server program.
        program: String,
        /// Its port.
        port: u16,
        /// The time limit.
        after: Duration,
    },
}

/// What to run: a server program, its arguments and the directory the guard deletes afterwards.
#[derive(Debug)]
pub(super) struct Launch {
    pub(super) program: PathBuf,
    pub(super) args: Vec<OsString>,
    /// Scratch directory; must exist, receives `server.log`, and is deleted when the server exits.
    pub(super) dir: PathBuf,
    /// Signal name given to `kill -s` to stop the server.
    pub(super) stop_signal: &'static str,
    /// OS user to run as (servers that refuse to run as root).
    pub(super) run_as: Option<&'static str>,
}

/// A running server under its guard. Dropping it stops the server without waiting.
#[derive(Debug)]
pub(super) struct ServerProcess {
    program: String,
    port: u16,
    url: String,
    /// The guard process; `Some` until dropped.
    guard: Option<Child>,
    /// Closing this pipe (by dropping it) tells the guard to stop the server.
    stop_pipe: Option<ChildStdin>,
    guard_stderr: Option<ChildStderr>,
}

impl ServerProcess {
    /// Spawns `launch` under the guard, then polls `probe` with the server's `host:port` until it
    /// succeeds, the server exits, or [`READY_TIMEOUT`] passes.
    pub(super) async fn start(
        launch: Launch,
        port: u16,
        url: String,
        probe: impl AsyncFn(&str) -> Result<(), String>,
    ) -> Result<Self, ServerError> {
        let mut server = Self::spawn(launch, port, url)?;
        server.wait_until_ready(probe).await?;
        Ok(server)
    }

    fn spawn(launch: Launch, port: u16, url: String) -> Result<Self, ServerError> {
        let program = launch.program.display().to_string();
        let mut command = command_as(launch.run_as, Path::new("/bin/sh"))?;
        command
            .arg("-c")
            .arg(GUARD_SCRIPT)
            .arg("ratelimit-server-guard")
            .arg(&launch.dir)
            .arg(launch.stop_signal)
            .arg(&launch.program)
            .args(&launch.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut guard = command.spawn().map_err(|source| ServerError::Spawn {
            program: program.clone(),
            source,
        })?;
        tracing::debug!(%program, port, dir = %launch.dir.display(), "spawned private server");
        Ok(Self {
            program,
            port,
            url,
            stop_pipe: guard.stdin.take(),
            guard_stderr: guard.stderr.take(),
            guard: Some(guard),
        })
    }

    async fn wait_until_ready(
        &mut self,
        probe: impl AsyncFn(&str) -> Result<(), String>,
    ) -> Result<(), ServerError> {
        let address = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait()? {
                return Err(ServerError::ExitedEarly {
                    program: self.program.clone(),
                    port: self.port,
                    status,
                    log: self.take_log().await,
                });
            }
            let last_error = match probe(&address).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                // Once stopped, the guard has printed the log and exited, so reading it ends.
                let log = match self.stop().await {
                    Ok(()) => self.take_log().await,
                    Err(error) => format!("(no log: {error})"),
                };
                return Err(ServerError::NotReady {
                    program: self.program.clone(),
                    port: self.port,
                    after: READY_TIMEOUT,
                    last_error,
                    log,
                });
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    pub(super) fn port(&self) -> u16 {
        self.port
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server and waits until it has exited (its port then refuses connections).
    /// Stopping an already stopped server does nothing.
    pub(super) async fn stop(&mut self) -> Result<(), ServerError> {
        drop(self.stop_pipe.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                return Err(ServerError::StopTimedOut {
                    program: self.program.clone(),
                    port: self.port,
                    after: STOP_TIMEOUT,
                });
            }
            sleep(POLL_INTERVAL).await;
        }
        Ok(())
    }

    /// The guard's exit status if it has exited; never blocks.
    fn try_wait(&mut self) -> Result<Option<ExitStatus>, ServerError> {
        // Only `drop` takes the guard away, and then there is nothing left to wait for.
        let Some(guard) = self.guard.as_mut() else {
            return Ok(Some(ExitStatus::default()));
        };
        guard.try_wait().map_err(|source| ServerError::Wait {
            program: self.program.clone(),
            source,
        })
    }

    /// The log tail the guard printed on exit. Only call once the guard has exited, so the read
    /// ends at end-of-file instead of waiting for more.
    async fn take_log(&mut self) -> String {
        let Some(mut stderr) = self.guard_stderr.take() else {
            return String::new();
        };
        let read = tokio::task::spawn_blocking(move || {
            let mut bytes = Vec::new();
            stderr.read_to_end(&mut bytes).map(|_| bytes)
        })
        .await;
        match read {
            Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            Ok(Err(error)) => format!("(could not read the log: {error})"),
            Err(error) => format!("(could not read the log: {error})"),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.stop_pipe.take());
        if let Some(mut guard) = self.guard.take() {
            // Reap the guard off the caller's thread; it exits as soon as the server has.
            std::thread::spawn(move || guard.wait());
        }
    }
}

/// Starts a server with up to [`START_ATTEMPTS`] attempts. `attempt` must pick a new port each
/// time: a server that exits during startup most likely lost its port to another process.
pub(super) async fn start_with_retries(
    attempt: impl AsyncFn() -> Result<ServerProcess, ServerError>,
) -> Result<ServerProcess, ServerError> {
    let mut attempt_number = 1;
    loop {
        match attempt().await {
            Err(error @ ServerError::ExitedEarly { .. }) if attempt_number < START_ATTEMPTS => {
                tracing::warn!(%error, attempt_number, "private server failed to start; retrying");
                attempt_number += 1;
            }
            result => return result,
        }
    }
}

/// A loopback port nobody listens on right now.
pub(super) fn free_port() -> Result<u16, ServerError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(ServerError::FreePort)
}

/// A new, not yet existing path under `base` for a server of `kind` (e.g. `redis`), named
/// `ratelimit-<kind>-<pid>-<sequence>-<nanos>`.
pub(super) fn scratch_path(base: &Path, kind: &str) -> PathBuf {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        let bases = [std::env::temp_dir(), PathBuf::from("/tmp")];
        std::thread::spawn(move || bases.iter().for_each(|base| sweep_abandoned(base)));
    });
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let sequence = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    base.join(format!(
        "ratelimit-{kind}-{}-{sequence}-{nanos:x}",
        std::process::id()
    ))
}

/// Removes the scratch directories under `base` of test processes that no longer exist. The
/// guard deletes a directory once it owns it, but a test process killed while a setup step
/// (`initdb`, `mariadb-install-db`) ran leaves one behind. Needs `/proc` to tell live processes.
fn sweep_abandoned(base: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(scratch_owner) else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            tracing::debug!(path = %entry.path().display(), "removing abandoned scratch directory");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The process id in a name made by [`scratch_path`], or `None` for any other name.
fn scratch_owner(name: &str) -> Option<u32> {
    let mut fields = name.strip_prefix("ratelimit-")?.rsplitn(4, '-');
    let nanos = fields.next()?;
    let sequence = fields.next()?;
    let pid = fields.next()?.parse().ok()?;
    let kind = fields.next()?;
    let is_ours = u32::from_str_radix(nanos, 16).is_ok()
        && sequence.parse::<u64>().is_ok()
        && !kind.is_empty();
    is_ours.then_some(pid)
}

/// Creates a new scratch directory under `base`.
pub(super) async fn scratch_dir(base: &Path, kind: &str) -> Result<PathBuf, ServerError> {
    let path = scratch_path(base, kind);
    match tokio::fs::create_dir(&path).await {
        Ok(()) => Ok(path),
        Err(source) => Err(ServerError::ScratchDir { path, source }),
    }
}

/// The first executable called one of `names` in `PATH` or, failing that, in `extra_dirs`.
pub(super) fn find_program(
    program: &'static str,
    names: &[&str],
    extra_dirs: &[PathBuf],
) -> Result<PathBuf, ServerError> {
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .iter()
        .chain(extra_dirs)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| ServerError::NotInstalled {
            program,
            names: names.join(", "),
            dirs: extra_dirs
                .iter()
                .map(|dir| dir.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// Whether this process runs as root (PostgreSQL refuses to, MariaDB needs to be told).
pub(super) fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0)
}

/// A command running `program`, as `user` through `runuser` when given.
pub(super) fn command_as(user: Option<&str>, program: &Path) -> Result<Command, ServerError> {
    let Some(user) = user else {
        return Ok(Command::new(program));
    };
    let runuser = find_program(
        "runuser",
        &["runuser"],
        &[PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")],
    )?;
    let mut command = Command::new(runuser);
    command.args(["-u", user, "--"]).arg(program);
    Ok(command)
}

/// Runs a setup step to completion, feeding it `input` on stdin, with [`SETUP_TIMEOUT`].
pub(super) async fn run_step(
    step: &'static str,
    command: Command,
    input: Option<&[u8]>,
) -> Result<String, ServerError> {
    let mut command = tokio::process::Command::from(command);
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let spawn_error = |source| ServerError::Spawn {
        program: step.to_owned(),
        source,
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input).await.map_err(spawn_error)?;
    }
    let output = timeout(SETUP_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| ServerError::SetupTimedOut {
            step,
            after: SETUP_TIMEOUT,
        })?
        .map_err(spawn_error)?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    if output.status.success() {
        Ok(text)
    } else {
        Err(ServerError::SetupFailed {
            step,
            status: output.status,
            output: summary(&text),
        })
    }
}

/// Command-line arguments from string literals.
pub(super) fn os_args(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// The lines of a setup step's output that explain a failure: those mentioning an error, then
/// the last few lines.
fn summary(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let tail_start = lines.len().saturating_sub(15);
    let errors = lines[..tail_start]
        .iter()
        .filter(|line| line.to_ascii_lowercase().contains("error"))
        .take(20);
    errors
        .chain(&lines[tail_start..])
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell_server(dir: PathBuf, script: &str) -> Launch {
        Launch {
            program: PathBuf::from("/bin/sh"),
            args: os_args(&["-c", script]),
            dir,
            stop_signal: "KILL",
            run_as: None,
        }
    }

    async fn never_ready(_: &str) -> Result<(), String> {
        Err("not a real server".to_owned())
    }

    #[test]
    fn scratch_names_carry_their_owner() {
        let path = scratch_path(Path::new("/tmp"), "guard-test");
        let name = path.file_name().and_then(|name| name.to_str());
        assert_eq!(name.and_then(scratch_owner), Some(std::process::id()));
        assert_eq!(scratch_owner("ratelimit-notes"), None);
        assert_eq!(scratch_owner("ratelimit-redis-12-x-1f"), None);
        assert_eq!(scratch_owner("other-redis-12-3-1f"), None);
    }

    #[tokio::test]
    async fn a_server_that_exits_during_startup_is_reported_with_its_log() -> Result<(), ServerError>
    {
        let dir = scratch_dir(&std::env::temp_dir(), "guard-test").await?;
        let launch = shell_server(dir.clone(), "echo 'address already in use'; exit 3");
        match ServerProcess::start(launch, 1, String::new(), never_ready).await {
            Err(ServerError::ExitedEarly { status, log, .. }) => {
                assert_eq!(status.code(), Some(3));
                assert!(log.contains("address already in use"), "{log}");
            }
            other => panic!("expected ExitedEarly, got {other:?}"),
        }
        assert!(!dir.exists(), "the guard leaves {} behind", dir.display());
        Ok(())
    }

    #[tokio::test]
    async fn stopping_kills_the_server_and_removes_its_directory() -> Result<(), ServerError> {
        let dir = scratch_dir(&std::env::temp_dir(), "guard-test").await?;
        let pid_file = dir.join("pid");
        let script = format!("echo $$ > '{}'; exec sleep 600", pid_file.display());
        let mut server =
            ServerProcess::spawn(shell_server(dir.clone(), &script), 1, String::new())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            match tokio::fs::read_to_string(&pid_file).await {
                Ok(pid) if pid.ends_with('\n') => break pid.trim().to_owned(),
                _ if Instant::now() >= deadline => panic!("the server never wrote its pid"),
                _ => sleep(POLL_INTERVAL).await,
            }
        };

        server.stop().await?;
        assert!(
            !Path::new("/proc").join(&pid).exists(),
            "server {pid} survived"
        );
        assert!(!dir.exists(), "the guard leaves {} behind", dir.display());
        server.stop().await
    }
}
