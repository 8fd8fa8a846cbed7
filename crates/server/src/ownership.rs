//! Which hosts this server evaluates alarms for, when several servers share one store
//! (docs/scaling-out.md). The server sees only the [`Ownership`] trait; the binary supplies the
//! ZooKeeper membership behind it (`procwatch-cluster`), so no ZooKeeper type reaches this
//! library. Without an ownership (one server, the default) the server evaluates every host.
//!
//! Hosts are split among the live members by rendezvous hashing of the host name over the
//! member ids ([`crate::rendezvous`]): every member computes the same split from the same
//! member list. The evaluator asks for a [`Share`] at the start of every pass; while there is
//! none (the membership is down: no ZooKeeper session), it does not evaluate at all, since it
//! cannot know that it still owns anything: alarms may be late, never doubled.

/// This server's place among the live members, as one pass sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// Changes whenever this server registered anew (a new session): what it owned before may
    /// have been evaluated by another server meanwhile, so its state is read from the store
    /// again.
    pub term: u64,
    /// This server's member id.
    pub me: String,
    /// Every live member's id, this one's included.
    pub members: Vec<String>,
}

impl Share {
    /// Whether this server evaluates `host`.
    pub fn owns(&self, host: &str) -> bool {
        crate::rendezvous::owner(host, &self.members) == Some(self.me.as_str())
    }
}

/// The source of [`Share`]s (the cluster membership).
pub trait Ownership: Send + Sync {
    /// This server's share now, or why it has none (for the log, `/metrics` and
    /// `GET /api/v1/health`).
    fn share(&self) -> Result<Share, String>;
}

/// What the alarm evaluator is doing, for `GET /api/v1/health` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Evaluation {
    /// No pass yet.
    Starting,
    /// Evaluating every host (no cluster membership configured).
    All,
    /// Evaluating this server's share of the hosts.
    Share {
        /// This server's member id.
        member: String,
        /// Live members, this one included.
        members: usize,
        /// Hosts this server evaluates (of those the store lists).
        hosts_owned: usize,
        /// Hosts the store lists.
        hosts: usize,
    },
    /// Not evaluating: no membership (ZooKeeper unreachable or session lost).
    Paused {
        /// Why, for a person.
        reason: String,
    },
}

/// The `/metrics` gauges of the evaluation's share: `procwatch_alarm_evaluation_paused` (1
/// while the membership is down), `procwatch_cluster_members` (live members; 0 without a
/// membership) and `procwatch_alarm_hosts_owned` (hosts this server evaluates).
#[derive(Debug, Default)]
pub struct ShareGauges {
    paused: prometheus_client::metrics::gauge::Gauge,
    members: prometheus_client::metrics::gauge::Gauge,
    owned: prometheus_client::metrics::gauge::Gauge,
}

impl ShareGauges {
    /// Registers the gauges (at zero) in `r`.
    pub fn register(r: &mut prometheus_client::registry::Registry) -> Self {
        let g = ShareGauges::default();
        for (name, help, gauge) in [
            (
                "alarm_evaluation_paused",
                "1 while alarm evaluation is paused: no cluster membership (ZooKeeper unreachable)",
                &g.paused,
            ),
            (
                "cluster_members",
                "Live procwatch servers sharing the alarm evaluation (0: no cluster membership)",
                &g.members,
            ),
            ("alarm_hosts_owned", "Hosts whose alarms this server evaluates", &g.owned),
        ] {
            r.register(name, help, gauge.clone());
        }
        g
    }

    /// Sets the gauges from what the evaluator is doing.
    pub fn set(&self, e: &Evaluation) {
        let (paused, members, owned) = match e {
            Evaluation::Starting => (0, 0, 0),
            Evaluation::All => (0, 0, -1),
            Evaluation::Share { members, hosts_owned, .. } => (0, *members, *hosts_owned as i64),
            Evaluation::Paused { .. } => (1, 0, 0),
        };
        self.paused.set(paused);
        self.members.set(members as i64);
        if owned >= 0 {
            self.owned.set(owned);
        }
    }

    /// Sets `procwatch_alarm_hosts_owned` (every host, without a membership).
    pub fn set_owned(&self, n: usize) {
        self.owned.set(n as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_member_owns_each_host() {
        let members: Vec<String> = ["member-1", "member-2", "member-3"].map(String::from).into();
        let shares: Vec<Share> = members
            .iter()
            .map(|me| Share { term: 1, me: me.clone(), members: members.clone() })
            .collect();
        for h in (0..500).map(|i| format!("h{i}")) {
            assert_eq!(shares.iter().filter(|s| s.owns(&h)).count(), 1, "{h}");
        }
    }
}
