//! `procwatch agent --bench N`: the collector's own cost, beside its peers, in one run.
//!
//! Spawns sleeping processes until at least `min_procs` processes exist (and kills exactly
//! those at the end), then measures the CPU time (user + system,
//! `CLOCK_PROCESS_CPUTIME_ID`) of N sweeps of:
//! - procwatch's `/proc` collector,
//! - the floor reader ([`crate::floor::FloorReader`]: `stat` + `statm` of every PID, nothing
//!   computed),
//! - the `sysinfo` collector (procwatch's portable fallback),
//! - psutil's `process_iter(['name', 'cpu_percent', 'memory_percent'])` loop, in a `python3`
//!   child that times itself with `time.process_time()` (skipped with a note if python3 or
//!   psutil is missing).
//!
//! and reports the median per sweep and per process.

use crate::floor::FloorReader;
use crate::{new_collector, sys, CollectorKind, CollectorOptions};
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
}

/// One contender's figures.
#[derive(Debug, Clone)]
pub struct BenchRow {
    pub name: String,
    /// Median CPU time per sweep, seconds; `None` when the contender could not run.
    pub median_sweep_s: Option<f64>,
    pub processes: usize,
    pub note: String,
}

/// Kills the processes it holds (only those) when dropped.
struct Sleepers(Vec<Child>);

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
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

/// Times `sweeps` calls of `f` after one untimed warm-up call; median CPU seconds.
fn time_sweeps(opts: &BenchOptions, mut f: impl FnMut()) -> Option<f64> {
    f();
    let mut times = Vec::with_capacity(opts.sweeps as usize);
    for _ in 0..opts.sweeps {
        std::thread::sleep(opts.gap);
        let t0 = sys::process_cpu_time();
        f();
        times.push((sys::process_cpu_time() - t0).as_secs_f64());
    }
    median(times)
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

/// Runs the benchmark, printing progress to `log`, and returns the rows.
pub fn run(opts: &BenchOptions, log: &mut dyn Write) -> std::io::Result<Vec<BenchRow>> {
    let existing = count_processes();
    let mut sleepers = Sleepers(Vec::new());
    if existing < opts.min_procs {
        let need = opts.min_procs - existing;
        writeln!(log, "spawning {need} sleeping processes ({existing} exist)")?;
        for _ in 0..need {
            let child = Command::new("sleep")
                .arg("3600")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            sleepers.0.push(child);
        }
        // Let every child finish its exec so that all are `sleep`, not half-started forks.
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut rows = Vec::new();

    let mut c = new_collector(CollectorKind::Proc, CollectorOptions::default())
        .map_err(std::io::Error::other)?;
    let mut groups = 0;
    let mut procs = 0;
    let t = time_sweeps(opts, || {
        if let Ok(Some(s)) = c.sweep() {
            groups = s.samples.len();
            procs = s.samples.iter().map(|s| s.count as usize).sum();
        }
    });
    rows.push(BenchRow {
        name: "procwatch /proc collector".into(),
        median_sweep_s: t,
        processes: count_processes(),
        note: format!("{procs} user processes in {groups} groups; reads stat only"),
    });
    drop(c);

    let mut floor = FloorReader::new();
    let mut floor_pids = 0;
    let t = time_sweeps(opts, || {
        if let Ok((p, _)) = floor.sweep() {
            floor_pids = p;
        }
    });
    rows.push(BenchRow {
        name: "floor: read stat + statm".into(),
        median_sweep_s: t,
        processes: floor_pids,
        note: "reads only, computes nothing".into(),
    });

    let mut s = new_collector(CollectorKind::Sysinfo, CollectorOptions::default())
        .map_err(std::io::Error::other)?;
    let t = time_sweeps(opts, || {
        let _ = s.sweep();
    });
    rows.push(BenchRow {
        name: "procwatch sysinfo collector".into(),
        median_sweep_s: t,
        processes: count_processes(),
        note: "portable fallback (sysinfo 0.33)".into(),
    });
    drop(s);

    rows.push(psutil_row(opts));
    drop(sleepers);
    Ok(rows)
}

/// The rows as a Markdown table, ratios against the floor.
pub fn format_table(rows: &[BenchRow]) -> String {
    let floor = rows.iter().find(|r| r.name.starts_with("floor")).and_then(|r| r.median_sweep_s);
    let mut s = String::from(
        "| reader | processes | CPU ms / sweep (median) | µs / process | × floor | note |\n\
         | --- | ---: | ---: | ---: | ---: | --- |\n",
    );
    for r in rows {
        let (ms, per, ratio) = match r.median_sweep_s {
            Some(t) => (
                format!("{:.2}", t * 1e3),
                format!("{:.1}", t * 1e6 / r.processes.max(1) as f64),
                floor.map(|f| format!("{:.2}", t / f)).unwrap_or_default(),
            ),
            None => ("–".into(), "–".into(), "–".into()),
        };
        s += &format!("| {} | {} | {ms} | {per} | {ratio} | {} |\n", r.name, r.processes, r.note);
    }
    s
}
