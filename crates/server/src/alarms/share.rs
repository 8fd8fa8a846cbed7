//! The evaluator's share of the hosts when several servers split them ([`crate::ownership`]):
//! which hosts a pass evaluates, and what happens when the share changes.
//!
//! - A host this server **gains** (a member left, this server joined, or the host is new) has
//!   its open alarms (RED, AMBER, STALE, host silent) restored from the store before the pass
//!   evaluates it, so an alarm the previous owner raised is continued (same event, same id),
//!   neither raised again nor lost. Its other series are read back over the rules' whole
//!   window and replayed without delivering anything (the previous owner did), so the
//!   forecasters start primed and no past transition reaches a stream twice
//!   ([`Alarms::take_over`]).
//! - A host this server **loses** to another member is forgotten without an event: its open
//!   alarms stay open in the store for the new owner.
//! - **No share** (membership down): no pass at all. The state is kept while the same session
//!   may come back; a new term (a new session: another server may have evaluated these hosts
//!   meanwhile) forgets everything and restores what it owns from the store.

use std::collections::{BTreeMap, HashSet};

use procwatch_model::{AlarmEvent, TsMs};
use procwatch_store::{AlarmQuery, HostInfo, SeriesWindow, Storage, StoreError, UsageQuery};

use super::{Alarms, EvalContext};
use crate::ownership::Evaluation;

/// The hosts the last pass evaluated, and under which term of the membership.
#[derive(Debug, Default)]
pub(super) struct Owned {
    term: Option<u64>,
    hosts: HashSet<String>,
}

/// What one pass evaluates.
pub(super) enum Scope {
    /// Every host (no membership configured).
    All,
    /// Nothing: no membership now.
    Paused,
    /// These hosts; `gained` are those taken over since the last pass.
    Hosts {
        /// Every host this server owns now.
        owned: HashSet<String>,
        /// The hosts it did not own in the last pass (their open alarms are restored).
        gained: HashSet<String>,
    },
}

impl Scope {
    /// Whether the pass evaluates `host`.
    pub(super) fn covers(&self, host: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Paused => false,
            Scope::Hosts { owned, .. } => owned.contains(host),
        }
    }

    /// Whether `host` was taken over since the last pass (`take_over` restores it).
    pub(super) fn gained(&self, host: &str) -> bool {
        matches!(self, Scope::Hosts { gained, .. } if gained.contains(host))
    }
}

impl Alarms {
    /// What the evaluator is doing (for `GET /api/v1/health`).
    pub fn evaluation(&self) -> Evaluation {
        self.evaluation.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_evaluation(&self, ctx: &EvalContext, e: Evaluation) {
        ctx.metrics.share.set(&e);
        *self.evaluation.write().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// This pass's scope among `hosts` (every host the store lists). Restores the open alarms
    /// of the hosts gained, and forgets those lost to another member (still listed). On a
    /// store error nothing changes, so the next pass tries again.
    pub(super) async fn scope(
        &self,
        ctx: &EvalContext,
        hosts: &[HostInfo],
    ) -> Result<Scope, StoreError> {
        let Some(ownership) = &ctx.ownership else {
            self.set_evaluation(ctx, Evaluation::All);
            ctx.metrics.share.set_owned(hosts.len());
            return Ok(Scope::All);
        };
        let share = match ownership.share() {
            Ok(s) => s,
            Err(reason) => {
                if !matches!(self.evaluation(), Evaluation::Paused { .. }) {
                    tracing::warn!(
                        message = "Alarm evaluation paused: no cluster membership, so this \
                                   server cannot know which hosts it owns.",
                        %reason
                    );
                }
                self.set_evaluation(ctx, Evaluation::Paused { reason });
                return Ok(Scope::Paused);
            }
        };
        let owned: HashSet<String> =
            hosts.iter().filter(|h| share.owns(&h.host)).map(|h| h.host.clone()).collect();
        let (previous, held) = {
            let mut o = self.owned.lock().unwrap_or_else(|p| p.into_inner());
            if o.term == Some(share.term) {
                (o.hosts.clone(), HashSet::new())
            } else {
                (HashSet::new(), std::mem::take(&mut o.hosts))
            }
        };
        if !held.is_empty() {
            // A new session: whatever the engine holds may have moved on under another
            // member meanwhile; the store is the record.
            let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            for h in &held {
                engine.release_host(h);
            }
        }
        let gained: HashSet<String> = owned.difference(&previous).cloned().collect();
        if !gained.is_empty() {
            let n = self.restore_hosts(&*ctx.store, Some(&gained)).await?;
            if !previous.is_empty() || n > 0 {
                tracing::info!(
                    message = "Hosts taken over; their open alarms restored from the store.",
                    hosts = gained.len(),
                    restored = n,
                    member = %share.me
                );
            }
        }
        let listed: HashSet<&str> = hosts.iter().map(|h| h.host.as_str()).collect();
        {
            let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            // A host the store no longer lists stays: the pass closes its alarms
            // (`forget_unlisted_hosts`). One another member owns now is forgotten silently.
            for h in previous.difference(&owned).filter(|h| listed.contains(h.as_str())) {
                engine.release_host(h);
            }
        }
        *self.owned.lock().unwrap_or_else(|p| p.into_inner()) =
            Owned { term: Some(share.term), hosts: owned.clone() };
        self.set_evaluation(
            ctx,
            Evaluation::Share {
                member: share.me.clone(),
                members: share.members.len(),
                hosts_owned: owned.len(),
                hosts: hosts.len(),
            },
        );
        Ok(Scope::Hosts { owned, gained })
    }

    /// Re-opens the store's open events in the engine: every host's (`None`), or those of
    /// `hosts`. Returns how many were restored.
    pub(super) async fn restore_hosts(
        &self,
        store: &dyn Storage,
        hosts: Option<&HashSet<String>>,
    ) -> Result<usize, StoreError> {
        let mut open =
            store.alarm_events(&AlarmQuery { active_only: true, ..Default::default() }).await?;
        if let Some(hosts) = hosts {
            open.retain(|e| hosts.contains(&e.host));
        }
        let active = {
            let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            engine.restore(&open);
            engine.active()
        };
        {
            let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            for ev in open.iter().filter(|e| active.iter().any(|a| a.id == e.id)) {
                written.insert(ev.id.clone(), (ev.peak, ev.value));
            }
        }
        let n = active.iter().filter(|a| open.iter().any(|e| e.id == a.id)).count();
        self.set_active(active);
        Ok(n)
    }

    /// Takes the hosts `gained` over in this pass. Their series are read back from `from`
    /// (the rules' window + horizon) to `to`. A series whose open alarm was restored goes on
    /// in `windows` (the pass continues it from the event's start). Every other series is
    /// replayed through the engine now with its transitions dropped: the previous owner
    /// already delivered them (the store has them), and replaying them would deliver them
    /// twice. What that replay leaves open and the store has no record of (an alarm raised in
    /// the gap between the previous owner's last pass and now) is returned, for the pass to
    /// store and publish as new.
    pub(super) async fn take_over(
        &self,
        ctx: &EvalContext,
        gained: &HashSet<String>,
        windows: &mut Vec<SeriesWindow>,
        host_interval: &BTreeMap<&str, i64>,
        (from, to): (TsMs, TsMs),
    ) -> Result<Vec<AlarmEvent>, StoreError> {
        windows.retain(|w| !gained.contains(&w.host));
        // One host at a time: a server taking over half a large fleet (or starting in one)
        // never holds every gained series' history at once.
        let before: HashSet<String> = {
            let engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            engine.active().into_iter().map(|e| e.id).collect()
        };
        for host in gained {
            let q =
                UsageQuery { from, to, host: Some(host.clone()), process: None, per_host: true };
            let history = ctx.store.window(&q).await?;
            let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            let (fresh, restored): (Vec<SeriesWindow>, Vec<SeriesWindow>) = history
                .into_iter()
                .partition(|w| engine.last_sample(&w.host, &w.process).is_none());
            windows.extend(restored);
            let inputs = super::evaluator::series_inputs(&fresh, host_interval, 1);
            // Nothing is judged silent here, so no other series moves (the pass judges silence
            // at `now`).
            drop(engine.replay(&inputs));
        }
        let candidates: Vec<AlarmEvent> = {
            let engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            let active = engine.active().into_iter();
            active.filter(|e| gained.contains(&e.host) && !before.contains(&e.id)).collect()
        };
        let mut discovered = Vec::new();
        for ev in candidates {
            let q = AlarmQuery {
                host: Some(ev.host.clone()),
                from: Some(ev.start),
                to: Some(ev.start + 1),
                ..Default::default()
            };
            if !ctx.store.alarm_events(&q).await?.iter().any(|k| k.id == ev.id) {
                discovered.push(ev);
            }
        }
        Ok(discovered)
    }
}
