//! The cardinality governor: per host, full resolution for the processes that matter, and one
//! `(other)` series for the long tail, applied to each batch at ingestion (after the host's
//! rate check, before the series caps and the store).
//!
//! A sample is kept as sent when its process is
//! - among the host's top `top_k` by usage at that sweep (usage = the larger of cpu % and
//!   mem %, both percentages of the host), with hysteresis: a process enters at rank ≤ `top_k`
//!   and leaves only at rank > `top_k + margin` (or when it is gone), so one near the boundary
//!   does not flap in and out;
//! - pinned by name (`pinned` globs, the alarm rules' matcher);
//! - alarming (an active AMBER/RED/STALE alarm on the series, as of the evaluator's last pass;
//!   see [`Governor::set_alarming`]), so the evaluator keeps seeing it and can clear it;
//! - about to: any of cpu, cores, mem at or above `near` (0.5) times the threshold of the
//!   series' alarm rule, so a tail process climbing towards an alarm is seen before it fires.
//!
//! Every other sample of the sweep is folded into one sample named [`OTHER`] whose cpu, cores,
//! mem and rss are the sums and whose `count` is the number of processes folded (the sum of
//! their `count`s), so host totals stay exact: Σ kept + `(other)` = Σ sent. A sample an agent
//! sends under the name `(other)` itself is folded too (the name is the tail's).
//!
//! State is bounded whatever a host sends: per host only the names in the top-K set (at most
//! `top_k + margin`), and at most [`MAX_HOSTS`] hosts (past it a new host is governed without
//! hysteresis: its top-K of each sweep alone); a host silent past the retention is forgotten
//! when retention runs.
//!
//! `top_k = 0` (the default) turns the governor off: folding drops per-process detail at
//! ingestion for good, so an operator opts in with `--governor-top-k`; the series caps of
//! [`crate::admission`] already bound what a hostile host can cost.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use procwatch_alarm::{Glob, RuleSet};
use procwatch_model::{AlarmEvent, Batch, Level, Metric, Sample, TsMs};

/// The name of the folded tail series of a host.
pub const OTHER: &str = "(other)";

/// Hosts whose top-K set is remembered at most.
pub const MAX_HOSTS: usize = 100_000;

/// The largest `top_k` accepted.
pub const MAX_TOP_K: usize = 100_000;

/// Settings of the governor (`--governor-top-k`, `--governor-pinned`).
#[derive(Debug, Clone, PartialEq)]
pub struct GovernorConfig {
    /// Processes per host kept at full resolution by usage; 0 = governor off.
    pub top_k: usize,
    /// Ranks past `top_k` a kept process may fall before it is folded (hysteresis).
    pub margin: usize,
    /// Names always kept.
    pub pinned: Vec<Glob>,
    /// A sample at or above this fraction of its alarm threshold is kept.
    pub near: f64,
}

impl Default for GovernorConfig {
    fn default() -> Self {
        GovernorConfig { top_k: 0, margin: 0, pinned: Vec::new(), near: 0.5 }
    }
}

impl GovernorConfig {
    /// `top_k` processes, the default margin (a fifth of K, at least 2), `pinned` globs.
    pub fn new(top_k: usize, pinned: Vec<Glob>) -> Self {
        GovernorConfig { top_k, margin: default_margin(top_k), pinned, ..Default::default() }
    }
}

/// The hysteresis margin for `top_k`: a fifth of it, at least 2.
pub fn default_margin(top_k: usize) -> usize {
    (top_k / 5).max(2)
}

#[derive(Debug, Default)]
struct HostState {
    /// Names in the top-K set (entered at rank ≤ K, not yet past K + margin).
    kept: HashSet<String>,
    /// Processes folded at the newest sweep (Σ count).
    folded: u64,
    /// Timestamp of the newest sweep seen.
    last_ts: TsMs,
}

/// What one batch's folding did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Folded {
    /// Samples folded into `(other)` samples.
    pub samples: usize,
    /// Processes folded at the batch's newest sweep (Σ count).
    pub processes: u64,
}

/// The governor of one server: its settings, each host's top-K set, the alarming series.
#[derive(Debug, Default)]
pub struct Governor {
    config: GovernorConfig,
    hosts: Mutex<HashMap<String, HostState>>,
    /// host → processes with an active alarm, as of the evaluator's last pass.
    alarming: RwLock<HashMap<String, HashSet<String>>>,
    folded_samples: AtomicU64,
}

impl Governor {
    /// A governor with these settings and no host seen yet.
    pub fn new(config: GovernorConfig) -> Self {
        Governor { config, ..Default::default() }
    }

    /// Whether it folds at all (`top_k > 0`).
    pub fn enabled(&self) -> bool {
        self.config.top_k > 0
    }

    /// The settings.
    pub fn config(&self) -> &GovernorConfig {
        &self.config
    }

    /// Replaces the set of alarming series with those of `active` (the evaluator's open
    /// alarms), the one thing the governor learns from the alarm side.
    pub fn set_alarming(&self, active: &[AlarmEvent]) {
        if !self.enabled() {
            return;
        }
        let mut set: HashMap<String, HashSet<String>> = HashMap::new();
        for e in active.iter().filter(|e| e.level != Level::Ok) {
            set.entry(e.host.clone()).or_default().insert(e.process.clone());
        }
        *self.alarming.write().unwrap_or_else(|p| p.into_inner()) = set;
    }

    /// Forgets the hosts whose newest sweep is older than `cutoff` (the retention's), so a
    /// host gone for good frees its top-K set.
    pub fn forget_before(&self, cutoff: TsMs) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts.retain(|_, h| h.last_ts >= cutoff);
    }

    /// Processes folded at each host's newest sweep (`None`: the governor is off).
    pub fn folded_of(&self, host: &str) -> Option<u64> {
        if !self.enabled() {
            return None;
        }
        let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        Some(hosts.get(host).map_or(0, |h| h.folded))
    }

    /// The governor's lines of `/metrics` (Prometheus text): the folded processes of every
    /// host's newest sweep together, the samples folded since start, and K.
    pub fn metrics_text(&self) -> String {
        let folded: u64 = {
            let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
            hosts.values().map(|h| h.folded).sum()
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP procwatch_governor_folded_processes Processes folded into the (other) series at each host's newest sweep, all hosts together\n\
             # TYPE procwatch_governor_folded_processes gauge\n\
             procwatch_governor_folded_processes {folded}\n\
             # HELP procwatch_governor_folded_samples_total Samples folded into (other) series since start\n\
             # TYPE procwatch_governor_folded_samples_total counter\n\
             procwatch_governor_folded_samples_total {}\n\
             # HELP procwatch_governor_top_k Processes per host kept at full resolution by usage (0: governor off)\n\
             # TYPE procwatch_governor_top_k gauge\n\
             procwatch_governor_top_k {}",
            self.folded_samples.load(Ordering::Relaxed),
            self.config.top_k,
        );
        out
    }

    /// Folds the tail of `batch` (see the module doc); `rules` says which samples are near
    /// their alarm threshold.
    pub fn apply(&self, batch: &mut Batch, rules: &RuleSet) -> Folded {
        if !self.enabled() || batch.samples.is_empty() {
            return Folded::default();
        }
        let samples = std::mem::take(&mut batch.samples);
        let mut by_ts: BTreeMap<TsMs, Vec<Sample>> = BTreeMap::new();
        for s in samples {
            by_ts.entry(s.ts).or_default().push(s);
        }
        let alarming = self.alarming.read().unwrap_or_else(|p| p.into_inner());
        let alarming = alarming.get(&batch.host);
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let mut scratch = HostState::default();
        let state = if hosts.len() < MAX_HOSTS || hosts.contains_key(&batch.host) {
            hosts.entry(batch.host.clone()).or_default()
        } else {
            &mut scratch
        };
        let mut out = Vec::new();
        let mut folded = Folded::default();
        for (ts, sweep) in by_ts {
            let protected = |s: &Sample| {
                self.config.pinned.iter().any(|g| g.matches(&s.process))
                    || alarming.is_some_and(|a| a.contains(&s.process))
                    || near_threshold(rules, self.config.near, &batch.host, s)
            };
            let (other, n) = self.fold_sweep(state, sweep, protected, &mut out);
            folded.samples += n;
            if ts >= state.last_ts {
                state.last_ts = ts;
                state.folded = other.as_ref().map_or(0, |o| u64::from(o.count));
                folded.processes = state.folded;
            }
            out.extend(other);
        }
        batch.samples = out;
        self.folded_samples.fetch_add(folded.samples as u64, Ordering::Relaxed);
        folded
    }

    /// One sweep: pushes the kept samples to `out`, returns the `(other)` sample (if any
    /// was folded) and how many samples it folded; updates the host's top-K set.
    fn fold_sweep(
        &self,
        state: &mut HostState,
        mut sweep: Vec<Sample>,
        protected: impl Fn(&Sample) -> bool,
        out: &mut Vec<Sample>,
    ) -> (Option<Sample>, usize) {
        let (k, margin) = (self.config.top_k, self.config.margin);
        // Highest usage first; ties by name, so a rank does not depend on the agent's order.
        let usage = |s: &Sample| s.cpu.max(s.mem);
        sweep.sort_by(|a, b| usage(b).total_cmp(&usage(a)).then_with(|| a.process.cmp(&b.process)));
        let mut kept = HashSet::with_capacity(k.min(sweep.len()));
        let mut other: Option<Sample> = None;
        let mut n = 0;
        let mut rank = 0;
        for s in sweep {
            let tail = s.process == OTHER;
            if !tail {
                rank += 1;
            }
            let in_top =
                !tail && (rank <= k || (rank <= k + margin && state.kept.contains(&s.process)));
            if in_top {
                kept.insert(s.process.clone());
            }
            if in_top || (!tail && protected(&s)) {
                out.push(s);
                continue;
            }
            n += 1;
            match &mut other {
                None => other = Some(Sample { process: OTHER.to_owned(), ..s }),
                Some(o) => {
                    o.cpu += s.cpu;
                    o.cores += s.cores;
                    o.mem += s.mem;
                    o.rss = o.rss.saturating_add(s.rss);
                    o.count = o.count.saturating_add(s.count);
                }
            }
        }
        state.kept = kept;
        (other, n)
    }
}

/// Whether any evaluated metric of `s` is at or above `near` times its rule's threshold.
fn near_threshold(rules: &RuleSet, near: f64, host: &str, s: &Sample) -> bool {
    [Metric::Cpu, Metric::Mem, Metric::Cores]
        .into_iter()
        .any(|m| rules.rule_for(host, &s.process, m).is_some_and(|r| m.of(s) >= near * r.threshold))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ts: TsMs, process: &str, cpu: f64) -> Sample {
        Sample {
            ts,
            process: process.into(),
            cpu,
            cores: 0.0,
            mem: 0.1,
            rss: 1000,
            count: 1,
            extras: None,
        }
    }

    fn batch(samples: Vec<Sample>) -> Batch {
        Batch {
            host: "h".into(),
            agent: String::new(),
            seq: 0,
            interval_ms: 0,
            host_totals: Vec::new(),
            samples,
            dropped_samples: 0,
            report: None,
        }
    }

    fn names(b: &Batch) -> Vec<&str> {
        let mut v: Vec<&str> = b.samples.iter().map(|s| s.process.as_str()).collect();
        v.sort();
        v
    }

    fn governor(k: usize) -> Governor {
        Governor::new(GovernorConfig::new(k, Vec::new()))
    }

    #[test]
    fn off_by_default_changes_nothing() {
        let g = Governor::default();
        let mut b = batch((0..50).map(|i| sample(1, &format!("p{i}"), 1.0)).collect());
        let before = b.clone();
        assert_eq!(g.apply(&mut b, &RuleSet::default()), Folded::default());
        assert_eq!(b, before);
        assert_eq!(g.folded_of("h"), None);
    }

    #[test]
    fn folds_the_tail_and_keeps_totals_exact() {
        let g = governor(3);
        let samples: Vec<Sample> =
            (0..20).map(|i| sample(1, &format!("p{i:02}"), i as f64)).collect();
        let sum = |v: &[Sample]| {
            v.iter().fold((0.0, 0.0, 0.0, 0u64, 0u32), |a, s| {
                (a.0 + s.cpu, a.1 + s.cores, a.2 + s.mem, a.3 + s.rss, a.4 + s.count)
            })
        };
        let want = sum(&samples);
        let mut b = batch(samples);
        let f = g.apply(&mut b, &RuleSet::default());
        assert_eq!(names(&b), ["(other)", "p17", "p18", "p19"]);
        assert_eq!(f, Folded { samples: 17, processes: 17 });
        let got = sum(&b.samples);
        assert!((got.0 - want.0).abs() < 1e-9 && (got.1 - want.1).abs() < 1e-9);
        assert!((got.2 - want.2).abs() < 1e-9);
        assert_eq!((got.3, got.4), (want.3, want.4));
        assert_eq!(g.folded_of("h"), Some(17));
        assert!(g.metrics_text().contains("procwatch_governor_folded_processes 17\n"));
    }

    #[test]
    fn keeps_pinned_alarming_and_near_threshold_tail_processes() {
        let g = Governor::new(GovernorConfig::new(1, vec![Glob::new("pin*")]));
        let ev = procwatch_store::conformance::red_event("x", "h", "alarming", 0);
        g.set_alarming(&[ev]);
        // Default rules: threshold 80, so 40 % cpu is "about to".
        let mut b = batch(vec![
            sample(1, "big", 70.0),
            sample(1, "pinned", 0.0),
            sample(1, "alarming", 0.0),
            sample(1, "near", 39.0),
            sample(1, "quiet", 1.0),
        ]);
        // "near" at 39 < 40 is folded; at 40 it is kept.
        g.apply(&mut b, &RuleSet::default());
        assert_eq!(names(&b), ["(other)", "alarming", "big", "pinned"]);
        let mut b = batch(vec![sample(2, "big", 70.0), sample(2, "near", 40.0)]);
        g.apply(&mut b, &RuleSet::default());
        assert_eq!(names(&b), ["big", "near"]);
    }

    #[test]
    fn hysteresis_keeps_a_process_near_the_boundary() {
        // K = 2, margin 2: "edge" enters at rank 2, stays at ranks 3 and 4, leaves at 5
        // (figures far below the alarm thresholds).
        let g = governor(2);
        let sweep = |ts: TsMs, edge: f64| {
            let mut v: Vec<Sample> = [5.0, 4.0, 3.0, 2.0]
                .iter()
                .enumerate()
                .map(|(i, c)| sample(ts, &format!("p{i}"), *c))
                .collect();
            v.push(sample(ts, "edge", edge));
            batch(v)
        };
        let kept = |b: &Batch| b.samples.iter().any(|s| s.process == "edge");
        let rules = RuleSet::default();
        let mut b = sweep(1, 4.5); // rank 2: enters
        g.apply(&mut b, &rules);
        assert!(kept(&b));
        let mut b = sweep(2, 3.5); // rank 3: stays (≤ K + margin)
        g.apply(&mut b, &rules);
        assert!(kept(&b));
        let mut b = sweep(3, 2.5); // rank 4: stays
        g.apply(&mut b, &rules);
        assert!(kept(&b));
        let mut b = sweep(4, 1.0); // rank 5: leaves
        g.apply(&mut b, &rules);
        assert!(!kept(&b));
        let mut b = sweep(5, 3.5); // rank 3 again: out, it must reach rank ≤ 2 to enter
        g.apply(&mut b, &rules);
        assert!(!kept(&b));
    }

    #[test]
    fn state_stays_bounded_under_a_flood_of_names() {
        let g = governor(5);
        for round in 0..20 {
            let mut b = batch(
                (0..2_000)
                    .map(|i| sample(round, &format!("n{round}-{i}"), f64::from(i % 97) / 10.0))
                    .collect(),
            );
            g.apply(&mut b, &RuleSet::default());
            assert_eq!(b.samples.len(), 5 + 1, "the top 5 and (other)");
        }
        let hosts = g.hosts.lock().unwrap();
        assert!(hosts["h"].kept.len() <= 5 + default_margin(5));
    }

    #[test]
    fn each_sweep_of_a_batch_folds_on_its_own() {
        let g = governor(1);
        let mut b = batch(vec![
            sample(1, "a", 10.0),
            sample(1, "b", 5.0),
            sample(2, "a", 10.0),
            sample(2, "b", 5.0),
            sample(2, "c", 1.0),
        ]);
        g.apply(&mut b, &RuleSet::default());
        let others: Vec<(TsMs, u32)> =
            b.samples.iter().filter(|s| s.process == OTHER).map(|s| (s.ts, s.count)).collect();
        assert_eq!(others, [(1, 1), (2, 2)]);
        assert_eq!(g.folded_of("h"), Some(2));
        g.forget_before(3);
        assert_eq!(g.folded_of("h"), Some(0), "forgotten past the retention");
        assert!(g.hosts.lock().unwrap().is_empty());
    }
}
