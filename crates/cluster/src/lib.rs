//! procwatch-cluster: the live membership of the procwatch servers that share one store (the
//! ClickHouse cluster), kept in ZooKeeper, so that they can split the alarm evaluation among
//! themselves (docs/scaling-out.md).
//!
//! [`Membership::start`] connects to ZooKeeper, registers this server as an ephemeral
//! sequential znode `<root>/member-NNNNNNNNNN` (its data: the server's address, for a person
//! reading ZooKeeper), watches the children of `<root>` and publishes a [`View`]: the sorted
//! list of live member ids and this server's own, or `Down` with the reason while it has no
//! usable session. Which member evaluates which host is decided by the server
//! (`procwatch_server::rendezvous`), not here: this crate only knows who is alive.
//!
//! Timing: a server that dies (SIGKILL, power) keeps its znode until ZooKeeper expires its
//! session, `session_timeout` after its last heartbeat (ZooKeeper bounds the timeout asked for
//! to `[2, 20] × tickTime`; the client heartbeats every third of it). Every other member's
//! watch fires then, within milliseconds. A server stopped cleanly closes its session, so its
//! znode goes at once. A server that loses its connection reports `Down` at once (before
//! ZooKeeper could expire it and hand its hosts to others), and `Live` again when the same
//! session reconnects; when the session expired it registers anew, under a new id and a new
//! [`View::Live`] `term`.

#![deny(missing_docs)]

pub mod membership;

pub use membership::{Membership, MembershipConfig, MembershipError, View};
