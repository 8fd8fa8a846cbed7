//! The portable collector on the `sysinfo` crate (macOS, Windows; Linux with
//! `--collector sysinfo`).
//!
//! CPU follows the same formula as the `/proc` collector: Δ(accumulated CPU time) of each
//! process, identified by (PID, start time), over the monotonic time between two sweeps; a
//! process not seen at the previous sweep counts all its CPU time.

use crate::{parse, sys, CollectError, Collector, CollectorOptions, Grouper, Sweep};
use std::collections::HashMap;
use std::time::Instant;
use sysinfo::{
    ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, ThreadKind, UpdateKind,
};

pub(crate) struct SysinfoCollector {
    sys: System,
    opts: CollectorOptions,
    prev_at: Option<Instant>,
    /// pid → (start time in s, accumulated CPU ms) at the previous sweep.
    prev: HashMap<u32, (u64, u64)>,
    next: HashMap<u32, (u64, u64)>,
}

impl SysinfoCollector {
    pub(crate) fn new(opts: CollectorOptions) -> Self {
        SysinfoCollector {
            sys: System::new(),
            opts,
            prev_at: None,
            prev: HashMap::new(),
            next: HashMap::new(),
        }
    }
}

impl Collector for SysinfoCollector {
    fn sweep(&mut self) -> Result<Option<Sweep>, CollectError> {
        let at = Instant::now();
        let ts = crate::now_ms();
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        let kind = ProcessRefreshKind::nothing()
            .with_cpu()
            .with_memory()
            .with_cmd(UpdateKind::OnlyIfNotSet)
            .with_exe(UpdateKind::OnlyIfNotSet);
        self.sys.refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
        let elapsed = self.prev_at.replace(at).map(|p| at - p);

        let ncpu = match self.sys.cpus().len() {
            0 => sys::online_cpus() as f64,
            n => n as f64,
        };
        let mem_total = self.sys.total_memory();
        let mut grouper = Grouper::new(self.opts.per_pid);
        for (pid, p) in self.sys.processes() {
            match p.thread_kind() {
                // sysinfo lists the threads of a process too; the process already counts them.
                Some(ThreadKind::Userland) => continue,
                Some(ThreadKind::Kernel) if !self.opts.include_kernel_threads => continue,
                _ => {}
            }
            if matches!(p.status(), ProcessStatus::Zombie | ProcessStatus::Dead) {
                continue;
            }
            let pid = pid.as_u32();
            let cpu_ms = p.accumulated_cpu_time();
            let delta_ms = match self.prev.get(&pid) {
                Some(&(start, before)) if start == p.start_time() => cpu_ms.saturating_sub(before),
                _ => cpu_ms,
            };
            self.next.insert(pid, (p.start_time(), cpu_ms));
            let Some(elapsed) = elapsed else { continue };
            let comm = p.name().to_string_lossy();
            let argv0 = p.cmd().first().and_then(|a| a.to_str()).and_then(|a| {
                let base = a.rsplit(['/', '\\']).next()?;
                (!base.is_empty()).then_some(base)
            });
            let exe = p.exe().and_then(|e| e.file_name()).and_then(|s| s.to_str());
            let name = parse::resolve_name(&comm, &[argv0, exe]);
            let secs = elapsed.as_secs_f64();
            let cores = if secs > 0.0 { delta_ms as f64 / 1000.0 / secs } else { 0.0 };
            grouper.add(pid, name, cores, p.memory(), ncpu, mem_total, None);
        }
        std::mem::swap(&mut self.prev, &mut self.next);
        self.next.clear();
        let Some(elapsed) = elapsed else { return Ok(None) };

        let host_mem = if mem_total == 0 {
            0.0
        } else {
            100.0 * mem_total.saturating_sub(self.sys.available_memory()) as f64 / mem_total as f64
        };
        let host_total = crate::host_total(
            ts,
            f64::from(self.sys.global_cpu_usage()),
            host_mem,
            grouper.cpu_sum(),
        );
        let (samples, processes) = grouper.finish(ts, ncpu, mem_total);
        Ok(Some(Sweep {
            ts,
            elapsed_ms: elapsed.as_millis() as u64,
            host_total,
            samples,
            processes,
            io_unreadable: 0,
            taskstats: None,
        }))
    }
}
