//! The membership task: one ZooKeeper session at a time, this server's ephemeral znode under
//! the root, a watch on the root's children, and the resulting [`View`] on a watch channel.

use std::time::Duration;

use procwatch_model::retry::Backoff;
use tokio::sync::watch;
use zookeeper_client as zk;

/// The prefix of every member's znode name (the rest is ZooKeeper's sequence number).
pub const MEMBER_PREFIX: &str = "member-";

/// The longest root path accepted.
const MAX_ROOT_LEN: usize = 200;

/// How this server joins.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// ZooKeeper connect string: `host:port[,host:port...]`.
    pub zookeeper: String,
    /// The znode the members register under (created, persistent, when missing): `/procwatch`.
    pub root: String,
    /// The session timeout asked of ZooKeeper (which bounds it to `[2, 20] × tickTime`).
    pub session_timeout: Duration,
    /// What this member's znode holds: the server's address, for a person reading ZooKeeper.
    pub data: String,
}

/// What this server knows of the membership now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// No usable session (not joined yet, connection lost, session expired): why, for a person.
    Down(String),
    /// Joined and connected.
    Live {
        /// Counts this server's registrations: a new term is a new session and a new znode,
        /// so whatever this server owned before may have been taken over meanwhile.
        term: u64,
        /// This server's member id (its znode's name).
        me: String,
        /// Every live member's id, sorted, this one's included.
        members: Vec<String>,
    },
}

/// Why the membership cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The configuration is unusable.
    #[error("cluster membership: {0}")]
    Config(String),
}

/// A running membership: the task keeping the session, and the view it publishes.
pub struct Membership {
    view: watch::Receiver<View>,
    stop: watch::Sender<bool>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership").field("view", &*self.view.borrow()).finish_non_exhaustive()
    }
}

/// Checks a root znode path: absolute, no empty, `.` or `..` segment, no trailing `/`, printable
/// ASCII, at most 200 bytes.
pub fn check_root(root: &str) -> Result<(), MembershipError> {
    let bad = |why: &str| Err(MembershipError::Config(format!("root {root:?}: {why}")));
    if !root.starts_with('/') || root.len() < 2 {
        return bad("must be an absolute znode path such as /procwatch");
    }
    if root.len() > MAX_ROOT_LEN {
        return bad("longer than 200 bytes");
    }
    if root[1..].split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return bad("has an empty, '.' or '..' segment (or a trailing '/')");
    }
    if !root.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("only printable ASCII without spaces");
    }
    Ok(())
}

impl Membership {
    /// Starts the membership task (on the current tokio runtime). The view is `Down` until
    /// the first registration succeeds; the task retries for ever, with backoff.
    pub fn start(cfg: MembershipConfig) -> Result<Self, MembershipError> {
        check_root(&cfg.root)?;
        if cfg.zookeeper.trim().is_empty() {
            return Err(MembershipError::Config("no ZooKeeper address".into()));
        }
        let (tx, view) = watch::channel(View::Down("joining the cluster".into()));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(cfg, tx, stop_rx));
        Ok(Membership { view, stop, task: tokio::sync::Mutex::new(Some(task)) })
    }

    /// The view now.
    pub fn view(&self) -> View {
        self.view.borrow().clone()
    }

    /// A receiver that sees every change of the view.
    pub fn subscribe(&self) -> watch::Receiver<View> {
        self.view.clone()
    }

    /// Leaves the cluster: deletes this server's znode and closes the session, so the others
    /// take its hosts over at once, without waiting for the session timeout. Idempotent.
    pub async fn leave(&self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

/// Registrations so far, and the view's sender.
struct Joiner {
    cfg: MembershipConfig,
    tx: watch::Sender<View>,
    term: u64,
}

/// Why a session ended when [`Membership::leave`] ended it.
const LEFT: &str = "left the cluster";

async fn run(cfg: MembershipConfig, tx: watch::Sender<View>, mut stop: watch::Receiver<bool>) {
    let backoff =
        Backoff { base: Duration::from_millis(200), factor: 2.0, max: Duration::from_secs(5) };
    let mut j = Joiner { cfg, tx, term: 0 };
    let mut failures = 0u32;
    loop {
        let why = j.session(&mut failures, &mut stop).await;
        if *stop.borrow() {
            j.tx.send_replace(View::Down(LEFT.into()));
            return;
        }
        tracing::warn!(
            message = "Cluster membership lost; alarm evaluation paused until it is back.",
            reason = %why,
            zookeeper = %j.cfg.zookeeper
        );
        j.tx.send_replace(View::Down(why));
        let wait = backoff.ceiling(failures);
        failures = failures.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

fn anyone() -> zk::Acls<'static> {
    zk::Acls::anyone_all()
}

impl Joiner {
    /// One session: connect, register, follow the children until the session ends. Returns
    /// why it ended. Dropping the future drops the client, which closes the session.
    async fn session(&mut self, failures: &mut u32, stop: &mut watch::Receiver<bool>) -> String {
        let cfg = &self.cfg;
        let limit = cfg.session_timeout.max(Duration::from_secs(1)) * 2;
        let connect = zk::Client::connector()
            .with_session_timeout(cfg.session_timeout)
            .with_connection_timeout(cfg.session_timeout)
            .connect(&cfg.zookeeper);
        let client = match tokio::time::timeout(limit, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return format!("cannot connect to ZooKeeper {}: {e}", cfg.zookeeper),
            Err(_) => {
                return format!("ZooKeeper {} did not answer within {limit:?}", cfg.zookeeper)
            }
        };
        let persistent = zk::CreateMode::Persistent.with_acls(anyone());
        match tokio::time::timeout(limit, client.mkdir(&cfg.root, &persistent)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return format!("cannot create {} in ZooKeeper: {e}", cfg.root),
            Err(_) => return format!("ZooKeeper did not create {} within {limit:?}", cfg.root),
        }
        let ephemeral = zk::CreateMode::EphemeralSequential.with_acls(anyone());
        let prefix = format!("{}/{MEMBER_PREFIX}", cfg.root);
        let created = client.create(&prefix, cfg.data.as_bytes(), &ephemeral);
        let me = match tokio::time::timeout(limit, created).await {
            Ok(Ok((_, seq))) => format!("{MEMBER_PREFIX}{seq}"),
            Ok(Err(e)) => return format!("cannot register under {} in ZooKeeper: {e}", cfg.root),
            Err(_) => return format!("ZooKeeper did not register this server within {limit:?}"),
        };
        let path = format!("{}/{me}", cfg.root);
        let leave = |client: zk::Client| async move {
            // Deleted now rather than at the session's close, which the process's exit could
            // cut short.
            let _ = tokio::time::timeout(Duration::from_secs(2), client.delete(&path, None)).await;
            LEFT.to_owned()
        };
        self.term += 1;
        *failures = 0;
        tracing::info!(
            message = "Joined the cluster.",
            member = %me,
            root = %cfg.root,
            session_timeout = ?client.session_timeout()
        );
        let mut states = client.state_watcher();
        loop {
            if *stop.borrow() {
                return leave(client).await;
            }
            // Connected first: a lost connection says Down at once (see the crate docs).
            loop {
                match states.state() {
                    zk::SessionState::SyncConnected => break,
                    zk::SessionState::Disconnected | zk::SessionState::ConnectedReadOnly => {
                        self.tx.send_replace(View::Down(format!(
                            "lost the connection to ZooKeeper {} (reconnecting)",
                            cfg.zookeeper
                        )));
                        tracing::warn!(
                            message = "Lost the ZooKeeper connection; alarm evaluation paused.",
                            member = %me
                        );
                        tokio::select! {
                            _ = states.changed() => {}
                            _ = stop.changed() => return leave(client).await,
                        }
                    }
                    other => return format!("ZooKeeper session ended ({other:?})"),
                }
            }
            let (children, watcher) = match tokio::time::timeout(
                limit,
                client.list_and_watch_children(&cfg.root),
            )
            .await
            {
                Ok(Ok(r)) => r,
                // Connection loss, or no answer: the state loop above decides, shortly.
                Ok(Err(zk::Error::ConnectionLoss)) | Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Ok(Err(e)) => return format!("cannot list {}: {e}", cfg.root),
            };
            let mut members: Vec<String> =
                children.into_iter().filter(|c| c.starts_with(MEMBER_PREFIX)).collect();
            members.sort();
            if !members.contains(&me) {
                return format!("this server's znode {me} is gone (session expired)");
            }
            let view = View::Live { term: self.term, me: me.clone(), members };
            if *self.tx.borrow() != view {
                tracing::info!(message = "Cluster members.", view = ?view);
                self.tx.send_replace(view);
            }
            tokio::select! {
                _ = watcher.changed() => {}
                _ = states.changed() => {}
                _ = stop.changed() => return leave(client).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots() {
        for ok in ["/procwatch", "/a/b_c-1", "/p.w"] {
            assert!(check_root(ok).is_ok(), "{ok}");
        }
        let long = format!("/{}", "a".repeat(MAX_ROOT_LEN));
        for bad in ["", "/", "procwatch", "/a/", "//a", "/a/../b", "/a b", "/é", long.as_str()] {
            assert!(check_root(bad).is_err(), "{bad:?}");
        }
    }
}
