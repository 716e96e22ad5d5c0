//! A throwaway three-master Redis Cluster on loopback, owned by one test.
//!
//! ```no_run
//! use ratelimit_tests::redis_cluster::LocalCluster;
//! use ratelimit_tests::services;
//!
//! # async fn a_test() {
//! let cluster = match LocalCluster::start().await {
//!     Ok(cluster) => cluster,
//!     // No redis-server: skip, or fail under RATELIMIT_REQUIRE_SERVICES=1.
//!     Err(error) if error.is_not_installed() => {
//!         let _: Option<()> = services::skip_or_fail(error);
//!         return;
//!     }
//!     Err(error) => panic!("{error}"),
//! };
//! let urls = cluster.urls();
//! # let _ = urls;
//! # }
//! ```
//!
//! Each node is a [`PrivateRedis`] cluster node, so the nodes die with the cluster value, and
//! with the test process even when it is killed.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::{Instant, sleep};

use crate::services::{PrivateRedis, ServerError};

/// Masters in the cluster; each owns an equal share of the 16384 slots.
const MASTERS: u16 = 3;
/// Slots of a Redis Cluster.
const SLOTS: u16 = 16_384;
/// How long the nodes may take to agree that every slot is served.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one setup command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Why a local cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A node could not be started (e.g. `redis-server` is not installed).
    #[error("starting a cluster node: {0}")]
    Node(#[from] ServerError),
    /// A setup command failed.
    #[error("{command} on {url}: {source}")]
    Command {
        /// The command, e.g. `CLUSTER MEET`.
        command: &'static str,
        /// The node it was sent to.
        url: String,
        /// What went wrong.
        source: redis::RedisError,
    },
    /// A setup command got no answer in time.
    #[error("{command} on {url}: no answer within {after:?}")]
    CommandTimedOut {
        /// The command.
        command: &'static str,
        /// The node it was sent to.
        url: String,
        /// The time limit.
        after: Duration,
    },
    /// The nodes did not agree on a complete slot map in time.
    #[error("the cluster was not ready after {after:?}: {url} still reports\n{cluster_info}")]
    NotReady {
        /// The time limit.
        after: Duration,
        /// A node that was not ready.
        url: String,
        /// Its last `CLUSTER INFO`.
        cluster_info: String,
    },
}

impl ClusterError {
    /// Whether `redis-server` is missing, the one failure a test may skip on.
    pub fn is_not_installed(&self) -> bool {
        matches!(self, Self::Node(ServerError::NotInstalled { .. }))
    }
}

/// Three `redis-server --cluster-enabled yes` masters on free loopback ports, with the slots
/// split evenly and no replicas. Every node is killed when the value is dropped.
#[derive(Debug)]
pub struct LocalCluster {
    nodes: Vec<PrivateRedis>,
}

impl LocalCluster {
    /// Starts the nodes, assigns the slots (`CLUSTER ADDSLOTS`), introduces the nodes to each
    /// other (`CLUSTER MEET`) and waits until every node reports `cluster_state:ok`.
    ///
    /// # Errors
    /// When a node cannot be started, a setup command fails, or the cluster is not ready within
    /// 30 seconds.
    pub async fn start() -> Result<Self, ClusterError> {
        let (first, second, third) = tokio::try_join!(
            PrivateRedis::start_cluster_node(),
            PrivateRedis::start_cluster_node(),
            PrivateRedis::start_cluster_node(),
        )?;
        let cluster = Self {
            nodes: vec![first, second, third],
        };
        let mut connections = Vec::with_capacity(cluster.nodes.len());
        for node in &cluster.nodes {
            connections.push(connect(node.url()).await?);
        }
        let share = SLOTS.div_ceil(MASTERS);
        let numbered = cluster.nodes.iter().zip(&mut connections).zip(0_u16..);
        for ((node, connection), index) in numbered {
            let first_slot = share * index;
            let slots: Vec<u16> = (first_slot..(first_slot + share).min(SLOTS)).collect();
            let mut add_slots = redis::cmd("CLUSTER");
            add_slots.arg("ADDSLOTS").arg(slots);
            run::<()>(connection, node.url(), "CLUSTER ADDSLOTS", &add_slots).await?;
        }
        // Gossip spreads each introduction to the rest of the cluster.
        for node in &cluster.nodes[1..] {
            let mut meet = redis::cmd("CLUSTER");
            meet.arg("MEET").arg("127.0.0.1").arg(node.port());
            run::<()>(
                &mut connections[0],
                cluster.nodes[0].url(),
                "CLUSTER MEET",
                &meet,
            )
            .await?;
        }
        cluster.wait_until_ready(&mut connections).await?;
        tracing::debug!(urls = ?cluster.urls(), "local Redis Cluster ready");
        Ok(cluster)
    }

    async fn wait_until_ready(
        &self,
        connections: &mut [MultiplexedConnection],
    ) -> Result<(), ClusterError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut info = redis::cmd("CLUSTER");
        info.arg("INFO");
        // Nodes before `waiting` have reported ok; a node never leaves that state by itself.
        let mut waiting = 0;
        while waiting < self.nodes.len() {
            let url = self.nodes[waiting].url();
            let cluster_info: String =
                run(&mut connections[waiting], url, "CLUSTER INFO", &info).await?;
            if cluster_info
                .lines()
                .any(|line| line.trim() == "cluster_state:ok")
            {
                waiting += 1;
                continue;
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::NotReady {
                    after: READY_TIMEOUT,
                    url: url.to_owned(),
                    cluster_info,
                });
            }
            sleep(POLL_INTERVAL).await;
        }
        Ok(())
    }

    /// Every node's URL, `redis://127.0.0.1:<port>`; any one of them reaches the whole cluster.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| node.url().to_owned())
            .collect()
    }
}

async fn connect(url: &str) -> Result<MultiplexedConnection, ClusterError> {
    let command = "connect";
    let error = |source| ClusterError::Command {
        command,
        url: url.to_owned(),
        source,
    };
    let client = redis::Client::open(url).map_err(error)?;
    tokio::time::timeout(COMMAND_TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .map_err(|_| ClusterError::CommandTimedOut {
            command,
            url: url.to_owned(),
            after: COMMAND_TIMEOUT,
        })?
        .map_err(error)
}

async fn run<T: redis::FromRedisValue>(
    connection: &mut MultiplexedConnection,
    url: &str,
    name: &'static str,
    command: &redis::Cmd,
) -> Result<T, ClusterError> {
    tokio::time::timeout(COMMAND_TIMEOUT, command.query_async(connection))
        .await
        .map_err(|_| ClusterError::CommandTimedOut {
            command: name,
            url: url.to_owned(),
            after: COMMAND_TIMEOUT,
        })?
        .map_err(|source| ClusterError::Command {
            command: name,
            url: url.to_owned(),
            source,
        })
}
