//! Experiment: CPU cost of reading /proc/PID/stat (and statm) per process, by strategy.
//! `cargo run --release -p procwatch-collector --example readcost` (needs many processes).
use procwatch_collector::sys::process_cpu_time;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn time(label: &str, n: usize, mut f: impl FnMut()) {
    f();
    let mut v = Vec::new();
    for _ in 0..9 {
        let t = process_cpu_time();
        f();
        v.push((process_cpu_time() - t).as_secs_f64());
    }
    v.sort_by(f64::total_cmp);
    println!("{label:40} {:8.3} ms/sweep {:6.2} us/proc", v[4] * 1e3, v[4] * 1e6 / n as f64);
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("collector-loop") {
        // Only collector sweeps, for `perf record`.
        let mut c = procwatch_collector::new_collector(
            procwatch_collector::CollectorKind::Proc,
            Default::default(),
        )
        .unwrap();
        for _ in 0..300 {
            let _ = c.sweep();
        }
        return;
    }
    let p = pids();
    let n = p.len();
    println!("{n} pids");
    let mut buf = vec![0u8; 4096];
    time("readdir only", n, || {
        std::hint::black_box(pids());
    });
    for file in ["stat", "statm", "status"] {
        time(&format!("open/read/close {file}"), n, || {
            for pid in &p {
                if let Ok(mut f) = File::open(format!("/proc/{pid}/{file}")) {
                    let _ = f.read(&mut buf);
                }
            }
        });
    }
    let files: Vec<File> =
        p.iter().filter_map(|pid| File::open(format!("/proc/{pid}/stat")).ok()).collect();
    time("pread on kept stat fds", n, || {
        for f in &files {
            let _ = f.read_at(&mut buf, 0);
        }
    });
    let mut c = procwatch_collector::new_collector(
        procwatch_collector::CollectorKind::Proc,
        Default::default(),
    )
    .unwrap();
    time("procwatch collector sweep", n, || {
        let _ = c.sweep();
    });
}
