//! Time warp, for time-compressed load tests: `SPEED@ORIGIN_MS` makes a clock that reads
//! `origin + (wall − origin) × speed`, so from `origin` on, time runs `speed` times faster
//! than the wall clock. A server started with `PROCWATCH_TIME_WARP=SPEED@ORIGIN_MS` (the
//! hidden `--time-warp`) uses it everywhere its clock is read (timestamp validation, the
//! store's memory window and retention, alarm evaluation), and runs its store's maintenance
//! `speed` times more often; `loadgen --time-warp` with the same value stamps its samples and
//! paces its agents on the same clock. Both agree without talking to each other, so a 40-minute
//! head window rolls over in 2 minutes at 20×, with the memory behaviour of the real thing
//! (what is held, what is evicted, when). Tests and benchmarks only: a warped server's
//! timestamps are in the future of the real world.

use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use procwatch_model::clock::Clock;
use procwatch_model::TsMs;

/// How fast, and from when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Warp {
    /// Virtual seconds per real second (≥ 1).
    pub speed: f64,
    /// The instant (Unix ms) at which virtual and real time agree.
    pub origin_ms: TsMs,
}

impl FromStr for Warp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (speed, origin) = s
            .split_once('@')
            .ok_or_else(|| format!("{s:?}: expected SPEED@ORIGIN_MS, e.g. 20@1764900000000"))?;
        let speed: f64 = speed.trim().parse().map_err(|_| format!("{speed:?}: not a number"))?;
        if !(speed.is_finite() && (1.0..=10_000.0).contains(&speed)) {
            return Err(format!("speed {speed}: between 1 and 10000"));
        }
        let origin_ms: TsMs =
            origin.trim().parse().map_err(|_| format!("{origin:?}: not Unix milliseconds"))?;
        Ok(Warp { speed, origin_ms })
    }
}

impl Warp {
    /// The virtual time at the wall-clock instant `wall_ms`.
    pub fn at(&self, wall_ms: TsMs) -> TsMs {
        self.origin_ms + ((wall_ms - self.origin_ms) as f64 * self.speed) as TsMs
    }

    /// A real duration that spans `virtual_d` of virtual time.
    pub fn real(&self, virtual_d: Duration) -> Duration {
        virtual_d.div_f64(self.speed)
    }

    /// The warped clock (monotonic instants stay real: they time work, not data).
    pub fn clock(self) -> std::sync::Arc<dyn Clock> {
        std::sync::Arc::new(WarpedClock(self))
    }
}

fn wall_ms() -> TsMs {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as TsMs)
}

/// A [`Clock`] running `speed` times faster than the wall clock from `origin` on.
#[derive(Debug)]
pub struct WarpedClock(pub Warp);

impl Clock for WarpedClock {
    fn now_ms(&self) -> TsMs {
        self.0.at(wall_ms())
    }
    fn instant(&self) -> Instant {
        Instant::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_scales() {
        let w: Warp = "20@1000".parse().unwrap();
        assert_eq!(w, Warp { speed: 20.0, origin_ms: 1000 });
        assert_eq!(w.at(1000), 1000);
        assert_eq!(w.at(2000), 21_000);
        assert_eq!(w.real(Duration::from_secs(10)), Duration::from_millis(500));
        for bad in ["20", "x@1", "0.5@1", "20@soon", "inf@1"] {
            assert!(bad.parse::<Warp>().is_err(), "{bad}");
        }
    }
}
