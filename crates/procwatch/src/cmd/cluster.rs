//! `procwatch server --cluster-zookeeper HOST:PORT[,...]`: the ZooKeeper membership
//! (`procwatch-cluster`) behind the server's alarm ownership (`procwatch_server::ownership`),
//! so several servers on one ClickHouse cluster split the alarm evaluation (docs/scaling-out.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use procwatch_cluster::{Membership, MembershipConfig, View};
use procwatch_server::ownership::{Ownership, Share};

use super::server::{ServerArgs, StoreKind};

/// The shortest and longest ZooKeeper session timeout procwatch asks for.
const SESSION_TIMEOUT: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(30));

/// The ZooKeeper session timeout for a server `interval`: 2/5 of it, within 2-30 s, so a dead
/// server's znode is gone well within one interval and its hosts are taken over at the next
/// pass (within two intervals for intervals of 5 s and more; the 2 s floor keeps a busy
/// machine's heartbeats from expiring healthy sessions). ZooKeeper itself bounds it to
/// `[2, 20] × tickTime` (4-40 s with the default tickTime of 2 s).
pub fn session_timeout(interval: Duration) -> Duration {
    (interval * 2 / 5).clamp(SESSION_TIMEOUT.0, SESSION_TIMEOUT.1)
}

/// The membership as the server's [`Ownership`].
pub struct ZkOwnership(pub Membership);

impl Ownership for ZkOwnership {
    fn share(&self) -> Result<Share, String> {
        match self.0.view() {
            View::Live { term, me, members } => Ok(Share { term, me, members }),
            View::Down(why) => Err(why),
        }
    }
}

/// The `--cluster-zookeeper` address, if set.
fn zookeeper(args: &ServerArgs) -> Option<&str> {
    args.cluster_zookeeper.as_deref().map(str::trim).filter(|z| !z.is_empty())
}

/// Checks the cluster flags before anything starts.
pub fn check(args: &ServerArgs) -> Result<()> {
    if zookeeper(args).is_some() {
        if !matches!(args.store, StoreKind::Clickhouse) {
            bail!(
                "--cluster-zookeeper needs --store clickhouse: the servers of a cluster must \
                 share one store (docs/scaling-out.md)"
            );
        }
        procwatch_cluster::membership::check_root(&args.cluster_root)
            .map_err(|e| anyhow::anyhow!("--cluster-root: {e}"))?;
    }
    Ok(())
}

/// Joins the cluster when `--cluster-zookeeper` is set (on the running tokio runtime);
/// `addr` (the bound address) goes into this server's znode.
pub fn join(args: &ServerArgs, addr: SocketAddr) -> Result<Option<Arc<ZkOwnership>>> {
    let Some(zookeeper) = zookeeper(args) else {
        return Ok(None);
    };
    let cfg = MembershipConfig {
        zookeeper: zookeeper.to_owned(),
        root: args.cluster_root.clone(),
        session_timeout: session_timeout(args.interval),
        data: addr.to_string(),
    };
    tracing::info!(
        message = "Joining the cluster.",
        zookeeper = %cfg.zookeeper,
        root = %cfg.root,
        session_timeout = ?cfg.session_timeout
    );
    Ok(Some(Arc::new(ZkOwnership(Membership::start(cfg)?))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_timeout_is_well_within_an_interval() {
        assert_eq!(session_timeout(Duration::from_secs(10)), Duration::from_secs(4));
        assert_eq!(session_timeout(Duration::from_millis(500)), Duration::from_secs(2));
        assert_eq!(session_timeout(Duration::from_secs(600)), Duration::from_secs(30));
    }
}
