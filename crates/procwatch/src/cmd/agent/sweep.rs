//! The agent's sweep function over a collector, shared by `procwatch agent` and `procwatch up`:
//! it collects the extra metrics the agent's settings ask for (the `--metrics` flag, or a
//! `metrics` directive from the server over it) and turns each sweep into the agent's
//! `SweepData`.

use procwatch_agent::{BoxError, Settings, SweepData, SweepFn};
use procwatch_collector::{Collector, ExtraSet, Sweep};

/// The extra metrics of `set` as the agent's settings name them (`io`, `fds`, ...).
pub fn metric_names(set: ExtraSet) -> Vec<String> {
    set.iter().map(|m| m.as_str().to_owned()).collect()
}

/// A sweep function over `collector`, which was built collecting `collecting`. Before each
/// sweep the extra metrics of the agent's settings are compared with what the collector
/// collects, and handed to it when they differ (a `metrics` directive takes effect at the next
/// sweep, and stays in effect across restarts because the agent persists it).
pub fn sweep_fn(mut collector: Box<dyn Collector + Send>, mut collecting: ExtraSet) -> SweepFn {
    let mut notes = super::ExtrasNotes::default();
    let mut bad_names_warned = false;
    Box::new(move |settings: &Settings| {
        match settings.metrics.join(",").parse::<ExtraSet>() {
            Ok(wanted) if wanted != collecting => {
                tracing::info!(
                    message = "Extra metrics changed.",
                    from = %collecting,
                    to = %wanted
                );
                collector.set_extras(wanted);
                collecting = wanted;
            }
            Ok(_) => {}
            // The agent checks a directive's names before applying it, so only a hand-edited
            // settings file gets here: keep collecting what was collected, say so once.
            Err(reason) if !bad_names_warned => {
                bad_names_warned = true;
                tracing::warn!(
                    message = "Unknown extra metric in the settings; collecting the previous ones.",
                    %reason,
                    collecting = %collecting
                );
            }
            Err(_) => {}
        }
        let s = collector.sweep().map_err(|e| Box::new(e) as BoxError)?;
        if let Some(s) = &s {
            notes.observe(s);
        }
        Ok(s.map(to_sweep_data))
    })
}

fn to_sweep_data(s: Sweep) -> SweepData {
    SweepData { ts: s.ts, host_totals: vec![s.host_total], samples: s.samples }
}
