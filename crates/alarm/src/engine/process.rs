//! The rule series of one (host, process), in metric order, in one allocation: the engine's
//! B-tree holds one entry per process, not one per series.

use super::series::SeriesState;
use procwatch_model::Metric;

/// The states of one process's rule series, ordered by [`Metric`] (cpu, cores, mem, then the
/// extras), so that walking the engine's B-tree visits (host, process, metric) in order, as
/// events are emitted. One allocation at exactly its length: a quiet process's three states are
/// 312 bytes (a 320-byte malloc chunk), and its B-tree slot is the key and this slice's
/// pointer and length (48 bytes). Never empty in the engine: a process goes when its last
/// series does.
#[derive(Default)]
pub(super) struct ProcessStates(Box<[SeriesState]>);

impl ProcessStates {
    /// The index of `metric`'s state, or where it would go.
    fn search(&self, metric: Metric) -> Result<usize, usize> {
        self.0.binary_search_by(|st| st.metric.cmp(&metric))
    }

    /// The state of `metric`'s series.
    pub(super) fn get(&self, metric: Metric) -> Option<&SeriesState> {
        self.search(metric).ok().map(|i| &self.0[i])
    }

    /// The state of `metric`'s series, made by `new` (and placed in metric order) when there is
    /// none.
    pub(super) fn get_or_insert_with(
        &mut self,
        metric: Metric,
        new: impl FnOnce() -> SeriesState,
    ) -> &mut SeriesState {
        let i = match self.search(metric) {
            Ok(i) => i,
            Err(i) => {
                let st = new();
                debug_assert_eq!(st.metric, metric);
                self.insert_at(i, st);
                i
            }
        };
        &mut self.0[i]
    }

    /// Puts `st` in its metric's place, replacing the state there if any.
    pub(super) fn insert(&mut self, st: SeriesState) {
        match self.search(st.metric) {
            Ok(i) => self.0[i] = st,
            Err(i) => self.insert_at(i, st),
        }
    }

    fn insert_at(&mut self, i: usize, st: SeriesState) {
        let mut v = std::mem::take(&mut self.0).into_vec();
        v.reserve_exact(1);
        v.insert(i, st);
        self.0 = v.into_boxed_slice();
    }

    /// Keeps the states for which `keep` is true (called once each, in metric order); the
    /// allocation shrinks to what is left.
    pub(super) fn retain(&mut self, keep: impl FnMut(&mut SeriesState) -> bool) {
        let mut v = std::mem::take(&mut self.0).into_vec();
        v.retain_mut(keep);
        self.0 = v.into_boxed_slice();
    }

    /// Whether no series is left.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many series.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// The states, in metric order.
    pub(super) fn iter(&self) -> std::slice::Iter<'_, SeriesState> {
        self.0.iter()
    }

    /// The states, in metric order.
    pub(super) fn iter_mut(&mut self) -> std::slice::IterMut<'_, SeriesState> {
        self.0.iter_mut()
    }
}
