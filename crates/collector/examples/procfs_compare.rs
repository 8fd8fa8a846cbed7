//! Hand-parsed `/proc` (procwatch's collector) against the `procfs` crate doing the same work:
//! for every process read `stat`, take Δ(utime+stime) against the previous sweep by
//! (PID, start time), and sum cores and rss per comm. Median CPU time per sweep, the two taking
//! turns in rotating order within each round.
//!
//! `cargo run --release -p procwatch-collector --example procfs_compare -- [ROUNDS] [MIN_PROCS]`
use procwatch_collector::{new_collector, sys, CollectorKind, CollectorOptions};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The procfs-crate equivalent of one collector sweep.
struct ProcfsSweeper {
    prev: HashMap<i32, (u64, u64)>,
    at: Option<Instant>,
    tck: f64,
    page: u64,
}

impl ProcfsSweeper {
    fn sweep(&mut self) -> usize {
        let now = Instant::now();
        let tpc = self.at.map(|a| (now - a).as_secs_f64() * self.tck);
        self.at = Some(now);
        let mut next = HashMap::with_capacity(self.prev.len());
        let mut groups: HashMap<String, (f64, u64, u32)> = HashMap::new();
        let Ok(all) = procfs::process::all_processes() else { return 0 };
        for p in all {
            let Ok(p) = p else { continue };
            let Ok(st) = p.stat() else { continue };
            if st.flags & 0x0020_0000 != 0 || st.state == 'Z' {
                continue;
            }
            let ticks = st.utime + st.stime;
            let delta = match self.prev.get(&st.pid) {
                Some(&(start, t)) if start == st.starttime => ticks.saturating_sub(t),
                _ => ticks,
            };
            next.insert(st.pid, (st.starttime, ticks));
            if let Some(tpc) = tpc {
                let g = groups.entry(st.comm).or_default();
                g.0 += delta as f64 / tpc;
                g.1 += st.rss * self.page;
                g.2 += 1;
            }
        }
        self.prev = next;
        groups.len()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(31);
    let min_procs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let existing = std::fs::read_dir("/proc")
        .unwrap()
        .filter(|e| {
            e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        })
        .count();
    let mut kids: Vec<Child> = (existing..min_procs)
        .map(|_| Command::new("sleep").arg("3600").stdout(Stdio::null()).spawn().unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    let mut ours = new_collector(CollectorKind::Proc, CollectorOptions::default()).unwrap();
    let mut theirs = ProcfsSweeper {
        prev: HashMap::new(),
        at: None,
        tck: sys::clk_tck() as f64,
        page: sys::page_size(),
    };
    let _ = ours.sweep();
    theirs.sweep();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        std::thread::sleep(Duration::from_millis(200));
        for i in 0..2 {
            let t0 = sys::process_cpu_time();
            if (i + round) % 2 == 0 {
                let _ = ours.sweep();
                a.push((sys::process_cpu_time() - t0).as_secs_f64());
            } else {
                theirs.sweep();
                b.push((sys::process_cpu_time() - t0).as_secs_f64());
            }
        }
    }
    let procs = std::fs::read_dir("/proc").unwrap().count();
    for k in &mut kids {
        let _ = k.kill();
    }
    for k in &mut kids {
        let _ = k.wait();
    }
    let (ma, mb) = (median(a), median(b));
    println!("{rounds} rounds, ~{procs} /proc entries, median CPU time per sweep");
    println!("| reader | CPU ms / sweep | × procwatch |\n| --- | ---: | ---: |");
    println!("| procwatch collector (hand-parsed, kept-open stat) | {:.2} | 1.00 |", ma * 1e3);
    println!("| procfs 0.18 crate, same work | {:.2} | {:.2} |", mb * 1e3, mb / ma);
}
