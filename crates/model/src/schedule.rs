//! A drift-free schedule: ticks at `start + k × interval`, each deadline computed from the
//! previous deadline (never from when the work finished), so the ticks do not drift. When the
//! work overran, the ticks a whole interval or more in the past are skipped (and counted) rather
//! than run back to back; a tick late by less than an interval runs at once.
//!
//! Pure: the caller passes the current reading of its clock. Used by the agent's sweep thread
//! and the stdout agent of the binary.

use std::time::{Duration, Instant};

/// The state of a drift-free schedule (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    deadline: Instant,
    interval: Duration,
}

impl Schedule {
    /// A schedule whose first tick is `start` (an interval of zero is taken as 1 ns).
    pub fn new(start: Instant, interval: Duration) -> Self {
        Schedule { deadline: start, interval: interval.max(Duration::from_nanos(1)) }
    }

    /// The instant the current tick is due.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves to the next tick after the current one was taken, `now` being the clock's reading;
    /// returns how many ticks were skipped because they were a whole interval or more behind.
    pub fn advance(&mut self, now: Instant) -> u64 {
        self.deadline += self.interval;
        let mut skipped = 0;
        while self.deadline + self.interval <= now {
            self.deadline += self.interval;
            skipped += 1;
        }
        skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_stay_on_the_grid_and_skip_whole_missed_intervals() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Schedule::new(t0, ms(100));
        assert_eq!(s.deadline(), t0);
        // The work took 30 ms: the next tick is still on the grid.
        assert_eq!(s.advance(t0 + ms(30)), 0);
        assert_eq!(s.deadline(), t0 + ms(100));
        // Overran by 250 ms: ticks 200 and 300 are a whole interval behind, skipped; 400 runs.
        assert_eq!(s.advance(t0 + ms(450)), 2);
        assert_eq!(s.deadline(), t0 + ms(400));
    }
}
