//! A fault-injecting TCP proxy on loopback, to put between a client and a server it must
//! survive losing.
//!
//! ```no_run
//! use ratelimit_tests::fault_proxy::{Fault, FaultProxy};
//!
//! # async fn a_test() -> std::io::Result<()> {
//! let proxy = FaultProxy::start("127.0.0.1:6379").await?;
//! let url = format!("redis://{}", proxy.address());
//! // ... connect a client to `url`, then:
//! proxy.set(Fault::Stall);
//! // ... calls through the proxy now get no answer; later:
//! proxy.set(Fault::Pass);
//! # let _ = url;
//! # Ok(())
//! # }
//! ```
//!
//! The proxy runs on the caller's Tokio runtime and stops (closing every connection) when it is
//! dropped.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// What the proxy does to traffic, switchable at any time with [`FaultProxy::set`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards bytes both ways.
    Pass,
    /// Resets every new connection as soon as it is accepted; open connections keep passing.
    Refuse,
    /// Accepts connections and keeps them open, but forwards nothing: bytes already read are
    /// held (and forwarded once the stall ends), the rest waits in the sockets.
    Stall,
    /// Resets every connection, open and new. A reply chunk read (or held by a stall) when the
    /// cut comes is forwarded only half, so a client may see a reply end mid-way.
    Cut,
}

/// A proxy from a free loopback port to a target address.
#[derive(Debug)]
pub struct FaultProxy {
    address: SocketAddr,
    fault: watch::Sender<Fault>,
    /// Armed by [`FaultProxy::lose_next_reply`]; the relay that loses a reply disarms it.
    lose_next_reply: Arc<AtomicBool>,
    accept_loop: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `target`
    /// (`host:port`), starting in [`Fault::Pass`].
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(target: &str) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let (fault, watcher) = watch::channel(Fault::Pass);
        let lose_next_reply = Arc::new(AtomicBool::new(false));
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            target.to_owned(),
            watcher,
            Arc::clone(&lose_next_reply),
        ));
        Ok(Self {
            address,
            fault,
            lose_next_reply,
            accept_loop,
        })
    }

    /// Where clients connect: `127.0.0.1:<port>`.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Switches the proxy to `fault`; open connections follow at once.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
        tracing::debug!(?fault, proxy = %self.address, "fault proxy switched");
    }

    /// The current fault.
    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Drops the next chunk of reply the server sends, on any connection, and cuts that
    /// connection (both sides reset): the server acted on a request whose client never hears
    /// back. Later replies and connections pass as the current [`Fault`] says.
    pub fn lose_next_reply(&self) {
        self.lose_next_reply.store(true, Ordering::SeqCst);
    }

    /// Whether a reply armed to be lost by [`FaultProxy::lose_next_reply`] is still to come.
    pub fn is_losing_next_reply(&self) -> bool {
        self.lose_next_reply.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    /// Stops accepting; the relays, owned by the accept loop, end with it and close their
    /// connections.
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: String,
    fault: watch::Receiver<Fault>,
    lose_next_reply: Arc<AtomicBool>,
) {
    let mut relays = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = relays.join_next(), if !relays.is_empty() => continue,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(error) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, "fault proxy could not accept");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let current = *fault.borrow();
        if matches!(current, Fault::Refuse | Fault::Cut) {
            reset(&client);
            continue;
        }
        relays.spawn(relay(
            client,
            target.clone(),
            fault.clone(),
            Arc::clone(&lose_next_reply),
        ));
    }
}

/// Makes closing `stream` send a reset instead of a graceful end, like a crashed peer.
fn reset(stream: &TcpStream) {
    // Zero linger never blocks on close, unlike a positive linger.
    let _ = stream.set_zero_linger();
}

/// Which way a pump forwards; a reply pump may have to lose its next chunk.
enum Direction {
    Request,
    Reply { lose_next: Arc<AtomicBool> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// One side closed (or failed); close the other gracefully.
    Closed,
    /// The proxy cut the connection; reset both sides.
    Cut,
}

async fn relay(
    client: TcpStream,
    target: String,
    fault: watch::Receiver<Fault>,
    lose_next_reply: Arc<AtomicBool>,
) {
    let Ok(server) = TcpStream::connect(&target).await else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let end = tokio::select! {
        end = pump(&mut client_read, &mut server_write, fault.clone(), Direction::Request) => end,
        end = pump(
            &mut server_read,
            &mut client_write,
            fault,
            Direction::Reply { lose_next: lose_next_reply },
        ) => end,
    };
    if end == End::Cut {
        reset(client_write.as_ref());
        reset(server_write.as_ref());
    }
}

async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
    direction: Direction,
) -> End {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = fault.wait_for(|fault| *fault == Fault::Cut) => return End::Cut,
        };
        let read = match read {
            Ok(0) | Err(_) => return End::Closed,
            Ok(read) => read,
        };
        if let Direction::Reply { lose_next } = &direction
            && lose_next.swap(false, Ordering::SeqCst)
        {
            return End::Cut;
        }
        // Hold the chunk while stalled, then forward it, or half of it if the stall ends in a cut.
        let now = match fault.wait_for(|fault| *fault != Fault::Stall).await {
            Ok(now) => *now,
            Err(_) => return End::Cut,
        };
        if now == Fault::Cut {
            if let Direction::Reply { .. } = direction {
                let _ = to.write_all(&buffer[..read / 2]).await;
            }
            return End::Cut;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return End::Closed;
        }
    }
}
