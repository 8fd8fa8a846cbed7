//! `procwatch agent --bench N`: the collector's own cost, beside its peers, in one run.
//!
//! Spawns sleeping processes until at least `min_procs` processes exist (and kills exactly
//! those at the end) — or, with [`Children::Active`], processes that wake every few
//! milliseconds, so that every one of them has run between two sweeps (no quiet-process
//! shortcut applies to them) — then measures the CPU time (user + system,
//! `CLOCK_PROCESS_CPUTIME_ID`) of N sweeps of:
//! - procwatch's `/proc` collector,
//! - the floor reader ([`crate::floor::FloorReader`]: `stat` + `statm` of every PID, nothing
//!   computed), and for reference the same with `stat` alone,
//! - the `sysinfo` collector (procwatch's portable fallback),
//! - psutil's `process_iter(['name', 'cpu_percent', 'memory_percent'])` loop, in a `python3`
//!   child that times itself with `time.process_time()` (skipped with a note if python3 or
//!   psutil is missing).
//!
//! and reports the median per sweep and per process.

use crate::floor::FloorReader;
use crate::{new_collector, sys, CollectorKind, CollectorOptions, ExtraMetric, ExtraSet};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Timed sweeps per contender.
    pub sweeps: u32,
    /// Spawn `sleep` processes until this many processes exist.
    pub min_procs: usize,
    /// Wall time between two sweeps (processes keep running meanwhile).
    pub gap: Duration,
    /// The extras' collectors read `io` and `ctxsw` from the files even where taskstats
    /// answers (to compare both sources, one invocation each: together they would need more
    /// kept-open descriptors than a usual limit allows).
    pub no_taskstats: bool,
}

/// What the processes spawned to reach `min_procs` do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Children {
    /// `sleep 3600`: they never run between two sweeps (a quiet host).
    Sleeping,
    /// Forks of the bench that wake every `tick` (`nanosleep` in a loop, no exec): each one
    /// has run between two sweeps (a host whose processes are all active).
    Active {
        /// Time between two wakes of a child.
        tick: Duration,
    },
}

/// One contender's figures.
#[derive(Debug, Clone)]
pub struct BenchRow {
    /// The contender, e.g. `procwatch proc`.
    pub name: String,
    /// Median CPU time per sweep, seconds; `None` when the contender could not run.
    pub median_sweep_s: Option<f64>,
    /// Processes it saw in a sweep.
    pub processes: usize,
    /// What to know about the figure (or why it could not run).
    pub note: String,
}

/// Kills the processes it holds (only those, by PID) when dropped.
#[derive(Default)]
struct Sleepers {
    sleeping: Vec<Child>,
    tickers: Vec<i32>,
}

impl Sleepers {
    fn spawn(&mut self, children: Children) -> std::io::Result<()> {
        // The tickers' phases spread over the tick (golden-ratio steps): they do not all wake
        // at the same instant.
        let nth = self.tickers.len() as f64;
        match children {
            Children::Sleeping => self.sleeping.push(
                Command::new("sleep")
                    .arg("3600")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?,
            ),
            Children::Active { tick } => {
                let phase = tick.mul_f64((nth * 0.618_034).fract());
                self.tickers.push(sys::fork_ticker(tick, phase)?)
            }
        }
        Ok(())
    }

    /// Kills and reaps every child; the CPU time the reaped children used (of interest for
    /// the tickers: the sleepers use next to none).
    fn stop(&mut self) -> Duration {
        let before = sys::children_cpu_time();
        for c in &mut self.sleeping {
            let _ = c.kill();
        }
        for c in &mut self.sleeping {
            let _ = c.wait();
        }
        self.sleeping.clear();
        for pid in self.tickers.drain(..) {
            sys::kill_and_reap(pid);
        }
        sys::children_cpu_time().saturating_sub(before)
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        self.stop();
    }
}

fn count_processes() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
                })
                .count()
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 })
}

/// Calls every contender once (untimed warm-up, which also primes the collectors), then
/// `sweeps` rounds of each in turn (the order rotating), `gap` apart; the median CPU seconds
/// of each.
fn time_rounds(opts: &BenchOptions, contenders: &mut [Box<dyn FnMut() + '_>]) -> Vec<Option<f64>> {
    for f in contenders.iter_mut() {
        f();
    }
    let mut times = vec![Vec::with_capacity(opts.sweeps as usize); contenders.len()];
    let k = contenders.len();
    for round in 0..opts.sweeps as usize {
        std::thread::sleep(opts.gap);
        // Rotate who goes first: the first reader after the pause finds the kernel's caches
        // cold (other processes ran meanwhile), the others find them warm.
        for i in (0..k).map(|i| (i + round) % k) {
            let t0 = sys::process_cpu_time();
            contenders[i]();
            times[i].push((sys::process_cpu_time() - t0).as_secs_f64());
        }
    }
    times.into_iter().map(median).collect()
}

const PSUTIL_LOOP: &str = r#"
import json, sys, time
import psutil
n, gap = int(sys.argv[1]), float(sys.argv[2])
attrs = ['name', 'cpu_percent', 'memory_percent']
list(psutil.process_iter(attrs))
times, count = [], 0
for _ in range(n):
    time.sleep(gap)
    t0 = time.process_time()
    infos = [p.info for p in psutil.process_iter(attrs)]
    times.append(time.process_time() - t0)
    count = len(infos)
print(json.dumps({"times": times, "procs": count, "version": psutil.__version__}))
"#;

fn psutil_row(opts: &BenchOptions) -> BenchRow {
    let mut row = BenchRow {
        name: "psutil process_iter(name, cpu_percent, memory_percent)".into(),
        median_sweep_s: None,
        processes: 0,
        note: String::new(),
    };
    let out = Command::new("python3")
        .args(["-c", PSUTIL_LOOP, &opts.sweeps.to_string(), &opts.gap.as_secs_f64().to_string()])
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            row.note = format!(
                "skipped: {}",
                String::from_utf8_lossy(&o.stderr).trim().lines().last().unwrap_or("")
            );
            return row;
        }
        Err(e) => {
            row.note = format!("skipped: python3: {e}");
            return row;
        }
    };
    match serde_json::from_slice::<serde_json::Value>(&out.stdout) {
        Ok(v) => {
            let times: Vec<f64> =
                v["times"].as_array().into_iter().flatten().filter_map(|t| t.as_f64()).collect();
            row.median_sweep_s = median(times);
            row.processes = v["procs"].as_u64().unwrap_or(0) as usize;
            row.note = format!("psutil {}, python3 child", v["version"].as_str().unwrap_or("?"));
        }
        Err(e) => row.note = format!("skipped: bad output: {e}"),
    }
    row
}

/// Runs the benchmark with sleeping children, printing progress to `log`, and returns the rows.
pub fn run(opts: &BenchOptions, log: &mut dyn Write) -> std::io::Result<Vec<BenchRow>> {
    run_with(opts, Children::Sleeping, log)
}

/// Runs the benchmark with `children` topping up the host, printing progress to `log`, and
/// returns the rows.
pub fn run_with(
    opts: &BenchOptions,
    children: Children,
    log: &mut dyn Write,
) -> std::io::Result<Vec<BenchRow>> {
    let existing = count_processes();
    let mut sleepers = Sleepers::default();
    let clock = procwatch_model::clock::system();
    let started_ms = clock.now_ms();
    if existing < opts.min_procs {
        let need = opts.min_procs - existing;
        let what = match children {
            Children::Sleeping => "sleeping".to_string(),
            Children::Active { tick } => format!("active (waking every {tick:?})"),
        };
        writeln!(log, "spawning {need} {what} processes ({existing} exist)")?;
        for _ in 0..need {
            sleepers.spawn(children)?;
        }
        // Let every child finish its exec so that all are `sleep`, not half-started forks.
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut proc_c = new_collector(CollectorKind::Proc, CollectorOptions::default())
        .map_err(std::io::Error::other)?;
    let mut sysinfo_c = new_collector(CollectorKind::Sysinfo, CollectorOptions::default())
        .map_err(std::io::Error::other)?;
    // One collector per extra metric alone, and one with every extra (issue 19).
    let mut extra_sets: Vec<(String, ExtraSet)> = ExtraMetric::ALL
        .into_iter()
        .map(|m| (format!("+ {}", m.as_str()), ExtraSet::NONE.with(m)))
        .collect();
    extra_sets.push(("+ every extra".into(), ExtraSet::all()));
    let mut extra_cs = Vec::new();
    for (_, set) in &extra_sets {
        let opts = CollectorOptions {
            extras: *set,
            no_taskstats: opts.no_taskstats,
            ..Default::default()
        };
        extra_cs.push(new_collector(CollectorKind::Proc, opts).map_err(std::io::Error::other)?);
    }
    let mut floor = FloorReader::new();
    let mut stat_only = FloorReader::with_files(&["stat"]);
    let (mut groups, mut procs, mut floor_pids) = (0, 0, 0);
    // The Rust contenders take turns within each round, so each sees the same load.
    let times = {
        let mut contenders: Vec<Box<dyn FnMut() + '_>> = vec![
            Box::new(|| {
                if let Ok(Some(s)) = proc_c.sweep() {
                    groups = s.samples.len();
                    procs = s.samples.iter().map(|s| s.count as usize).sum();
                }
            }),
            Box::new(|| {
                if let Ok((p, _)) = floor.sweep() {
                    floor_pids = p;
                }
            }),
            Box::new(|| {
                let _ = stat_only.sweep();
            }),
            Box::new(|| {
                let _ = sysinfo_c.sweep();
            }),
        ];
        for c in extra_cs.iter_mut() {
            contenders.push(Box::new(|| {
                let _ = c.sweep();
            }));
        }
        time_rounds(opts, &mut contenders)
    };
    let live = count_processes();
    let mut rows = vec![
        BenchRow {
            name: "procwatch /proc collector".into(),
            median_sweep_s: times[0],
            processes: live,
            note: format!("{procs} user processes in {groups} groups; pread of kept-open stat"),
        },
        BenchRow {
            name: "floor: read stat + statm".into(),
            median_sweep_s: times[1],
            processes: floor_pids,
            note: "open/read/close both files, computes nothing".into(),
        },
        BenchRow {
            name: "read stat only".into(),
            median_sweep_s: times[2],
            processes: floor_pids,
            note: "for reference: one file, open/read/close each sweep".into(),
        },
        BenchRow {
            name: "procwatch sysinfo collector".into(),
            median_sweep_s: times[3],
            processes: live,
            note: "portable fallback (sysinfo 0.34)".into(),
        },
    ];
    for ((name, _), t) in extra_sets.iter().zip(&times[4..]) {
        rows.push(BenchRow {
            name: format!("procwatch /proc collector {name}"),
            median_sweep_s: *t,
            processes: live,
            note: match opts.no_taskstats {
                false => "opt-in extra metric (issue 19)".into(),
                true => "opt-in extra metric (issue 19); io, ctxsw from files".into(),
            },
        });
    }
    rows.push(psutil_row(opts));
    let tickers = sleepers.tickers.len();
    let children_cpu = sleepers.stop();
    if tickers > 0 {
        let secs = (clock.now_ms() - started_ms).max(1) as f64 / 1e3;
        writeln!(
            log,
            "{tickers} active children used {:.2} s of CPU in {secs:.1} s ({:.1} % of one CPU)",
            children_cpu.as_secs_f64(),
            100.0 * children_cpu.as_secs_f64() / secs
        )?;
    }
    Ok(rows)
}

/// The rows as a Markdown table, ratios against the floor.
pub fn format_table(rows: &[BenchRow]) -> String {
    let floor = rows.iter().find(|r| r.name.starts_with("floor")).and_then(|r| r.median_sweep_s);
    let ours = rows.first().and_then(|r| r.median_sweep_s);
    let mut s = String::from(
        "| reader | processes | CPU ms / sweep (median) | µs / process | × floor | × procwatch | note |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for r in rows {
        let (ms, per, ratio, vs_ours) = match r.median_sweep_s {
            Some(t) => (
                format!("{:.2}", t * 1e3),
                format!("{:.1}", t * 1e6 / r.processes.max(1) as f64),
                floor.map(|f| format!("{:.2}", t / f)).unwrap_or_default(),
                ours.map(|o| format!("{:.2}", t / o)).unwrap_or_default(),
            ),
            None => ("–".into(), "–".into(), "–".into(), "–".into()),
        };
        s += &format!(
            "| {} | {} | {ms} | {per} | {ratio} | {vs_ours} | {} |\n",
            r.name, r.processes, r.note
        );
    }
    s
}
