//! The extras of a process group (issue 19): what one process contributes and how a group
//! sums them. Shared by every collector (the portable one collects no extras yet).

use procwatch_model::extras::Extras;
use std::sync::Arc;

/// One process's extras at one sweep. Owner and unit are shared names (no allocation per
/// process): only the group's lowest PID's become the group's.
#[derive(Debug, Default, Clone)]
pub(crate) struct ProcExtras {
    /// The numbers (its `owner` and `unit` are unused).
    pub(crate) x: Extras,
    pub(crate) owner: Option<Arc<str>>,
    pub(crate) unit: Option<Arc<str>>,
}

/// The extras of one group: sums of counts and rates, the highest `fds_pct`, owner and unit
/// of the lowest PID.
#[derive(Debug, Default)]
pub(crate) struct ExtrasAcc {
    x: Extras,
    min_pid: Option<u32>,
    owner: Option<Arc<str>>,
    unit: Option<Arc<str>>,
}

fn add_f(a: &mut Option<f64>, b: Option<f64>) {
    if let Some(b) = b {
        *a = Some(a.unwrap_or(0.0) + b);
    }
}

fn add_u(a: &mut Option<u64>, b: Option<u64>) {
    if let Some(b) = b {
        *a = Some(a.unwrap_or(0).saturating_add(b));
    }
}

impl ExtrasAcc {
    pub(crate) fn add(&mut self, pid: u32, p: ProcExtras) {
        let x = &mut self.x;
        let ProcExtras { x: p, owner, unit } = p;
        add_f(&mut x.read_bps, p.read_bps);
        add_f(&mut x.write_bps, p.write_bps);
        add_u(&mut x.fds, p.fds);
        add_u(&mut x.threads, p.threads);
        add_f(&mut x.ctxsw_vol, p.ctxsw_vol);
        add_f(&mut x.ctxsw_invol, p.ctxsw_invol);
        if let Some(pct) = p.fds_pct {
            x.fds_pct = Some(x.fds_pct.map_or(pct, |m: f64| m.max(pct)));
        }
        if self.min_pid.is_none_or(|m| pid < m) {
            self.min_pid = Some(pid);
            if owner.is_some() {
                self.owner = owner;
            }
            if unit.is_some() {
                self.unit = unit;
            }
        }
    }

    /// The group's extras, `None` when nothing was collected.
    pub(crate) fn finish(mut self) -> Option<Box<Extras>> {
        self.x.owner = self.owner.map(|o| o.to_string());
        self.x.unit = self.unit.map(|u| u.to_string());
        (!self.x.is_empty()).then(|| Box::new(self.x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_sum_counts_and_take_the_parent_s_names() {
        let mut acc = ExtrasAcc::default();
        let p = |fds, pct, owner: &str, r| ProcExtras {
            x: Extras { fds: Some(fds), fds_pct: Some(pct), read_bps: r, ..Default::default() },
            owner: Some(owner.into()),
            unit: None,
        };
        acc.add(20, p(10, 1.0, "child", Some(5.0)));
        acc.add(10, p(3, 50.0, "parent", None));
        acc.add(30, p(4, 2.0, "other", Some(1.0)));
        let x = acc.finish().unwrap();
        assert_eq!((x.fds, x.fds_pct, x.read_bps), (Some(17), Some(50.0), Some(6.0)));
        assert_eq!(x.owner.as_deref(), Some("parent"));
        assert_eq!(x.threads, None);
        assert!(ExtrasAcc::default().finish().is_none());
    }
}
